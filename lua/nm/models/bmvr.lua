-- nm/bmvr.lua: a BMVR network (or its backprop twin) as one object:
-- initialisation, training passes, prediction, the linear objective and
-- the measures of Golkar et al. 2020 (rules in rules/bmvr.lua, kernels in
-- csrc/models/nm_bmvr.c).
--
--   local bmvr = require "nm.models.bmvr"
--   local net = bmvr.new{n = 784, m = 10, k = 64, relu = true,
--                        eta_w1 = 1e-3, eta_w2 = 2e-4, eta_q = 1e-3, seed = 1}
--   net:train(X, Y, {order = g:permutation(X:size(1))})   -- one pass, in C
--   local mse, acc = net:evaluate(Xtest, Ytest)
--
-- Options of bmvr.new (defaults in brackets):
--   n, m, k          input, label and hidden sizes (required)
--   method           "bmvr" or "backprop" ["bmvr"]
--   relu, gate, decoupled, mean_eps, track_mean, eta_w1, eta_w2, eta_q, t0
--                    as in rules/bmvr.lua [its defaults]
--   dtype            "float32" or "float64" ["float32"]
--   w1_std, w2_std   std of the normal entries of W1 and W2T [1/sqrt(n), 1/sqrt(k)]
--   q_scale          Q = R = q_scale I [1]
--   generator, seed  initialisation randomness [nm.generator(seed or 1)]
-- The paper does not give its initialisation; the defaults keep z = W1 x
-- and y_hat = W2T^T z of order one for inputs of unit norm per pixel
-- scale. (The Bio-RRR demo uses W1 std 0.01, W2 std 0.1, Q = I/3.)
local nm = require "neuromic"
local rule = require "rules.bmvr"

local bmvr = {}

local Net = {}
Net.__index = Net

local format = string.format

local function need_int(o, key)
  local v = o[key]
  if math.type(v) ~= "integer" or v < 1 then
    error(format("bmvr.new: option %s must be a positive integer, got %s", key, tostring(v)), 3)
  end
  return v
end

-- bmvr.new(o) -> network. See the header for the options.
function bmvr.new(o)
  if type(o) ~= "table" then error("bmvr.new: options table expected", 2) end
  local n, m, k = need_int(o, "n"), need_int(o, "m"), need_int(o, "k")
  local method = o.method or "bmvr"
  if method ~= "bmvr" and method ~= "backprop" then
    error("bmvr.new: method must be \"bmvr\" or \"backprop\", got " .. tostring(method), 2)
  end
  local p = {}
  for key in pairs(rule.params) do p[key] = o[key] end
  local ok, res = pcall(rule.defaults, p)
  if not ok then error(res, 2) end
  p = res
  local dt = o.dtype or "float32"
  local g = o.generator or nm.generator(o.seed or 1)
  local self = setmetatable({
    n = n, m = m, k = k, method = method, dtype = dt, t = 0,
    W1 = nm.zeros(k, n, dt):normal(g, 0, o.w1_std or 1 / math.sqrt(n)),
    W2T = nm.zeros(k, m, dt):normal(g, 0, o.w2_std or 1 / math.sqrt(k)),
    Q = nm.eye(k, k, dt):mul(o.q_scale or 1),
    zbar = nm.zeros(k, dt),
  }, Net)
  if p.decoupled then self.R = self.Q:clone() end
  for key, v in pairs(p) do self[key] = v end
  return self
end

-- The rule parameters of the network, as rules/bmvr.lua takes them.
function Net:params()
  local p = {}
  for key in pairs(rule.params) do p[key] = self[key] end
  return p
end

-- net:train(X, Y [, o]): one pass over rows o.order (1-D tensor of row
-- numbers, default 1..T), o.count of them; o.fused = false runs the Lua
-- form of the rules instead of the C loop. Raises when the weights
-- diverge. Returns the number of samples seen so far.
function Net:train(X, Y, o)
  o = o or {}
  if o.fused == false then
    self.scratch = self.scratch or rule.scratch(self)
    rule.epoch(self, X, Y, self:params(), self.scratch,
               {order = o.order, count = o.count, method = self.method})
    return self.t
  end
  local fn = self.method == "backprop" and nm.bmvr.backprop or nm.bmvr.train
  local t, finite = fn(self, X, Y, nil, o.order, o.count)
  self.t = t
  if not finite then
    error(format("bmvr: weights became non-finite after %d samples (rates too large?)", t), 2)
  end
  return t
end

-- Mean ||y - y_hat||^2 over the rows (objective (1)) and the fraction of
-- rows where argmax y_hat = argmax y.
function Net:evaluate(X, Y)
  return nm.bmvr.evaluate(self, X, Y)
end

function Net:objective(X, Y)
  return (nm.bmvr.evaluate(self, X, Y))
end

-- y_hat [T x m] and z [T x k] (allocated), zbar frozen.
function Net:predict(X)
  return nm.bmvr.forward(self, X)
end

-- Eigenvalues of the hidden covariance (1/T) sum z z^T, descending, as a
-- Lua array: the gain-control constraint asks for all of them <= 1.
function Net:constraint(X)
  local w = nm.symeig(nm.bmvr.hidden_cov(self, X)):totable()
  local out = {}
  for i = #w, 1, -1 do out[#out + 1] = w[i] end
  return out
end

-- Mean per-sample cosine between the plateau signal g.*(a - Q n) and the
-- backpropagated error W2T (y - y_hat) .* 1(u > 0), and the cosine of the
-- W1 updates they sum to over the rows.
function Net:alignment(X, Y)
  return nm.bmvr.alignment(self, X, Y)
end

-- ||Q^T - R||_F (decoupled networks; App. D predicts decay (1 - eta_q)^t).
function Net:qr_gap()
  if not self.R then error("bmvr: qr_gap needs a decoupled network (option decoupled = true)", 2) end
  local d = self.Q:t():contiguous():sub(self.R)
  return d:norm()
end

-- A plain table for checkpoints, and back.
function Net:state()
  local st = {t = self.t, W1 = self.W1, W2T = self.W2T, Q = self.Q, zbar = self.zbar}
  if self.R then st.R = self.R end
  return st
end

function Net:set_state(st)
  for _, key in ipairs{"W1", "W2T", "Q", "zbar", "R"} do
    if st[key] ~= nil then self[key]:copy(st[key]) end
  end
  self.t = st.t
  return self
end

function Net:__tostring()
  return format("bmvr.%s{n = %d, m = %d, k = %d, relu = %s, t = %d}", self.method, self.n,
                self.m, self.k, tostring(self.relu), self.t)
end

-- bmvr.rrr(X, Y, k): the exact rank-k regression optimum (nm.rrr).
bmvr.rrr = function(X, Y, k, rtol) return nm.rrr(X, Y, k, rtol) end

return bmvr
