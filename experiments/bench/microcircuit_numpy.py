#!/usr/bin/env python3
"""experiments/bench/microcircuit_numpy.py: the full dynamics of a dendritic
cortical microcircuit (Sacramento et al. 2018) with one hidden layer, written
the way one writes it in NumPy (one vectorised operation per population and
connection), as the peer of neuromic's C Euler step in
experiments/bench/microcircuit.lua. The same loop: low-pass input and target,
rates, dendritic potentials, the W_up, W_ip and W_pi rules with tau_w
low-pass traces (W += dt eta D; D += dt/tau_w (T - D)), interneurons then
pyramidal cells with Euler-Maruyama noise.

  python3 microcircuit_numpy.py --steps 20000 [--weights DIR --check 3000]

With --weights DIR it loads W_up1, W_up2, W_down, W_ip, W_pi, x, target
(.npy, written by the Lua benchmark), first runs --check noise-free steps and
reports the final potentials and weights so the caller can confirm that both
loops compute the same thing, then times --steps steps with noise (best of --repeats runs, wall-clock
and CPU time). Prints one JSON object.
"""
import argparse
import json
import time

import numpy as np


def make_net(args, rng):
    n0, n1, n2 = args.sizes
    net = {}
    if args.weights:
        for name in ("W_up1", "W_up2", "W_down", "W_ip", "W_pi", "x", "target"):
            net[name] = np.load(f"{args.weights}/{name}.npy").astype(np.float64)
    else:
        net["W_up1"] = rng.uniform(-1, 1, (n1, n0))
        net["W_up2"] = rng.uniform(-1, 1, (n2, n1))
        net["W_down"] = rng.uniform(-1, 1, (n1, n2))
        net["W_ip"] = rng.uniform(-1, 1, (n2, n1))
        net["W_pi"] = rng.uniform(-1, 1, (n1, n2))
        net["x"] = rng.uniform(-1, 1, n0)
        net["target"] = rng.uniform(-1, 1, n2)
    for name in ("W_up1", "W_up2", "W_ip", "W_pi"):
        net["D" + name[1:]] = np.zeros_like(net[name])
    net["r0"] = np.zeros(n0)
    net["ut"] = np.zeros(n2)
    net["u1"] = np.zeros(n1)
    net["u2"] = np.zeros(n2)
    net["uI"] = np.zeros(n2)
    return net


def run(net, steps, sigma, rng):
    dt, g_lk, g_B, g_A, g_D, g_som = 0.1, 0.1, 1.0, 0.8, 1.0, 0.8
    tau_in, tau_w = 3.0, 30.0
    gamma, beta, theta = 0.1, 1.0, 3.0
    eta_up1, eta_up2, eta_ip, eta_pi = 0.0011875, 0.0005, 0.0011875, 0.0059375
    cB, cB_out, cD = g_B / (g_lk + g_B + g_A), g_B / (g_lk + g_B), g_D / (g_lk + g_D)
    a, s = dt / tau_w, sigma * np.sqrt(dt)

    def phi(u):
        return gamma * np.logaddexp(0.0, beta * (u - theta))

    W_up1, W_up2, W_down, W_ip, W_pi = (net[k] for k in ("W_up1", "W_up2", "W_down", "W_ip", "W_pi"))
    D_up1, D_up2, D_ip, D_pi = (net[k] for k in ("D_up1", "D_up2", "D_ip", "D_pi"))
    r0, ut, u1, u2, uI = (net[k] for k in ("r0", "ut", "u1", "u2", "uI"))
    x, target = net["x"], net["target"]
    n1, n2 = u1.size, u2.size
    for _ in range(steps):
        r0 += dt / tau_in * (x - r0)
        ut += dt / tau_in * (target - ut)
        r1, r2, rI = phi(u1), phi(u2), phi(uI)
        vB1 = W_up1 @ r0
        vB2 = W_up2 @ r1
        vA = W_down @ r2 + W_pi @ rI
        vI = W_ip @ r1
        W_up1 += dt * eta_up1 * D_up1
        D_up1 += a * (np.outer(r1 - phi(cB * vB1), r0) - D_up1)
        W_up2 += dt * eta_up2 * D_up2
        D_up2 += a * (np.outer(r2 - phi(cB_out * vB2), r1) - D_up2)
        W_ip += dt * eta_ip * D_ip
        D_ip += a * (np.outer(rI - phi(cD * vI), r1) - D_ip)
        W_pi += dt * eta_pi * D_pi
        D_pi += a * (np.outer(-vA, rI) - D_pi)
        uI += dt * (-g_lk * uI + g_D * (vI - uI) + g_som * (u2 - uI))
        u1 += dt * (-g_lk * u1 + g_B * (vB1 - u1) + g_A * (vA - u1))
        u2 += dt * (-g_lk * u2 + g_B * (vB2 - u2) + g_som * (ut - u2))
        if sigma > 0:
            uI += s * rng.standard_normal(n2)
            u1 += s * rng.standard_normal(n1)
            u2 += s * rng.standard_normal(n2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--sizes", type=int, nargs=3, default=[30, 50, 10])
    ap.add_argument("--sigma", type=float, default=0.3)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--check", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs; the fastest counts")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    out = {"numpy": np.__version__}
    if args.weights and args.check > 0:
        net = make_net(args, rng)
        run(net, args.check, 0.0, rng)
        out["check"] = {k: net[k].ravel().tolist() for k in ("u1", "u2", "uI", "W_up1", "W_pi")}
    net = make_net(args, rng)
    run(net, 100, args.sigma, rng)                     # warm-up
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(args.repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        run(net, args.steps, args.sigma, rng)
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    out.update(steps=args.steps, seconds=best_wall, cpu_seconds=best_cpu,
               steps_per_second=args.steps / best_wall, steps_per_cpu_second=args.steps / best_cpu)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
