#!/usr/bin/python3
"""bmvr_torch.py: the PyTorch peer of experiments/bench/bmvr.lua.

Runs the same per-sample loops as neuromic's fused nm.kernels.bmvr.train and
nm.kernels.bmvr.backprop (linear-readout two-layer network, mean-subtracted ReLU,
k hidden units) on Fashion-MNIST's 10,000 test images, written the way one
would write them in PyTorch: one sample at a time, float32, no autograd,
in-place tensor ops. Prints one JSON line per loop with samples/second.

  /usr/bin/python3 experiments/bench/bmvr_torch.py --threads 1 --k 64 --samples 5000
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch


def load_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(folder, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return p
    sys.exit("bmvr_torch.py: %s missing in %s (make data)" % (stem, folder))


def bmvr_loop(W1, W2T, Q, zbar, X, Y, count, eta_w1, eta_w2, eta_q, eps):
    """W1 += eta_w1 [1(u>0) (a - Q n)] x^T; W2T += eta_w2 (z y^T - W2T);
    Q += eta_q (z n^T - Q); z = relu(u) - zbar, zbar += eps (relu(u) - zbar)."""
    T = X.shape[0]
    for s in range(count):
        x = X[s % T]
        y = Y[s % T]
        u = torch.mv(W1, x)
        h = torch.relu(u)
        zbar.add_(h - zbar, alpha=eps)
        z = h - zbar
        a = torch.mv(W2T, y)
        n = torch.mv(Q.t(), z)
        c = a - torch.mv(Q, n)
        c.mul_(u > 0)
        W1.addr_(c, x, alpha=eta_w1)
        W2T.mul_(1 - eta_w2).addr_(z, y, alpha=eta_w2)
        Q.mul_(1 - eta_q).addr_(z, n, alpha=eta_q)


def backprop_loop(W1, W2T, zbar, X, Y, count, eta_w1, eta_w2, eps):
    """e = y - W2T^T z; d = 1(u>0) (W2T e); W1 += eta_w1 d x^T; W2T += eta_w2 z e^T."""
    T = X.shape[0]
    for s in range(count):
        x = X[s % T]
        y = Y[s % T]
        u = torch.mv(W1, x)
        h = torch.relu(u)
        zbar.add_(h - zbar, alpha=eps)
        z = h - zbar
        e = y - torch.mv(W2T.t(), z)
        d = torch.mv(W2T, e)
        d.mul_(u > 0)
        W1.addr_(d, x, alpha=eta_w1)
        W2T.addr_(z, e, alpha=eta_w2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    images = load_idx(find(args.data, "t10k-images-idx3-ubyte"))
    labels = load_idx(find(args.data, "t10k-labels-idx1-ubyte"))
    X = torch.from_numpy(images.reshape(images.shape[0], -1).astype(np.float32) / 255.0)
    Y = torch.zeros(X.shape[0], 10)
    Y[torch.arange(X.shape[0]), torch.from_numpy(labels.astype(np.int64))] = 1
    n, m, k = X.shape[1], 10, args.k
    rates = dict(eta_w1=1e-3, eta_w2=1e-3, eta_q=1e-3, eps=1e-4)

    with torch.no_grad():
        for loop in ("bmvr", "backprop"):
            best, best_cpu = 0.0, 0.0
            for _ in range(args.repeats):
                W1 = torch.randn(k, n) / n ** 0.5
                W2T = torch.randn(k, m) / k ** 0.5
                Q = torch.eye(k)
                zbar = torch.zeros(k)
                t0, c0 = time.perf_counter(), time.process_time()
                if loop == "bmvr":
                    bmvr_loop(W1, W2T, Q, zbar, X, Y, args.samples, **rates)
                else:
                    backprop_loop(W1, W2T, zbar, X, Y, args.samples, rates["eta_w1"],
                                  rates["eta_w2"], rates["eps"])
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                best = max(best, args.samples / dt)
                best_cpu = max(best_cpu, args.samples / dc)
                if not torch.isfinite(W1).all():
                    sys.exit("bmvr_torch.py: weights diverged")
            print(json.dumps({"loop": loop, "k": k, "samples": args.samples,
                              "threads": torch.get_num_threads(),
                              "samples_per_s": best, "samples_per_cpu_s": best_cpu,
                              "torch": torch.__version__}))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
