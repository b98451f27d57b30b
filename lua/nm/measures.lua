-- nm/measures.lua: what every learner reports (../shared/models/
-- baselines.md): accuracy, loss, MSE, and the angles that show how well a
-- rule with a feedback pathway follows backprop: between its hidden-layer
-- updates and BP's on the same batch, and between feedback and forward
-- weights. Angles are in degrees. These run at evaluation time and may
-- allocate.

local nm = require "neuromic"

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

-- Hidden-layer weight gradients E_l^T Y_{l-1} of net's current buffers
-- into G[l] (l = 1..L-1), allocating G on first use.
local function hidden_grads(net, G)
  local bs = net.cur
  for l = 1, net.L - 1 do
    G[l] = G[l] or net.conns[l].W:clone()
    G[l]:addmm(1, bs.Et[l], bs.Y[l - 1], 0)
  end
end

-- Angles in degrees, per hidden layer l = 1..L-1, between the weight
-- update of the pathway `feedback` (default net.feedback) and the
-- backprop update (the pathway "bp") on the batch X, T (one forward; both backward passes
-- start from the same activations; weights unchanged). Returns a list.
function measures.update_angles(net, X, T, feedback)
  feedback = feedback or net.feedback
  net._angle_rule, net._angle_bp = net._angle_rule or {}, net._angle_bp or {}
  net:forward(X)
  net:backward(T, feedback)
  hidden_grads(net, net._angle_rule)
  net:backward(T, "bp")
  hidden_grads(net, net._angle_bp)
  local out = {}
  for l = 1, net.L - 1 do
    out[l] = measures.angle(net._angle_rule[l], net._angle_bp[l])
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
