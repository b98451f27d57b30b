-- experiments/bench/unroll.lua: seconds per meta-step of a connection
-- rule's parameters (nm.unroll: --steps training minibatches of a
-- network learning by the rule, then the exact gradient of the query loss
-- with respect to every layer's learning rate; and of the microcircuit's
-- circuit rules in the steady state) through the generated C
-- step and adjoint, against the same graphs interpreted through the tensor
-- operations (the path without a C compiler), in the same run at the same
-- thread count; fastest of --repeats alternating runs in CPU time of the
-- process (os.clock); the gradients are compared. A benchmark: it asserts
-- nothing.
--
--   ./neuromic experiments/bench/unroll.lua [--rules hebb,oja,fa] [--quick]

local nm = require "neuromic"
local nn = require "nm.nn"
local cli = require "nm.cli"
local json = require "nm.json"
local unroll = require "nm.unroll"

local format = string.format

local opts = cli.parse(arg, {
  name = "bench_unroll",
  threads = 1,
  description = "Seconds per meta-step of connection rules' parameters: generated vs " ..
                "interpreted.",
  options = {
    {"rules", "list", {"hebb", "oja", "three_factor", "backprop", "fa", "dfa", "sign_symmetry"},
     "connection rules (names or paths)"},
    {"sizes", "list", {784, 100, 10}, "layer sizes", item = "int"},
    {"batch", "int", 10, "minibatch size (and query batch)", min = 1},
    {"steps", "int", 50, "training minibatches per meta-step", quick = 10, min = 1},
    {"repeats", "int", 3, "timed meta-steps per side (alternating); the fastest counts",
     quick = 1, min = 1},
    {"dtype", "string", "float32", "network element type", choices = {"float32", "float64"}},
    {"microcircuit", "bool", true, "also the microcircuit in the steady state (the paper's " ..
     "rules, every pathway plastic, the same sizes)"},
  },
})

local g = nm.generator(opts.seed or 1)
local n0, nL = opts.sizes[1], opts.sizes[#opts.sizes]
local X = nm.zeros(opts.steps * opts.batch, n0, opts.dtype):uniform(g, 0, 1)
local T = nm.zeros(opts.steps * opts.batch, nL, opts.dtype)
for i = 1, opts.steps * opts.batch do T:set(i, (i * 7) % nL + 1, 1) end
local Xq = nm.zeros(opts.batch, n0, opts.dtype):uniform(g, 0, 1)
local Tq = nm.zeros(opts.batch, nL, opts.dtype)
for i = 1, opts.batch do Tq:set(i, (i * 3) % nL + 1, 1) end

-- The microcircuit's targets: potentials.
local UT, UTq = T:clone():mul(2):add(-0.5), Tq:clone():mul(2):add(-0.5)

local cases = {}
for _, name in ipairs(opts.rules) do cases[#cases + 1] = name end
if opts.microcircuit then cases[#cases + 1] = "microcircuit" end

local rows = {}
for _, name in ipairs(cases) do
  local sides = {}
  local Tt, Ttq = T, Tq
  if name == "microcircuit" then Tt, Ttq = UT, UTq end
  for _, mode in ipairs{"compile", "interpret"} do
    local u
    local t0 = nm.sys.clock()
    if name == "microcircuit" then
      local mc = require "nm.models.microcircuit"
      local net = mc.new{sizes = opts.sizes, gen = nm.generator(2), dtype = opts.dtype,
                         mode = "steady", eta = {up = 0.01, ip = 0.01, pi = 0.01, down = 0.01}}
      u = unroll.microcircuit(net, {params = {"eta"}, batch = opts.batch, mode = mode})
    else
      local net = nn.mlp{sizes = opts.sizes, act = "tanh", rule = name, params = {eta = 0.01},
                         gen = nm.generator(2), dtype = opts.dtype}
      u = unroll.mlp(net, {params = {"eta"}, batch = opts.batch, mode = mode})
    end
    u:gradient(X, Tt, Xq, Ttq)             -- every kernel built (and compiled)
    sides[mode] = {u = u, W0 = u:state(), first = nm.sys.clock() - t0, best = math.huge}
  end
  for _ = 1, opts.repeats do
    for _, mode in ipairs{"compile", "interpret"} do
      local s = sides[mode]
      collectgarbage("collect")
      local t0 = os.clock()
      s.loss, s.grad = s.u:gradient(X, Tt, Xq, Ttq, {S0 = s.W0})
      s.best = math.min(s.best, os.clock() - t0)
    end
  end
  local c, i = sides.compile, sides.interpret
  local rel = (c.grad - i.grad):abs():max() / math.max(i.grad:clone():abs():max(), 1e-300)
  rows[#rows + 1] = {rule = name, generated = c.best, interpreted = i.best,
                     speed = i.best / c.best, grad_rel = rel, first_use = c.first}
end

print(format("meta-step: %d minibatches of %d on %s (%s, tanh, softmax cross-entropy; the " ..
             "microcircuit: steady state, every pathway), gradient of every connection's eta; " ..
             "%d thread(s), fastest of %d", opts.steps, opts.batch,
             table.concat(opts.sizes, "-"), opts.dtype, opts.threads, opts.repeats))
print(format("%-16s %10s %12s %8s %12s %14s", "rule", "generated", "interpreted", "speed",
             "grad rel.", "first use (s)"))
for _, r in ipairs(rows) do
  print(format("%-16s %9.3fs %11.3fs %7.1fx %12.1e %14.2f", r.rule, r.generated, r.interpreted,
               r.speed, r.grad_rel, r.first_use))
end
print(json.encode({bench = "unroll", threads = opts.threads, steps = opts.steps,
                   batch = opts.batch, sizes = opts.sizes, dtype = opts.dtype, results = rows}))
