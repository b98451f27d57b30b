-- experiments/bench/rcn.lua: seconds per meta-step of the recurrent
-- chemical network rule (rules/rcn.lua: an episode of --steps online steps
-- through the C step that nm.compile generates from the rule, plus the
-- exact meta-gradient through all of them by its generated adjoint) against the number of chemicals L, beside the motif rule it
-- extends (same network, same episode); and the memory of a meta-step with
-- per-synapse biases against the stated bound, for several inner-loop
-- lengths. A benchmark: it asserts nothing.
--
-- The memory bound of meta-training (bytes; E = bytes per element, N =
-- sum_l n_l n_{l-1} synapses, S = ceil(sqrt(T)) the checkpoint segment):
--   kept between meta-steps:
--     unroll buffers   (ceil(T/S) + S) (L + 1) N E + T traces (rcn.memory;
--                      a trace: the vectors of one step, ~1/80 of a
--                      state here), allocated once and reused
--     meta-parameters  7 copies: values, gradient buffer, Adam's two
--                      moments, and the rollback guard's previous values
--                      and moments (per-synapse biases: L N E each)
--     kernels          the generated kernels' scratch and the adjoint's own
--                      gradient buffers (rcn.kernel_bytes), and their
--                      traced graphs (and C source, in the process that
--                      compiled them: ~2-5 MB here, in the 6 MiB below)
--   allocated by one meta-step, garbage afterwards: at most (5 + 8 L) N E
--     (the episode's Xavier draws 2, initial chemicals L and weights 1,
--     final state L + 1, chemical adjoints L, bias gradient L, query
--     gradient 1, readout gradient L, rollback copies 3 L)
--   plus scratch: traces, work buffers, the query's buffers and Lua tables
--   (well under 1 MiB here), and a tensor header per step for the sample's
--   row view (a few hundred bytes per step, garbage)
-- so memory grows like sqrt(T), through the checkpoints only: the
-- per-synapse bias gradient is accumulated in place over the T steps,
-- never stored per step. Printed: what one meta-step allocates (garbage
-- collector stopped) and what the learner keeps alive (heap after a full
-- collection, less the heap before the learner existed).
--
--   ./neuromic experiments/bench/rcn.lua [--quick] [--chemicals 1,2,3,4,5]

local nm = require "neuromic"
local cli = require "nm.cli"
local json = require "nm.json"
local data = require "nm.data"
local rule = require "nm.rule"
local meta = require "nm.models.meta"
local motif_net = require "nm.models.motif_net"
local rcn = require "nm.models.rcn"
local RCN = rule.definition("rcn")

local format = string.format

local opts = cli.parse(arg, {
  name = "bench_rcn",
  threads = 1,                 -- the common --threads: 1 unless given (peers at 1)
  description = "Seconds per RCN meta-step against the number of chemicals, and the memory " ..
                "of a meta-step with per-synapse biases against its bound.",
  options = {
    {"steps", "int", 250, "inner-loop steps (M K)", quick = 50, min = 5},
    {"chemicals", "list", {1, 2, 3, 4, 5}, "numbers of chemicals to time", item = "int",
     quick = {1, 2, 3}},
    {"repeats", "int", 3, "timed meta-steps per configuration; the fastest counts", quick = 1,
     min = 1},
    {"memory-steps", "list", {50, 100, 250}, "inner-loop lengths of the memory measurement",
     item = "int", quick = {20, 50}},
    {"memory-chemicals", "int", 2, "chemicals in the memory measurement", min = 1, max = 16},
    {"dtype", "string", "float32", "network element type", choices = {"float32", "float64"}},
  },
})

local ds = data.load("fashion", {validation = 0, dtype = opts.dtype})
local sizes = {784, 170, 130, 100, 70, 10}
local K = math.max(1, opts.steps // 5)

-- One task of `steps` inner steps.
local function task_of(steps, seed)
  local sampler = meta.sampler(ds.train, {M = 5, K = math.max(1, steps // 5), Q = 10})
  return sampler:sample(nm.generator(seed))
end

-- Best wall and CPU seconds of `repeats` calls of f().
local function time(f, repeats)
  f()                                     -- warm: buffers, first-touch pages
  local best, best_cpu = math.huge, math.huge
  for _ = 1, repeats do
    local t0, c0 = nm.sys.clock(), os.clock()
    f()
    best = math.min(best, nm.sys.clock() - t0)
    best_cpu = math.min(best_cpu, os.clock() - c0)
  end
  return best, best_cpu
end

local task = task_of(opts.steps, 1)
local rows = {}

do
  local ml = motif_net.learner{net = motif_net.new{rule = rule.definition("motifs"), sizes = sizes,
                                                 dtype = opts.dtype}, motifs = {0, 2, 9}}
  local w, c = time(function() ml:meta_gradient(task, nm.generator(2)) end, opts.repeats)
  local _, fw = time(function() ml:episode(task, nm.generator(2)) end, opts.repeats)
  rows[#rows + 1] = {name = "motif rule (theta 0,2,9)", wall = w, cpu = c, forward = fw}
end
for _, L in ipairs(opts.chemicals) do
  for _, variant in ipairs{"shared", "layer", "neuron", "momentum"} do
    if variant == "shared" or L == 2 then
      local net = rcn.new{rule = RCN, sizes = sizes, dtype = opts.dtype, chemicals = L,
                          share = variant == "layer" and "layer" or "shared",
                          bias = variant == "neuron" and "neuron" or "layer",
                          momentum = variant == "momentum"}
      local ln = rcn.learner{net = net}
      local w, c = time(function() ln:meta_gradient(task, nm.generator(2)) end, opts.repeats)
      local _, fw = time(function() ln:episode(task, nm.generator(2)) end, opts.repeats)
      rows[#rows + 1] = {name = format("RCN L = %d%s", L, variant == "shared" and "" or
                                       (", " .. variant)), L = L, wall = w, cpu = c, forward = fw}
    end
  end
end

print(format("RCN meta-step: %d inner steps + exact meta-gradient, network %s (%s), FA, motifs " ..
             "{0,2,9}, %d thread(s); best of %d", opts.steps, table.concat(sizes, "-"),
             opts.dtype, opts.threads, opts.repeats))
print(format("%-32s %10s %10s %14s %10s", "rule", "wall s", "cpu s", "forward cpu s", "x motif"))
for _, r in ipairs(rows) do
  print(format("%-32s %10.3f %10.3f %14.3f %10.2f", r.name, r.wall, r.cpu, r.forward,
               r.cpu / rows[1].cpu))
end

-- ---------------------------------------------------------------- memory

local L = opts.memory_chemicals
local mem = {}
for _, T in ipairs(opts.memory_steps) do
  local t = task_of(T, 3)
  collectgarbage("collect")
  collectgarbage("collect")
  local base = collectgarbage("count") * 1024
  local net = rcn.new{rule = RCN, sizes = sizes, dtype = opts.dtype, chemicals = L, bias = "neuron"}
  local ln = rcn.learner{net = net, guard = "rollback"}
  ln:meta_step(t, nm.generator(4))                    -- buffers, Adam state, rollback copy
  collectgarbage("collect")
  collectgarbage("collect")
  collectgarbage("stop")
  local a0 = collectgarbage("count") * 1024
  ln:meta_step(t, nm.generator(5))
  local allocated = collectgarbage("count") * 1024 - a0
  collectgarbage("restart")
  collectgarbage("collect")
  collectgarbage("collect")
  local kept = collectgarbage("count") * 1024 - base
  local state = rcn.state_bytes(net)
  local NE = state / (L + 1)
  local unroll = rcn.memory(net, T)
  local params = rcn.param_bytes(net) / 4                -- one copy of the meta-parameters
  local MiB = 1024 * 1024
  mem[#mem + 1] = {T = T, allocated = allocated, kept = kept, unroll = unroll, state = state,
                   params = params, kernels = rcn.kernel_bytes(net),
                   kept_bound = unroll + 7 * params + rcn.kernel_bytes(net) + 6 * MiB,
                   step_bound = (5 + 8 * L) * NE + MiB}
  ln, net = nil, nil
end

local MB = 1024 * 1024
print(format("\nmemory of meta-training, RCN L = %d with per-synapse biases (%d meta-parameters), " ..
             "rollback guard:", L, rcn.count(rcn.new{rule = RCN, sizes = sizes, chemicals = L, bias = "neuron"})))
print(format("%6s %10s %11s %10s %11s %14s %12s", "T", "state MB", "unroll MB", "kept MB",
             "bound MB", "allocated MB", "bound MB"))
for _, m in ipairs(mem) do
  print(format("%6d %10.2f %11.2f %10.2f %11.2f %14.2f %12.2f", m.T, m.state / MB, m.unroll / MB,
               m.kept / MB, m.kept_bound / MB, m.allocated / MB, m.step_bound / MB))
end
print("(state: chemicals + weights of all layers; unroll: the reused checkpoint buffers; kept: " ..
      "what the learner keeps alive between meta-steps, against unroll + 7 copies of the " ..
      "meta-parameters + the generated kernels' buffers + 6 MiB; allocated: what one meta-step " ..
      "allocates (garbage afterwards), against (5 + 8 L) N E + 1 MiB)")
local out = os.getenv("NEUROMIC_BENCH_JSON")
if out then
  local f = assert(io.open(out, "w"))
  f:write(json.encode({timing = rows, memory = mem, steps = opts.steps, dtype = opts.dtype}), "\n")
  f:close()
end
