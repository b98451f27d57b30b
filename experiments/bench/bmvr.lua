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
  description = "Per-sample BMVR and backprop training throughput against PyTorch.",
  options = {
    {"k", "int", 64, "hidden units", min = 1},
    {"samples", "int", 20000, "samples per measurement", quick = 3000, min = 1},
    {"repeats", "int", 3, "measurements per loop; the fastest is reported", quick = 1, min = 1},
    {"threads", "int", 1, "BLAS threads here and torch threads in the peer", min = 1},
    {"python", "string", "/usr/bin/python3", "interpreter of the PyTorch peer"},
    {"torch", "bool", true, "run the PyTorch peer"},
  },
})

nm.blas_threads(opts.threads)
local ds = data.load("fashion", {swap = true})   -- train = the 10,000 test images
local X, Y = ds.train.X, ds.train.Y
local T = X:size(1)

-- Samples per second of `count` fused steps, the best of opts.repeats runs
-- from a fresh network each (the data cycle when count > T).
local function throughput(method)
  local best = 0
  for rep = 1, opts.repeats do
    local net = bmvr.new{n = X:size(2), m = 10, k = opts.k, relu = true,
                         rules = method == "backprop" and "bmvr_backprop" or "bmvr",
                         eta_w1 = 1e-3, eta_w2 = 1e-3, eta_q = 1e-3, t0 = 0, seed = rep}
    local left = opts.samples
    local t0 = nm.sys.clock()
    while left > 0 do
      local c = math.min(left, T)
      net:train(X, Y, {count = c})
      left = left - c
    end
    local dt = nm.sys.clock() - t0
    best = math.max(best, opts.samples / dt)
  end
  return best
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
print(string.format("%-10s %16s %16s %8s", "loop", "neuromic (1/s)", "pytorch (1/s)", "ratio"))
for _, loop in ipairs{"bmvr", "backprop"} do
  local theirs = peer[loop] and peer[loop].samples_per_s
  print(string.format("%-10s %16.0f %16s %8s", loop, here[loop],
                      theirs and string.format("%.0f", theirs) or "-",
                      theirs and string.format("%.1fx", here[loop] / theirs) or "-"))
end
if peer.bmvr then
  print(string.format("torch %s, %d thread(s); target: ratio >= 5x", peer.bmvr.torch, peer.bmvr.threads))
elseif opts.torch then
  io.stderr:write("PyTorch peer failed:\n", peer_error or "", "\n")
end
