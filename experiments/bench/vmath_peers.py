#!/usr/bin/python3
"""experiments/bench/vmath_peers.py: the PyTorch and NumPy peers of isa.lua.

Times one elementwise transcendental over a rows x cols array, in place where
the library allows, on one thread: PyTorch's own kernel (torch.sigmoid_,
torch.nn.functional.softplus, ...) and the straightforward NumPy expression.
Prints one JSON object: {"torch": {op: CPU seconds per call}, "numpy": {...}}.

  /usr/bin/python3 experiments/bench/vmath_peers.py --dtype float32 --rows 100 --cols 256
"""
import argparse
import json
import sys
import time

OPS = ["exp", "log", "tanh", "sigmoid", "softplus", "dsigmoid", "dtanh", "dsoftplus"]


def best_of(f, x, reps, rounds):
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(reps):
            f(x)
        best = min(best, (time.process_time() - t0) / reps)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--cols", type=int, default=256)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    out = {}
    try:
        import numpy as np
        x0 = (np.linspace(-8, 8, a.rows * a.cols).reshape(a.rows, a.cols)).astype(a.dtype)
        pos = np.abs(x0) + np.asarray(0.5, dtype=a.dtype)
        y = np.empty_like(x0)
        t = np.empty_like(x0)

        def sig(x):
            np.negative(x, out=t); np.exp(t, out=t); np.add(t, 1, out=t); np.reciprocal(t, out=y)
        np_ops = {
            "exp": lambda x: np.exp(x, out=y),
            "log": lambda x: np.log(pos, out=y),
            "tanh": lambda x: np.tanh(x, out=y),
            "sigmoid": sig,
            "softplus": lambda x: (np.logaddexp(x, 0, out=y)),
            "dsigmoid": lambda x: (sig(x), np.subtract(1, y, out=t), np.multiply(y, t, out=y)),
            "dtanh": lambda x: (np.tanh(x, out=t), np.multiply(t, t, out=t), np.subtract(1, t, out=y)),
            "dsoftplus": sig,
        }
        out["numpy"] = {op: best_of(f, x0, a.reps, a.rounds) for op, f in np_ops.items()}
    except ImportError as e:
        out["numpy_error"] = str(e)
    try:
        import torch
        torch.set_num_threads(1)
        dt = getattr(torch, a.dtype)
        x0 = torch.linspace(-8, 8, a.rows * a.cols, dtype=dt).reshape(a.rows, a.cols)
        pos = x0.abs() + 0.5
        y = torch.empty_like(x0)
        F = torch.nn.functional
        th_ops = {
            "exp": lambda x: torch.exp(x, out=y),
            "log": lambda x: torch.log(pos, out=y),
            "tanh": lambda x: torch.tanh(x, out=y),
            "sigmoid": lambda x: torch.sigmoid(x, out=y),
            "softplus": lambda x: F.softplus(x),
            "dsigmoid": lambda x: torch.ops.aten.sigmoid_backward(torch.ones_like(x), torch.sigmoid(x)),
            "dtanh": lambda x: torch.ops.aten.tanh_backward(torch.ones_like(x), torch.tanh(x)),
            "dsoftplus": lambda x: torch.sigmoid(x, out=y),
        }
        with torch.no_grad():
            out["torch"] = {op: best_of(f, x0, a.reps, a.rounds) for op, f in th_ops.items()}
    except ImportError as e:
        out["torch_error"] = str(e)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
