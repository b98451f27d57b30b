-- rules/hillclimb.lua: the random hill climber of neuron autoencoder
-- networks (proposal and acceptance), one learning cycle per step.
--
-- L. Bull 2024, "Toward neuromic computing: neurons as autoencoders"
-- (arXiv 2403.02331); the model: doc/models/nk.md. Networks
-- (NN, NAN, ANN) and their errors: lua/nm/models/nk.lua, doc/nk.md.
--
-- Proposal: with probability 0.5 an autoencoding cycle, else a task
-- cycle (one of the output node's H+1 weights). Autoencoding, NAN: a
-- random hidden neuron h, then one of its 3N+1 weights (N input weights,
-- bias, N decoder weights, N decoder biases); ANN: one weight of the
-- hidden and decoder layers; NN: one hidden-layer weight. Then
-- w += U[-R, R].
-- Acceptance: keep the change if the judged error is lower (NAN: neuron
-- h's reconstruction MSE; ANN: the decoder layer's; NN and task cycles:
-- the training MSE of the output), revert it if higher, keep it with
-- probability 0.5 on a tie.
--
-- State s: net (the network, nm.kernels.nk.network), info = net:info(), g (the
-- generator); step writes s.last = {autoenc, group, i, j, delta, before,
-- after, kept, tie}, as net:last() reports after the kernel. step judges
-- by full forward passes (net:naive()); kernel(s, p, cycles) runs the
-- same cycles in C (net:step, scoring from cached activations). Both draw
-- the same numbers in the same order, so spec/nk_spec.lua finds every
-- decision alike; net:perturb changes a weight exactly as the kernel does.

-- The parameter a cycle changes, drawn as the kernel draws it:
-- autoenc, group, row, col (1-based).
local function propose(info, g)
  local N, H = info.n, info.h
  if g:uniform() >= 0.5 then                       -- task cycle
    return false, "output", 1, g:integer(0, H) + 1
  end
  if info.kind == "NAN" then                       -- a neuron, then its weight
    local h = g:integer(0, H - 1) + 1
    local j = g:integer(0, 3 * N)
    if j <= N then return true, "hidden", h, j + 1 end   -- input weight or bias
    return true, "decoder", h, j - N                     -- decoder weight or bias
  end
  local nhid = H * (N + 1)                         -- NN, ANN: one draw over the layer(s)
  local total = nhid + (info.kind == "ANN" and N * (H + 1) or 0)
  local k = g:integer(0, total - 1)
  if k < nhid then return true, "hidden", k // (N + 1) + 1, k % (N + 1) + 1 end
  k = k - nhid
  return true, "decoder", k // (H + 1) + 1, k % (H + 1) + 1
end

-- The error a cycle is judged by, from a full forward pass.
local function judged(net, info, autoenc, row)
  local task, _, rec = net:naive()
  if not autoenc or info.kind == "NN" then return task end
  if info.kind == "NAN" then return rec[row] end
  return rec[1]
end

return {
  kind = "circuit",
  name = "hillclimb",
  model = "nk",
  pathways = {"proposal", "acceptance"},
  equation = "w += U[-R, R] for one random weight; keep if E decreases, " ..
             "p = 0.5 on ties (E: the changed neuron's reconstruction MSE " ..
             "or the output's MSE)",
  paper = "Bull 2024, Toward neuromic computing: neurons as autoencoders " ..
          "(arXiv 2403.02331)",
  params = {
    range = {default = 1.0, doc = "R: mutations are uniform in [-R, R]"},
  },
  check = function(p)
    if not (p.range > 0) then return false, "parameter 'range' must be > 0" end
    return true
  end,

  step = function(s, p)
    local net, info, g = s.net, s.info, s.g
    local autoenc, group, i, j = propose(info, g)
    local delta = p.range * (2 * g:uniform() - 1)  -- U[-R, R]
    local before = judged(net, info, autoenc, i)
    local old = net:perturb(group, i, j, delta)    -- w += delta
    local after = judged(net, info, autoenc, i)
    local kept, tie = after < before, after == before
    if tie then kept = g:uniform() < 0.5 end       -- ties: keep with p = 0.5
    if not kept then net:set(group, i, j, old) end -- revert
    s.last = {autoenc = autoenc, group = group, i = i, j = j, delta = delta,
              before = before, after = after, kept = kept, tie = tie}
  end,

  kernel = function(s, p, cycles)
    return s.net:step(cycles, s.g)
  end,
}
