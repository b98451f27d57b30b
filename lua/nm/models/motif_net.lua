-- nm/models/motif_net.lua: the network on which a meta rule of model
-- "motif_net" learns (Shervani-Tabar & Rosenbaum, Nat. Commun. 14, 1805,
-- 2023): a softplus network without biases, its error pathway, Xavier
-- draws, the inner loop (one checkpointed ag.scan over the rule's step),
-- the query loss, and the motif rule's meta-learner (nm.models.meta).
--
-- Network: y_0 = x, z_l = W_l y_{l-1},
--   y_l = softplus_beta(z_l) = log(1 + exp(beta z_l)) / beta   (l < L),
--   y_L = softmax(z_L); default 784-170-130-100-70-10, beta = 10.
-- Errors: e_L = y_L - onehot(label),
--   e_l = (B_{l+1}^T e_{l+1}) .* (1 - exp(-beta y_l))  for l = L-1..1,
--   e_0 = (B_1^T e_1) .* (1 - exp(-beta x))          (synthetic input error),
-- with fixed random B_l (FA) or B_l = W_l (BP; "bp_detached" holds the
-- copy constant in the meta-gradient, as in the authors' code), or any
-- other error pathway defined by a rule file (nm.rule.pathway: "dfa",
-- "sign_symmetry", a user's rule): e_l = (M_l^T e_src) .* (1 - exp(-beta
-- y_l)) with M_l = pathway.matrix(W_src, state_l), e_src = e_{l+1} and
-- W_src = W_{l+1} (source "next") or e_L and W_L ("output"); M_l is held
-- constant in the meta-gradient; its state (pathway.init) is drawn per
-- episode after the weights, Xavier-uniform by shape. 1 -
-- exp(-beta y) is the softplus derivative written through y, so the
-- meta-gradient differentiates softplus twice.
--
-- The rule (rules/motifs.lua, or any meta rule of this model) gives
--   step(net, W, theta, x, label, B) -> W'   the Lua reference (nm.autograd
--                                            operations: runs on a tape)
-- For the pathways the compiler can trace ("fa", "bp", "bp_detached") the
-- inner loop runs the step compiled by nm.compile (generated C step and
-- adjoint); with another pathway, the rule's Lua step on a tape. The query
-- loss always runs in C (csrc/models/nm_meta.c; it does not depend on the
-- pathway).
--   local net = motif_net.new{rule = rule.definition("motifs"), feedback = "fa"}
--   local W, B = net:init(nm.generator(1))
--   local WT = motif_net.unroll(net, W, B, X, labels, theta, T)

local nm = require "neuromic"
local ag = require "nm.autograd"
local rule = require "nm.rule"
local meta = require "nm.models.meta"
local compile = require "nm.compile"
local measures = require "nm.measures"

local motif_net = {}

local format = string.format

-- The network's options (those of the rule are the rule's params).
motif_net.options = {
  sizes = {default = {784, 170, 130, 100, 70, 10}, doc = "layer widths n_0..n_L"},
  beta = {default = 10, doc = "softplus sharpness"},
  feedback = {default = "fa", doc = "'fa' (fixed random B), 'bp' (B = W, exact derivative " ..
                                    "through both uses), 'bp_detached' (B = W held constant " ..
                                    "in the meta-gradient, as in the authors' code), or " ..
                                    "another error pathway: 'dfa', 'sign_symmetry', a " ..
                                    "connection rule defining one (name or path)"},
  dtype = {default = "float32", doc = "network element type"},
}

-- The pathways the network knows by name (the compiled step traces them).
local C_FEEDBACK = {fa = true, bp = true, bp_detached = true}

local Net = {}
Net.__index = Net

local function fail(msg, level) error("motif_net: " .. msg, (level or 1) + 1) end

-- The definition of a rule given as a definition or an instance.
local function definition(r, model, who)
  if type(r) == "table" and type(r.def) == "table" then r = r.def end
  if type(r) ~= "table" or r.kind ~= "meta" or type(r.step) ~= "function" then
    error(format("%s: option 'rule' (a meta rule definition, e.g. rule.definition('%s')) " ..
                 "is required", who, model == "rcn" and "rcn" or "motifs"), 3)
  end
  if r.model ~= model then
    error(format("%s: rule '%s' is for model '%s', not '%s'", who, tostring(r.name),
                 tostring(r.model), model), 3)
  end
  return r
end
motif_net.definition = definition

-- motif_net.new{rule =, sizes =, beta =, feedback =, dtype =} -> a network:
-- its widths, the rule, net.kernel (the network's C kernel: query loss).
function motif_net.new(o)
  o = o or {}
  local D = motif_net.options
  local net = setmetatable({
    rule = definition(o.rule, "motif_net", "motif_net.new"),
    sizes = o.sizes or D.sizes.default,
    beta = o.beta or D.beta.default,
    feedback = o.feedback or D.feedback.default,
    dtype = o.dtype or D.dtype.default,
  }, Net)
  net.layers = #net.sizes - 1
  if net.layers < 1 then fail("new: sizes must list at least 2 layer widths", 2) end
  if not C_FEEDBACK[net.feedback] then
    local okp, pw = pcall(rule.pathway, net.feedback)
    if not okp then fail("new: feedback: " .. tostring(pw), 2) end
    net.feedback = pw.name
    if not C_FEEDBACK[pw.name] then net.pathway = pw end
  end
  local ok, k = pcall(nm.kernels.motif_net, {sizes = net.sizes, beta = net.beta, dtype = net.dtype,
                                     feedback = net.pathway and "bp" or net.feedback})
  if not ok then fail("new: " .. tostring(k):gsub("^.-%(", "("), 2) end
  net.kernel = k
  net.classes = net.sizes[#net.sizes]
  return net
end

-- The shape of pathway matrix l (it carries e_l back to layer l - 1).
local function pathway_shape(net, l)
  if net.pathway.source == "output" then return net.sizes[net.layers + 1], net.sizes[l] end
  return net.sizes[l + 1], net.sizes[l]
end

-- t drawn U(-a, a), a = sqrt(6 / (rows + cols)) (Xavier-uniform).
local function xavier(t, g, rows, cols)
  local a = math.sqrt(6 / (rows + cols))
  return t:uniform(g, -a, a)
end

-- A list of n_l x n_{l-1} matrices drawn by xavier (into W's when given).
local function draw_layers(net, g, W)
  for l = 1, net.layers do
    local n, m = net.sizes[l + 1], net.sizes[l]
    W[l] = xavier(W[l] or nm.zeros(n, m, net.dtype), g, n, m)
  end
  return W
end

-- net:init(g [, W, B]) -> W, B: Xavier-uniform draws U(-a, a),
-- a = sqrt(6 / (fan_in + fan_out)), for the weights and (FA) the feedback
-- matrices, each of shape n_l x n_{l-1}. B is nil in the BP modes; with
-- another pathway B lists its states (pathway.init, drawn the same way).
function Net:init(g, W, B)
  W = draw_layers(self, g, W or {})
  if self.pathway then
    B = B or {}
    local init = self.pathway.init
    for l = 1, self.layers do
      local rows, cols = pathway_shape(self, l)
      B[l] = init and init(rows, cols, self.dtype, function(t) return xavier(t, g, rows, cols) end)
             or false
    end
    return W, B
  end
  if self.feedback == "fa" then return W, draw_layers(self, g, B or {}) end
  return W, nil
end

-- net:signals(W, B, x, label) -> y, e, z: activations y[0..L], errors
-- e[0..L] and pre-activations z[1..L] of one sample, written with
-- nm.autograd operations (W entries may be variables; B: the feedback
-- matrices (FA) or the pathway's states).
function Net:signals(W, B, x, label)
  local L, beta = self.layers, self.beta
  local y, z, e = {[0] = x}, {}, {}
  for l = 1, L do
    z[l] = ag.mv(W[l], y[l - 1])
    if l < L then y[l] = ag.softplus(z[l], beta) else y[l] = ag.softmax(z[l]) end
  end
  local fb = W
  if self.feedback == "fa" then fb = B
  elseif self.feedback == "bp_detached" then
    fb = {}
    for l = 1, L do fb[l] = ag.value(W[l]) end
  end
  e[L] = ag.sub(y[L], ag.onehot(self.classes, label, self.dtype))
  local pw = self.pathway
  for l = L - 1, 0, -1 do
    local s = ag.sub(1, ag.exp(ag.scale(y[l], -beta)))      -- 1 - exp(-beta y_l)
    if pw then
      local src = pw.source == "output" and L or l + 1
      -- a copy: the pathway may return a buffer that its next call overwrites
      local M = pw.matrix(ag.value(W[src]), B[l + 1] or nil):clone()
      e[l] = ag.mul(ag.mv(ag.t(M), e[src]), s)
    else
      e[l] = ag.mul(ag.mv(ag.t(fb[l + 1]), e[l + 1]), s)
    end
  end
  return y, e, z
end

-- motif_net.step(net, W, theta, x, label [, B]) -> W': the rule's Lua step
-- (the reference; runs on a tape).
function motif_net.step(net, W, theta, x, label, B)
  return net.rule.step(net, W, theta, x, label, B)
end

-- The coefficients (1-based) that are 0 in theta (a float64 tensor or a
-- variable) and whose gradient is not needed (need: a list of booleans,
-- nil for none needed): the compiled step leaves their terms out.
local function fixed_zeros(theta, need)
  local v = ag.value(theta)
  local zero = {}
  for r = 1, v:numel() do
    if v:get(r) == 0 and not (need and need[r]) then zero[#zero + 1] = r end
  end
  return zero
end

-- The network's rule compiled for its sizes, dtype and feedback, with the
-- coefficients of `zero` fixed at 0 (once per network and set;
-- motif_net.compiled_step).
local function compiled_fn(net, B, zero)
  net.compiled = net.compiled or {}
  local key = table.concat(zero, ",")
  local f = net.compiled[key]
  if not f then
    f = motif_net.compiled_step(net, B, {zero = zero})
    net.compiled[key] = f
  end
  return f
end

-- motif_net.step_into(net, out, W, theta, x, label [, B]): the untracked
-- step written into the tensors of `out` (may be W: in place); through the
-- compiled step (allocates nothing after the first call) or, with a
-- pathway the compiler cannot trace, the rule's Lua step.
function motif_net.step_into(net, out, W, theta, x, label, B)
  if net.pathway then
    local Wn = net.rule.step(net, W, theta, x, label, B)
    for l = 1, net.layers do out[l]:copy(Wn[l]) end
    return out
  end
  local f = compiled_fn(net, B, fixed_zeros(theta))
  local bufs = net.step_buffers
  if not bufs then
    bufs = {theta = nm.zeros(theta:numel(), net.dtype), W = {}}
    for l = 1, net.layers do bufs.W[l] = nm.zeros(net.sizes[l + 1], net.sizes[l], net.dtype) end
    net.step_buffers = bufs
  end
  local th = theta
  if th:dtype() ~= net.dtype then th = bufs.theta:copy(theta) end
  -- the kernel's outputs must not overlap its inputs: written into the
  -- net's buffers, then copied when out is W
  local inplace = out[1] == W[1]
  f:call_into(inplace and bufs.W or out, W, th, x, label, B)
  if inplace then for l = 1, net.layers do out[l]:copy(bufs.W[l]) end end
  return out
end

-- ---------------------------------------------------------------- unroll

local function weight_bytes(net)
  local esize = net.dtype == "float64" and 8 or 4
  local bytes = 0
  for l = 1, net.layers do bytes = bytes + net.sizes[l + 1] * net.sizes[l] * esize end
  return bytes
end

-- motif_net.scan_kernel(net, k, state_bytes) -> the fields of an ag.scan
-- kernel over the C object k (a rule's step) that every model shares: the
-- buffers' cache on the network, the traces; the model adds state,
-- forward and backward.
function motif_net.scan_kernel(net, k, state_bytes)
  net.workspaces = net.workspaces or {}
  return {cache = net.workspaces, state_bytes = state_bytes,
          trace_bytes = k:info().trace_size * (net.dtype == "float64" and 8 or 4),
          trace = function() return k:new_trace() end}
end

-- motif_net.compiled_step(net, B [, opts]) -> the network's meta rule
-- compiled by nm.compile: a function over (W list, theta, x, label, B list)
-- (net.rule.step(net, W, theta, x, label, B)), traced for net's sizes and
-- dtype and the shapes of B (nil without one). opts.mode as compile.fn's;
-- opts.zero: coefficients (1-based) fixed at 0, whose terms the kernels
-- leave out (their gradients are 0).
function motif_net.compiled_step(net, B, opts)
  opts = opts or {}
  local def = net.rule
  local W = {}
  for l = 1, net.layers do W[l] = {net.sizes[l + 1], net.sizes[l]} end
  local nc = def.coefficients and def.coefficients.theta and def.coefficients.theta.size
  if math.type(nc) ~= "integer" then
    error(format("rule compiler: meta rule '%s' declares no coefficients.theta.size", def.name), 2)
  end
  local spec = {{name = "W", list = W}, {name = "theta", shape = {nc}, zero = opts.zero},
                {name = "x", shape = {net.sizes[1]}}, {name = "label", scalar = true}}
  if B then
    local shapes = {}
    for l = 1, #B do shapes[l] = B[l]:size() end
    spec[#spec + 1] = {name = "B", list = shapes}
  end
  return compile.fn(function(W_, theta, x, label, B_)
    return def.step(net, W_, theta, x, label, B_)
  end, spec, {dtype = net.dtype, name = def.name, source = debug.getinfo(def.step, "S").short_src,
              equation = def.equation, mode = opts.mode})
end

-- motif_net.emit(rule) prints the C that nm.compile generates for a meta
-- rule file of this network or of the RCN built on it (its step and
-- adjoint), for a connection rule (rule.emit), a microcircuit rule
-- (mc.emit), a BMVR or folded-autoencoder rule (unroll.emit: its model's
-- training step and adjoint): `neuromic --emit rule`. Errors are one line.
function motif_net.emit(path)
  local ok, def = pcall(rule.definition, path)
  if not ok then error(tostring(def):gsub("^[^:]*:%d+: ", ""), 0) end
  -- connection rules, and circuit rules of the microcircuit: their
  -- in-place steps (nm.compile.state_step)
  if def.kind == "connection" then return rule.emit(def) end
  if def.kind == "circuit" and def.model == "microcircuit" then
    return require("nm.models.microcircuit").emit(def)
  end
  -- BMVR's and the folded autoencoder's, traced in their training steps
  if def.kind == "circuit" and (def.model == "bmvr" or def.model == "folded_ae") then
    return require("nm.unroll").emit(def)
  end
  if def.kind == "circuit" and def.model == "nk" then
    error(format("--emit: rule '%s' is the NK model's random hill climber (random proposals, " ..
                 "kept or reverted by comparing errors): no traceable training step or gradient " ..
                 "to compile", def.name), 0)
  end
  if def.kind ~= "meta" or (def.model ~= "motif_net" and def.model ~= "rcn") then
    error(format("--emit: rule '%s' is a %s rule%s; the compiler takes connection rules, " ..
                 "circuit rules of the microcircuit, BMVR and folded autoencoder and meta rules " ..
                 "of the motif and RCN networks so far", def.name, def.kind,
                 def.model and (" of model '" .. def.model .. "'") or ""), 0)
  end
  -- (the RCN builds on this network: loaded here, not at the top)
  if def.model == "rcn" then return require("nm.models.rcn").emit(def) end
  local net = motif_net.new{rule = def, dtype = "float64"}
  local _, B = net:init(nm.generator(1))
  local f = motif_net.compiled_step(net, B, {mode = "interpret"})
  local wrt = {}
  for i = 1, net.layers + 1 do wrt[i] = true end
  io.stdout:write(f:source(), "\n", f:source(wrt))
end

-- The rule's step compiled by nm.compile, as an ag.scan kernel: the
-- generated step and adjoint, so a rule runs at C speed with its exact
-- meta-gradient (interpreted, with a notice, without a C compiler).
local function compiled_kernel(net, B, X, labels, zero)
  -- buffers per kernel: the traces differ between sets of zeros
  net.compiled_workspaces = net.compiled_workspaces or {}
  local key = table.concat(zero, ",")
  local ws = net.compiled_workspaces[key] or {}
  net.compiled_workspaces[key] = ws
  return compiled_fn(net, B, zero):scan_kernel{
    cache = ws, state_bytes = weight_bytes(net),
    state = function()
      local w = {}
      for l = 1, net.layers do w[l] = nm.zeros(net.sizes[l + 1], net.sizes[l], net.dtype) end
      return w
    end,
    args = function(src, th, t) return src, th, X:row(t), labels[t], B end,
    steps = {[3] = X, [4] = labels},
  }
end

-- motif_net.unroll(net, W0, B, X, labels, theta, T [, opts]) -> W_T (a list):
-- the whole inner loop, W_t = step(W_{t-1}, x_t = X:row(t), labels[t]),
-- by ag.scan: one tape operation when theta (or W0 entries) are variables,
-- checkpointed (segment starts stored every S = opts.segment or
-- ceil(sqrt(T)) steps, each segment recomputed once during backward).
-- opts.mode: "unroll" (default): "compiled", or "generic" when the
-- network's pathway has no compiled form; "compiled" (the rule's step and
-- adjoint generated by nm.compile, in buffers reused across calls, about
-- 2 sqrt(T) weight sets); "generic" (ag.scan over the rule's Lua step on
-- a tape; slow, the reference). opts.stats receives ag.scan's memory
-- figures. The result's gradients flow to W0 and to theta; opts.need (a
-- list of booleans per coefficient; default all) names the coefficients
-- whose gradient is wanted: the compiled step leaves out the terms of the
-- others that are 0 (their gradients are then 0).
function motif_net.unroll(net, W0, B, X, labels, theta, T, opts)
  opts = opts or {}
  local mode = opts.mode or "unroll"
  if mode == "unroll" then mode = net.pathway and "generic" or "compiled" end
  if mode == "compiled" and net.pathway then
    fail(format("unroll: the pathway '%s' has no compiled form: use mode 'generic'",
                net.feedback), 2)
  end
  if mode ~= "compiled" and mode ~= "generic" then
    fail("unroll: mode must be 'unroll', 'compiled' or 'generic', got " .. tostring(mode), 2)
  end
  local o = {segment = opts.segment, stats = opts.stats, collect = opts.collect,
             measure = opts.measure, gc = opts.gc}
  local step
  if mode == "compiled" then
    local need = opts.need
    if not need then
      need = {}
      for r = 1, ag.value(theta):numel() do need[r] = true end
    end
    step = compiled_kernel(net, B, X, labels, fixed_zeros(theta, need))
  else
    local stepper = net.rule.step
    step = function(state, params, t) return stepper(net, state, params[1], X:row(t), labels[t], B) end
  end
  return ag.scan(step, W0, {theta}, T, o)
end

-- ---------------------------------------------------------------- loss

-- motif_net.logits(net, W, X) -> Z_L: the network's output before the
-- softmax for the rows of X (nm.autograd operations).
function motif_net.logits(net, W, X)
  local Y = X
  for l = 1, net.layers do
    local Z = ag.mm(Y, ag.t(W[l]))
    if l < net.layers then Y = ag.softplus(Z, net.beta) else return Z end
  end
end

-- motif_net.query_loss(net, W, X, labels) -> mean cross-entropy (a number
-- or a variable), generic operations.
function motif_net.query_loss(net, W, X, labels)
  return ag.cross_entropy(motif_net.logits(net, W, X), labels)
end

-- The fused query loss as a tape operation: arguments (W_1..W_L), result
-- the mean cross-entropy.
local function fused_query_forward(ctx, net, X, labels, ...)
  local W = {...}
  local loss = net.kernel:query(W, X, labels)
  ctx.net, ctx.W, ctx.X, ctx.labels = net, W, X, labels
  return loss
end

local function fused_query_backward(ctx, g)
  local net = ctx.net
  local G = {}
  for l = 1, net.layers do G[l] = nm.zeros(ctx.W[l]:size(), net.dtype) end
  net.kernel:query(ctx.W, ctx.X, ctx.labels, G)
  local res = {nil, nil, nil}
  for l = 1, net.layers do res[3 + l] = G[l]:scale(g) end
  return table.unpack(res, 1, 3 + net.layers)
end

local fused_query_ops = {}

-- motif_net.fused_query_loss(net, W, X, labels) -> loss, correct: the same
-- through the C kernel (correct only for plain W).
function motif_net.fused_query_loss(net, W, X, labels)
  local L = net.layers
  local tracked = false
  for l = 1, L do if ag.is_var(W[l]) then tracked = true end end
  if not tracked then return net.kernel:query(W, X, labels) end
  local op = fused_query_ops[L]
  if not op then
    op = ag.def("motif_query", fused_query_forward, fused_query_backward)
    fused_query_ops[L] = op
  end
  return op(net, X, labels, table.unpack(W, 1, L))
end

-- theta as a float64 tensor from a table {[r] = value} (0-based motif
-- indices) or a list of n numbers (n = 10 for the motif rule).
function motif_net.theta(t, n)
  n = n or 10
  local th = nm.zeros(n, "float64")
  if nm.is_tensor(t) then th:copy(t) return th end
  for r = 0, n - 1 do
    local v = t[r]
    if v == nil and #t == n then v = t[r + 1] end
    if v ~= nil then th:set(r + 1, v) end
  end
  return th
end

function motif_net.describe(theta)
  local parts = {}
  for r = 0, theta:numel() - 1 do parts[#parts + 1] = format("%d:%.3g", r, theta:get(r + 1)) end
  return table.concat(parts, " ")
end

-- ---------------------------------------------------------------- learner

local Learner = setmetatable({}, {__index = meta.Learner})
Learner.__index = Learner

-- motif_net.learner(o) -> a meta.learner of theta. Options:
--   net        motif_net.new{...} (required)
--   motifs     0-based indices of the coefficients that are meta-learned
--              (default {0}); the others stay at their initial value
--   theta0     initial theta: {[r] = value} (default the rule's
--              coefficients.theta.init)
--   lr, beta1, beta2, eps, clip, guard, rollback_decay   as meta.learner
--   lambda     L1 penalty on theta (0)
--   scale      per-coefficient scale s_r: theta_r = s_r phi_r and Adam
--              moves phi ({[r] = s}, default 1 each)
--   segment    checkpoint segment length (default ceil(sqrt(steps)))
--   mode       "unroll", "compiled" or "generic" (motif_net.unroll)
function motif_net.learner(o)
  if type(o) ~= "table" or getmetatable(o.net) ~= Net then
    fail("learner: option 'net' (motif_net.new{...}) is required", 2)
  end
  local net = o.net
  local coef = net.rule.coefficients.theta
  local n = coef.size
  local active = {}
  for _, r in ipairs(o.motifs or {0}) do
    if math.type(r) ~= "integer" or r < 0 or r >= n then
      fail(format("learner: motif indices are 0..%d", n - 1), 2)
    end
    active[r] = true
  end
  local scale = nm.ones(n, "float64")
  for r, s in pairs(o.scale or {}) do
    -- phi = theta / s: a zero scale would make phi 0/0 and the run NaN.
    if math.type(r) ~= "integer" or r < 0 or r >= n then
      fail(format("learner: scale keys are motifs 0..%d", n - 1), 2)
    end
    if type(s) ~= "number" or not (s > 0 and s < math.huge) then
      fail(format("learner: scale of motif %d must be a positive finite number, got %s " ..
                  "(a tiny scale such as 1e-9 switches the motif off)", r, tostring(s)), 2)
    end
    scale:set(r + 1, s)
  end
  local mode = o.mode or "unroll"
  if mode ~= "unroll" and mode ~= "generic" and mode ~= "compiled" then
    fail("learner: mode must be 'unroll', 'compiled' or 'generic'", 2)
  end
  local theta = motif_net.theta(o.theta0 or coef.init, n)
  local phi = nm.zeros(n, "float64"):div(theta, scale)
  local mask, need = nm.zeros(n, "float64"), {}
  for r = 0, n - 1 do
    need[r + 1] = active[r] or false
    if active[r] then mask:set(r + 1, 1) end
  end
  local self = meta.learner({params = {phi}, groups = {"theta"}, masks = {mask}, lr = o.lr,
                             beta1 = o.beta1, beta2 = o.beta2, eps = o.eps, clip = o.clip,
                             guard = o.guard, rollback_decay = o.rollback_decay}, Learner)
  self.net, self.phi, self.scale, self.need, self.active_motifs = net, phi, scale, need, active
  self.lambda, self.segment, self.mode = o.lambda or 0, o.segment, mode
  return self
end

-- The effective theta (a new float64 tensor).
function Learner:theta()
  return nm.zeros(self.phi:numel(), "float64"):mul(self.phi, self.scale)
end

-- learner:components(grads) -> {[r] = d meta-loss / d theta_r} for the
-- meta-learned coefficients r (0-based; the L1 term included), from the
-- gradient of phi (theta_r = s_r phi_r) before clipping.
function Learner:components(grads)
  local gr, c = grads[1], {}
  for r = 0, gr:numel() - 1 do
    if self.active_motifs[r] then c[r] = gr:get(r + 1) / self.scale:get(r + 1) end
  end
  return c
end

-- learner:episode(task, g [, theta]) -> W (adapted weights), B: the inner
-- loop alone (no gradient), from a fresh Xavier draw by g.
function Learner:episode(task, g, theta)
  local net = self.net
  theta = theta or self:theta()
  local W, B = net:init(g)
  for t = 1, task.steps do
    motif_net.step_into(net, W, W, theta, task.X:row(t), task.labels[t], B)
  end
  return W, B
end

-- learner:evaluate(task, g [, theta]) -> query accuracy, query loss of
-- one episode with theta fixed (held-out meta-test); NaN for a non-finite
-- theta.
function Learner:evaluate(task, g, theta)
  theta = theta or self:theta()
  if not meta.finite(theta:sum()) then return 0 / 0, 0 / 0 end
  local W = self:episode(task, g, theta)
  local loss, correct = self.net.kernel:query(W, task.Xq, task.labels_q)
  return correct / #task.labels_q, loss
end

-- The meta-loss on the tape of vars = {phi}: query CE after the inner loop
-- (+ lambda |theta|_1), the CE, the query accuracy.
function Learner:loss(vars, task, g, stats, scan_opts)
  local net = self.net
  local W0, B = net:init(g)
  local theta = ag.mul(vars[1], self.scale)
  local o = {segment = self.segment, stats = stats, mode = self.mode, need = self.need}
  for k, v in pairs(scan_opts or {}) do o[k] = v end
  local WT = motif_net.unroll(net, W0, B, task.X, task.labels, theta, task.steps, o)
  local ce
  if self.mode ~= "generic" then ce = motif_net.fused_query_loss(net, WT, task.Xq, task.labels_q)
  else ce = motif_net.query_loss(net, WT, task.Xq, task.labels_q) end
  local loss = ce
  if self.lambda > 0 then loss = ag.add(ce, ag.scale(ag.l1(theta), self.lambda)) end
  local Wplain = {}
  for l = 1, net.layers do Wplain[l] = ag.value(WT[l]) end
  local _, correct = net.kernel:query(Wplain, task.Xq, task.labels_q)
  return loss, ce, correct / #task.labels_q
end

-- learner:meta_gradient(task, g [, stats, scan_opts]) -> loss (query CE +
-- L1), query CE, query accuracy, gradient (float64, of phi; a buffer of
-- the learner). stats: a table for ag.scan's memory figures.
function Learner:meta_gradient(task, g, stats, scan_opts)
  local loss, ce, acc, grads = meta.Learner.meta_gradient(self, task, g, stats, scan_opts)
  return loss, ce, acc, grads[1]
end

-- ---------------------------------------------------------------- measures

-- motif_net.alignment(net, W, B, theta, X, labels [, n]) -> per-layer mean
-- angles (degrees) over the first n rows of X (default all):
--   e[l]:  between the rule's error e_l (FA) and backprop's delta_l, for
--          hidden layers l = 1..L-1;
--   dW[l]: between the rule's update and the SGD direction
--          -delta_l y_{l-1}^T, l = 1..L.
-- Angles that are undefined (a zero vector) are left out of the mean.
function motif_net.alignment(net, W, B, theta, X, labels, n)
  n = math.min(n or X:size(1), X:size(1))
  local bp = setmetatable({}, Net)
  for k, v in pairs(net) do bp[k] = v end
  bp.feedback, bp.pathway = "bp", nil
  local L = net.layers
  local sum_e, cnt_e, sum_w, cnt_w = {}, {}, {}, {}
  for l = 1, L do sum_e[l], cnt_e[l], sum_w[l], cnt_w[l] = 0, 0, 0, 0 end
  local Wn = {}
  for l = 1, L do Wn[l] = nm.zeros(W[l]:size(), net.dtype) end
  for i = 1, n do
    local x, label = X:row(i), labels[i]
    local y, e = net:signals(W, B, x, label)
    local _, d = bp:signals(W, nil, x, label)
    motif_net.step_into(net, Wn, W, theta, x, label, B)
    for l = 1, L do
      if l < L then
        local a = measures.angle(e[l], d[l])
        if a then sum_e[l], cnt_e[l] = sum_e[l] + a, cnt_e[l] + 1 end
      end
      local dW = Wn[l] - W[l]
      local sgd = nm.outer(d[l], y[l - 1]):scale(-1)
      local a = measures.angle(dW, sgd)
      if a then sum_w[l], cnt_w[l] = sum_w[l] + a, cnt_w[l] + 1 end
    end
  end
  local res = {e = {}, dW = {}}
  for l = 1, L do
    if l < L then res.e[l] = cnt_e[l] > 0 and sum_e[l] / cnt_e[l] or nil end
    res.dW[l] = cnt_w[l] > 0 and sum_w[l] / cnt_w[l] or nil
  end
  return res
end

return motif_net
