-- nm/autograd.lua: reverse-mode automatic differentiation over neuromic
-- tensors. A tape records the operations that touch tracked variables;
-- tape:backward() walks it in reverse and leaves gradients in the leaves.
-- ag.scan unrolls a step function (a plasticity rule's inner loop) with
-- checkpointing, so the memory of a T-step meta-gradient is bounded by
-- about 2 sqrt(T) states instead of T. doc/autograd.md explains how to
-- meta-learn a rule of your own with it.
--
--   local ag = require "nm.autograd"
--   local tape = ag.tape()
--   local theta = tape:leaf(nm.tensor({1e-3, 0}, "float64"))
--   local W = W0                                    -- plain tensors are constants
--   local y = ag.softplus(ag.mv(W, x), 10)
--   local loss = ag.sum(ag.mul(y, ag.index(theta, 1)))
--   tape:backward(loss)                             -- theta.grad: a tensor
--
-- Values are tensors (any dtype) or Lua numbers (scalars). An operation
-- whose arguments include a variable of a tape is recorded on that tape
-- and returns a variable; with only plain values it computes and returns
-- a plain value, so the same rule code runs both as a fast untracked
-- forward pass and on a tape. Every operation allocates its result and
-- never modifies its arguments (values are immutable). Gradients have the
-- shape of their value; the gradient of a scalar is a number.
--
-- New operations: ag.def(name, forward, backward [, nout]); see the
-- comment there and doc/autograd.md (fused C kernels come in that way).

local nm = require "neuromic"

local ag = {}

local format, select, type, sqrt = string.format, select, type, math.sqrt
local is_tensor = nm.is_tensor

-- ---------------------------------------------------------------- variables

local Var = {}
Var.__index = Var
Var.__name = "nm.autograd.Var"

local Tape = {}
Tape.__index = Tape
Tape.__name = "nm.autograd.Tape"

local function is_var(x) return getmetatable(x) == Var end
ag.is_var = is_var

-- The symbols of nm.compile's tracer (see ag.set_tracer).
local Sym, tracer

-- The raw value of a variable, or x itself (a traced symbol: the same
-- value cut off from gradients).
local function value(x)
  local mt = getmetatable(x)
  if mt == Var then return x.value end
  if mt == Sym and mt ~= nil then return tracer("value", x) end
  return x
end
ag.value = value

-- ag.is_tracked(x): x is a variable of a tape or a traced symbol, so its
-- elements are not known yet (a rule must not branch on them).
function ag.is_tracked(x)
  local mt = getmetatable(x)
  return mt == Var or (mt == Sym and mt ~= nil)
end

function Var:__tostring()
  local v = self.value
  local what = type(v) == "number" and format("%.6g", v)
    or format("%s [%s]", v:dtype(), table.concat(v:size(), " x "))
  return format("Var(%s%s)", what, self.name and (", " .. self.name) or "")
end

-- Shape description for messages.
local function describe(v)
  if type(v) == "number" then return "scalar" end
  if is_tensor(v) then return "[" .. table.concat(v:size(), " x ") .. "]" end
  return type(v)
end

-- ---------------------------------------------------------------- tapes

-- ag.tape() -> a new, empty tape.
function ag.tape()
  return setmetatable({
    nodes = {}, n = 0,            -- recorded nodes, in order
    recorded = 0,                 -- nodes recorded over the tape's life
    -- Tensors stored as a gradient somewhere: a second owner must copy.
    claimed = setmetatable({}, {__mode = "k"}),
  }, Tape)
end

-- tape:leaf(value [, name]) -> a variable whose gradient backward fills
-- (a meta-parameter, or a state the caller wants the adjoint of).
function Tape:leaf(v, name)
  if type(v) ~= "number" and not is_tensor(v) then
    error(format("autograd: leaf value must be a tensor or a number, got %s", type(v)), 2)
  end
  return setmetatable({value = v, tape = self, name = name}, Var)
end

-- Number of nodes now on the tape.
function Tape:size() return self.n end

-- Bytes of tensor storage the recorded nodes hold (outputs and saved
-- context), each tensor object counted once. Views count as their own
-- size, so this is an estimate from above for views.
function Tape:bytes()
  local seen, total = {}, 0
  local function count(t)
    if is_tensor(t) and not seen[t] then
      seen[t] = true
      total = total + t:numel() * (t:dtype() == "float64" and 8 or 4)
    elseif type(t) == "table" and getmetatable(t) == nil and not seen[t] then
      seen[t] = true
      for _, x in pairs(t) do count(x) end
    end
  end
  for i = 1, self.n do
    local node = self.nodes[i]
    if node then
      for _, o in ipairs(node.outputs) do count(o.value) end
      count(node.ctx)
    end
  end
  return total
end

-- Adds gradient g into variable v (v.grad created on first use).
local function accumulate(tape, v, g, opname)
  if g == nil then return end
  local cur = v.grad
  if type(g) == "number" then
    if type(v.value) ~= "number" then
      error(format("autograd: '%s' returned a number as the gradient of a %s value",
                   opname, describe(v.value)), 0)
    end
    v.grad = (cur or 0) + g
    return
  end
  if not is_tensor(g) or type(v.value) == "number" or not g:same_shape(v.value) then
    error(format("autograd: '%s' returned a gradient of shape %s for a value of shape %s",
                 opname, describe(g), describe(v.value)), 0)
  end
  if cur == nil then
    if tape.claimed[g] then g = g:clone() end
    tape.claimed[g] = true
    v.grad = g
  else
    cur:add(g)
  end
end

-- tape:backward(root [, seed]) or tape:backward({roots...}, {seeds...}):
-- reverse pass. A scalar root's seed defaults to 1; tensor roots need a
-- seed of their shape (nil seeds in a list are skipped). Leaves (and any
-- variable not produced on this tape) keep their .grad; gradients of
-- intermediate variables are dropped as soon as they are used. The tape
-- is consumed: its nodes are released as the pass goes, so run forward
-- again (on a new tape) for another backward.
function Tape:backward(roots, seeds)
  if is_var(roots) then roots, seeds = {roots}, {seeds} end
  seeds = seeds or {}
  local n_roots = 0
  for i, r in pairs(roots) do
    if is_var(r) then
      if r.tape ~= self then error("autograd: backward: root belongs to another tape", 2) end
      local s = seeds[i]
      if s == nil and type(r.value) == "number" then s = 1 end
      if s ~= nil then
        if is_tensor(s) then s = s:clone() end   -- the tape owns what it accumulates into
        accumulate(self, r, s, "backward seed")
        n_roots = n_roots + 1
      end
    end
  end
  local nodes, claimed = self.nodes, self.claimed
  for i = self.n, 1, -1 do
    local node = nodes[i]
    nodes[i] = nil
    self.n = i - 1
    local outs, gouts, any = node.outputs, nil, false
    if node.nout == 1 then
      gouts = outs[1].grad
      any = gouts ~= nil
      outs[1].grad = nil
    else
      gouts = {}
      for k = 1, node.nout do
        gouts[k] = outs[k].grad
        if gouts[k] ~= nil then any = true end
        outs[k].grad = nil
      end
    end
    if any then
      -- The gradients handed over belong to the backward function now:
      -- it may overwrite them or return them (no copy made).
      if node.nout == 1 then
        if is_tensor(gouts) then claimed[gouts] = nil end
      else
        for k = 1, node.nout do if is_tensor(gouts[k]) then claimed[gouts[k]] = nil end end
      end
      local op = node.op
      local grads = table.pack(op.backward(node.ctx, gouts))
      local inputs = node.inputs
      for j = 1, node.nin do
        local v = inputs[j]
        if v then accumulate(self, v, grads[j], op.name) end
      end
    end
    node.ctx, node.inputs = nil, nil
  end
  return n_roots
end

-- ---------------------------------------------------------------- operations

-- ag.def(name, forward, backward [, nout]) -> a function recording `name`.
--   forward(ctx, ...) receives the raw values of the arguments (tensors,
--     numbers or anything else, e.g. tables of options) and returns the
--     result (nout == 1) or a list of nout results; it stores in ctx what
--     backward needs. It must not modify its arguments.
--   backward(ctx, gout) receives the gradient of the result (for nout > 1:
--     a list, with nil where an output received none) and returns one
--     gradient per argument, in order (nil for arguments without one). It
--     may overwrite gout and may return gout itself (or a view of it) for
--     at most one argument; all other gradients must be fresh tensors.
-- Arguments that are variables of a tape are tracked; if there are none,
-- the function only computes (ctx is then thrown away).
-- Symbols (nm.compile's traced values) are handed to the tracer instead:
-- the same rule code then builds an expression graph.
-- ag.set_tracer(sym_metatable, trace) makes every operation called with
-- an argument whose metatable is sym_metatable return trace(name, ...)
-- instead of computing (nm.compile's tracer; one per process).
function ag.set_tracer(mt, fn)
  Sym, tracer = mt, fn
end

function ag.def(name, forward, backward, nout)
  nout = nout or 1
  local op = {name = name, backward = backward}
  return function(...)
    local nin = select("#", ...)
    local tape
    for i = 1, nin do
      local a = select(i, ...)
      local mt = getmetatable(a)
      if mt == Var then
        if tape and a.tape ~= tape then
          error(format("autograd: '%s': arguments from two different tapes", name), 2)
        end
        tape = a.tape
      elseif mt == Sym and mt ~= nil then
        return tracer(name, ...)
      end
    end
    if not tape then
      return forward({}, ...)
    end
    local inputs, vals = {}, {}
    for i = 1, nin do
      local a = select(i, ...)
      if getmetatable(a) == Var then inputs[i], vals[i] = a, a.value
      else inputs[i], vals[i] = false, a end
    end
    local ctx = {}
    local res = forward(ctx, table.unpack(vals, 1, nin))
    local node = {op = op, ctx = ctx, inputs = inputs, nin = nin, nout = nout}
    local n = tape.n + 1
    tape.n, tape.nodes[n] = n, node
    tape.recorded = tape.recorded + 1
    if nout == 1 then
      local v = setmetatable({value = res, tape = tape}, Var)
      node.outputs = {v}
      return v
    end
    local outs = {}
    for k = 1, nout do outs[k] = setmetatable({value = res[k], tape = tape}, Var) end
    node.outputs = outs
    return outs
  end
end

local def = ag.def

-- A fresh tensor shaped and typed like t (zeros).
local function new_like(t)
  return nm.zeros(t:size(), t:dtype())
end
ag.new_like = new_like

-- r = a .* b, fresh.
local function emul(a, b)
  return new_like(a):mul(a, b)
end

-- The gradient for an operand given the gradient g of a result shaped like
-- the tensor operand(s): a number operand gets the sum of g.
local function reduce_for(operand, g)
  if type(operand) == "number" and is_tensor(g) then return g:sum() end
  return g
end

local function check_operands(name, a, b)
  local ta, tb = type(a) == "number", type(b) == "number"
  if not ta and not is_tensor(a) then
    error(format("autograd: '%s': argument #1 must be a tensor or a number, got %s", name, type(a)), 3)
  end
  if not tb and not is_tensor(b) then
    error(format("autograd: '%s': argument #2 must be a tensor or a number, got %s", name, type(b)), 3)
  end
  if not ta and not tb and not a:same_shape(b) then
    error(format("autograd: '%s': shapes differ, %s vs %s", name, describe(a), describe(b)), 3)
  end
end

-- ag.add(a, b), ag.sub(a, b): tensors of one shape, or a number with a
-- tensor or a number.
ag.add = def("add", function(ctx, a, b)
  check_operands("add", a, b)
  ctx.a, ctx.b = type(a) == "number" and 0 or nil, type(b) == "number" and 0 or nil
  if type(a) == "number" and type(b) == "number" then return a + b end
  if type(a) == "number" then return b + a end
  return a + b
end, function(ctx, g)
  return reduce_for(ctx.a, g), reduce_for(ctx.b, g)
end)

ag.sub = def("sub", function(ctx, a, b)
  check_operands("sub", a, b)
  ctx.a, ctx.b = type(a) == "number" and 0 or nil, type(b) == "number" and 0 or nil
  if type(a) == "number" and type(b) == "number" then return a - b end
  return a - b
end, function(ctx, g)
  local gb
  if type(g) == "number" then gb = -g
  elseif ctx.b then gb = -g:sum()
  else gb = new_like(g):scale(g, -1) end
  return reduce_for(ctx.a, g), gb
end)

-- ag.mul(a, b): elementwise product of tensors of one shape, or scaling by
-- a number (either side), or the product of two numbers. Matrix products
-- are ag.mm and ag.mv.
ag.mul = def("mul", function(ctx, a, b)
  check_operands("mul", a, b)
  ctx.a, ctx.b = a, b
  local na, nb = type(a) == "number", type(b) == "number"
  if na and nb then return a * b end
  if na then return new_like(b):scale(b, a) end
  if nb then return new_like(a):scale(a, b) end
  return emul(a, b)
end, function(ctx, g)
  local a, b = ctx.a, ctx.b
  local na, nb = type(a) == "number", type(b) == "number"
  if type(g) == "number" then return g * b, g * a end
  if na then return g:dot(b), g:scale(a) end          -- g is owned: reuse it
  if nb then
    local gb = g:dot(a)
    return g:scale(b), gb
  end
  return emul(g, b), g:mul(a)
end)

-- ag.scale(a, s) = ag.mul(a, s): a tensor (or number) times a scalar.
ag.scale = ag.mul

-- ag.div(a, b): elementwise a / b (tensors of one shape, or numbers on
-- either side).
ag.div = def("div", function(ctx, a, b)
  check_operands("div", a, b)
  local na, nb = type(a) == "number", type(b) == "number"
  local r
  if na and nb then r = a / b
  elseif na then r = new_like(b):div(a, b)
  elseif nb then r = new_like(a):div(a, b)
  else r = new_like(a):div(a, b) end
  ctx.a, ctx.b, ctx.r = a, b, r
  return r
end, function(ctx, g)
  local a, b, r = ctx.a, ctx.b, ctx.r
  local na, nb = type(a) == "number", type(b) == "number"
  if type(g) == "number" then return g / b, -g * r / b end
  -- d(a/b)/da = 1/b; d(a/b)/db = -r / b
  local ga = new_like(g):div(g, b)
  local gb = new_like(g):mul(ga, r):scale(-1)
  return na and ga:sum() or ga, nb and gb:sum() or gb
end)

ag.neg = def("neg", function(_, a)
  if type(a) == "number" then return -a end
  return new_like(a):scale(a, -1)
end, function(_, g)
  if type(g) == "number" then return -g end
  return g:scale(-1)
end)

-- Elementwise functions of one tensor (or number): value f and the
-- derivative written from the argument x and the result y.
local function unary(name, f, df)
  return def(name, function(ctx, x, p)
    if type(x) == "number" then
      local t = nm.tensor({x}, "float64")
      local y = f(t, p):get(1)
      ctx.x, ctx.y, ctx.p, ctx.scalar = t, nm.tensor({y}, "float64"), p, true
      return y
    end
    if not is_tensor(x) then
      error(format("autograd: '%s': argument #1 must be a tensor or a number, got %s", name, type(x)), 2)
    end
    local y = f(x, p)
    ctx.x, ctx.y, ctx.p = x, y, p
    return y
  end, function(ctx, g)
    if ctx.scalar then return g * df(ctx.x, ctx.y, ctx.p):get(1) end
    return g:mul(df(ctx.x, ctx.y, ctx.p))
  end)
end

ag.exp = unary("exp", function(x) return new_like(x):exp(x) end,
               function(_, y) return y end)
ag.log = unary("log", function(x) return new_like(x):log(x) end,
               function(x) return new_like(x):fill(1):div(x) end)
ag.sqrt = unary("sqrt", function(x) return new_like(x):sqrt(x) end,
                function(_, y) return new_like(y):fill(0.5):div(y) end)
ag.tanh = unary("tanh", function(x) return new_like(x):tanh(x) end,
                function(x) return new_like(x):dtanh(x) end)
ag.sigmoid = unary("sigmoid", function(x) return new_like(x):sigmoid(x) end,
                   function(x) return new_like(x):dsigmoid(x) end)
ag.relu = unary("relu", function(x) return new_like(x):relu(x) end,
                function(x) return new_like(x):drelu(x) end)
ag.abs = unary("abs", function(x) return new_like(x):abs(x) end,
               function(x) return new_like(x):sign(x) end)
-- ag.softplus(x, beta): log(1 + exp(beta x)) / beta; its derivative
-- sigmoid(beta x) is itself differentiable (ag.dsoftplus), so rules whose
-- errors use the derivative can be differentiated again.
ag.softplus = unary("softplus", function(x, beta) return new_like(x):softplus(x, beta or 1) end,
                    function(x, _, beta) return new_like(x):dsoftplus(x, beta or 1) end)
ag.dsoftplus = unary("dsoftplus", function(x, beta) return new_like(x):dsoftplus(x, beta or 1) end,
                     function(x, _, beta)
                       beta = beta or 1
                       local s = new_like(x):dsoftplus(x, beta)       -- sigmoid(beta x)
                       local d = new_like(x):fill(1):sub(s)          -- 1 - s
                       return d:mul(s):scale(beta)                   -- beta s (1 - s)
                     end)
-- ag.pow(x, p): x^p for a number p.
ag.pow = unary("pow", function(x, p) return new_like(x):pow(x, p) end,
               function(x, _, p) return new_like(x):pow(x, p - 1):scale(p) end)

-- ag.sum(a), ag.mean(a): sums of all elements (numbers).
-- The sums of a matrix along dim (1: a vector of column sums, 2: of row
-- sums), checked.
local function dim_sums(name, a, dim)
  if not is_tensor(a) or a:dim() ~= 2 or (dim ~= 1 and dim ~= 2) then
    error(format("autograd: '%s': sums along a dimension (1 or 2) of a matrix", name), 4)
  end
  return a:sum(dim)
end

-- g (one entry per row (dim 2) or column (dim 1) of a) spread back over a.
local function spread(a, g, dim, scale)
  local r = nm.zeros(a:size(), a:dtype())
  local ones = nm.ones(a:size(dim), a:dtype())
  if dim == 2 then return r:addr(scale, g, ones) end
  return r:addr(scale, ones, g)
end

-- ag.sum(a [, dim]): the sum of all elements (a number), or along dim of a
-- matrix (1: column sums, 2: row sums; a vector). ag.mean likewise.
ag.sum = def("sum", function(ctx, a, dim)
  if type(a) == "number" then return a end
  ctx.a, ctx.dim = a, dim
  if dim then return dim_sums("sum", a, dim) end
  return a:sum()
end, function(ctx, g)
  if not ctx.a then return g end
  if ctx.dim then return spread(ctx.a, g, ctx.dim, 1) end
  return new_like(ctx.a):fill(g)
end)

ag.mean = def("mean", function(ctx, a, dim)
  if type(a) == "number" then return a end
  ctx.a, ctx.dim = a, dim
  if dim then return dim_sums("mean", a, dim):scale(1 / a:size(dim)) end
  return a:mean()
end, function(ctx, g)
  if not ctx.a then return g end
  if ctx.dim then return spread(ctx.a, g, ctx.dim, 1 / ctx.a:size(ctx.dim)) end
  return new_like(ctx.a):fill(g / ctx.a:numel())
end)

-- ag.dot(a, b): sum of a .* b (same shapes) -> number.
ag.dot = def("dot", function(ctx, a, b)
  check_operands("dot", a, b)
  ctx.a, ctx.b = a, b
  return a:dot(b)
end, function(ctx, g)
  return new_like(ctx.b):scale(ctx.b, g), new_like(ctx.a):scale(ctx.a, g)
end)

-- ag.index(v, i...) -> number: one element (1-based), e.g. a
-- meta-parameter out of a vector of them.
ag.index = def("index", function(ctx, v, ...)
  ctx.v, ctx.i = v, table.pack(...)
  return v:get(...)
end, function(ctx, g)
  local r = new_like(ctx.v)
  local i = ctx.i
  -- set(i1, ..., in, value): the value goes after every index
  local args = {table.unpack(i, 1, i.n)}
  args[i.n + 1] = g
  r:set(table.unpack(args, 1, i.n + 1))
  return r
end)

-- ag.select(v, dim, i): the slice i of v along dim (a copy), e.g. one
-- chemical of a [L x n x m] tensor.
ag.select = def("select", function(ctx, v, dim, i)
  ctx.v, ctx.dim, ctx.i = v, dim, i
  return v:select(dim, i):clone()
end, function(ctx, g)
  local r = new_like(ctx.v)
  r:select(ctx.dim, ctx.i):copy(g)
  return r
end)

-- ag.onehot(n, label [, dtype]) -> a vector of n zeros with a 1 at the
-- (1-based) label: a constant (no gradient), written as an operation so a
-- traced rule step receives the label at call time.
ag.onehot = def("onehot", function(_, n, label, dtype)
  if math.type(n) ~= "integer" or n < 1 then
    error("autograd: 'onehot': size must be a positive integer, got " .. tostring(n), 3)
  end
  if math.type(label) ~= "integer" or label < 1 or label > n then
    error(format("autograd: 'onehot': label %s is not in 1..%d", tostring(label), n), 3)
  end
  local t = nm.zeros(n, dtype or "float64")
  t:set(label, 1)
  return t
end, function() return nil end)

-- ag.t(A): the transpose (a view; no copy).
ag.t = def("t", function(_, A) return A:t() end,
           function(_, g) return g:t() end)

-- ag.mv(A, x): A x for a matrix A [m x n] and a vector x [n].
ag.mv = def("mv", function(ctx, A, x)
  ctx.A, ctx.x = A, x
  return nm.mv(A, x)
end, function(ctx, g)
  local A, x = ctx.A, ctx.x
  return nm.outer(g, x), nm.mv(A:t(), g)
end)

-- ag.mm(A, B): the matrix product.
ag.mm = def("mm", function(ctx, A, B)
  ctx.A, ctx.B = A, B
  return nm.mm(A, B)
end, function(ctx, g)
  return nm.mm(g, ctx.B:t()), nm.mm(ctx.A:t(), g)
end)

-- ag.outer(x, y): x y^T.
ag.outer = def("outer", function(ctx, x, y)
  ctx.x, ctx.y = x, y
  return nm.outer(x, y)
end, function(ctx, g)
  return nm.mv(g, ctx.y), nm.mv(g:t(), ctx.x)
end)

-- Row sums of a matrix (or the sum of a vector as a 1-vector), fresh.
local function row_sums(m)
  if m:dim() == 1 then return nm.tensor({m:sum()}, m:dtype()) end
  return nm.mv(m, nm.ones(m:size(2), m:dtype()))
end

-- g - rowsum(h) 1^T, in g (g and h shaped alike, vectors or matrices).
local function sub_row_sums(g, h)
  local rs = row_sums(h)
  if g:dim() == 1 then return g:sub(rs:get(1)) end
  return g:addr(-1, rs, nm.ones(g:size(2), g:dtype()))
end

-- ag.softmax(a): softmax of a vector or of each row of a matrix.
ag.softmax = def("softmax", function(ctx, a)
  local y = new_like(a):softmax(a)
  ctx.y = y
  return y
end, function(ctx, g)
  local y = ctx.y
  return sub_row_sums(g, emul(g, y)):mul(y)        -- y .* (g - <g, y>)
end)

-- ag.logsoftmax(a): log-softmax of a vector or of each row.
ag.logsoftmax = def("logsoftmax", function(ctx, a)
  local y = new_like(a):logsoftmax(a)
  ctx.y = y
  return y
end, function(ctx, g)
  local p = new_like(ctx.y):exp(ctx.y)
  local rs = row_sums(g)
  if g:dim() == 1 then return g:sub(p:scale(rs:get(1))) end
  -- g - p .* (rowsum(g) 1^T)
  local m = nm.zeros(g:size(), g:dtype()):addr(1, rs, nm.ones(g:size(2), g:dtype()))
  return g:sub(m:mul(p))
end)

-- Checks labels for cross_entropy: one 1-based class for a vector of
-- logits, a list of them (one per row) for a matrix.
local function check_labels(logits, labels)
  local rows = logits:dim() == 1 and 1 or logits:size(1)
  local classes = logits:size(logits:dim())
  local list = type(labels) == "table" and labels or {labels}
  if #list ~= rows then
    error(format("autograd: 'cross_entropy': %d labels for %d rows", #list, rows), 3)
  end
  for i = 1, rows do
    local c = list[i]
    if math.type(c) ~= "integer" or c < 1 or c > classes then
      error(format("autograd: 'cross_entropy': label %s of row %d is not a class in 1..%d",
                   tostring(c), i, classes), 3)
    end
  end
  return list
end

-- ag.cross_entropy(logits, labels) -> number: the mean over rows of
-- -log softmax(logits)[label] (labels: 1-based class, or a list of them
-- for a matrix of logits).
ag.cross_entropy = def("cross_entropy", function(ctx, logits, labels)
  local list = check_labels(logits, labels)
  local ls = new_like(logits):logsoftmax(logits)
  local total = 0
  local vec = logits:dim() == 1
  for i = 1, #list do
    total = total - (vec and ls:get(list[i]) or ls:get(i, list[i]))
  end
  ctx.ls, ctx.list, ctx.vec = ls, list, vec
  return total / #list
end, function(ctx, g)
  local p = new_like(ctx.ls):exp(ctx.ls)
  local n = #ctx.list
  for i = 1, n do
    local c = ctx.list[i]
    if ctx.vec then p:set(c, p:get(c) - 1) else p:set(i, c, p:get(i, c) - 1) end
  end
  return p:scale(g / n), nil
end)

-- ag.l1(a) -> number: the sum of |a|.
function ag.l1(a)
  return ag.sum(ag.abs(a))
end

-- Operators on variables: + - and unary minus; * and / with a number on
-- one side (a product of two tensors is ambiguous: ag.mul or ag.mm).
Var.__add = function(a, b) return ag.add(a, b) end
Var.__sub = function(a, b) return ag.sub(a, b) end
Var.__unm = function(a) return ag.neg(a) end
Var.__mul = function(a, b)
  if type(value(a)) == "number" or type(value(b)) == "number" then return ag.mul(a, b) end
  error("autograd: '*' of two tensor variables is ambiguous: use ag.mul (elementwise) " ..
        "or ag.mm / ag.mv (products)", 2)
end
Var.__div = function(a, b)
  if type(value(b)) == "number" then return ag.div(a, b) end
  error("autograd: '/' needs a number on the right: use ag.div for elementwise division", 2)
end

-- ---------------------------------------------------------------- scan

local ceil = math.ceil

-- The buffers of a fused scan of T steps in segments of S, allocated once
-- per (kernel.cache, T, S) and reused: ceil(T / S) stored states (segment
-- starts), S states for the segment being recomputed, and S traces, or T
-- with a kernel that replays (one per step, written by the forward pass).
-- A set still held by a recorded unroll whose backward has not run (its
-- result variables alive) is not shared: a fresh one is made.
local function scan_buffers(k, T, S)
  local cache = k.cache or {}
  local key = T .. ":" .. S
  local ws = cache[key]
  if ws and ws.holder[1] == nil then return ws end
  local nseg = math.max(1, ceil(T / S))
  ws = {snaps = {}, seg = {}, traces = {}, nseg = nseg, holder = setmetatable({}, {__mode = "v"})}
  for i = 1, nseg do ws.snaps[i] = k.state() end
  for j = 1, math.min(S, math.max(T, 1)) do ws.seg[j] = k.state() end
  for j = 1, math.min(k.replay and T or S, math.max(T, 1)) do ws.traces[j] = k.trace() end
  if not cache[key] or cache[key].holder[1] == nil then cache[key] = ws end
  return ws
end

-- Records an unroll as one node of the tape: arguments init..., params...,
-- results the ns final states (a list); backward returns their gradients
-- through scan_grads.
local function scan_node(forward, backward, init, params)
  local ns, np = #init, #params
  local op = def("scan", forward, backward, ns)
  local args = {}
  for i = 1, ns do args[i] = init[i] end
  for i = 1, np do args[ns + i] = params[i] end
  local res = op(table.unpack(args, 1, ns + np))
  if ns == 1 then return {res} end
  return res
end

local function scan_grads(adj, pgrad, ns, np)
  local out = {}
  for i = 1, ns do out[i] = adj[i] end
  for i = 1, np do out[ns + i] = pgrad[i] end
  return table.unpack(out, 1, ns + np)
end

local function copy_list(dst, src)
  for i = 1, #dst do dst[i]:copy(value(src[i])) end
end

-- ag.scan with a fused kernel k (see ag.scan).
local function fused_scan(k, init, params, T, S, opts, tape)
  local ns, np = #init, #params
  local ws = scan_buffers(k, T, S)
  local replay = k.replay ~= nil
  if opts.stats then
    local nbuf = #ws.seg
    opts.stats.snapshots, opts.stats.segment, opts.stats.segments = ws.nseg, S, ws.nseg
    opts.stats.state_bytes, opts.stats.trace_bytes = k.state_bytes, k.trace_bytes
    opts.stats.workspace_bytes = (ws.nseg + nbuf) * (k.state_bytes or 0) +
      #ws.traces * (k.trace_bytes or 0)
  end
  local function prepare(list) if k.prepare then return k.prepare(list) end return list end
  -- The trace buffer of step t (j-th of its segment).
  local function trace_of(t, j) return ws.traces[replay and t or j] end
  -- tracked: the last segment runs with its traces into the segment
  -- buffers, where backward finds it (it is not recomputed); with a
  -- replaying kernel every step writes its trace.
  local function run_forward(pv, start, tracked)
    local out = k.state()
    if T == 0 then copy_list(out, start) return out end
    local p = prepare(pv)
    copy_list(ws.snaps[1], start)
    for s = 1, ws.nseg do
      local t0 = (s - 1) * S
      local len = math.min(S, T - t0)
      local keep = tracked and s == ws.nseg
      local traced = keep or (tracked and replay)
      for j = 1, len do
        local src = j == 1 and ws.snaps[s] or ws.seg[j - 1]
        local dst = ws.seg[j]
        if j == len and not keep then dst = s < ws.nseg and ws.snaps[s + 1] or out end
        k.forward(dst, src, p, t0 + j, traced and trace_of(t0 + j, j) or nil)
      end
      if keep then copy_list(out, ws.seg[len]) end
    end
    return out
  end
  local pvals = {}
  for i = 1, np do pvals[i] = value(params[i]) end
  if not tape then return run_forward(pvals, init) end

  local function forward(_, ...)
    local out = run_forward(pvals, {...}, true)
    if ns == 1 then return out[1] end
    return out
  end
  local function backward(_, gouts)
    if ns == 1 then gouts = {gouts} end
    local adj = {}
    for i = 1, ns do adj[i] = gouts[i] or new_like(ws.snaps[1][i]) end   -- owned: overwritten
    if k.view then adj = k.view(adj) end
    local pgrad = {}
    for i = 1, np do pgrad[i] = new_like(pvals[i]) end
    local p, gp = prepare(pvals), prepare(pgrad)
    for s = ws.nseg, 1, -1 do
      local t0 = (s - 1) * S
      local len = math.min(S, T - t0)
      if s < ws.nseg then                 -- the last segment is still there
        -- (its last state is the next segment's start: not needed)
        for j = 1, len - 1 do
          local src = j == 1 and ws.snaps[s] or ws.seg[j - 1]
          if replay then k.replay(ws.seg[j], src, p, t0 + j, ws.traces[t0 + j])
          else k.forward(ws.seg[j], src, p, t0 + j, ws.traces[j]) end
        end
        if not replay then
          k.forward(ws.seg[len], len == 1 and ws.snaps[s] or ws.seg[len - 1], p, t0 + len,
                    ws.traces[len])
        end
      end
      for j = len, 1, -1 do
        local dst = ws.seg[j]
        if replay and j == len and s < ws.nseg then dst = ws.snaps[s + 1] end
        k.backward(adj, j == 1 and ws.snaps[s] or ws.seg[j - 1], dst, p, gp, t0 + j,
                   trace_of(t0 + j, j))
      end
    end
    ws.holder[1] = nil
    return scan_grads(adj, pgrad, ns, np)
  end
  local res = scan_node(forward, backward, init, params)
  ws.holder[1] = res[1]
  return res
end

-- ag.scan(step, init, params, T [, opts]) -> list of the states after T steps.
--
-- Unrolls state_t = step(state_{t-1}, params, t) for t = 1..T, where init
-- and the result of step are lists of values (tensors or numbers) of a
-- fixed length and params a list of values the step only reads (the
-- meta-parameters). Entries of init and params may be variables of a tape;
-- then the whole unroll is one node on that tape, and backward produces
-- the gradients for them.
--
-- Checkpointing: the forward pass runs untracked and keeps the state at
-- every segment boundary (every S steps, S = opts.segment or
-- ceil(sqrt(T))). backward handles the segments from the last to the
-- first: it re-runs the segment from its stored state, back-propagates the
-- adjoint of the segment's end state through it, and hands the adjoint of
-- its start state to the previous segment. Memory: ceil(T / S) stored
-- states plus one segment (S steps), i.e. about 2 sqrt(T) states at
-- S = sqrt(T), instead of T for a plain tape; the price is one more
-- forward pass (with a fused kernel, less the last segment: a recorded
-- unroll runs it with its traces into the segment buffers, and backward
-- starts from them; with a kernel that replays, less again: each step is
-- replayed from its recorded trace, and the last of each segment not at
-- all, its result being the next segment's stored start).
--
-- step is either
--   a function (state, params, t) -> state: the generic form, recorded on
--     a fresh tape per segment during backward. It must not modify its
--     arguments (stored states are referenced, not copied).
--   a fused kernel (a table): a step with its own hand-written adjoint,
--     e.g. a C kernel. The states then live in buffers allocated once per
--     (kernel.cache, T, S) and reused by every call, so an unroll
--     allocates only its result (and, for the gradient, the adjoints):
--       state()          -> a fresh state buffer: a list of tensors like init
--                           (it may carry other fields the kernel reads)
--       trace()          -> a fresh trace buffer (what backward needs of a step)
--       forward(dst, src, p, t [, trace])   writes the state after step t
--                           into dst from src; records the trace when given
--       replay(dst, src, p, t, trace)   optional: the same state from src
--                           and the trace that forward recorded, without
--                           the work that made the trace (a rule's products
--                           with the weights): then the recorded forward
--                           pass keeps every step's trace (T traces, small
--                           next to a state) and backward replays each
--                           segment instead of running it forward again
--       backward(adj, src, dst, p, gp, t, trace)   adj holds the adjoint of
--                           dst (step t's result) and is made that of src:
--                           overwritten, or its entries replaced by buffers
--                           of the kernel's own if after step 1 they are the
--                           caller's tensors again; adds the parameters'
--                           gradients to gp
--       prepare(list)    -> optional: what forward/backward get as p and gp
--                           from the list of parameter values or gradients
--       view(list)       -> optional: the adjoint list as backward takes it
--       cache            a table that keeps the buffers between calls
--       state_bytes, trace_bytes   sizes, for opts.stats
--
-- opts: segment (steps per segment), gc (default true, generic form: a
-- full garbage collection after each segment's backward), stats (a table
-- that receives snapshots, segment, segments; the generic form adds
-- peak_tape_nodes, peak_tape_bytes (with measure = true), peak_kb = the
-- largest collectgarbage("count") seen with a segment's tape fully
-- recorded (after a full collection when opts.collect is set); a fused
-- kernel adds state_bytes, trace_bytes (one trace) and workspace_bytes,
-- the size of its buffers).
function ag.scan(step, init, params, T, opts)
  opts = opts or {}
  if type(step) ~= "function" and type(step) ~= "table" then
    error("autograd: scan: step must be a function or a fused kernel (a table)", 2)
  end
  if type(init) ~= "table" or type(params) ~= "table" then
    error("autograd: scan: init and params must be lists", 2)
  end
  if math.type(T) ~= "integer" or T < 0 then
    error("autograd: scan: T must be a non-negative integer, got " .. tostring(T), 2)
  end
  local S = opts.segment or math.max(1, ceil(sqrt(T)))
  if math.type(S) ~= "integer" or S < 1 then
    error("autograd: scan: segment must be a positive integer", 2)
  end
  local ns, np = #init, #params
  if ns == 0 then error("autograd: scan: init must hold at least one state", 2) end
  local tape
  for _, list in ipairs{init, params} do
    for _, a in ipairs(list) do
      if is_var(a) then
        if tape and a.tape ~= tape then error("autograd: scan: variables from two tapes", 2) end
        tape = a.tape
      end
    end
  end
  if type(step) == "table" then return fused_scan(step, init, params, T, S, opts, tape) end
  -- Forward, untracked, keeping the segment boundaries.
  local pvals, state = {}, {}
  for i = 1, np do pvals[i] = value(params[i]) end
  for i = 1, ns do state[i] = value(init[i]) end
  local snaps = {state}
  for t = 1, T do
    state = step(state, pvals, t)
    if type(state) ~= "table" or #state ~= ns then
      error(format("autograd: scan: step %d returned %s instead of a list of %d states", t,
                   type(state) == "table" and (#state .. " values") or type(state), ns), 2)
    end
    for i = 1, ns do
      if is_var(state[i]) then error("autograd: scan: step returned a variable in untracked mode", 2) end
    end
    if t % S == 0 and t < T then snaps[#snaps + 1] = state end
  end
  if opts.stats then
    opts.stats.snapshots, opts.stats.segment = #snaps, S
    opts.stats.segments = #snaps
  end
  if not tape then return state end

  local final = state
  local function forward()
    if ns == 1 then return final[1] end
    return final
  end
  local function backward(_, gouts)
    if ns == 1 then gouts = {gouts} end
    if opts.gc ~= false then collectgarbage("collect") end   -- the forward's garbage
    local adj = {}
    for i = 1, ns do adj[i] = gouts[i] end
    local pgrad = {}
    local stats = opts.stats
    for k = #snaps, 1, -1 do
      local t0 = (k - 1) * S
      local len = math.min(S, T - t0)
      local sub = ag.tape()
      local svars, pvars = {}, {}
      for i = 1, ns do svars[i] = sub:leaf(snaps[k][i]) end
      for i = 1, np do pvars[i] = sub:leaf(pvals[i]) end
      local cur = svars
      for j = 1, len do cur = step(cur, pvars, t0 + j) end
      if stats then
        if sub.n > (stats.peak_tape_nodes or 0) then stats.peak_tape_nodes = sub.n end
        if opts.measure then
          local b = sub:bytes()
          if b > (stats.peak_tape_bytes or 0) then stats.peak_tape_bytes = b end
        end
        if opts.collect then
          -- twice: tensors have finalizers, so garbage is freed one cycle late
          collectgarbage("collect")
          collectgarbage("collect")
        end
        local kb = collectgarbage("count")
        if kb > (stats.peak_kb or 0) then stats.peak_kb = kb end
      end
      snaps[k] = nil                 -- this segment's start is no longer needed
      local roots, seeds = {}, {}
      for i = 1, ns do
        local c, a = cur[i], adj[i]
        if a ~= nil then
          if is_var(c) and c.tape == sub then roots[#roots + 1], seeds[#seeds + 1] = c, a end
        end
      end
      sub:backward(roots, seeds)
      for i = 1, ns do adj[i] = svars[i].grad end
      svars, cur, sub = nil, nil, nil
      for i = 1, np do
        local g = pvars[i].grad
        if g ~= nil then
          if pgrad[i] == nil then pgrad[i] = g
          elseif type(g) == "number" then pgrad[i] = pgrad[i] + g
          else pgrad[i]:add(g) end
        end
      end
      -- The segment's tape is garbage now: free it before the next one is
      -- recorded, so that two segments never coexist (the incremental
      -- collector would otherwise let the heap grow to several segments).
      if opts.gc ~= false then collectgarbage("collect") end
    end
    return scan_grads(adj, pgrad, ns, np)
  end
  return scan_node(forward, backward, init, params)
end

-- ag.checkpoint(fn, args, params) -> the list fn(args, params) returns,
-- recomputed during backward instead of stored (one segment of ag.scan).
function ag.checkpoint(fn, args, params)
  return ag.scan(function(state, p) return fn(state, p) end, args, params, 1, {segment = 1})
end

-- ---------------------------------------------------------------- checks

-- ag.numgrad(f, x [, h]) -> central finite differences of the number f()
-- with respect to each element of tensor x (perturbed in place and
-- restored): a tensor shaped like x, float64. For tests.
function ag.numgrad(f, x, h)
  h = h or 1e-6
  local flat = x:view(x:numel())
  local g = nm.zeros(x:numel(), "float64")
  for i = 1, x:numel() do
    local v = flat:get(i)
    flat:set(i, v + h)
    local fp = f()
    flat:set(i, v - h)
    local fm = f()
    flat:set(i, v)
    g:set(i, (fp - fm) / (2 * h))
  end
  return g:view(x:size())
end

return ag
