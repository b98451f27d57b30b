-- experiments/bench/metaplasticity.lua: seconds per meta-step of the motif
-- plasticity rule (an episode of --steps online steps plus the exact
-- meta-gradient through all of them) in neuromic (fused C step with its
-- hand-derived adjoint, checkpointed scan) against PyTorch autograd on the
-- same episode, in the same run, at the same thread count. The episode
-- (Fashion-MNIST images, Xavier W and B, theta) goes to PyTorch as .npy
-- files, so both compute the same loss and theta gradient: their relative
-- difference is printed as a check. Also reports the generic autograd tape
-- (rules/motifs.lua's Lua step, CPU time of one repeat), and the memory
-- figures of the checkpointed unroll. A benchmark: it asserts nothing.
--
--   ./neuromic experiments/bench/metaplasticity.lua [--threads 1] [--quick]

local nm = require "neuromic"
local cli = require "nm.cli"
local json = require "nm.json"
local data = require "nm.data"
local meta = require "nm.models.meta"
local motif_net = require "nm.models.motif_net"
local motifs = require("nm.rule").definition("motifs")

local format = string.format

local opts = cli.parse(arg, {
  name = "bench_metaplasticity",
  description = "Seconds per meta-step (inner loop + exact meta-gradient) of the motif " ..
                "rule: neuromic vs PyTorch autograd on the CPU.",
  options = {
    {"threads", "int", 1, "threads for OpenBLAS and PyTorch", min = 1},
    {"steps", "int", 250, "inner-loop steps (M K)", quick = 50, min = 1},
    {"query", "int", 50, "query images", quick = 20, min = 1},
    {"configs", "list", {"fa_lr", "bp_lr", "fa_pool"}, "configurations: fa_lr, bp_lr, " ..
     "fa_pool, fa_bio", item = "string"},
    {"repeats", "int", 3, "timed meta-steps per side; the fastest counts", quick = 1, min = 1},
    {"dtype", "string", "float32", "network element type", choices = {"float32", "float64"}},
    {"generic", "bool", true, "also time the generic autograd tape (one repeat)"},
    {"python", "string", "/usr/bin/python3", "python with torch"},
    {"torch", "bool", true, "run the PyTorch side"},
  },
})

nm.blas_threads(opts.threads)
local here = (arg[0]:match("^(.*)/[^/]*$") or ".")

local CONFIGS = {
  fa_lr = {feedback = "fa", motifs = {0}},
  bp_lr = {feedback = "bp", motifs = {0}},
  fa_pool = {feedback = "fa", motifs = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
  fa_bio = {feedback = "fa", motifs = {0, 2, 9}},
}

local ds = data.load("fashion", {validation = 0, dtype = opts.dtype})
local K = math.max(1, opts.steps // 5)
local Q = math.max(1, opts.query // 5)
local sampler = meta.sampler(ds.train, {M = 5, K = K, Q = Q})

local process = require "nm.process"

local tmp = os.tmpname()
os.remove(tmp)
nm.sys.mkdir(tmp)

-- Writes the episode for the PyTorch side.
local function save_episode(net, W, B, task, theta)
  local function save(name, t) nm.save_npy(tmp .. "/" .. name .. ".npy", t) end
  save("layers", nm.tensor({net.layers}, "float64"))
  for l = 1, net.layers do
    save("W" .. l, W[l])
    if B then save("B" .. l, B[l]) end
  end
  save("X", task.X:narrow(1, 1, task.steps):contiguous())
  save("Xq", task.Xq)
  local lab, labq = nm.zeros(task.steps, "float64"), nm.zeros(#task.labels_q, "float64")
  for i = 1, task.steps do lab:set(i, task.labels[i] - 1) end
  for i = 1, #task.labels_q do labq:set(i, task.labels_q[i] - 1) end
  save("labels", lab)
  save("labels_q", labq)
  save("theta", theta)
end

local function torch_side(cfg)
  if not opts.torch then return {error = "skipped (--no-torch)"} end
  local n = tostring(opts.threads)
  local out = process.output{"env", "OPENBLAS_NUM_THREADS=" .. n, "OMP_NUM_THREADS=" .. n,
                                   "MKL_NUM_THREADS=" .. n, opts.python, here .. "/meta_torch.py",
                                   "--dir", tmp, "--threads", n, "--repeats",
                                   tostring(opts.repeats), "--feedback", cfg.feedback,
                                   "--motifs", table.concat(cfg.motifs, ",")}
  local line = out:match("(%b{})%s*$")
  local ok, res = pcall(json.decode, line or "")
  if not ok or type(res) ~= "table" then
    return {error = "PyTorch side failed: " .. out:gsub("%s+$", ""):sub(-300)}
  end
  return res
end

local rows = {}
for _, name in ipairs(opts.configs) do
  local cfg = CONFIGS[name]
  if not cfg then error("unknown configuration " .. name) end
  local net = motif_net.new{rule = motifs, feedback = cfg.feedback, dtype = opts.dtype}
  local th0 = {}
  for _, r in ipairs(cfg.motifs) do th0[r] = r == 0 and 1e-3 or 1e-5 end
  local g = nm.generator(7)
  local task = sampler:sample(g)
  task.steps = opts.steps
  local learner = motif_net.learner{net = net, motifs = cfg.motifs, theta0 = th0, guard = "none"}
  -- The same W and B for both sides: the learner draws them from g, so
  -- draw from a clone and save that draw.
  local gW = g:clone()
  local W, B = net:init(gW)
  save_episode(net, W, B, task, learner:theta())

  local best, best_cpu, loss, grad = math.huge, math.huge, nil, nil
  local stats = {}
  for _ = 1, opts.repeats do
    collectgarbage("collect")
    local gg = g:clone()
    local t0, c0 = nm.sys.clock(), os.clock()
    local l, _, _, gr = learner:meta_gradient(task, gg, stats)
    best = math.min(best, nm.sys.clock() - t0)
    best_cpu = math.min(best_cpu, os.clock() - c0)
    loss, grad = l, gr:clone()
  end
  local generic
  if opts.generic then
    -- short segments: a step of the generic rule records some 40 weight-
    -- sized tensors, so sqrt(T)-step segments would hold about 1 GB
    learner.mode, learner.segment = "generic", 5
    collectgarbage("collect")
    local c0 = os.clock()
    learner:meta_gradient(task, g:clone())
    generic = os.clock() - c0
    learner.mode, learner.segment = "unroll", nil
  end
  local tr = torch_side(cfg)
  local rel
  if tr.theta_grad then
    local num, den = 0, 0
    for _, r in ipairs(cfg.motifs) do
      local a, b = grad:get(r + 1), tr.theta_grad[r + 1]
      num, den = num + (a - b) ^ 2, den + b ^ 2
    end
    rel = math.sqrt(num / math.max(den, 1e-300))
  end
  rows[#rows + 1] = {name = name, ours = best, ours_cpu = best_cpu, torch_cpu = tr.cpu_seconds,
                     generic = generic, torch = tr.seconds,
                     loss = loss, torch_loss = tr.loss, rel = rel, err = tr.error,
                     snapshots = stats.snapshots, segment = stats.segment}
end

process.run{"rm", "-rf", "--", tmp}

print(format("motif rule meta-step: %d inner steps (784-170-130-100-70-10 softplus, %s), " ..
             "%d query images, %d thread(s)", opts.steps, opts.dtype, 5 * Q, opts.threads))
print("seconds per meta-step, best of the repeats: wall clock and CPU time of the process " ..
      "(the machine may be shared: CPU time is the steadier comparison)")
print(format("%-8s %9s %9s %9s %9s %9s %9s %9s %11s %9s", "config", "ours", "ours cpu",
             "torch", "torch cpu", "speedup", "(cpu)", "gen. cpu", "loss", "grad rel"))
for _, r in ipairs(rows) do
  print(format("%-8s %8.3fs %8.3fs %9s %9s %9s %9s %9s %11.6f %9s", r.name, r.ours, r.ours_cpu,
               r.torch and format("%.3fs", r.torch) or "-",
               r.torch_cpu and format("%.3fs", r.torch_cpu) or "-",
               r.torch and format("%.2fx", r.torch / r.ours) or "-",
               r.torch_cpu and format("%.2fx", r.torch_cpu / r.ours_cpu) or "-",
               r.generic and format("%.2fs", r.generic) or "-", r.loss,
               r.rel and format("%.1e", r.rel) or "-"))
  if r.err then print("   PyTorch: " .. r.err) end
end
print("(grad rel: |theta gradient of neuromic - of PyTorch| / |of PyTorch| over the active " ..
      "motifs; float32 through all inner steps)")
local r1 = rows[1]
if r1 and r1.snapshots then
  print(format("checkpointing: %d stored states + one segment of %d steps recomputed " ..
               "(about 2 sqrt(T) weight sets instead of T = %d)", r1.snapshots, r1.segment,
               opts.steps))
end
