-- rules/hillclimb.lua: the random hill climber of neuron autoencoder
-- networks, one learning cycle at a time.
--
-- L. Bull 2024, "Toward neuromic computing: neurons as autoencoders"
-- (arXiv 2403.02331); the model: doc/models/nk.md.
--
-- Networks (nm.nk.network): N inputs (+-1) -> H sigmoid hidden neurons ->
-- 1 sigmoid output, every node with a bias, weights U[-1, 1]; plus
--   NAN: each hidden neuron h its own decoder, out_{h,i} =
--        sigmoid(w_{h,i} a_h + b_{h,i}) for i = 1..N;
--        rec_h = mean over samples and i of (x_i - out_{h,i})^2
--   ANN: one decoder layer of N sigmoid nodes reading all H activations;
--        rec = mean over samples and i of (x_i - out_i)^2
--   NN:  no decoder.
-- One cycle:
--   with probability 0.5 an autoencoding cycle, else a task cycle;
--   autoencoding, NAN: a random hidden neuron h, then one of its 3N+1
--        weights (N input weights, bias, N decoder weights, N decoder
--        biases), judged by rec_h;
--   autoencoding, ANN: one of the hidden and decoder layers' weights,
--        judged by rec;
--   NN: the "autoencoding" draw picks one hidden-layer weight instead,
--        judged by the task error (the paper's plain MLP);
--   task: one of the output node's H+1 weights, judged by the training
--        MSE of the output against F;
--   w += U[-R, R]; keep the change if the judged error is lower, revert
--   it if higher, keep it with probability 0.5 on a tie.
--
-- cycle() below is the reference, written with the naive evaluator
-- (net:naive(), a full forward pass). fused() runs the same cycles in C
-- (net:step, csrc/models/nm_nk.c), scoring each candidate in O(S) from cached
-- activations (O(S N) when a hidden neuron's decoder must be re-read).
-- Both draw the same numbers from the generator in the same order, so
-- they take the same decisions; spec/nk_spec.lua checks it cycle by
-- cycle. Hidden-layer weights live on a 2^-32 grid so that the cached
-- pre-activations are exact (see csrc/models/nm_nk.h); net:perturb applies a
-- mutation exactly as the kernel does.
local nm = require "neuromic"

local hillclimb = {
  kind = "circuit",
  model = "nk",
  pathway = "weights",
  name = "hillclimb",
  equation = "w += U[-R, R] for one random weight; keep if E decreases, " ..
             "p = 0.5 on ties (E: the changed neuron's reconstruction MSE " ..
             "or the output's MSE)",
  paper = "Bull 2024, Toward neuromic computing: neurons as autoencoders " ..
          "(arXiv 2403.02331)",
  -- Defaults: the paper's settings.
  params = {
    range = {default = 1.0, doc = "R: mutations are uniform in [-R, R]"},
    h = {default = 10, doc = "H: hidden neurons"},
    target = {default = "input", doc = "reconstruction targets: \"input\" (+-1, the " ..
              "paper) or \"binary\" (0/1, reachable by a sigmoid)"},
    cycles = {default = 10000, doc = "learning cycles of a run"},
    fused = {default = true, doc = "run cycles in C (false: the Lua reference)"},
  },
}

-- Parameters: defaults overridden by p (unknown names are errors).
function hillclimb.defaults(p)
  local out = {}
  for k, spec in pairs(hillclimb.params) do out[k] = spec.default end
  for k, v in pairs(p or {}) do
    if hillclimb.params[k] == nil then
      error("hillclimb: unknown parameter '" .. tostring(k) .. "'", 2)
    end
    out[k] = v
  end
  if type(out.range) ~= "number" or not (out.range > 0) then
    error("hillclimb: parameter range must be a number > 0", 2)
  end
  return out
end

-- A network of `kind` ("NN", "NAN", "ANN") on the training set X [S x N]
-- (+-1), F [S], weights drawn from g.
function hillclimb.network(kind, X, F, g, p)
  p = hillclimb.defaults(p)
  return nm.nk.network{kind = kind, x = X, f = F, generator = g, h = p.h,
                       range = p.range, target = p.target}
end

-- The parameter a cycle changes, drawn as the kernel draws it:
-- autoenc, group, row, col (1-based).
local function choose(info, g)
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

-- One cycle in Lua (the reference). Returns what it did: {autoenc, group,
-- i, j, delta, before, after, kept, tie}, as net:last() reports for the
-- fused form.
function hillclimb.cycle(net, g)
  local info = net:info()
  local range = info.range                         -- R, fixed when the net was made
  local autoenc, group, i, j = choose(info, g)
  local delta = range * (2 * g:uniform() - 1)      -- U[-R, R]
  local before = judged(net, info, autoenc, i)
  local old = net:perturb(group, i, j, delta)      -- w += delta
  local after = judged(net, info, autoenc, i)
  local kept, tie = after < before, after == before
  if tie then kept = g:uniform() < 0.5 end         -- ties: keep with p = 0.5
  if not kept then net:set(group, i, j, old) end   -- revert
  return {autoenc = autoenc, group = group, i = i, j = j, delta = delta,
          before = before, after = after, kept = kept, tie = tie}
end

-- `cycles` cycles in C; returns the number of changes kept.
function hillclimb.fused(net, g, cycles)
  return net:step(cycles, g)
end

-- Runs p.cycles (or `cycles`) cycles, fused unless p.fused == false.
function hillclimb.run(net, g, p, cycles)
  p = hillclimb.defaults(p)
  cycles = cycles or p.cycles
  if p.fused then return hillclimb.fused(net, g, cycles) end
  local kept = 0
  for _ = 1, cycles do
    if hillclimb.cycle(net, g).kept then kept = kept + 1 end
  end
  return kept
end

-- The circuit rule's step: one learning cycle.
hillclimb.step = hillclimb.cycle

return hillclimb
