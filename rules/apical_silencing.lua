-- rules/apical_silencing.lua: the interneuron-to-apical rule of dendritic
-- cortical microcircuits (Sacramento, Costa, Bengio & Senn 2018): the
-- synapses from the SST interneurons onto a pyramidal cell's apical
-- dendrite change so as to silence it, so that without a target the
-- interneurons cancel the top-down input (the self-predicting state):
--
--   pi:   dW_pi[k] = eta (0 - vA_k) rI_k^T
--
-- In the model's state s (lua/nm/models/microcircuit.lua): s.v the apical
-- potential vA_k, s.pre the interneuron rates rI_k. The term is low-pass
-- filtered (tau_w dD/dt = -D + term, dW/dt = eta D; mc.lowpass), or
-- applied once per pattern with tau_w = 0 (steady state). The model runs
-- the step as the C kernel nm.compile generates from it.

local mc = require "nm.models.microcircuit"

return {
  kind = "circuit",
  model = "microcircuit",
  pathway = "pi",
  name = "apical_silencing",
  equation = "dW_pi = eta (0 - vA) rI^T, low-pass: tau_w dD/dt = -D + that term, dW/dt = eta D",
  paper = "Sacramento, Costa, Bengio & Senn 2018, Dendritic cortical microcircuits " ..
          "approximate the backpropagation algorithm, NeurIPS 31 (arXiv:1810.11393)",
  params = mc.lowpass_params(0.0059375),       -- eta, tau_w, dt (the model sets them)
  check = mc.lowpass_check,
  init = mc.lowpass_init,
  step = function(s, p)
    s.e:neg(s.v)                           -- 0 - vA
    mc.lowpass(s, p)
  end,
}
