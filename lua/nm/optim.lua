-- nm/optim.lua: optimisers, SGD (momentum, learning-rate decay
-- eta_0 / (1 + t / t_0)) and Adam (Kingma & Ba 2015). They work in place
-- on lists of tensors, allocate their state on the first step and nothing
-- after, and their state is a checkpoint tree (opt:state / load_state).
--
--   local optim = require "nm.optim"
--   local opt = optim.adam{lr = 1e-3}
--   opt:step(params, grads)      -- descent: p moves against grads
--   opt:apply(params, deltas)    -- ascent: p moves along deltas (the
--                                -- weight changes plasticity rules write)
--
-- params and grads/deltas are lists of tensors in a fixed order (the
-- i-th entry always the same parameter); an optional third list of
-- booleans skips the entries that are false (their state is untouched).
-- With d = -grad (step) or d = delta (apply), t the number of earlier
-- steps and lr_t = lr / (1 + t / t0) (no decay when t0 is nil):
--   sgd:  v = momentum v + d;   p += lr_t v          (v = d without momentum)
--   adam: m = b1 m + (1 - b1) d;  v = b2 v + (1 - b2) d^2;
--         p += lr_t (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + eps)
-- where k counts the steps of that parameter. Deltas from rules already
-- carry the rule's eta: keep sgd's lr = 1 (its default) to use it as is.

local optim = {}

local format, sqrt = string.format, math.sqrt

local function check_number(o, k, lo, default)
  local v = o[k]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < lo then
    error(format("optim: option '%s' must be a number >= %s", k, tostring(lo)), 3)
  end
  return v
end

local function lr_at(self)
  if self.t0 then return self.lr / (1 + self.t / self.t0) end
  return self.lr
end

local function check_lists(params, ds, what)
  if type(params) ~= "table" or type(ds) ~= "table" or #params ~= #ds then
    error(format("optim.%s: params and %s must be lists of the same length", what,
                 what == "step" and "grads" or "deltas"), 3)
  end
end

-- ---------------------------------------------------------------- SGD

local SGD = {}
SGD.__index = SGD

-- optim.sgd{lr = 1, momentum = 0, t0 = nil (no decay)}
function optim.sgd(o)
  o = o or {}
  local self = setmetatable({kind = "sgd", t = 0, v = {}}, SGD)
  self.lr = check_number(o, "lr", 0, 1)
  self.momentum = check_number(o, "momentum", 0, 0)
  if self.momentum >= 1 then error("optim.sgd: momentum must be below 1", 2) end
  if o.t0 ~= nil then self.t0 = check_number(o, "t0", 0, nil) end
  if self.t0 == 0 then error("optim.sgd: t0 must be positive", 2) end
  return self
end

local function sgd_update(self, params, ds, active, sign)
  local lr, mu = lr_at(self), self.momentum
  for i = 1, #params do
    if not active or active[i] ~= false then
      local p, d = params[i], ds[i]
      if mu > 0 then
        local v = self.v[i]
        if not v then v = d:clone():zero(); self.v[i] = v end
        v:scale(mu)
        v:axpy(sign, d)
        p:axpy(lr, v)
      else
        p:axpy(sign * lr, d)
      end
    end
  end
  self.t = self.t + 1
end

function SGD:step(params, grads, active)
  check_lists(params, grads, "step")
  sgd_update(self, params, grads, active, -1)
end

function SGD:apply(params, deltas, active)
  check_lists(params, deltas, "apply")
  sgd_update(self, params, deltas, active, 1)
end

-- The learning rate the next step uses.
function SGD:current_lr() return lr_at(self) end

function SGD:state()
  return {kind = "sgd", t = self.t, v = self.v, lr = self.lr, momentum = self.momentum,
          t0 = self.t0}
end

-- ---------------------------------------------------------------- Adam

local Adam = {}
Adam.__index = Adam

-- optim.adam{lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, t0 = nil,
--   fused = true (one C pass per tensor, p:adam_update; false: the Lua form)}
function optim.adam(o)
  o = o or {}
  local self = setmetatable({kind = "adam", t = 0, m = {}, v = {}, k = {}, tmp = {},
                             fused = o.fused ~= false}, Adam)
  self.lr = check_number(o, "lr", 0, 1e-3)
  self.beta1 = check_number(o, "beta1", 0, 0.9)
  self.beta2 = check_number(o, "beta2", 0, 0.999)
  self.eps = check_number(o, "eps", 0, 1e-8)
  if self.beta1 >= 1 or self.beta2 >= 1 then error("optim.adam: betas must be below 1", 2) end
  if o.t0 ~= nil then self.t0 = check_number(o, "t0", 0, nil) end
  if self.t0 == 0 then error("optim.adam: t0 must be positive", 2) end
  return self
end

local function adam_update(self, params, ds, active, sign)
  local lr, b1, b2, eps = lr_at(self), self.beta1, self.beta2, self.eps
  for i = 1, #params do
    if not active or active[i] ~= false then
      local p, d = params[i], ds[i]
      local m, v, tmp = self.m[i], self.v[i], self.tmp[i]
      if not m then
        m, v = d:clone():zero(), d:clone():zero()
        self.m[i], self.v[i], self.k[i] = m, v, 0
      end
      local k = self.k[i] + 1
      self.k[i] = k
      local bc1, bc2 = 1 - b1 ^ k, 1 - b2 ^ k
      if self.fused and p:is_contiguous() and d:is_contiguous() then
        p:adam_update(d, m, v, sign, b1, b2, eps, lr / bc1, 1 / sqrt(bc2))   -- one C pass
      else
        if not tmp then tmp = d:clone(); self.tmp[i] = tmp end
        m:scale(b1)
        m:axpy(sign * (1 - b1), d)
        tmp:mul(d, d)
        v:scale(b2)
        v:axpy(1 - b2, tmp)
        tmp:sqrt(v)
        tmp:scale(1 / sqrt(bc2))
        tmp:add(eps)
        tmp:div(m, tmp)                  -- m / (sqrt(v_hat) + eps)
        p:axpy(lr / bc1, tmp)
      end
    end
  end
  self.t = self.t + 1
end

function Adam:step(params, grads, active)
  check_lists(params, grads, "step")
  adam_update(self, params, grads, active, -1)
end

function Adam:apply(params, deltas, active)
  check_lists(params, deltas, "apply")
  adam_update(self, params, deltas, active, 1)
end

function Adam:current_lr() return lr_at(self) end

function Adam:state()
  return {kind = "adam", t = self.t, m = self.m, v = self.v, k = self.k, lr = self.lr,
          beta1 = self.beta1, beta2 = self.beta2, eps = self.eps, t0 = self.t0}
end

-- ---------------------------------------------------------------- state

-- Restores a state from opt:state() (through a checkpoint): the step
-- counts and moment tensors (copied into existing ones when present).
local function load_state(self, st)
  if type(st) ~= "table" or st.kind ~= self.kind then
    error(format("optim: state of a '%s' optimiser cannot load into '%s'",
                 tostring(type(st) == "table" and st.kind), self.kind), 3)
  end
  self.t = st.t
  for _, key in ipairs{"v", "m"} do
    if self[key] then
      for i, x in pairs(st[key] or {}) do
        if self[key][i] and self[key][i]:same_shape(x) then self[key][i]:copy(x)
        else self[key][i] = x:clone() end
      end
    end
  end
  if self.k then for i, k in pairs(st.k or {}) do self.k[i] = k end end
end

SGD.load_state = load_state
Adam.load_state = load_state

-- optim.new(name, opts): "sgd" | "momentum" (sgd with momentum 0.9 unless
-- set) | "adam".
function optim.new(name, o)
  o = o or {}
  if name == "sgd" then return optim.sgd(o) end
  if name == "momentum" then
    local c = {}
    for k, v in pairs(o) do c[k] = v end
    c.momentum = c.momentum or 0.9
    return optim.sgd(c)
  end
  if name == "adam" then return optim.adam(o) end
  error(format("optim.new: unknown optimiser '%s' (sgd, momentum, adam)", tostring(name)), 2)
end

return optim
