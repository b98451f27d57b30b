-- nm/models/bmvr.lua: a BMVR network (Golkar et al. 2020) as one object:
-- initialisation, the hidden layer, training passes driven by a circuit
-- rule of model "bmvr" for each plastic pathway (W1, W2T, Q, R; by
-- default rules/bmvr.lua, or its backprop baseline rules/bmvr_backprop.lua,
-- or a user's), prediction, the linear objective and the measures
-- (kernels in csrc/models/nm_bmvr.c).
--
--   local bmvr = require "nm.models.bmvr"
--   local net = bmvr.new{n = 784, m = 10, k = 64, relu = true,
--                        eta_w1 = 1e-3, eta_w2 = 2e-4, eta_q = 1e-3, seed = 1}
--   net:train(X, Y, {order = g:permutation(X:size(1))})   -- one pass, in C
--   local mse, acc = net:evaluate(Xtest, Ytest)
--   bmvr.new{..., rules = {W1 = "./my_rule.lua"}}         -- W1 by a user's rule
--
-- Options of bmvr.new (defaults in brackets):
--   n, m, k          input, label and hidden sizes (required)
--   rules            the plasticity: a circuit rule of model "bmvr" per
--                    plastic pathway, {W1 =, W2T =, Q =, R =}, each a name
--                    from rules/, a path, a definition or an nm.rule
--                    instance, or false (the pathway does not learn); a
--                    pathway left out keeps rules/bmvr.lua. Or one rule for
--                    every pathway it drives (the others do not learn):
--                    rules = "bmvr_backprop". ["bmvr": W1, W2T, Q, and R
--                    when decoupled]
--   eta_w1, eta_w2, eta_q   the rates of W1, W2T, and Q and R: the model
--                    sets each pathway's parameter eta [0.013, 0.013,
--                    0.005, the paper's Fashion-MNIST rates]; t0, gate and
--                    any other parameter by name go to every rule that
--                    declares it (an instance keeps its own)
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
-- One step, per sample: the model computes the network's quantities,
-- then each plastic pathway's rule changes its weight, in the order W1,
-- W2T, Q, R (every rule reads the quantities of the same weights). The
-- state s a rule's step(s, p) gets for its pathway:
--   s.W the pathway's weight, s.pathway its name, s.pre and s.post the
--     activities on its two sides: W1 (k x n) x and v, W2T (k x m) y and
--     z, Q (k x k) n and z, R (k x k) z and n;
--   s.x [n], s.y [m] the sample; s.u, s.z [k] the hidden layer (u = W1 x;
--     ReLU: z = relu(u) - zbar, or relu(u - zbar)), s.d = relu'(u) (or 1(z >
--     0) when the mean comes first), s.relu;
--   s.a = W2T y the apical input, s.n = Q^T z (R z decoupled) the
--     interneurons, s.qn = Q n, s.v = a - Q n the apical potential (the
--     plateau that teaches W1); s.yhat = W2T^T z, s.e = y - yhat the
--     output error;
--   s.W1, s.W2T, s.Q, s.R, s.zbar the weights (a rule changes only its
--     own), the views s.Qt = Q^T, s.W2 = W2T^T, s.t samples seen, scratch
--     vectors s.c, s.g [k] (its own; the rest is shared);
--   s.state a table of the rule's own (its init(s, p) fills it).
-- A rule's kernel is the C pass over every pathway it drives: when the
-- plastic pathways' rules all name the same kernel, it runs a pass in one
-- C call (the paper's: nm.kernels.bmvr.train), and may decline (return
-- nil) for a network it does not cover; otherwise, or with train{fused =
-- false}, the pass runs the steps above in Lua. The same numbers either
-- way (spec/bmvr_spec.lua).
local nm = require "neuromic"
local rule = require "nm.rule"

local bmvr = {}

local Net = {}
Net.__index = Net

local format, concat = string.format, table.concat

local MODEL = {relu = false, mean = "after", decoupled = false, mean_eps = 1e-4,
               track_mean = true}

-- The plastic pathways in the order their rules run, and the option that
-- sets each one's rate (with its default: the paper's Fashion-MNIST rates).
bmvr.pathways = {"W1", "W2T", "Q", "R"}
local RATE = {W1 = "eta_w1", W2T = "eta_w2", Q = "eta_q", R = "eta_q"}
local RATE_DEFAULT = {eta_w1 = 0.013, eta_w2 = 0.013, eta_q = 0.005}
bmvr.default_rule = "bmvr"

local function need_int(o, key)
  local v = o[key]
  if math.type(v) ~= "integer" or v < 1 then
    error(format("bmvr.new: option %s must be a positive integer, got %s", key, tostring(v)), 3)
  end
  return v
end

-- bmvr.circuit_rule(pathway, spec [, o]) -> the rule instance of one
-- pathway from spec (a name, path, definition or instance), its parameters
-- from the options o (eta from the pathway's rate). Errors name the rule
-- and what does not fit.
function bmvr.circuit_rule(pathway, spec, o)
  o = o or {}
  if not RATE[pathway] then
    error(format("bmvr.new: no pathway '%s' (W1, W2T, Q, R)", tostring(pathway)), 2)
  end
  local given = {}
  if rule.is_rule(spec) then
    for key, v in pairs(spec.p) do given[key] = v end
    spec = spec.def
  end
  local ok, def = pcall(rule.definition, spec)
  if ok then ok, def = pcall(rule.require_kind, def, "circuit", "bmvr") end
  if not ok then error("bmvr.new: " .. tostring(def), 2) end
  local drives = false
  for _, name in ipairs(def.pathways or {def.pathway}) do drives = drives or name == pathway end
  if not drives then
    error(format("bmvr.new: rule '%s' drives %s, not pathway %s", def.name,
                 concat(def.pathways or {def.pathway}, ", "), pathway), 2)
  end
  if not def.params.eta then
    error(format("bmvr.new: rule '%s' must declare the parameter eta (the rate the model sets)",
                 def.name), 2)
  end
  local p = {}
  for key in pairs(def.params) do
    if given[key] ~= nil then p[key] = given[key] else p[key] = o[key] end
  end
  if given.eta == nil then p.eta = o[RATE[pathway]] or RATE_DEFAULT[RATE[pathway]] end
  local okp, inst = pcall(rule.new, def, p)
  if not okp then error("bmvr.new: " .. tostring(inst), 2) end
  return inst
end

-- The rule instances by pathway (absent: the pathway does not learn) of
-- option o.rules (see the header).
local function make_rules(o, decoupled)
  local spec = o.rules
  if spec == nil then spec = bmvr.default_rule end
  local per = {}
  if type(spec) == "table" and not rule.is_rule(spec) and spec.kind == nil then
    for key in pairs(spec) do
      if not RATE[key] then
        error(format("bmvr.new: no pathway '%s' (W1, W2T, Q, R)", tostring(key)), 3)
      end
    end
    for _, pw in ipairs(bmvr.pathways) do
      local r = spec[pw]
      if r == nil then r = bmvr.default_rule end
      if r ~= false then per[pw] = r end
    end
  else                                 -- one rule for every pathway it drives
    local def = rule.is_rule(spec) and spec.def or nil
    if not def then
      local ok, d = pcall(rule.definition, spec)
      if ok then ok, d = pcall(rule.require_kind, d, "circuit", "bmvr") end
      if not ok then error("bmvr.new: " .. tostring(d), 3) end
      def = d
    end
    for _, pw in ipairs(def.pathways or {def.pathway}) do per[pw] = spec end
  end
  if not decoupled then per.R = nil end    -- R exists only in decoupled networks
  local out = {}
  for _, pw in ipairs(bmvr.pathways) do
    if per[pw] ~= nil then out[pw] = bmvr.circuit_rule(pw, per[pw], o) end
  end
  return out
end

-- The network's quantities (see the header), shared by the pathways'
-- states; their pre and post by pathway.
local PRE_POST = {W1 = {"x", "v"}, W2T = {"y", "z"}, Q = {"n", "z"}, R = {"z", "n"}}

-- bmvr.make_state(self [, vec, rule_state]) -> q, states: the quantities
-- of self's weights and the pathways' states; vec(size) makes each vector
-- (default zeros of the network's dtype), rule_state(pw) each rule's own
-- state (default: a new table its init fills). nm.unroll passes traced ones.
function bmvr.make_state(self, vec, rule_state)
  local k, m, dt = self.k, self.m, self.dtype
  local v = vec or function(size) return nm.zeros(size, dt) end
  local q = {
    W1 = self.W1, W2T = self.W2T, Q = self.Q, R = self.R, zbar = self.zbar, t = 0,
    relu = self.relu, u = v(k), h = v(k), z = v(k), d = v(k), dz = v(k), a = v(k), n = v(k),
    qn = v(k), v = v(k), yhat = v(m), e = v(m), Qt = self.Q:t(), W2 = self.W2T:t(),
    opts = {relu = self.relu, mean = self.mean, decoupled = self.decoupled,
            mean_eps = self.mean_eps, track_mean = self.track_mean,
            gate = self.rules.W1 and self.rules.W1.p.gate},
  }
  local states = {}
  for pw, inst in pairs(self.rules) do
    local s = setmetatable({W = self[pw], pathway = pw, c = v(k), g = v(k),
                            state = rule_state and rule_state(pw) or {},
                            post = q[PRE_POST[pw][2]]}, {__index = q})
    if not rule_state and inst.def.init then inst.def.init(s, inst.p) end
    states[pw] = s
  end
  return q, states
end

-- bmvr.new(o) -> network. See the header for the options.
function bmvr.new(o)
  if type(o) ~= "table" then error("bmvr.new: options table expected", 2) end
  local n, m, k = need_int(o, "n"), need_int(o, "m"), need_int(o, "k")
  local dt = o.dtype or "float32"
  local g = o.generator or nm.generator(o.seed or 1)
  local self = setmetatable({
    n = n, m = m, k = k, dtype = dt, t = 0,
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
  self.rules = make_rules(o, self.decoupled)
  self.s, self.states = bmvr.make_state(self)
  return self
end

-- The rules' names by pathway ("-" for a pathway that does not learn),
-- as "W1=bmvr W2T=bmvr Q=bmvr".
function Net:rule_names()
  local parts = {}
  for _, pw in ipairs(bmvr.pathways) do
    if self.rules[pw] then parts[#parts + 1] = pw .. "=" .. self.rules[pw].name end
  end
  return concat(parts, " ")
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

-- bmvr.quantities(self, q): the network's quantities of the sample q.x,
-- q.y (see the header).
function bmvr.quantities(self, q)
  hidden(self, q)
  q.a:mv(q.W2T, q.y)                              -- a = W2T y
  if q.R then q.n:mv(q.R, q.z) else q.n:mv(q.Qt, q.z) end   -- n = R z or Q^T z
  q.qn:mv(q.Q, q.n)
  q.v:sub(q.a, q.qn)                              -- v = a - Q n
  q.yhat:mv(q.W2, q.z)                            -- y_hat = W2T^T z
  q.e:sub(q.y, q.yhat)                            -- e = y - y_hat
end

-- The kernel every plastic pathway's rule names (and uses: an instance
-- with use_fused = false opts out), or nil.
local function common_kernel(self)
  local k
  for _, inst in pairs(self.rules) do
    local kk = inst.use_fused ~= false and inst.def.kernel or nil
    if kk == nil or (k ~= nil and kk ~= k) then return nil end
    k = kk
  end
  return k
end

-- net:train(X, Y [, o]): one pass over rows o.order (1-D tensor of row
-- numbers, default 1..T), o.count of them: the rules' common kernel when
-- they have one that covers the network, else (or with o.fused = false)
-- the quantities and the pathways' steps sample by sample. Raises when
-- the kernel reports non-finite weights. Returns the number of samples
-- seen so far.
function Net:train(X, Y, o)
  o = o or {}
  local q, states = self.s, self.states
  q.t = self.t
  local kernel = o.fused ~= false and common_kernel(self)
  if kernel then
    local t, finite = kernel(self, X, Y, o.order, o.count)
    if t then
      self.t, q.t = t, t
      if not finite then
        error(format("bmvr: weights became non-finite after %d samples (rules %s; rates too " ..
                     "large?)", t, self:rule_names()), 2)
      end
      return t
    end
  end
  local count = o.count or (o.order and o.order:size(1)) or X:size(1)
  for i = 1, count do
    local r = o.order and math.tointeger(o.order:get(i)) or i
    q.x, q.y = X:row(r), Y:row(r)
    bmvr.sample_step(self, q, states)
  end
  self.t = q.t
  return self.t
end

-- bmvr.sample_step(self, q, states [, P]): one sample q.x, q.y: the
-- quantities, then each plastic pathway's rule step (parameters P[pw], by
-- default the instances'), t advanced. Net:train's Lua pass, and what
-- nm.unroll traces.
function bmvr.sample_step(self, q, states, P)
  bmvr.quantities(self, q)
  for _, pw in ipairs(bmvr.pathways) do
    local s = states[pw]
    if s then
      s.pre = q[PRE_POST[pw][1]]
      self.rules[pw].def.step(s, P and P[pw] or self.rules[pw].p)
    end
  end
  q.t = q.t + 1
end

-- The rules' instances when exactly the pathways of `list` learn, all by
-- rules naming `kernel`, with one t0; else nil.
local function fused_rules(self, kernel, list)
  local r, count = self.rules, 0
  for _ in pairs(r) do count = count + 1 end
  if count ~= #list then return nil end
  for _, pw in ipairs(list) do
    if not r[pw] or r[pw].def.kernel ~= kernel or r[pw].p.t0 ~= r.W1.p.t0 then return nil end
  end
  return r
end

-- The paper's rules as one C pass (nm.kernels.bmvr.train): the kernel of
-- rules/bmvr.lua, for W1, W2T, Q and (decoupled) R with R's rate Q's.
function bmvr.fused(self, X, Y, order, count)
  local r = fused_rules(self, bmvr.fused, self.decoupled and bmvr.pathways or {"W1", "W2T", "Q"})
  if not r or (r.R and r.R.p.eta ~= r.Q.p.eta) then return nil end
  local o = self.s.opts
  o.eta_w1, o.eta_w2, o.eta_q, o.t0 = r.W1.p.eta, r.W2T.p.eta, r.Q.p.eta, r.W1.p.t0
  o.gate, o.t = r.W1.p.gate, self.t
  return nm.kernels.bmvr.train(self.s, X, Y, o, order, count)
end

-- Backprop as one C pass (nm.kernels.bmvr.backprop): the kernel of
-- rules/bmvr_backprop.lua, for W1 and W2T (Q and R fixed).
function bmvr.fused_backprop(self, X, Y, order, count)
  local r = fused_rules(self, bmvr.fused_backprop, {"W1", "W2T"})
  if not r then return nil end
  local o = self.s.opts
  o.eta_w1, o.eta_w2, o.t0, o.t = r.W1.p.eta, r.W2T.p.eta, r.W1.p.t0, self.t
  return nm.kernels.bmvr.backprop(self.s, X, Y, o, order, count)
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
  return format("bmvr{%s, n = %d, m = %d, k = %d, relu = %s, t = %d}", self:rule_names(),
                self.n, self.m, self.k, tostring(self.relu), self.t)
end

return bmvr
