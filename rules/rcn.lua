-- rules/rcn.lua: recurrent chemical networks (RCN), synapses made of L
-- chemicals with fixed timescales whose dynamics are meta-learned. After
-- K. McMillan, "Efficient learning in biological neural networks" (Cambridge
-- IB technical milestone report, supervisor Y. Ahmadian), which
-- extends the motif rule of Shervani-Tabar & Rosenbaum, Nat. Commun. 14,
-- 1805 (2023) (rules/motifs.lua).
--
-- Every synapse of layer l holds chemicals h_c, c = 0..L-1 (one L x n_l x
-- n_{l-1} tensor per layer), updated once per online step:
--
--   h_c <- y_c h_c + z_c tanh( sum_i K[c,i] h_i + sum_r P[c,r] F^r + b_c )
--   W    = sum_c v_c h_c                  (plain RCN)
--   W   <- W + sum_c v_c h_c              (momentum RCN: the chemicals act
--                                          as a velocity)
--
-- with the motifs F^r of rules/motifs.lua computed from the weight W the
-- network used in that step (FA or BP errors, the synthetic input error).
-- Fixed timescales: tau_c = (tau_max / tau_min)^(c / (L - 1)) (or c / L,
-- the report's eq. 8), z_c = 1 / (tau_min tau_c), y_c = 1 - z_c, y_0 = 1;
-- tau_min = 1, tau_max = 50 (the number of training images per class).
-- Meta-parameters: P (L x 10, only the motifs in use), K (L x L), v (L),
-- b; initial v = 1/L, K = 0, b = 0, P[:,0] = 1e-3, the others 0; every
-- chemical starts as the episode's Xavier draw (so W(0) = (sum v) Xavier).
-- Variants: P, K, v shared by all layers or one set per layer
-- (share = "layer"); the bias one number per chemical shared by all layers
-- ("shared"), per layer ("layer", the report's default) or per synapse
-- ("neuron": L x n_l x n_{l-1} per layer); momentum = true.
-- With L = 1, K = 0, v = 1 and small arguments tanh is the identity to
-- first order and the rule is W += sum_r P[0,r] F^r, the motif rule
-- (spec/rcn_spec.lua checks it).
--
-- Two implementations of one step, tested equal:
--   rcn.step(net, state, params, x, label, B)    nm.autograd operations on
--                                                the literal motif forms
--   rcn.fused_step / rcn.unroll                  the C kernel (nm_rcn.c) with
--                                                its hand-derived adjoint
-- and rcn.learner: meta-training with exact meta-gradients through the
-- whole inner loop (checkpointed, buffers reused), Adam, an L1 penalty on
-- P, and the guards of nm.meta.

local nm = require "neuromic"
local ag = require "nm.autograd"
local optim = require "nm.optim"
local motifs = require "rules.motifs"

local rcn = {
  kind = "meta",
  model = "rcn",
  -- the meta-parameters (shapes set by chemicals, share, bias: rcn.meta_params)
  coefficients = {
    P = {doc = "motif weights per chemical"}, K = {doc = "chemical coupling"},
    b = {doc = "chemical biases"}, v = {doc = "readout of the chemicals into W"},
  },
  name = "rcn",
  paper = "McMillan (Cambridge IB report), after Shervani-Tabar & Rosenbaum, " ..
          "Nat. Commun. 14, 1805 (2023)",
  equation = "h_c <- y_c h_c + z_c tanh(sum_i K[c,i] h_i + sum_r P[c,r] F^r + b_c); " ..
             "W = sum_c v_c h_c (momentum: W += sum_c v_c h_c)",
  params = {
    sizes = {default = {784, 170, 130, 100, 70, 10}, doc = "layer widths n_0..n_L"},
    chemicals = {default = 1, doc = "chemicals per synapse L (1..16)"},
    share = {default = "shared", doc = "'shared' (one P, K, v for all layers) or 'layer'"},
    bias = {default = "layer", doc = "'none', 'shared' (L), 'layer' (L per layer) or " ..
                                     "'neuron' (L per synapse)"},
    momentum = {default = false, doc = "W += v.h instead of W = v.h"},
    motifs = {default = {0, 2, 9}, doc = "motifs taking part (0-based; F_bio by default)"},
    exponent = {default = "L-1", doc = "timescale exponent c/(L-1) ('L-1') or c/L ('L')"},
    tau_min = {default = 1, doc = "fastest timescale"},
    tau_max = {default = 50, doc = "slowest timescale"},
    feedback = {default = "fa", doc = "'fa', 'bp' or 'bp_detached' (rules/motifs.lua)"},
    beta = {default = 10, doc = "softplus sharpness"},
    dtype = {default = "float32", doc = "network element type"},
  },
}

local format, ceil, sqrt, huge = string.format, math.ceil, math.sqrt, math.huge

local function fail(msg, level) error("rcn: " .. msg, (level or 1) + 1) end

local function finite(x) return x == x and x ~= huge and x ~= -huge end

-- rcn.timescales(L [, {exponent = "L-1" | "L", tau_min = 1, tau_max = 50}])
-- -> tau, decay y, gain z: lists indexed 1..L for chemicals c = 0..L-1.
-- tau_c = (tau_max / tau_min)^(c / (L - 1)) (exponent "L-1"; c / L with
-- "L"; with L = 1 and "L-1", tau_0 = 1), z_c = 1 / (tau_min tau_c),
-- y_c = 1 - z_c, and y_0 = 1 (the first chemical does not decay).
function rcn.timescales(L, o)
  o = o or {}
  if math.type(L) ~= "integer" or L < 1 or L > 16 then
    fail("timescales: chemicals must be an integer in 1..16, got " .. tostring(L), 2)
  end
  local exponent = o.exponent or "L-1"
  if exponent ~= "L-1" and exponent ~= "L" then
    fail("timescales: exponent must be 'L-1' or 'L', got " .. tostring(exponent), 2)
  end
  local tmin, tmax = o.tau_min or 1, o.tau_max or 50
  if type(tmin) ~= "number" or type(tmax) ~= "number" or not (tmin > 0) or not (tmax >= tmin)
     or not finite(tmax) then
    fail(format("timescales: need 0 < tau_min <= tau_max < inf, got %s, %s", tostring(tmin),
                tostring(tmax)), 2)
  end
  local tau, y, z = {}, {}, {}
  for c = 0, L - 1 do
    local e
    if exponent == "L" then e = c / L else e = L > 1 and c / (L - 1) or 0 end
    tau[c + 1] = (tmax / tmin) ^ e
    z[c + 1] = 1 / (tmin * tau[c + 1])
    y[c + 1] = c == 0 and 1 or 1 - z[c + 1]
  end
  return tau, y, z
end

local SHARE = {shared = true, layer = true}
local BIAS = {none = true, shared = true, layer = true, neuron = true}

-- rcn.net{sizes, chemicals, share, bias, momentum, motifs, exponent,
-- tau_min, tau_max, feedback, beta, dtype} -> a network description with
-- its fused kernel (net.kernel, a neuromic.RCN) and the motif network of
-- the same shape (net.mnet: Xavier draws, the query loss).
function rcn.net(o)
  o = o or {}
  local P = rcn.params
  local net = {
    sizes = o.sizes or P.sizes.default,
    chemicals = o.chemicals or P.chemicals.default,
    share = o.share or P.share.default,
    bias = o.bias or P.bias.default,
    momentum = o.momentum or false,
    motifs = o.motifs or P.motifs.default,
    exponent = o.exponent or P.exponent.default,
    tau_min = o.tau_min or P.tau_min.default,
    tau_max = o.tau_max or P.tau_max.default,
    feedback = o.feedback or P.feedback.default,
    beta = o.beta or P.beta.default,
    dtype = o.dtype or P.dtype.default,
  }
  if not SHARE[net.share] then
    fail("net: share must be 'shared' or 'layer', got " .. tostring(net.share), 2)
  end
  if not BIAS[net.bias] then
    fail("net: bias must be 'none', 'shared', 'layer' or 'neuron', got " .. tostring(net.bias), 2)
  end
  if type(net.motifs) ~= "table" or #net.motifs == 0 then
    fail("net: motifs must be a non-empty list of motif indices 0..9", 2)
  end
  for _, r in ipairs(net.motifs) do
    if math.type(r) ~= "integer" or r < 0 or r > 9 then
      fail("net: motifs must be a non-empty list of motif indices 0..9", 2)
    end
  end
  local ok, tau, y, z = pcall(rcn.timescales, net.chemicals,
                              {exponent = net.exponent, tau_min = net.tau_min, tau_max = net.tau_max})
  if not ok then fail("net: " .. tostring(tau):gsub("^.-timescales: ", ""), 2) end
  net.tau, net.decay, net.gain = tau, y, z
  local okm, mnet = pcall(motifs.net, {sizes = net.sizes, beta = net.beta,
                                       feedback = net.feedback, dtype = net.dtype})
  if not okm then fail("net: " .. tostring(mnet):gsub("^.-motifs%.net: ", ""), 2) end
  net.mnet = mnet
  net.layers = mnet.layers
  net.classes = mnet.classes
  local okk, k = pcall(nm.rcn_net, {sizes = net.sizes, beta = net.beta, feedback = net.feedback,
                                    dtype = net.dtype, chemicals = net.chemicals,
                                    decay = y, gain = z, motifs = net.motifs,
                                    momentum = net.momentum, neuron_bias = net.bias == "neuron"})
  if not okk then fail("net: " .. tostring(k):gsub("^.-%(", "("), 2) end
  net.kernel = k
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

-- One element of a tensor of any rank as a tape operation. (ag.index's
-- backward passes only the first of several indices to set, so it serves
-- vectors only; this one writes the element of a matrix or 3-D tensor.)
local index = ag.def("rcn_index", function(ctx, v, ...)
  ctx.v, ctx.i = v, table.pack(...)
  return v:get(...)
end, function(ctx, g)
  local r = ag.new_like(ctx.v)
  local args = {table.unpack(ctx.i, 1, ctx.i.n)}
  args[ctx.i.n + 1] = g
  r:set(table.unpack(args, 1, ctx.i.n + 1))
  return r
end)

-- Meta-parameter accessors (1-based chemical c, 0-based motif r, layer l).
local function Pget(net, P, l, c, r)
  if net.share == "layer" then return index(P, l, c, r + 1) end
  return index(P, c, r + 1)
end
local function Kget(net, K, l, c, k)
  if net.share == "layer" then return index(K, l, c, k) end
  return index(K, c, k)
end
local function vget(net, v, l, c)
  if net.share == "layer" then return index(v, l, c) end
  return index(v, c)
end
local function bget(net, b, l, c)
  if net.bias == "shared" then return index(b, c) end
  return index(b, l, c)
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
-- Xavier draws of motifs.init, so a motif rule and an RCN given the same
-- generator start from the same weights and feedback).
function rcn.init(net, g, p)
  local Wx, B = motifs.init(net.mnet, g)
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

-- rcn.step(net, state, params, x, label [, B]) -> state': one online step
-- with the generic operations (the reference). state: rcn.flatten's list;
-- params: {P, K, v, b} (with neuron biases: {P, K, v, b_{1,1}..b_{1,L},
-- b_{2,1}, ...}, one [n_l x n_{l-1}] matrix per layer and chemical).
-- Entries may be variables.
function rcn.step(net, state, params, x, label, B)
  local NL, L = net.layers, net.chemicals
  local W = {}
  for l = 1, NL do W[l] = state[l] end
  local y, e = motifs.signals(net.mnet, W, B, x, label)
  local P, K, v, b = params[1], params[2], params[3], params[4]
  local out = {}
  for l = 1, NL do
    local F = motifs.terms(W[l], y[l - 1], y[l], e[l - 1], e[l])
    local h = {}
    for c = 1, L do h[c] = state[NL + (l - 1) * L + c] end
    local Wn = net.momentum and W[l] or nil
    for c = 1, L do
      local pre
      for k = 1, L do
        local term = ag.scale(h[k], Kget(net, K, l, c, k))
        pre = pre and ag.add(pre, term) or term
      end
      for _, r in ipairs(net.motifs) do
        pre = ag.add(pre, ag.scale(F[r], Pget(net, P, l, c, r)))
      end
      if net.bias == "neuron" then
        pre = ag.add(pre, params[3 + (l - 1) * L + c])
      elseif net.bias ~= "none" then
        pre = ag.add(pre, bget(net, b, l, c))
      end
      local hn = ag.add(ag.scale(h[c], net.decay[c]), ag.scale(ag.tanh(pre), net.gain[c]))
      out[NL + (l - 1) * L + c] = hn
      local term = ag.scale(hn, vget(net, v, l, c))
      Wn = Wn and ag.add(Wn, term) or term
    end
    out[l] = Wn
  end
  return out
end

-- ---------------------------------------------------------------- fused step

local function new_state(net)
  local H, W = {}, {}
  for l = 1, net.layers do
    H[l] = nm.zeros(net.chemicals, net.sizes[l + 1], net.sizes[l], net.dtype)
    W[l] = nm.zeros(net.sizes[l + 1], net.sizes[l], net.dtype)
  end
  return {H = H, W = W}
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

-- ---------------------------------------------------------------- unroll

-- Buffers of rcn.unroll for T steps in segments of S, allocated once per
-- (net, T, S) and reused: ceil(T/S) stored states (segment starts), S
-- states and S traces for the segment being recomputed. A state is the
-- chemicals and the weights of every layer.
local function workspace(net, T, S)
  net.workspaces = net.workspaces or {}
  local key = T .. ":" .. S
  local ws = net.workspaces[key]
  if ws and ws.holder[1] == nil then return ws end
  local nseg = math.max(1, ceil(T / S))
  ws = {snaps = {}, seg = {}, traces = {}, nseg = nseg, S = S, T = T,
        holder = setmetatable({}, {__mode = "v"})}
  for k = 1, nseg do ws.snaps[k] = new_state(net) end
  for j = 1, math.min(S, math.max(T, 1)) do
    ws.seg[j] = new_state(net)
    ws.traces[j] = net.kernel:new_trace()
  end
  if not net.workspaces[key] or net.workspaces[key].holder[1] == nil then
    net.workspaces[key] = ws
  end
  return ws
end

local function copy_state(dst, H, W)
  for l = 1, #H do dst.H[l]:copy(H[l]); dst.W[l]:copy(W[l]) end
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

-- rcn.unroll(net, H0, W0, B, X, labels, params, T [, opts]) -> list
-- {H_1..H_NL, W_1..W_NL} after T online steps (sample t = X:row(t),
-- labels[t]); one tape operation when params, H0 or W0 hold variables.
-- The forward keeps the state every S = opts.segment (ceil(sqrt(T)))
-- steps; backward re-runs each segment once, with its traces, and applies
-- the C adjoint step by step, in buffers reused across calls (see
-- rcn.memory). opts.stats receives snapshots, segment, state_bytes,
-- workspace_bytes.
function rcn.unroll(net, H0, W0, B, X, labels, params, T, opts)
  opts = opts or {}
  if math.type(T) ~= "integer" or T < 0 then fail("unroll: T must be a non-negative integer", 2) end
  if T > X:size(1) then fail(format("unroll: T = %d steps but X has %d rows", T, X:size(1)), 2) end
  local NL, np = net.layers, #params
  local S = opts.segment or math.max(1, ceil(sqrt(T)))
  local ws = workspace(net, T, S)
  local k = net.kernel
  if opts.stats then
    opts.stats.snapshots, opts.stats.segment = ws.nseg, S
    opts.stats.state_bytes = rcn.state_bytes(net)
    opts.stats.workspace_bytes = rcn.memory(net, T, S)
  end
  local function run_forward(pv, H0v, W0v)
    local out = new_state(net)
    if T == 0 then copy_state(out, H0v, W0v) return out end
    local pt = param_table(net, pv)
    copy_state(ws.snaps[1], H0v, W0v)
    for s = 1, ws.nseg do
      local t0 = (s - 1) * S
      local len = math.min(S, T - t0)
      for j = 1, len do
        local src = j == 1 and ws.snaps[s] or ws.seg[j - 1]
        local dst = ws.seg[j]
        if j == len then dst = s < ws.nseg and ws.snaps[s + 1] or out end
        k:forward(dst.H, dst.W, src.H, src.W, B, X:row(t0 + j), labels[t0 + j], pt)
      end
    end
    return out
  end
  local tracked = false
  for i = 1, np do if ag.is_var(params[i]) then tracked = true end end
  for l = 1, NL do if ag.is_var(H0[l]) or ag.is_var(W0[l]) then tracked = true end end
  if not tracked then
    local out = run_forward(params, H0, W0)
    local res = {}
    for l = 1, NL do res[l], res[NL + l] = out.H[l], out.W[l] end
    return res
  end
  local op = ag.def("rcn_unroll", function(ctx, ...)
    local args = {...}
    local pv, Hv, Wv = {}, {}, {}
    for i = 1, np do pv[i] = args[i] end
    for l = 1, NL do Hv[l], Wv[l] = args[np + l], args[np + NL + l] end
    ctx.pv = pv
    local out = run_forward(pv, Hv, Wv)
    local res = {}
    for l = 1, NL do res[l], res[NL + l] = out.H[l], out.W[l] end
    return res
  end, function(ctx, gouts)
    local pv = ctx.pv
    local pt = param_table(net, pv)
    local GH, GW = {}, {}
    for l = 1, NL do
      GH[l] = gouts[l] or nm.zeros(net.chemicals, net.sizes[l + 1], net.sizes[l], net.dtype)
      GW[l] = gouts[NL + l] or nm.zeros(net.sizes[l + 1], net.sizes[l], net.dtype)
    end
    local gp = zeros_like_params(pv)
    local gt = param_table(net, gp)
    for s = ws.nseg, 1, -1 do
      local t0 = (s - 1) * S
      local len = math.min(S, T - t0)
      for j = 1, len do
        local src = j == 1 and ws.snaps[s] or ws.seg[j - 1]
        k:forward(ws.seg[j].H, ws.seg[j].W, src.H, src.W, B, X:row(t0 + j), labels[t0 + j], pt,
                  ws.traces[j])
      end
      for j = len, 1, -1 do
        local src = j == 1 and ws.snaps[s] or ws.seg[j - 1]
        k:backward(GH, GW, src.H, src.W, B, ws.traces[j], pt, gt, ws.seg[j].H)
      end
    end
    ws.holder[1] = nil
    local grads = {}
    for i = 1, np do grads[i] = gp[i] end
    for l = 1, NL do grads[np + l], grads[np + NL + l] = GH[l], GW[l] end
    return table.unpack(grads, 1, np + 2 * NL)
  end, 2 * NL)
  local args = {}
  for i = 1, np do args[i] = params[i] end
  for l = 1, NL do args[np + l], args[np + NL + l] = H0[l], W0[l] end
  local res = op(table.unpack(args, 1, np + 2 * NL))
  ws.holder[1] = res[1]
  return res
end

-- ---------------------------------------------------------------- learner

local Learner = {}
Learner.__index = Learner

-- rcn.learner(o) -> learner. Options:
--   net      rcn.net{...} (required)
--   P0       initial P[:,0] (1e-3)
--   lr       Adam learning rate (1e-3); beta1, beta2, eps as in nm.optim
--   lr_scale per-group factors of lr, {P =, K =, v =, b =} (default 1
--            each): Adam moves every parameter by about its rate, so a
--            group whose every element acts on all synapses at once (the
--            bias, K) may need a smaller one than P
--   lambda   L1 penalty on P (0)
--   learn    which meta-parameters move: a set of "P", "K", "v", "b"
--            (default all four; "b" never with bias = "none")
--   clip     clip the meta-gradient to this Euclidean norm (nil: off)
--   guard    "none", "skip" or "rollback" (default), as nm.meta's learner
--   segment  checkpoint segment length (default ceil(sqrt(steps)))
function rcn.learner(o)
  if type(o) ~= "table" or type(o.net) ~= "table" or not o.net.kernel or not o.net.chemicals then
    fail("learner: option 'net' (rcn.net{...}) is required", 2)
  end
  local net = o.net
  local self = setmetatable({net = net}, Learner)
  self.p = rcn.meta_params(net, {P0 = o.P0})
  self.list = rcn.param_list(net, self.p)
  local learn = o.learn or {P = true, K = true, v = true, b = true}
  for key in pairs(learn) do
    if key ~= "P" and key ~= "K" and key ~= "v" and key ~= "b" then
      fail("learner: learn is a set of 'P', 'K', 'v', 'b'", 2)
    end
  end
  self.active = {learn.P and true or false, learn.K and true or false, learn.v and true or false}
  for i = 4, #self.list do self.active[i] = (learn.b and net.bias ~= "none") and true or false end
  self.lambda = o.lambda or 0
  self.clip = o.clip
  self.guard = o.guard or "rollback"
  if self.guard ~= "none" and self.guard ~= "skip" and self.guard ~= "rollback" then
    fail("learner: guard must be 'none', 'skip' or 'rollback'", 2)
  end
  self.segment = o.segment
  -- one Adam per group (its own rate); list entry i belongs to group[i]
  self.group = {"P", "K", "v"}
  for i = 4, #self.list do self.group[i] = "b" end
  self.lr = o.lr or 1e-3
  self.lr_scale = {P = 1, K = 1, v = 1, b = 1}
  for key, f in pairs(o.lr_scale or {}) do
    if self.lr_scale[key] == nil or type(f) ~= "number" or not (f >= 0) then
      fail("learner: lr_scale is a table {P =, K =, v =, b =} of non-negative numbers", 2)
    end
    self.lr_scale[key] = f
  end
  self.opts = {}
  for _, key in ipairs{"P", "K", "v", "b"} do
    self.opts[key] = optim.adam{lr = self.lr * self.lr_scale[key], beta1 = o.beta1,
                                beta2 = o.beta2, eps = o.eps}
  end
  self.episodes, self.skipped, self.rollbacks = 0, 0, 0
  self.grads = zeros_like_params(self.list)
  -- P columns of motifs not in use stay at 0 and get no gradient
  self.Pmask = nm.zeros(self.p.P:size(), "float64")
  for r = 0, 9 do
    if net.use[r] then
      if net.share == "layer" then self.Pmask:narrow(3, r + 1, 1):fill(1)
      else self.Pmask:narrow(2, r + 1, 1):fill(1) end
    end
  end
  self.p.P:mul(self.Pmask)
  return self
end

-- learner:episode(task, g) -> W, B, H: the inner loop alone (no
-- gradient), in place, from a fresh draw by g.
function Learner:episode(task, g)
  local net = self.net
  local H, W, B = rcn.init(net, g, self.p)
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

-- learner:meta_gradient(task, g [, stats]) -> loss (query CE + lambda
-- |P|_1), CE, query accuracy, gradients (a list like rcn.param_list;
-- buffers of the learner).
function Learner:meta_gradient(task, g, stats)
  local net, NL = self.net, self.net.layers
  local Wx, B = motifs.init(net.mnet, g)
  local tape = ag.tape()
  local vars = {}
  for i, p in ipairs(self.list) do vars[i] = tape:leaf(p) end
  local H0, W0 = rcn.initial_state(net, Wx, vars[3])
  local res = rcn.unroll(net, H0, W0, B, task.X, task.labels, vars, task.steps,
                         {segment = self.segment, stats = stats})
  local WT = {}
  for l = 1, NL do WT[l] = res[NL + l] end
  local ce = motifs.fused_query_loss(net.mnet, WT, task.Xq, task.labels_q)
  local loss = ce
  if self.lambda > 0 then loss = ag.add(ce, ag.scale(ag.l1(vars[1]), self.lambda)) end
  local Wplain = {}
  for l = 1, NL do Wplain[l] = ag.value(WT[l]) end
  local _, correct = net.mnet.kernel:query(Wplain, task.Xq, task.labels_q)
  tape:backward(loss)
  for i, v in ipairs(vars) do
    if v.grad and self.active[i] then self.grads[i]:copy(v.grad) else self.grads[i]:zero() end
  end
  self.grads[1]:mul(self.Pmask)
  return ag.value(loss), ag.value(ce), correct / #task.labels_q, self.grads
end

local function grad_norm(grads, active)
  local s = 0
  for i, gr in ipairs(grads) do
    if active[i] then local n = gr:norm(); s = s + n * n end
  end
  return sqrt(s)
end

local function clone_tree(st)
  if nm.is_tensor(st) then return st:clone() end
  if type(st) ~= "table" then return st end
  local c = {}
  for k, v in pairs(st) do c[k] = clone_tree(v) end
  return c
end

-- learner:meta_step(task, g) -> info {loss, ce, accuracy, grad_norm,
-- finite, action}: one meta-gradient and one Adam step with the guards.
function Learner:meta_step(task, g)
  local loss, ce, acc, grads = self:meta_gradient(task, g)
  local norm = grad_norm(grads, self.active)
  local ok = finite(loss) and finite(norm)
  local info = {loss = loss, ce = ce, accuracy = acc, grad_norm = norm, finite = ok}
  self.episodes = self.episodes + 1
  if not ok and self.guard ~= "none" then
    if self.guard == "rollback" and self.prev then
      for i, p in ipairs(self.list) do p:copy(self.prev.list[i]) end
      self:load_opt_state(clone_tree(self.prev.opt))
      self.rollbacks = self.rollbacks + 1
      info.action = "rollback"
    else
      self.skipped = self.skipped + 1
      info.action = "skip"
    end
    return info
  end
  if self.guard == "rollback" then
    self.prev = {list = clone_tree(self.list), opt = clone_tree(self:opt_state())}
  end
  if self.clip and norm > self.clip then
    for _, gr in ipairs(grads) do gr:scale(self.clip / norm) end
  end
  for key, opt in pairs(self.opts) do
    local ps, gs = {}, {}
    for i, p in ipairs(self.list) do
      if self.group[i] == key and self.active[i] then ps[#ps + 1], gs[#gs + 1] = p, grads[i] end
    end
    if #ps > 0 then opt:step(ps, gs) end
  end
  self.p.P:mul(self.Pmask)
  info.action = "update"
  return info
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

-- The optimisers' states, by group, and their restore.
function Learner:opt_state()
  local st = {}
  for key, opt in pairs(self.opts) do st[key] = opt:state() end
  return st
end

function Learner:load_opt_state(st)
  for key, opt in pairs(self.opts) do opt:load_state(st[key]) end
end

-- Checkpoint state (a tree nm.checkpoint can save) and its restore.
function Learner:state()
  return {list = self.list, opt = self:opt_state(), episodes = self.episodes,
          skipped = self.skipped, rollbacks = self.rollbacks, prev = self.prev}
end

function Learner:load_state(st)
  for i, p in ipairs(self.list) do p:copy(st.list[i]) end
  self:load_opt_state(st.opt)
  self.episodes, self.skipped, self.rollbacks = st.episodes, st.skipped, st.rollbacks
  self.prev = st.prev and clone_tree(st.prev) or nil
end

rcn.finite = finite

return rcn
