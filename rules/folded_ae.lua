-- rules/folded_ae.lua: the plasticity of the energy-based folded
-- autoencoder (Dold et al., poster). Both paths of an area learn by the
-- same dendritic-prediction rule (Urbanczik & Senn 2014): a dendrite's
-- weights move so that its prediction V r_pre matches the somatic
-- potential u_post, at the fixed point of the neuronal dynamics:
--
--   forward (basal) weights:     dW_i = eta_W (u_i - W_i r_{i-1}) r_{i-1}^T
--   backward (apical) weights:   dG_i = eta_G (u_i - G_i r_{i+1}) r_{i+1}^T
--
-- Both are gradient descent on the energy E (poster, section 3:
-- dW_i/dt = -eta_W dE/dW_i, dG_i/dt = -eta_G dE/dG_i, the lambda and
-- 1 - lambda factors absorbed into eta). nm.folded_ae instantiates this
-- rule once per connection, with eta = eta_W for the W path and
-- eta = eta_G for the G path.
--
-- Quantities (rows are samples; updates use batch means <.>):
--   q.error = u_post - V r_pre, the dendritic mismatch [B x n_post]
--             (e^W_i or e^G_i, computed by the model at the fixed point),
--   q.pre   = r_pre [B x n_pre]  (r_{i-1} for W_i, r_{i+1} for G_i),
--   q.W     = V (W_i or G_i), q.dW its change.
-- The fused form is one GEMM in C (W:plastic_outer); the Lua form writes
-- dW for an optimiser or a measure (q.defer).
return {
  kind = "connection",
  name = "folded_ae",
  equation = "dV = eta <(u_post - V r_pre) r_pre^T>  (V = W_i, r_pre = r_{i-1}; " ..
             "V = G_i, r_pre = r_{i+1})",
  paper = "Dold, Sacramento, Kungl, Senn & Petrovici, An energy-based model of folded " ..
          "autoencoders for unsupervised learning in cortical hierarchies (poster); " ..
          "Urbanczik & Senn 2014, Neuron 81:521-528",
  needs = {"pre", "error"},
  params = {
    eta = {default = 0.01, doc = "learning rate (eta_W or eta_G), per batch mean"},
  },
  check = function(p)
    if p.eta ~= p.eta or p.eta < 0 then return false, "parameter 'eta' must be >= 0" end
    return true
  end,
  update = function(q, p)
    q.dW:addmm(p.eta / q.batch, q.error_t, q.pre, 0)      -- dV = eta/B E^T R_pre
  end,
  fused = function(q, p)
    q.W:plastic_outer(p.eta / q.batch, q.error, q.pre, nil, q.mask)
  end,
}
