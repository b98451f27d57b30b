-- experiments/bench/bmvr.lua: per-sample training throughput (samples/s)
-- of BMVR and of its backprop baseline, a ReLU network with k hidden
-- units on Fashion-MNIST's 10,000 test images, against the same loops in
-- PyTorch (experiments/bench/bmvr_torch.py, run with /usr/bin/python3)
-- in the same run and with the same number of threads. Target: neuromic
-- at least 5x faster. A benchmark, not a test: it prints figures.
--
--   ./neuromic experiments/bench/bmvr.lua [--k 64] [--samples 20000] [--threads 1] [--quick]

local nm = require "neuromic"
local cli = require "nm.cli"
local data = require "nm.data"
local bmvr = require "nm.models.bmvr"
local json = require "nm.json"

local opts = cli.parse(arg, {
  name = "bench-bmvr",
  threads = 1,                 -- the common --threads: 1 unless given (peers at 1)
  description = "Per-sample BMVR and backprop training throughput against PyTorch.",
  options = {
    {"k", "int", 64, "hidden units", min = 1},
    {"samples", "int", 20000, "samples per measurement", quick = 3000, min = 1},
    {"repeats", "int", 3, "measurements per loop; the fastest is reported", quick = 1, min = 1},
    {"python", "string", "/usr/bin/python3", "interpreter of the PyTorch peer"},
    {"torch", "bool", true, "run the PyTorch peer"},
  },
})

local ds = data.load("fashion", {swap = true})   -- train = the 10,000 test images
local X, Y = ds.train.X, ds.train.Y
local T = X:size(1)

-- Samples per second of `count` fused steps, the best of opts.repeats runs
-- from a fresh network each (the data cycle when count > T), by the wall
-- clock and by this process's CPU time (os.clock; the fairer measure on a
-- shared machine, and the peer's is taken the same way).
local function throughput(method)
  local best, best_cpu = 0, 0
  for rep = 1, opts.repeats do
    local net = bmvr.new{n = X:size(2), m = 10, k = opts.k, relu = true,
                         rules = method == "backprop" and "bmvr_backprop" or "bmvr",
                         eta_w1 = 1e-3, eta_w2 = 1e-3, eta_q = 1e-3, t0 = 0, seed = rep}
    local left = opts.samples
    local t0, c0 = nm.sys.clock(), os.clock()
    while left > 0 do
      local c = math.min(left, T)
      net:train(X, Y, {count = c})
      left = left - c
    end
    local dt, dc = nm.sys.clock() - t0, os.clock() - c0
    best, best_cpu = math.max(best, opts.samples / dt), math.max(best_cpu, opts.samples / dc)
  end
  return {best, best_cpu}
end

local here = {bmvr = throughput("bmvr"), backprop = throughput("backprop")}

local peer = {}
local peer_error
if opts.torch then
  local script = debug.getinfo(1, "S").source:match("^@(.*)bmvr%.lua$") .. "bmvr_torch.py"
  local out = require("nm.process").output{
    opts.python, script, "--threads", tostring(opts.threads), "--k", tostring(opts.k),
    "--samples", tostring(opts.samples), "--repeats", tostring(opts.repeats)}
  for line in out:gmatch("[^\n]+") do
    local ok, row = pcall(json.decode, line)
    if ok and type(row) == "table" and row.loop then peer[row.loop] = row end
  end
  if not peer.bmvr then peer_error = out end
end

print(string.format("BMVR per-sample training, ReLU, k = %d, Fashion-MNIST (%d images), %d samples, %d thread(s)",
                    opts.k, T, opts.samples, opts.threads))
print("samples per second of wall-clock time, then of process CPU time (best of the repeats)")
print(string.format("%-10s %16s %16s %8s %16s %16s %8s", "loop", "neuromic (1/s)", "pytorch (1/s)",
                    "ratio", "neuromic CPU", "pytorch CPU", "ratio"))
local function cell(x) return x and string.format("%.0f", x) or "-" end
for _, loop in ipairs{"bmvr", "backprop"} do
  local wall, cpu = here[loop][1], here[loop][2]
  local theirs = peer[loop] and peer[loop].samples_per_s
  local theirs_cpu = peer[loop] and peer[loop].samples_per_cpu_s
  print(string.format("%-10s %16.0f %16s %8s %16.0f %16s %8s", loop, wall, cell(theirs),
                      theirs and string.format("%.1fx", wall / theirs) or "-", cpu,
                      cell(theirs_cpu), theirs_cpu and string.format("%.1fx", cpu / theirs_cpu) or "-"))
end
if peer.bmvr then
  print(string.format("torch %s, %d thread(s); target: ratio >= 5x", peer.bmvr.torch, peer.bmvr.threads))
elseif opts.torch then
  io.stderr:write("PyTorch peer failed:\n", peer_error or "", "\n")
end
