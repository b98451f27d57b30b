-- rules/tanh_error.lua: a three-factor rule with a saturating postsynaptic
-- error, meta-learned on the motif network (nm.models.motif_net). Written
-- for the rule compiler: it has no hand-written C kernel, so it runs at C
-- speed, with its exact meta-gradient, only through nm.compile.
--
--   W_l += -theta_1 e_l y_{l-1}^T                         pseudo-gradient
--          -theta_2 (tanh(gamma e_l) .* y_l) y_{l-1}^T    pre x post x saturated error
--          -theta_3 (e_l .* e_l) 1^T .* W_l               error-driven decay
--
-- y_l, e_l: the network's activations and errors along its feedback
-- pathway (as for the motif rule); the same theta for every layer.

local nm = require "neuromic"
local ag = require "nm.autograd"

local GAMMA = 5

return {
  kind = "meta",
  name = "tanh_error",
  model = "motif_net",
  paper = "neuromic 2026: written for the rule compiler (doc/compiler.md); no paper",
  equation = "W_l += -theta_1 e_l y_{l-1}^T - theta_2 (tanh(" .. GAMMA .. " e_l) .* y_l) y_{l-1}^T " ..
             "- theta_3 (e_l .* e_l) 1^T .* W_l",
  params = {},
  coefficients = {
    theta = {size = 3, init = {[0] = 1e-3}, doc = "the three terms' weights",
             names = {[0] = "-e_l y_{l-1}^T", "-(tanh(g e_l) .* y_l) y_{l-1}^T",
                      "-(e_l .* e_l) 1^T .* W_l"}},
  },
  step = function(net, W, theta, x, label, B)
    local y, e = net:signals(W, B, x, label)
    local t1, t2, t3 = ag.index(theta, 1), ag.index(theta, 2), ag.index(theta, 3)
    local out = {}
    for l = 1, net.layers do
      local pg = ag.outer(e[l], y[l - 1])
      local sat = ag.outer(ag.mul(ag.tanh(ag.scale(e[l], GAMMA)), y[l]), y[l - 1])
      local pre = ag.value(y[l - 1])
      local ones = nm.ones(pre:size(1), pre:dtype())
      local decay = ag.mul(ag.outer(ag.mul(e[l], e[l]), ones), W[l])
      out[l] = ag.sub(W[l], ag.add(ag.add(ag.scale(pg, t1), ag.scale(sat, t2)), ag.scale(decay, t3)))
    end
    return out
  end,
}
