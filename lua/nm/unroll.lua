-- nm/unroll.lua: meta-gradients of connection rules' parameters. A network
-- (nn.mlp) trained by its connection rules on T minibatches, then scored on
-- a query batch: the query loss is a function of the rules' numeric
-- parameters (a learning rate eta, a time constant tau, ...) and of the
-- initial weights, and this module gives its exact gradient.
--
--   local unroll = require "nm.unroll"
--   local u = unroll.mlp(net, {params = {"eta"}, batch = 8})
--   local loss, g = u:gradient(X, T, Xq, Tq)   -- g[k] = d loss / d (u.names[k])
--
-- One training step (the forward pass, the error pathway's backward pass,
-- every connection's rule applied as rule.apply applies it: dW zeroed,
-- update(q, p), masked, added) is traced from the network's own code -
-- nn's connection forward, activations and their derivatives, losses and
-- softmax_vjp, the pathway's matrix, the rules' update(q, p) - run on
-- traced tensors (nm.compile.trace's Refs) with the learned parameters
-- standing for entries of one vector theta. nm.compile generates the
-- step's C and, by reverse mode on the same graph, its adjoint; they run
-- as ag.scan's fused kernel (checkpointed: about 2 sqrt(T) states kept),
-- and the query loss (the network's loss on the query batch, also traced
-- from nn's code) as a compiled function on the same tape. Without a C
-- compiler the same graphs run interpreted.
--
-- What the step reads: the weights, biases and rule state (tensors) of
-- every layer - the unrolled state -, theta, the step's minibatch and
-- targets, the rules' other numeric parameters and a numeric modulator
-- (net.mod) as numbers read at every call (a parameter that is 0 when
-- traced is the constant 0, as in rule.compiled_update; a kernel per set
-- of zero parameters); the pathway's state (FA's B, DFA's D) and masks are
-- constants of the step, passed at every call. Not supported: an
-- optimiser on the network (the rules' changes are applied as they are),
-- rule state that nests tables of tensors (rule.lowpass), batch sizes
-- that change within an unroll.

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

local U = {}
U.__index = U

-- unroll.mlp(net, o) -> an unroll of net's training. o.params: the names
-- of the parameters learned, {"eta"} (in every plastic layer whose rule has
-- that numeric parameter) or per layer, {[1] = {"eta"}, [2] = {"eta",
-- "tau"}}; o.batch: the minibatch size B (also of the query batch unless
-- o.query_batch); o.mode: "auto" (default: compiled when a C compiler
-- exists), "compile" or "interpret"; o.segment: ag.scan's segment length.
-- Fields: names (the learned parameters, "W1.eta", ...: theta's entries),
-- state_names (the unrolled state's tensors: "W1", "b1", "W1.theta", ...),
-- shapes (theirs), scratch (scratch[i]: state i is rule scratch, written
-- before it is read: Oja's C; no gradient flows through it).
function unroll.mlp(net, o)
  o = o or {}
  if getmetatable(net) ~= nn.MLP then fail("mlp: an nn.mlp network expected", 2) end
  if net.optim then
    fail("mlp: the network has an optimiser; the unroll applies the rules' changes as they are " ..
         "(remove it with net:set_optimiser(nil))", 2)
  end
  local B = o.batch
  if math.type(B) ~= "integer" or B < 1 then fail("mlp: batch must be a positive integer", 2) end
  local Bq = o.query_batch or B
  if math.type(Bq) ~= "integer" or Bq < 1 then fail("mlp: query_batch must be a positive integer", 2) end
  if o.mode ~= nil and o.mode ~= "auto" and o.mode ~= "compile" and o.mode ~= "interpret" then
    fail("mlp: mode must be 'auto', 'compile' or 'interpret', got " .. tostring(o.mode), 2)
  end
  local L = net.L
  local self = setmetatable({net = net, B = B, Bq = Bq, mode = o.mode, segment = o.segment,
                             names = {}, learned = {}, state_names = {}, slots = {},
                             shapes = {}, fns = {}, workspaces = {}}, U)
  -- the learned parameters: theta's entries
  local want = o.params
  if type(want) ~= "table" then fail("mlp: params must be a list of parameter names", 2) end
  local per_layer = want[1] == nil and next(want) ~= nil
  local found = {}
  for l = 1, L do
    local c = net.conns[l]
    local inst = c.rule
    local list = per_layer and (want[l] or {}) or want
    self.learned[l] = {}
    for _, k in ipairs(list) do
      local v = inst.p[k]
      if type(v) == "number" and (per_layer or c.plastic ~= false) then
        self.names[#self.names + 1] = format("%s.%s", c.name or ("W" .. l), k)
        self.learned[l][k] = #self.names
        found[k] = true
      elseif per_layer then
        fail(format("mlp: rule '%s' of layer %d has no numeric parameter '%s'", inst.name, l,
                    tostring(k)), 2)
      end
    end
  end
  if not per_layer then
    for _, k in ipairs(want) do
      if not found[k] then
        fail(format("mlp: no plastic layer's rule has a numeric parameter '%s'", tostring(k)), 2)
      end
    end
  end
  if #self.names == 0 then fail("mlp: no parameter to learn", 2) end
  -- the unrolled state: per layer W, b, the rule state's tensors
  for l = 1, L do
    local c = net.conns[l]
    local slot = {}
    self.slots[l] = slot
    local function add(name, t)
      self.state_names[#self.state_names + 1] = name
      self.shapes[#self.shapes + 1] = t:size()
      return #self.state_names
    end
    local cname = c.name or ("W" .. l)
    slot.W = add(cname, c.W)
    if c.b then slot.b = add(cname:gsub("^W", "b"), c.b) end
    slot.state = {}
    if type(c.state) == "table" then
      for _, k in ipairs(sorted_keys(c.state)) do
        local v = c.state[k]
        if nm.is_tensor(v) then
          if v:dtype() ~= net.dtype then
            fail(format("mlp: rule state %s.%s is %s, the network %s", cname, tostring(k),
                        v:dtype(), net.dtype), 2)
          end
          slot.state[k] = add(format("%s.%s", cname, tostring(k)), v)
        elseif type(v) == "table" then
          fail(format("mlp: the state of rule '%s' nests tables (%s.%s): not supported yet",
                      c.rule.name, cname, tostring(k)), 2)
        end
      end
    elseif c.state ~= nil then
      fail(format("mlp: the state of rule '%s' is not a table of tensors", c.rule.name), 2)
    end
  end
  self:fn()           -- traced now: a rule the compiler cannot trace fails here
  return self
end

-- The rules' numeric parameters that are not learned (read at every call)
-- and the modulator: {layer, name} per scalar input, and the key of the
-- ones that are 0 (fixed in the kernel).
function U:fixed()
  local net, sc, zero = self.net, {}, {}
  for l = 1, net.L do
    local p = net.conns[l].rule.p
    for _, k in ipairs(sorted_keys(p)) do
      if type(p[k]) == "number" and not self.learned[l][k] then
        if p[k] == 0 then zero[#zero + 1] = l .. "." .. k
        else sc[#sc + 1] = {l, k} end
      end
    end
  end
  if type(net.mod) == "number" then sc[#sc + 1] = {0, "mod"} end
  return sc, concat(zero, ",")
end

local function scalar_values(self, sc)
  local out = {}
  for i, s in ipairs(sc) do
    if s[1] == 0 then out[i] = self.net.mod else out[i] = self.net.conns[s[1]].rule.p[s[2]] end
  end
  return out
end

-- The network's forward pass on traced tensors: A[l], Y[l] (Y[0] = X).
local function forward(net, W, b, X, ones)
  local A, Y = {}, {[0] = X}
  for l = 1, net.L do
    local act = net.acts[l]
    local n = net.sizes[l]
    local shape = {X.shape[1], n}
    A[l] = trace.ref("A" .. l, nil, shape)
    nn.Connection.forward({W = W[l], Wt = W[l]:t(), b = b[l]}, A[l], Y[l - 1], ones)
    Y[l] = act.name == "identity" and A[l] or trace.ref("Y" .. l, nil, shape)
    act.f(Y[l], A[l], act.beta)
  end
  return A, Y
end

-- E .*= f'(A), or the softmax's Jacobian-vector product (MLP:backward's).
local function backprop_act(act, E, A, Y, ones_n)
  if act.name == "identity" then return end
  if act.elementwise then
    local D = trace.ref("D", nil, E.shape)
    act.df(D, A, Y, act.beta)
    E:mul(D)
  else
    nn.softmax_vjp(E, Y, trace.ref("S", nil, E.shape), trace.ref("rows", nil, {E.shape[1]}), ones_n)
  end
end

-- The traced refs of the state list S (symbols): W, b, rule states.
function U:refs(S)
  local W, b, st = {}, {}, {}
  for l = 1, self.net.L do
    local slot, c = self.slots[l], self.net.conns[l]
    W[l] = trace.ref(self.state_names[slot.W], S[slot.W])
    if slot.b then b[l] = trace.ref(self.state_names[slot.b], S[slot.b]) end
    if type(c.state) == "table" then
      st[l] = {}
      for k, v in pairs(c.state) do
        local i = slot.state[k]
        st[l][k] = i and trace.ref(self.state_names[i], S[i]) or v
      end
    end
  end
  return W, b, st
end

-- One training step, traced: the next state list from S.
function U:step_graph(S, theta, X, T, sc, scalars)
  local net, L, B = self.net, self.net.L, self.B
  local W, b, st = self:refs(S)
  local ones = self.ones
  local A, Y = forward(net, W, b, trace.ref("X", X), ones)
  local Tr = trace.ref("T", T)
  -- backward (MLP:backward): the output error, then the pathway's
  local E = {}
  E[L] = trace.ref("E" .. L, nil, {B, net.sizes[L]})
  nn.losses[net.loss].grad(E[L], Y[L], Tr)
  if net.loss == "mse" then backprop_act(net.acts[L], E[L], A[L], Y[L], self.ones_n[L]) end
  local pw, pst = net:path()
  for l = L - 1, 1, -1 do
    local src = pw.source == "output" and L or l + 1
    local stl = {}
    for k, v in pairs(pst[l] or {}) do
      stl[k] = nm.is_tensor(v) and trace.ref(format("%s[%d].%s", pw.name, l, tostring(k)), v) or v
    end
    local M = pw.matrix(W[src], stl)
    E[l] = trace.ref("E" .. l, nil, {B, net.sizes[l]})
    E[l]:addmm(1, E[src], M, 0)
    backprop_act(net.acts[l], E[l], A[l], Y[l], self.ones_n[l])
  end
  -- every rule's update (MLP:update, rule.apply)
  local out = {}
  local mod = net.mod
  for i, s in ipairs(sc) do if s[1] == 0 then mod = scalars[i] end end
  for l = 1, L do
    local c, slot = net.conns[l], self.slots[l]
    local inst = c.rule
    local def = inst.def
    local Wn, bn = trace.value_of(W[l]), b[l] and trace.value_of(b[l])
    if c.plastic ~= false then
      local p = {}
      for k, v in pairs(inst.p) do p[k] = v end
      for k, i in pairs(self.learned[l]) do p[k] = ag.index(theta, i) end
      for i, s in ipairs(sc) do if s[1] == l then p[s[2]] = scalars[i] end end
      local q = {pre = Y[l - 1], pre_t = Y[l - 1]:t(), post = Y[l], post_t = Y[l]:t(), a = A[l],
                 error = E[l], error_t = E[l]:t(), W = W[l], b = b[l], mask = c.mask, mod = mod,
                 state = st[l], batch = B, ones = ones,
                 dW = trace.ref("dW", nil, c.W:size()),
                 db = b[l] and trace.ref("db", nil, c.b:size()) or nil}
      for _, k in ipairs(def.needs or {}) do
        if q[k] == nil then
          fail(format("rule '%s' needs quantity '%s', which layer %d does not provide", inst.name,
                      k, l), 0)
        end
      end
      def.update(q, p)
      local dW = trace.value_of(q.dW)
      if c.mask then dW = ag.mul(dW, c.mask) end
      Wn = ag.add(trace.value_of(W[l]), dW)
      if def.bias and b[l] then bn = ag.add(trace.value_of(b[l]), trace.value_of(q.db)) end
    end
    out[slot.W] = Wn
    if slot.b then out[slot.b] = bn end
    for k, i in pairs(slot.state) do out[i] = trace.value_of(st[l][k]) end
  end
  return out
end

local function state_spec(self)
  local list = {}
  for i, sh in ipairs(self.shapes) do list[i] = sh end
  return {name = "state", list = list}
end

local function shared_constants(self)
  local net, dt = self.net, self.net.dtype
  self.ones_n = self.ones_n or {}
  for l = 1, net.L do
    if not net.acts[l].elementwise then self.ones_n[l] = self.ones_n[l] or nm.ones(net.sizes[l], dt) end
  end
end

-- The compiled step for the present set of zero parameters (traced once
-- per set), the scalar inputs it reads.
function U:fn()
  local sc, key = self:fixed()
  local f = self.fns[key]
  if f then return f, sc, key end
  local net, dt = self.net, self.net.dtype
  self.ones = self.ones or nm.ones(self.B, dt)
  shared_constants(self)
  local spec = {state_spec(self), {name = "theta", shape = {#self.names}},
                {name = "X", shape = {self.B, net.sizes[0]}},
                {name = "T", shape = {self.B, net.sizes[net.L]}}}
  for _, s in ipairs(sc) do
    spec[#spec + 1] = {name = s[1] == 0 and "mod" or format("W%d.%s", s[1], s[2]), scalar = true}
  end
  local rules = {}
  for l = 1, net.L do rules[l] = net.conns[l].rule.name end
  local me = self
  f = compile.fn(function(S, theta, X, T, ...)
    return me:step_graph(S, theta, X, T, sc, {...})
  end, spec, {dtype = dt, mode = self.mode, name = "training step (" .. concat(rules, ", ") .. ")",
              source = "nm.unroll",
              equation = format("%s, loss %s, pathway %s", concat(net.sizes, "-", 0, net.L),
                                net.loss, net.feedback)})
  self.fns[key] = f
  -- the rule state the step overwrites before reading it (Oja's C) is the
  -- rules' scratch: carried, but no input of the next step
  local reach = graph.reachable(f.outputs)
  self.scratch = {}
  for i = 1, #self.shapes do
    if not reach[f.g.inputs[i]] then self.scratch[i] = true end
  end
  return f, sc, key
end

-- The query loss, compiled: the network's loss (nn.losses) on Xq, Tq after
-- the unroll, as a function of the state list.
function U:loss_fn()
  if self.lfn then return self.lfn end
  local net, dt, Bq = self.net, self.net.dtype, self.Bq
  self.ones_q = self.ones_q or nm.ones(Bq, dt)
  local me = self
  self.lfn = compile.fn(function(S, Xq, Tq)
    local W, b = me:refs(S)
    local A, Y = forward(net, W, b, trace.ref("Xq", Xq), me.ones_q)
    local L = net.L
    return nn.losses[net.loss].value(A[L], Y[L], trace.ref("Tq", Tq),
                                      trace.ref("S", nil, {Bq, net.sizes[L]}))
  end, {state_spec(self), {name = "Xq", shape = {Bq, net.sizes[0]}},
        {name = "Tq", shape = {Bq, net.sizes[net.L]}}},
  {dtype = dt, mode = self.mode, name = "query loss", source = "nm.unroll"})
  return self.lfn
end

-- u:theta() -> the learned parameters' present values (a float64 tensor,
-- in the order of u.names).
function U:theta()
  local th = nm.zeros(#self.names, "float64")
  for l, ks in pairs(self.learned) do
    for k, i in pairs(ks) do th:set(i, self.net.conns[l].rule.p[k]) end
  end
  return th
end

-- u:set(theta): writes theta's values into the rules' parameters.
function U:set(theta)
  theta = ag.value(theta)
  for l, ks in pairs(self.learned) do
    for k, i in pairs(ks) do self.net.conns[l].rule.p[k] = theta:get(i) end
  end
  return self
end

-- u:state() -> the network's present weights, biases and rule states (copies,
-- in the order of u.state_names): the unroll's initial state.
function U:state()
  local net, out = self.net, {}
  for l = 1, net.L do
    local c, slot = net.conns[l], self.slots[l]
    out[slot.W] = c.W:clone()
    if slot.b then out[slot.b] = c.b:clone() end
    for k, i in pairs(slot.state) do out[i] = c.state[k]:clone() end
  end
  return out
end

-- u:load(S): copies a state list into the network's tensors.
function U:load(S)
  local net = self.net
  for l = 1, net.L do
    local c, slot = net.conns[l], self.slots[l]
    c.W:copy(ag.value(S[slot.W]))
    if slot.b then c.b:copy(ag.value(S[slot.b])) end
    for k, i in pairs(slot.state) do c.state[k]:copy(ag.value(S[i])) end
  end
  return self
end

-- The minibatches as a list of [B x n] tensors of the network's dtype: a
-- list, or one tensor of steps * B rows (views of its rows).
local function batches(self, X, n, what, steps)
  local net = self.net
  local list = {}
  if nm.is_tensor(X) then
    if X:dim() ~= 2 or X:size(2) ~= n or X:size(1) % self.B ~= 0 then
      fail(format("%s must be [steps * %d x %d] or a list of [%d x %d] tensors", what, self.B, n,
                  self.B, n), 3)
    end
    if X:dtype() ~= net.dtype then X = nm.zeros(X:size(), net.dtype):copy(X) end
    X = X:contiguous()
    for t = 1, X:size(1) // self.B do list[t] = X:narrow(1, (t - 1) * self.B + 1, self.B) end
  elseif type(X) == "table" then
    for t, x in ipairs(X) do
      if not nm.is_tensor(x) or x:dim() ~= 2 or x:size(1) ~= self.B or x:size(2) ~= n then
        fail(format("%s[%d] must be a [%d x %d] tensor", what, t, self.B, n), 3)
      end
      if x:dtype() ~= net.dtype then x = nm.zeros(x:size(), net.dtype):copy(x) end
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
  if X:dtype() ~= self.net.dtype then X = nm.zeros(X:size(), self.net.dtype):copy(X) end
  return X:contiguous()
end

-- u:run(theta, S0, X, T [, stats]) -> the state list after training on the
-- minibatches of X, T (a variable list when theta or S0 holds variables:
-- one node of their tape). X: a list of [B x n_0] tensors or one
-- [steps * B x n_0] tensor; T likewise, [B x n_L] (targets as nn takes them).
function U:run(theta, S0, X, T, stats)
  local net = self.net
  local Xl = batches(self, X, net.sizes[0], "X")
  local Tl = batches(self, T, net.sizes[net.L], "T", #Xl)
  if #S0 ~= #self.shapes then fail(format("run: the state list must hold %d tensors", #self.shapes), 2) end
  local f, sc, key = self:fn()
  local scalars = scalar_values(self, sc)
  local ws = self.workspaces[key] or {}
  self.workspaces[key] = ws
  local esize = net.dtype == "float64" and 8 or 4
  local bytes = 0
  for _, sh in ipairs(self.shapes) do
    local n = 1
    for _, d in ipairs(sh) do n = n * d end
    bytes = bytes + n * esize
  end
  local shapes, dt = self.shapes, net.dtype
  local k = f:scan_kernel{
    cache = ws, state_bytes = bytes,
    state = function()
      local s = {}
      for i, sh in ipairs(shapes) do s[i] = nm.zeros(sh, dt) end
      return s
    end,
    args = function(src, th) return src, th, Xl[1], Tl[1], table.unpack(scalars, 1, #sc) end,
    steps = {[3] = Xl, [4] = Tl},
  }
  return ag.scan(k, S0, {theta}, #Xl, {segment = self.segment, stats = stats})
end

-- u:loss(theta, S0, X, T, Xq, Tq [, stats]) -> the query loss after the
-- unroll (a number, or a variable of theta's or S0's tape). Xq [Bq x n_0],
-- Tq [Bq x n_L].
function U:loss(theta, S0, X, T, Xq, Tq, stats)
  local net = self.net
  local ST = self:run(theta, S0, X, T, stats)
  Xq = dense_of(self, Xq, self.Bq, net.sizes[0], "Xq")
  Tq = dense_of(self, Tq, self.Bq, net.sizes[net.L], "Tq")
  return ag.sum(self:loss_fn():call(ST, Xq, Tq))
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
  local loss = self:loss(theta, vars, X, T, Xq, Tq, o.stats)
  tape:backward(loss)
  local gS
  if o.state then
    gS = {}
    for i, v in ipairs(vars) do gS[i] = v.grad or nm.zeros(v.value:size(), self.net.dtype) end
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

return unroll
