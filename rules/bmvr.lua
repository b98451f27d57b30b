-- rules/bmvr.lua: biological multivariate regression (BMVR), the local
-- learning rules of a two-layer network with gain control, and the
-- backprop baseline on the same network, one sample at a time.
--
-- Golkar, Lipshutz, Bahroun, Sengupta & Chklovskii 2020, "A biologically
-- plausible neural network for local supervision in cortical
-- microcircuits" (NeurIPS workshop, arXiv 2011.15031), Eqs. (5)-(7), (9),
-- (21)-(22), (24); the model: doc/models/bmvr.md.
--
-- x [n] reaches the proximal dendrites of k pyramidal neurons, the label
-- y [m] their apical tufts; k interneurons n = Q^T z inhibit the tufts:
--
--   z = W1 x                     (ReLU: u = W1 x, zbar += eps (relu(u) - zbar),
--                                       z = relu(u) - zbar)
--   a = W2T y,  n = Q^T z        (decoupled: n = R z)
--   W1  += eta_w1 g .* (a - Q n) x^T    g = relu'(u) = 1(u > 0) (gate "u"),
--   W2T += eta_w2 (z y^T - W2T)          1(z > 0) (gate "z"); 1 for linear nets
--   Q   += eta_q  (z n^T - Q)
--   R   += eta_q  (n z^T - R)            (decoupled only)
--
-- Variants the paper leaves open: mean = "before" subtracts the running
-- mean of u before the ReLU (zbar += eps (u - zbar), z = relu(u - zbar),
-- relu' = 1(z > 0)); gate = "none" lets every unit's W1 learn (a
-- straight-through variant, not in the paper).
--
-- Neither the prediction y_hat = W2T^T z nor an error is computed: the
-- plateau signal a - Q n replaces W2T (y - y_hat). Every rate is divided by
-- 1 + t/t0 (t = samples seen; t0 = 0 keeps it constant). The backprop
-- baseline on the same network (squared loss 1/2 ||y - W2T^T z||^2):
--
--   e = y - W2T^T z,  d = W2T e .* relu'(u)
--   W1 += eta_w1 d x^T,  W2T += eta_w2 z e^T
--
-- This is a circuit rule (three weight matrices and a running mean), not
-- a per-connection rule of nm.rule: its quantities q are a network
-- (W1, W2T, Q, R, zbar, t), a sample x, y and the scratch of
-- bmvr.scratch. The Lua forms below are the reference; `fused` runs the
-- same step in C (nm.bmvr.train, csrc/models/nm_bmvr.c), as does
-- bmvr.epoch(..., {fused = true}) for a whole pass without leaving C.
-- spec/bmvr_spec.lua tests the two equal.
local nm = require "neuromic"

local bmvr = {
  kind = "circuit",
  model = "bmvr",
  pathways = {"W1", "W2T", "Q", "R"},
  name = "bmvr",
  equation = "W1 += eta_w1 g.*(a - Q n) x^T, W2T += eta_w2 (z y^T - W2T), " ..
             "Q += eta_q (z n^T - Q); z = W1 x, a = W2T y, n = Q^T z",
  paper = "Golkar, Lipshutz, Bahroun, Sengupta & Chklovskii 2020, A biologically " ..
          "plausible neural network for local supervision in cortical microcircuits, " ..
          "NeurIPS workshop Beyond Backpropagation (arXiv 2011.15031)",
  -- Defaults: the paper's Fashion-MNIST rates of the linear network
  -- (Table 2), which reach the RRR optimum on unit-scaled pixels.
  params = {
    eta_w1 = {default = 0.013, doc = "rate of the proximal weights W1"},
    eta_w2 = {default = 0.013, doc = "rate of the apical weights W2T"},
    eta_q = {default = 0.005, doc = "rate of the interneuron weights Q (and R)"},
    t0 = {default = 1000, doc = "rate decay eta / (1 + t/t0); 0 for constant rates"},
    relu = {default = false, doc = "mean-subtracted ReLU hidden layer (Eq. 9, 24)"},
    gate = {default = "u", doc = "ReLU: W1 learns where relu'(u) = 1 (\"u\"), z > 0 (\"z\") " ..
                                 "or everywhere (\"none\", not in the paper)"},
    mean = {default = "after", doc = "ReLU: z = relu(u) - zbar (\"after\", Eq. 24) or " ..
                                     "relu(u - zbar) with zbar the mean of u (\"before\")"},
    decoupled = {default = false, doc = "n = R z with R learnt by its own rule (App. D)"},
    mean_eps = {default = 1e-4, doc = "rate of the running mean zbar (Eq. 24)"},
    track_mean = {default = true, doc = "update zbar while training (false: frozen)"},
  },
}

local function check_params(p)
  if p.gate ~= "u" and p.gate ~= "z" and p.gate ~= "none" then
    error("bmvr: parameter gate must be \"u\", \"z\" or \"none\", got " .. tostring(p.gate), 3)
  end
  if p.mean ~= "after" and p.mean ~= "before" then
    error("bmvr: parameter mean must be \"after\" or \"before\", got " .. tostring(p.mean), 3)
  end
end

-- Parameters: defaults overridden by p (unknown names are errors).
function bmvr.defaults(p)
  local out = {}
  for k, spec in pairs(bmvr.params) do out[k] = spec.default end
  for k, v in pairs(p or {}) do
    if bmvr.params[k] == nil then error("bmvr: unknown parameter '" .. tostring(k) .. "'", 2) end
    out[k] = v
  end
  check_params(out)
  return out
end

-- Scratch vectors for one network (allocated once; the steps allocate
-- nothing else). It holds views of net.Q and net.W2T: make a new one
-- when those tensors are replaced.
function bmvr.scratch(net)
  local k, m = net.W1:size(1), net.W2T:size(2)
  local dt = net.W1:dtype()
  local v = function(size) return nm.zeros(size, dt) end
  return {
    u = v(k), h = v(k), z = v(k), a = v(k), n = v(k), qn = v(k), c = v(k), g = v(k), d = v(k),
    dz = v(k), yhat = v(m), e = v(m), Qt = net.Q and net.Q:t() or nil, W2 = net.W2T:t(),
    opts = {},                                -- options table of the fused calls
  }
end

local function rates(net, p)
  local decay = p.t0 > 0 and 1 / (1 + net.t / p.t0) or 1
  return p.eta_w1 * decay, p.eta_w2 * decay, p.eta_q * decay
end

-- The hidden layer: u = W1 x and z (ReLU: zbar moved first, then z =
-- relu(u) - zbar, or relu(u - zbar) when the mean comes first). Leaves
-- the ReLU's derivative relu'(u) in s.d.
local function hidden(net, x, p, s)
  s.u:mv(net.W1, x)                               -- u = W1 x
  if not p.relu then
    s.z:copy(s.u)
    return
  end
  if p.mean == "before" then
    if p.track_mean then
      s.dz:sub(s.u, net.zbar)
      net.zbar:axpy(p.mean_eps, s.dz)             -- zbar += eps (u - zbar)
    end
    s.dz:sub(s.u, net.zbar)
    s.z:relu(s.dz)                                -- z = relu(u - zbar)
    s.d:gt(s.z, 0)
    return
  end
  s.d:gt(s.u, 0)
  s.h:relu(s.u)                                   -- h = relu(u)
  if p.track_mean then
    s.dz:sub(s.h, net.zbar)
    net.zbar:axpy(p.mean_eps, s.dz)               -- zbar += eps (h - zbar)
  end
  s.z:sub(s.h, net.zbar)                          -- z = h - zbar
end

-- One BMVR step on sample x [n], y [m] (Lua form). Advances net.t.
function bmvr.step(net, x, y, p, s)
  local eta_w1, eta_w2, eta_q = rates(net, p)
  hidden(net, x, p, s)
  s.a:mv(net.W2T, y)                              -- a = W2T y
  if p.decoupled then
    s.n:mv(net.R, s.z)                            -- n = R z
  else
    s.n:mv(s.Qt, s.z)                             -- n = Q^T z
  end
  s.qn:mv(net.Q, s.n)
  s.c:sub(s.a, s.qn)                              -- c = a - Q n
  if p.relu and p.gate ~= "none" then
    if p.gate == "u" then s.c:mul(s.d)            -- g = relu'(u)
    else s.g:gt(s.z, 0); s.c:mul(s.g) end         -- g = 1(z > 0)
  end
  net.W1:addr(eta_w1, s.c, x)                     -- W1 += eta_w1 c x^T
  net.W2T:mul(1 - eta_w2):addr(eta_w2, s.z, y)    -- W2T += eta_w2 (z y^T - W2T)
  net.Q:mul(1 - eta_q):addr(eta_q, s.z, s.n)      -- Q += eta_q (z n^T - Q)
  if p.decoupled then
    net.R:mul(1 - eta_q):addr(eta_q, s.n, s.z)    -- R += eta_q (n z^T - R)
  end
  net.t = net.t + 1
end

-- One backprop step on the same network (Lua form). Advances net.t.
function bmvr.backprop_step(net, x, y, p, s)
  local eta_w1, eta_w2 = rates(net, p)
  hidden(net, x, p, s)
  s.yhat:mv(s.W2, s.z)                            -- y_hat = W2T^T z
  s.e:sub(y, s.yhat)                              -- e = y - y_hat
  s.c:mv(net.W2T, s.e)                            -- d = W2T e
  if p.relu then s.c:mul(s.d) end                 -- d .*= relu'(u)
  net.W1:addr(eta_w1, s.c, x)                     -- W1 += eta_w1 d x^T
  net.W2T:addr(eta_w2, s.z, s.e)                  -- W2T += eta_w2 z e^T
  net.t = net.t + 1
end

-- The options table the C functions read, refreshed in place.
local function fused_opts(net, p, s)
  local o = s.opts
  for k, v in pairs(p) do o[k] = v end
  o.t = net.t
  return o
end

local function fused_call(fn, net, X, Y, p, s, order, count)
  local t, finite = fn(net, X, Y, fused_opts(net, p, s), order, count)
  net.t = t
  if not finite then
    error("bmvr: weights became non-finite at sample " .. t .. " (learning rate too large?)", 3)
  end
end

-- The same steps through the C kernel, for one sample.
function bmvr.fused_step(net, x, y, p, s)
  fused_call(nm.bmvr.train, net, x:view(1, x:numel()), y:view(1, y:numel()), p, s)
end

function bmvr.fused_backprop_step(net, x, y, p, s)
  fused_call(nm.bmvr.backprop, net, x:view(1, x:numel()), y:view(1, y:numel()), p, s)
end

-- bmvr.epoch(net, X, Y, p, s [, o]): one pass over the rows of X [T x n],
-- Y [T x m] in o.order (a 1-D tensor of 1-based row numbers; default
-- 1..T), o.count samples of it (default all). o.method = "bmvr" (default)
-- or "backprop"; o.fused = true runs the whole pass in one C call.
function bmvr.epoch(net, X, Y, p, s, o)
  o = o or {}
  local backprop = o.method == "backprop"
  if o.method ~= nil and o.method ~= "bmvr" and not backprop then
    error("bmvr.epoch: method must be \"bmvr\" or \"backprop\", got " .. tostring(o.method), 2)
  end
  if o.fused then
    fused_call(backprop and nm.bmvr.backprop or nm.bmvr.train, net, X, Y, p, s, o.order, o.count)
    return
  end
  local step = backprop and bmvr.backprop_step or bmvr.step
  local count = o.count or (o.order and o.order:size(1)) or X:size(1)
  for i = 1, count do
    local r = o.order and math.tointeger(o.order:get(i)) or i
    step(net, X:row(r), Y:row(r), p, s)
  end
end

-- nm.rule interface: q = {net =, x =, y =, state = bmvr.scratch(net)}.
local function circuit_only(q)
  if q.net == nil or q.x == nil or q.y == nil then
    error("rule 'bmvr' is a circuit rule: call it with q = {net, x, y, state} " ..
          "(rules.bmvr.step) or use nm.bmvr (lua/nm/models/bmvr.lua), not on a connection", 3)
  end
end

bmvr.update = function(q, p)
  circuit_only(q)
  bmvr.step(q.net, q.x, q.y, p, q.state)
end

bmvr.fused = function(q, p)
  circuit_only(q)
  bmvr.fused_step(q.net, q.x, q.y, p, q.state)
end

return bmvr
