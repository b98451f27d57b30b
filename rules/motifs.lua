-- rules/motifs.lua: the ten plasticity motifs of Shervani-Tabar &
-- Rosenbaum, "Meta-learning biologically plausible plasticity rules with
-- random feedback pathways", Nature Communications 14, 1805 (2023), and
-- the rule W_l += sum_r theta_r F^r_l built from them; theta is learned in
-- an outer loop (nm.models.motif_net's learner). The network, its error
-- pathway (e_l) and the unroll live in lua/nm/models/motif_net.lua.
--
--   r  F^r                                cheap form used here
--   0  -e_l y_{l-1}^T                     (pseudo-gradient)
--   1  -y_l e_{l-1}^T
--   2  -e_l e_{l-1}^T                     (error Hebbian)
--   3  -W_l                               (decay)
--   4  -1 e_{l-1}^T
--   5  -e_l 1^T y_l y_{l-1}^T             -(sum y_l) e_l y_{l-1}^T
--   6  -y_l y_l^T W e_{l-1} e_{l-1}^T     -(y_l^T W e_{l-1}) y_l e_{l-1}^T
--   7  -e_l y_l^T W e_{l-1} y_{l-1}^T     -(y_l^T W e_{l-1}) e_l y_{l-1}^T
--   8  -y_l y_{l-1}^T W^T e_l e_{l-1}^T   -(e_l^T W y_{l-1}) y_l e_{l-1}^T
--   9  y_l y_{l-1}^T - (y_l y_l^T) W      (Oja, subspace form)
--
-- One online step (batch 1): every layer's F^r from the pre-update weights
-- of that step, then W_l += sum_r theta_r F^r_l with the same theta for all
-- layers. No other learning rate: theta = (theta_0, 0, ..., 0) with BP
-- feedback is SGD with rate theta_0 (spec/meta_spec.lua checks it).
-- step is the Lua reference (nm.autograd operations: plain tensors or
-- variables); the inner loop runs it compiled by nm.compile (generated C
-- step and adjoint, doc/compiler.md), tested equal to it and to finite
-- differences.

local nm = require "neuromic"
local ag = require "nm.autograd"

-- F[0..9] of one layer as matrices (literal cheap forms).
local function terms(Wl, ypre, ypost, epre, epost)
  local F = {}
  local ones = nm.ones(ag.value(ypost):size(1), ag.value(ypost):dtype())
  local c = ag.dot(ypost, ag.mv(Wl, epre))                 -- y_l^T W e_{l-1}
  local d = ag.dot(epost, ag.mv(Wl, ypre))                 -- e_l^T W y_{l-1}
  F[0] = ag.neg(ag.outer(epost, ypre))
  F[1] = ag.neg(ag.outer(ypost, epre))
  F[2] = ag.neg(ag.outer(epost, epre))
  F[3] = ag.neg(Wl)
  F[4] = ag.neg(ag.outer(ones, epre))
  F[5] = ag.scale(ag.outer(epost, ypre), ag.neg(ag.sum(ypost)))
  F[6] = ag.scale(ag.outer(ypost, epre), ag.neg(c))
  F[7] = ag.scale(ag.outer(epost, ypre), ag.neg(c))
  F[8] = ag.scale(ag.outer(ypost, epre), ag.neg(d))
  F[9] = ag.sub(ag.outer(ypost, ypre), ag.outer(ypost, ag.mv(ag.t(Wl), ypost)))
  return F
end

-- The motifs whose theta is not zero (plain theta); on a tape or traced
-- by the rule compiler, all ten.
local function active(theta)
  local list = {}
  for r = 0, 9 do
    if ag.is_tracked(theta) or ag.value(theta):get(r + 1) ~= 0 then list[#list + 1] = r end
  end
  return list
end

return {
  kind = "meta",
  name = "motifs",
  model = "motif_net",
  paper = "Shervani-Tabar & Rosenbaum, Nat. Commun. 14, 1805 (2023)",
  equation = "W_l += sum_{r=0}^{9} theta_r F^r_l (motifs from y_{l-1}, y_l, e_{l-1}, e_l, W_l)",
  params = {},
  coefficients = {
    theta = {size = 10, init = {[0] = 1e-3}, doc = "the motifs' weights theta_0..theta_9",
             names = {[0] = "-e_l y_{l-1}^T", "-y_l e_{l-1}^T", "-e_l e_{l-1}^T", "-W_l",
                      "-1 e_{l-1}^T", "-(sum y_l) e_l y_{l-1}^T",
                      "-(y_l^T W e_{l-1}) y_l e_{l-1}^T", "-(y_l^T W e_{l-1}) e_l y_{l-1}^T",
                      "-(e_l^T W y_{l-1}) y_l e_{l-1}^T", "y_l y_{l-1}^T - y_l y_l^T W"}},
  },
  -- named subsets (0-based), as in the paper's figures
  subsets = {lr = {0}, pool = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, bio = {0, 2, 9},
             ehebb = {0, 2}, oja = {0, 9}},
  terms = terms,
  -- step(net, W, theta, x, label, B) -> W' (a new list): y, e from the
  -- network's forward pass and error pathway (B: its feedback state).
  step = function(net, W, theta, x, label, B)
    local y, e = net:signals(W, B, x, label)
    local out, use = {}, active(theta)
    for l = 1, net.layers do
      local F = terms(W[l], y[l - 1], y[l], e[l - 1], e[l])
      local Wn = W[l]
      for _, r in ipairs(use) do Wn = ag.add(Wn, ag.scale(F[r], ag.index(theta, r + 1))) end
      out[l] = Wn
    end
    return out
  end,
}
