-- rules/backprop.lua: the delta rule over the explicit backward pass of
-- error backpropagation. Defines the pathway "bp": errors travel back
-- through the transposed forward weights.
--
--   e_L = dLoss/da_L,  e_l = (W_{l+1}^T e_{l+1}) .* f'_l(a_l)
--   dW_l = -eta <e_l y_{l-1}^T>,  db_l = -eta <e_l>      (<.> = batch mean)

local nm = require "neuromic"

return {
  kind = "connection",
  name = "backprop",
  equation = "dW = -eta <e y_pre^T>, db = -eta <e>, e_l = (W_{l+1}^T e_{l+1}) .* f'(a_l)",
  paper = "Rumelhart, Hinton & Williams 1986, Learning representations by " ..
          "back-propagating errors, Nature 323:533-536",
  pathway = {
    name = "bp",
    doc = "W_{l+1}^T: the forward weights, transposed",
    source = "next",
    matrix = function(W) return W end,
  },
  bias = true,
  needs = {"pre", "error"},
  params = {
    eta = {default = 0.1, doc = "learning rate (per batch mean)"},
  },
  update = function(q, p)
    local step = -p.eta / q.batch
    q.dW:addmm(step, q.error_t, q.pre, 0)          -- dW = -eta/B E^T Y_pre
    if q.db then q.db:addmv(step, q.error_t, q.ones, 0) end  -- db = -eta/B E^T 1
  end,
  fused = function(q, p)
    nm.kernels.plastic_outer(q.W, -p.eta / q.batch, q.error, q.pre, nil, q.mask, q.b)
  end,
}
