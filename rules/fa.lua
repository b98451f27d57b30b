-- rules/fa.lua: feedback alignment. The delta rule of backprop, but the
-- errors travel back through fixed random matrices B_{l+1} (the shape of
-- W_{l+1}, drawn once like the weights, never learned) instead of W_{l+1}:
-- the pathway "fa".
--
--   e_l = (B_{l+1}^T e_{l+1}) .* f'_l(a_l)
--   dW_l = -eta <e_l y_{l-1}^T>,  db_l = -eta <e_l>
local nm = require "neuromic"
local delta = require("nm.rule").definition("backprop")

return {
  kind = "connection",
  name = "fa",
  equation = "dW = -eta <e y_pre^T>, db = -eta <e>, e_l = (B_{l+1}^T e_{l+1}) .* f'(a_l), B fixed random",
  paper = "Lillicrap, Cownden, Tweed & Akerman 2016, Random synaptic feedback weights " ..
          "support error backpropagation for deep learning, Nat. Commun. 7:13276",
  pathway = {
    name = "fa",
    doc = "B_{l+1}^T: a fixed random matrix the shape of W_{l+1}",
    source = "next",
    init = function(rows, cols, dtype, draw)
      local B = nm.zeros(rows, cols, dtype)
      draw(B)
      return {B = B}
    end,
    matrix = function(_, st) return st.B end,
  },
  bias = true,
  needs = delta.needs,
  params = delta.params,
  update = delta.update,          -- the delta rule of rules/backprop.lua
  fused = delta.fused,
}
