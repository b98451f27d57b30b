-- rules/three_factor.lua: the gated outer-product update, the common form
-- of modulated (three-factor) Hebbian rules and of gated error rules. The
-- third factor m is the connection's modulator q.mod: a number (a global
-- signal such as reward or a learning phase) or a tensor [B x n_post]
-- (per-neuron gates such as dendritic plateaus or interneuron signals).
--
--   dW = eta <(m .* f) x^T>,   f = post (default) or error,  x = pre
--
-- Use a negative eta with factor = "error" for error-correcting rules.
-- The gated factor's scratch, per quantities table (one per connection and
-- batch size), kept out of the rule state: a checkpoint copies the state,
-- and a copied transposed view would no longer be a view.

local nm = require "neuromic"
local rule = require "nm.rule"

local scratch = setmetatable({}, {__mode = "k"})

return {
  kind = "connection",
  name = "three_factor",
  equation = "dW = eta <(m .* f) pre^T>, f = post or error, m = modulator",
  paper = "Fremaux & Gerstner 2016, Neuromodulated spike-timing-dependent plasticity, " ..
          "and three-factor learning rules, Front. Neural Circuits 9:85",
  needs = {"pre"},
  params = {
    eta = {default = 0.01, doc = "learning rate"},
    factor = {default = "post", doc = "postsynaptic factor: 'post' or 'error'"},
  },
  check = function(p)
    if p.factor ~= "post" and p.factor ~= "error" then
      return false, "parameter 'factor' must be 'post' or 'error'"
    end
    return true
  end,
  update = function(q, p)
    local f, m = q[p.factor], q.mod
    if not rule.is_tensor(m) then
      q.dW:addmm(p.eta * (m or 1) / q.batch, q[p.factor .. "_t"], q.pre, 0)
      return
    end
    local s = scratch[q]
    if not s then s = {G = f:clone()}; s.Gt = s.G:t(); scratch[q] = s end
    s.G:mul(f, m)                                    -- gated factor m .* f
    q.dW:addmm(p.eta / q.batch, s.Gt, q.pre, 0)
  end,
  fused = function(q, p)
    local f, m = q[p.factor], q.mod
    if type(m) ~= "userdata" then
      nm.kernels.plastic_outer(q.W, p.eta * (m or 1) / q.batch, f, q.pre, nil, q.mask)
    else
      nm.kernels.plastic_outer(q.W, p.eta / q.batch, f, q.pre, m, q.mask)
    end
  end,
}
