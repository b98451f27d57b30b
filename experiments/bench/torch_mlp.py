#!/usr/bin/python3
"""experiments/bench/torch_mlp.py: the PyTorch peer of baselines_torch.lua.

Trains a 784-256-10 (or --sizes) ReLU, sigmoid or softplus/softmax network on
Fashion-MNIST with plain SGD and softmax cross-entropy, by backprop (BP) or
feedback alignment (FA: the backward pass of every layer but the first uses a
fixed random matrix B instead of W), on the CPU with a given thread count.
Prints one JSON object with the seconds taken and the test accuracy reached.

  /usr/bin/python3 experiments/bench/torch_mlp.py --threads 1 --rule bp \
      --batch 100 --samples 60000 --data /usr/share/datasets/fashion-mnist
"""
import argparse
import gzip
import json
import os
import sys
import time


def read_idx(path):
    import numpy as np
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(folder, stem):
    for name in (stem + ".gz", stem):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return p
    sys.exit("torch_mlp.py: missing %s in %s" % (stem, folder))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads (its BLAS reads OPENBLAS_NUM_THREADS)")
    ap.add_argument("--rule", choices=["bp", "fa"], default="bp")
    ap.add_argument("--act", choices=["relu", "sigmoid", "softplus"], default="relu")
    ap.add_argument("--sizes", default="784,256,10", help="layer widths, comma-separated")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--samples", type=int, default=60000, help="training samples (one pass)")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--beta", type=float, default=1.0, help="softplus slope")
    ap.add_argument("--init", choices=["pytorch", "xavier"], default="pytorch",
                    help="weights and feedback matrices: torch.nn.Linear's U(+-1/sqrt(fan_in)) "
                         "with its bias init, or Xavier-uniform with zero biases")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs; the fastest counts")
    ap.add_argument("--shuffle", action="store_true",
                    help="batch 1: the samples in a random order (torch.randperm), each row "
                         "gathered as a minibatch's rows are; default: in order, row views")
    a = ap.parse_args()

    try:
        import torch
    except ImportError as e:
        print(json.dumps({"error": "torch not available: %s" % e}))
        return 0
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    X = torch.from_numpy(read_idx(find(a.data, "train-images-idx3-ubyte")).reshape(-1, 784)
                         .astype("float32") / 255.0)
    y = torch.from_numpy(read_idx(find(a.data, "train-labels-idx1-ubyte")).astype("int64"))
    Xt = torch.from_numpy(read_idx(find(a.data, "t10k-images-idx3-ubyte")).reshape(-1, 784)
                          .astype("float32") / 255.0)
    yt = torch.from_numpy(read_idx(find(a.data, "t10k-labels-idx1-ubyte")).astype("int64"))
    n = min(a.samples, X.shape[0])

    class FALinear(torch.autograd.Function):
        """y = x W^T + b; the input gradient goes through B instead of W."""
        @staticmethod
        def forward(ctx, x, W, b, B):
            ctx.save_for_backward(x, B)
            return torch.addmm(b, x, W.t())

        @staticmethod
        def backward(ctx, g):
            x, B = ctx.saved_tensors
            return g.mm(B), g.t().mm(x), g.sum(0), None

    sizes = [int(v) for v in a.sizes.split(",")]
    # feedback matrices like the layers' init
    def bound(l):
        if a.init == "xavier":
            return (6.0 / (sizes[l] + sizes[l + 1])) ** 0.5
        return sizes[l] ** -0.5
    Bs = [None] + [torch.empty(sizes[l + 1], sizes[l]).uniform_(-bound(l), bound(l))
                   for l in range(1, len(sizes) - 1)]
    act = {"relu": torch.relu, "sigmoid": torch.sigmoid,
           "softplus": lambda h: torch.nn.functional.softplus(h, beta=a.beta)}[a.act]
    lossf = torch.nn.CrossEntropyLoss()
    gathered = a.batch > 1 or a.shuffle
    if a.batch > 1:
        perm = torch.randperm(X.shape[0])[:n]
    else:
        perm = torch.randperm(n) if a.shuffle else torch.arange(n)
    best, best_cpu, acc = float("inf"), float("inf"), None
    for _ in range(max(a.repeats, 1)):
        layers = [torch.nn.Linear(sizes[l], sizes[l + 1]) for l in range(len(sizes) - 1)]
        if a.init == "xavier":
            for lin in layers:
                torch.nn.init.xavier_uniform_(lin.weight)
                torch.nn.init.zeros_(lin.bias)

        def forward(x):
            h = x
            for l, lin in enumerate(layers):
                if l > 0:
                    h = act(h)
                if a.rule == "fa" and l > 0:
                    h = FALinear.apply(h, lin.weight, lin.bias, Bs[l])
                else:
                    h = lin(h)
            return h

        params = [p for lin in layers for p in lin.parameters()]
        opt = torch.optim.SGD(params, lr=a.lr)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, n, a.batch):
            idx = perm[i:i + a.batch]
            xb, yb = (X[idx], y[idx]) if gathered else (X[i:i + 1], y[i:i + 1])
            opt.zero_grad(set_to_none=True)
            loss = lossf(forward(xb), yb)
            loss.backward()
            opt.step()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
        with torch.no_grad():
            acc = (forward(Xt).argmax(1) == yt).float().mean().item()
    seconds = best

    print(json.dumps({"seconds": seconds, "cpu_seconds": best_cpu, "samples": n, "batch": a.batch, "rule": a.rule,
                      "threads": torch.get_num_threads(), "test_accuracy": acc,
                      "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
