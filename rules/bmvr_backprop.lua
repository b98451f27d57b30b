-- rules/bmvr_backprop.lua: per-sample backprop on BMVR's two-layer
-- network, the baseline of Golkar et al. 2020 (squared loss
-- 1/2 ||y - W2T^T z||^2; with a ReLU layer zbar is treated as a constant).
-- With the model's output error e = y - W2T^T z (lua/nm/models/bmvr.lua),
-- per pathway (one instance each, eta its rate):
--
--   W1  += eta_w1 (W2T e .* relu'(u)) x^T   (relu' = 1 for a linear network)
--   W2T += eta_w2 z e^T
--
-- every rate divided by 1 + t/t0; Q and R do not learn. Its kernel, the
-- model's bmvr.fused_backprop, runs both in one C pass
-- (nm.kernels.bmvr.backprop); spec/bmvr_spec.lua tests them equal.
local bmvr = require "nm.models.bmvr"

return {
  kind = "circuit",
  name = "bmvr_backprop",
  model = "bmvr",
  pathways = {"W1", "W2T"},
  equation = "e = y - W2T^T z, W1 += eta_w1 (W2T e .* relu'(u)) x^T, W2T += eta_w2 z e^T",
  paper = "Rumelhart, Hinton & Williams 1986, Nature 323:533-536; the baseline of " ..
          "Golkar et al. 2020 (arXiv 2011.15031)",
  params = {
    eta = {default = 0.013, doc = "the pathway's rate (the model sets it: eta_w1, eta_w2)"},
    t0 = {default = 1000, doc = "rate decay eta / (1 + t/t0); 0 for constant rates"},
  },

  step = function(s, p)
    local eta = p.t0 > 0 and p.eta * (1 / (1 + s.t / p.t0)) or p.eta
    if s.pathway == "W2T" then
      s.W:addr(eta, s.z, s.e)                     -- W2T += eta z e^T
      return
    end
    s.c:mv(s.W2T, s.e)                            -- d = W2T e
    if s.relu then s.c:mul(s.d) end               -- d .*= relu'(u)
    s.W:addr(eta, s.c, s.x)                       -- W1 += eta d x^T
  end,

  kernel = bmvr.fused_backprop,
}
