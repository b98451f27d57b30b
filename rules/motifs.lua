-- rules/motifs.lua: the ten plasticity motifs of Shervani-Tabar &
-- Rosenbaum, "Meta-learning biologically plausible plasticity rules with
-- random feedback pathways", Nature Communications 14, 1805 (2023), and
-- the rule W_l += sum_r theta_r F^r_l built from them, on a softplus
-- network with feedback-alignment errors (or backprop errors).
--
-- Network (no biases): y_0 = x, z_l = W_l y_{l-1},
--   y_l = softplus_beta(z_l) = log(1 + exp(beta z_l)) / beta   (l < L),
--   y_L = softmax(z_L); default 784-170-130-100-70-10, beta = 10.
-- Errors: e_L = y_L - onehot(label),
--   e_l = (B_{l+1}^T e_{l+1}) .* (1 - exp(-beta y_l))  for l = L-1..1,
--   e_0 = (B_1^T e_1) .* (1 - exp(-beta x))          (synthetic input error),
-- with fixed random B_l (FA) or B_l = W_l (BP). 1 - exp(-beta y) is the
-- softplus derivative written through y, so the meta-gradient
-- differentiates softplus twice.
--
--   r  F^r                                cheap form used here
--   0  -e_l y_{l-1}^T                     (pseudo-gradient)
--   1  -y_l e_{l-1}^T
--   2  -e_l e_{l-1}^T                     (error Hebbian)
--   3  -W_l                               (decay)
--   4  -1 e_{l-1}^T
--   5  -e_l 1^T y_l y_{l-1}^T             -(sum y_l) e_l y_{l-1}^T
--   6  -y_l y_l^T W e_{l-1} e_{l-1}^T     -(y_l^T W e_{l-1}) y_l e_{l-1}^T
--   7  -e_l y_l^T W e_{l-1} y_{l-1}^T     -(y_l^T W e_{l-1}) e_l y_{l-1}^T
--   8  -y_l y_{l-1}^T W^T e_l e_{l-1}^T   -(e_l^T W y_{l-1}) y_l e_{l-1}^T
--   9  y_l y_{l-1}^T - (y_l y_l^T) W      (Oja, subspace form)
--
-- One online step (batch 1): every layer's F^r from the pre-update weights
-- of that step, then W_l += sum_r theta_r F^r_l with the same theta for all
-- layers. No other learning rate: theta = (theta_0, 0, ..., 0) with BP
-- feedback is SGD with rate theta_0 (spec/meta_spec.lua checks it).
--
-- Two implementations of the step, tested equal:
--   motifs.step(net, W, theta, x, label)   -- nm.autograd operations, literal
--                                          -- motif forms; runs on a tape
--   motifs.fused_step(net, W, theta, x, label) -- one C kernel (nm_meta.c)
--                                          -- with a hand-derived adjoint
-- Both take plain tensors (fast untracked forward) or autograd variables
-- (recorded for the meta-gradient). See lua/nm/models/meta.lua for episodes and
-- meta-training, doc/autograd.md for the mechanism.

local nm = require "neuromic"
local ag = require "nm.autograd"

local motifs = {
  kind = "meta",
  model = "motif_net",
  name = "motifs",
  paper = "Shervani-Tabar & Rosenbaum, Nat. Commun. 14, 1805 (2023)",
  equation = "W_l += sum_{r=0}^{9} theta_r F^r_l (motifs from y_{l-1}, y_l, e_{l-1}, e_l, W_l)",
  count = 10,
  coefficients = {
    theta = {shape = {10}, init = 0, doc = "the motifs' coefficients theta_0..theta_9"},
  },
  names = {
    [0] = "-e_l y_{l-1}^T", "-y_l e_{l-1}^T", "-e_l e_{l-1}^T", "-W_l", "-1 e_{l-1}^T",
    "-(sum y_l) e_l y_{l-1}^T", "-(y_l^T W e_{l-1}) y_l e_{l-1}^T",
    "-(y_l^T W e_{l-1}) e_l y_{l-1}^T", "-(e_l^T W y_{l-1}) y_l e_{l-1}^T",
    "y_l y_{l-1}^T - y_l y_l^T W",
  },
  params = {
    sizes = {default = {784, 170, 130, 100, 70, 10}, doc = "layer widths n_0..n_L"},
    beta = {default = 10, doc = "softplus sharpness"},
    feedback = {default = "fa", doc = "'fa' (fixed random B), 'bp' (B = W, exact derivative " ..
                                      "through both uses), 'bp_detached' (B = W held constant " ..
                                      "in the meta-gradient, as in the authors' code)"},
    dtype = {default = "float32", doc = "network element type"},
  },
}

local format = string.format

-- Named subsets of motifs (0-based indices), as in the paper's figures.
motifs.subsets = {
  lr = {0},                       -- learning rate only
  pool = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9},
  bio = {0, 2, 9},                -- F_bio
  ehebb = {0, 2},                 -- pseudo-gradient + error Hebbian
  oja = {0, 9},                   -- pseudo-gradient + Oja
  pool_no5 = {0, 1, 2, 3, 4, 6, 7, 8, 9},
}

-- motifs.net{sizes =, beta =, feedback =, dtype =} -> a network
-- description with its fused kernel (net.kernel, a neuromic.MotifNet).
function motifs.net(o)
  o = o or {}
  local net = {
    sizes = o.sizes or motifs.params.sizes.default,
    beta = o.beta or motifs.params.beta.default,
    feedback = o.feedback or motifs.params.feedback.default,
    dtype = o.dtype or motifs.params.dtype.default,
  }
  net.layers = #net.sizes - 1
  if net.layers < 1 then error("motifs.net: sizes must list at least 2 layer widths", 2) end
  local ok, k = pcall(nm.motif_net, net)
  if not ok then error("motifs.net: " .. tostring(k):gsub("^.-%(", "("), 2) end
  net.kernel = k
  net.classes = net.sizes[#net.sizes]
  return net
end

-- motifs.init(net, g) -> W, B: Xavier-uniform draws U(-a, a),
-- a = sqrt(6 / (fan_in + fan_out)), for the weights and (FA) the feedback
-- matrices, each of shape n_l x n_{l-1}. B is nil in the BP modes.
function motifs.init(net, g, W, B)
  W = W or {}
  if net.feedback == "fa" then B = B or {} else B = nil end
  for l = 1, net.layers do
    local n, m = net.sizes[l + 1], net.sizes[l]
    local a = math.sqrt(6 / (n + m))
    W[l] = W[l] or nm.zeros(n, m, net.dtype)
    W[l]:uniform(g, -a, a)
  end
  if B then
    for l = 1, net.layers do
      local n, m = net.sizes[l + 1], net.sizes[l]
      local a = math.sqrt(6 / (n + m))
      B[l] = B[l] or nm.zeros(n, m, net.dtype)
      B[l]:uniform(g, -a, a)
    end
  end
  return W, B
end

-- A one-hot vector (constant) for a 1-based label.
local function onehot(n, label, dtype)
  local t = nm.zeros(n, dtype)
  t:set(label, 1)
  return t
end

-- motifs.signals(net, W, B, x, label) -> y, e, z: activations y[0..L],
-- errors e[0..L] and pre-activations z[1..L] of one sample, written with
-- nm.autograd operations (W entries may be variables; B = W in BP modes,
-- B ignored then).
function motifs.signals(net, W, B, x, label)
  local L, beta = net.layers, net.beta
  local y, z, e = {[0] = x}, {}, {}
  for l = 1, L do
    z[l] = ag.mv(W[l], y[l - 1])
    if l < L then y[l] = ag.softplus(z[l], beta) else y[l] = ag.softmax(z[l]) end
  end
  local fb = W
  if net.feedback == "fa" then fb = B
  elseif net.feedback == "bp_detached" then
    fb = {}
    for l = 1, L do fb[l] = ag.value(W[l]) end
  end
  e[L] = ag.sub(y[L], onehot(net.classes, label, net.dtype))
  for l = L - 1, 0, -1 do
    local s = ag.sub(1, ag.exp(ag.scale(y[l], -beta)))      -- 1 - exp(-beta y_l)
    e[l] = ag.mul(ag.mv(ag.t(fb[l + 1]), e[l + 1]), s)
  end
  return y, e, z
end

-- motifs.terms(Wl, ypre, ypost, epre, epost) -> F[0..9], the motifs of one
-- layer as matrices (literal cheap forms; nm.autograd operations).
function motifs.terms(Wl, ypre, ypost, epre, epost)
  local F = {}
  local ones = nm.ones(ag.value(ypost):size(1), ag.value(ypost):dtype())
  local c = ag.dot(ypost, ag.mv(Wl, epre))                 -- y_l^T W e_{l-1}
  local d = ag.dot(epost, ag.mv(Wl, ypre))                 -- e_l^T W y_{l-1}
  F[0] = ag.neg(ag.outer(epost, ypre))
  F[1] = ag.neg(ag.outer(ypost, epre))
  F[2] = ag.neg(ag.outer(epost, epre))
  F[3] = ag.neg(Wl)
  F[4] = ag.neg(ag.outer(ones, epre))
  F[5] = ag.scale(ag.outer(epost, ypre), ag.neg(ag.sum(ypost)))
  F[6] = ag.scale(ag.outer(ypost, epre), ag.neg(c))
  F[7] = ag.scale(ag.outer(epost, ypre), ag.neg(c))
  F[8] = ag.scale(ag.outer(ypost, epre), ag.neg(d))
  F[9] = ag.sub(ag.outer(ypost, ypre), ag.outer(ypost, ag.mv(ag.t(Wl), ypost)))
  return F
end

-- The 0-based motif indices whose theta is not zero (for the plain
-- forward); on a tape every motif with a tracked theta counts.
local function active(theta)
  local list = {}
  if ag.is_var(theta) then
    for r = 0, 9 do list[#list + 1] = r end
    return list
  end
  for r = 0, 9 do
    if ag.value(theta):get(r + 1) ~= 0 then list[#list + 1] = r end
  end
  return list
end

-- motifs.step(net, W, theta, x, label [, B]) -> W': one online step with
-- the generic operations (reference implementation; runs on a tape).
-- theta: a tensor of 10 values (or a variable holding one).
function motifs.step(net, W, theta, x, label, B)
  local y, e = motifs.signals(net, W, B, x, label)
  local out = {}
  local use = active(theta)
  for l = 1, net.layers do
    local F = motifs.terms(W[l], y[l - 1], y[l], e[l - 1], e[l])
    local Wn = W[l]
    for _, r in ipairs(use) do
      Wn = ag.add(Wn, ag.scale(F[r], ag.index(theta, r + 1)))
    end
    out[l] = Wn
  end
  return out
end

-- ---------------------------------------------------------------- fused

-- The tape operation of one fused step: arguments (theta, W_1..W_L),
-- results W'_1..W'_L. ctx keeps the inputs and the step's trace (vectors
-- only: a few thousand numbers), so a recorded step costs one set of
-- weights (its output) plus the trace.
local function fused_forward(ctx, net, B, x, label, theta, ...)
  local k = net.kernel
  local W = {...}
  local out = {}
  for l = 1, net.layers do out[l] = nm.zeros(W[l]:size(), net.dtype) end
  local trace = k:new_trace()
  k:forward(out, W, B, x, label, theta, trace)
  ctx.net, ctx.B, ctx.W, ctx.theta, ctx.trace = net, B, W, theta, trace
  ctx.need = net.need             -- which theta gradients to compute (nil: all)
  return out
end

local function fused_backward(ctx, gouts)
  local net, L = ctx.net, ctx.net.layers
  local G = {}
  for l = 1, L do
    G[l] = gouts[l] or nm.zeros(ctx.W[l]:size(), net.dtype)   -- owned: overwritten in place
  end
  local tb = nm.zeros(10, "float64")
  net.kernel:backward(G, ctx.W, ctx.B, ctx.trace, ctx.theta, tb, ctx.need)
  local res = {nil, nil, nil, nil, tb}
  for l = 1, L do res[5 + l] = G[l] end
  return table.unpack(res, 1, 5 + L)
end

local fused_ops = {}

-- motifs.fused_step(net, W, theta, x, label [, B]) -> W' (a new list): the
-- same step through the C kernel. With variables it records one node per
-- step whose backward is the hand-derived adjoint. theta must be a float64
-- tensor of 10 values (or a variable holding one).
function motifs.fused_step(net, W, theta, x, label, B)
  local L = net.layers
  if not ag.is_var(theta) then
    local tracked = false
    for l = 1, L do if ag.is_var(W[l]) then tracked = true end end
    if not tracked then
      local out = {}
      for l = 1, L do out[l] = nm.zeros(W[l]:size(), net.dtype) end
      net.kernel:forward(out, W, B, x, label, theta)
      return out
    end
  end
  local op = fused_ops[L]
  if not op then
    op = ag.def("motif_step", fused_forward, fused_backward, L)
    fused_ops[L] = op
  end
  return op(net, B, x, label, theta, table.unpack(W, 1, L))
end

-- motifs.fused_step_into(net, out, W, theta, x, label [, B]): the untracked
-- step written into the tensors of `out` (may be W: in place). Allocates
-- nothing.
function motifs.fused_step_into(net, out, W, theta, x, label, B)
  net.kernel:forward(out, W, B, x, label, theta)
  return out
end

-- ---------------------------------------------------------------- unroll

-- The buffers of motifs.unroll for T steps in segments of S, allocated once
-- per (net, T, S) and reused by every meta-step: ceil(T / S) stored weight
-- sets (segment starts), S weight sets and S traces for the segment being
-- recomputed.
local function workspace(net, T, S)
  net.workspaces = net.workspaces or {}
  local key = T .. ":" .. S
  local ws = net.workspaces[key]
  -- A workspace still held by a recorded unroll whose backward has not
  -- run (its result variables alive) is not shared: a fresh one is made.
  if ws and ws.holder[1] == nil then return ws end
  local function wset()
    local w = {}
    for l = 1, net.layers do w[l] = nm.zeros(net.sizes[l + 1], net.sizes[l], net.dtype) end
    return w
  end
  local nseg = math.max(1, math.ceil(T / S))
  ws = {snaps = {}, seg = {}, traces = {}, nseg = nseg, S = S, T = T,
        holder = setmetatable({}, {__mode = "v"})}
  for k = 1, nseg do ws.snaps[k] = wset() end
  for j = 1, math.min(S, math.max(T, 1)) do
    ws.seg[j] = wset()
    ws.traces[j] = net.kernel:new_trace()
  end
  if not net.workspaces[key] or net.workspaces[key].holder[1] == nil then
    net.workspaces[key] = ws
  end
  return ws
end

local function copy_set(dst, src)
  for l = 1, #src do dst[l]:copy(src[l]) end
end

-- motifs.unroll(net, W0, B, X, labels, theta, T [, opts]) -> W_T (a list):
-- the whole inner loop, W_t = step(W_{t-1}, x_t = X:row(t), labels[t]),
-- as one tape operation when theta (or W0 entries) are variables. It is
-- ag.scan specialised to the fused step: the same checkpointing (segment
-- starts stored every S = opts.segment or ceil(sqrt(T)) steps, each segment
-- recomputed once during backward, with its traces), but in buffers that
-- are allocated once per (net, T, S) and reused, so a meta-step allocates
-- only its result. Memory: (ceil(T/S) + S) weight sets + S traces, i.e.
-- about 2 sqrt(T) weight sets. opts.stats receives snapshots, segment,
-- state_bytes, workspace_bytes. The result's gradients flow to theta
-- (net.need selects which of its 10 entries) and to W0.
function motifs.unroll(net, W0, B, X, labels, theta, T, opts)
  opts = opts or {}
  local L = net.layers
  local S = opts.segment or math.max(1, math.ceil(math.sqrt(T)))
  local ws = workspace(net, T, S)
  local k = net.kernel
  local esize = net.dtype == "float64" and 8 or 4
  if opts.stats then
    local bytes = 0
    for l = 1, L do bytes = bytes + net.sizes[l + 1] * net.sizes[l] * esize end
    opts.stats.snapshots, opts.stats.segment, opts.stats.state_bytes = ws.nseg, S, bytes
    opts.stats.workspace_bytes = (ws.nseg + #ws.seg) * bytes +
      #ws.seg * k:info().trace_size * esize
  end
  local function run_forward(th, W0v)
    local out = {}
    for l = 1, L do out[l] = nm.zeros(net.sizes[l + 1], net.sizes[l], net.dtype) end
    if T == 0 then copy_set(out, W0v) return out end
    copy_set(ws.snaps[1], W0v)
    for s = 1, ws.nseg do
      local t0 = (s - 1) * S
      local len = math.min(S, T - t0)
      for j = 1, len do
        local src = j == 1 and ws.snaps[s] or ws.seg[j - 1]
        local dst = ws.seg[j]
        if j == len then dst = s < ws.nseg and ws.snaps[s + 1] or out end
        k:forward(dst, src, B, X:row(t0 + j), labels[t0 + j], th)
      end
    end
    return out
  end
  local tracked = ag.is_var(theta)
  for l = 1, L do if ag.is_var(W0[l]) then tracked = true end end
  if not tracked then return run_forward(ag.value(theta), W0) end

  local op = ag.def("motif_unroll", function(ctx, th, ...)
    ctx.theta = th
    return run_forward(th, {...})
  end, function(ctx, gouts)
    local th = ctx.theta
    local G = {}
    for l = 1, L do G[l] = gouts[l] or nm.zeros(net.sizes[l + 1], net.sizes[l], net.dtype) end
    local tb = nm.zeros(10, "float64")
    for s = ws.nseg, 1, -1 do
      local t0 = (s - 1) * S
      local len = math.min(S, T - t0)
      for j = 1, len do
        local src = j == 1 and ws.snaps[s] or ws.seg[j - 1]
        k:forward(ws.seg[j], src, B, X:row(t0 + j), labels[t0 + j], th, ws.traces[j])
      end
      for j = len, 1, -1 do
        local src = j == 1 and ws.snaps[s] or ws.seg[j - 1]
        k:backward(G, src, B, ws.traces[j], th, tb, net.need)
      end
    end
    ws.holder[1] = nil
    local grads = {tb}
    for l = 1, L do grads[1 + l] = G[l] end
    return table.unpack(grads, 1, 1 + L)
  end, L)
  local res = op(theta, table.unpack(W0, 1, L))
  ws.holder[1] = res[1]
  return res
end

-- ---------------------------------------------------------------- loss

-- motifs.logits(net, W, X) -> Z_L: the network's output before the softmax
-- for the rows of X (nm.autograd operations).
function motifs.logits(net, W, X)
  local Y = X
  for l = 1, net.layers do
    local Z = ag.mm(Y, ag.t(W[l]))
    if l < net.layers then Y = ag.softplus(Z, net.beta) else return Z end
  end
end

-- motifs.query_loss(net, W, X, labels) -> mean cross-entropy (a number or
-- a variable), generic operations.
function motifs.query_loss(net, W, X, labels)
  return ag.cross_entropy(motifs.logits(net, W, X), labels)
end

-- The fused query loss as a tape operation: arguments (W_1..W_L), result
-- the mean cross-entropy; ctx.correct holds the count classified right.
local function fused_query_forward(ctx, net, X, labels, ...)
  local W = {...}
  local loss, correct = net.kernel:query(W, X, labels)
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

-- motifs.fused_query_loss(net, W, X, labels) -> loss, correct: the same
-- through the C kernel (correct only for plain W).
function motifs.fused_query_loss(net, W, X, labels)
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
-- indices) or a list of 10 numbers.
function motifs.theta(t)
  local th = nm.zeros(10, "float64")
  if nm.is_tensor(t) then th:copy(t) return th end
  for r = 0, 9 do
    local v = t[r]
    if v == nil and #t == 10 then v = t[r + 1] end
    if v ~= nil then th:set(r + 1, v) end
  end
  return th
end

function motifs.describe(theta)
  local parts = {}
  for r = 0, 9 do parts[#parts + 1] = format("%d:%.3g", r, theta:get(r + 1)) end
  return table.concat(parts, " ")
end

return motifs
