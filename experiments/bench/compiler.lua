-- experiments/bench/compiler.lua: seconds per meta-step (an inner loop of
-- --steps online steps on the motif network, then the exact meta-gradient of
-- the query loss through all of them) with rules compiled by nm.compile,
-- against, in the same run and at the same thread count:
--   (a) the motif rule (rules/motifs.lua): the generic autograd tape (the
--       generated kernels ran at 0.99x the time of its hand-written C ones,
--       removed once they were equal: doc/compiler.md);
--   (b) rules/tanh_error.lua: the generic autograd tape and PyTorch
--       autograd on the same episode (experiments/bench/meta_torch.py);
--   (c) the RCN chemical update (rules/rcn.lua, --chemicals L): the
--       generic autograd tape (the generated kernels ran at 1.00-1.17x the
--       speed of its hand-written C ones, removed once they were equal:
--       doc/compiler.md; PyTorch has no RCN peer here);
--   (d) the microcircuit's four plastic pathways (rules/dendritic_prediction
--       .lua, apical_silencing.lua) in the full dynamics: Euler steps of
--       the 30-50-10 network with the steps generated from the rules (called
--       by the C loop through function pointers) against the rules' Lua
--       steps between the C half-steps (compiled = false), and the
--       plasticity's own share (the same steps without learning
--       subtracted) (the generated steps ran at 1.05-1.08x the speed of the
--       hand-written C plasticity, removed once they were equal:
--       doc/compiler.md);
-- and the compiler's own costs: first-use compile time (an empty cache) and
-- the time a cache hit adds. Fastest of --repeats alternating runs, in
-- CPU time of the process (os.clock; PyTorch's process_time), since wall
-- time on a shared machine is noise; the theta gradients are compared.
-- A benchmark: it asserts nothing.
--
--   ./neuromic experiments/bench/compiler.lua [--threads 1] [--quick]

local nm = require "neuromic"
local ag = require "nm.autograd"
local cli = require "nm.cli"
local json = require "nm.json"
local rule = require "nm.rule"
local compile = require "nm.compile"
local motif_net = require "nm.models.motif_net"
local rcn = require "nm.models.rcn"
local process = require "nm.process"

local format = string.format

local opts = cli.parse(arg, {
  name = "bench_compiler",
  threads = 1,                 -- the common --threads: 1 unless given (peers at 1)
  description = "Seconds per meta-step of compiled rules vs the generic tape and PyTorch " ..
                "autograd.",
  options = {
    {"steps", "int", 100, "inner-loop steps", quick = 20, min = 1},
    {"query", "int", 50, "query images", quick = 10, min = 1},
    {"repeats", "int", 5, "timed meta-steps per side (alternating); the fastest counts",
     quick = 2, min = 1},
    {"dtype", "string", "float32", "network element type", choices = {"float32", "float64"}},
    {"generic", "bool", true, "time the generic tape (slow)"},
    {"python", "string", "/usr/bin/python3", "python with torch"},
    {"torch", "bool", true, "run the PyTorch side"},
    {"chemicals", "string", "1,2",
     "RCN chemicals per synapse for (c), a list; 'none' (or --no-generic) skips (c)"},
    {"mc-steps", "int", 20000, "Euler steps per timed run of (d); 0 skips (d)", quick = 2000,
     min = 0},
  },
})

local here = (arg[0]:match("^(.*)/[^/]*$") or ".")

-- A synthetic episode (the timing does not depend on the pixels): inputs
-- in [0, 1], labels cycling through the classes.
local function episode(net, g, T, Q)
  local X = nm.zeros(T, net.sizes[1], net.dtype):uniform(g, 0, 1)
  local Xq = nm.zeros(Q, net.sizes[1], net.dtype):uniform(g, 0, 1)
  local labels, labels_q = {}, {}
  for t = 1, T do labels[t] = (t * 7) % net.classes + 1 end
  for q = 1, Q do labels_q[q] = (q * 3) % net.classes + 1 end
  return X, labels, Xq, labels_q
end

-- The meta-gradient of the query loss with respect to theta; unroll: a
-- function (net, W, B, X, labels, theta_var, T) -> W_T.
local function meta_gradient(net, W, B, X, labels, Xq, labels_q, theta, unroll)
  local tape = ag.tape()
  local th = tape:leaf(theta)
  local WT = unroll(th)
  local loss = motif_net.fused_query_loss(net, WT, Xq, labels_q)   -- as the learner does
  tape:backward(loss)
  return ag.value(loss), th.grad
end

local function best_of(fns, repeats)
  local best, out = {}, {}
  for _ = 1, repeats do
    for name, fn in pairs(fns) do
      collectgarbage("collect")
      local t0 = os.clock()
      local l, gr = fn()
      local dt = os.clock() - t0
      if not best[name] or dt < best[name] then best[name] = dt end
      out[name] = {loss = l, grad = gr}
    end
  end
  return best, out
end

local function rel_diff(a, b)
  return (a - b):abs():max() / math.max(b:clone():abs():max(), 1e-300)
end

local tmp = os.tmpname()
os.remove(tmp)
nm.sys.mkdir(tmp)

local function save_episode(net, W, B, X, labels, Xq, labels_q, theta)
  local function save(name, t) nm.save_npy(tmp .. "/" .. name .. ".npy", t) end
  save("layers", nm.tensor({net.layers}, "float64"))
  for l = 1, net.layers do save("W" .. l, W[l]); save("B" .. l, B[l]) end
  save("X", X)
  save("Xq", Xq)
  local lab, labq = nm.zeros(#labels, "float64"), nm.zeros(#labels_q, "float64")
  for i = 1, #labels do lab:set(i, labels[i] - 1) end
  for i = 1, #labels_q do labq:set(i, labels_q[i] - 1) end
  save("labels", lab)
  save("labels_q", labq)
  save("theta", theta)
end

local function torch_side(rule_name)
  if not opts.torch then return {error = "skipped (--no-torch)"} end
  -- the peer's thread count is its --threads (torch.set_num_threads)
  local out, why = process.output({opts.python, here .. "/meta_torch.py", "--dir", tmp,
                                   "--threads", tostring(opts.threads), "--repeats",
                                   tostring(opts.repeats), "--feedback", "fa", "--rule", rule_name})
  local ok, res = pcall(json.decode, out:match("(%b{})%s*$") or "")
  if not ok or type(res) ~= "table" then
    return {error = "PyTorch side failed (" .. tostring(why) .. "): " ..
                    out:gsub("%s+$", ""):sub(-300)}
  end
  return res
end

local results = {}

-- The compiled step of a network's rule, as an ag.scan kernel over X, labels.
local function compiled_unroll(net, W, B, X, labels, T)
  local f = motif_net.compiled_step(net, B)
  local sk = f:scan_kernel{cache = {}, state = function()
      local w = {}
      for l = 1, net.layers do w[l] = nm.zeros(net.sizes[l + 1], net.sizes[l], net.dtype) end
      return w
    end,
    args = function(src, th, t) return src, th, X:row(t), labels[t], B end,
    steps = {[3] = X, [4] = labels}}
  return function(th) return ag.scan(sk, W, {th}, T) end, f
end

-- (a) the motif rule: generated vs the generic tape
do
  local net = motif_net.new{rule = rule.definition("motifs"), feedback = "fa", dtype = opts.dtype}
  local g = nm.generator(7)
  local W, B = net:init(g)
  local X, labels, Xq, labels_q = episode(net, g, opts.steps, opts.query)
  local theta = nm.zeros(10, "float64")
  for r = 1, 10 do theta:set(r, r == 1 and 1e-3 or 1e-5) end
  local gen = compiled_unroll(net, W, B, X, labels, opts.steps)
  local fns = {generated = function()
    return meta_gradient(net, W, B, X, labels, Xq, labels_q, theta, gen) end}
  if opts.generic then
    fns.generic = function() return meta_gradient(net, W, B, X, labels, Xq, labels_q, theta,
      function(th) return motif_net.unroll(net, W, B, X, labels, th, opts.steps,
                                           {mode = "generic", segment = 5}) end) end
  end
  local best, out = best_of(fns, opts.generic and math.min(opts.repeats, 2) or opts.repeats)
  results.motifs = {generated = best.generated, generic = best.generic,
                    ratio = best.generic and best.generic / best.generated,
                    grad_rel = best.generic and rel_diff(out.generated.grad, out.generic.grad)}
end

-- (b) tanh_error: generated vs generic tape vs PyTorch
do
  local net = motif_net.new{rule = rule.definition("tanh_error"), feedback = "fa", dtype = opts.dtype}
  local g = nm.generator(8)
  local W, B = net:init(g)
  local X, labels, Xq, labels_q = episode(net, g, opts.steps, opts.query)
  local theta = nm.tensor({1e-3, 1e-4, 1e-5}, "float64")
  local gen = compiled_unroll(net, W, B, X, labels, opts.steps)
  local best, out = best_of({
    generated = function() return meta_gradient(net, W, B, X, labels, Xq, labels_q, theta, gen) end,
  }, opts.repeats)
  local r = {generated = best.generated}
  if opts.generic then
    local gbest, gout = best_of({generic = function()
      return meta_gradient(net, W, B, X, labels, Xq, labels_q, theta, function(th)
        return motif_net.unroll(net, W, B, X, labels, th, opts.steps, {mode = "generic", segment = 5})
      end)
    end}, math.min(opts.repeats, 2))
    local gr = gout.generic.grad
    r.generic = gbest.generic
    r.generic_ratio = r.generic / r.generated
    r.grad_rel_generic = rel_diff(out.generated.grad, gr)
  end
  save_episode(net, W, B, X, labels, Xq, labels_q, theta)
  local tr = torch_side("tanh_error")
  if tr.cpu_seconds then
    r.torch = tr.cpu_seconds
    r.torch_ratio = tr.cpu_seconds / r.generated
    local tg = nm.tensor(tr.theta_grad, "float64")
    r.grad_rel_torch = rel_diff(out.generated.grad, tg)
  else
    r.torch_error = tr.error
  end
  results.tanh_error = r
end

-- (c) the RCN chemical update: generated vs the generic tape (modes
-- "compiled" and "generic" of rcn.unroll), the same episode, meta-gradient
-- of P.
results.rcn = {}
for L in (opts.generic and opts.chemicals or "none"):gmatch("%d+") do     -- (no tape: none)
  local net = rcn.new{rule = rule.definition("rcn"), chemicals = tonumber(L), dtype = opts.dtype}
  local g = nm.generator(10)
  local list = rcn.param_list(net, rcn.meta_params(net))
  list[2]:uniform(g, -0.03, 0.03)                       -- K mixes the chemicals
  local Wx, B = net.mnet:init(g)
  local X, labels, Xq, labels_q = episode(net.mnet, g, opts.steps, opts.query)
  local function rcn_gradient(mode)
    local tape = ag.tape()
    local vars = {}
    for i, q in ipairs(list) do vars[i] = tape:leaf(q) end
    local H0, W0 = rcn.initial_state(net, Wx, vars[3])
    local res = rcn.unroll(net, H0, W0, B, X, labels, vars, opts.steps,
                           {mode = mode, segment = mode == "generic" and 5 or nil})
    local WT = {}
    for l = 1, net.layers do WT[l] = res[net.layers + l] end
    local loss = motif_net.fused_query_loss(net.mnet, WT, Xq, labels_q)
    tape:backward(loss)
    return ag.value(loss), vars[1].grad
  end
  local best, out = best_of({generated = function() return rcn_gradient("compiled") end,
                            generic = function() return rcn_gradient("generic") end},
                           math.min(opts.repeats, 2))
  results.rcn[#results.rcn + 1] = {chemicals = tonumber(L), generated = best.generated,
                                   generic = best.generic, ratio = best.generic / best.generated,
                                   grad_rel = rel_diff(out.generated.grad, out.generic.grad)}
end

-- (d) the microcircuit's plasticity: generated steps vs the rules' Lua
-- steps, Fig. 2 settings (noise; up, ip, pi plastic) and all four pathways.
results.microcircuit = {}
if opts.mc_steps > 0 then
  local mc = require "nm.models.microcircuit"
  local configs = {
    {name = "Fig. 2 (up, ip, pi)", eta = {up = {0.0011875, 0.0005}, ip = 0.0011875, pi = 0.0059375}},
    {name = "all four pathways", eta = {up = {0.0011875, 0.0005}, ip = 0.0011875, pi = 0.0059375,
                                        down = 0.0005}},
  }
  for _, cf in ipairs(configs) do
    local nets = {}
    for _, side in ipairs{"generated", "lua", "generated_off", "lua_off"} do
      nets[side] = mc.new{sizes = {30, 50, 10}, gen = nm.generator(4), noise_gen = nm.generator(5),
                          sigma = 0.3, eta = cf.eta, compiled = side:find("^generated") ~= nil}
    end
    local g = nm.generator(6)
    local x = nm.zeros(30, "float64"):uniform(g, 0, 1)
    local target = nm.zeros(10, "float64"):uniform(g, 0, 1)
    local function runner(side, learn)
      return function() nets[side]:run(x, opts.mc_steps, target, {learn = learn}) end
    end
    nets.generated:run(x, 1, target)                  -- the kernels traced and compiled
    nets.lua:run(x, 1, target)
    local best = best_of({generated = runner("generated", true), lua = runner("lua", true),
                          generated_off = runner("generated_off", false),
                          lua_off = runner("lua_off", false)}, opts.repeats)
    local worst = 0
    for _, kind in ipairs{"up", "ip", "pi", "down"} do
      for k, c in pairs(nets.lua[kind]) do
        worst = math.max(worst, rel_diff(nets.generated[kind][k].W, c.W),
                         rel_diff(nets.generated[kind][k].state.D, c.state.D))
      end
    end
    local base = math.min(best.generated_off, best.lua_off)
    results.microcircuit[#results.microcircuit + 1] = {
      config = cf.name, steps = opts.mc_steps, generated = best.generated, lua = best.lua,
      speed = best.lua / best.generated, dynamics = base,
      plasticity_speed = (best.lua - base) / (best.generated - base), weights_rel = worst}
  end
end

-- The compiler's own costs: first use (empty cache) and a cache hit.
do
  local saved = compile.cache_dir
  local dir = tmp .. "/cache"
  compile.cache_dir = function() return dir end
  local net = motif_net.new{rule = rule.definition("tanh_error"), feedback = "fa", dtype = opts.dtype}
  local _, B = net:init(nm.generator(9))
  local wrt = {}
  for i = 1, net.layers + 1 do wrt[i] = true end
  local t0 = nm.sys.clock()       -- wall time: the compiler runs in a child process
  motif_net.compiled_step(net, B):traced_pair(wrt)
  local first = nm.sys.clock() - t0
  local hit = math.huge                  -- fastest of --repeats, as the timings above
  for _ = 1, opts.repeats do
    t0 = nm.sys.clock()
    motif_net.compiled_step(net, B):traced_pair(wrt)
    hit = math.min(hit, nm.sys.clock() - t0)
  end
  compile.cache_dir = saved
  results.compile = {first_use = first, cache_hit = hit}
end

-- the episode's files and the cache folder of the compile timing
local function remove_tree(path)
  for _, name in ipairs(nm.sys.listdir(path) or {}) do
    local p = path .. "/" .. name
    if not os.remove(p) then remove_tree(p) end
  end
  os.remove(path)
end
remove_tree(tmp)

local a, b, c = results.motifs, results.tanh_error, results.compile
print(format("meta-step: %d inner steps on the motif network (784-170-130-100-70-10, %s, FA), " ..
             "%d query images, %d thread(s); fastest of %d", opts.steps, opts.dtype, opts.query,
             opts.threads, opts.repeats))
print(format("%-34s %10s %10s %8s  %s", "", "generated", "reference", "ratio", "grad rel. diff"))
if a.generic then
  print(format("%-34s %9.3fs %9.3fs %7.1fx  %.1e", "(a) motif rule vs generic tape", a.generated,
               a.generic, a.ratio, a.grad_rel))
end
if b.generic then
  print(format("%-34s %9.3fs %9.3fs %7.1fx  %.1e", "(b) tanh_error vs generic tape", b.generated,
               b.generic, b.generic_ratio, b.grad_rel_generic))
end
if b.torch then
  print(format("%-34s %9.3fs %9.3fs %7.1fx  %.1e", "(b) tanh_error vs PyTorch autograd",
               b.generated, b.torch, b.torch_ratio, b.grad_rel_torch))
else
  print("(b) PyTorch: " .. tostring(b.torch_error))
end
for _, r in ipairs(results.rcn) do
  print(format("%-34s %9.3fs %9.3fs %7.1fx  %.1e", format("(c) RCN, L = %d, vs generic tape",
               r.chemicals), r.generated, r.generic, r.ratio, r.grad_rel))
end
for _, r in ipairs(results.microcircuit) do
  print(format("%-34s %9.3fs %9.3fs %7.2fx  %.1e (weights, traces)",
               "(d) microcircuit, " .. r.config, r.generated, r.lua, r.speed, r.weights_rel))
  print(format("%-34s %9.3fs %9.3fs %7.2fx  (dynamics alone %.3f s subtracted)",
               "    its plasticity alone", r.generated - r.dynamics, r.lua - r.dynamics,
               r.plasticity_speed, r.dynamics))
end
print("ratio = reference / generated (targets for (b): >= 20 tape, >= 5 PyTorch; " ..
      "(d): the reference is the rules' Lua steps)")
print(format("compiler: first use %.2f s (trace, adjoint, C, cc for 4 kernels), cache hit %.1f ms",
             c.first_use, c.cache_hit * 1e3))
print(json.encode({bench = "compiler", threads = opts.threads, steps = opts.steps,
                   dtype = opts.dtype, results = results}))
