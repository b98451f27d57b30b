-- rules/rcn.lua: recurrent chemical networks (RCN): synapses made of L
-- chemicals with fixed timescales whose dynamics are meta-learned. After
-- K. McMillan, "Efficient learning in biological neural networks"
-- (Cambridge IB technical milestone report, supervisor Y. Ahmadian), which
-- extends the motif rule (rules/motifs.lua). Every synapse of layer l holds
-- chemicals h_c, c = 0..L-1, updated once per online step:
--
--   h_c <- y_c h_c + z_c tanh( sum_i K[c,i] h_i + sum_r P[c,r] F^r + b_c )
--   W    = sum_c v_c h_c      (plain RCN)  |  W <- W + sum_c v_c h_c  (momentum)
--
-- with the motifs F^r of rules/motifs.lua from the weight W of that step.
-- Timescales: tau_c = (tau_max / tau_min)^(c / (L - 1)) (or c / L),
-- z_c = 1 / (tau_min tau_c), y_c = 1 - z_c, y_0 = 1. With L = 1, K = 0,
-- v = 1 and small arguments the rule is W += sum_r P[0,r] F^r, the motif
-- rule (spec/rcn_spec.lua). The network, state, unroll and learner are in
-- lua/nm/models/rcn.lua; the step below runs on C kernels that nm.compile
-- generates from it, with its exact adjoint (`neuromic --emit rules/rcn.lua`).

local ag = require "nm.autograd"

local function finite(x) return x == x and x ~= math.huge and x ~= -math.huge end

-- The coefficients of layer l (0-based motif r, 1-based chemicals c, k).
local function P(net, th, l, c, r)
  if net.share == "layer" then return ag.index(th[1], l, c, r + 1) end
  return ag.index(th[1], c, r + 1)
end
local function K(net, th, l, c, k)
  if net.share == "layer" then return ag.index(th[2], l, c, k) end
  return ag.index(th[2], c, k)
end
local function v(net, th, l, c)
  if net.share == "layer" then return ag.index(th[3], l, c) end
  return ag.index(th[3], c)
end
local function b(net, th, l, c)
  if net.bias == "neuron" then return ag.select(th[3 + l], 1, c) end
  if net.bias == "shared" then return ag.index(th[4], c) end
  return ag.index(th[4], l, c)
end

return {
  kind = "meta",
  name = "rcn",
  model = "rcn",
  base = "motifs",          -- the rule whose motifs F^r drive the chemicals
  paper = "McMillan (Cambridge IB report), after Shervani-Tabar & Rosenbaum, " ..
          "Nat. Commun. 14, 1805 (2023)",
  equation = "h_c <- y_c h_c + z_c tanh(sum_i K[c,i] h_i + sum_r P[c,r] F^r + b_c); " ..
             "W = sum_c v_c h_c (momentum: W += sum_c v_c h_c)",
  params = {
    chemicals = {default = 1, doc = "chemicals per synapse L (1..16)"},
    share = {default = "shared", doc = "'shared' (one P, K, v for all layers) or 'layer'"},
    bias = {default = "layer", doc = "'none', 'shared' (L), 'layer' (L per layer) or " ..
                                     "'neuron' (L per synapse)"},
    momentum = {default = false, doc = "W += v.h instead of W = v.h"},
    motifs = {default = {0, 2, 9}, doc = "motifs taking part (0-based; F_bio by default)"},
    exponent = {default = "L-1", doc = "timescale exponent c/(L-1) ('L-1') or c/L ('L')"},
    tau_min = {default = 1, doc = "fastest timescale"},
    tau_max = {default = 50, doc = "slowest timescale"},
  },
  coefficients = {
    P = {doc = "motif weights, L x 10 (x layers with share = 'layer'); P[:,0] starts at P0"},
    K = {doc = "chemical mixing, L x L (x layers); starts at 0"},
    v = {doc = "read-out weights, L (x layers); start at 1/L"},
    b = {doc = "biases per chemical (shared, per layer or per synapse); start at 0"},
  },
  -- timescales(L, p) -> tau, decay y, gain z: lists for chemicals c = 0..L-1
  timescales = function(L, p)
    p = p or {}
    if math.type(L) ~= "integer" or L < 1 or L > 16 then
      error("timescales: chemicals must be an integer in 1..16, got " .. tostring(L), 2)
    end
    local exponent, tmin, tmax = p.exponent or "L-1", p.tau_min or 1, p.tau_max or 50
    if exponent ~= "L-1" and exponent ~= "L" then
      error("timescales: exponent must be 'L-1' or 'L', got " .. tostring(exponent), 2)
    end
    if type(tmin) ~= "number" or type(tmax) ~= "number" or not (tmin > 0) or not (tmax >= tmin)
       or not finite(tmax) then
      error(string.format("timescales: need 0 < tau_min <= tau_max < inf, got %s, %s",
                          tostring(tmin), tostring(tmax)), 2)
    end
    local tau, y, z = {}, {}, {}
    for c = 0, L - 1 do
      local e
      if exponent == "L" then e = c / L else e = L > 1 and c / (L - 1) or 0 end
      tau[c + 1] = (tmax / tmin) ^ e
      z[c + 1] = 1 / (tmin * tau[c + 1])
      y[c + 1] = c == 0 and 1 or 1 - z[c + 1]
    end
    return tau, y, z
  end,
  -- step(net, S, theta, x, label, B) -> S': the Lua reference. S = {W_1..W_NL,
  -- h_{1,1}..h_{1,L}, h_{2,1}, ...}; theta = {P, K, v, b} (neuron biases:
  -- {P, K, v, b_1..b_NL}, b_l [L x n_l x n_{l-1}]). Entries may be variables.
  step = function(net, S, theta, x, label, B)
    local NL, L = net.layers, net.chemicals
    local W = {}
    for l = 1, NL do W[l] = S[l] end
    local y, e = net.mnet:signals(W, B, x, label)
    local out = {}
    for l = 1, NL do
      local F = net.mnet.rule.terms(W[l], y[l - 1], y[l], e[l - 1], e[l])
      local Wn = net.momentum and W[l] or nil
      for c = 1, L do
        local pre
        for k = 1, L do
          local term = ag.scale(S[NL + (l - 1) * L + k], K(net, theta, l, c, k))
          pre = pre and ag.add(pre, term) or term
        end
        for _, r in ipairs(net.motifs) do pre = ag.add(pre, ag.scale(F[r], P(net, theta, l, c, r))) end
        if net.bias ~= "none" then pre = ag.add(pre, b(net, theta, l, c)) end
        local hn = ag.add(ag.scale(S[NL + (l - 1) * L + c], net.decay[c]),
                          ag.scale(ag.tanh(pre), net.gain[c]))
        out[NL + (l - 1) * L + c] = hn
        local term = ag.scale(hn, v(net, theta, l, c))
        Wn = Wn and ag.add(Wn, term) or term
      end
      out[l] = Wn
    end
    return out
  end,
}
