-- rules/sign_symmetry.lua: sign-symmetric feedback. The delta rule of
-- backprop, with errors sent back through sign(W_{l+1}): feedback synapses
-- share only the sign of their forward partners, not the magnitude (the
-- pathway "sign_symmetry").
--
--   e_l = (sign(W_{l+1})^T e_{l+1}) .* f'_l(a_l)
--   dW_l = -eta <e_l y_{l-1}^T>,  db_l = -eta <e_l>
local nm = require "neuromic"
local delta = require("nm.rule").definition("backprop")

return {
  kind = "connection",
  name = "sign_symmetry",
  equation = "dW = -eta <e y_pre^T>, db = -eta <e>, e_l = (sign(W_{l+1})^T e_{l+1}) .* f'(a_l)",
  paper = "Liao, Leibo & Poggio 2016, How important is weight symmetry in " ..
          "backpropagation?, AAAI 30",
  pathway = {
    name = "sign_symmetry",
    doc = "sign(W_{l+1})^T: the signs of the forward weights, magnitudes 1",
    source = "next",
    init = function(rows, cols, dtype) return {S = nm.zeros(rows, cols, dtype)} end,
    matrix = function(W, st) return st.S:sign(W) end,
  },
  bias = true,
  needs = delta.needs,
  params = delta.params,
  update = delta.update,          -- the delta rule of rules/backprop.lua
  fused = delta.fused,
}
