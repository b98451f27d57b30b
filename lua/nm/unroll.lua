-- nm/unroll.lua: meta-gradients of plasticity rules' parameters. A network
-- trained by its rules on T minibatches, then scored on a query batch: the
-- query loss is a function of the rules' numeric parameters (a learning
-- rate eta, BCM's tau, ...) and of the initial weights, and this module
-- gives its exact gradient, for connection rules in an nn.mlp, for
-- circuit rules in a microcircuit trained in the steady state, for a
-- BMVR network's (unroll.bmvr: net:train's per-sample pass) and for a
-- folded autoencoder's (unroll.folded_ae: a settle of a fixed number of
-- Euler steps, then the rule).
--
--   local unroll = require "nm.unroll"
--   local u = unroll.mlp(net, {params = {"eta"}, batch = 8})
--   local loss, g = u:gradient(X, T, Xq, Tq)   -- g[k] = d loss / d (u.names[k])
--
-- One training step is traced from the model's own code run on traced
-- tensors (nm.compile.trace's Refs), with the learned parameters standing
-- for entries of one vector theta: for an nn.mlp, its own train_batch
-- (MLP:forward, MLP:backward through the pathway, MLP:update: rule.apply
-- of every connection's Lua update(q, p)) on a copy with traced weights
-- and buffers (MLP:buffers' self.zeros); for a microcircuit, Net:steady_state and Net:steady_update with every circuit
-- rule's step(s, p). nm.compile generates the step's C and, by reverse
-- mode on the same graph, its adjoint; they run as ag.scan's fused kernel
-- (checkpointed: about 2 sqrt(T) states kept), and the query loss, also
-- traced from the model's code, as a compiled function on the same tape.
-- Without a C compiler the same graphs run interpreted.
--
-- The step reads: the weights, biases and the rule states' tensors that
-- it reads (the unrolled state; rule state written before it is read,
-- Oja's C, is the rule's scratch and left out), theta, the step's
-- minibatch and targets, the rules' other numeric parameters and a
-- numeric modulator (net.mod) as numbers read at every call (a parameter
-- that is 0 when traced is the constant 0, as in rule.compiled_update: a
-- kernel per set of zero parameters); the pathway's state (FA's B, DFA's
-- D) and masks are constants of the step, passed at every call; the
-- parameters of a wrapped rule (rule.lowpass's inner one) are numbers in
-- the kernel, their values part of its key. Rule state may nest tables
-- (paths "inner.theta"). Not supported: an optimiser on the network (the
-- rules' changes are applied as they are), batch sizes that change within
-- an unroll, the microcircuit's full dynamics (C without an adjoint), the
-- folded autoencoder's adaptive settle (branches on values).

local nm = require "neuromic"
local ag = require "nm.autograd"
local compile = require "nm.compile"
local trace = require "nm.compile.trace"
local graph = require "nm.compile.graph"
local nn = require "nm.nn"

local unroll = {}

local format, concat = string.format, table.concat

local function fail(msg, level) error("unroll: " .. msg, (level or 1) + 1) end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

-- The tensors of a rule state, nested tables included (rule.lowpass keeps
-- its inner rule's state in st.inner): {path = "inner.C", t = tensor}, in
-- a fixed order.
local function state_tensors(tab, prefix, out, seen)
  out, seen = out or {}, seen or {}
  if seen[tab] then return out end
  seen[tab] = true
  for _, k in ipairs(sorted_keys(tab)) do
    local v = tab[k]
    local path = (prefix or "") .. tostring(k)
    if nm.is_tensor(v) then out[#out + 1] = {path = path, t = v}
    elseif type(v) == "table" then state_tensors(v, path .. ".", out, seen) end
  end
  return out
end

-- The value at a path ("inner.C") of a table.
local function at_path(tab, path)
  for k in path:gmatch("[^.]+") do
    if type(tab) ~= "table" then return nil end
    local v = tab[k]
    if v == nil then v = tab[tonumber(k)] end
    tab = v
  end
  return tab
end

-- A network object that shares net's fields and methods: the models'
-- shadows below replace the fields their traced code must not touch.
local function shallow_copy(net)
  local sh = setmetatable({}, getmetatable(net))
  for k, v in pairs(net) do sh[k] = v end
  return sh
end

local U = {}
U.__index = U

-- The common part of an unroll: model = {net =, conns = {{name =, c =
-- (a connection: W, b, state, rule, plastic; without a rule, a tensor W
-- of the state that no rule drives)}, ...}, n_in =, n_out =, step =
-- function(u, W, b, st, P, X, T, mod, extra) -> {[i] = {W =, b =}} (new
-- values per connection; the rule states' Refs are read after it), loss =
-- function(u, W, b, Xq, Tq) -> a scalar symbol, what (its name), setup =
-- function(u) (optional: the traces' constants), mod = true (a numeric
-- net.mod is read at every call), constant = {name = true} (parameters
-- that are numbers in the kernel, their values part of its key), extra =
-- {names}, extra_values = function(u, steps) -> {[name] = {per step}}
-- (scalars that change from step to step: extra[name] in the step),
-- equation (for the C's comment)}; o as unroll.mlp's.
local function new_unroll(model, o, level)
  level = (level or 1) + 1
  local net = model.net
  local B = o.batch
  if math.type(B) ~= "integer" or B < 1 then fail(model.what .. ": batch must be a positive integer", level) end
  local Bq = o.query_batch or B
  if math.type(Bq) ~= "integer" or Bq < 1 then
    fail(model.what .. ": query_batch must be a positive integer", level)
  end
  if o.mode ~= nil and o.mode ~= "auto" and o.mode ~= "compile" and o.mode ~= "interpret" then
    fail(model.what .. ": mode must be 'auto', 'compile' or 'interpret', got " .. tostring(o.mode), level)
  end
  local self = setmetatable({net = net, model = model, conns = model.conns, B = B, Bq = Bq,
                             dtype = net.dtype, mode = o.mode, segment = o.segment, names = {},
                             learned = {}, state_names = {}, slots = {}, shapes = {}, fns = {},
                             workspaces = {}}, U)
  -- the learned parameters: theta's entries
  local want = o.params
  if type(want) ~= "table" then fail(model.what .. ": params must be a list of parameter names", level) end
  local per_conn = want[1] == nil and next(want) ~= nil
  if per_conn then
    for key in pairs(want) do
      local ok = false
      for i, e in ipairs(self.conns) do ok = ok or key == i or key == e.name or key == e.pname end
      if not ok then fail(format("%s: params names no connection '%s'", model.what, tostring(key)), level) end
    end
  end
  local found = {}
  for i, e in ipairs(self.conns) do
    local c = e.c
    local inst = c.rule
    local list = per_conn and (want[i] or want[e.name] or want[e.pname] or {}) or want
    self.learned[i] = {}
    if not inst and per_conn and #list > 0 then
      fail(format("%s: %s is driven by no rule", model.what, e.name), level)
    end
    if not inst then list = {} end
    for _, k in ipairs(list) do
      local v = inst.p[k]
      if type(v) == "number" and (per_conn or c.plastic ~= false) then
        self.names[#self.names + 1] = format("%s.%s", e.pname or e.name, k)
        self.learned[i][k] = #self.names
        found[k] = true
      elseif per_conn then
        fail(format("%s: rule '%s' of %s has no numeric parameter '%s'", model.what, inst.name,
                    e.name, tostring(k)), level)
      end
    end
  end
  if not per_conn then
    for _, k in ipairs(want) do
      if not found[k] then
        fail(format("%s: no plastic connection's rule has a numeric parameter '%s'", model.what,
                    tostring(k)), level)
      end
    end
  end
  if #self.names == 0 then fail(model.what .. ": no parameter to learn", level) end
  if model.setup then model.setup(self) end
  -- the state: every connection's W and b, and the tensors of its rule
  -- state; a first trace leaves out the rule state the step writes before
  -- reading it (Oja's C; the steady microcircuit's T) or never touches
  local full = {}
  for i, e in ipairs(self.conns) do
    local c = e.c
    full[i] = {W = true, b = c.b ~= nil, state = {}}
    if type(c.state) == "table" then
      for _, x in ipairs(state_tensors(c.state)) do
        if x.t:dtype() ~= net.dtype then
          fail(format("%s: rule state %s.%s is %s, the network %s", model.what, e.name, x.path,
                      x.t:dtype(), net.dtype), level)
        end
        full[i].state[#full[i].state + 1] = x.path
      end
    elseif c.state ~= nil then
      fail(format("%s: the state of rule '%s' is not a table of tensors", model.what, c.rule.name), level)
    end
  end
  self:layout(full)
  local sc = self:fixed()
  local g, outs = trace.run(net.dtype, self:spec(sc), function(S, theta, X, T, ...)
    return self:step_graph(S, theta, X, T, sc, {...})
  end)
  local keep = {}
  local identity = {}
  for i, o in ipairs(outs) do if o == g.inputs[i] then identity[i] = true end end
  local others = {}
  for i, o in ipairs(outs) do if not identity[i] then others[#others + 1] = o end end
  local reach = graph.reachable(others)
  for i, e in ipairs(self.conns) do
    keep[i] = {W = true, b = full[i].b, state = {}}
    for _, k in ipairs(full[i].state) do
      local slot = self.slots[i].state[k]
      if reach[g.inputs[slot]] then keep[i].state[#keep[i].state + 1] = k end
    end
  end
  self:layout(keep)
  self:fn()           -- compiled now: a kernel that fails, fails here
  return self
end

-- The state's layout from keep[i] = {W = true, b = bool, state = {keys}}.
function U:layout(keep)
  self.state_names, self.shapes, self.slots = {}, {}, {}
  for i, e in ipairs(self.conns) do
    local c, slot = e.c, {state = {}}
    self.slots[i] = slot
    local function add(name, t)
      self.state_names[#self.state_names + 1] = name
      self.shapes[#self.shapes + 1] = t:size()
      return #self.state_names
    end
    slot.W = add(e.name, c.W)
    if keep[i].b then slot.b = add(e.bname or (e.name .. ".b"), c.b) end
    for _, path in ipairs(keep[i].state) do
      slot.state[path] = add(format("%s.%s", e.name, path), at_path(c.state, path))
    end
  end
end

-- The rules' numeric parameters that are not learned (read at every call)
-- and the modulator: {connection, name} per scalar input, and the key of
-- the ones that are 0 (fixed in the kernel).
function U:fixed()
  local sc, zero = {}, {}
  local constant = self.model.constant or {}
  for i, e in ipairs(self.conns) do
    local p = e.c.rule and e.c.rule.p or {}
    for _, k in ipairs(sorted_keys(p)) do
      if type(p[k]) == "number" and not self.learned[i][k] then
        if p[k] == 0 then zero[#zero + 1] = i .. "." .. k
        elseif constant[k] then zero[#zero + 1] = format("%d.%s=%.17g", i, k, p[k])
        else sc[#sc + 1] = {i, k} end
      elseif type(p[k]) == "string" and constant[k] then zero[#zero + 1] = i .. "." .. k .. "=" .. p[k]
      end
    end
  end
  -- the parameters of wrapped rules (rule.lowpass's inner one) are numbers
  -- in the kernel: their values key it
  for _, e in ipairs(self.conns) do
    local x = e.c.rule and e.c.rule.inner
    while x do
      for _, k in ipairs(sorted_keys(x.p)) do zero[#zero + 1] = k .. "=" .. tostring(x.p[k]) end
      x = x.inner
    end
  end
  local key = concat(zero, ",")
  if self.model.mod then
    -- a number read at every call; nil, or a tensor (a constant): in the kernel
    if type(self.net.mod) == "number" then sc[#sc + 1] = {0, "mod"}; key = key .. "|mod"
    elseif self.net.mod ~= nil then key = key .. "|" .. tostring(self.net.mod) end
  end
  return sc, key
end

local function scalar_values(self, sc)
  local out = {}
  for i, s in ipairs(sc) do
    if s[1] == 0 then out[i] = self.net.mod else out[i] = self.conns[s[1]].c.rule.p[s[2]] end
  end
  return out
end

-- The traced refs of the state list S (symbols; a rule state left out of
-- the state holds zeros): W, b, rule states per connection.
function U:refs(S)
  local W, b, st = {}, {}, {}
  for i, e in ipairs(self.conns) do
    local slot, c = self.slots[i], e.c
    W[i] = trace.ref(self.state_names[slot.W], S[slot.W])
    if slot.b then b[i] = trace.ref(self.state_names[slot.b], S[slot.b]) end
    if type(c.state) == "table" then
      -- a copy of the state's tables, its tensors traced
      local function copy(tab, prefix)
        local out = {}
        for k, v in pairs(tab) do
          local path = prefix .. tostring(k)
          local j = slot.state[path]
          if j then out[k] = trace.ref(self.state_names[j], S[j])
          elseif nm.is_tensor(v) then out[k] = trace.ref(e.name .. "." .. path, nil, v:size())
          elseif type(v) == "table" then out[k] = copy(v, path .. ".")
          else out[k] = v end
        end
        return out
      end
      st[i] = copy(c.state, "")
    end
  end
  return W, b, st
end

-- One training step, traced: the next state list from S.
function U:step_graph(S, theta, X, T, sc, scalars)
  local W, b, st = self:refs(S)
  local P, mod = {}, self.net.mod
  for i, s in ipairs(sc) do if s[1] == 0 then mod = scalars[i] end end
  for i, e in ipairs(self.conns) do
    if e.c.rule then
      local p = {}
      for k, v in pairs(e.c.rule.p) do p[k] = v end
      for k, j in pairs(self.learned[i]) do p[k] = ag.index(theta, j) end
      for j, s in ipairs(sc) do if s[1] == i then p[s[2]] = scalars[j] end end
      P[i] = p
    end
  end
  local extra = {}
  for j, name in ipairs(self.model.extra or {}) do extra[name] = scalars[#sc + j] end
  local new = self.model.step(self, W, b, st, P, trace.ref("X", X), trace.ref("T", T), mod, extra)
  local out = {}
  for i = 1, #self.conns do
    local slot = self.slots[i]
    out[slot.W] = trace.value_of(new[i] and new[i].W or W[i])
    if slot.b then out[slot.b] = trace.value_of(new[i] and new[i].b or b[i]) end
    for path, j in pairs(slot.state) do out[j] = trace.value_of(at_path(st[i], path)) end
  end
  return out
end

function U:spec(sc)
  local list = {}
  for i, sh in ipairs(self.shapes) do list[i] = sh end
  local spec = {{name = "state", list = list}, {name = "theta", shape = {#self.names}},
                {name = "X", shape = {self.B, self.model.n_in}},
                {name = "T", shape = {self.B, self.model.n_out}}}
  for _, s in ipairs(sc) do
    spec[#spec + 1] = {name = s[1] == 0 and "mod" or format("%s.%s", self.conns[s[1]].name, s[2]),
                       scalar = true}
  end
  for _, name in ipairs(self.model.extra or {}) do spec[#spec + 1] = {name = name, scalar = true} end
  return spec
end

-- The compiled step for the present set of zero parameters (traced once
-- per set), the scalar inputs it reads.
function U:fn()
  local sc, key = self:fixed()
  local f = self.fns[key]
  if f then return f, sc, key end
  local rules = {}
  for _, e in ipairs(self.conns) do
    if e.c.rule then rules[#rules + 1] = e.c.rule.name end
  end
  f = compile.fn(function(S, theta, X, T, ...)
    return self:step_graph(S, theta, X, T, sc, {...})
  end, self:spec(sc), {dtype = self.dtype, mode = self.mode, source = "nm.unroll",
                       name = format("%s training step (%s)", self.model.what, concat(rules, ", ")),
                       equation = self.model.equation})
  self.fns[key] = f
  return f, sc, key
end

-- The query loss, compiled: the model's loss on Xq, Tq after the unroll,
-- as a function of the state list.
function U:loss_fn()
  if self.lfn then return self.lfn end
  local Bq = self.Bq
  self.lfn = compile.fn(function(S, Xq, Tq)
    local W, b = self:refs(S)
    return self.model.loss(self, W, b, trace.ref("Xq", Xq), trace.ref("Tq", Tq))
  end, {{name = "state", list = {table.unpack(self.shapes)}},
        {name = "Xq", shape = {Bq, self.model.n_in}}, {name = "Tq", shape = {Bq, self.model.n_out}}},
  {dtype = self.dtype, mode = self.mode, name = self.model.what .. " query loss", source = "nm.unroll"})
  return self.lfn
end

-- ---------------------------------------------------------------- nn.mlp

-- The network as its own code sees it: a copy of net with traced weights,
-- biases and rule states, each connection's rule with the parameters P
-- (theta's entries among them) and its Lua update (rule.apply's general
-- path: no fused or compiled form), the pathway's state as traced
-- constants (sign symmetry's S:sign(W) traces), buffers of traced tensors
-- (MLP:buffers' self.zeros), no optimiser, online step or finiteness check.
-- Its own train_batch, forward and loss_value then trace.
local function mlp_shadow(u, W, b, st, P, mod)
  local net = u.net
  local sh = shallow_copy(net)
  sh.bufs, sh.tcache, sh.cur, sh.conns, sh.paths = {}, {}, nil, {}, {}
  sh.fused, sh.optim, sh.mod, sh.nonfinite = false, nil, mod, nil
  sh.check_every, sh.checked, sh.unchecked, sh.updates = math.huge, 0, 0, 0
  sh.zeros = function(...) return trace.ref("buffer", nil, {...}) end
  for l = 1, net.L do
    local c = net.conns[l]
    local inst = c.rule
    sh.conns[l] = setmetatable({W = W[l], Wt = W[l]:t(), b = b[l], mask = c.mask, state = st[l],
                                plastic = c.plastic, name = c.name, n_pre = c.n_pre,
                                n_post = c.n_post, dtype = c.dtype,
                                rule = {def = inst.def, name = inst.name, p = P and P[l] or inst.p,
                                        inner = inst.inner, use_fused = false,
                                        use_compiled = false}},
                               nn.Connection)
  end
  local pw, pst = net:path()
  local traced = {}
  for l, s in ipairs(pst) do
    traced[l] = {}
    for k, v in pairs(s) do
      traced[l][k] = nm.is_tensor(v) and trace.ref(format("%s[%d].%s", pw.name, l, tostring(k)), v)
                     or v
    end
  end
  sh.paths[pw.name] = {pathway = pw, state = traced}
  return sh
end

-- One step: net:train_batch (MLP:forward, MLP:backward, MLP:update with
-- rule.apply of every connection's rule), the network's own code.
local function mlp_step(u, W, b, st, P, X, T, mod)
  mlp_shadow(u, W, b, st, P, mod):train_batch(X, T)
  return {}           -- the weights' and biases' traced tensors hold the new values
end

-- The query loss: net:forward, then net:loss_value.
local function mlp_loss(u, W, b, Xq, Tq)
  local sh = mlp_shadow(u, W, b, {})
  sh:forward(Xq)
  return sh:loss_value(Tq)
end

-- unroll.mlp(net, o) -> an unroll of net's training (net:train_batch on
-- each minibatch). o.params: the names of the parameters learned, {"eta"}
-- (in every plastic layer whose rule has that numeric parameter) or per
-- layer, {[1] = {"eta"}, [2] = {"eta", "tau"}}; o.batch: the minibatch
-- size B (also of the query batch unless o.query_batch); o.mode: "auto"
-- (default: compiled when a C compiler exists), "compile" or "interpret";
-- o.segment: ag.scan's segment length. Fields: names (the learned
-- parameters, "W1.eta", ...: theta's entries), state_names (the unrolled
-- state's tensors: "W1", "b1", "W1.theta", ...), shapes (theirs).
function unroll.mlp(net, o)
  o = o or {}
  if getmetatable(net) ~= nn.MLP then fail("mlp: an nn.mlp network expected", 2) end
  if net.optim then
    fail("mlp: the network has an optimiser; the unroll applies the rules' changes as they are " ..
         "(remove it with net:set_optimiser(nil))", 2)
  end
  local conns = {}
  for l = 1, net.L do
    local c = net.conns[l]
    local name = c.name or ("W" .. l)
    conns[l] = {name = name, bname = name:gsub("^W", "b"), c = c}
  end
  local model = {net = net, conns = conns, what = "mlp", n_in = net.sizes[0],
                 n_out = net.sizes[net.L], step = mlp_step, loss = mlp_loss, mod = true,
                 equation = format("%s, loss %s, pathway %s", concat(net.sizes, "-", 0, net.L),
                                   net.loss, net.feedback)}
  return new_unroll(model, o, 2)
end

-- ---------------------------------------------------------------- microcircuit

local MC_KINDS = {"up", "down", "ip", "pi"}

-- The microcircuit net as the steady state's code sees it, with traced
-- tensors for its connections' weights, biases and rule states, the
-- parameters P (theta's entries among them) for its rules, and buffers
-- made of traced tensors (Net:buffers' self.zeros): its own methods
-- (steady_state, steady_update, forward) then trace.
local function mc_shadow(u, W, b, st, P)
  local net = u.net
  local sh = shallow_copy(net)
  sh.bufs, sh.rule_states, sh.cur = {}, {}, nil
  sh.compiled, sh.check_every, sh.unchecked, sh.updates = false, math.huge, 0, 0
  sh.zeros = function(B, m) return trace.ref("buffer", nil, {B, m}) end
  for _, kind in ipairs(MC_KINDS) do sh[kind] = {} end
  for i, e in ipairs(u.conns) do
    local c = e.c
    sh[e.kind][e.k] = {W = W[i], Wt = W[i]:t(), b = b[i], state = st[i], plastic = c.plastic,
                       name = c.name, rule = {def = c.rule.def, p = P and P[i] or c.rule.p,
                                              name = c.rule.name}}
  end
  return sh
end

-- One minibatch of net:train_batch (Net:steady_state, Net:steady_update:
-- every plastic connection's circuit rule), on traced tensors.
local function mc_step(u, W, b, st, P, X, T)
  local sh = mc_shadow(u, W, b, st, P)
  sh:steady_state(X, T, u.sweeps)
  sh:steady_update()
  return {}           -- the weights' and biases' traced tensors hold the new values
end

-- The query loss: 1/2 the squared distance of the output potentials of
-- the feed-forward pass (net:forward: no target) from the target
-- potentials, a batch mean.
local function mc_loss(u, W, b, Xq, Tq)
  local sh = mc_shadow(u, W, b, {})
  sh:forward(Xq)
  local D = trace.ref("D", nil, Tq.shape)
  D:sub(sh.cur.U[sh.N], Tq)
  return 0.5 * D:dot(D) / u.Bq
end

-- unroll.microcircuit(net, o) -> an unroll of a microcircuit's training in
-- the steady state (mode = "steady": net:train_batch(X, UT [, sweeps]) on
-- each minibatch, every plastic connection's circuit rule applied once),
-- for the parameters of its circuit rules: o.params {"eta"} (every plastic
-- connection) or per connection {W_up1 = {"eta"}, ...}; o.sweeps (default
-- 1) as train_batch's; the other options as unroll.mlp's. T: the target
-- potentials; the query loss is 1/2 <||u_N - u_trgt||^2> of the
-- feed-forward pass on Xq against Tq. The full dynamics run in C without
-- an adjoint: not unrolled.
function unroll.microcircuit(net, o)
  o = o or {}
  if type(net) ~= "table" or type(net.steady_state) ~= "function" or not net.up then
    fail("microcircuit: a network of nm.models.microcircuit expected", 2)
  end
  if net.mode ~= "steady" then
    fail("microcircuit: the full dynamics run in C without an adjoint; meta-gradients go " ..
         "through the steady state (mc.new{mode = 'steady'})", 2)
  end
  for _, k in ipairs(o.params or {}) do
    if k == "tau_w" or k == "dt" then
      fail(format("microcircuit: '%s' is not read in the steady state (tau_w is 0 there)", k), 2)
    end
  end
  local conns = {}
  local function add(kind, k)
    local c = net[kind][k]
    conns[#conns + 1] = {name = c.name, bname = c.name:gsub("^W", "b"), c = c, kind = kind, k = k}
  end
  for k = 1, net.N do add("up", k) end
  for k = 1, net.N - 1 do add("down", k); add("ip", k); add("pi", k) end
  local model = {net = net, conns = conns, what = "microcircuit", n_in = net.sizes[0],
                 n_out = net.sizes[net.N], step = mc_step, loss = mc_loss,
                 equation = format("microcircuit %s, steady state", concat(net.sizes, "-", 0, net.N)),
                 setup = function(u) u.sweeps = o.sweeps or 1 end}
  return new_unroll(model, o, 2)
end

-- ---------------------------------------------------------------- BMVR

-- The BMVR net as its per-sample code sees it: traced weights (and the
-- running mean zbar), quantities and pathway states made of traced
-- vectors (bmvr.make_state), its rules' states st.
local function bmvr_shadow(u, W, st, track_mean)
  local net = u.net
  local sh = shallow_copy(net)
  for i, e in ipairs(u.conns) do sh[e.name] = W[i] end
  sh.track_mean = track_mean
  local bm = require "nm.models.bmvr"
  local q, states = bm.make_state(sh, function(size) return trace.ref("buffer", nil, {size}) end,
                                  function(pw) return st[u.index[pw]] or {} end)
  return sh, q, states, bm
end

-- Sample r of the [rows x n] traced X: X^T e_r (e_r a constant one-hot).
local function bmvr_row(u, X, r, n)
  local x = trace.ref("x", nil, {n})
  return x:mv(X:t(), u.onehot[X.shape[1]][r])
end

-- One step: net:train's Lua pass (bmvr.sample_step) on the step's B
-- samples, t samples seen before them.
local function bmvr_step(u, W, b, st, P, X, T, mod, extra)
  local sh, q, states, bm = bmvr_shadow(u, W, st, u.net.track_mean)
  local Pp = {}
  for i, e in ipairs(u.conns) do Pp[e.name] = P[i] end
  q.t = extra.t
  for r = 1, u.B do
    q.x, q.y = bmvr_row(u, X, r, u.net.n), bmvr_row(u, T, r, u.net.m)
    bm.sample_step(sh, q, states, Pp)
  end
  return {}             -- the weights' traced tensors hold the new values
end

-- The query loss: net:evaluate's mean ||y - y_hat||^2 (zbar frozen), with
-- the network's per-sample quantities.
local function bmvr_loss(u, W, b, Xq, Tq)
  local sh, q, _, bm = bmvr_shadow(u, W, {}, false)
  local loss = 0
  for r = 1, u.Bq do
    q.x, q.y = bmvr_row(u, Xq, r, u.net.n), bmvr_row(u, Tq, r, u.net.m)
    bm.quantities(sh, q)
    loss = loss + q.e:dot(q.e)
  end
  return loss / u.Bq
end

-- unroll.bmvr(net, o) -> an unroll of a BMVR network's training
-- (net:train's per-sample pass: every plastic pathway's circuit rule, in
-- the order W1, W2T, Q, R, the running mean zbar tracked) on T blocks of
-- o.batch samples, for its rules' parameters: o.params {"eta"} (every
-- plastic pathway) or per pathway {W1 = {"eta"}, ...}; t0 and gate are
-- numbers and names in the kernel (their values key it), the rate decay
-- reads the samples seen (net.t at the start). The query loss is
-- net:evaluate's mean ||y - y_hat||^2 on Xq, Tq (Tq the labels, [Bq x m]).
-- The other options as unroll.mlp's. The state: W1, W2T, Q (R when
-- decoupled) and zbar.
function unroll.bmvr(net, o)
  o = o or {}
  if type(net) ~= "table" or not net.W1 or not net.W2T or not net.rules or not net.states then
    fail("bmvr: a network of nm.models.bmvr expected", 2)
  end
  for _, k in ipairs(o.params or {}) do
    if k == "t0" then fail("bmvr: 't0' is compared with 0 in the rate decay; not learnable", 2) end
  end
  if type(o.params) == "table" then
    for _, list in pairs(o.params) do
      if type(list) == "table" then
        for _, k in ipairs(list) do
          if k == "t0" then fail("bmvr: 't0' is compared with 0 in the rate decay; not learnable", 2) end
        end
      end
    end
  end
  local conns, index = {}, {}
  for _, pw in ipairs{"W1", "W2T", "Q", "R"} do
    if net[pw] then
      local inst = net.rules[pw]
      conns[#conns + 1] = {name = pw, c = {W = net[pw], rule = inst,
                                           state = inst and net.states[pw].state or nil}}
      index[pw] = #conns
    end
  end
  conns[#conns + 1] = {name = "zbar", c = {W = net.zbar}}
  local model = {net = net, conns = conns, what = "bmvr", n_in = net.n, n_out = net.m,
                 step = bmvr_step, loss = bmvr_loss, constant = {t0 = true, gate = true},
                 extra = {"t"},
                 extra_values = function(u, steps)
                   local t = {}
                   for i = 1, steps do t[i] = net.t + (i - 1) * u.B end
                   return {t = t}
                 end,
                 equation = format("bmvr %d-%d-%d, relu %s, rules %s", net.n, net.k, net.m,
                                   tostring(net.relu), net:rule_names()),
                 setup = function(u)
                   u.index, u.onehot = index, {}
                   for _, rows in ipairs{u.B, u.Bq} do
                     u.onehot[rows] = {}
                     for r = 1, rows do
                       u.onehot[rows][r] = nm.zeros(rows, net.dtype):set(r, 1)
                     end
                   end
                 end}
  return new_unroll(model, o, 2)
end

-- ---------------------------------------------------------------- folded autoencoder

-- The folded autoencoder as its own code sees it: traced weights W_i, G_i
-- (its rules' dendrite states V), buffers of traced tensors (Net:buffers'
-- self.zeros), the rules of pathways W and G with parameters P, Lua paths
-- only (no fused kernels, no value tests: net.traced).
local function fae_shadow(u, W, P)
  local net = u.net
  local sh = shallow_copy(net)
  sh.W, sh.G, sh.Wt, sh.Gt, sh.cW, sh.cG = {}, {}, {}, {}, {}, {}
  sh.bufs, sh.info, sh.cur, sh.cur_settings, sh.changes = {}, {}, nil, nil, nil
  sh.fused, sh.traced, sh.optim, sh.use_kernel = false, true, nil, false
  sh.zeros = function(B, m) return trace.ref("buffer", nil, {B, m}) end
  for i, e in ipairs(u.conns) do
    local path, k = e.path, e.k
    local V = W[i]
    sh[path][k] = V
    sh[path .. "t"][k] = V:t()
    sh["c" .. path][k] = {V = V, name = e.name, plastic = net["c" .. path][k].plastic,
                          dV = trace.ref("d" .. e.name, nil, V.shape)}
  end
  if P then
    sh.rules = {}
    for _, path in ipairs{"W", "G"} do
      local inst = net.rules[path]
      sh.rules[path] = {def = inst.def, name = inst.name, p = P[u.index[path]]}
    end
  end
  return sh
end

-- One minibatch of net:train_batch with settle_steps = n: fae.fixed_settle
-- (n plain Euler steps), then Net:learn (every plastic dendrite's rule).
local function fae_step(u, W, b, st, P, X)
  local sh = fae_shadow(u, W, P)
  sh:train_batch(X, u.settings)
  return {}             -- the weights' traced tensors hold the new values
end

-- The query loss: Net:reconstruction_mse's on Xq (decode(encode(Xq)), the
-- poster's test), as a traced scalar.
local function fae_loss(u, W, b, Xq)
  local sh = fae_shadow(u, W)
  return sh:reconstruction_mse(Xq)
end

-- unroll.folded_ae(net, o) -> an unroll of a folded autoencoder's training
-- (net:train_batch(X, {settle_steps = n}) on each minibatch: the truncated
-- settle fae.fixed_settle, n = o.settle_steps plain Euler steps from the
-- W-path state, then both pathways' rules at the final state) for its
-- rules' numeric parameters: o.params {"eta"} (both pathways: names
-- "W.eta", "G.eta") or per pathway {W = {"eta"}}. The gradient is exact
-- for this fixed-step settle, not for net:settle's adaptive one (its
-- convergence test, dt halvings and momentum restarts are branches on
-- values). The query loss is net:reconstruction_mse(Xq); T is not read
-- (give X). The state: W_1..W_N, G_0..G_{N-1}. The network's other
-- settings (lambda, beta, clamp, form, dt, tau, start) are read when the
-- unroll is made (constants of its kernel); other options as unroll.mlp's.
function unroll.folded_ae(net, o)
  o = o or {}
  if type(net) ~= "table" or not net.cW or not net.cG or not net.rules or not net.N then
    fail("folded_ae: a network of nm.models.folded_ae expected", 2)
  end
  local n = o.settle_steps
  if math.type(n) ~= "integer" or n < 0 then
    fail("folded_ae: settle_steps (the fixed number of Euler steps per settle) must be an " ..
         "integer >= 0", 2)
  end
  if net.optim then
    fail("folded_ae: the network has an optimiser; the unroll applies the rules' changes as " ..
         "they are (remove it with net:set_optimiser(nil))", 2)
  end
  if net.o.schedule ~= "fixed_point" or net.o.start == "keep" then
    fail("folded_ae: schedule 'fixed_point' and start 'forward' or 'zero' needed", 2)
  end
  local conns, index = {}, {}
  for i = 1, net.N do
    conns[#conns + 1] = {name = "W" .. i, path = "W", k = i,
                         c = {W = net.W[i], rule = i == 1 and net.rules.W or nil}}
  end
  for i = 0, net.N - 1 do
    conns[#conns + 1] = {name = "G" .. i, path = "G", k = i,
                         c = {W = net.G[i], rule = i == 0 and net.rules.G or nil}}
  end
  -- the rule of a pathway sits on its first dendrite, named by the pathway
  index.W, index.G = 1, net.N + 1
  conns[1].pname, conns[net.N + 1].pname = "W", "G"
  local model = {net = net, conns = conns, what = "folded_ae", n_in = net.sizes[0],
                 n_out = net.sizes[0], step = fae_step, loss = fae_loss,
                 equation = format("folded_ae %s, %d Euler steps per settle", net:describe(), n),
                 setup = function(u) u.index, u.settings = index, {settle_steps = n} end}
  return new_unroll(model, o, 2)
end

-- u:theta() -> the learned parameters' present values (a float64 tensor,
-- in the order of u.names).
function U:theta()
  local th = nm.zeros(#self.names, "float64")
  for j, ks in pairs(self.learned) do
    for k, i in pairs(ks) do th:set(i, self.conns[j].c.rule.p[k]) end
  end
  return th
end

-- u:set(theta): writes theta's values into the rules' parameters.
function U:set(theta)
  theta = ag.value(theta)
  for j, ks in pairs(self.learned) do
    for k, i in pairs(ks) do self.conns[j].c.rule.p[k] = theta:get(i) end
  end
  return self
end

-- u:state() -> the network's present weights, biases and rule states (copies,
-- in the order of u.state_names): the unroll's initial state.
function U:state()
  local out = {}
  for j, e in ipairs(self.conns) do
    local c, slot = e.c, self.slots[j]
    out[slot.W] = c.W:clone()
    if slot.b then out[slot.b] = c.b:clone() end
    for path, i in pairs(slot.state) do out[i] = at_path(c.state, path):clone() end
  end
  return out
end

-- u:load(S): copies a state list into the network's tensors.
function U:load(S)
  for j, e in ipairs(self.conns) do
    local c, slot = e.c, self.slots[j]
    c.W:copy(ag.value(S[slot.W]))
    if slot.b then c.b:copy(ag.value(S[slot.b])) end
    for path, i in pairs(slot.state) do at_path(c.state, path):copy(ag.value(S[i])) end
  end
  return self
end

-- The minibatches as a list of [B x n] tensors of the network's dtype: a
-- list, or one tensor of steps * B rows (views of its rows).
local function batches(self, X, n, what, steps)
  local dt = self.dtype
  local list = {}
  if nm.is_tensor(X) then
    if X:dim() ~= 2 or X:size(2) ~= n or X:size(1) % self.B ~= 0 then
      fail(format("%s must be [steps * %d x %d] or a list of [%d x %d] tensors", what, self.B, n,
                  self.B, n), 3)
    end
    if X:dtype() ~= dt then X = nm.zeros(X:size(), dt):copy(X) end
    X = X:contiguous()
    for t = 1, X:size(1) // self.B do list[t] = X:narrow(1, (t - 1) * self.B + 1, self.B) end
  elseif type(X) == "table" then
    for t, x in ipairs(X) do
      if not nm.is_tensor(x) or x:dim() ~= 2 or x:size(1) ~= self.B or x:size(2) ~= n then
        fail(format("%s[%d] must be a [%d x %d] tensor", what, t, self.B, n), 3)
      end
      if x:dtype() ~= dt then x = nm.zeros(x:size(), dt):copy(x) end
      list[t] = x:contiguous()
    end
  else
    fail(what .. " must be a tensor or a list of tensors", 3)
  end
  if steps and #list ~= steps then
    fail(format("%s has %d minibatches, the inputs %d", what, #list, steps), 3)
  end
  return list
end

local function dense_of(self, X, rows, n, what)
  if not nm.is_tensor(X) or X:dim() ~= 2 or X:size(1) ~= rows or X:size(2) ~= n then
    fail(format("%s must be a [%d x %d] tensor", what, rows, n), 3)
  end
  if X:dtype() ~= self.dtype then X = nm.zeros(X:size(), self.dtype):copy(X) end
  return X:contiguous()
end

-- u:run(theta, S0, X, T [, stats]) -> the state list after training on the
-- minibatches of X, T (a variable list when theta or S0 holds variables:
-- one node of their tape). X: a list of [B x n_0] tensors or one
-- [steps * B x n_0] tensor; T likewise, [B x n_L] (targets as nn takes them).
function U:run(theta, S0, X, T, stats)
  local Xl = batches(self, X, self.model.n_in, "X")
  local Tl = batches(self, T, self.model.n_out, "T", #Xl)
  if #S0 ~= #self.shapes then fail(format("run: the state list must hold %d tensors", #self.shapes), 2) end
  local f, sc, key = self:fn()
  local scalars = scalar_values(self, sc)
  local ws = self.workspaces[key] or {}
  self.workspaces[key] = ws
  local esize = self.dtype == "float64" and 8 or 4
  local bytes = 0
  for _, sh in ipairs(self.shapes) do
    local n = 1
    for _, d in ipairs(sh) do n = n * d end
    bytes = bytes + n * esize
  end
  local shapes, dt = self.shapes, self.dtype
  -- the scalars that change from step to step, after the others
  local steps, first = {[3] = Xl, [4] = Tl}, {}
  if self.model.extra then
    local values = self.model.extra_values(self, #Xl)
    for j, name in ipairs(self.model.extra) do
      steps[4 + #sc + j], first[j] = values[name], values[name][1]
    end
    for j, v in ipairs(first) do scalars[#sc + j] = v end
  end
  local nsc = #sc + #first
  local k = f:scan_kernel{
    cache = ws, state_bytes = bytes,
    state = function()
      local s = {}
      for i, sh in ipairs(shapes) do s[i] = nm.zeros(sh, dt) end
      return s
    end,
    args = function(src, th) return src, th, Xl[1], Tl[1], table.unpack(scalars, 1, nsc) end,
    steps = steps,
  }
  self.steps_run = #Xl
  return ag.scan(k, S0, {theta}, #Xl, {segment = self.segment, stats = stats})
end

-- The query loss after the unroll; errors name the method `who`.
local function query_loss(self, who, theta, S0, X, T, Xq, Tq, stats)
  local ST = self:run(theta, S0, X, T, stats)
  Xq = dense_of(self, Xq, self.Bq, self.model.n_in, "Xq")
  Tq = dense_of(self, Tq, self.Bq, self.model.n_out, "Tq")
  -- a diverged training is an error, not a NaN gradient
  local why = "(the training diverged: smaller rates, or a NaN or infinite input or target)"
  for i, x in ipairs(ST) do
    if not ag.value(x):all_finite() then
      fail(format("%s: %s is not finite after %d training steps %s", who, self.state_names[i],
                  self.steps_run, why), 3)
    end
  end
  local loss = ag.sum(self:loss_fn():call(ST, Xq, Tq))
  local v = ag.value(loss)
  if v ~= v or v == math.huge or v == -math.huge then
    fail(format("%s: the query loss is %s after %d training steps %s", who, tostring(v),
                self.steps_run, why), 3)
  end
  return loss
end

-- u:loss(theta, S0, X, T, Xq, Tq [, stats]) -> the query loss after the
-- unroll (a number, or a variable of theta's or S0's tape). Xq [Bq x n_0],
-- Tq [Bq x n_L]. A weight that is not finite after training, or a loss
-- that is not, is an error.
function U:loss(theta, S0, X, T, Xq, Tq, stats)
  return query_loss(self, "loss", theta, S0, X, T, Xq, Tq, stats)
end

-- u:gradient(X, T, Xq, Tq [, o]) -> loss, g (float64 [#u.names], the
-- gradient for theta = u:theta(), the rules' present values), gS (with
-- o.state = true: the gradients for the initial state u:state(), a list).
-- o.theta, o.S0: other values to differentiate at; o.stats: ag.scan's
-- figures.
function U:gradient(X, T, Xq, Tq, o)
  o = o or {}
  local tape = ag.tape()
  local theta = tape:leaf(o.theta and ag.value(o.theta):clone() or self:theta())
  local S0 = o.S0 or self:state()
  local vars = {}
  for i, s in ipairs(S0) do vars[i] = o.state and tape:leaf(ag.value(s)) or ag.value(s) end
  local loss = query_loss(self, "gradient", theta, vars, X, T, Xq, Tq, o.stats)
  tape:backward(loss)
  local gS
  if o.state then
    gS = {}
    for i, v in ipairs(vars) do gS[i] = v.grad or nm.zeros(v.value:size(), self.dtype) end
  end
  return ag.value(loss), theta.grad or nm.zeros(#self.names, "float64"), gS
end

-- u:source() -> the generated C of the training step and of its adjoint.
function U:source()
  local f = self:fn()
  local wrt = {}
  for i = 1, #self.shapes + 1 do wrt[i] = true end
  return f:source() .. "\n" .. f:source(wrt)
end

-- unroll.emit(def) prints the C of a BMVR or folded-autoencoder circuit
-- rule (def, kind "circuit", model "bmvr" or "folded_ae") traced in its
-- model's training step, and the step's adjoint (u:source()): a 6-4-3
-- BMVR network (every pathway the rule drives learns by it), 4 samples a
-- step; a 5-4-3 folded autoencoder (both pathways by the rule), a batch
-- of 4, 2 Euler steps per settle; eta learned: `neuromic --emit rules/x.lua`.
function unroll.emit(def)
  local u, what
  if def.model == "bmvr" then
    local net = require("nm.models.bmvr").new{n = 6, m = 3, k = 4, dtype = "float64", seed = 1,
                                              rules = def}
    u = unroll.bmvr(net, {params = {"eta"}, batch = 4, mode = "interpret"})
    what = "unroll.bmvr: net:train's per-sample pass on a 6-4-3 BMVR network, 4 samples a step"
  else
    local rules = {}
    for _, pw in ipairs(def.pathways or {def.pathway}) do rules[pw] = def end
    local net = require("nm.models.folded_ae").new{sizes = {5, 4, 3}, gen = nm.generator(1),
                                                   dtype = "float64", rules = rules}
    u = unroll.folded_ae(net, {params = {"eta"}, batch = 4, mode = "interpret", settle_steps = 2})
    what = "unroll.folded_ae: net:train_batch on a 5-4-3 folded autoencoder, a batch of 4, " ..
           "2 Euler steps per settle"
  end
  local eq = tostring(def.equation or ""):gsub("%*/", "* /")
  io.stdout:write(format("/* %s: %s\n   traced in %s; the training step, then its adjoint */\n",
                         def.name, eq, what), u:source())
end

return unroll
