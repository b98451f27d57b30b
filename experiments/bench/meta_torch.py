#!/usr/bin/python3
"""meta_torch.py: the PyTorch peer of experiments/bench/metaplasticity.lua.

One meta-step of the motif plasticity rule (Shervani-Tabar & Rosenbaum
2023) written the way one writes it with PyTorch autograd: the online inner
loop on the training images builds the graph (W_l += sum_r theta_r F^r_l,
FA or BP errors through 1 - exp(-beta y)), then the query cross-entropy is
back-propagated to theta through every step. The episode (initial W, B,
images, labels, theta) is read from .npy files written by the Lua side, so
both compute the same numbers: the loss and theta's gradient are printed
for comparison, with the best wall-clock and CPU (process) time of
--repeats meta-steps, as one JSON line.

  /usr/bin/python3 experiments/bench/meta_torch.py --dir DIR --threads 1 --feedback fa
"""
import argparse
import json
import os
import time

import numpy as np
import torch


def load(d, name):
    return torch.from_numpy(np.load(os.path.join(d, name + ".npy")))


def step(W, B, x, label, theta, beta, feedback, active):
    """One online step; returns the new list of weights (graph kept)."""
    L = len(W)
    y = [x]
    z = []
    for l in range(L):
        zl = torch.mv(W[l], y[-1])
        z.append(zl)
        y.append(torch.nn.functional.softplus(zl, beta=beta) if l < L - 1
                 else torch.softmax(zl, dim=0))
    fb = W if feedback == "bp" else B
    e = [None] * (L + 1)
    onehot = torch.zeros_like(y[L])
    onehot[label] = 1
    e[L] = y[L] - onehot
    for l in range(L - 1, -1, -1):
        e[l] = torch.mv(fb[l].t(), e[l + 1]) * (1 - torch.exp(-beta * y[l]))
    out = []
    for l in range(L):
        Wl, yp, yq, ep, eq = W[l], y[l], y[l + 1], e[l], e[l + 1]
        upd = torch.zeros_like(Wl)
        if 0 in active:
            upd = upd - theta[0] * torch.outer(eq, yp)
        if 1 in active:
            upd = upd - theta[1] * torch.outer(yq, ep)
        if 2 in active:
            upd = upd - theta[2] * torch.outer(eq, ep)
        if 3 in active:
            upd = upd - theta[3] * Wl
        if 4 in active:
            upd = upd - theta[4] * torch.outer(torch.ones_like(yq), ep)
        if 5 in active:
            upd = upd - theta[5] * yq.sum() * torch.outer(eq, yp)
        if 6 in active or 7 in active:
            c = torch.dot(yq, torch.mv(Wl, ep))
            if 6 in active:
                upd = upd - theta[6] * c * torch.outer(yq, ep)
            if 7 in active:
                upd = upd - theta[7] * c * torch.outer(eq, yp)
        if 8 in active:
            d = torch.dot(eq, torch.mv(Wl, yp))
            upd = upd - theta[8] * d * torch.outer(yq, ep)
        if 9 in active:
            upd = upd + theta[9] * (torch.outer(yq, yp) - torch.outer(yq, torch.mv(Wl.t(), yq)))
        out.append(Wl + upd)
    return out


def step_tanh_error(W, B, x, label, theta, beta, feedback, gamma=5.0):
    """One online step of rules/tanh_error.lua (a rule with no hand kernel):
    W_l += -t1 e_l y_{l-1}^T - t2 (tanh(gamma e_l) .* y_l) y_{l-1}^T
           - t3 (e_l .* e_l) 1^T .* W_l."""
    L = len(W)
    y = [x]
    for l in range(L):
        zl = torch.mv(W[l], y[-1])
        y.append(torch.nn.functional.softplus(zl, beta=beta) if l < L - 1
                 else torch.softmax(zl, dim=0))
    fb = W if feedback == "bp" else B
    e = [None] * (L + 1)
    onehot = torch.zeros_like(y[L])
    onehot[label] = 1
    e[L] = y[L] - onehot
    for l in range(L - 1, 0, -1):
        e[l] = torch.mv(fb[l].t(), e[l + 1]) * (1 - torch.exp(-beta * y[l]))
    out = []
    for l in range(L):
        Wl, yp, yq, eq = W[l], y[l], y[l + 1], e[l + 1]
        upd = theta[0] * torch.outer(eq, yp) + theta[1] * torch.outer(torch.tanh(gamma * eq) * yq, yp) \
            + theta[2] * (torch.outer(eq * eq, torch.ones_like(yp)) * Wl)
        out.append(Wl - upd)
    return out


def meta_step(W0, B, X, labels, Xq, labels_q, theta0, beta, feedback, active, rule="motifs"):
    theta = theta0.clone().requires_grad_(True)
    W = [w.clone() for w in W0]
    for t in range(X.shape[0]):
        if rule == "tanh_error":
            W = step_tanh_error(W, B, X[t], int(labels[t]), theta, beta, feedback)
        else:
            W = step(W, B, X[t], int(labels[t]), theta, beta, feedback, active)
    h = Xq
    for l, Wl in enumerate(W):
        h = h @ Wl.t()
        if l < len(W) - 1:
            h = torch.nn.functional.softplus(h, beta=beta)
    loss = torch.nn.functional.cross_entropy(h, labels_q)
    loss.backward()
    return loss.item(), theta.grad.tolist()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="folder with the episode's .npy files")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--feedback", default="fa", choices=["fa", "bp"])
    p.add_argument("--motifs", default="0", help="comma-separated motif indices")
    p.add_argument("--beta", type=float, default=10.0)
    p.add_argument("--rule", default="motifs", choices=["motifs", "tanh_error"])
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    layers = int(load(a.dir, "layers").item())
    W0 = [load(a.dir, "W%d" % (l + 1)) for l in range(layers)]
    B = [load(a.dir, "B%d" % (l + 1)) for l in range(layers)] if a.feedback == "fa" else None
    X = load(a.dir, "X")
    labels = load(a.dir, "labels").long()            # 0-based
    Xq = load(a.dir, "Xq")
    labels_q = load(a.dir, "labels_q").long()
    theta = load(a.dir, "theta").to(W0[0].dtype)
    active = set(int(r) for r in a.motifs.split(","))
    best, best_cpu, loss, grad = float("inf"), float("inf"), None, None
    for _ in range(a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        loss, grad = meta_step(W0, B, X, labels, Xq, labels_q, theta, a.beta, a.feedback, active,
                               a.rule)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    print(json.dumps({"seconds": best, "cpu_seconds": best_cpu, "loss": loss, "theta_grad": grad,
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "dtype": str(W0[0].dtype)}))


if __name__ == "__main__":
    main()
