-- nm/measures.lua: what every learner reports (doc/models/
-- baselines.md): accuracy, loss, MSE, and the angles that show how well a
-- rule follows backprop: between its hidden-layer updates and BP's on the
-- same batch, and between its error pathway's feedback and the forward
-- weights. Angles are in degrees. These run at evaluation time and may
-- allocate.

local nm = require "neuromic"
local rule = require "nm.rule"

local measures = {}

local acos, deg, format = math.acos, math.deg, string.format

-- Angle in degrees between two tensors of the same shape, flattened:
-- acos(<a, b> / (|a| |b|)). nil when either is all zeros.
function measures.angle(a, b)
  if not a:same_shape(b) then
    error(format("measures.angle: shapes differ ([%s] vs [%s])", table.concat(a:size(), " x "),
                 table.concat(b:size(), " x ")), 2)
  end
  local na, nb = a:norm(), b:norm()
  if na == 0 or nb == 0 then return nil end
  local c = a:dot(b) / (na * nb)
  if c > 1 then c = 1 elseif c < -1 then c = -1 end
  return deg(acos(c))
end

-- measures.diverged(errors [, above]) -> the first index i at which a
-- learner's error curve (a list of test errors, one per epoch) has
-- diverged: errors[i] > above (default 0.5) and more than twice the best
-- of errors[1..i-1]; nil when none. A learner that got worse, not one that
-- is slow: a first value, however high, never counts.
function measures.diverged(errors, above)
  above = above or 0.5
  if type(errors) ~= "table" or type(above) ~= "number" then
    error("measures.diverged: a list of errors and a number expected", 2)
  end
  local best = math.huge
  for i, e in ipairs(errors) do
    if type(e) ~= "number" then error(format("measures.diverged: errors[%d] is not a number", i), 2) end
    if e > above and e > 2 * best then return i end
    if e < best then best = e end
  end
  return nil
end

-- Fraction of rows of Y (scores [B x C]) whose argmax is the label: labels
-- a Lua list of 1-based classes, or one-hot targets [B x C].
function measures.accuracy(Y, labels)
  local B = Y:size(1)
  if B == 0 then return 0 end
  local pred = Y:argmax(2)
  local n = 0
  if nm.is_tensor(labels) then
    local tp = labels:argmax(2)
    for i = 1, B do if pred:get(i) == tp:get(i) then n = n + 1 end end
  else
    for i = 1, B do if pred:get(i) == labels[i] then n = n + 1 end end
  end
  return n / B
end

-- Mean squared error over all elements.
function measures.mse(Y, T)
  local d = Y - T
  return d:dot(d) / math.max(d:numel(), 1)
end

-- Mean softmax cross-entropy of logits A against targets T (rows).
function measures.xent(A, T)
  local ls = A:clone():logsoftmax()
  return -ls:dot(T) / A:size(1)
end

-- Loss and accuracy of network net on X, T (labels optional).
function measures.loss(net, X, T, labels)
  return net:evaluate(X, T, nil, labels)
end

-- A copy of a rule state (tensors cloned), and its restoration in place.
local function snapshot(x)
  if nm.is_tensor(x) then return x:clone() end
  if type(x) ~= "table" then return x end
  local t = {}
  for k, v in pairs(x) do t[k] = snapshot(v) end
  return t
end

local function restore(dst, src)
  for k, v in pairs(src) do
    local d = dst[k]
    if nm.is_tensor(v) and nm.is_tensor(d) and d:same_shape(v) then d:copy(v)
    elseif type(v) == "table" and not nm.is_tensor(v) and type(d) == "table" then restore(d, v)
    else dst[k] = v end
  end
end

-- Angles in degrees, per hidden layer l = 1..L-1, between the weight
-- change each connection's rule makes on the batch X, T (errors through
-- the pathway `feedback`, default net.feedback) and backprop's change
-- -E_l^T Y_{l-1} (errors through the pathway "bp"). One forward; both
-- backward passes start from the same activations; the rules run
-- deferred, so weights and rule states are left as they were (nil for a
-- layer whose rule or connection is switched off). Returns a list.
function measures.update_angles(net, X, T, feedback)
  local R, G = net._angle_rule or {}, net._angle_bp or {}
  net._angle_rule, net._angle_bp = R, G
  net:forward(X)
  net:backward(T, feedback)
  local bs, changed = net.cur, {}
  for l = 1, net.L - 1 do
    local c, q = net.conns[l], bs.q[l]
    local saved, defer = snapshot(c.state), q.defer
    q.defer, q.mod, q.state = true, net.mod, c.state
    changed[l] = rule.apply(c.rule, c, q)
    R[l] = R[l] or c.W:clone()
    R[l]:copy(c.dW)
    q.defer = defer
    if type(saved) == "table" then restore(c.state, saved) end
  end
  net:backward(T, "bp")
  local out = {}
  for l = 1, net.L - 1 do
    G[l] = G[l] or net.conns[l].W:clone()
    G[l]:addmm(-1, bs.Et[l], bs.Y[l - 1], 0)
    if changed[l] then out[l] = measures.angle(R[l], G[l]) end
  end
  return out
end

-- Alignment angles in degrees, per hidden layer l = 1..L-1, between the
-- matrix M_l errors travel through on the pathway `feedback` (default
-- net.feedback; see nm.rule) and what backprop would use:
--   source "next":   M_l vs W_{l+1}              (fa: B_{l+1}; bp: 0)
--   source "output": M_l vs W_L ... W_{l+1}      (dfa: D_l^T, the linear
--                                                 part of the BP path)
-- Returns a list.
function measures.feedback_angles(net, feedback)
  local pw, st = net:path(feedback)
  local out = {}
  for l = 1, net.L - 1 do
    local M = net:feedback_matrix(pw, st, l)
    local P = net.conns[l + 1].W
    if pw.source == "output" then
      P = net.conns[net.L].W:clone()              -- n_L x n_{L-1}
      for k = net.L - 1, l + 1, -1 do P = nm.mm(P, net.conns[k].W) end
    end
    out[l] = rawequal(M, P) and 0 or measures.angle(M, P)
  end
  return out
end

return measures
