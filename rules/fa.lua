-- rules/fa.lua: feedback alignment. The delta rule of backprop, but the
-- errors travel back through fixed random matrices B_{l+1} (the shape of
-- W_{l+1}, drawn once, never learned) instead of W_{l+1}.
--
--   e_l = (B_{l+1}^T e_{l+1}) .* f'_l(a_l)
--   dW_l = -eta <e_l y_{l-1}^T>,  db_l = -eta <e_l>
return {
  name = "fa",
  equation = "dW = -eta <e y_pre^T>, db = -eta <e>, e_l = (B_{l+1}^T e_{l+1}) .* f'(a_l), B fixed random",
  paper = "Lillicrap, Cownden, Tweed & Akerman 2016, Random synaptic feedback weights " ..
          "support error backpropagation for deep learning, Nat. Commun. 7:13276",
  feedback = "fa",
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
