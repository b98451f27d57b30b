#!/usr/bin/python3
"""experiments/bench/torch_mlp.py: the PyTorch peer of baselines_torch.lua.

Trains a 784-256-10 ReLU (or sigmoid)/softmax network on Fashion-MNIST with plain SGD
and softmax cross-entropy, by backprop (BP) or feedback alignment (FA: the
backward pass of the second layer uses a fixed random matrix B instead of
W), on the CPU with a given thread count. Prints one JSON object with the
seconds taken and the test accuracy reached.

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
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rule", choices=["bp", "fa"], default="bp")
    ap.add_argument("--act", choices=["relu", "sigmoid"], default="relu")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--samples", type=int, default=60000, help="training samples (one pass)")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs; the fastest counts")
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

    B2 = torch.empty(10, 256).uniform_(-1 / 16, 1 / 16)   # like l2's init: U(+-1/sqrt(256))
    lossf = torch.nn.CrossEntropyLoss()
    perm = torch.randperm(X.shape[0])[:n] if a.batch > 1 else torch.arange(n)
    best, acc = float("inf"), None
    for _ in range(max(a.repeats, 1)):
        l1 = torch.nn.Linear(784, 256)
        l2 = torch.nn.Linear(256, 10)

        def forward(x):
            h = torch.relu(l1(x)) if a.act == "relu" else torch.sigmoid(l1(x))
            if a.rule == "fa":
                return FALinear.apply(h, l2.weight, l2.bias, B2)
            return l2(h)

        params = list(l1.parameters()) + list(l2.parameters())
        opt = torch.optim.SGD(params, lr=a.lr)
        t0 = time.perf_counter()
        for i in range(0, n, a.batch):
            idx = perm[i:i + a.batch]
            xb, yb = (X[idx], y[idx]) if a.batch > 1 else (X[i:i + 1], y[i:i + 1])
            opt.zero_grad(set_to_none=True)
            loss = lossf(forward(xb), yb)
            loss.backward()
            opt.step()
        best = min(best, time.perf_counter() - t0)
        with torch.no_grad():
            acc = (forward(Xt).argmax(1) == yt).float().mean().item()
    seconds = best

    print(json.dumps({"seconds": seconds, "samples": n, "batch": a.batch, "rule": a.rule,
                      "threads": torch.get_num_threads(), "test_accuracy": acc,
                      "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
