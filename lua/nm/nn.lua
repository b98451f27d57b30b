-- nm/nn.lua: network topologies: populations, connections (weights,
-- optional biases and masks, a plasticity rule), activations with their
-- derivatives, losses, and layered networks whose errors travel back
-- through an error pathway defined by a rule file (rules/backprop.lua:
-- W^T, fa.lua: fixed random B, dfa.lua: direct D, sign_symmetry.lua:
-- sign(W); see nm.rule).
--
--   local nn = require "nm.nn"
--   local net = nn.mlp{sizes = {784, 256, 10}, act = "relu", out = "softmax",
--                      loss = "xent", rule = "fa", params = {eta = 0.05},
--                      gen = nm.generator(1), dtype = "float32"}
--   net:forward(X)          -- X [B x 784] (rows are samples) or x [784]
--   net:backward(T)         -- T one-hot [B x 10] (or [10]): errors e_l
--   net:update()            -- each connection's rule changes its weights
--   net:train_batch(X, T)   -- the three above
--
-- Conventions (doc/models/baselines.md): W_l maps layer l-1 to
-- layer l and has shape n_l x n_{l-1}; a minibatch is stored as rows, so
-- A_l = Y_{l-1} W_l^T + 1 b_l^T is one GEMM per layer. e_l = dLoss/da_l
-- per sample; rules use batch means. Every buffer is allocated once per
-- batch size and reused: forward, backward and update allocate nothing
-- after the first call with a given batch size (spec/nn_spec.lua checks
-- collectgarbage("count")).

local nm = require "neuromic"
local rule = require "nm.rule"

local nn = {}

local format, sqrt = string.format, math.sqrt

-- ---------------------------------------------------------------- activations

-- Each activation: f(y, a, beta) writes y = f(a); df(d, a, y, beta)
-- writes d = f'(a) elementwise. softmax is not elementwise: its backward
-- is a Jacobian-vector product (see softmax_vjp). All allocate nothing.
nn.activations = {
  identity = {
    f = function(y, a) if y ~= a then y:copy(a) end end,
    df = function(d) d:fill(1) end,
  },
  sigmoid = {
    f = function(y, a) y:sigmoid(a) end,
    df = function(d, a) d:dsigmoid(a) end,
  },
  tanh = {
    f = function(y, a) y:tanh(a) end,
    df = function(d, a) d:dtanh(a) end,
  },
  relu = {
    f = function(y, a) y:relu(a) end,
    df = function(d, a) d:drelu(a) end,
  },
  softplus = {   -- log(1 + exp(beta a)) / beta
    f = function(y, a, beta) y:softplus(a, beta or 1) end,
    df = function(d, a, _, beta) d:dsoftplus(a, beta or 1) end,
  },
  softmax = {
    f = function(y, a) y:softmax(a) end,
    elementwise = false,
  },
}

-- An activation spec: "relu" or {"softplus", beta = 2}.
local function activation(spec, what)
  local name, beta = spec, nil
  if type(spec) == "table" then name, beta = spec[1] or spec.name, spec.beta end
  local act = nn.activations[name]
  if not act then
    local names = {}
    for k in pairs(nn.activations) do names[#names + 1] = k end
    table.sort(names)
    error(format("nn: unknown %s activation '%s' (one of %s)", what, tostring(name),
                 table.concat(names, ", ")), 3)
  end
  return {name = name, f = act.f, df = act.df, beta = beta,
          elementwise = act.elementwise ~= false}
end
nn.activation = activation

-- ---------------------------------------------------------------- losses

-- Squared error, L = 1/2 sum_k (y_k - t_k)^2 per sample; softmax cross-
-- entropy on the output pre-activation a, L = -sum_k t_k log softmax(a)_k.
-- For rows of samples (or one sample as a vector):
--   value(A, Y, T, S) -> the mean loss over the rows (S: scratch shaped
--     like T); grad(E, Y, T) writes E = dL/dy for mse and dL/da for xent
--     (with Y = softmax(A): E = Y - T). Both allocate nothing.
local function rows_of(T) return T:dim() == 2 and T:size(1) or 1 end
nn.losses = {
  mse = {
    value = function(_, Y, T, S)
      S:sub(Y, T)
      return 0.5 * S:dot(S) / rows_of(T)
    end,
    grad = function(E, Y, T) E:sub(Y, T) end,
  },
  xent = {
    value = function(A, _, T, S)
      S:logsoftmax(A)
      return -S:dot(T) / rows_of(T)
    end,
    grad = function(E, Y, T) E:sub(Y, T) end,
  },
}

-- ---------------------------------------------------------------- weights

-- Fills W (n_post x n_pre) and b by an init scheme:
--   "pytorch" (default): W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (as torch.nn.Linear)
--   "xavier": W ~ U(+-sqrt(6/(fan_in+fan_out))), b = 0
--   "he":     W ~ N(0, 2/fan_in), b = 0
--   "normal": W ~ N(0, std^2) (opts.std, default 0.01), b = 0
--   "zeros":  W = 0, b = 0
--   a function(W, b, gen, fan_in, fan_out)
-- opts.scale multiplies W afterwards.
function nn.init_weights(W, b, scheme, gen, opts)
  opts = opts or {}
  local fan_out, fan_in = W:size(1), W:size(2)
  scheme = scheme or "pytorch"
  local function need_gen()
    if not gen then error("nn.init_weights: init '" .. tostring(scheme) .. "' needs gen (nm.generator)", 3) end
  end
  if type(scheme) == "function" then
    scheme(W, b, gen, fan_in, fan_out)
  elseif scheme == "pytorch" then
    need_gen()
    local r = 1 / sqrt(math.max(fan_in, 1))
    W:uniform(gen, -r, r)
    if b then b:uniform(gen, -r, r) end
  elseif scheme == "xavier" then
    need_gen()
    local r = sqrt(6 / math.max(fan_in + fan_out, 1))
    W:uniform(gen, -r, r)
    if b then b:zero() end
  elseif scheme == "he" then
    need_gen()
    W:normal(gen, 0, sqrt(2 / math.max(fan_in, 1)))
    if b then b:zero() end
  elseif scheme == "normal" then
    need_gen()
    W:normal(gen, 0, opts.std or 0.01)
    if b then b:zero() end
  elseif scheme == "zeros" then
    W:zero()
    if b then b:zero() end
  else
    error(format("nn.init_weights: unknown init '%s' (pytorch, xavier, he, normal, zeros, " ..
                 "or a function)", tostring(scheme)), 2)
  end
  if opts.scale and opts.scale ~= 1 then W:scale(opts.scale) end
end

-- ---------------------------------------------------------------- populations

-- nn.population{n = 256, act = "relu", name = "hidden"}: a group of units
-- with an activation (a spec as for nn.mlp's act).
function nn.population(o)
  if type(o) ~= "table" or math.type(o.n) ~= "integer" or o.n < 1 then
    error("nn.population: {n = positive integer, act = name} expected", 2)
  end
  return {n = o.n, act = activation(o.act or "identity", "population"), name = o.name}
end

-- ---------------------------------------------------------------- connections

local Connection = {}
Connection.__index = Connection
nn.Connection = Connection

local function size_of(x, what)
  if type(x) == "table" and x.n then return x.n end
  if math.type(x) == "integer" and x > 0 then return x end
  error(format("nn.connection: %s must be a positive integer or a population", what), 3)
end

-- nn.connection{pre = n_pre | population, post = n_post | population,
--   bias = true, mask = tensor [n_post x n_pre] of 0/1 | nil,
--   density = p (a random Bernoulli(p) mask drawn from gen), gen = generator,
--   dtype = "float32", init = scheme, init_scale = 1, std = (for "normal"),
--   rule = name | rule instance, params = {...} (for a rule name),
--   plastic = true, name = "W1"}
-- Fields: W, Wt (= W:t(), a view made once), b, mask, rule, state,
-- plastic, n_pre, n_post. Masked weights are 0 and stay so under every
-- rule (rule.apply multiplies the change by the mask).
function nn.connection(o)
  if type(o) ~= "table" then error("nn.connection: options table expected", 2) end
  local n_pre, n_post = size_of(o.pre or o.n_pre, "pre"), size_of(o.post or o.n_post, "post")
  local dtype = o.dtype or "float32"
  local c = setmetatable({n_pre = n_pre, n_post = n_post, dtype = dtype, name = o.name,
                          plastic = o.plastic ~= false}, Connection)
  c.W = nm.zeros(n_post, n_pre, dtype)
  if o.bias ~= false then c.b = nm.zeros(n_post, dtype) end
  nn.init_weights(c.W, c.b, o.init, o.gen, {std = o.std, scale = o.init_scale})
  if o.mask then
    if not nm.is_tensor(o.mask) or not o.mask:same_shape(c.W) then
      error(format("nn.connection: mask must be a tensor of shape [%d x %d]", n_post, n_pre), 2)
    end
    c.mask = nm.zeros(n_post, n_pre, dtype):copy(o.mask)
    c.mask:ne(0)                       -- any non-zero entry is a synapse
  elseif o.density then
    if not o.gen then error("nn.connection: density needs gen (nm.generator)", 2) end
    c.mask = nm.zeros(n_post, n_pre, dtype):bernoulli(o.gen, o.density)
  end
  if c.mask then c.W:mul(c.mask) end
  c.Wt = c.W:t()
  if o.rule then c:set_rule(o.rule, o.params) end
  return c
end

-- Sets the plasticity rule (a name, path or instance; a connection
-- rule) and its state.
function Connection:set_rule(r, params)
  if not rule.is_rule(r) then r = rule.new(r, params) end
  rule.require_kind(r, "connection", nil, 2)
  self.rule = r
  self.state = r:init_state(self)
  return self
end

-- A = Y W^T + 1 b^T for a batch Y [B x n_pre] (ones: a vector of B ones),
-- or a = W y + b for one sample. Allocates nothing.
function Connection:forward(A, Y, ones)
  if Y:dim() == 1 then
    A:addmv(1, self.W, Y, 0)
    if self.b then A:add(self.b) end
  else
    A:addmm(1, Y, self.Wt, 0)
    if self.b then A:addr(1, ones, self.b) end
  end
  return A
end

-- The weights, bias, rule state (tensors: a checkpoint tree).
function Connection:state_table()
  return {W = self.W, b = self.b, mask = self.mask, state = self.state}
end

local function copy_tree(dst, src, what)
  for k, v in pairs(src) do
    local d = dst[k]
    if nm.is_tensor(v) then
      if not nm.is_tensor(d) then error(format("nn: state %s.%s has no tensor to load into", what, k), 3) end
      d:copy(v)
    elseif type(v) == "table" and type(d) == "table" then
      copy_tree(d, v, what .. "." .. tostring(k))
    elseif type(d) ~= "table" then
      dst[k] = v
    end
  end
end

-- Loads what state_table returned into the existing tensors (views of
-- them stay valid).
function Connection:load_state_table(st)
  copy_tree(self, {W = st.W, b = st.b, mask = st.mask}, self.name or "connection")
  if st.state then
    if type(self.state) == "table" then copy_tree(self.state, st.state, "rule state")
    else self.state = st.state end
  end
end

-- ---------------------------------------------------------------- layered networks

local MLP = {}
MLP.__index = MLP
nn.MLP = MLP

-- nn.mlp{sizes = {n_0, ..., n_L}, act = "relu" | {"softplus", beta = 2} (hidden
--   layers; acts = {...} gives one per hidden layer), out = "softmax" | "identity" | "sigmoid" | ..., loss = "xent" | "mse",
--   rule = "backprop" | "fa" | "dfa" | a path | instance (or a list per
--   layer), params = {eta = ...} (for rule names), feedback = a pathway
--   ("bp", "fa", "dfa", "sign_symmetry", a rule defining one, or a pathway
--   table; default: the rules'), gen = generator (required for random
--   inits), dtype = "float32", init = "pytorch", init_scale = 1, bias = true,
--   feedback_init = (default: init), feedback_scale = 1,
--   masks = {[l] = tensor}, density = {[l] = p}, keep_going = false,
--   check_every = 64 (samples between checks of the weights for NaN/inf)}
-- Fields: L, sizes, conns[1..L], acts[1..L], loss, feedback (the pathway's
-- name), pathway (its table), paths[name] = {pathway, state[1..L-1]} (the
-- state of every pathway drawn), updates (updates applied), keep_going,
-- nonfinite (the first non-finite report with keep_going), optim
-- (optional: see MLP:set_optimiser), mod (modulator for rules), fused
-- (train_batch's one-call steps by batch size, each built on first use
-- with that size, false when the network does not qualify; set fused to
-- false to always take the general path), zeros (optional: what makes the
-- buffers, see MLP:buffers).
-- The state of every built-in pathway (rule.pathways(): the FA and DFA
-- matrices) is drawn after the weights, in that order, from the same
-- generator with the weights' scheme, then the network's own pathway if
-- it is not built in (a pathway named like a built-in one takes its
-- place): runs with one seed start from the same W and the same feedback
-- matrices whichever rule they use.
function nn.mlp(o)
  if type(o) ~= "table" or type(o.sizes) ~= "table" or #o.sizes < 2 then
    error("nn.mlp: {sizes = {n_in, ..., n_out}, ...} expected", 2)
  end
  local sizes, L = o.sizes, #o.sizes - 1
  for i, n in ipairs(sizes) do
    if math.type(n) ~= "integer" or n < 1 then
      error(format("nn.mlp: sizes[%d] must be a positive integer", i), 2)
    end
  end
  local net = setmetatable({L = L, sizes = {}, dtype = o.dtype or "float32", conns = {},
                            acts = {}, paths = {}, tcache = {}, fused = {},
                            bufs = {}, updates = 0, keep_going = o.keep_going == true,
                            check_every = o.check_every or 64, checked = 0, unchecked = 0}, MLP)
  for l = 0, L do net.sizes[l] = sizes[l + 1] end
  net.loss = o.loss or "xent"
  if not nn.losses[net.loss] then
    error(format("nn.mlp: unknown loss '%s' (xent, mse)", tostring(net.loss)), 2)
  end
  for l = 1, L - 1 do
    net.acts[l] = activation(o.acts and o.acts[l] or o.act or "relu", "hidden")
  end
  net.acts[L] = activation(o.out or (net.loss == "xent" and "softmax" or "identity"), "output")
  if net.loss == "xent" and net.acts[L].name ~= "softmax" then
    error("nn.mlp: loss 'xent' (softmax cross-entropy) needs out = 'softmax'", 2)
  end
  for l = 1, L do
    local r = o.rule or "backprop"
    if type(r) == "table" and not rule.is_rule(r) then r = r[l] end
    net.conns[l] = nn.connection{
      pre = net.sizes[l - 1], post = net.sizes[l], bias = o.bias, dtype = net.dtype,
      gen = o.gen, init = o.init, init_scale = o.init_scale, std = o.std,
      mask = o.masks and o.masks[l], density = o.density and o.density[l],
      rule = r, params = o.params, name = "W" .. l}
  end
  local fb = o.feedback
  if fb == nil then
    for l = 1, L do
      local def = net.conns[l].rule.def
      local f = (def.pathway or def.feedback) and rule.pathway(def)
      if f and fb and f ~= fb then
        error(format("nn.mlp: layers use rules with different error pathways (%s, %s); " ..
                     "set feedback explicitly", fb.name, f.name), 2)
      end
      fb = fb or f
    end
  end
  local ok, pw = pcall(rule.pathway, fb or "bp")
  if not ok then error("nn.mlp: " .. tostring(pw), 2) end
  net.pathway, net.feedback = pw, pw.name
  -- Every pathway's state, built-in ones first (see above).
  local draw_opts = {std = o.std, scale = o.feedback_scale or o.init_scale}
  local finit = o.feedback_init or o.init
  local function draw(T) nn.init_weights(T, nil, finit, o.gen, draw_opts) end
  local list = rule.pathways()
  local own = true
  for i, p in ipairs(list) do
    if p.name == pw.name then list[i], own = pw, false end   -- takes a built-in's place
  end
  if own then list[#list + 1] = pw end
  for _, p in ipairs(list) do net:add_pathway(p, draw) end
  net.params, net.deltas, net.active = {}, {}, {}
  for l = 1, L do
    local c = net.conns[l]
    net.params[#net.params + 1] = c.W
    if c.b then net.params[#net.params + 1] = c.b end
  end
  return net
end

-- Draws the state of pathway p (a table) for every hidden layer, with
-- draw(T) filling a tensor; kept in self.paths[p.name].
function MLP:add_pathway(p, draw)
  local L, n = self.L, self.sizes
  local st = {}
  if p.init then
    for l = 1, L - 1 do
      st[l] = p.init(p.source == "output" and n[L] or n[l + 1], n[l], self.dtype, draw)
    end
  end
  self.paths[p.name] = {pathway = p, state = st}
  return self
end

-- The pathway table and its state for name (a pathway, or the network's).
function MLP:path(name)
  if name == nil then name = self.feedback end
  local entry = self.paths[type(name) == "table" and name.name or name]
  if not entry then
    local ok, p = pcall(rule.pathway, name)
    if not ok then error("nn: " .. tostring(p), 3) end
    entry = self.paths[p.name]
    if not entry then
      error(format("nn: this network has no state for error pathway '%s'", p.name), 3)
    end
  end
  return entry.pathway, entry.state
end

-- The matrix errors travel through to hidden layer l on pathway p with
-- state st (see nm.rule), and its transposed view (made once).
function MLP:feedback_matrix(p, st, l)
  local W = self.conns[p.source == "output" and self.L or l + 1].W
  local M = p.matrix(W, st[l])
  local Mt = self.tcache[M]
  if not Mt then Mt = M:t(); self.tcache[M] = Mt end
  return M, Mt
end

-- Buffers for batch size B, made on first use and kept: activations A,
-- outputs Y (Y[0] is the input), errors E, derivative scratch Dv, target
-- buffer T, a vector of ones, transposed views, and the rule quantities
-- q[l] of every connection. B == 1 also gets 1-D views (x1, a1, y1, e1).
-- The buffers are made by self.zeros(B [, n]) when it is set (nm.unroll
-- runs this network's forward, backward and update on traced tensors:
-- the batch path, no 1-D views), else nm.zeros.
function MLP:buffers(B)
  local bs = self.bufs[B]
  if bs then return bs end
  local dt, L, n = self.dtype, self.L, self.sizes
  local zeros = self.zeros
  local function z(m)
    if zeros then return m and zeros(B, m) or zeros(B) end
    return m and nm.zeros(B, m, dt) or nm.zeros(B, dt)
  end
  bs = {B = B, A = {}, Y = {}, E = {}, Dv = {}, Yt = {}, Et = {}, q = {}}
  bs.X = z(n[0])
  bs.Y[0], bs.Yt[0] = bs.X, bs.X:t()
  bs.inputs_t = setmetatable({[bs.X] = bs.Yt[0]}, {__mode = "k"})   -- input -> its transpose
  bs.ones = nm.ones(B, dt)
  for l = 1, L do
    bs.A[l] = z(n[l])
    bs.Y[l] = self.acts[l].name == "identity" and bs.A[l] or z(n[l])
    bs.E[l] = z(n[l])
    bs.Dv[l] = z(n[l])
    bs.Yt[l], bs.Et[l] = bs.Y[l]:t(), bs.E[l]:t()
  end
  bs.T = z(n[L])
  bs.LS = z(n[L])                        -- loss scratch
  bs.rows = z()                          -- per-row sums (softmax backward)
  bs.onesn = {}                          -- ones per layer width (softmax backward)
  for l = 1, L do
    if not self.acts[l].elementwise then bs.onesn[l] = nm.ones(n[l], dt) end
  end
  bs.pred = nm.zeros(B, "float64")       -- argmax indices (accuracy)
  bs.tpred = nm.zeros(B, "float64")
  if B == 1 and not zeros then
    bs.x1, bs.t1 = bs.X:select(1, 1), bs.T:select(1, 1)
    bs.a1, bs.y1, bs.e1 = {}, {}, {}
    bs.y1[0] = bs.x1
    for l = 1, L do
      bs.a1[l], bs.y1[l], bs.e1[l] = bs.A[l]:select(1, 1), bs.Y[l]:select(1, 1), bs.E[l]:select(1, 1)
    end
  end
  for l = 1, L do
    local q = rule.quantities(self.conns[l])
    q.pre, q.pre_t = bs.Y[l - 1], bs.Yt[l - 1]
    q.post, q.post_t, q.a = bs.Y[l], bs.Yt[l], bs.A[l]
    q.error, q.error_t = bs.E[l], bs.Et[l]
    q.batch, q.ones = B, bs.ones
    bs.q[l] = q
  end
  self.bufs[B] = bs
  return bs
end

local function check_input(self, X)
  if not rule.is_tensor(X) then error("nn: input must be a tensor", 3) end
  local n0 = self.sizes[0]
  local d = X:dim()
  if (d == 1 and X:size(1) ~= n0) or (d == 2 and X:size(2) ~= n0) or d < 1 or d > 2 then
    local s = X:size()
    error(format("nn: input of size [%s] does not fit the input layer (%d units): " ..
                 "expected [B x %d] or [%d]", table.concat(s, " x "), n0, n0, n0), 3)
  end
end

-- A batch input of the network's dtype that BLAS can read is used in
-- place (no copy); the transposed view the rules read is made once per
-- input tensor and kept while the tensor lives (data.batches serves two
-- buffers in turn). Anything else is copied into the buffer set's own X.
-- A traced input (nm.unroll) is used in place.
local function bind_input(bs, X, dtype)
  local src = X
  if nm.is_tensor(X) and (X:dtype() ~= dtype or not X:is_contiguous()) then
    bs.X:copy(X)
    src = bs.X
  end
  if bs.Y[0] ~= src then
    local t = bs.inputs_t[src]
    if not t then t = src:t(); bs.inputs_t[src] = t end
    bs.Y[0], bs.Yt[0] = src, t
    bs.q[1].pre, bs.q[1].pre_t = src, t
  end
end

-- Forward pass. X: [B x n_0] (rows are samples) or [n_0] (one sample;
-- one sample, [1 x n_0] too, uses matrix-vector products). Returns the
-- output buffer Y_L ([B x n_L], or a [n_L] view for a 1-D input), valid
-- until the next forward with this batch size. A batch input is read in
-- place (not copied) by this pass and by backward/update: do not change
-- it before update. One sample is copied. Allocates nothing after the
-- first call per batch size and input tensor.
function MLP:forward(X)
  check_input(self, X)
  local L, conns, acts = self.L, self.conns, self.acts
  local vector = X:dim() == 1
  local bs = self:buffers(vector and 1 or X:size(1))
  local A, Y = bs.A, bs.Y
  if bs.x1 then                        -- one sample: matrix-vector products
    if vector then bs.x1:copy(X) else bs.X:copy(X) end
    local a1, y1 = bs.a1, bs.y1
    for l = 1, L do
      local act = acts[l]
      conns[l]:forward(a1[l], y1[l - 1])
      act.f(Y[l], A[l], act.beta)
    end
    self.cur = bs
    return vector and y1[L] or Y[L]
  end
  bind_input(bs, X, self.dtype)
  local ones = bs.ones
  for l = 1, L do
    local act = acts[l]
    conns[l]:forward(A[l], Y[l - 1], ones)
    act.f(Y[l], A[l], act.beta)
  end
  self.cur = bs
  return Y[L]
end

-- nn.softmax_vjp(E, Y, S, rows, ones_n): e = J_softmax^T g for each row,
-- given y = softmax(a) and g = dL/dy in E: e = y .* (g - <g, y>) (S
-- scratch like E, rows [B] scratch, ones_n a vector of n ones).
local function softmax_vjp(E, Y, S, rows, ones_n)
  S:mul(E, Y)
  rows:addmv(1, S, ones_n, 0)
  E:addr(-1, rows, ones_n)
  E:mul(Y)
end
nn.softmax_vjp = softmax_vjp

-- E .*= f'(A): one fused pass for the built-in elementwise activations
-- (E:mul_dact), the activation's df into scratch D then a product for
-- others (activations added to nn.activations).
local FUSED_DACT = {relu = true, sigmoid = true, tanh = true, softplus = true}
local function backprop_act(act, E, A, Y, D)
  local name = act.name
  if name == "identity" then return end
  if FUSED_DACT[name] and nn.activations[name].df == act.df then
    E:mul_dact(A, Y, name, act.beta or 1)
  else
    act.df(D, A, Y, act.beta)
    E:mul(D)
  end
end

local function targets_of(self, bs, T)
  if not rule.is_tensor(T) then error("nn: targets must be a tensor", 3) end
  if T:dim() == 1 then
    if bs.B ~= 1 or T:size(1) ~= self.sizes[self.L] then
      error(format("nn: targets [%d] do not fit the output (%d units, batch %d)",
                   T:size(1), self.sizes[self.L], bs.B), 3)
    end
    bs.t1:copy(T)
    return bs.T
  end
  if T:size(1) ~= bs.B or T:size(2) ~= self.sizes[self.L] then
    error(format("nn: targets [%d x %d] do not fit the output [%d x %d]", T:size(1), T:size(2),
                 bs.B, self.sizes[self.L]), 3)
  end
  if T:dtype() ~= self.dtype then bs.T:copy(T); return bs.T end
  return T
end

-- Backward pass for the targets of the last forward: the output error
-- e_L = dLoss/da_L (softmax + xent: y - t), then the hidden errors through
-- the pathway `feedback` (a name; default self.feedback), whose matrix M_l
-- (nm.rule) carries e_src = e_{l+1} or e_L back:
--   e_l = (M_l^T e_src) .* f'(a_l)    (bp: M_l = W_{l+1}; fa: B_{l+1};
--                                      dfa: D_l^T; sign_symmetry: sign(W_{l+1}))
-- T: one-hot or real targets [B x n_L] ([n_L] for one sample). Errors are
-- per sample (not divided by B). Allocates nothing.
function MLP:backward(T, feedback)
  local bs = self.cur
  if not bs then error("nn: backward before forward", 2) end
  local pw, st = self:path(feedback)
  T = targets_of(self, bs, T)
  local L, E, A, Y, Dv, acts = self.L, bs.E, bs.A, bs.Y, bs.Dv, self.acts
  local EL = E[L]
  nn.losses[self.loss].grad(EL, Y[L], T)           -- xent: softmax(a) - t; mse: dL/dy
  if self.loss == "mse" then
    local act = acts[L]
    if act.elementwise then
      backprop_act(act, EL, A[L], Y[L], Dv[L])
    else
      softmax_vjp(EL, Y[L], Dv[L], bs.rows, bs.onesn[L])
    end
  end
  local single, src = bs.e1 ~= nil, pw.source == "output" and L or nil
  for l = L - 1, 1, -1 do
    local M, Mt = self:feedback_matrix(pw, st, l)
    if single then
      bs.e1[l]:addmv(1, Mt, bs.e1[src or l + 1], 0)
    else
      E[l]:addmm(1, E[src or l + 1], M, 0)
    end
    local act = acts[l]
    if act.elementwise then
      backprop_act(act, E[l], A[l], Y[l], Dv[l])
    else
      softmax_vjp(E[l], Y[l], Dv[l], bs.rows, bs.onesn[l])
    end
  end
  return E
end

local huge = math.huge
local function finite(x) return x == x and x ~= huge and x ~= -huge end

-- Stops the run (an error, one line) when a weight or bias became NaN or
-- infinite, naming the rule, the connection and the update; with
-- keep_going, records the first such line in self.nonfinite instead.
-- MLP:update calls it once at least self.check_every samples have been
-- trained on since the last check (a pass over every weight, so small
-- batches do not pay it each time); the line then names the updates
-- since the last check.
function MLP:check_finite()
  if self.nonfinite then return end
  local from = self.checked + 1
  self.checked, self.unchecked = self.updates, 0
  for l = 1, self.L do
    local c = self.conns[l]
    local what = not c.W:all_finite() and "weights" or
                 (c.b and not c.b:all_finite() and "biases") or nil
    if what then
      local at = from >= self.updates and format("at update %d", self.updates) or
                 format("between updates %d and %d", from, self.updates)
      local msg = format("nn: rule '%s' made the %s of connection %s non-finite %s",
                         c.rule.name, what, c.name or tostring(l), at)
      if not self.keep_going then error(msg, 0) end
      self.nonfinite = msg
      return
    end
  end
end

-- Applies each connection's rule to it (in layer order) with the
-- quantities of the last forward/backward. With an optimiser, rules write
-- their changes (deferred) and the optimiser applies them. Respects
-- rule.set_learning and conn.plastic. Then checks the weights are finite
-- (MLP:check_finite). Allocates nothing.
function MLP:update()
  local bs = self.cur
  if not bs then error("nn: update before forward", 2) end
  if not rule.learning() then return end
  local opt, mod = self.optim, self.mod
  local k, active, deltas = 0, self.active, self.deltas
  for l = 1, self.L do
    local c, q = self.conns[l], bs.q[l]
    q.defer, q.mod, q.state = opt ~= nil, mod, c.state
    local changed = rule.apply(c.rule, c, q)
    if opt then
      k = k + 1
      active[k], deltas[k] = changed, c.dW
      if c.b then k = k + 1; active[k], deltas[k] = changed, c.db end
    end
  end
  if opt then opt:apply(self.params, deltas, active) end
  self.updates = self.updates + 1
  self.unchecked = self.unchecked + bs.B
  if self.unchecked >= self.check_every then self:check_finite() end
end

-- The training step in one C call: nm.kernels.mlp_step over this
-- network's own buffers of batch size B, for a network whose every
-- connection learns by the fused delta rule (rules/backprop.lua's, which
-- fa and dfa share; not compiled: rule.compiled_update) through the
-- pathway bp, fa or dfa, with built-in activations (and, for B > 1, no
-- masks). It runs the kernels that forward, backward and update run, in
-- the same order on the same tensors, so the weights, buffers and
-- counters after it are theirs bit for bit (spec/nn_spec.lua); it saves
-- the interpreter and the bindings' checks between ~7 kernel calls per
-- layer. Built on the first train_batch with batch size B (kept in
-- self.fused[B]); false when the network does not qualify.
local DIRECT_PATHWAYS = {bp = true, fa = true, dfa = true}
local function fused_step(self, B)
  local delta = rule.definition("backprop").fused
  local pw, st = self:path()
  if not DIRECT_PATHWAYS[pw.name] or rule.pathway(pw.name) ~= pw then return false end
  local bs = self:buffers(B)
  if B == 1 and bs.q[1].pre ~= bs.X then return false end
  local f = {bs = bs, feedback = self.feedback, loss = self.loss, W = {}, b = {}, mask = {},
             rules = {}, acts = {}, beta = {}, etas = {}}
  local layers = {}
  for l = 1, self.L do
    local c, act, q = self.conns[l], self.acts[l], bs.q[l]
    local r, builtin = c.rule, nn.activations[act.name]
    if not (r and r.def.fused == delta and r.use_fused) or r.use_compiled or q.W ~= c.W or q.b ~= c.b or
       q.mask ~= c.mask or not builtin or builtin.f ~= act.f or builtin.df ~= act.df or
       (act.name == "softmax" and l < self.L) then
      return false
    end
    local Mt
    if l < self.L then Mt = select(2, self:feedback_matrix(pw, st, l)) end
    f.W[l], f.b[l], f.mask[l], f.rules[l], f.acts[l], f.beta[l] = c.W, c.b, c.mask, r, act,
                                                                   act.beta
    layers[l] = {W = c.W, b = c.b, mask = c.mask, Mt = Mt, A = bs.A[l], Y = bs.Y[l],
                 E = bs.E[l], a1 = bs.a1 and bs.a1[l], y1 = bs.y1 and bs.y1[l],
                 e1 = bs.e1 and bs.e1[l], act = act.name, beta = act.beta or 1}
  end
  local ok, step = pcall(nm.kernels.mlp_step, {loss = self.loss,
                         from_output = pw.source == "output", X = bs.X, x1 = bs.x1,
                         T = bs.T, t1 = bs.t1, ones = B > 1 and bs.ones or nil, layers = layers})
  if not ok then return false end
  f.step = step
  return f
end

-- The step of batch size B (made on first use), with its learning rates
-- (false for a layer that does not learn) in f.etas; false when there is
-- none (self.fused = false: never), or the network learns otherwise now
-- (an optimiser, learning switched off), or it changed since the step was
-- made (then it is made again on the next call).
local function fused_for(self, B)
  local fused = self.fused
  if not fused then return false end
  local f = fused[B]
  if f == nil then
    f = fused_step(self, B)
    fused[B] = f
  end
  if not f or self.optim or not rule.learning() or self.feedback ~= f.feedback or
     self.loss ~= f.loss then
    return false
  end
  local conns, acts, etas = self.conns, self.acts, f.etas
  for l = 1, self.L do
    local c, act = conns[l], acts[l]
    local r = c.rule
    if c.W ~= f.W[l] or c.b ~= f.b[l] or c.mask ~= f.mask[l] or r ~= f.rules[l] or
       not r.use_fused or r.use_compiled or act ~= f.acts[l] or act.beta ~= f.beta[l] then
      fused[B] = nil                     -- made again on the next call
      return false
    end
    etas[l] = c.plastic ~= false and r.p.eta
  end
  return f
end

local unpack = table.unpack

-- forward + backward + update on one batch (or one sample): for a
-- network the one-call step serves (fused_step), that step.
function MLP:train_batch(X, T)
  if self.fused and nm.is_tensor(X) then
    local d = X:dim()
    local B = d == 1 and 1 or d == 2 and X:size(1)
    if B and B > 1 then check_input(self, X) end
    local f = B and B >= 1 and fused_for(self, B)
    if f then
      if B > 1 then bind_input(f.bs, X, self.dtype) end   -- the input as forward takes it
      if f.step:run(B > 1 and f.bs.Y[0] or X, T, unpack(f.etas, 1, self.L)) then
        self.cur = f.bs
        self.updates = self.updates + 1
        self.unchecked = self.unchecked + B
        if self.unchecked >= self.check_every then self:check_finite() end
        return
      end
    end
  end
  self:forward(X)
  self:backward(T)
  self:update()
end

-- Online learning over rows: one training step (train_batch) on each of
-- rows first .. first + count - 1 of X [N x n_0] with targets T [N x n_L],
-- in order (first = 1 and count = the rest by default; or given as opts =
-- {first =, count =}). With opts = {order = list [, first =, count =]}:
-- on rows order[first], ..., order[first + count - 1] instead (order a
-- list of 1-based row numbers, e.g. a shuffled epoch's, data.batches's
-- Batches:epoch_order(); first = 1 and count = the rest of the list by
-- default; every position used is checked before any step). The same
-- weights, buffers and counters as those calls bit for bit (spec/nn_spec.lua); for a network the one-sample
-- C step serves (see fused_step), the rows run in C in stretches that end
-- where train_batch would check the weights, each layer's update fused
-- with the next sample's pass through it (nm.kernels.mlp_step's run_rows
-- and run_order: the weights are read once per step instead of twice).
-- Otherwise train_batch on each row (a view per row).
function MLP:train_online(X, T, first, count)
  if not nm.is_tensor(X) or X:dim() ~= 2 or not nm.is_tensor(T) or T:dim() ~= 2 then
    error("nn: train_online needs X [N x n_0] and T [N x n_L] (rows are samples)", 2)
  end
  local N = math.min(X:size(1), T:size(1))
  local order, len = nil, N
  if type(first) == "table" then
    order, first, count = first.order, first.first, first.count
    if order ~= nil and type(order) ~= "table" then
      error("nn: train_online: opts.order must be a list of row numbers", 2)
    end
    len = order and #order or N
  end
  first = first or 1
  count = count or len - first + 1
  if math.type(first) ~= "integer" or math.type(count) ~= "integer" or first < 1 or count < 0 or
     first > len + 1 or count > len - first + 1 then
    local last = math.type(first) == "integer" and math.type(count) == "integer" and
                 first + count - 1
    if order then
      error(format("nn: train_online: positions %s .. %s are not in the order (%d rows)",
                   tostring(first), tostring(last), len), 2)
    end
    error(format("nn: train_online: rows %s .. %s are not in X [%d x %d] and T [%d x %d]",
                 tostring(first), tostring(last),
                 X:size(1), X:size(2), T:size(1), T:size(2)), 2)
  end
  local last = first + count - 1
  if order then
    for p = first, last do
      local r = order[p]
      if math.type(r) ~= "integer" or r < 1 or r > N then
        error(format("nn: train_online: order[%d] = %s is not a row of X [%d x %d] and T [%d x %d]",
                     p, tostring(r), X:size(1), X:size(2), T:size(1), T:size(2)), 2)
      end
    end
  end
  local i = first
  while i <= last do
    local f = fused_for(self, 1)
    if not f then break end
    local n = math.max(1, math.min(last - i + 1, self.check_every - self.unchecked))
    local step = f.step
    if order then
      if not step:run_order(X, T, order, i, n, unpack(f.etas, 1, self.L)) then break end
    elseif not step:run_rows(X, T, i, n, unpack(f.etas, 1, self.L)) then
      break
    end
    self.cur = f.bs
    self.updates = self.updates + n
    self.unchecked = self.unchecked + n
    if self.unchecked >= self.check_every then self:check_finite() end
    i = i + n
  end
  for p = i, last do
    local r = order and order[p] or p
    self:train_batch(X:narrow(1, r, 1), T:narrow(1, r, 1))
  end
end

-- An optimiser (nm.optim) that consumes the rules' changes; nil removes it.
function MLP:set_optimiser(opt)
  self.optim = opt
  return self
end

-- Mean loss over the batch of the last forward, for targets T.
-- Allocates nothing.
function MLP:loss_value(T)
  local bs = self.cur
  if not bs then error("nn: loss before forward", 2) end
  T = targets_of(self, bs, T)
  local L = self.L
  return nn.losses[self.loss].value(bs.A[L], bs.Y[L], T, bs.LS)
end

-- Number of rows of the last forward whose output argmax matches the
-- label: labels is a Lua list of 1-based classes, or one-hot/score
-- targets [B x n_L] (compared by argmax). Allocates nothing.
function MLP:correct(labels)
  local bs = self.cur
  if not bs then error("nn: correct before forward", 2) end
  local pred = bs.pred
  pred:argmax(bs.Y[self.L], 2)
  local n = 0
  if nm.is_tensor(labels) then
    local tp = bs.tpred
    tp:argmax(labels, 2)
    for i = 1, bs.B do if pred:get(i) == tp:get(i) then n = n + 1 end end
  else
    for i = 1, bs.B do if pred:get(i) == labels[i] then n = n + 1 end end
  end
  return n
end

-- Loss and accuracy over a whole data set (X [N x n_0], T [N x n_L],
-- labels optional), in batches of `batch` rows; learning untouched. A
-- non-finite loss stops the run as non-finite weights do (check_finite).
function MLP:evaluate(X, T, batch, labels)
  if self.unchecked > 0 then self:check_finite() end
  batch = batch or 1000
  local N = X:size(1)
  local loss, correct = 0, 0
  local first = 1
  while first <= N do
    local rows = math.min(batch, N - first + 1)
    local xb, tb = X:narrow(1, first, rows), T:narrow(1, first, rows)
    self:forward(xb)
    loss = loss + self:loss_value(tb) * rows
    if labels then
      local lb = self._lab or {}
      self._lab = lb
      for i = 1, rows do lb[i] = labels[first + i - 1] end
      for i = rows + 1, #lb do lb[i] = nil end
      correct = correct + self:correct(lb)
    else
      correct = correct + self:correct(tb)
    end
    first = first + rows
  end
  if not finite(loss) and not self.nonfinite then
    local msg = format("nn: the loss of rule '%s' is non-finite (%s) at update %d",
                       self.conns[1].rule.name, tostring(loss), self.updates)
    if not self.keep_going then error(msg, 0) end
    self.nonfinite = msg
  end
  return loss / N, correct / N
end

-- The state of the network as a checkpoint tree (tensors are the live
-- ones: checkpoint.save copies their bytes).
function MLP:state()
  local st = {conns = {}, paths = {}, updates = self.updates}
  for l = 1, self.L do st.conns[l] = self.conns[l]:state_table() end
  for name, entry in pairs(self.paths) do st.paths[name] = entry.state end
  return st
end

-- Loads a state from MLP:state (through a checkpoint) into this network.
function MLP:load_state(st)
  if type(st) ~= "table" or type(st.conns) ~= "table" or #st.conns ~= self.L then
    error("nn: state does not belong to a network with " .. self.L .. " layers", 2)
  end
  for l = 1, self.L do
    local s = st.conns[l]
    if not s.W:same_shape(self.conns[l].W) then
      error(format("nn: state layer %d has weights of another shape", l), 2)
    end
    self.conns[l]:load_state_table(s)
  end
  for name, s in pairs(st.paths or {}) do
    local entry = self.paths[name]
    if not entry then error(format("nn: state has error pathway '%s', this network has not", name), 2) end
    copy_tree(entry.state, s, "pathway " .. name)
  end
  self.updates = st.updates or self.updates
  self.checked = self.updates
end

-- Switches learning of every connection (per-connection switch).
function MLP:set_plastic(on)
  for l = 1, self.L do self.conns[l].plastic = not not on end
end

-- A one-line description: "784-256-10 relu/softmax xent, fa".
function MLP:describe()
  local s = {}
  for l = 0, self.L do s[#s + 1] = tostring(self.sizes[l]) end
  local hidden = self.L > 1 and self.acts[1].name or "-"
  return format("%s %s/%s %s, feedback %s, rule %s", table.concat(s, "-"), hidden,
                self.acts[self.L].name, self.loss, self.feedback, self.conns[1].rule.name)
end

return nn
