-- nm/compile/emit.lua: C source from an expression graph.
--
-- emit.c(g, outputs, opts) -> source, layout
--
-- The generated function
--   int <name>(real *const *in, real *const *out, real *scratch, const double *sc)
-- reads its tensor inputs (in[], in the order of opts.inputs (default
-- g.inputs), then the
-- captured constants), its scalar inputs (sc[]), and writes every output
-- (out[], contiguous, shaped like the output node; a scalar output is one
-- element). It allocates nothing: intermediate vectors and matrices live in
-- scratch (layout.scratch elements, given by the caller).
--
-- How the graph becomes loops:
-- - Elementwise operations (arithmetic, activation functions, broadcasts,
--   outer products a b^T, transposes) are inlined into the loop nest of
--   the value that consumes them, so W + t0 e y^T + t1 y e^T ... is one
--   pass over W. A value is stored (materialized) only when a product
--   (mv, mm) or softmax reads it, when it is an output, or when several
--   consumers would otherwise recompute something costly.
-- - Sums are loop nests that accumulate in double; loops over the same
--   shape whose inputs are ready are fused into one nest.
-- - Matrix-vector products are loop nests over the matrix (vectorised by
--   the compiler, fused with the other passes over it; a library gemv
--   would read the matrix once more, and was slower here even alone);
--   matrix-matrix products call cblas (transposes as flags, never
--   copies); softmax and log-softmax (of a vector or each row) are the
--   core's loops; a slice along the first dimension is a pointer into its
--   tensor; a tensor of rank 3 is looped over as a matrix of its rows.
-- - Element functions (exp, log, tanh, sigmoid, softplus) are the tensor
--   operations' own: the source of csrc/core/nm_vmath.h (nm.build.vmath)
--   heads every kernel. Every innermost loop carries an OpenMP simd
--   directive naming the sums it accumulates (compiled -fopenmp-simd).
-- Scalars are double locals; elements are `real` (float or double).

local nm = require "neuromic"
local graph = require "nm.compile.graph"

local emit = {}

local format, concat = string.format, table.concat
local is_scalar = graph.is_scalar

local TRANSCENDENTAL = {
  exp = true, log = true, sqrt = true, tanh = true, sigmoid = true, softplus = true,
  dsoftplus = true, pow = true, div = true,
}

-- C spelling of a double constant.
local function lit_(v)
  if v ~= v then return "NAN" end
  if v == math.huge then return "INFINITY" end
  if v == -math.huge then return "(-INFINITY)" end
  if math.type(v) == "integer" then v = v + 0.0 end
  local s = format("%.17g", v)
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s
end

local lit = lit_

local function numel(shape)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  return n
end

-- The loop domain of a shape: a tensor of rank 3 is looped over as the
-- matrix of its rows (first index) by its flattened remaining indices.
local function dom2(shape)
  if #shape <= 2 then return shape end
  return {shape[1], numel(shape) // shape[1]}
end

local PRELUDE = [[
#include <math.h>
#include <stdint.h>
#include <cblas.h>

%s
typedef %s real;
#define M_(fn) %s
/* exp, log, tanh, the logistic function and soft-plus of an element: the
   tensor operations' own (nm_vmath.h above), branch-free so loops calling
   them vectorise; scalars (double) use libm, as Lua's math does. */
#define V_(fn) %s

static inline double nm_sigmoid_d(double x) {
  if (x >= 0) return 1 / (1 + exp(-x));
  double e = exp(x);
  return e / (1 + e);
}
static inline double nm_softplus_d(double x, double beta) {
  double bx = beta * x;
  return (log1p(exp(-fabs(bx))) + (bx > 0 ? bx : 0)) / beta;
}
]]

-- ---------------------------------------------------------------- analysis

local function analyse(g, outputs)
  local need, order = graph.reachable(outputs), {}
  for _, n in ipairs(g.nodes) do if need[n] then order[#order + 1] = n end end
  local uses, strong, sliced = {}, {}, {}
  for _, n in ipairs(order) do
    for _, a in ipairs(n.args) do
      uses[a] = (uses[a] or 0) + 1
      -- consumers that read the value as a stored array (a product's
      -- matrix may be an inline expression: mv loops are fused nests)
      if n.op == "mm" or n.op == "softmax" or n.op == "logsoftmax" or
         (n.op == "mv" and a == n.args[2] and a.op ~= "bcast") then
        strong[a] = true
      end
      -- a vector inside a matrix loop would be recomputed per element
      if n.op == "outer" and #a.args > 0 and a.op ~= "onehot" and a.op ~= "unit" and
         a.op ~= "bcast" then
        strong[a] = true
      end
      if n.op == "index" and #a.args > 0 then strong[a] = true end
      -- a slice is a view into its stored tensor; a slice placed into a
      -- tensor of rank 3 is read at flat positions
      if n.op == "select" and #a.args > 0 then strong[a] = true; sliced[a] = true end
      if n.op == "place" and #n.shape == 3 and #a.args > 0 then strong[a] = true end
    end
  end
  for _, o in ipairs(outputs) do uses[o] = (uses[o] or 0) + 1 end
  return order, uses, strong, sliced
end

-- ---------------------------------------------------------------- emitter

function emit.c(g, outputs, opts)
  opts = opts or {}
  local name = opts.name or "nm_rule_kernel"
  local dtype = g.dtype
  local is_float = dtype == "float32"
  outputs = graph.strip_detach(g, outputs)
  -- (opts.combine = false: the step's own order of operations, so that the
  -- kernel gives the bits of the tensor operations it was traced from)
  if opts.combine ~= false then outputs = graph.combine(g, outputs) end
  local order, uses, strong, sliced = analyse(g, outputs)

  -- Buffers: leaves read from in[], stored values in scratch or out[].
  -- Every pointer is restrict: outputs and scratch slices overlap nothing
  -- (neuromic.Kernel checks each call), inputs are only read, so the
  -- compiler vectorises loops that write one array while reading others.
  local ptr = {}          -- node -> C expression of its array
  local scalar_name = {}  -- scalar node -> C expression
  local mat = {}          -- node -> true when stored
  -- C names: the rule's own names for its inputs, t<id> for stored values.
  local decls, used_names = {}, {}
  local function cname(base)
    base = base:gsub("%[(%d+)%]", "_%1"):gsub("[^%w_]", "_")
    if base:match("^%d") then base = "v" .. base end
    local name, k = base, 1
    while used_names[name] do k = k + 1; name = base .. "_" .. k end
    used_names[name] = true
    return name
  end
  for _, w in ipairs{"in", "out", "scratch", "sc", "i", "j", "m", "s", "real", "sx", "sy", "sr", "sm",
                     "ss", "lse", "inv"} do
    used_names[w] = true
  end
  local inputs = opts.inputs or g.inputs
  -- In-place kernels (opts.inplace: one input node per output) write each
  -- output over that input: no out[] slots. A value is read from such an
  -- array only before it is written (the scheduler below orders the
  -- statements; in a shared loop nest every element is read first, and
  -- the nest's stores come last), so the array needs one pointer only.
  local inplace, written = opts.inplace, {}
  if inplace then
    for k = 1, #outputs do
      local A = inplace[k]
      if not A or A.op ~= "input" or A.kind ~= "tensor" or not graph.same_shape(A.shape, outputs[k].shape) then
        error("emit: in-place output " .. k .. " needs a tensor input of its shape")
      end
      written[A] = k
    end
  end
  local slot = 0
  for _, n in ipairs(inputs) do
    if n.kind == "tensor" then
      ptr[n] = cname(n.name)
      if written[n] then
        decls[#decls + 1] = format("real *const restrict %s = in[%d];   /* %s, written in place */",
                                   ptr[n], slot, graph.shape_str(n.shape))
      else
        decls[#decls + 1] = format("const real *const restrict %s = in[%d];   /* %s */", ptr[n], slot,
                                   graph.shape_str(n.shape))
      end
      slot = slot + 1
    end
  end
  for _, n in ipairs(g.captured) do
    ptr[n] = cname("const" .. n.slot)
    decls[#decls + 1] = format("const real *const restrict %s = in[%d];   /* a constant %s */", ptr[n],
                               slot, graph.shape_str(n.shape))
    slot = slot + 1
  end
  local ntensor_in = slot
  local sslot = 0
  for _, n in ipairs(inputs) do
    if n.kind == "scalar" then
      scalar_name[n] = cname(n.name)
      decls[#decls + 1] = format("const double %s = sc[%d];", scalar_name[n], sslot)
      sslot = sslot + 1
    end
  end

  -- Inline cost of a node's expression (stopping at stored values).
  local weight = {}
  local function wt(n)
    if ptr[n] or mat[n] or is_scalar(n) or #n.args == 0 then return 0 end
    return weight[n] or 0
  end
  local output_of = {}
  for k, o in ipairs(outputs) do
    if output_of[o] == nil and not ptr[o] and not is_scalar(o) and o.op ~= "select" then
      output_of[o] = k
    end
  end
  for _, n in ipairs(order) do
    if not is_scalar(n) and not ptr[n] then
      if graph.ELEMENTWISE[n.op] then
        local w = TRANSCENDENTAL[n.op] and 8 or 1
        for _, a in ipairs(n.args) do w = w + wt(a) end
        weight[n] = w
        if output_of[n] or strong[n] or (uses[n] > 1 and w > 2) then mat[n] = true end
        if n.op == "t" and (ptr[n.args[1]] or mat[n.args[1]]) and not output_of[n] and
           not sliced[n] then
          mat[n] = nil                 -- a transposed view: no copy
        end
      else
        mat[n] = true                  -- mv, mm, softmax
      end
    end
  end
  -- Arguments of products must be arrays (or transposes of arrays).
  for _, n in ipairs(order) do
    if n.op == "mm" or n.op == "softmax" or n.op == "logsoftmax" or n.op == "mv" then
      for i, a in ipairs(n.args) do
        -- (a product's matrix is an inline expression, a broadcast vector a number)
        if n.op == "mv" and (i == 1 or a.op == "bcast") then goto inline end
        do
          -- the transpose of a computed value: store the value, pass the
          -- transpose as a flag (no copy)
          if a.op == "t" and mat[a] and not output_of[a] and not sliced[a] and #a.args[1].args > 0 and
             not is_scalar(a.args[1]) then
            mat[a] = nil
          end
          local base = a.op == "t" and a.args[1] or a
          if not (ptr[base] or mat[base]) then mat[base] = true end
        end
        ::inline::
      end
    end
  end

  local scratch = 0
  local late = {}         -- stored values written over an input: stored last in their nest
  -- An output may be computed straight into the input it replaces only
  -- when its loop reads that input at the element it writes: elementwise,
  -- not through a transpose, a slice or a product (W + W^T, y = W y).
  -- Otherwise it is stored in scratch and copied over the input afterwards.
  local function reads_elsewhere(n, A)
    if not graph.ELEMENTWISE[n.op] then return true end
    local seen = {}
    local function walk(x, moved)
      for _, a in ipairs(x.args) do
        if a == A then
          if moved then return true end
        elseif #a.args > 0 and not is_scalar(a) and not seen[a] and (not mat[a] or a.op == "select") then
          seen[a] = true
          if walk(a, moved or a.op == "t" or a.op == "select" or a.op == "outer" or
                     not graph.ELEMENTWISE[a.op]) then return true end
        end
      end
      return false
    end
    return walk(n, n.op == "t" or n.op == "outer")
  end
  if inplace then
    for o, k in pairs(output_of) do
      if mat[o] and reads_elsewhere(o, inplace[k]) then output_of[o] = nil end
    end
  end
  for _, n in ipairs(order) do
    if n.op == "select" then           -- a view: the slice's first element
      local base = n.args[1]
      if not ptr[base] then error("emit: a slice of an unstored value") end
      ptr[n] = format("(%s + %d)", ptr[base], (n.k - 1) * numel(n.shape))
    end
    if mat[n] and not ptr[n] and output_of[n] and inplace then
      ptr[n] = ptr[inplace[output_of[n]]]
      late[n] = true
    elseif mat[n] and not ptr[n] then
      local k = output_of[n]
      local name = cname(k and ("out" .. k) or ("t" .. n.id))
      if k then
        decls[#decls + 1] = format("real *const restrict %s = out[%d];   /* output %d: %s */", name, k - 1,
                                   k, graph.shape_str(n.shape))
      else
        decls[#decls + 1] = format("real *const restrict %s = scratch + %d;   /* %s %s */", name, scratch,
                                   n.op, graph.shape_str(n.shape))
        scratch = scratch + numel(n.shape)
      end
      ptr[n] = name
    end
  end

  -- Expression of node n at element (I [, J]).
  local expr
  local function sexpr(n)                       -- a scalar
    if n.op == "const" then return lit(n.k) end
    return scalar_name[n] or error("emit: scalar #" .. n.id .. " used before it is computed")
  end
  local expr_memo = {}
  local raw_expr
  expr = function(n, I, J)
    local key = I .. "|" .. (J or "")
    local m = expr_memo[n]
    if m and m[key] and not (m.mat ~= mat[n] or m.ptr ~= ptr[n]) then return m[key] end
    local e = raw_expr(n, I, J)
    if not m or m.mat ~= mat[n] or m.ptr ~= ptr[n] then
      m = {mat = mat[n], ptr = ptr[n]}
      expr_memo[n] = m
    end
    m[key] = e
    return e
  end
  raw_expr = function(n, I, J)
    -- scalars are double: in an element's expression they are converted
    -- to real first, so float kernels compute in float (full vector width)
    if is_scalar(n) then return is_float and ("(real)" .. sexpr(n)) or sexpr(n) end
    local p = ptr[n]
    if p and (mat[n] or #n.args == 0) then
      if #n.shape == 1 then return format("%s[%s]", p, I) end
      return format("%s[(%s) * %d + (%s)]", p, I, numel(n.shape) // n.shape[1], J)
    end
    local op, a = n.op, n.args
    if op == "t" then return expr(a[1], J, I)
    elseif op == "outer" then return format("(%s * %s)", expr(a[1], I), expr(a[2], J))
    elseif op == "bcast" then return is_float and ("(real)" .. sexpr(a[1])) or sexpr(a[1])
    elseif op == "unit" then
      local at = J and format("(%s) * %d + (%s)", I, numel(n.shape) // n.shape[1], J) or I
      return format("((%s) == %d ? (real)%s : (real)0)", at, n.k - 1, sexpr(a[1]))
    elseif op == "place" then               -- x in slice k of zeros
      local x = #n.shape == 2 and expr(a[1], J) or format("%s[%s]", ptr[a[1]], J)
      return format("((%s) == %d ? %s : (real)0)", I, n.k - 1, x)
    elseif op == "onehot" then
      return format("((%s) == (int64_t)%s - 1 ? (real)1 : (real)0)", I, sexpr(a[1]))
    elseif op == "add" then return format("(%s + %s)", expr(a[1], I, J), expr(a[2], I, J))
    elseif op == "sub" then return format("(%s - %s)", expr(a[1], I, J), expr(a[2], I, J))
    elseif op == "mul" then return format("(%s * %s)", expr(a[1], I, J), expr(a[2], I, J))
    elseif op == "div" then return format("(%s / %s)", expr(a[1], I, J), expr(a[2], I, J))
    elseif op == "neg" then return format("(-%s)", expr(a[1], I, J))
    end
    local x = expr(a[1], I, J)
    return emit.unary(op, x, n.k)
  end

  -- Statements.
  local stmts = {}
  -- The computed values (stored arrays, scalars) an inline expression
  -- reads: what must be done before a statement that uses it.
  local frontier = {}
  local function inline_deps(n)           -- n: an inline (not stored) node
    local f = frontier[n]
    if f then return f end
    f = {}
    for _, a in ipairs(n.args) do
      if is_scalar(a) then
        if a.op ~= "const" and a.op ~= "input" then f[a] = true end
      elseif mat[a] and #a.args > 0 then f[a] = true
      elseif #a.args > 0 then
        for d in pairs(inline_deps(a)) do f[d] = true end
      end
    end
    frontier[n] = f
    return f
  end
  local function deps_of(n, acc)
    acc = acc or {}
    for _, a in ipairs(n.args) do
      if is_scalar(a) then
        if a.op ~= "const" and a.op ~= "input" then acc[a] = true end
      elseif mat[a] and #a.args > 0 then acc[a] = true
      elseif #a.args > 0 then
        for d in pairs(inline_deps(a)) do acc[d] = true end
      end
    end
    return acc
  end
  for _, n in ipairs(order) do
    if is_scalar(n) then
      if n.op == "sum" then
        stmts[#stmts + 1] = {kind = "loop", mode = "reduce", node = n, domain = dom2(n.args[1].shape),
                             deps = deps_of(n)}
      elseif n.op ~= "const" and n.op ~= "input" then
        stmts[#stmts + 1] = {kind = "scalar", node = n, deps = deps_of(n)}
      end
    elseif mat[n] and #n.args > 0 then
      if graph.ELEMENTWISE[n.op] then
        stmts[#stmts + 1] = {kind = "loop", mode = "store", node = n, domain = dom2(n.shape),
                             target = n, deps = deps_of(n)}
      elseif n.op == "mv" then
        -- y = A x as a loop nest over A (or over E for A = E^T), so that
        -- products with one matrix, and the loops over it, share a pass
        local A = n.args[1]
        local trans = A.op == "t" and not mat[A]
        local M = trans and A.args[1] or A
        stmts[#stmts + 1] = {kind = "loop", mode = trans and "mvt" or "mv", node = n,
                             matrix = M, domain = M.shape, deps = deps_of(n)}
      else
        stmts[#stmts + 1] = {kind = n.op, node = n, deps = deps_of(n)}
      end
    end
  end
  -- Outputs that are not stored in their own out[] slot: copies.
  for k, o in ipairs(outputs) do
    if is_scalar(o) then
      local d = {}
      if o.op ~= "const" and o.op ~= "input" then d[o] = true end
      stmts[#stmts + 1] = {kind = "scalar_out", node = o, k = k, deps = d}
    elseif output_of[o] ~= k or not mat[o] then
      local d = {}
      if mat[o] and #o.args > 0 then d[o] = true else deps_of(o, d) end
      stmts[#stmts + 1] = {kind = "loop", mode = "copy", node = o, k = k, domain = dom2(o.shape),
                           deps = d}
    end
  end

  local function done_by(w, st) return w.deps[st.node] == true end
  -- In place: a statement that writes over input A waits for every other
  -- statement that reads A (an anti-dependence). One that reads A only
  -- element by element at the written element, in a loop over A's shape,
  -- may share the writer's nest (soft[writer][node]): its reads come first.
  local soft = {}
  if inplace then
    local function reads(st)
      local acc, moved = {}, {}
      local seen = {}
      local function walk(n, t)
        for _, a in ipairs(n.args) do
          if written[a] then
            acc[a] = true
            if t or n.op == "select" or n.op == "index" or n.op == "mm" or n.op == "softmax" or
               n.op == "logsoftmax" then moved[a] = true end
          elseif #a.args > 0 and not is_scalar(a) and not seen[a] then
            if not mat[a] or a.op == "select" then
              seen[a] = true
              walk(a, t or a.op == "t" or a.op == "select" or a.op == "outer")
            end
          end
        end
      end
      if st.kind == "scalar_out" then return acc, moved end
      walk(st.node, st.mode == "mvt")
      return acc, moved
    end
    local writers = {}
    for _, st in ipairs(stmts) do
      local n = st.node
      local A = (st.mode == "store" and late[n] and inplace[output_of[n]]) or
                (st.mode == "copy" and inplace[st.k]) or nil
      if A then writers[#writers + 1] = {st = st, A = A} end
    end
    for _, w in ipairs(writers) do
      local dom = dom2(w.A.shape)
      for _, st in ipairs(stmts) do
        if st ~= w.st then
          local acc, moved = reads(st)
          if acc[w.A] and not done_by(w.st, st) then
            w.st.deps[st.node] = true
            local same = st.kind == "loop" and #st.domain == #dom and st.domain[1] == dom[1] and
                         (#dom == 1 or st.domain[2] == dom[2])
            if same and not moved[w.A] then
              soft[w.st] = soft[w.st] or {}
              soft[w.st][st.node] = true
            end
          end
        end
      end
    end
  end

  -- Code.
  local body = {}
  local function line(s, ...) body[#body + 1] = "  " .. format(s, ...) end
  local done = {}
  local function same(a, b)
    if #a ~= #b then return false end
    for i = 1, #a do if a[i] ~= b[i] then return false end end
    return true
  end
  local nacc = 0
  local function emit_loop(group)
    local dom = group[1].domain
    local pre, inner, post = {}, {}, {}
    local row_pre, row_post = {}, {}
    local red = {}                     -- the sums the innermost loop accumulates
    local stores = {}                  -- stores over inputs: after every read
    local I, J = "i", (#dom == 2) and "j" or nil
    local function flat() return J and format("i * %d + j", dom[2]) or "i" end
    for _, st in ipairs(group) do
      local n = st.node
      if st.mode == "reduce" then
        nacc = nacc + 1
        local acc = "acc" .. nacc
        pre[#pre + 1] = format("double %s = 0;", acc)
        if J then
          -- a row's partial sum in real (full vector width), rows summed in double
          row_pre[#row_pre + 1] = format("real r%s = 0;", acc)
          inner[#inner + 1] = format("r%s += %s;", acc, expr(n.args[1], I, J))
          row_post[#row_post + 1] = format("%s += r%s;", acc, acc)
          red[#red + 1] = "r" .. acc
        else
          inner[#inner + 1] = format("%s += %s;", acc, expr(n.args[1], I, J))
          red[#red + 1] = acc
        end
        scalar_name[n] = "s" .. n.id
        post[#post + 1] = format("const double s%d = %s;", n.id, acc)
      elseif st.mode == "mv" then                -- y[i] = sum_j M[i,j] x[j]
        nacc = nacc + 1
        local acc = "acc" .. nacc
        row_pre[#row_pre + 1] = format("real %s = 0;", acc)
        inner[#inner + 1] = format("%s += %s * %s;", acc, expr(st.matrix, I, J), expr(n.args[2], J))
        red[#red + 1] = acc
        row_post[#row_post + 1] = format("%s[i] = (real)%s;", ptr[n], acc)
      elseif st.mode == "mvt" then               -- y[j] = sum_i M[i,j] x[i]
        pre[#pre + 1] = format("for (int64_t j = 0; j < %d; j++) %s[j] = 0;", dom[2], ptr[n])
        inner[#inner + 1] = format("%s[j] += %s * %s;", ptr[n], expr(st.matrix, I, J), expr(n.args[2], I))
      elseif st.mode == "store" then
        -- stored values are written through their own array
        local p = ptr[n]
        local e
        do
          local keep = mat[n]; mat[n] = nil
          local saved = ptr[n]; ptr[n] = nil
          e = expr(n, I, J)
          mat[n], ptr[n] = keep, saved
        end
        if late[n] then
          inner[#inner + 1] = format("const real v%d = %s;", n.id, e)
          stores[#stores + 1] = format("%s[%s] = v%d;", p, flat(), n.id)
        else
          inner[#inner + 1] = format("%s[%s] = %s;", p, flat(), e)
        end
      elseif inplace then -- copy over the input the output replaces
        nacc = nacc + 1
        inner[#inner + 1] = format("const real c%d = %s;", nacc, expr(n, I, J))
        stores[#stores + 1] = format("%s[%s] = c%d;", ptr[inplace[st.k]], flat(), nacc)
      else -- copy into an output slot
        inner[#inner + 1] = format("out[%d][%s] = %s;", st.k - 1, flat(), expr(n, I, J))
      end
    end
    -- The innermost loop: no iteration reads what another writes, but
    -- for the sums, in any order (outputs never overlap inputs, which the
    -- caller checks): vectorised as OpenMP's simd directive says
    -- (-fopenmp-simd), without a runtime aliasing test (GCC ignores
    -- restrict on local pointers) and without -fassociative-math, which
    -- would break the rounding steps of the element functions.
    local simd = #red > 0 and ("#pragma omp simd reduction(+:" .. concat(red, ", ") .. ")")
                 or "#pragma omp simd"
    for _, s in ipairs(pre) do line("%s", s) end
    if not J then body[#body + 1] = simd end
    line("for (int64_t i = 0; i < %d; i++) {", dom[1])
    local ind = "  "
    for _, s in ipairs(row_pre) do line("  %s", s) end
    if J then
      body[#body + 1] = simd
      line("  for (int64_t j = 0; j < %d; j++) {", dom[2]); ind = "    "
    end
    for _, s in ipairs(inner) do line("%s%s", ind, s) end
    for _, s in ipairs(stores) do line("%s%s", ind, s) end
    if J then line("  }") end
    for _, s in ipairs(row_post) do line("  %s", s) end
    line("}")
    for _, s in ipairs(post) do line("%s", s) end
  end
  local function emit_stmt(st)
    local n = st.node
    if st.kind == "scalar" then
      scalar_name[n] = "s" .. n.id
      local e
      local a = n.args
      if n.op == "index" then
        if #a[1].shape == 1 then e = expr(a[1], tostring(n.k - 1))
        else e = format("%s[%d]", ptr[a[1]], n.k - 1) end     -- stored: a flat position
      elseif graph.BINARY[n.op] then
        local sym = ({add = "+", sub = "-", mul = "*", div = "/"})[n.op]
        e = format("%s %s %s", sexpr(a[1]), sym, sexpr(a[2]))
      elseif n.op == "neg" then e = "-" .. sexpr(a[1])
      else e = emit.unary(n.op, sexpr(a[1]), n.k, true) end
      line("const double s%d = %s;", n.id, e)
    elseif st.kind == "scalar_out" then
      line("out[%d][0] = (real)%s;", st.k - 1, sexpr(n))
    elseif st.kind == "mm" then
      local A, B = n.args[1], n.args[2]
      local ta, tb, a, b = "CblasNoTrans", "CblasNoTrans", A, B
      if A.op == "t" and not mat[A] then ta, a = "CblasTrans", A.args[1] end
      if B.op == "t" and not mat[B] then tb, b = "CblasTrans", B.args[1] end
      line("cblas_%sgemm(CblasRowMajor, %s, %s, %d, %d, %d, 1, %s, %d, %s, %d, 0, %s, %d);",
           is_float and "s" or "d", ta, tb, n.shape[1], n.shape[2], A.shape[2],
           ptr[a], a.shape[2], ptr[b], b.shape[2], ptr[n], n.shape[2])
    elseif st.kind == "softmax" or st.kind == "logsoftmax" then
      -- each row as the tensor operation computes it (csrc/core/nm_math_gen.h)
      local rows, len = 1, n.shape[1]
      if #n.shape == 2 then rows, len = n.shape[1], n.shape[2] end
      line("for (int64_t sr = 0; sr < %d; sr++) {", rows)
      line("  const real *sx = %s + sr * %d;", ptr[n.args[1]], len)
      line("  real *sy = %s + sr * %d;", ptr[n], len)
      line("  real sm = sx[0];")
      line("  for (int64_t i = 1; i < %d; i++) if (sx[i] > sm || sx[i] != sx[i]) sm = sx[i];", len)
      line("  double ss = 0;")
      line("  for (int64_t i = 0; i < %d; i++) ss += V_(vexp)(sx[i] - sm);", len)
      if st.kind == "logsoftmax" then
        line("  const real lse = (real)M_(log)((real)ss);")
        line("  for (int64_t i = 0; i < %d; i++) sy[i] = (sx[i] - sm) - lse;", len)
      else
        line("  const double inv = 1.0 / ss;")
        line("  for (int64_t i = 0; i < %d; i++) sy[i] = (real)(V_(vexp)(sx[i] - sm) * inv);", len)
      end
      line("}")
    end
  end
  -- Scheduling (Kahn's algorithm): a statement is ready when the values
  -- it reads are computed; the earliest ready statement goes next, and
  -- with a loop every ready loop over the same shape joins its nest.
  local waiting, dependents, ready_list = {}, {}, {}
  for i, st in ipairs(stmts) do
    st.index = i
    local n = 0
    for d in pairs(st.deps) do
      n = n + 1
      dependents[d] = dependents[d] or {}
      table.insert(dependents[d], st)
    end
    waiting[st] = n
    if n == 0 then ready_list[#ready_list + 1] = st end
  end
  local function finish(node)
    -- once: a value can have several statements (a scalar and its copy
    -- into an output slot, a stored output and a second output slot); a
    -- second finish released the statements waiting on it and on something
    -- not yet computed (the RCN's traced step read two of its products
    -- before computing them)
    if done[node] then return end
    done[node] = true
    for _, st in ipairs(dependents[node] or {}) do
      waiting[st] = waiting[st] - 1
      if waiting[st] == 0 and not st.emitted then ready_list[#ready_list + 1] = st end
    end
  end
  local emitted = 0
  while #ready_list > 0 do
    -- cheap statements first (scalars, vectors, products by BLAS), so that
    -- as many passes over a matrix as possible are ready to share a nest
    local function cost(st)
      return (st.kind == "loop" and #st.domain == 2 and st.domain[1] > 1) and 1 or 0
    end
    local pick = 1
    for i = 2, #ready_list do
      local a, b = ready_list[i], ready_list[pick]
      if cost(a) < cost(b) or (cost(a) == cost(b) and a.index < b.index) then pick = i end
    end
    local st = table.remove(ready_list, pick)
    if st.kind == "loop" then
      local group = {st}
      local i = 1
      while i <= #ready_list do
        local o = ready_list[i]
        if o.kind == "loop" and same(o.domain, st.domain) then
          group[#group + 1] = table.remove(ready_list, i)
        else
          i = i + 1
        end
      end
      -- writers over an input whose only pending statements read it in
      -- this nest, element by element, join it (their stores come last)
      local grown = true
      while grown and next(soft) do
        grown = false
        local in_group = {}
        for _, x in ipairs(group) do in_group[x.node] = true; x.emitted = true end
        for _, x in ipairs(stmts) do
          if not x.emitted and soft[x] and x.kind == "loop" and same(x.domain, st.domain) then
            local ok = true
            for d in pairs(x.deps) do
              if not done[d] and not (in_group[d] and soft[x][d]) then ok = false break end
            end
            if ok then
              group[#group + 1] = x
              x.emitted = true
              for i = #ready_list, 1, -1 do if ready_list[i] == x then table.remove(ready_list, i) end end
              grown = true
            end
          end
        end
      end
      for _, x in ipairs(group) do x.emitted = true end
      table.sort(group, function(a, b) return a.index < b.index end)
      emit_loop(group)
      emitted = emitted + #group
      for _, x in ipairs(group) do finish(x.node) end
    else
      st.emitted = true
      emit_stmt(st)
      emitted = emitted + 1
      finish(st.node)
    end
  end
  if emitted ~= #stmts then error("emit: statements left unscheduled (cyclic graph?)") end

  local src = {}
  src[#src + 1] = format("/* Generated by neuromic's rule compiler: do not edit. */")
  if opts.comment then
    for l in (opts.comment .. "\n"):gmatch("(.-)\n") do
      src[#src + 1] = "/* " .. l:gsub("%*/", "* /") .. " */"
    end
  end
  src[#src + 1] = format(PRELUDE, nm.build.vmath, is_float and "float" or "double",
                         is_float and "fn##f" or "fn", is_float and "fn##_f32" or "fn##_f64")
  src[#src + 1] = format("int %s(real *const *in, real *const *out, real *scratch, const double *sc);", name)
  src[#src + 1] = format("int %s(real *const *in, real *const *out, real *scratch, const double *sc) {", name)
  src[#src + 1] = "  (void)in; (void)out; (void)scratch; (void)sc;"
  for _, l in ipairs(decls) do src[#src + 1] = "  " .. l end
  for _, l in ipairs(body) do src[#src + 1] = l end
  src[#src + 1] = "  return 0;"
  src[#src + 1] = "}"
  local layout = {inputs = ntensor_in, scalars = sslot, outputs = #outputs, scratch = scratch}
  return concat(src, "\n") .. "\n", layout
end

-- C expression of an elementwise function of x (k: its parameter).
-- scalar: x is a double scalar (double functions), else an element (real).
function emit.unary(op, x, k, scalar)
  local function m(f) return scalar and f or format("M_(%s)", f) end
  local function v(f) return scalar and f or format("V_(v%s)", f) end
  local function lit(x_) return scalar and lit_(x_) or "(real)" .. lit_(x_) end
  if op == "exp" or op == "log" or op == "tanh" then
    return format("%s(%s)", v(op), x)
  elseif op == "sqrt" then return format("%s(%s)", m(op), x)
  elseif op == "abs" then return format("%s(%s)", m("fabs"), x)
  elseif op == "sigmoid" then
    return scalar and format("nm_sigmoid_d(%s)", x) or format("V_(vsigmoid)(%s)", x)
  elseif op == "relu" then return format("(%s > 0 ? %s : 0)", x, x)
  elseif op == "drelu" then return format("(%s > 0 ? 1 : 0)", x)
  elseif op == "sign" then return format("((%s > 0) - (%s < 0))", x, x)
  elseif op == "softplus" then
    return format("%s(%s, %s)", scalar and "nm_softplus_d" or "V_(vsoftplus)", x, lit(k))
  elseif op == "dsoftplus" then
    return format("%s(%s * %s)", scalar and "nm_sigmoid_d" or "V_(vsigmoid)", lit(k), x)
  elseif op == "pow" then
    if k == 2 then return format("(%s * %s)", x, x)
    elseif k == 0.5 then return format("%s(%s)", m("sqrt"), x)
    elseif k == -1 then return format("(1 / %s)", x) end
    return format("%s(%s, %s)", m("pow"), x, lit(k))
  end
  error("emit: no C form for operation '" .. op .. "'")
end

return emit
