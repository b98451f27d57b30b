-- experiments/bench/nk.lua: cycles per second of the neuron-autoencoder
-- hill climber (nm.kernels.nk, csrc/models/nm_nk.c) scoring candidates incrementally
-- from cached activations vs by a naive full forward pass, at N = 100 and
-- N = 1000 (H = 10, S = 1000), for NN, NAN and ANN, next to a straightforward
-- NumPy loop doing the naive work (experiments/bench/nk_numpy.py, one
-- thread, measured in the same run: ratio = neuromic naive rate / NumPy
-- rate, > 1: neuromic faster); with --grid, the wall
-- time of the whole Fig. 6 grid (6 N x 4 K x 20 runs x NAN, ANN x 10,000
-- cycles) run by experiments/nan_nk.lua with --jobs workers. A benchmark,
-- not a test: it prints figures and checks nothing (spec/nk_spec.lua
-- checks that both scorings decide alike).
--
--   ./neuromic experiments/bench/nk.lua [--quick] [--grid [--jobs 2]]
--
-- Both scorings run the same cycles (twin networks, the same seed), so
-- the ratio compares equal work; the incremental rate is also measured
-- over a longer run.

local nm = require "neuromic"
local cli = require "nm.cli"
local process = require "nm.process"

local opts = cli.parse(arg, {
  name = "bench_nk",
  jobs = true,          -- workers of the --grid run
  description = "Incremental vs naive hill-climbing cycles per second on NK regression; " ..
                "optionally the wall time of the full Fig. 6 grid.",
  options = {
    {"n", "list", {100, 1000}, "genome lengths N", item = "int", quick = {100}},
    {"k", "int", 5, "NK partners per gene"},
    {"h", "int", 10, "hidden neurons H"},
    {"samples", "int", 1000, "training set size S"},
    {"nets", "list", {"NN", "NAN", "ANN"}, "networks", item = "string"},
    {"seconds", "number", 4.0, "time of one naive measurement", quick = 0.3},
    {"repeats", "int", 3, "measurements per case; the fastest is reported", min = 1,
     quick = 1},
    {"grid", "bool", false, "also time the full Fig. 6 grid (minutes)"},
    {"numpy", "bool", true, "time the NumPy peer of the naive scoring"},
    {"python", "string", "/usr/bin/python3", "python with numpy"},
    {"grid-out", "string", "results/bench_nk_grid", "run directory of the grid"},
  },
})

local clock = nm.sys.clock

local function twins(kind, n)
  local gm = nm.generator(opts.seed)
  local model = nm.kernels.nk.model{n = n, k = opts.k, generator = gm}
  local X, F = model:dataset(opts.samples, gm)
  local a = nm.kernels.nk.network{kind = kind, x = X, f = F, h = opts.h, generator = nm.generator(7)}
  local b = nm.kernels.nk.network{kind = kind, x = X, f = F, h = opts.h, generator = nm.generator(7)}
  return a, b
end

-- Seconds for `cycles` cycles of step (the method name) from a fresh net.
local function timed(net, method, cycles, seed)
  local g = nm.generator(seed)
  net:refresh()
  local t0 = clock()
  net[method](net, cycles, g)
  return clock() - t0
end

print(string.format("NK hill climber, H = %d, S = %d, K = %d: cycles/s, best of %d; both " ..
                    "scorings run the same cycles", opts.h, opts.samples, opts.k, opts.repeats))
local here = (arg[0]:match("^(.*)/[^/]*$") or ".")

-- cycles per second of the NumPy peer (nil and a message when it fails)
local function numpy_rate(kind, n)
  if not opts.numpy then return nil, "skipped" end
  local out = process.output{"env", "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", opts.python,
                             here .. "/nk_numpy.py", "--net", kind, "--n", tostring(n), "--h",
                             tostring(opts.h), "--samples", tostring(opts.samples), "--seconds",
                             string.format("%g", opts.seconds)} or ""
  local c, t = out:match('"cycles": (%d+), "seconds": ([%d.e+-]+)')
  if not c then return nil, out:sub(1, 200):gsub("\n", " ") end
  return tonumber(c) / tonumber(t)
end

print(string.format("%-4s %6s %8s %12s %14s %9s %22s %12s %10s", "net", "N", "cycles", "naive",
                    "incremental", "speedup", "incremental, longer", "numpy naive",
                    "naive/np"))
for _, n in ipairs(opts.n) do
  for _, kind in ipairs(opts.nets) do
    local _, b = twins(kind, n)
    -- enough naive cycles to last opts.seconds, from a short probe
    local probe = timed(b, "step_naive", 2, 99)
    local cycles = math.max(4, math.floor(opts.seconds / math.max(probe / 2, 1e-6)))
    local t_naive, t_inc, np_rate, np_err = math.huge, math.huge, nil, nil
    for _ = 1, opts.repeats do
      local r, e = numpy_rate(kind, n)       -- alternating with ours
      if r and (not np_rate or r > np_rate) then np_rate = r end
      np_err = e
      local a
      a, b = twins(kind, n)
      t_naive = math.min(t_naive, timed(b, "step_naive", cycles, 1))
      t_inc = math.min(t_inc, timed(a, "step", cycles, 1))
      local na, ka = a:counts()
      local nb, kb = b:counts()
      assert(na == nb and ka == kb, "the two scorings diverged")
    end
    -- a longer incremental run (about opts.seconds), for a steadier rate
    local long = math.max(cycles, math.floor(opts.seconds / math.max(t_inc / cycles, 1e-7)))
    local t_long = math.huge
    for _ = 1, opts.repeats do
      t_long = math.min(t_long, timed((twins(kind, n)), "step", long, 1))
    end
    print(string.format("%-4s %6d %8d %12.1f %14.1f %8.1fx %14.1f (%d) %12s %10s", kind, n,
                        cycles, cycles / t_naive, cycles / t_inc, t_naive / t_inc, long / t_long,
                        long, np_rate and string.format("%.1f", np_rate) or "-",
                        np_rate and string.format("%.2fx", cycles / t_naive / np_rate) or "-"))
    if not np_rate and np_err ~= "skipped" then print("  numpy: " .. tostring(np_err)) end
  end
end

if opts.grid then
  local jobs = opts.jobs
  local grid_dir = opts.grid_out .. "/grid"
  local f = io.open(grid_dir .. "/sweep.json", "rb")
  if f then
    f:close()
    print(string.format("\n%s already holds a grid: finished cells would not run again; " ..
                        "remove it (or choose --grid-out) to time the grid", grid_dir))
    os.exit(1)
  end
  nm.sys.mkdir(opts.grid_out)
  local log = opts.grid_out .. "/bench.log"
  local argv = {require("nm.sweep").interpreter(), "experiments/nan_nk.lua", "--nets", "NAN,ANN",
                "--jobs", tostring(jobs), "--out", opts.grid_out}
  print("\nFig. 6 grid: " .. table.concat(argv, " "))
  local t0 = clock()
  os.remove(log)
  local ok = require("nm.process").run(argv, log)   -- no shell: --grid-out is a plain path
  local dt = clock() - t0
  print(string.format("grid %s in %.0f s (%.1f min) with %d jobs; log %s",
                      ok and "finished" or "FAILED", dt, dt / 60, jobs, log))
end
