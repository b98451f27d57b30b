-- nm/models/rcn.lua: the recurrent chemical network on which a meta rule
-- of model "rcn" (rules/rcn.lua) learns: the motif network of
-- nm.models.motif_net whose every synapse holds L chemicals, the
-- meta-parameters (P, K, v, b) and their layout, the episode's state, the
-- inner loop (one checkpointed ag.scan over the rule's C step and its
-- adjoint, or over its Lua step), memory figures, and the RCN learner (a
-- meta.learner with one Adam per group P, K, v, b).
--
--   local net = rcn.new{rule = rule.definition("rcn"), chemicals = 2, share = "layer"}
--   local learner = rcn.learner{net = net, lr = 3e-4, lr_scale = {K = 0.1, b = 0.01}}
--   local info = learner:meta_step(task, g)

local nm = require "neuromic"
local ag = require "nm.autograd"
local rule = require "nm.rule"
local meta = require "nm.models.meta"
local motif_net = require "nm.models.motif_net"
local compile = require "nm.compile"

local rcn = {}

local format, ceil, sqrt = string.format, math.ceil, math.sqrt

local function fail(msg, level) error("rcn: " .. msg, (level or 1) + 1) end

local SHARE = {shared = true, layer = true}
local BIAS = {none = true, shared = true, layer = true, neuron = true}

-- What the network reads of a rule's parameters.
local FIELDS = {"chemicals", "share", "bias", "momentum", "motifs", "exponent", "tau_min",
                "tau_max"}

-- rcn.new{rule, sizes, feedback, beta, dtype, and the rule's parameters
-- chemicals, share, bias, momentum, motifs, exponent, tau_min, tau_max}
-- -> a network with its fused kernel (net.kernel, the rule's C step when
-- it has one and C knows the error pathway: net.fused; otherwise the
-- rule's Lua step runs) and the motif network of the same shape (net.mnet:
-- Xavier draws, error pathway, query loss). rule: a meta rule of model
-- "rcn" (definition or instance: its parameters are the defaults).
function rcn.new(o)
  o = o or {}
  local inst = type(o.rule) == "table" and type(o.rule.def) == "table" and o.rule or nil
  local def = motif_net.definition(o.rule, "rcn", "rcn.new")
  local net = {rule = def}
  for _, k in ipairs(FIELDS) do
    local v = o[k]
    if v == nil and inst then v = inst.p[k] end
    if v == nil and def.params[k] then v = def.params[k].default end
    net[k] = v
  end
  if type(def.timescales) ~= "function" then
    fail(format("new: rule '%s' has no timescales(L, p) (the chemicals' decay and gain)",
                def.name), 2)
  end
  local M = motif_net.options
  net.sizes = o.sizes or M.sizes.default
  net.feedback = o.feedback or M.feedback.default
  net.beta = o.beta or M.beta.default
  net.dtype = o.dtype or M.dtype.default
  if not SHARE[net.share] then
    fail("new: share must be 'shared' or 'layer', got " .. tostring(net.share), 2)
  end
  if not BIAS[net.bias] then
    fail("new: bias must be 'none', 'shared', 'layer' or 'neuron', got " .. tostring(net.bias), 2)
  end
  if type(net.motifs) ~= "table" or #net.motifs == 0 then
    fail("new: motifs must be a non-empty list of motif indices 0..9", 2)
  end
  for _, r in ipairs(net.motifs) do
    if math.type(r) ~= "integer" or r < 0 or r > 9 then
      fail("new: motifs must be a non-empty list of motif indices 0..9", 2)
    end
  end
  local ok, tau, y, z = pcall(def.timescales, net.chemicals, net)
  if not ok then fail("new: " .. tostring(tau):gsub("^.-timescales: ", ""), 2) end
  net.tau, net.decay, net.gain = tau, y, z
  local okm, mnet = pcall(motif_net.new, {rule = rule.definition(def.base), sizes = net.sizes,
                                          beta = net.beta, feedback = net.feedback,
                                          dtype = net.dtype})
  if not okm then fail("new: " .. tostring(mnet):gsub("^.-motif_net%.new: ", ""), 2) end
  net.mnet = mnet
  net.layers = mnet.layers
  net.classes = mnet.classes
  if def.kernel and not mnet.pathway then   -- the C step knows the pathways fa, bp
    local okk, k = pcall(def.kernel, net)
    if not okk then fail("new: " .. tostring(k):gsub("^.-%(", "("), 2) end
    net.kernel = k
  end
  net.fused = net.kernel ~= nil
  net.use = {}
  for _, r in ipairs(net.motifs) do net.use[r] = true end
  return net
end

-- ---------------------------------------------------------------- parameters

-- rcn.meta_params(net [, {P0 = 1e-3}]) -> {P, K, v, b}: the initial
-- meta-parameters, float64 (P [L x 10], K [L x L], v [L], with a leading
-- layer dimension when share = "layer"; b [L] ("shared"), [layers x L]
-- ("layer", "none": kept at 0), or a list of [L x n_l x n_{l-1}] tensors of
-- the net's dtype ("neuron")). v = 1/L, K = 0, b = 0, P[:,0] = P0.
function rcn.meta_params(net, o)
  o = o or {}
  local L, NL = net.chemicals, net.layers
  local lay = net.share == "layer"
  local p = {}
  p.P = lay and nm.zeros(NL, L, 10, "float64") or nm.zeros(L, 10, "float64")
  p.K = lay and nm.zeros(NL, L, L, "float64") or nm.zeros(L, L, "float64")
  p.v = (lay and nm.zeros(NL, L, "float64") or nm.zeros(L, "float64")):fill(1 / L)
  local P0 = o.P0 or 1e-3
  if lay then
    for l = 1, NL do for c = 1, L do p.P:set(l, c, 1, P0) end end
  else
    for c = 1, L do p.P:set(c, 1, P0) end
  end
  if net.bias == "neuron" then
    p.b = {}
    for l = 1, NL do p.b[l] = nm.zeros(L, net.sizes[l + 1], net.sizes[l], net.dtype) end
  elseif net.bias == "shared" then
    p.b = nm.zeros(L, "float64")
  else
    p.b = nm.zeros(NL, L, "float64")
  end
  return p
end

-- rcn.param_list(net, p) -> {P, K, v, b} or {P, K, v, b_1, ..., b_NL}
-- (neuron biases): the order used on tapes and by the optimiser.
function rcn.param_list(net, p)
  local list = {p.P, p.K, p.v}
  if net.bias == "neuron" then
    for l = 1, net.layers do list[3 + l] = p.b[l] end
  else
    list[4] = p.b
  end
  return list
end

-- The table the kernel reads, from a list of plain values.
local function param_table(net, list)
  local t = {P = list[1], K = list[2], v = list[3]}
  if net.bias == "neuron" then
    local b = {}
    for l = 1, net.layers do b[l] = list[3 + l] end
    t.b = b
  else
    t.b = list[4]
  end
  return t
end
rcn.param_table = param_table

-- Number of meta-parameters that are learned (P only in the columns of the
-- motifs in use; b not at all with bias = "none").
function rcn.count(net)
  local L, NL = net.chemicals, net.layers
  local sets = net.share == "layer" and NL or 1
  local n = sets * (L * #net.motifs + L * L + L)
  if net.bias == "shared" then n = n + L
  elseif net.bias == "layer" then n = n + L * NL
  elseif net.bias == "neuron" then
    for l = 1, NL do n = n + L * net.sizes[l + 1] * net.sizes[l] end
  end
  return n
end

-- ---------------------------------------------------------------- state

-- rcn.readout(net, H, v) -> W (list): W_l = sum_c v_c H_l[c], the plain
-- RCN's weights from its chemicals; a tape operation when v or H are
-- variables (the initial weights depend on v).
local function vat(net, v, l, c)
  if net.share == "layer" then return v:get(l, c) end
  return v:get(c)
end

local function readout_forward(ctx, net, v, ...)
  local H = {...}
  local W = {}
  for l = 1, net.layers do
    local w = nm.zeros(net.sizes[l + 1], net.sizes[l], net.dtype)
    for c = 1, net.chemicals do w:axpy(vat(net, v, l, c), H[l]:select(1, c)) end
    W[l] = w
  end
  ctx.net, ctx.v, ctx.H = net, v, H
  if net.layers == 1 then return W[1] end
  return W
end

local function readout_backward(ctx, gouts)
  local net, v, H = ctx.net, ctx.v, ctx.H
  if net.layers == 1 then gouts = {gouts} end
  local gv = nm.zeros(v:size(), "float64")
  local gH = {}
  for l = 1, net.layers do
    local g = gouts[l]
    gH[l] = nm.zeros(H[l]:size(), net.dtype)
    if g then
      for c = 1, net.chemicals do
        local d = g:dot(H[l]:select(1, c))
        if net.share == "layer" then gv:set(l, c, gv:get(l, c) + d)
        else gv:set(c, gv:get(c) + d) end
        gH[l]:select(1, c):axpy(vat(net, v, l, c), g)
      end
    end
  end
  return nil, gv, table.unpack(gH, 1, net.layers)
end

local readout_ops = {}

function rcn.readout(net, H, v)
  local NL = net.layers
  local op = readout_ops[NL]
  if not op then
    op = ag.def("rcn_readout", readout_forward, readout_backward, NL)
    readout_ops[NL] = op
  end
  local W = op(net, v, table.unpack(H, 1, NL))
  if NL == 1 then return {W} end
  return W
end

-- rcn.initial_state(net, Wx, v) -> H0, W0: the chemicals of an episode
-- from the Xavier draw Wx (a list): every chemical equals Wx and W0 =
-- readout(H0, v) (plain RCN; a variable when v is one), or, for the
-- momentum RCN, H0 = 0 (the chemicals are a velocity) and W0 = Wx.
function rcn.initial_state(net, Wx, v)
  local H = {}
  for l = 1, net.layers do
    local h = nm.zeros(net.chemicals, net.sizes[l + 1], net.sizes[l], net.dtype)
    if not net.momentum then
      for c = 1, net.chemicals do h:select(1, c):copy(Wx[l]) end
    end
    H[l] = h
  end
  if net.momentum then return H, Wx end
  return H, rcn.readout(net, H, v)
end

-- rcn.init(net, g, params) -> H0, W0, B: an episode's fresh state (the
-- Xavier draws of net.mnet:init, so a motif rule and an RCN given the same
-- generator start from the same weights and feedback).
function rcn.init(net, g, p)
  local Wx, B = net.mnet:init(g)
  local H, W = rcn.initial_state(net, Wx, ag.value(p.v))
  return H, W, B
end

-- ---------------------------------------------------------------- generic step

-- rcn.flatten(net, H, W) -> state list {W_1..W_NL, h_{1,1}..h_{1,L},
-- h_{2,1}, ...} (chemicals as separate matrices) for rcn.step; and back.
function rcn.flatten(net, H, W)
  local s = {}
  for l = 1, net.layers do s[l] = W[l] end
  for l = 1, net.layers do
    for c = 1, net.chemicals do
      s[net.layers + (l - 1) * net.chemicals + c] = H[l]:select(1, c):clone()
    end
  end
  return s
end

function rcn.unflatten(net, s)
  local H, W = {}, {}
  for l = 1, net.layers do
    W[l] = ag.value(s[l])
    local h = nm.zeros(net.chemicals, net.sizes[l + 1], net.sizes[l], net.dtype)
    for c = 1, net.chemicals do
      h:select(1, c):copy(ag.value(s[net.layers + (l - 1) * net.chemicals + c]))
    end
    H[l] = h
  end
  return H, W
end

-- rcn.step(net, state, params, x, label [, B]) -> state': the rule's Lua
-- step (the reference) on rcn.flatten's state; params: rcn.param_list's
-- list. Entries may be variables.
function rcn.step(net, state, params, x, label, B)
  return net.rule.step(net, state, params, x, label, B)
end

-- ---------------------------------------------------------------- compiled step

-- rcn.compiled_step(net, B [, opts]) -> the network's rule compiled by
-- nm.compile: a function over (S, P, K, v, b, x, label, B) with S
-- rcn.flatten's state and b the bias tensor (a list of them for neuron
-- biases; B only with FA feedback), traced from net.rule.step for the
-- net's sizes and dtype.
-- opts.mode as compile.fn's. rcn.unroll runs it with mode "compiled"
-- (the hand-written C step, net.kernel, remains the default until it is
-- removed); this is what `neuromic --emit` prints.
function rcn.compiled_step(net, B, opts)
  opts = opts or {}
  local def, NL, L = net.rule, net.layers, net.chemicals
  local S = {}
  for l = 1, NL do
    S[l] = {net.sizes[l + 1], net.sizes[l]}
    for c = 1, L do S[NL + (l - 1) * L + c] = {net.sizes[l + 1], net.sizes[l]} end
  end
  local p = rcn.meta_params(net)
  local b
  if net.bias == "neuron" then
    local shapes = {}
    for l = 1, NL do shapes[l] = p.b[l]:size() end
    b = {name = "b", list = shapes}
  else
    b = {name = "b", shape = p.b:size()}
  end
  local spec = {{name = "S", list = S}, {name = "P", shape = p.P:size()},
                {name = "K", shape = p.K:size()}, {name = "v", shape = p.v:size()}, b,
                {name = "x", shape = {net.sizes[1]}}, {name = "label", scalar = true}}
  if B then                          -- the feedback matrices (FA; none for BP)
    local shapes = {}
    for l = 1, #B do shapes[l] = B[l]:size() end
    spec[8] = {name = "B", list = shapes}
  end
  return compile.fn(function(S_, P, K, v, b_, x, label, B_)
    local theta = {P, K, v}
    if net.bias == "neuron" then
      for l = 1, NL do theta[3 + l] = b_[l] end
    else
      theta[4] = b_
    end
    return def.step(net, S_, theta, x, label, B_)
  end, spec, {dtype = net.dtype, name = def.name, source = debug.getinfo(def.step, "S").short_src,
              equation = def.equation, mode = opts.mode})
end

-- rcn.emit(def) prints the C of a meta rule of this model (its step and
-- adjoint for the default parameters): `neuromic --emit rules/rcn.lua`.
function rcn.emit(def)
  local net = rcn.new{rule = def, dtype = "float64"}
  local _, B = net.mnet:init(nm.generator(1))
  local f = rcn.compiled_step(net, B, {mode = "interpret"})
  local wrt = {}
  for i = 1, #f.tensor_inputs do wrt[i] = true end
  io.stdout:write(f:source(), "\n", f:source(wrt))
end

-- ---------------------------------------------------------------- fused step

local views

-- A fresh state {H_1..H_NL, W_1..W_NL} with its views .H, .W.
local function new_state(net)
  local s = {}
  for l = 1, net.layers do
    s[l] = nm.zeros(net.chemicals, net.sizes[l + 1], net.sizes[l], net.dtype)
    s[net.layers + l] = nm.zeros(net.sizes[l + 1], net.sizes[l], net.dtype)
  end
  return views(net, s)
end

local function zeros_like_params(list)
  local g = {}
  for i, p in ipairs(list) do g[i] = nm.zeros(p:size(), p:dtype()) end
  return g
end

local fused_ops = {}

-- rcn.fused_step(net, H, W, params, x, label [, B]) -> H', W' (new
-- lists): one step through the C kernel; params: rcn.param_list's list
-- (values or variables). With variables it is one tape node whose
-- backward is the hand-derived adjoint.
function rcn.fused_step(net, H, W, params, x, label, B)
  local NL, np = net.layers, #params
  local tracked = false
  for _, p in ipairs(params) do if ag.is_var(p) then tracked = true end end
  for l = 1, NL do if ag.is_var(H[l]) or ag.is_var(W[l]) then tracked = true end end
  if not tracked then
    local s = new_state(net)
    net.kernel:forward(s.H, s.W, H, W, B, x, label, param_table(net, params))
    return s.H, s.W
  end
  local key = NL .. ":" .. np
  local op = fused_ops[key]
  if not op then
    op = ag.def("rcn_step", function(ctx, n_, B_, x_, label_, ...)
      local args = {...}
      local pv, Hin, Win = {}, {}, {}
      for i = 1, np do pv[i] = args[i] end
      for l = 1, NL do Hin[l], Win[l] = args[np + l], args[np + NL + l] end
      local s = new_state(n_)
      local trace = n_.kernel:new_trace()
      n_.kernel:forward(s.H, s.W, Hin, Win, B_, x_, label_, param_table(n_, pv), trace)
      ctx.net, ctx.B, ctx.pv, ctx.H, ctx.W, ctx.trace = n_, B_, pv, Hin, Win, trace
      ctx.Hout = s.H
      local out = {}
      for l = 1, NL do out[l], out[NL + l] = s.H[l], s.W[l] end
      return out
    end, function(ctx, gouts)
      local n_ = ctx.net
      local GH, GW = {}, {}
      for l = 1, NL do
        GH[l] = gouts[l] or nm.zeros(ctx.H[l]:size(), n_.dtype)
        GW[l] = gouts[NL + l] or nm.zeros(ctx.W[l]:size(), n_.dtype)
      end
      local gp = zeros_like_params(ctx.pv)
      n_.kernel:backward(GH, GW, ctx.H, ctx.W, ctx.B, ctx.trace, param_table(n_, ctx.pv),
                         param_table(n_, gp), ctx.Hout)
      local res = {nil, nil, nil, nil}
      for i = 1, np do res[4 + i] = gp[i] end
      for l = 1, NL do res[4 + np + l], res[4 + np + NL + l] = GH[l], GW[l] end
      return table.unpack(res, 1, 4 + np + 2 * NL)
    end, 2 * NL)
    fused_ops[key] = op
  end
  local args = {}
  for i = 1, np do args[i] = params[i] end
  for l = 1, NL do args[np + l], args[np + NL + l] = H[l], W[l] end
  local res = op(net, B, x, label, table.unpack(args, 1, np + 2 * NL))
  local Ho, Wo = {}, {}
  for l = 1, NL do Ho[l], Wo[l] = res[l], res[NL + l] end
  return Ho, Wo
end

-- The rule's C step as an ag.scan kernel: state {H_1..H_NL, W_1..W_NL}
-- (the buffers also carry the views .H, .W), parameters rcn.param_list's
-- list, samples X:row(t), labels[t].
function views(net, s)
  s.H, s.W = {}, {}
  for l = 1, net.layers do s.H[l], s.W[l] = s[l], s[net.layers + l] end
  return s
end

local function scan_kernel(net, B, X, labels)
  local k = net.kernel
  local sk = motif_net.scan_kernel(net, k, rcn.state_bytes(net))
  function sk.state() return new_state(net) end
  function sk.prepare(list) return param_table(net, list) end
  function sk.view(adj) return views(net, adj) end
  function sk.forward(dst, src, p, t, trace)
    k:forward(dst.H, dst.W, src.H, src.W, B, X:row(t), labels[t], p, trace)
  end
  function sk.backward(adj, src, dst, p, gp, _, trace)
    k:backward(adj.H, adj.W, src.H, src.W, B, trace, p, gp, dst.H)
  end
  return sk
end

-- The rule's generated step and adjoint (rcn.compiled_step, once per
-- network and B shape) as an ag.scan kernel over rcn.flatten's state, the
-- chemicals views of [L x n x m] buffers (state.H) so the result reads as
-- the C kernel's.
local function compiled_scan_kernel(net, B, X, labels)
  local key = B and "fa" or "none"
  net.compiled = net.compiled or {}
  local f = net.compiled[key]
  if not f then
    f = rcn.compiled_step(net, B)
    net.compiled[key] = f
  end
  net.compiled_workspaces = net.compiled_workspaces or {}
  local NL, L = net.layers, net.chemicals
  local neuron = net.bias == "neuron"
  return f:scan_kernel{
    cache = net.compiled_workspaces, state_bytes = rcn.state_bytes(net),
    params = neuron and 3 + NL or 4,
    state = function()
      local s = new_state(net)
      local list = {}
      for l = 1, NL do
        list[l] = s.W[l]
        for c = 1, L do list[NL + (l - 1) * L + c] = s.H[l]:select(1, c) end
      end
      list.H, list.W = s.H, s.W
      return list
    end,
    args = function(src, p, t)
      local b = p[4]
      if neuron then b = {table.unpack(p, 4, 3 + NL)} end
      return src, p[1], p[2], p[3], b, X:row(t), labels[t], B
    end,
    steps = {[6] = X, [7] = labels},
  }
end

-- rcn.unroll(net, H0, W0, B, X, labels, params, T [, opts]) -> list
-- {H_1..H_NL, W_1..W_NL} after T online steps (sample t = X:row(t),
-- labels[t]) by ag.scan: one tape operation when params, H0 or W0 hold
-- variables, checkpointed every S = opts.segment (ceil(sqrt(T))) steps.
-- With the rule's C step the states live in buffers reused across calls
-- (rcn.memory); without one the rule's Lua step runs on rcn.flatten's
-- state (the result's chemicals are then plain values: gradients flow
-- through the weights). opts.stats receives ag.scan's memory figures.
-- opts.mode = "compiled": the rule's step and adjoint generated by
-- nm.compile (rcn.compiled_step) instead of its hand-written C kernel:
-- the same results (float64: 1e-12; spec/rcn_spec.lua) in about the same
-- time (experiments/bench/compiler.lua); the chemicals of the result are
-- then plain values.
function rcn.unroll(net, H0, W0, B, X, labels, params, T, opts)
  opts = opts or {}
  if math.type(T) ~= "integer" or T < 0 then fail("unroll: T must be a non-negative integer", 2) end
  if T > X:size(1) then fail(format("unroll: T = %d steps but X has %d rows", T, X:size(1)), 2) end
  local NL = net.layers
  local o = {segment = opts.segment, stats = opts.stats}
  if opts.mode == "compiled" then
    local init = {}
    for l = 1, NL do
      init[l] = W0[l]
      local H = ag.value(H0[l])
      for c = 1, net.chemicals do init[NL + (l - 1) * net.chemicals + c] = H:select(1, c) end
    end
    local out = ag.scan(compiled_scan_kernel(net, B, X, labels), init, params, T, o)
    local H = rcn.unflatten(net, out)
    local res = {}
    for l = 1, NL do res[l], res[NL + l] = H[l], out[l] end
    return res
  end
  if opts.mode ~= nil and opts.mode ~= "unroll" then
    fail("unroll: mode must be 'unroll' or 'compiled', got " .. tostring(opts.mode), 2)
  end
  if net.fused then
    local init = {}
    for l = 1, NL do init[l], init[NL + l] = H0[l], W0[l] end
    return ag.scan(scan_kernel(net, B, X, labels), init, params, T, o)
  end
  local Hv = {}
  for l = 1, NL do Hv[l] = ag.value(H0[l]) end
  local s = rcn.flatten(net, Hv, W0)
  local out = ag.scan(function(st, p, t) return rcn.step(net, st, p, X:row(t), labels[t], B) end,
                      s, params, T, o)
  local H = rcn.unflatten(net, out)
  local res = {}
  for l = 1, NL do res[l], res[NL + l] = H[l], out[l] end
  return res
end

-- rcn.state_bytes(net) -> bytes of one state (chemicals and weights).
function rcn.state_bytes(net)
  local esize = net.dtype == "float64" and 8 or 4
  local n = 0
  for l = 1, net.layers do n = n + net.sizes[l + 1] * net.sizes[l] end
  return n * (net.chemicals + 1) * esize, n
end

-- rcn.memory(net, T [, S]) -> bytes of the unroll's buffers: (ceil(T/S) +
-- S) states plus S traces, S = ceil(sqrt(T)) by default. The meta-step
-- adds the episode's initial state and, for the gradient, one state of
-- adjoints: (ceil(T/S) + S + 2) states in all, independent of the
-- neuron-bias choice but for the biases themselves (rcn.param_bytes).
function rcn.memory(net, T, S)
  S = S or math.max(1, ceil(sqrt(T)))
  local esize = net.dtype == "float64" and 8 or 4
  local state = rcn.state_bytes(net)
  local nseg = math.max(1, ceil(T / S))
  local trace = net.kernel:info().trace_size * esize
  return (nseg + math.min(S, math.max(T, 1))) * state + math.min(S, math.max(T, 1)) * trace
end

-- rcn.param_bytes(net) -> bytes of the meta-parameters with their
-- gradient and Adam's two moments (4 copies): for neuron biases 4 L
-- sum(n_l n_{l-1}) elements of the net's dtype, whatever T is.
function rcn.param_bytes(net)
  local n = 0
  for _, p in ipairs(rcn.param_list(net, rcn.meta_params(net))) do
    n = n + p:numel() * (p:dtype() == "float64" and 8 or 4)
  end
  return 4 * n
end


-- ---------------------------------------------------------------- learner

local Learner = setmetatable({}, {__index = meta.Learner})
Learner.__index = Learner

-- rcn.learner(o) -> a meta.learner of the RCN's meta-parameters, one Adam
-- per group P, K, v, b. Options:
--   net      rcn.new{...} (required)
--   P0       initial P[:,0] (1e-3)
--   lr       Adam learning rate (1e-3); beta1, beta2, eps as in nm.optim
--   lr_scale per-group factors of lr, {P =, K =, v =, b =} (default 1
--            each): Adam moves every parameter by about its rate, so a
--            group whose every element acts on all synapses at once (the
--            bias, K) may need a smaller one than P
--   lambda   L1 penalty on P (0)
--   learn    which meta-parameters move: a set of "P", "K", "v", "b"
--            (default all four; "b" never with bias = "none")
--   clip, guard, rollback_decay   as meta.learner
--   segment  checkpoint segment length (default ceil(sqrt(steps)))
function rcn.learner(o)
  if type(o) ~= "table" or type(o.net) ~= "table" or not o.net.mnet or not o.net.chemicals then
    fail("learner: option 'net' (rcn.new{...}) is required", 2)
  end
  local net = o.net
  local p = rcn.meta_params(net, {P0 = o.P0})
  local list = rcn.param_list(net, p)
  local learn = o.learn or {P = true, K = true, v = true, b = true}
  for key in pairs(learn) do
    if key ~= "P" and key ~= "K" and key ~= "v" and key ~= "b" then
      fail("learner: learn is a set of 'P', 'K', 'v', 'b'", 2)
    end
  end
  for key, f in pairs(o.lr_scale or {}) do
    if (key ~= "P" and key ~= "K" and key ~= "v" and key ~= "b") or type(f) ~= "number"
       or not (f >= 0) then
      fail("learner: lr_scale is a table {P =, K =, v =, b =} of non-negative numbers", 2)
    end
  end
  local active = {learn.P and true or false, learn.K and true or false, learn.v and true or false}
  local groups = {"P", "K", "v"}
  for i = 4, #list do
    active[i] = (learn.b and net.bias ~= "none") and true or false
    groups[i] = "b"
  end
  -- P columns of motifs not in use stay at 0 and get no gradient
  local Pmask = nm.zeros(p.P:size(), "float64")
  for r = 0, 9 do
    if net.use[r] then
      if net.share == "layer" then Pmask:narrow(3, r + 1, 1):fill(1)
      else Pmask:narrow(2, r + 1, 1):fill(1) end
    end
  end
  p.P:mul(Pmask)
  local self = meta.learner({params = list, groups = groups, active = active, masks = {Pmask},
                             lr = o.lr, lr_scale = o.lr_scale, beta1 = o.beta1, beta2 = o.beta2,
                             eps = o.eps, clip = o.clip, guard = o.guard,
                             rollback_decay = o.rollback_decay}, Learner)
  self.net, self.p, self.list = net, p, list
  self.lambda, self.segment = o.lambda or 0, o.segment
  return self
end

-- learner:episode(task, g) -> W, B, H: the inner loop alone (no
-- gradient), in place, from a fresh draw by g.
function Learner:episode(task, g)
  local net = self.net
  local H, W, B = rcn.init(net, g, self.p)
  if not net.fused then
    local res = rcn.unroll(net, H, W, B, task.X, task.labels, self.list, task.steps)
    for l = 1, net.layers do H[l], W[l] = res[l], res[net.layers + l] end
    return W, B, H
  end
  local pt = param_table(net, self.list)
  for t = 1, task.steps do
    net.kernel:forward(H, W, H, W, B, task.X:row(t), task.labels[t], pt)
  end
  return W, B, H
end

-- learner:evaluate(task, g) -> query accuracy, query loss of one episode
-- with the meta-parameters fixed.
function Learner:evaluate(task, g)
  local W = self:episode(task, g)
  local loss, correct = self.net.mnet.kernel:query(W, task.Xq, task.labels_q)
  return correct / #task.labels_q, loss
end

-- The meta-loss on the tape of vars (leaves of rcn.param_list's list):
-- query CE after the inner loop (+ lambda |P|_1), the CE, the accuracy.
function Learner:loss(vars, task, g, stats)
  local net, NL = self.net, self.net.layers
  local Wx, B = net.mnet:init(g)
  local H0, W0 = rcn.initial_state(net, Wx, vars[3])
  local res = rcn.unroll(net, H0, W0, B, task.X, task.labels, vars, task.steps,
                         {segment = self.segment, stats = stats})
  local WT = {}
  for l = 1, NL do WT[l] = res[NL + l] end
  local ce = motif_net.fused_query_loss(net.mnet, WT, task.Xq, task.labels_q)
  local loss = ce
  if self.lambda > 0 then loss = ag.add(ce, ag.scale(ag.l1(vars[1]), self.lambda)) end
  local Wplain = {}
  for l = 1, NL do Wplain[l] = ag.value(WT[l]) end
  local _, correct = net.mnet.kernel:query(Wplain, task.Xq, task.labels_q)
  return loss, ce, correct / #task.labels_q
end

-- The meta-parameters as plain tables (P, K, v; b unless per synapse, where
-- its mean absolute value per layer is given instead).
function Learner:snapshot()
  local s = {P = self.p.P:totable(), K = self.p.K:totable(), v = self.p.v:totable()}
  if self.net.bias == "neuron" then
    s.b_mean_abs = {}
    for l = 1, self.net.layers do
      s.b_mean_abs[l] = self.p.b[l]:clone():abs():mean()
    end
  else
    s.b = self.p.b:totable()
  end
  return s
end

return rcn
