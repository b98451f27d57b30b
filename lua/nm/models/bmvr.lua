-- nm/models/bmvr.lua: a BMVR network (Golkar et al. 2020) as one object:
-- initialisation, the hidden layer, training passes driven by a circuit
-- rule of model "bmvr" (rules/bmvr.lua, or its backprop baseline
-- rules/bmvr_backprop.lua, or a user's), prediction, the linear objective
-- and the measures (kernels in csrc/models/nm_bmvr.c).
--
--   local bmvr = require "nm.models.bmvr"
--   local net = bmvr.new{n = 784, m = 10, k = 64, relu = true,
--                        eta_w1 = 1e-3, eta_w2 = 2e-4, eta_q = 1e-3, seed = 1}
--   net:train(X, Y, {order = g:permutation(X:size(1))})   -- one pass, in C
--   local mse, acc = net:evaluate(Xtest, Ytest)
--
-- Options of bmvr.new (defaults in brackets):
--   n, m, k          input, label and hidden sizes (required)
--   rule             the plasticity: a circuit rule of model "bmvr" (a name
--                    from rules/, a path, a definition or an nm.rule
--                    instance) driving the pathways W1, W2T, Q, R it lists
--                    ["bmvr"]; method = "backprop" is rule "bmvr_backprop"
--   eta_w1, ...      the rule's parameters by name [its defaults]
--   relu             mean-subtracted ReLU hidden layer (Eq. 9, 24) [false]
--   mean             ReLU: z = relu(u) - zbar ("after", Eq. 24) or relu(u -
--                    zbar) with zbar the mean of u ("before") ["after"]
--   decoupled        n = R z with R learnt by its own rule (App. D) [false]
--   mean_eps         rate of the running mean zbar [1e-4]
--   track_mean       update zbar while training [true]
--   dtype            "float32" or "float64" ["float32"]
--   w1_std, w2_std   std of the normal entries of W1 and W2T [1/sqrt(n), 1/sqrt(k)]
--   q_scale          Q = R = q_scale I [1]
--   generator, seed  initialisation randomness [nm.generator(seed or 1)]
-- The paper does not give its initialisation; the defaults keep z = W1 x
-- and y_hat = W2T^T z of order one for inputs of unit norm per pixel
-- scale. (The Bio-RRR demo uses W1 std 0.01, W2 std 0.1, Q = I/3.)
--
-- The rule's state s: the weights W1, W2T, Q, R (decoupled) and zbar
-- (ReLU), t (samples seen), the sample x, y, the hidden layer u, z and
-- its derivative d = relu'(u) (computed here before each step), relu,
-- scratch vectors of size k (a, n, qn, c, g, h, dz) and m (yhat, e), the
-- views Qt = Q^T and W2 = W2T^T, and opts (the options table of the C
-- kernels). A rule's kernel(s, p, X, Y [, order, count]) runs the pass in
-- C; without one (or with train{fused = false}) the pass runs step.
local nm = require "neuromic"
local rule = require "nm.rule"

local bmvr = {}

local Net = {}
Net.__index = Net

local format = string.format

local MODEL = {relu = false, mean = "after", decoupled = false, mean_eps = 1e-4,
               track_mean = true}

local function need_int(o, key)
  local v = o[key]
  if math.type(v) ~= "integer" or v < 1 then
    error(format("bmvr.new: option %s must be a positive integer, got %s", key, tostring(v)), 3)
  end
  return v
end

-- The circuit rule instance of option o.rule (or o.method), with the
-- parameters it defines taken from o.
local function make_rule(o)
  local r = o.rule
  if r == nil then
    if o.method ~= nil and o.method ~= "bmvr" and o.method ~= "backprop" then
      error("bmvr.new: method must be \"bmvr\" or \"backprop\", got " .. tostring(o.method), 3)
    end
    r = o.method == "backprop" and "bmvr_backprop" or "bmvr"
  end
  if rule.is_rule(r) then return r end
  local ok, def = pcall(rule.definition, r)
  if ok then ok, def = pcall(rule.require_kind, def, "circuit", "bmvr") end
  if not ok then error("bmvr.new: " .. tostring(def), 3) end
  local p = {}
  for key in pairs(def.params) do p[key] = o[key] end
  local okp, inst = pcall(rule.new, def, p)
  if not okp then error("bmvr.new: " .. tostring(inst), 3) end
  return inst
end

-- The rule's state (see the header): weights shared with the net.
local function make_state(self)
  local k, m, dt = self.k, self.m, self.dtype
  local v = function(size) return nm.zeros(size, dt) end
  return {
    W1 = self.W1, W2T = self.W2T, Q = self.Q, R = self.R, zbar = self.zbar, t = 0,
    relu = self.relu, u = v(k), h = v(k), z = v(k), d = v(k), dz = v(k), a = v(k), n = v(k),
    qn = v(k), c = v(k), g = v(k), yhat = v(m), e = v(m), Qt = self.Q:t(), W2 = self.W2T:t(),
    opts = {relu = self.relu, mean = self.mean, decoupled = self.decoupled,
            mean_eps = self.mean_eps, track_mean = self.track_mean, gate = self.rule.p.gate},
  }
end

-- bmvr.new(o) -> network. See the header for the options.
function bmvr.new(o)
  if type(o) ~= "table" then error("bmvr.new: options table expected", 2) end
  local n, m, k = need_int(o, "n"), need_int(o, "m"), need_int(o, "k")
  local r = make_rule(o)
  local dt = o.dtype or "float32"
  local g = o.generator or nm.generator(o.seed or 1)
  local self = setmetatable({
    n = n, m = m, k = k, rule = r, dtype = dt, t = 0,
    method = r.name == "bmvr_backprop" and "backprop" or r.name,
    W1 = nm.zeros(k, n, dt):normal(g, 0, o.w1_std or 1 / math.sqrt(n)),
    W2T = nm.zeros(k, m, dt):normal(g, 0, o.w2_std or 1 / math.sqrt(k)),
    Q = nm.eye(k, k, dt):mul(o.q_scale or 1),
    zbar = nm.zeros(k, dt),
  }, Net)
  for key, def in pairs(MODEL) do
    local v = o[key]
    if v == nil then v = def end
    if type(v) ~= type(def) then
      error(format("bmvr.new: option %s must be a %s, got %s", key, type(def), type(v)), 2)
    end
    self[key] = v
  end
  if self.mean ~= "after" and self.mean ~= "before" then
    error("bmvr.new: option mean must be \"after\" or \"before\", got " .. tostring(self.mean), 2)
  end
  if self.decoupled then self.R = self.Q:clone() end
  self.s = make_state(self)
  if r.def.init then r.def.init(self.s, r.p) end
  return self
end

-- The rule's parameters (a copy).
function Net:params()
  local p = {}
  for key, v in pairs(self.rule.p) do p[key] = v end
  return p
end

-- The hidden layer for s.x: u = W1 x and z (ReLU: zbar moved first, then
-- z = relu(u) - zbar, or relu(u - zbar) when the mean comes first), the
-- ReLU's derivative relu'(u) in s.d.
local function hidden(self, s)
  s.u:mv(s.W1, s.x)                               -- u = W1 x
  if not self.relu then
    s.z:copy(s.u)
    return
  end
  if self.mean == "before" then
    if self.track_mean then
      s.dz:sub(s.u, s.zbar)
      s.zbar:axpy(self.mean_eps, s.dz)            -- zbar += eps (u - zbar)
    end
    s.dz:sub(s.u, s.zbar)
    s.z:relu(s.dz)                                -- z = relu(u - zbar)
    s.d:gt(s.z, 0)
    return
  end
  s.d:gt(s.u, 0)
  s.h:relu(s.u)                                   -- h = relu(u)
  if self.track_mean then
    s.dz:sub(s.h, s.zbar)
    s.zbar:axpy(self.mean_eps, s.dz)              -- zbar += eps (h - zbar)
  end
  s.z:sub(s.h, s.zbar)                            -- z = h - zbar
end

-- net:train(X, Y [, o]): one pass over rows o.order (1-D tensor of row
-- numbers, default 1..T), o.count of them: the rule's kernel when it has
-- one, else (or with o.fused = false) hidden layer and step sample by
-- sample. Raises when the kernel reports non-finite weights. Returns the
-- number of samples seen so far.
function Net:train(X, Y, o)
  o = o or {}
  local s, def, p = self.s, self.rule.def, self.rule.p
  s.t = self.t
  if def.kernel and o.fused ~= false then
    local t, finite = def.kernel(s, p, X, Y, o.order, o.count)
    self.t, s.t = t, t
    if not finite then
      error(format("bmvr: weights became non-finite after %d samples (rule '%s', rates too " ..
                   "large?)", t, self.rule.name), 2)
    end
    return t
  end
  local count = o.count or (o.order and o.order:size(1)) or X:size(1)
  for i = 1, count do
    local r = o.order and math.tointeger(o.order:get(i)) or i
    s.x, s.y = X:row(r), Y:row(r)
    hidden(self, s)
    def.step(s, p)
    s.t = s.t + 1
  end
  self.t = s.t
  return self.t
end

-- Mean ||y - y_hat||^2 over the rows (objective (1)) and the fraction of
-- rows where argmax y_hat = argmax y.
function Net:evaluate(X, Y)
  return nm.kernels.bmvr.evaluate(self.s, X, Y, self.s.opts)
end

function Net:objective(X, Y)
  return (nm.kernels.bmvr.evaluate(self.s, X, Y, self.s.opts))
end

-- y_hat [T x m] and z [T x k] (allocated), zbar frozen.
function Net:predict(X)
  return nm.kernels.bmvr.forward(self.s, X, self.s.opts)
end

-- Eigenvalues of the hidden covariance (1/T) sum z z^T, descending, as a
-- Lua array: the gain-control constraint asks for all of them <= 1.
function Net:constraint(X)
  local w = nm.symeig(nm.kernels.bmvr.hidden_cov(self.s, X, self.s.opts)):totable()
  local out = {}
  for i = #w, 1, -1 do out[#out + 1] = w[i] end
  return out
end

-- Mean per-sample cosine between the plateau signal g.*(a - Q n) and the
-- backpropagated error W2T (y - y_hat) .* 1(u > 0), and the cosine of the
-- W1 updates they sum to over the rows.
function Net:alignment(X, Y)
  return nm.kernels.bmvr.alignment(self.s, X, Y, self.s.opts)
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
  return format("bmvr.%s{n = %d, m = %d, k = %d, relu = %s, t = %d}", self.rule.name, self.n,
                self.m, self.k, tostring(self.relu), self.t)
end

return bmvr
