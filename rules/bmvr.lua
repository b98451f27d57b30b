-- rules/bmvr.lua: biological multivariate regression (BMVR), the local
-- rules of a two-layer network with gain control, one sample at a time.
--
-- Golkar, Lipshutz, Bahroun, Sengupta & Chklovskii 2020, "A biologically
-- plausible neural network for local supervision in cortical
-- microcircuits" (arXiv 2011.15031), Eqs. (5)-(7), (21)-(22); the model:
-- doc/models/bmvr.md.
--
-- The model (lua/nm/models/bmvr.lua) computes, for the sample x, y, the
-- hidden layer z = W1 x (ReLU: z = relu(u) - zbar, derivative d), the
-- apical input a = W2T y, the interneurons n = Q^T z (decoupled: n = R z)
-- and the apical potential v = a - Q n; this rule then drives each of the
-- four plastic pathways (one instance per pathway, eta its rate):
--
--   W1  += eta_w1 (g .* v) x^T   g = relu'(u) (gate "u"), 1(z > 0) ("z"), 1 ("none")
--   W2T += eta_w2 (z y^T - W2T)
--   Q   += eta_q  (z n^T - Q)
--   R   += eta_q  (n z^T - R)     (decoupled only)
--
-- that is W += eta (post pre^T - W) with the pathway's post and pre (W2T:
-- z, y; Q: z, n; R: n, z), every rate divided by 1 + t/t0 (t: samples
-- seen). Its kernel, the model's bmvr.fused, runs the four in one C pass
-- (nm.kernels.bmvr.train, csrc/models/nm_bmvr.c) when they all learn by
-- this rule; spec/bmvr_spec.lua tests the two equal on both dtypes.
local bmvr = require "nm.models.bmvr"

local GATES = {u = true, z = true, none = true}

return {
  kind = "circuit",
  name = "bmvr",
  model = "bmvr",
  pathways = {"W1", "W2T", "Q", "R"},
  equation = "W1 += eta g.*(a - Q n) x^T; W2T, Q, R += eta (post pre^T - W) " ..
             "(W2T: z y^T, Q: z n^T, R: n z^T); z = W1 x, a = W2T y, n = Q^T z",
  paper = "Golkar, Lipshutz, Bahroun, Sengupta & Chklovskii 2020, A biologically " ..
          "plausible neural network for local supervision in cortical microcircuits, " ..
          "NeurIPS workshop Beyond Backpropagation (arXiv 2011.15031)",
  params = {
    eta = {default = 0.013, doc = "the pathway's rate (the model sets it: eta_w1, eta_w2, eta_q)"},
    t0 = {default = 1000, doc = "rate decay eta / (1 + t/t0); 0 for constant rates"},
    gate = {default = "u", doc = "ReLU: W1 learns where relu'(u) = 1 (\"u\"), z > 0 (\"z\") " ..
                                 "or everywhere (\"none\", not in the paper)"},
  },
  check = function(p)
    if not GATES[p.gate] then
      return false, "parameter gate must be \"u\", \"z\" or \"none\", got " .. tostring(p.gate)
    end
    return true
  end,

  step = function(s, p)
    local eta = p.t0 > 0 and p.eta * (1 / (1 + s.t / p.t0)) or p.eta
    if s.pathway ~= "W1" then
      s.W:mul(1 - eta):addr(eta, s.post, s.pre)   -- W += eta (post pre^T - W)
      return
    end
    s.c:copy(s.v)                                 -- the plateau v = a - Q n
    if s.relu and p.gate == "u" then s.c:mul(s.d) -- g = relu'(u)
    elseif s.relu and p.gate == "z" then s.g:gt(s.z, 0); s.c:mul(s.g) end
    s.W:addr(eta, s.c, s.x)                       -- W1 += eta g.*v x^T
  end,

  kernel = bmvr.fused,
}
