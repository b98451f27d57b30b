-- rules/bmvr.lua: biological multivariate regression (BMVR), the local
-- rules of a two-layer network with gain control, one sample at a time.
--
-- Golkar, Lipshutz, Bahroun, Sengupta & Chklovskii 2020, "A biologically
-- plausible neural network for local supervision in cortical
-- microcircuits" (arXiv 2011.15031), Eqs. (5)-(7), (21)-(22); the model:
-- doc/models/bmvr.md.
--
-- The model (lua/nm/models/bmvr.lua) computes the hidden layer z = W1 x
-- (ReLU: z = relu(u) - zbar and its derivative d) for the sample x, y;
-- the rule then drives the four plastic pathways:
--
--   a = W2T y,  n = Q^T z  (decoupled network: n = R z),  c = g .* (a - Q n)
--   W1  += eta_w1 c x^T      g = relu'(u) (gate "u"), 1(z > 0) ("z"), 1 ("none")
--   W2T += eta_w2 (z y^T - W2T)
--   Q   += eta_q  (z n^T - Q)
--   R   += eta_q  (n z^T - R)     (decoupled only)
--
-- every rate divided by 1 + t/t0 (t: samples seen). State s: W1, W2T, Q,
-- R (or nil), t, the sample x, y, the hidden z, d, relu (the network is
-- ReLU) and scratch vectors a, n, qn, c, g and the view Qt = Q^T.
-- kernel(s, p, X, Y [, order, count]) runs the same step over rows of X, Y
-- in C (nm.kernels.bmvr.train, csrc/models/nm_bmvr.c); spec/bmvr_spec.lua tests the
-- two equal on both dtypes.
local nm = require "neuromic"

local GATES = {u = true, z = true, none = true}

return {
  kind = "circuit",
  name = "bmvr",
  model = "bmvr",
  pathways = {"W1", "W2T", "Q", "R"},
  equation = "W1 += eta_w1 g.*(a - Q n) x^T, W2T += eta_w2 (z y^T - W2T), " ..
             "Q += eta_q (z n^T - Q); z = W1 x, a = W2T y, n = Q^T z",
  paper = "Golkar, Lipshutz, Bahroun, Sengupta & Chklovskii 2020, A biologically " ..
          "plausible neural network for local supervision in cortical microcircuits, " ..
          "NeurIPS workshop Beyond Backpropagation (arXiv 2011.15031)",
  -- Defaults: the paper's Fashion-MNIST rates of the linear network (Table 2).
  params = {
    eta_w1 = {default = 0.013, doc = "rate of the proximal weights W1"},
    eta_w2 = {default = 0.013, doc = "rate of the apical weights W2T"},
    eta_q = {default = 0.005, doc = "rate of the interneuron weights Q (and R)"},
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
    local decay = p.t0 > 0 and 1 / (1 + s.t / p.t0) or 1
    local eta_w1, eta_w2, eta_q = p.eta_w1 * decay, p.eta_w2 * decay, p.eta_q * decay
    s.a:mv(s.W2T, s.y)                              -- a = W2T y
    if s.R then s.n:mv(s.R, s.z) else s.n:mv(s.Qt, s.z) end   -- n = R z or Q^T z
    s.qn:mv(s.Q, s.n)
    s.c:sub(s.a, s.qn)                              -- c = a - Q n
    if s.relu and p.gate == "u" then s.c:mul(s.d)   -- g = relu'(u)
    elseif s.relu and p.gate == "z" then s.g:gt(s.z, 0); s.c:mul(s.g) end
    s.W1:addr(eta_w1, s.c, s.x)                     -- W1 += eta_w1 c x^T
    s.W2T:mul(1 - eta_w2):addr(eta_w2, s.z, s.y)    -- W2T += eta_w2 (z y^T - W2T)
    s.Q:mul(1 - eta_q):addr(eta_q, s.z, s.n)        -- Q += eta_q (z n^T - Q)
    if s.R then s.R:mul(1 - eta_q):addr(eta_q, s.n, s.z) end  -- R += eta_q (n z^T - R)
  end,

  kernel = function(s, p, X, Y, order, count)
    local o = s.opts
    o.eta_w1, o.eta_w2, o.eta_q, o.t0, o.gate, o.t = p.eta_w1, p.eta_w2, p.eta_q, p.t0, p.gate, s.t
    return nm.kernels.bmvr.train(s, X, Y, o, order, count)
  end,
}
