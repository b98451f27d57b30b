#!/usr/bin/python3
"""experiments/bench/nk_numpy.py: the NumPy peer of nk.lua's naive scoring.

A straightforward NumPy hill climber on the neuron-autoencoder networks of
nm.kernels.nk (NN, NAN, ANN; H hidden sigmoid units over N inputs of +-1, one
sigmoid output, and for NAN per-neuron or for ANN shared sigmoid decoders of
the inputs): every cycle mutates one weight, recomputes the whole forward
pass over the S training samples with matrix operations and keeps the change
when the judged error does not grow. Same work per cycle as
nm.kernels.nk's step_naive. Prints one JSON object: {"cycles": n, "seconds": t}.

  /usr/bin/python3 experiments/bench/nk_numpy.py --net NAN --n 100 --seconds 2
"""
import argparse
import json
import sys
import time

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", choices=["NN", "NAN", "ANN"], default="NAN")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--h", type=int, default=10)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    N, H, S = a.n, a.h, a.samples
    X = rng.choice([-1.0, 1.0], size=(S, N))
    f = rng.uniform(0, 1, size=S)
    T = 0.5 * X + 0.5                       # the decoders' targets
    W = rng.uniform(-1, 1, size=(H, N + 1))
    out = rng.uniform(-1, 1, size=H + 1)
    dec = rng.uniform(-1, 1, size=(H, 2 * N) if a.net == "NAN" else (H + 1, N))

    def errors():
        A = sigmoid(X @ W[:, :N].T + W[:, N])
        task = np.mean((sigmoid(A @ out[:H] + out[H]) - f) ** 2)
        if a.net == "NAN":
            R = sigmoid(A[:, :, None] * dec[None, :, :N] + dec[None, :, N:])
            rec = np.mean((T[:, None, :] - R) ** 2, axis=(0, 2))
        elif a.net == "ANN":
            rec = np.array([np.mean((T - sigmoid(A @ dec[:H] + dec[H])) ** 2)])
        else:
            rec = np.zeros(0)
        return task, rec

    arrays = [W, out] + ([dec] if a.net != "NN" else [])
    task, rec = errors()
    cycles, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < a.seconds or cycles < 4:
        k = rng.integers(len(arrays))
        arr = arrays[k]
        idx = tuple(rng.integers(d) for d in arr.shape)
        old = arr[idx]
        arr[idx] = old + rng.normal(0, 0.1)
        task2, rec2 = errors()
        if a.net == "NN" or k < 2:
            worse = task2 > task
        else:
            h = idx[0] if a.net == "NAN" else 0
            worse = rec2[h] > rec[h]
        if worse:
            arr[idx] = old
        else:
            task, rec = task2, rec2
        cycles += 1
    print(json.dumps({"cycles": cycles, "seconds": time.perf_counter() - t0, "net": a.net,
                      "n": N, "h": H, "samples": S, "numpy": np.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
