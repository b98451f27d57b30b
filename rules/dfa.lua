-- rules/dfa.lua: direct feedback alignment. Every hidden layer receives
-- the output error directly through its own fixed random matrix D_l
-- (n_l x n_L, drawn once, never learned).
--
--   e_l = (D_l e_L) .* f'_l(a_l)
--   dW_l = -eta <e_l y_{l-1}^T>,  db_l = -eta <e_l>
return {
  name = "dfa",
  equation = "dW = -eta <e y_pre^T>, db = -eta <e>, e_l = (D_l e_L) .* f'(a_l), D_l fixed random",
  paper = "Nokland 2016, Direct feedback alignment provides learning in deep neural " ..
          "networks, NeurIPS 29",
  feedback = "dfa",
  bias = true,
  needs = {"pre", "error"},
  params = {
    eta = {default = 0.1, doc = "learning rate (per batch mean)"},
  },
  update = function(q, p)
    local step = -p.eta / q.batch
    q.dW:addmm(step, q.error_t, q.pre, 0)
    if q.db then q.db:addmv(step, q.error_t, q.ones, 0) end
  end,
  fused = function(q, p)
    q.W:plastic_outer(-p.eta / q.batch, q.error, q.pre, nil, q.mask, q.b)
  end,
}
