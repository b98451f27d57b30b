-- rules/oja.lua: Oja's subspace rule. With y = W x, the rows of W
-- converge to an orthonormal basis of the principal subspace of the
-- input (the span of the top eigenvectors of its covariance).
--
--   dW = eta <y x^T - y y^T W>      (y = post, x = pre, <.> = batch mean)
local nm = require "neuromic"

return {
  kind = "connection",
  name = "oja",
  equation = "dW = eta <y x^T - y y^T W>",
  paper = "Oja 1989, Neural networks, principal components, and subspaces, " ..
          "Int. J. Neural Systems 1:61-68",
  needs = {"pre", "post"},
  params = {
    eta = {default = 0.01, doc = "learning rate"},
  },
  -- C = <y y^T> is scratch kept with the connection.
  init = function(conn)
    local m = conn.W:size(1)
    return {C = nm.zeros(m, m, conn.W:dtype())}
  end,
  update = function(q, p)
    local a = p.eta / q.batch
    q.state.C:addmm(1, q.post_t, q.post, 0)     -- C = Y^T Y
    q.dW:addmm(a, q.post_t, q.pre, 0)           -- dW = a Y^T X
    q.dW:addmm(-a, q.state.C, q.W, 1)           --    - a C W
  end,
  fused = function(q, p)
    nm.kernels.plastic_oja(q.W, p.eta / q.batch, q.post, q.pre, q.mask)
  end,
}
