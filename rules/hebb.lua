-- rules/hebb.lua: plain Hebbian learning, the change of a weight is the
-- product of pre- and postsynaptic activity (unbounded: pair it with a
-- normalisation or decay, or use Oja's rule).
--
--   dW = eta <y x^T>        (y = post, x = pre, <.> = batch mean)

local nm = require "neuromic"

return {
  kind = "connection",
  name = "hebb",
  equation = "dW = eta <post pre^T>",
  paper = "Hebb 1949, The Organization of Behavior, Wiley",
  needs = {"pre", "post"},
  params = {
    eta = {default = 0.01, doc = "learning rate"},
  },
  update = function(q, p)
    q.dW:addmm(p.eta / q.batch, q.post_t, q.pre, 0)   -- dW = eta/B Y^T X
  end,
  fused = function(q, p)
    nm.kernels.plastic_outer(q.W, p.eta / q.batch, q.post, q.pre, nil, q.mask)
  end,
}
