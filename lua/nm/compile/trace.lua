-- nm/compile/trace.lua: runs a rule step on symbols and records its graph.
--
-- The step is ordinary Lua written with nm.autograd operations. Each
-- operation that receives a symbol is routed here (ag.set_tracer) and
-- becomes a node; numbers become constants, tensors the step creates
-- (e.g. a vector of ones) become captured constants passed at every call.
-- Errors name the rule's own file and line, and the operation with the
-- shapes of its arguments, never the generated C.

local nm = require "neuromic"
local ag = require "nm.autograd"
local graph = require "nm.compile.graph"

local trace = {}

local format = string.format
local is_sym, fail = graph.is_sym, graph.fail

-- The first stack frame outside neuromic's own library: the rule's line.
local function user_line()
  for level = 3, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info then return nil end
    local src = info.source or ""
    if src:sub(1, 1) == "@" and not src:find("nm/autograd%.lua$") and not src:find("nm/compile/")
       and not src:find("nm/compile%.lua$")
       and info.currentline and info.currentline > 0 then
      return src:sub(2) .. ":" .. info.currentline
    end
  end
  return nil
end

local current      -- the graph being traced (one trace at a time)

local function operand(g, x, name, i)
  if is_sym(x) then
    if x.g ~= g then fail(g, format("'%s': argument #%d comes from another trace", name, i)) end
    return x
  end
  if type(x) == "number" then return g:const(x) end
  if nm.is_tensor(x) then return g:captured_tensor(x) end
  fail(g, format("'%s': argument #%d must be a value, got %s", name, i, type(x)))
end

local UNARY_P = {softplus = 1, dsoftplus = 1}

local function record(name, ...)
  local g = current
  if not g then error("rule compiler: a symbol was used outside its trace", 2) end
  g.where = user_line()
  local n = select("#", ...)
  local a = {...}
  local function arg(i) return operand(g, a[i], name, i) end
  if graph.BINARY[name] or name == "scale" then
    return g:binary(name == "scale" and "mul" or name, arg(1), arg(2))
  elseif name == "neg" then
    return g:unary("neg", arg(1))
  elseif graph.UNARY[name] then
    local x = arg(1)
    local k = a[2]
    if UNARY_P[name] then k = k or 1 end
    if name == "pow" and type(k) ~= "number" then fail(g, "pow: the exponent must be a number") end
    if #x.shape == 0 and x.op == "const" then
      -- a function of a constant: compute it now with the tensor kernels
      local t = nm.tensor({x.k}, "float64")
      local y = ag[name](t, k)
      return g:const(y:get(1))
    end
    return g:unary(name, x, k)
  elseif name == "value" then return g:detach(arg(1))
  elseif name == "sum" then
    if a[2] ~= nil then return g:sum_dim(arg(1), a[2]) end
    return g:sum(arg(1))
  elseif name == "mean" then
    local x = arg(1)
    if a[2] ~= nil then
      local s = g:sum_dim(x, a[2])
      return g:binary("mul", g:const(1 / x.shape[a[2]]), s)
    end
    return g:binary("mul", g:const(1 / g:numel(x)), g:sum(x))
  elseif name == "dot" then return g:dot(arg(1), arg(2))
  elseif name == "t" then return g:t(arg(1))
  elseif name == "mv" then return g:mv(arg(1), arg(2))
  elseif name == "mm" then return g:mm(arg(1), arg(2))
  elseif name == "outer" then return g:outer(arg(1), arg(2))
  elseif name == "softmax" then return g:softmax(arg(1))
  elseif name == "logsoftmax" then return g:logsoftmax(arg(1))
  elseif name == "cross_entropy" then
    -- -log softmax(z)[label] = -<onehot(label), logsoftmax(z)>, the label
    -- a number given at call time
    local z = arg(1)
    if #z.shape ~= 1 or type(a[2]) == "table" and not is_sym(a[2]) then
      fail(g, "cross_entropy: one vector of logits and its label (a batch of rows with a " ..
              "list of labels cannot be compiled yet)")
    end
    return g:unary("neg", g:dot(g:onehot(z.shape[1], arg(2)), g:logsoftmax(z)))
  elseif name == "index" then
    local idx = {}
    for i = 2, n do idx[i - 1] = a[i] end
    return g:index_at(arg(1), idx)
  elseif name == "select" then
    if a[2] ~= 1 then
      fail(g, format("select: slices along the first dimension only (dimension %s given)",
                     tostring(a[2])))
    end
    return g:select(arg(1), a[3])
  elseif name == "onehot" then
    if math.type(a[1]) ~= "integer" then fail(g, "onehot: the size must be an integer") end
    return g:onehot(a[1], arg(2))
  end
  fail(g, format("operation '%s' cannot be compiled yet (supported: elementwise arithmetic, " ..
                 "exp, log, sqrt, tanh, sigmoid, relu, abs, softplus, dsoftplus, pow, sum, " ..
                 "mean, dot, index, select, t, mv, mm, outer, softmax, logsoftmax, " ..
                 "cross_entropy, onehot)", name))
end

ag.set_tracer(graph.Sym, record)

-- Operators on symbols, as on autograd variables.
local Sym = graph.Sym
Sym.__add = function(a, b) return ag.add(a, b) end
Sym.__sub = function(a, b) return ag.sub(a, b) end
Sym.__unm = function(a) return ag.neg(a) end
Sym.__mul = function(a, b)
  if type(a) == "number" or type(b) == "number" or #a.shape == 0 or #b.shape == 0 then
    return ag.mul(a, b)
  end
  fail(current, "'*' of two tensors is ambiguous: use ag.mul (elementwise) or ag.mm / ag.mv")
end
Sym.__div = function(a, b) return ag.div(a, b) end

-- The vector v with the entries listed in zero (1-based) replaced by 0:
-- the sum of unit vectors of its other entries, so an element read by
-- index is the entry itself or the constant 0 (which the graph folds).
local function with_zeros(g, v, zero)
  if #v.shape ~= 1 then fail(g, "zero: entries fixed at 0 need a vector input") end
  local fixed = {}
  for _, k in ipairs(zero) do
    if math.type(k) ~= "integer" or k < 1 or k > v.shape[1] then
      fail(g, format("zero: entry %s out of 1..%d", tostring(k), v.shape[1]))
    end
    fixed[k] = true
  end
  local sum
  for k = 1, v.shape[1] do
    if not fixed[k] then
      local u = g:unit(g:index(v, k), k, v.shape)
      sum = sum and g:binary("add", sum, u) or u
    end
  end
  return sum or g:bcast(g:const(0), v.shape)
end

-- trace.run(dtype, spec, fn) -> graph, outputs, inputs
--   spec: a list of argument descriptions, in the order fn takes them:
--     {name = "W", shape = {n, m}}            a tensor
--     {name = "theta", shape = {n}, zero = {k, ...}}   a vector whose
--                                             entries k (1-based) are fixed
--                                             at 0: terms they scale vanish
--                                             from the graph (a separate
--                                             kernel per set), their
--                                             gradients are 0
--     {name = "W", list = {{n1, m1}, ...}}    a list of tensors (fn gets a list)
--     {name = "label", scalar = true}         a number given at call time
--     {name = "net", value = v}               passed through as it is
--   fn returns a symbol or a list of symbols (the outputs).
function trace.run(dtype, spec, fn)
  local g = graph.new(dtype)
  local args = {}
  for i, s in ipairs(spec) do
    if s.value ~= nil then args[i] = s.value
    elseif s.list then
      local l = {}
      for k, shape in ipairs(s.list) do l[k] = g:input(s.name .. "[" .. k .. "]", shape) end
      args[i] = l
    elseif s.scalar then args[i] = g:input(s.name, {}, "scalar")
    else
      args[i] = g:input(s.name, s.shape)
      if s.zero and #s.zero > 0 then args[i] = with_zeros(g, args[i], s.zero) end
    end
  end
  if current then error("rule compiler: traces cannot nest", 2) end
  current = g
  local ok, out = pcall(fn, table.unpack(args, 1, #spec))
  current = nil
  if not ok then error(out, 0) end
  if is_sym(out) then out = {out} end
  if type(out) ~= "table" or #out == 0 then
    error("rule compiler: the traced step must return a value or a list of values", 2)
  end
  for i, o in ipairs(out) do
    if not is_sym(o) then
      error(format("rule compiler: output %d of the step does not depend on its inputs " ..
                   "(a %s)", i, type(o)), 2)
    end
  end
  return g, out, args
end

-- ---------------------------------------------------------------- traced tensors

-- Connection and circuit rules write their step with the in-place methods
-- of tensors (e:scale(v, c), e:sub(post, e), T:addmm(a, e_t, pre, 0),
-- W:axpy(c, D)), which allocate nothing when the step runs on tensors.
-- Traced, each tensor of the rule's state is a Ref: a name bound to one
-- graph value after another. Its methods record the same operations as
-- the autograd ones above (one tracer) and rebind the name, so the same
-- rule code builds the graph of its step; what each name holds at the end
-- is what the step wrote. r:t() is a transposed view that follows its
-- tensor; arithmetic operators on a Ref give symbols (values).
local Ref = {}
Ref.__name = "nm.compile.Ref"
trace.Ref = Ref

local function is_ref(x) return getmetatable(x) == Ref end
trace.is_ref = is_ref

-- The present value of a Ref (a symbol), or x itself.
local function val(x)
  if is_ref(x) then
    if x.base then return record("t", val(x.base)) end
    return x.sym
  end
  return x
end
trace.value_of = val

local function scalar_like(x)
  if type(x) == "number" then return true end
  local v = val(x)
  return is_sym(v) and #v.shape == 0
end

local function bind(r, v)
  if r.base then
    fail(current, format("'%s' is a transposed view: a rule cannot write through it", r.name))
  end
  if is_sym(v) and #v.shape == 0 and #r.shape > 0 then
    v = record("add", record("mul", 0, r.sym), v)          -- a number fills the tensor
  end
  if not is_sym(v) then v = record("add", record("mul", 0, r.sym), v) end
  if is_sym(v) and #v.shape ~= #r.shape then
    fail(current, format("'%s' %s cannot hold a value of %s", r.name, graph.shape_str(r.shape),
                         graph.shape_str(v.shape)))
  end
  r.sym = v
  return r
end

local M = {}      -- the methods

local function binop(name)
  M[name] = function(self, a, b)
    if b == nil then return bind(self, record(name, val(self), val(a))) end
    return bind(self, record(name, val(a), val(b)))
  end
end
for _, name in ipairs{"add", "sub", "mul", "div"} do binop(name) end

function M.scale(self, a, s)
  if s == nil then return bind(self, record("mul", val(self), val(a))) end
  return bind(self, record("mul", val(a), val(s)))
end
function M.neg(self, a) return bind(self, record("neg", val(a == nil and self or a))) end
function M.copy(self, a) return bind(self, val(a)) end
function M.zero(self) return bind(self, record("mul", 0, self.sym)) end
function M.fill(self, v) return bind(self, val(v)) end
function M.axpy(self, alpha, x) return bind(self, record("add", val(self), record("mul", val(alpha), val(x)))) end

-- C = beta C + alpha op(A, B): addmm, addmv ([alpha,] A, B[, beta]).
local function product(op)
  return function(self, a1, a2, a3, a4)
    local alpha, A, B, beta
    if scalar_like(a1) then alpha, A, B, beta = a1, a2, a3, a4
    else A, B, beta = a1, a2, a3 end
    local r = record(op, val(A), val(B))
    if alpha ~= nil and alpha ~= 1 then r = record("mul", val(alpha), r) end
    if beta == 0 then return bind(self, r) end
    local c = val(self)
    if beta ~= nil and beta ~= 1 then c = record("mul", val(beta), c) end
    return bind(self, record("add", c, r))
  end
end
M.addmm, M.addmv = product("mm"), product("mv")
function M.mm(self, A, B) return bind(self, record("mm", val(A), val(B))) end
function M.mv(self, A, x) return bind(self, record("mv", val(A), val(x))) end
function M.addr(self, alpha, x, y)
  if y == nil then alpha, x, y = 1, alpha, x end
  return bind(self, record("add", val(self), record("mul", val(alpha), record("outer", val(x), val(y)))))
end

-- Elementwise functions: t:f() in place, r:f(a) of a (softplus and
-- dsoftplus take beta after it).
for _, name in ipairs{"exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs", "sign", "drelu",
                      "softplus", "dsoftplus", "pow"} do
  M[name] = function(self, a, k)
    if a == nil or (type(a) == "number" and k == nil) then
      return bind(self, record(name, val(self), a))
    end
    return bind(self, record(name, val(a), k))
  end
end

-- The derivatives nn's activations write (d:dtanh(a), d:dsigmoid(a)) and
-- softmax of each row (y:softmax(a)), so a network's own activation code
-- traces (nm.unroll).
function M.dtanh(self, a)
  local y = record("tanh", val(a == nil and self or a))
  return bind(self, record("sub", 1, record("mul", y, y)))
end
function M.dsigmoid(self, a)
  local y = record("sigmoid", val(a == nil and self or a))
  return bind(self, record("mul", y, record("sub", 1, y)))
end
function M.softmax(self, a) return bind(self, record("softmax", val(a == nil and self or a))) end
function M.logsoftmax(self, a) return bind(self, record("logsoftmax", val(a == nil and self or a))) end
-- e:mul_dact(a, y, act [, beta]): e .*= f'(a), the fused derivative nn's
-- backward pass runs for its built-in activations (y = f(a): sigmoid and
-- tanh read it, as the C kernel does).
function M.mul_dact(self, a, y, act, beta)
  local d
  if act == "identity" then return self
  elseif act == "relu" then d = record("drelu", val(a))
  elseif act == "sigmoid" then d = record("mul", val(y), record("sub", 1, val(y)))
  elseif act == "tanh" then d = record("sub", 1, record("mul", val(y), val(y)))
  elseif act == "softplus" then d = record("dsoftplus", val(a), beta or 1)
  else
    fail(current, format("mul_dact: unknown activation '%s' (identity, relu, sigmoid, tanh, " ..
                         "softplus)", tostring(act)))
  end
  return bind(self, record("mul", val(self), d))
end
-- m:gt(a, b): 1 where a > b, else 0 (a ReLU's gate, d:gt(u, 0)): drelu of
-- a - b, with a zero derivative; t:gt(b) of t.
function M.gt(self, a, b)
  if b == nil then a, b = self, a end                    -- t:gt(b): t's mask
  if b == 0 then return bind(self, record("drelu", val(a))) end
  return bind(self, record("drelu", record("sub", val(a), val(b))))
end
-- t:dot(u): the sum of the elementwise product, a value (a scalar symbol).
function M.dot(self, a) return record("dot", val(self), val(a)) end

-- A new tensor holding the same value (a rule's scratch made on first use).
function M.clone(self)
  return setmetatable({name = self.name .. ":clone()", shape = {table.unpack(self.shape)},
                       sym = val(self)}, Ref)
end

function M.t(self)
  if self.base then return self.base end
  self.tview = self.tview or setmetatable({base = self, name = self.name .. ":t()",
                                            shape = {self.shape[2], self.shape[1]}}, Ref)
  return self.tview
end
function M.size(self, d)
  if d then return self.shape[d] end
  return {table.unpack(self.shape)}
end
function M.dim(self) return #self.shape end
function M.numel(self)
  local n = 1
  for _, d in ipairs(self.shape) do n = n * d end
  return n
end
function M.dtype() return current and current.dtype end

local FIELDS = {sym = true, base = true, input = true, tview = true, name = true, shape = true}
Ref.__index = function(self, k)
  local m = M[k]
  if m or FIELDS[k] then return m end
  local g = current
  if g then g.where = user_line() end
  fail(g or {}, format("the tensor method '%s' (on '%s') cannot be traced yet (supported: add, sub, " ..
                       "mul, div, scale, neg, copy, zero, fill, axpy, addmm, addmv, addr, mm, mv, " ..
                       "exp, log, sqrt, tanh, sigmoid, relu, abs, sign, drelu, softplus, dsoftplus, " ..
                       "dtanh, dsigmoid, mul_dact, softmax, logsoftmax, gt, dot, pow, clone, t, size, dim, numel)", tostring(k), rawget(self, "name") or "?"))
end
-- trace.ref(name, x) -> a new traced tensor holding x (a symbol, a Ref's
-- value, or a tensor: a constant of the step), inside a trace: for code
-- that runs in-place tensor methods over values of a compile.fn step (a
-- network's layers and its rules' updates, nm.unroll).
-- trace.ref(name, nil, shape): one holding zeros of that shape.
function trace.ref(name, x, shape)
  local g = current
  if not g then error("rule compiler: trace.ref outside a trace", 2) end
  local v
  if x == nil then v = g:bcast(g:const(0), shape) else v = operand(g, val(x), "ref", 1) end
  return setmetatable({name = name, shape = {table.unpack(v.shape)}, sym = v}, Ref)
end

Ref.__add = function(a, b) return record("add", val(a), val(b)) end
Ref.__sub = function(a, b) return record("sub", val(a), val(b)) end
Ref.__mul = function(a, b) return val(a) * val(b) end
Ref.__div = function(a, b) return record("div", val(a), val(b)) end
Ref.__unm = function(a) return record("neg", val(a)) end
Ref.__tostring = function(r) return format("Ref(%s %s)", r.name, graph.shape_str(r.shape)) end

-- trace.run_refs(dtype, tensors, scalars, fn) -> graph, refs, scalar nodes
--   tensors: a list of {name =, shape =, zero = true (starts at 0, not an
--     input), view = i (r:t() of tensors[i])}; scalars: a list of names.
--   fn(refs, scalar_nodes) runs the step; afterwards refs[i].sym holds
--   what tensor i was left holding (refs[i].input its value on entry).
function trace.run_refs(dtype, tensors, scalars, fn)
  local g = graph.new(dtype)
  local refs, sc = {}, {}
  for i, t in ipairs(tensors) do
    if t.view then
      refs[i] = M.t(refs[t.view])
    else
      local r = setmetatable({name = t.name, shape = t.shape}, Ref)
      if t.zero then r.sym = g:bcast(g:const(0), t.shape)
      else r.sym = g:input(t.name, t.shape); r.input = r.sym end
      refs[i] = r
    end
  end
  for i, name in ipairs(scalars) do sc[i] = g:input(name, {}, "scalar") end
  if current then error("rule compiler: traces cannot nest", 2) end
  current = g
  local ok, err = pcall(fn, refs, sc)
  current = nil
  if not ok then error(err, 0) end
  return g, refs, sc
end

return trace
