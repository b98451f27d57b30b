-- rules/dfa.lua: direct feedback alignment. Every hidden layer receives
-- the output error directly through its own fixed random matrix D_l
-- (n_l x n_L, drawn once like a weight from the output layer to layer l,
-- never learned): the pathway "dfa".
--
--   e_l = (D_l e_L) .* f'_l(a_l)
--   dW_l = -eta <e_l y_{l-1}^T>,  db_l = -eta <e_l>
local nm = require "neuromic"
local delta = require("nm.rule").definition("backprop")

return {
  kind = "connection",
  name = "dfa",
  equation = "dW = -eta <e y_pre^T>, db = -eta <e>, e_l = (D_l e_L) .* f'(a_l), D_l fixed random",
  paper = "Nokland 2016, Direct feedback alignment provides learning in deep neural " ..
          "networks, NeurIPS 29",
  pathway = {
    name = "dfa",
    doc = "D_l: a fixed random n_l x n_L matrix from the output error to layer l",
    source = "output",
    -- The matrix is D_l^T [n_L x n_l]; D_l is drawn as a weight [n_l x n_L].
    init = function(rows, cols, dtype, draw)
      local Dt = nm.zeros(rows, cols, dtype)
      draw(Dt:t())
      return {Dt = Dt}
    end,
    matrix = function(_, st) return st.Dt end,
  },
  bias = true,
  needs = delta.needs,
  params = delta.params,
  update = delta.update,          -- the delta rule of rules/backprop.lua
  fused = delta.fused,
}
