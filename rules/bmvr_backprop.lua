-- rules/bmvr_backprop.lua: per-sample backprop on BMVR's two-layer
-- network, the baseline of Golkar et al. 2020 (squared loss
-- 1/2 ||y - W2T^T z||^2; with a ReLU layer zbar is treated as a constant):
--
--   e = y - W2T^T z,  d = W2T e .* relu'(u)  (1 for a linear network)
--   W1 += eta_w1 d x^T,  W2T += eta_w2 z e^T
--
-- every rate divided by 1 + t/t0. State s as for rules/bmvr.lua, plus
-- the scratch yhat, e and the view W2 = W2T^T. kernel runs the same step
-- over rows in C (nm.kernels.bmvr.backprop); spec/bmvr_spec.lua tests them equal.
local nm = require "neuromic"

return {
  kind = "circuit",
  name = "bmvr_backprop",
  model = "bmvr",
  pathways = {"W1", "W2T"},
  equation = "e = y - W2T^T z, W1 += eta_w1 (W2T e .* relu'(u)) x^T, W2T += eta_w2 z e^T",
  paper = "Rumelhart, Hinton & Williams 1986, Nature 323:533-536; the baseline of " ..
          "Golkar et al. 2020 (arXiv 2011.15031)",
  params = {
    eta_w1 = {default = 0.013, doc = "rate of the proximal weights W1"},
    eta_w2 = {default = 0.013, doc = "rate of the output weights W2T"},
    t0 = {default = 1000, doc = "rate decay eta / (1 + t/t0); 0 for constant rates"},
  },

  step = function(s, p)
    local decay = p.t0 > 0 and 1 / (1 + s.t / p.t0) or 1
    s.yhat:mv(s.W2, s.z)                            -- y_hat = W2T^T z
    s.e:sub(s.y, s.yhat)                            -- e = y - y_hat
    s.c:mv(s.W2T, s.e)                              -- d = W2T e
    if s.relu then s.c:mul(s.d) end                 -- d .*= relu'(u)
    s.W1:addr(p.eta_w1 * decay, s.c, s.x)           -- W1 += eta_w1 d x^T
    s.W2T:addr(p.eta_w2 * decay, s.z, s.e)          -- W2T += eta_w2 z e^T
  end,

  kernel = function(s, p, X, Y, order, count)
    local o = s.opts
    o.eta_w1, o.eta_w2, o.t0, o.t = p.eta_w1, p.eta_w2, p.t0, s.t
    return nm.kernels.bmvr.backprop(s, X, Y, o, order, count)
  end,
}
