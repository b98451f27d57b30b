-- rules/dendritic_prediction.lua: Urbanczik-Senn dendritic prediction
-- learning, the rule of three of the four plastic pathways of dendritic
-- cortical microcircuits (Sacramento, Costa, Bengio & Senn 2018): a
-- synapse onto a dendrite changes so that the dendrite's potential
-- predicts the cell's somatic rate.
--
--   up:   dW_up[k]   = eta (phi(u_k) - phi(cB_k vB_k)) r_{k-1}^T
--   ip:   dW_ip[k]   = eta (phi(uI_k) - phi(cD vI_k)) r_k^T
--   down: dW_down[k] = eta (phi(u_k) - phi(W_down[k] r_{k+1})) r_{k+1}^T
--
-- In the model's state s (lua/nm/models/microcircuit.lua): s.post the
-- somatic rate, s.v the dendritic potential, s.c its attenuation (cB_k =
-- g_B / (g_lk + g_B + g_A), output layer g_B / (g_lk + g_B); cD = g_D /
-- (g_lk + g_D); 1 for down), s.pre the presynaptic rates. The term is
-- low-pass filtered (tau_w dD/dt = -D + term, dW/dt = eta D; mc.lowpass),
-- or applied once per pattern with tau_w = 0 (steady state). Biases: the
-- same with a presynaptic rate of 1. The model runs the step as the C
-- kernel nm.compile generates from it.

local mc = require "nm.models.microcircuit"

return {
  kind = "circuit",
  model = "microcircuit",
  pathways = {"up", "ip", "down"},
  name = "dendritic_prediction",
  equation = "dW = eta (phi(u) - phi(c v)) r_pre^T, low-pass: tau_w dD/dt = -D + that term, " ..
             "dW/dt = eta D",
  paper = "Sacramento, Costa, Bengio & Senn 2018, Dendritic cortical microcircuits " ..
          "approximate the backpropagation algorithm, NeurIPS 31 (arXiv:1810.11393); " ..
          "Urbanczik & Senn 2014, Learning by the dendritic prediction of somatic spiking, " ..
          "Neuron 81:521-528",
  params = mc.lowpass_params(0.0011875),       -- eta, tau_w, dt (the model sets them)
  check = mc.lowpass_check,
  init = mc.lowpass_init,
  step = function(s, p)
    s.e:scale(s.v, s.c)
    s.phi(s.e, s.e)                        -- phi(c v): the dendrite's prediction
    s.e:sub(s.post, s.e)                   -- phi(u) - phi(c v)
    mc.lowpass(s, p)
  end,
}
