-- nm/compile/graph.lua: the expression graph of a traced rule step.
--
-- A rule's step is written with nm.autograd operations (ag.mv, ag.outer,
-- ag.softplus, ...). Called with symbols instead of tensors it is traced:
-- every operation becomes a node of a graph (a symbol), built through
-- smart constructors that fold constants, drop identities, pull scalars
-- out of linear operations and share equal subexpressions, so the graph
-- is already simplified when the code generator (nm.compile.emit) or the
-- interpreter (nm.compile.interp) sees it. nm.compile.adjoint adds the
-- reverse-mode gradient nodes to the same graph.
--
-- Shapes: {} (scalar), {n} (vector), {m, n} (matrix). Node fields: op,
-- args (nodes), shape, k (a number attribute: a constant's value, an
-- exponent, softplus's beta, an index), name (inputs), id (creation
-- order, so ids are a topological order), where (the rule's file:line
-- that created it, for messages).

local graph = {}

local format, concat = string.format, table.concat

local Sym = {}
Sym.__index = Sym
Sym.__name = "nm.compile.Sym"
graph.Sym = Sym

local Graph = {}
Graph.__index = Graph

function graph.is_sym(x) return getmetatable(x) == Sym end

local function shape_str(s)
  if #s == 0 then return "scalar" end
  return "[" .. concat(s, " x ") .. "]"
end
graph.shape_str = shape_str

local function same_shape(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end
graph.same_shape = same_shape

-- Elementwise operations of one argument and their C/ag names.
graph.UNARY = {
  neg = true, exp = true, log = true, sqrt = true, tanh = true, sigmoid = true,
  relu = true, abs = true, softplus = true, dsoftplus = true, pow = true,
  drelu = true, sign = true,
}
graph.BINARY = {add = true, sub = true, mul = true, div = true}
-- Operations computed elementwise, so a loop over their shape can inline them.
graph.ELEMENTWISE = {
  add = true, sub = true, mul = true, div = true, outer = true, t = true,
  bcast = true, unit = true, onehot = true, detach = true, place = true,
}
for k in pairs(graph.UNARY) do graph.ELEMENTWISE[k] = true end

-- graph.new(dtype) -> an empty graph whose tensors are of dtype.
function graph.new(dtype)
  return setmetatable({nodes = {}, memo = {}, dtype = dtype or "float64", inputs = {},
                       captured = {}, captured_node = setmetatable({}, {__mode = "k"}),
                       where = nil}, Graph)
end

-- Where in the user's code the current operation comes from (set by the
-- tracer before each operation, read by error messages).
local function fail(g, msg)
  error(format("rule compiler: %s%s", g.where and (g.where .. ": ") or "", msg), 0)
end
graph.fail = fail

local function key_of(op, args, shape, k)
  local parts = {op}
  for i = 1, #args do parts[#parts + 1] = args[i].id end
  if k ~= nil then parts[#parts + 1] = "k" .. format("%.17g", k) end
  -- the shape too: a broadcast or a unit vector of one scalar comes in
  -- several shapes
  parts[#parts + 1] = concat(shape, "x")
  return concat(parts, "|")
end

-- The one place nodes are made: shares an equal node if one exists.
function Graph:node(op, args, shape, k, extra)
  local key = extra == nil and key_of(op, args, shape, k) or nil
  if key then
    local old = self.memo[key]
    if old then return old end
  end
  local n = setmetatable({op = op, args = args, shape = shape, k = k, g = self,
                          id = #self.nodes + 1, where = self.where}, Sym)
  if extra then for f, v in pairs(extra) do n[f] = v end end
  self.nodes[n.id] = n
  if key then self.memo[key] = n end
  return n
end

-- ---------------------------------------------------------------- leaves

function Graph:const(v)
  if math.type(v) == "integer" then v = v + 0.0 end
  return self:node("const", {}, {}, v)
end

-- Graph:input(name, shape [, kind]) -> a symbol standing for an argument:
-- kind "tensor" (default) or "scalar" (a number passed at call time, e.g.
-- a label or a learning rate).
function Graph:input(name, shape, kind)
  local n = self:node("input", {}, shape, nil, {name = name, kind = kind or "tensor",
                                               slot = #self.inputs + 1})
  self.inputs[#self.inputs + 1] = n
  return n
end

-- A tensor the traced code used as a constant: passed to the kernel at
-- every call, never copied into the source; one whose elements are all
-- equal (e.g. a vector of ones) becomes that number broadcast, which the
-- generated loops fold (x * 1 costs nothing, and no array is read).
function Graph:captured_tensor(t)
  local n = self.captured_node[t]
  if n then return n end
  if t:dtype() ~= self.dtype then
    fail(self, format("a constant tensor of %s in a %s rule", t:dtype(), self.dtype))
  end
  local lo = t:numel() > 0 and t:min()
  if lo and lo == t:max() then
    n = self:bcast(self:const(lo), t:size())
    self.captured_node[t] = n
    return n
  end
  n = self:node("captured", {}, t:size(), nil, {value = t, slot = #self.captured + 1})
  self.captured[#self.captured + 1] = n
  self.captured_node[t] = n
  return n
end

local function is_const(x, v)
  return x.op == "const" and (v == nil or x.k == v)
end

local function is_scalar(x) return #x.shape == 0 end
graph.is_scalar = is_scalar

-- 0, or 0 broadcast to a shape.
local function is_zero(x)
  return is_const(x, 0) or (x.op == "bcast" and is_const(x.args[1], 0))
end

-- ---------------------------------------------------------------- elementwise

local FOLD = {
  add = function(a, b) return a + b end, sub = function(a, b) return a - b end,
  mul = function(a, b) return a * b end, div = function(a, b) return a / b end,
}

-- Result shape of a broadcasting binary operation (equal shapes or a scalar).
local function bshape(g, op, a, b)
  if is_scalar(a) then return b.shape end
  if is_scalar(b) then return a.shape end
  if not same_shape(a.shape, b.shape) then
    fail(g, format("'%s': shapes differ, %s vs %s", op, shape_str(a.shape), shape_str(b.shape)))
  end
  return a.shape
end

function Graph:binary(op, a, b)
  local shape = bshape(self, op, a, b)
  if is_const(a) and is_const(b) then return self:const(FOLD[op](a.k, b.k)) end
  if op == "add" then
    if is_zero(a) and #b.shape == #shape then return b end
    if is_zero(b) and #a.shape == #shape then return a end
    if b.op == "neg" then return self:binary("sub", a, b.args[1]) end
  elseif op == "sub" then
    if is_zero(b) and #a.shape == #shape then return a end
    if is_zero(a) and #b.shape == #shape then return self:unary("neg", b) end
    if b.op == "neg" then return self:binary("add", a, b.args[1]) end
  elseif op == "mul" then
    -- a term scaled by a coefficient fixed at 0 vanishes (as the Lua step
    -- skips it), whatever its elements
    if is_const(a, 0) or is_const(b, 0) then return self:bcast(self:const(0), shape) end
    if is_const(a, 1) and #b.shape == #shape then return b end
    if is_const(b, 1) and #a.shape == #shape then return a end
    if is_const(a, -1) and #b.shape == #shape then return self:unary("neg", b) end
    if is_const(b, -1) and #a.shape == #shape then return self:unary("neg", a) end
    -- Scalars first, so that s * (t * X) and t * (s * X) share nodes.
    if is_scalar(b) and not is_scalar(a) then a, b = b, a end
    if is_scalar(a) and b.op == "neg" then return self:unary("neg", self:binary("mul", a, b.args[1])) end
    if is_scalar(a) and b.op == "mul" and is_scalar(b.args[1]) then
      return self:binary("mul", self:binary("mul", a, b.args[1]), b.args[2])
    end
    -- ... and out of elementwise products of tensors: X .* (s Y) = s (X .* Y),
    -- X .* -Y = -(X .* Y), so equal products share one node whatever the
    -- scalars around them (and a sum over one is computed once)
    if not is_scalar(a) and not is_scalar(b) then
      for _ = 1, 2 do
        if b.op == "neg" then return self:unary("neg", self:binary("mul", a, b.args[1])) end
        if b.op == "mul" and is_scalar(b.args[1]) and not is_scalar(b.args[2]) then
          return self:binary("mul", b.args[1], self:binary("mul", a, b.args[2]))
        end
        a, b = b, a
      end
    end
  elseif op == "div" then
    if is_const(b, 1) and #a.shape == #shape then return a end
  end
  -- Commutative operations in a canonical order (exact in IEEE arithmetic).
  if (op == "add" or op == "mul") and #a.shape == #b.shape and a.id > b.id then a, b = b, a end
  return self:node(op, {a, b}, shape)
end

local UNARY_FOLD = {
  neg = function(x) return -x end, exp = math.exp, log = math.log, sqrt = math.sqrt,
  abs = math.abs,
}

function Graph:unary(op, x, k)
  if op == "neg" then
    if x.op == "neg" then return x.args[1] end
  end
  if is_const(x) and UNARY_FOLD[op] then return self:const(UNARY_FOLD[op](x.k)) end
  if op == "pow" and k == 1 then return x end
  return self:node(op, {x}, x.shape, k)
end

-- A scalar broadcast to a shape.
function Graph:bcast(s, shape)
  if #shape == 0 then return s end
  return self:node("bcast", {s}, shape)
end

-- A tensor of a shape, zero but for element k (1-based, in row-major
-- order over all its dimensions), which is s.
function Graph:unit(s, k, shape)
  return self:node("unit", {s}, shape, k)
end

-- The slice i (1-based) of x along its first dimension: a row of a matrix,
-- a matrix of a [L x n x m] tensor (a view of x, no copy).
function Graph:select(x, i)
  if #x.shape < 2 then
    fail(self, "select: a matrix or a tensor of rank 3 expected, got " .. shape_str(x.shape))
  end
  if math.type(i) ~= "integer" or i < 1 or i > x.shape[1] then
    fail(self, format("select: %s out of 1..%d", tostring(i), x.shape[1]))
  end
  if x.op == "place" then          -- a slice of a placed slice: it, or zeros
    if x.k == i then return x.args[1] end
    return self:bcast(self:const(0), {table.unpack(x.shape, 2)})
  end
  if x.op == "bcast" then return self:bcast(x.args[1], {table.unpack(x.shape, 2)}) end
  return self:node("select", {x}, {table.unpack(x.shape, 2)}, i)
end

-- The tensor of a shape that is zero but for its slice i along the first
-- dimension, which is x (select's adjoint).
function Graph:place(x, i, shape)
  if is_zero(x) then return self:bcast(self:const(0), shape) end
  return self:node("place", {x}, shape, i)
end

-- onehot(n, label): 1 at the (1-based) label, 0 elsewhere.
function Graph:onehot(n, label)
  if not is_scalar(label) then fail(self, "onehot: the label must be a number") end
  return self:node("onehot", {label}, {n})
end

-- graph.signature(g) -> a string that names the graph's structure (every
-- node's operation, arguments, shape and attributes, the inputs' names
-- and kinds): equal signatures give equal generated code, so it keys the
-- kernel cache without generating anything.
function graph.signature(g)
  local parts = {g.dtype}
  for i, n in ipairs(g.nodes) do
    local a = {}
    for j, x in ipairs(n.args) do a[j] = x.id end
    parts[i + 1] = format("%s(%s)[%s]%s%s%s", n.op, concat(a, ","), concat(n.shape, "x"),
                          n.k ~= nil and format("%.17g", n.k) or "", n.name or "", n.kind or "")
  end
  return concat(parts, ";")
end

-- Graph:rebuild(n, args) -> node n's operation on other arguments, through
-- the simplifying constructors (the passes below rewrite subgraphs).
function Graph:rebuild(n, args)
  local op = n.op
  if graph.BINARY[op] then return self:binary(op, args[1], args[2])
  elseif graph.UNARY[op] then return self:unary(op, args[1], n.k)
  elseif op == "mv" then return self:mv(args[1], args[2])
  elseif op == "mm" then return self:mm(args[1], args[2])
  elseif op == "outer" then return self:outer(args[1], args[2])
  elseif op == "t" then return self:t(args[1])
  elseif op == "sum" then return self:sum(args[1])
  elseif op == "softmax" then return self:softmax(args[1])
  elseif op == "logsoftmax" then return self:logsoftmax(args[1])
  elseif op == "index" then return self:index(args[1], n.k)
  elseif op == "bcast" then return self:bcast(args[1], n.shape)
  elseif op == "unit" then return self:unit(args[1], n.k, n.shape)
  elseif op == "select" then return self:select(args[1], n.k)
  elseif op == "place" then return self:place(args[1], n.k, n.shape)
  end
  return self:node(op, args, n.shape, n.k)
end

-- The same value without gradient (ag.value of a traced symbol).
function Graph:detach(x)
  if x.op == "detach" or x.op == "const" or x.op == "captured" then return x end
  return self:node("detach", {x}, x.shape)
end

-- graph.reachable(outputs) -> the set of nodes the outputs depend on
-- (themselves included).
function graph.reachable(outputs)
  local need = {}
  local function visit(n)
    if need[n] then return end
    need[n] = true
    for _, a in ipairs(n.args) do visit(a) end
  end
  for _, o in ipairs(outputs) do visit(o) end
  return need
end

-- graph.strip_detach(g, outputs) -> the outputs with every detach node
-- replaced by its argument: forward code does not need them (they only
-- stop gradients, which adjoint.grad has already formed).
-- A detach whose argument depends on another (a rule that cuts a path in
-- each of several steps) maps to its argument with those stripped too:
-- nodes come in the order they were made, arguments first.
function graph.strip_detach(g, outputs)
  local map = {}
  for _, n in ipairs(g.nodes) do
    if n.op == "detach" then map[n] = graph.substitute(g, {n.args[1]}, map)[1] end
  end
  if next(map) == nil then return outputs end
  return graph.substitute(g, outputs, map)
end

-- graph.substitute(g, outputs, map) -> the outputs with the nodes that are
-- keys of map replaced by their values (nodes are rebuilt as needed).
function graph.substitute(g, outputs, map)
  local memo = {}
  local function sub(n)
    if map[n] then return map[n] end
    if memo[n] then return memo[n] end
    local r = n
    if #n.args > 0 then
      local changed, args = false, {}
      for i, a in ipairs(n.args) do
        args[i] = sub(a)
        if args[i] ~= a then changed = true end
      end
      if changed then r = g:rebuild(n, args) end
    end
    memo[n] = r
    return r
  end
  local out = {}
  for i, o in ipairs(outputs) do out[i] = sub(o) end
  return out
end

-- graph.combine(g, outputs) -> the outputs with every sum of tensor terms
-- rewritten as one linear combination: terms with the same tensor share
-- one coefficient (a scalar computed once), so W - t0 e x^T - t5 s e x^T
-- - t3 W becomes (1 - t3) W + (-t0 - t5 s) e x^T: fewer operations per
-- element in the loop the emitter makes of it.
function graph.combine(g, outputs)
  local map = {}
  local nforward = #g.nodes
  local function m(x) return map[x] or x end
  -- Sums inside a larger linear expression are flattened with their root
  -- only (once), not each on its own.
  local interior = {}
  for id = 1, nforward do
    local n = g.nodes[id]
    local op, a = n.op, n.args
    if not is_scalar(n) then
      if op == "add" or op == "sub" then
        if not is_scalar(a[1]) and not is_scalar(a[2]) then interior[a[1]] = true; interior[a[2]] = true end
      elseif op == "neg" then interior[a[1]] = true
      elseif op == "mul" and is_scalar(a[1]) then interior[a[2]] = true end
    end
  end
  -- (an output is a use too: a sum that is an output and also a term of
  -- another sum is rewritten once and shared, not left in its first form
  -- beside the rewritten copy the other sum holds)
  local uses = {}
  for id = 1, nforward do
    for _, a in ipairs(g.nodes[id].args) do uses[a] = (uses[a] or 0) + 1 end
  end
  for _, o in ipairs(outputs) do uses[o] = (uses[o] or 0) + 1 end
  for id = 1, nforward do
    local n = g.nodes[id]
    if (n.op == "add" or n.op == "sub") and not is_scalar(n) and interior[n] and uses[n] == 1 then
      -- flattened with its root
    elseif (n.op == "add" or n.op == "sub") and not is_scalar(n) then
      local order, coef = {}, {}
      local function term(x, c)
        if coef[x] == nil then order[#order + 1] = x; coef[x] = c
        else coef[x] = g:binary("add", coef[x], c) end
      end
      local function flatten(x, c)
        local a = x.args
        if (x.op == "add" or x.op == "sub") and not is_scalar(a[1]) and not is_scalar(a[2]) then
          flatten(m(a[1]), c)
          flatten(m(a[2]), x.op == "sub" and g:unary("neg", c) or c)
        elseif x.op == "neg" then flatten(m(a[1]), g:unary("neg", c))
        elseif x.op == "mul" and is_scalar(a[1]) and not is_scalar(a[2]) then
          flatten(m(a[2]), g:binary("mul", c, m(a[1])))
        else
          term(x, c)
        end
      end
      flatten(n, g:const(1))
      -- products with one matrix merge: c A u + d A v = A (c u + d v), one
      -- pass over A instead of two
      local by_matrix, merged = {}, {}
      for _, x in ipairs(order) do
        if x.op == "mv" then
          local A = x.args[1]
          by_matrix[A] = by_matrix[A] or {}
          table.insert(by_matrix[A], x)
        end
      end
      for _, x0 in ipairs({table.unpack(order)}) do       -- (in order: reproducible code)
        local list = x0.op == "mv" and by_matrix[x0.args[1]]
        if list and #list > 1 and list[1] == x0 then
          local A = x0.args[1]
          local v
          for _, x in ipairs(list) do
            local t = g:binary("mul", coef[x], x.args[2])
            v = v and g:binary("add", v, t) or t
            merged[x] = true
          end
          local y = g:mv(A, v)
          if merged[y] then merged[y] = nil; coef[y] = g:const(1)   -- (v holds its term)
          elseif coef[y] == nil then order[#order + 1] = y; coef[y] = g:const(1)
          else coef[y] = g:binary("add", coef[y], g:const(1)) end
        end
      end
      local r
      for _, x in ipairs(order) do
        if merged[x] then goto next end
        do
          local t = g:binary("mul", coef[x], x)
          r = r and g:binary("add", r, t) or t
        end
        ::next::
      end
      if r ~= n then map[n] = r end
    elseif #n.args > 0 then
      local changed, args = false, {}
      for i, a in ipairs(n.args) do
        args[i] = m(a)
        if args[i] ~= a then changed = true end
      end
      if changed then map[n] = g:rebuild(n, args) end
    end
  end
  local out = {}
  for i, o in ipairs(outputs) do out[i] = m(o) end
  return out
end

-- ---------------------------------------------------------------- linear algebra

-- Splits a scalar factor off x: s * X -> s, X; -X -> -1, X; else nil, x.
local function split_scalar(g, x)
  if x.op == "mul" and is_scalar(x.args[1]) and not is_scalar(x.args[2]) then
    return x.args[1], x.args[2]
  end
  if x.op == "neg" then return g:const(-1), x.args[1] end
  return nil, x
end

local function scaled(g, s, x)
  if s == nil then return x end
  return g:binary("mul", s, x)
end

function Graph:t(A)
  if #A.shape ~= 2 then fail(self, "t: a matrix expected, got " .. shape_str(A.shape)) end
  if A.op == "t" then return A.args[1] end
  local s, X = split_scalar(self, A)
  if s then return scaled(self, s, self:t(X)) end
  if A.op == "outer" then return self:outer(A.args[2], A.args[1]) end
  return self:node("t", {A}, {A.shape[2], A.shape[1]})
end

function Graph:outer(a, b)
  if #a.shape ~= 1 or #b.shape ~= 1 then
    fail(self, format("outer: two vectors expected, got %s and %s", shape_str(a.shape), shape_str(b.shape)))
  end
  local s, x = split_scalar(self, a)
  if s then return scaled(self, s, self:outer(x, b)) end
  local r, y = split_scalar(self, b)
  if r then return scaled(self, r, self:outer(a, y)) end
  return self:node("outer", {a, b}, {a.shape[1], b.shape[1]})
end

function Graph:sum(x)
  if is_scalar(x) then return x end
  local s, X = split_scalar(self, x)
  if s then return self:binary("mul", s, self:sum(X)) end
  if x.op == "bcast" then return self:binary("mul", self:const(self:numel(x)), x.args[1]) end
  if x.op == "outer" then return self:binary("mul", self:sum(x.args[1]), self:sum(x.args[2])) end
  if x.op == "mul" and #x.args[1].shape == 2 and #x.args[2].shape == 2 then
    -- sum(A .* a b^T) = a^T (A b): a matrix-vector product instead of a
    -- pass; A may be a product of matrices itself (A = B .* C)
    local factors, outer = {}, nil
    local function collect(f)
      if f.op == "mul" and #f.args[1].shape == 2 and #f.args[2].shape == 2 then
        collect(f.args[1]); collect(f.args[2])
      elseif f.op == "outer" and not outer then outer = f
      else factors[#factors + 1] = f end
    end
    collect(x)
    if outer and #factors > 0 then
      local A = factors[1]
      for i = 2, #factors do A = self:binary("mul", A, factors[i]) end
      return self:dot(outer.args[1], self:mv(A, outer.args[2]))
    end
  end
  if x.op == "add" or x.op == "sub" then
    -- sum is linear: split so the rewrites above reach each term
    local a, b = x.args[1], x.args[2]
    if not is_scalar(a) and not is_scalar(b) then
      return self:binary(x.op, self:sum(a), self:sum(b))
    end
  end
  return self:node("sum", {x}, {})
end

function Graph:numel(x)
  local n = 1
  for _, d in ipairs(x.shape) do n = n * d end
  return n
end

function Graph:dot(a, b)
  if not same_shape(a.shape, b.shape) then
    fail(self, format("dot: shapes differ, %s vs %s", shape_str(a.shape), shape_str(b.shape)))
  end
  return self:sum(self:binary("mul", a, b))
end

function Graph:mv(A, x)
  if #A.shape ~= 2 or #x.shape ~= 1 or A.shape[2] ~= x.shape[1] then
    fail(self, format("mv: size mismatch, %s times %s", shape_str(A.shape), shape_str(x.shape)))
  end
  local s, X = split_scalar(self, A)
  if s then return scaled(self, s, self:mv(X, x)) end
  local r, y = split_scalar(self, x)
  if r then return scaled(self, r, self:mv(A, y)) end
  if A.op == "outer" then                        -- (a b^T) x = a (b^T x)
    return self:binary("mul", self:dot(A.args[2], x), A.args[1])
  end
  if A.op == "add" or A.op == "sub" then
    local a, b = A.args[1], A.args[2]
    if a.op == "outer" or b.op == "outer" then
      return self:binary(A.op, self:mv(a, x), self:mv(b, x))
    end
  end
  return self:node("mv", {A, x}, {A.shape[1]})
end

function Graph:mm(A, B)
  if #A.shape ~= 2 or #B.shape ~= 2 or A.shape[2] ~= B.shape[1] then
    fail(self, format("mm: size mismatch, %s times %s", shape_str(A.shape), shape_str(B.shape)))
  end
  local s, X = split_scalar(self, A)
  if s then return scaled(self, s, self:mm(X, B)) end
  local r, Y = split_scalar(self, B)
  if r then return scaled(self, r, self:mm(A, Y)) end
  if A.shape[2] == 1 and A.op == "t" and B.op ~= "t" then
    -- a batch of one row (a circuit rule's e^T r_pre in the full
    -- dynamics): the outer product of the two rows, inlined into the loop
    -- over the matrix it updates instead of a library call with k = 1
    return self:outer(self:select(A.args[1], 1), self:select(B, 1))
  end
  return self:node("mm", {A, B}, {A.shape[1], B.shape[2]})
end

-- softmax and log-softmax of a vector, or of each row of a matrix.
local function row_op(g, op, x)
  if #x.shape ~= 1 and #x.shape ~= 2 then
    fail(g, op .. ": a vector or a matrix expected, got " .. shape_str(x.shape))
  end
  return g:node(op, {x}, x.shape)
end
function Graph:softmax(x) return row_op(self, "softmax", x) end
function Graph:logsoftmax(x) return row_op(self, "logsoftmax", x) end

-- The sums of a matrix along dim (1: column sums, 2: row sums): products
-- with a vector of ones, which the generated loops fold.
function Graph:sum_dim(x, dim)
  if #x.shape ~= 2 or (dim ~= 1 and dim ~= 2) then
    fail(self, format("sum: along dimension 1 or 2 of a matrix, got %s of %s", tostring(dim),
                      shape_str(x.shape)))
  end
  if dim == 2 then return self:mv(x, self:bcast(self:const(1), {x.shape[2]})) end
  return self:mv(self:t(x), self:bcast(self:const(1), {x.shape[1]}))
end

-- Row sums of a vector (its sum) or a matrix, spread back over its shape:
-- the term the softmax adjoints subtract.
function Graph:row_sums_spread(x)
  if #x.shape == 1 then return self:sum(x) end
  return self:outer(self:sum_dim(x, 2), self:bcast(self:const(1), {x.shape[2]}))
end

-- Graph:index(v, i) -> element i (1-based, row-major over all of v's
-- dimensions) of v; Graph:index_at(v, {i1, ...}) with one index per
-- dimension.
function Graph:index_at(v, idx)
  if #idx ~= #v.shape or #v.shape == 0 then
    fail(self, format("index: %d indices into a tensor of %s", #idx, shape_str(v.shape)))
  end
  local k = 0
  for d = 1, #idx do
    local i = idx[d]
    if math.type(i) ~= "integer" or i < 1 or i > v.shape[d] then
      fail(self, format("index: %s out of 1..%d (dimension %d)", tostring(i), v.shape[d], d))
    end
    k = k * v.shape[d] + (i - 1)
  end
  return self:index(v, k + 1)
end

function Graph:index(v, i)
  if #v.shape == 0 then fail(self, "index: a tensor expected, got a scalar") end
  local n = self:numel(v)
  if math.type(i) ~= "integer" or i < 1 or i > n then
    fail(self, format("index: %s out of 1..%d", tostring(i), n))
  end
  if v.op == "unit" then
    return v.k == i and v.args[1] or self:const(0)
  end
  if v.op == "bcast" then return v.args[1] end
  local slice = n // v.shape[1]
  if v.op == "select" then                     -- an element of a slice of x
    return self:index(v.args[1], (v.k - 1) * self:numel(v) + i)
  end
  if v.op == "place" then
    local first = (v.k - 1) * slice
    if i <= first or i > first + slice then return self:const(0) end
    return self:index(v.args[1], i - first)
  end
  if (v.op == "add" or v.op == "sub") and not is_scalar(v.args[1]) and not is_scalar(v.args[2]) then
    -- an element of a sum of tensors (e.g. of units) is the sum of elements
    return self:binary(v.op, self:index(v.args[1], i), self:index(v.args[2], i))
  end
  return self:node("index", {v}, {}, i)
end

-- ---------------------------------------------------------------- symbols as values

-- The methods rule code calls on values (sizes and types), so a step that
-- asks a tensor its size runs unchanged on a symbol.
function Sym:size(d)
  if d then return self.shape[d] end
  return {table.unpack(self.shape)}
end
function Sym:dim() return #self.shape end
function Sym:numel() return self.g:numel(self) end
function Sym:dtype() return self.g.dtype end
function Sym:get()
  fail(self.g, "a traced value has no fixed elements: the rule reads a value (get) where " ..
               "it must compute with it (use ag.index)")
end
function Sym:__tostring()
  return format("Sym(%s %s #%d)", self.op, shape_str(self.shape), self.id)
end

return graph
