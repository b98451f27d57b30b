-- rules/folded_ae.lua: the plasticity of the energy-based folded
-- autoencoder (Dold et al., poster). Both paths of an area learn by the
-- same dendritic-prediction rule (Urbanczik & Senn 2014): a dendrite's
-- weights move so that its prediction V r_pre matches the somatic
-- potential u_post, at the fixed point of the neuronal dynamics:
--
--   forward (basal) weights, pathway "W":   dW_i = eta (u_i - W_i r_{i-1}) r_{i-1}^T
--   backward (apical) weights, pathway "G": dG_i = eta (u_i - G_i r_{i+1}) r_{i+1}^T
--
-- gradient descent on the energy E (poster, section 3; the lambda and
-- 1 - lambda factors absorbed into eta). The model (lua/nm/models/
-- folded_ae.lua) makes one instance per pathway, eta = eta_W or eta_G.
--
-- State s of one dendrite (rows are samples, updates use batch means):
--   e = u_post - V r_pre [B x n_post] (the mismatch at the fixed point)
--   and its transpose view e_t, r = r_pre [B x n_pre], u = u_post, V the
--   weights, dV the change, batch = B.
-- step writes dV (zeroed before); the model adds it to V or hands it to
-- its optimiser. kernel applies the same change to V in one GEMM
-- (nm.kernels.plastic_outer); spec/folded_ae_spec.lua tests the two equal.

local nm = require "neuromic"

return {
  kind = "circuit",
  name = "folded_ae",
  model = "folded_ae",
  pathways = {"W", "G"},
  equation = "dV = eta <(u_post - V r_pre) r_pre^T>  (V = W_i, r_pre = r_{i-1}; " ..
             "V = G_i, r_pre = r_{i+1})",
  paper = "Dold, Sacramento, Kungl, Senn & Petrovici, An energy-based model of folded " ..
          "autoencoders for unsupervised learning in cortical hierarchies (poster); " ..
          "Urbanczik & Senn 2014, Neuron 81:521-528",
  params = {
    eta = {default = 0.01, doc = "learning rate (eta_W or eta_G), per batch mean"},
  },
  check = function(p)
    if p.eta ~= p.eta or p.eta < 0 then return false, "parameter 'eta' must be >= 0" end
    return true
  end,
  step = function(s, p)
    s.dV:addmm(p.eta / s.batch, s.e_t, s.r, 0)       -- dV = eta/B E^T R_pre
  end,
  kernel = function(s, p)
    nm.kernels.plastic_outer(s.V, p.eta / s.batch, s.e, s.r)
  end,
}
