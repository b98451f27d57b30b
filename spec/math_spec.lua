-- Tensor math (csrc/core/nm_math.c, csrc/lua/ltensor_math.c) against independent
-- references: naive Lua loops over t:get, closed forms and finite
-- differences. Both dtypes; contiguous, transposed, narrowed and strided
-- views as inputs and as results; aliasing; the error messages.
local nm = require "neuromic"

local DTYPES = { "float32", "float64" }
local TOL = { float32 = 2e-5, float64 = 1e-12 }
local nan, inf = 0 / 0, math.huge

-- A spec-local generator (64-bit LCG, top 53 bits), so the references do
-- not depend on the library's own random module.
local function lcg(seed)
  local s = seed
  return function(lo, hi)
    s = s * 6364136223846793005 + 1442695040888963407
    local u = ((s >> 11) & ((1 << 53) - 1)) / 2.0 ^ 53
    return (lo or 0) + ((hi or 1) - (lo or 0)) * u
  end
end

local function copy_list(t) return { table.unpack(t) } end

-- Every index of a shape, row-major, as tables of 1-based positions.
local function positions(shape)
  local out, idx = {}, {}
  local function walk(d)
    if d > #shape then out[#out + 1] = copy_list(idx); return end
    for i = 1, shape[d] do idx[d] = i; walk(d + 1) end
  end
  walk(1)
  return out
end

local function get(t, idx) return t:get(table.unpack(idx)) end
local function set(t, idx, v)
  local args = copy_list(idx)
  args[#args + 1] = v
  t:set(table.unpack(args))
end

-- Nested table of shape with f(idx) at each position.
local function build(shape, f)
  local idx = {}
  local function rec(d)
    local out = {}
    for i = 1, shape[d] do
      idx[d] = i
      if d == #shape then out[i] = f(copy_list(idx)) else out[i] = rec(d + 1) end
    end
    return out
  end
  return rec(1)
end

local function shape_of(t)
  local s = {}
  for d = 1, t:dim() do s[d] = t:size(d) end
  return s
end

-- Ways to lay out a tensor of a given shape: each gives a zeroed view.
--   contig      a fresh tensor
--   narrow      the interior of a bigger tensor (strides of the bigger one)
--   transposed  the last two dimensions swapped in memory (BLAS "Trans")
--   strided     every other element of a tensor with an extra dimension
--               (no unit stride anywhere: BLAS cannot take it)
local function make(shape, dtype, kind)
  local n = #shape
  if kind == "contig" then
    return nm.zeros(shape, dtype)
  elseif kind == "narrow" then
    local big = {}
    for d = 1, n do big[d] = shape[d] + 3 end
    local t = nm.zeros(big, dtype)
    for d = 1, n do t = t:narrow(d, 2, shape[d]) end
    return t
  elseif kind == "transposed" then
    local sw = copy_list(shape)
    sw[n - 1], sw[n] = sw[n], sw[n - 1]
    return nm.zeros(sw, dtype):transpose(n - 1, n)
  elseif kind == "strided" then
    local big = copy_list(shape)
    big[n + 1] = 2
    return nm.zeros(big, dtype):select(n + 1, 2)
  end
  error("unknown layout " .. kind)
end

local function kinds(shape)
  if #shape >= 2 then return { "contig", "transposed", "narrow", "strided" } end
  return { "contig", "narrow", "strided" }
end

local function random(shape, dtype, kind, gen, lo, hi)
  local t = make(shape, dtype, kind or "contig")
  for _, idx in ipairs(positions(shape)) do set(t, idx, gen(lo or -2, hi or 2)) end
  return t
end

-- Expected values of f applied to the elements of the given tensors.
local function ref_map(shape, f, ...)
  local ts = { ... }
  return build(shape, function(idx)
    local v = {}
    for i, t in ipairs(ts) do v[i] = type(t) == "number" and t or get(t, idx) end
    return f(table.unpack(v, 1, #ts))
  end)
end

-- A tensor's elements as a snapshot table (to compare against later).
local function snapshot(t) return t:totable() end

-- pcall returning the message, which must exist.
local function error_of(f, ...)
  local ok, msg = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(msg)
end

local function assert_has(msg, ...)
  for _, part in ipairs { ... } do
    assert.truthy(msg:find(part, 1, true), ("message %q lacks %q"):format(msg, part))
  end
end

local SHAPES = { { 7 }, { 3, 5 }, { 2, 3, 4 } }

local function tanh(x)
  if x > 20 then return 1 elseif x < -20 then return -1 end
  local e = math.exp(2 * x)
  return (e - 1) / (e + 1)
end
local function sigmoid(x) return 1 / (1 + math.exp(-x)) end
local function sign(x) return x > 0 and 1 or (x < 0 and -1 or 0) end

-- ------------------------------------------------------------------------

describe("elementwise binary", function()
  local ops = {
    add = function(x, y) return x + y end, sub = function(x, y) return x - y end,
    mul = function(x, y) return x * y end, div = function(x, y) return x / y end,
  }
  for _, dt in ipairs(DTYPES) do
    for name, f in pairs(ops) do
      it(name .. " tensor-tensor and tensor-number, all layouts, " .. dt, function()
        local gen = lcg(11)
        for _, shape in ipairs(SHAPES) do
          local ks = kinds(shape)
          for i = 1, #ks do
            local a = random(shape, dt, ks[i], gen)
            local b = random(shape, dt, ks[i % #ks + 1], gen, 0.5, 2)
            local r = make(shape, dt, ks[(i + 1) % #ks + 1])
            local want = ref_map(shape, f, a, b)
            assert.equal(r, r[name](r, a, b))               -- result form returns r
            assert.tensor_near(want, r, TOL[dt] * 4)
            assert.tensor_near(ref_map(shape, function(x) return f(x, 1.5) end, a),
                               r[name](r, a, 1.5), TOL[dt] * 4)
            assert.tensor_near(ref_map(shape, function(y) return f(1.5, y) end, b),
                               r[name](r, 1.5, b), TOL[dt] * 4)
            local t = a:clone()                               -- in place
            t[name](t, b)
            assert.tensor_near(want, t, TOL[dt] * 4)
            t = a:clone()
            t[name](t, 0.75)
            assert.tensor_near(ref_map(shape, function(x) return f(x, 0.75) end, a), t,
                               TOL[dt] * 4)
          end
        end
      end)
    end
  end

  it("in-place with every operand the same tensor", function()
    local t = nm.tensor({ 1, 2, 3 }, "float64")
    t:add(t, t)
    assert.same({ 2, 4, 6 }, t:totable())
    t:mul(t)
    assert.same({ 4, 16, 36 }, t:totable())
  end)

  it("a result overlapping an input in another layout is still right", function()
    for _, dt in ipairs(DTYPES) do
      local gen = lcg(5)
      local a = random({ 4, 4 }, dt, "contig", gen)
      local b = random({ 4, 4 }, dt, "contig", gen)
      local want = ref_map({ 4, 4 }, function(x, y) return x + y end, a:t(), b)
      a:add(a:t(), b)                 -- reads a transposed while writing a
      assert.tensor_near(want, a, TOL[dt])
      local v = random({ 6 }, dt, "contig", gen)
      local shifted = ref_map({ 5 }, function(x) return 2 * x end, v:narrow(1, 1, 5))
      v:narrow(1, 2, 5):mul(v:narrow(1, 1, 5), 2)   -- overlapping shifted views
      assert.tensor_near(shifted, v:narrow(1, 2, 5), TOL[dt])
    end
  end)

  it("scale, neg and axpy", function()
    for _, dt in ipairs(DTYPES) do
      local gen = lcg(7)
      for _, shape in ipairs(SHAPES) do
        for _, k in ipairs(kinds(shape)) do
          local a = random(shape, dt, k, gen)
          local x = random(shape, dt, "strided", gen)
          local t = a:clone()
          assert.tensor_near(ref_map(shape, function(v) return 2.5 * v end, a), t:scale(2.5),
                             TOL[dt] * 4)
          local r = make(shape, dt, k)
          assert.tensor_near(ref_map(shape, function(v) return -0.5 * v end, a),
                             r:scale(a, -0.5), TOL[dt])
          assert.tensor_near(ref_map(shape, function(v) return -v end, a), r:neg(a), 0)
          local y = a:clone()
          y:axpy(-1.5, x)
          assert.tensor_near(ref_map(shape, function(u, v) return u - 1.5 * v end, a, x), y,
                             TOL[dt] * 8)
        end
      end
      -- long lines take the BLAS path: contiguous and strided
      local n = 300
      local y, x = random({ n }, dt, "contig", gen), random({ n }, dt, "strided", gen)
      local want = ref_map({ n }, function(u, v) return u + 0.25 * v end, y, x)
      assert.tensor_near(want, y:axpy(0.25, x), TOL[dt] * 4)
    end
  end)
end)

describe("elementwise unary", function()
  local cases = {
    { "abs", {}, math.abs }, { "sign", {}, sign }, { "exp", {}, math.exp },
    { "log", {}, math.log, 0.1, 3 }, { "sqrt", {}, math.sqrt, 0, 4 },
    { "tanh", {}, tanh }, { "sigmoid", {}, sigmoid },
    { "relu", {}, function(x) return x > 0 and x or 0 end },
    { "dtanh", {}, function(x) return 1 - tanh(x) ^ 2 end },
    { "dsigmoid", {}, function(x) return sigmoid(x) * (1 - sigmoid(x)) end },
    { "drelu", {}, function(x) return x > 0 and 1 or 0 end },
    { "softplus", {}, function(x) return math.log(1 + math.exp(x)) end },
    { "softplus", { 2.5 }, function(x) return math.log(1 + math.exp(2.5 * x)) / 2.5 end },
    { "dsoftplus", { 0.5 }, function(x) return sigmoid(0.5 * x) end },
    { "pow", { 2 }, function(x) return x * x end },
    { "pow", { 3 }, function(x) return x ^ 3 end },
    { "pow", { 0.5 }, math.sqrt, 0, 4 }, { "pow", { -1 }, function(x) return 1 / x end, 0.5, 2 },
    { "pow", { 1.7 }, function(x) return x ^ 1.7 end, 0, 3 },
    { "clamp", { -0.5, 0.75 }, function(x) return math.max(-0.5, math.min(0.75, x)) end },
  }
  for _, dt in ipairs(DTYPES) do
    for _, c in ipairs(cases) do
      local name, params, f, lo, hi = c[1], c[2], c[3], c[4], c[5]
      it(("%s(%s), %s, all layouts, in place and result form"):format(
           name, table.concat(params, ","), dt), function()
        local gen = lcg(#name * 31 + #params)
        for _, shape in ipairs(SHAPES) do
          local ks = kinds(shape)
          for i = 1, #ks do
            local a = random(shape, dt, ks[i], gen, lo, hi)
            local want = ref_map(shape, f, a)
            local r = make(shape, dt, ks[i % #ks + 1])
            assert.equal(r, r[name](r, a, table.unpack(params)))
            assert.tensor_near(want, r, TOL[dt] * 8)
            local t = a:clone()
            t[name](t, table.unpack(params))
            assert.tensor_near(want, t, TOL[dt] * 8)
          end
        end
      end)
    end
  end

  it("keeps 0 for sign and relu, NaN through relu and abs", function()
    local t = nm.tensor({ 0, -0.0, nan }, "float64")
    assert.same({ 0, 0 }, { nm.zeros(3, "float64"):sign(t):get(1), t:clone():relu():get(2) })
    local r = t:clone():relu()
    assert.is_true(r:get(3) ~= r:get(3))
    r = t:clone():abs()
    assert.is_true(r:get(3) ~= r:get(3))
  end)

  -- The relu kernels are selects the compiler vectorises: check them on
  -- rows long enough for the vector loop, with NaN, -0 and infinities
  -- at every position, against a plain Lua loop.
  it("relu and the fused relu backward match a scalar reference in vector loops", function()
    local inf = math.huge
    local specials = { nan, -0.0, 0.0, inf, -inf, 1.5, -2.5, 1e-30, -1e-30 }
    for _, dt in ipairs(DTYPES) do
      local n = 67
      local vals, errs = {}, {}
      for i = 1, n do
        vals[i] = specials[(i * 7) % #specials + 1]
        errs[i] = (i % 5) - 2.25
      end
      local a = nm.tensor(vals, dt)
      local r = a:clone():relu()
      local e = nm.tensor(errs, dt)
      e:mul_dact(a, a, "relu")
      for i = 1, n do
        local x, got, de = a:get(i), r:get(i), e:get(i)   -- x as stored (float32 rounds)
        if x ~= x then
          assert.is_true(got ~= got, "relu(NaN) at " .. i)
          assert.is_true(de ~= de, "relu backward NaN at " .. i)
        else
          assert.equal(x > 0 and x or 0, got)
          if got == 0 then assert.is_true(1 / got > 0, "relu gave -0 at " .. i) end
          assert.equal(x > 0 and nm.tensor({errs[i]}, dt):get(1) or 0, de)
        end
      end
    end
  end)

  it("copies dense and strided blocks of either dtype element for element", function()
    local g = nm.generator(9)
    for _, from in ipairs(DTYPES) do
      for _, to in ipairs(DTYPES) do
        local src = nm.randn(g, 13, 29, from)
        local dense = nm.zeros(13, 29, to):copy(src)
        local strided = nm.zeros(29, 13, to):t():copy(src)
        local reshaped = nm.zeros(377, to):copy(src)
        for i = 1, 13 do
          for j = 1, 29 do
            local want = src:get(i, j)
            if to == "float32" then want = nm.tensor({want}, "float32"):get(1) end
            assert.equal(want, dense:get(i, j))
            assert.equal(want, strided:get(i, j))
            assert.equal(want, reshaped:get((i - 1) * 29 + j))
          end
        end
      end
    end
  end)

  it("sigmoid and softplus are stable at large |x|", function()
    for _, dt in ipairs(DTYPES) do
      local x = nm.tensor({ -1000, -50, 0, 50, 1000 }, dt)
      local s = x:clone():sigmoid():totable()
      assert.same({ 0, 0.5, 1 }, { s[1], s[3], s[5] })
      assert.is_true(s[2] >= 0 and s[2] < 1e-20)
      local sp = x:clone():softplus():totable()
      assert.equal(0, sp[1])
      assert.near(math.log(2), sp[3], 1e-7)
      assert.near(50, sp[4], 1e-5)
      assert.near(1000, sp[5], 1e-3)
      sp = x:clone():softplus(10):totable()      -- beta x = 10000: no overflow
      assert.near(1000, sp[5], 1e-3)
      assert.near(math.log(2) / 10, sp[3], 1e-7)
      local ds = x:clone():dsoftplus(3):totable()
      assert.same({ 0, 0.5, 1 }, { ds[1], ds[3], ds[5] })
      local dsg = x:clone():dsigmoid():totable()
      assert.same({ 0, 0.25, 0 }, { dsg[1], dsg[3], dsg[5] })
    end
  end)

  it("derivative forms match central differences of the forward forms", function()
    local gen = lcg(99)
    local x = random({ 40 }, "float64", "contig", gen, -3, 3)
    for i = 1, 40 do                          -- keep relu's kink out of reach
      if math.abs(x:get(i)) < 0.01 then x:set(i, 0.5) end
    end
    local h = 1e-6
    local xp, xm = x:clone():add(h), x:clone():sub(h)
    local pairs_ = {
      { "tanh", "dtanh", {} }, { "sigmoid", "dsigmoid", {} }, { "relu", "drelu", {} },
      { "softplus", "dsoftplus", { 1 } }, { "softplus", "dsoftplus", { 3.5 } },
      { "softplus", "dsoftplus", { 0.2 } },
    }
    for _, p in ipairs(pairs_) do
      local fwd, der, params = p[1], p[2], p[3]
      local fp = xp:clone()[fwd](xp:clone(), table.unpack(params))
      local fm = xm:clone()[fwd](xm:clone(), table.unpack(params))
      local fd = nm.zeros(40, "float64"):sub(fp, fm):div(2 * h)
      local d = x:clone()[der](x:clone(), table.unpack(params))
      assert.tensor_near(fd, d, 1e-7, der)
    end
  end)
end)

describe("comparisons and masks", function()
  local cmp = {
    gt = function(x, y) return x > y end, lt = function(x, y) return x < y end,
    ge = function(x, y) return x >= y end, le = function(x, y) return x <= y end,
    eq = function(x, y) return x == y end, ne = function(x, y) return x ~= y end,
  }
  for _, dt in ipairs(DTYPES) do
    it("gt lt ge le eq ne give 0/1 masks, tensor or number, " .. dt, function()
      local gen = lcg(3)
      for _, shape in ipairs(SHAPES) do
        local ks = kinds(shape)
        for i = 1, #ks do
          -- small integers so that ties happen
          local a = random(shape, dt, ks[i], gen)
          local b = random(shape, dt, ks[i % #ks + 1], gen)
          for _, idx in ipairs(positions(shape)) do
            set(a, idx, math.floor(get(a, idx)))
            set(b, idx, math.floor(get(b, idx)))
          end
          for name, f in pairs(cmp) do
            local function as01(x, y) return f(x, y) and 1 or 0 end
            local m = make(shape, dt, ks[(i + 1) % #ks + 1])
            assert.tensor_near(ref_map(shape, as01, a, b), m[name](m, a, b), 0, name)
            assert.tensor_near(ref_map(shape, function(x) return as01(x, 0) end, a),
                               m[name](m, a, 0), 0, name)
            assert.tensor_near(ref_map(shape, function(y) return as01(0, y) end, b),
                               m[name](m, 0, b), 0, name)
            local t = a:clone()
            assert.tensor_near(ref_map(shape, as01, a, b), t[name](t, b), 0, name)
          end
        end
      end
    end)
  end

  it("maskedfill and maskedcopy touch only where the mask is non-zero", function()
    for _, dt in ipairs(DTYPES) do
      local gen = lcg(17)
      for _, shape in ipairs(SHAPES) do
        local ks = kinds(shape)
        for i = 1, #ks do
          local t = random(shape, dt, ks[i], gen)
          local mask = make(shape, dt, ks[i % #ks + 1]):gt(random(shape, dt, "contig", gen), 0)
          local src = random(shape, dt, ks[(i + 1) % #ks + 1], gen)
          local want = ref_map(shape, function(x, m) return m ~= 0 and 9 or x end, t, mask)
          assert.tensor_near(want, t:clone():maskedfill(mask, 9), 0)
          want = ref_map(shape, function(x, m, s) return m ~= 0 and s or x end, t, mask, src)
          local r = t:clone()
          assert.equal(r, r:maskedcopy(mask, src))
          assert.tensor_near(want, r, 0)
        end
      end
    end
  end)
end)

-- ------------------------------------------------------------------------

local function fold(values, op, p)
  if op == "sum" or op == "mean" then
    local s = 0
    for _, v in ipairs(values) do s = s + v end
    return op == "mean" and s / #values or s
  elseif op == "max" or op == "min" then
    local best, at = values[1], 1
    for k = 2, #values do
      local v = values[k]
      if (op == "max" and v > best) or (op == "min" and v < best) then best, at = v, k end
    end
    return best, at
  elseif op == "norm" then
    if p == inf then
      local m = 0
      for _, v in ipairs(values) do m = math.max(m, math.abs(v)) end
      return m
    elseif p == 0 then
      local c = 0
      for _, v in ipairs(values) do if v ~= 0 then c = c + 1 end end
      return c
    end
    local s = 0
    for _, v in ipairs(values) do s = s + math.abs(v) ^ p end
    return s ^ (1 / p)
  end
end

-- Reference reduction of t along dim: values and indices tables shaped
-- like t without dim.
local function ref_reduce(t, dim, op, p)
  local shape = shape_of(t)
  local rshape = {}
  for d = 1, #shape do if d ~= dim then rshape[#rshape + 1] = shape[d] end end
  local vals, idxs = {}, {}
  local function line(idx)
    local full, k = {}, 1
    local values = {}
    for i = 1, shape[dim] do
      k = 1
      for d = 1, #shape do
        if d == dim then full[d] = i else full[d] = idx[k]; k = k + 1 end
      end
      values[i] = get(t, full)
    end
    return fold(values, op, p)
  end
  if #rshape == 0 then
    local v, i = line({})
    return v, i
  end
  vals = build(rshape, function(idx) return (line(idx)) end)
  if op == "max" or op == "min" then
    idxs = build(rshape, function(idx) local _, i = line(idx); return i end)
  end
  return vals, idxs
end

local function all_values(t)
  local out = {}
  for _, idx in ipairs(positions(shape_of(t))) do out[#out + 1] = get(t, idx) end
  return out
end

describe("reductions", function()
  for _, dt in ipairs(DTYPES) do
    it("all_finite finds one NaN or inf anywhere, in every layout, " .. dt, function()
      local gen = lcg(29)
      for _, shape in ipairs(SHAPES) do
        for _, k in ipairs(kinds(shape)) do
          local t = random(shape, dt, k, gen)
          local n = #all_values(t)
          assert.is_true(t:all_finite())
          for _, bad in ipairs{0 / 0, inf, -inf} do
            for _, at in ipairs{1, (n + 1) // 2, n} do
              local idx, rest = {}, at - 1               -- row-major position in t
              for d = t:dim(), 1, -1 do
                idx[d] = rest % t:size(d) + 1
                rest = rest // t:size(d)
              end
              local old = t:get(table.unpack(idx))
              idx[#idx + 1] = bad
              t:set(table.unpack(idx))
              assert.is_false(t:all_finite(), table.concat(shape, "x") .. " " .. k .. " at " .. at)
              idx[#idx] = old
              t:set(table.unpack(idx))
              assert.is_true(t:all_finite())
            end
          end
        end
      end
    end)

    it("sum mean max min norm argmax argmin over everything, " .. dt, function()
      local gen = lcg(23)
      for _, shape in ipairs(SHAPES) do
        for _, k in ipairs(kinds(shape)) do
          local t = random(shape, dt, k, gen)
          local vals = all_values(t)
          local tol = TOL[dt] * 10
          assert.near(fold(vals, "sum"), t:sum(), tol)
          assert.near(fold(vals, "mean"), t:mean(), tol)
          for _, op in ipairs { "max", "min" } do
            local v, i = fold(vals, op)
            local gv, gi = t[op](t)
            assert.equal(v, gv)
            assert.equal(i, gi)
            assert.equal(i, t["arg" .. op](t))
            assert.is_true(math.type(gi) == "integer")
          end
          assert.near(fold(vals, "norm", 2), t:norm(), tol)
          for _, p in ipairs { 1, 2, 3, 0.5, inf, 0 } do
            assert.near(fold(vals, "norm", p), t:norm(p), tol * 10, "p = " .. p)
          end
        end
      end
    end)

    it("along each dimension, allocating and result forms, " .. dt, function()
      local gen = lcg(29)
      for _, shape in ipairs(SHAPES) do
        for _, k in ipairs(kinds(shape)) do
          local t = random(shape, dt, k, gen)
          for dim = 1, #shape do
            local tol = TOL[dt] * 10
            for _, op in ipairs { "sum", "mean" } do
              local want = ref_reduce(t, dim, op)
              assert.tensor_near(want, t[op](t, dim), tol, op)
              -- result forms: dimension removed, or kept with size 1
              local rs = shape_of(t)
              table.remove(rs, dim)
              if #rs > 0 then
                local r = make(rs, dt, #rs >= 2 and "transposed" or "strided")
                assert.equal(r, r[op](r, t, dim))
                assert.tensor_near(want, r, tol, op)
              end
              local ks = shape_of(t)
              ks[dim] = 1
              local rk = make(ks, dt, "narrow")
              rk[op](rk, t, dim)
              assert.tensor_near(want, #rs > 0 and rk:reshape(rs) or rk:get(table.unpack(ks)),
                                 tol, op)
            end
            for _, op in ipairs { "max", "min" } do
              local wv, wi = ref_reduce(t, dim, op)
              local v, i = t[op](t, dim)
              assert.tensor_near(wv, v, 0, op)
              assert.tensor_near(wi, i, 0, op)
              assert.equal("float64", i:dtype())
              assert.equal(dt, v:dtype())
              assert.tensor_near(wi, t["arg" .. op](t, dim), 0)
              local rs = shape_of(t)
              table.remove(rs, dim)
              if #rs > 0 then
                local r, ri = make(rs, dt, "strided"), make(rs, "float64", "narrow")
                local r1, r2 = r[op](r, ri, t, dim)
                assert.equal(r, r1)
                assert.equal(ri, r2)
                assert.tensor_near(wv, r, 0)
                assert.tensor_near(wi, ri, 0)
                r:zero()
                r[op](r, t, dim)
                assert.tensor_near(wv, r, 0)
                ri:zero()
                assert.equal(ri, ri["arg" .. op](ri, t, dim))
                assert.tensor_near(wi, ri, 0)
              end
            end
            for _, p in ipairs { 1, 2, inf, 3 } do
              assert.tensor_near(ref_reduce(t, dim, "norm", p), t:norm(p, dim), tol * 10)
            end
          end
        end
      end
    end)
  end

  it("max/min take the first of equal values, NaN propagates", function()
    local t = nm.tensor { 3, 1, 3, 1 }
    assert.same({ 3, 1 }, { t:max() })
    assert.same({ 1, 2 }, { t:min() })
    local n = nm.tensor({ 1, nan, 5, nan }, "float64")
    local v, i = n:max()
    assert.is_true(v ~= v)
    assert.equal(2, i)
    v, i = n:min()
    assert.is_true(v ~= v)
    assert.equal(2, i)
    assert.is_true(n:sum() ~= n:sum())
    local m = nm.tensor({ { 1, nan }, { 4, 2 } }, "float64")
    local mv, mi = m:max(2)
    assert.is_true(mv:get(1) ~= mv:get(1))
    assert.same({ 2, 1 }, mi:totable())
  end)

  -- Column maxima/minima of a row-major matrix run a block of columns at
  -- a time; 300 columns span two blocks. Ties, NaN first, NaN later.
  it("max/min along dim 1 across column blocks match a naive loop", function()
    local rows, cols = 7, 300
    for _, dt in ipairs(DTYPES) do
      local t = nm.zeros(rows, cols, dt)
      for i = 1, rows do
        for j = 1, cols do
          local v = ((i * 31 + j * 17) % 11) - 5          -- many ties
          if j % 37 == 0 and i == 1 then v = nan end       -- NaN in the first row
          if j % 41 == 0 and i == 5 then v = nan end       -- NaN further down
          t:set(i, j, v)
        end
      end
      for _, op in ipairs{"max", "min"} do
        local v, idx = t[op](t, 1)
        local r, ri = nm.zeros(cols, dt), nm.zeros(cols, "float64")
        r[op](r, ri, t, 1)
        for j = 1, cols do
          local m, best = t:get(1, j), 1
          for i = 2, rows do
            local x = t:get(i, j)
            if m == m and ((op == "max" and x > m) or (op == "min" and x < m) or x ~= x) then
              m, best = x, i
            end
          end
          local got = v:get(j)
          if m ~= m then assert.is_true(got ~= got, op .. " NaN at column " .. j)
          else assert.equal(m, got) end
          assert.equal(best, idx:get(j))
          assert.equal(best, ri:get(j))
          assert.equal(best, t["arg" .. op](t, 1):get(j))
        end
      end
    end
  end)

  it("a reduction into a view of its own input is right", function()
    local gen = lcg(31)
    local a = random({ 3, 3 }, "float64", "contig", gen)
    local want = ref_reduce(a, 2, "sum")
    a:row(2):sum(a, 2)
    assert.tensor_near(want, a:row(2), 1e-12)
  end)

  it("empty tensors: sum 0, max is an error", function()
    local e = nm.zeros(0, 3)
    assert.equal(0, e:sum())
    assert.same({ 0, 0, 0 }, e:sum(1):totable())
    assert_has(error_of(function() return e:max() end), "max of an empty tensor")
    assert_has(error_of(function() return e:max(1) end), "max of an empty tensor")
  end)
end)

describe("softmax", function()
  local function ref_softmax(t, log)
    local shape = shape_of(t)
    if #shape == 1 then shape = { 1, shape[1] } end
    local rows = {}
    for i = 1, shape[1] do
      local xs = {}
      for j = 1, shape[2] do xs[j] = t:dim() == 1 and t:get(j) or t:get(i, j) end
      local m = -inf
      for _, x in ipairs(xs) do m = math.max(m, x) end
      local s = 0
      for _, x in ipairs(xs) do s = s + math.exp(x - m) end
      rows[i] = {}
      for j, x in ipairs(xs) do
        rows[i][j] = log and (x - m - math.log(s)) or math.exp(x - m) / s
      end
    end
    return t:dim() == 1 and rows[1] or rows
  end

  for _, dt in ipairs(DTYPES) do
    it("softmax and logsoftmax of rows, all layouts, " .. dt, function()
      local gen = lcg(37)
      for _, shape in ipairs { { 4, 6 }, { 1, 5 }, { 9 } } do
        local ks = kinds(shape)
        for i = 1, #ks do
          local a = random(shape, dt, ks[i], gen, -5, 5)
          for _, name in ipairs { "softmax", "logsoftmax" } do
            local want = ref_softmax(a, name == "logsoftmax")
            local r = make(shape, dt, ks[i % #ks + 1])
            assert.equal(r, r[name](r, a))
            assert.tensor_near(want, r, TOL[dt] * 5)
            assert.tensor_near(want, a:clone()[name](a:clone()), TOL[dt] * 5)
          end
          local s = a:clone():softmax()
          if #shape == 1 then
            assert.near(1, s:sum(), TOL[dt] * 5)
          else
            assert.tensor_near(nm.ones(shape[1], dt), s:sum(2), TOL[dt] * 5)
          end
        end
      end
    end)

    it("is stable for large inputs, " .. dt, function()
      local a = nm.tensor({ { 1000, 1001, 1002 }, { -1000, -1000, -1000 }, { 1e30, 0, -1e30 } }, dt)
      local s = a:clone():softmax()
      local e = math.exp(1)
      local d = 1 + e + e * e
      assert.tensor_near({ { 1 / d, e / d, e * e / d }, { 1 / 3, 1 / 3, 1 / 3 }, { 1, 0, 0 } }, s,
                         TOL[dt] * 5)
      local l = a:clone():logsoftmax()
      assert.near(-math.log(d), l:get(1, 1), TOL[dt] * 100)
      assert.near(-math.log(3), l:get(2, 2), TOL[dt] * 100)
      assert.equal(0, l:get(3, 1))
    end)

    -- issue 18: m + log(sum) rounded log(sum) away before the subtraction
    it("logsoftmax is exact for rows with a large maximum, " .. dt, function()
      local function as_dt(v) return nm.tensor({ v }, dt):get(1) end
      for _, big in ipairs { 1e4, -1e4, 3e5, 1e30 } do
        local l = nm.zeros(2, dt):logsoftmax(nm.tensor({ big, big }, dt))
        assert.equal(as_dt(-math.log(2)), l:get(1))
        assert.equal(as_dt(-math.log(2)), l:get(2))
        -- x - m is exact here (Sterbenz), so the result is one rounding of
        -- the closed form: -log(1 + e) and -1 - log(1 + e^-1)
        local r = nm.zeros(2, 2, dt):logsoftmax(nm.tensor({ { big, big + 1 }, { big, big } }, dt))
        if as_dt(big + 1) - as_dt(big) == 1 then
          assert.near(-math.log(1 + math.exp(1)), r:get(1, 1), TOL[dt])
          assert.near(-math.log(1 + math.exp(-1)), r:get(1, 2), TOL[dt])
        end
        assert.equal(as_dt(-math.log(2)), r:get(2, 1))
      end
    end)
  end

  it("in place through a transposed view of itself", function()
    local gen = lcg(41)
    local a = random({ 4, 4 }, "float64", "contig", gen)
    local want = ref_softmax(a:t():clone())
    a:softmax(a:t())
    assert.tensor_near(want, a, 1e-12)
  end)
end)

-- ------------------------------------------------------------------------

local function ref_gemm(alpha, A, B, beta, C0)
  local m, k, n = A:size(1), A:size(2), B:size(2)
  return build({ m, n }, function(idx)
    local i, j = idx[1], idx[2]
    local s = 0
    for l = 1, k do s = s + A:get(i, l) * B:get(l, j) end
    return alpha * s + (beta ~= 0 and beta * C0[i][j] or 0)
  end)
end

describe("matrix products", function()
  local LAYOUTS = { "contig", "transposed", "narrow", "strided" }
  for _, dt in ipairs(DTYPES) do
    it("mm and addmm vs a naive triple loop, random sizes and all layouts, " .. dt, function()
      local gen = lcg(43)
      local count = 0
      for trial = 1, 48 do
        local m = math.floor(gen(1, 9.99))
        local k = math.floor(gen(1, 9.99))
        local n = math.floor(gen(1, 9.99))
        if trial <= 3 then m, k, n = ({ 1, 37, 64 })[trial], ({ 7, 1, 70 })[trial], ({ 1, 45, 33 })[trial] end
        local ka = LAYOUTS[trial % 4 + 1]
        local kb = LAYOUTS[(trial // 4) % 4 + 1]
        local kc = LAYOUTS[(trial // 16) % 4 + 1]
        local A = random({ m, k }, dt, ka, gen)
        local B = random({ k, n }, dt, kb, gen)
        local C = random({ m, n }, dt, kc, gen)
        local C0 = snapshot(C)
        local alpha, beta = gen(-2, 2), (trial % 3 == 0) and 0 or gen(-2, 2)
        local tol = (dt == "float32" and 1e-5 or 1e-13) * (k + 2) * 8
        assert.equal(C, C:addmm(alpha, A, B, beta))
        assert.tensor_near(ref_gemm(alpha, A, B, beta, C0), C, tol,
                           ("%s %dx%dx%d %s %s %s"):format(dt, m, k, n, ka, kb, kc))
        C:mm(A, B)
        assert.tensor_near(ref_gemm(1, A, B, 0, C0), C, tol)
        count = count + 1
      end
      assert.equal(48, count)
    end)

    it("addmm defaults: alpha and beta 1; beta 0 ignores NaN in C, " .. dt, function()
      local gen = lcg(47)
      local A, B = random({ 3, 4 }, dt, "contig", gen), random({ 4, 2 }, dt, "transposed", gen)
      local C = random({ 3, 2 }, dt, "contig", gen)
      local C0 = snapshot(C)
      C:addmm(A, B)
      assert.tensor_near(ref_gemm(1, A, B, 1, C0), C, 1e-4)
      C:fill(nan)
      C:mm(A, B)
      assert.tensor_near(ref_gemm(1, A, B, 0, C0), C, 1e-4)
      -- inner size 0: C = beta C
      local E = nm.ones(3, 2, dt)
      E:addmm(1, nm.zeros(3, 0, dt), nm.zeros(0, 2, dt), 0.5)
      assert.tensor_near(nm.full(0.5, 3, 2, dt), E, 0)
    end)

    it("mm with the result aliasing an input, " .. dt, function()
      local gen = lcg(53)
      local tol = dt == "float32" and 1e-4 or 1e-12
      local C = random({ 5, 5 }, dt, "contig", gen)
      local B = random({ 5, 5 }, dt, "contig", gen)
      local want = ref_gemm(1, C:clone(), B, 0, snapshot(C))
      C:mm(C, B)
      assert.tensor_near(want, C, tol)
      want = ref_gemm(1, B, C:clone(), 0, snapshot(C))
      C:mm(B, C)
      assert.tensor_near(want, C, tol)
      local C0 = snapshot(C)
      want = ref_gemm(2, C:t():clone(), C:clone(), 0.5, C0)
      C:addmm(2, C:t(), C, 0.5)
      assert.tensor_near(want, C, tol * 10)
    end)

    it("mv and addmv, all layouts, " .. dt, function()
      local gen = lcg(59)
      for trial = 1, 16 do
        local m, n = math.floor(gen(1, 12.99)), math.floor(gen(1, 12.99))
        local A = random({ m, n }, dt, LAYOUTS[trial % 4 + 1], gen)
        local x = random({ n }, dt, trial % 2 == 0 and "strided" or "contig", gen)
        local y = random({ m }, dt, trial % 3 == 0 and "narrow" or "strided", gen)
        local y0 = snapshot(y)
        local alpha, beta = gen(-2, 2), gen(-2, 2)
        local want = build({ m }, function(idx)
          local s = 0
          for j = 1, n do s = s + A:get(idx[1], j) * x:get(j) end
          return alpha * s + beta * y0[idx[1]]
        end)
        local tol = (dt == "float32" and 1e-5 or 1e-13) * (n + 2) * 8
        assert.equal(y, y:addmv(alpha, A, x, beta))
        assert.tensor_near(want, y, tol)
        y:mv(A, x)
        local want0 = build({ m }, function(idx)
          local s = 0
          for j = 1, n do s = s + A:get(idx[1], j) * x:get(j) end
          return s
        end)
        assert.tensor_near(want0, y, tol)
        assert.tensor_near(want0, nm.mv(A, x), tol)
        assert.tensor_near(want0, A * x, tol)
      end
      -- y is a column of A
      local A = random({ 4, 4 }, dt, "contig", gen)
      local x = random({ 4 }, dt, "contig", gen)
      local want = ref_gemm(1, A:clone(), x:view(4, 1), 0, {})
      A:col(1):mv(A, x)
      assert.tensor_near({ want[1][1], want[2][1], want[3][1], want[4][1] }, A:col(1),
                         dt == "float32" and 1e-5 or 1e-13)
    end)

    it("addr (Hebbian outer product) and nm.outer, all layouts, " .. dt, function()
      local gen = lcg(61)
      for trial = 1, 16 do
        local m, n = math.floor(gen(1, 9.99)), math.floor(gen(1, 9.99))
        local W = random({ m, n }, dt, LAYOUTS[trial % 4 + 1], gen)
        local x = random({ m }, dt, trial % 2 == 0 and "strided" or "contig", gen)
        local y = random({ n }, dt, trial % 3 == 0 and "narrow" or "strided", gen)
        local W0 = snapshot(W)
        local eta = gen(-1, 1)
        local want = build({ m, n }, function(idx)
          return W0[idx[1]][idx[2]] + eta * x:get(idx[1]) * y:get(idx[2])
        end)
        assert.equal(W, W:addr(eta, x, y))
        assert.tensor_near(want, W, TOL[dt] * 8)
        local W1 = snapshot(W)
        W:addr(x, y)
        assert.tensor_near(build({ m, n }, function(idx)
          return W1[idx[1]][idx[2]] + x:get(idx[1]) * y:get(idx[2])
        end), W, TOL[dt] * 8)
        assert.tensor_near(build({ m, n }, function(idx)
          return x:get(idx[1]) * y:get(idx[2])
        end), nm.outer(x, y), TOL[dt])
      end
      local big = nm.zeros(200, 150, dt)      -- a size where BLAS threads
      local x, y = random({ 200 }, dt, "contig", gen), random({ 150 }, dt, "contig", gen)
      big:t():addr(2, y, x)
      assert.near(2 * x:get(17) * y:get(101), big:get(17, 101), TOL[dt] * 8)
    end)

    it("addr_masked leaves masked weights exactly unchanged, " .. dt, function()
      local gen = lcg(67)
      for trial = 1, 8 do
        local m, n = math.floor(gen(1, 9.99)), math.floor(gen(1, 9.99))
        local W = random({ m, n }, dt, LAYOUTS[trial % 4 + 1], gen)
        local mask = random({ m, n }, dt, LAYOUTS[(trial + 1) % 4 + 1], gen):gt(0)
        local x = random({ m }, dt, "strided", gen)
        local y = random({ n }, dt, "contig", gen)
        if trial == 1 then x:set(1, inf) end       -- inf * 0 must not reach W
        local W0 = snapshot(W)
        local want = build({ m, n }, function(idx)
          local i, j = idx[1], idx[2]
          if mask:get(i, j) == 0 then return W0[i][j] end
          return W0[i][j] + 0.3 * x:get(i) * y:get(j)
        end)
        assert.equal(W, W:addr_masked(0.3, x, y, mask))
        assert.tensor_near(want, W, TOL[dt] * 8)
        for _, idx in ipairs(positions({ m, n })) do
          if get(mask, idx) == 0 then assert.equal(W0[idx[1]][idx[2]], get(W, idx)) end
        end
      end
    end)

    it("dot of vectors and of same-shaped tensors, " .. dt, function()
      local gen = lcg(71)
      for _, shape in ipairs { { 7 }, { 100 }, { 3, 5 } } do
        local ks = kinds(shape)
        for i = 1, #ks do
          local x = random(shape, dt, ks[i], gen)
          local y = random(shape, dt, ks[i % #ks + 1], gen)
          local s = 0
          for _, idx in ipairs(positions(shape)) do s = s + get(x, idx) * get(y, idx) end
          assert.near(s, x:dot(y), 1e-10)       -- accumulated in double for both
          assert.near(s, nm.dot(x, y), 1e-10)
          if #shape == 1 then assert.near(s, x * y, 1e-10) end
        end
      end
    end)
  end

  -- nm_matvec.h's order of every rounding, replayed in Lua: each product
  -- and sum rounded to the type (string.pack "f" for float32), so the
  -- kernels must give these bits exactly, whatever vector width runs.
  for _, dt in ipairs(DTYPES) do
    local r = dt == "float32" and function(v) return (string.unpack("f", string.pack("f", v))) end
              or function(v) return v end
    local function ref_dot(A, i, x, n)         -- row i of A with x, 16 lanes
      local s = {}
      for k = 0, 15 do s[k] = 0 end
      local nb = n // 16 * 16
      for j = 0, nb - 1 do
        local k = j % 16
        s[k] = r(s[k] + r(A:get(i, j + 1) * x:get(j + 1)))
      end
      for _, h in ipairs{8, 4, 2, 1} do
        for k = 0, h - 1 do s[k] = r(s[k] + s[k + h]) end
      end
      local v = s[0]
      for j = nb, n - 1 do v = r(v + r(A:get(i, j + 1) * x:get(j + 1))) end
      return v
    end
    local function finish(v, alpha, beta, y0)
      local o = alpha == 1 and v or r(r(alpha) * v)
      return beta == 0 and o or r(o + r(r(beta) * y0))
    end

    it("matrix-vector products and rank-1 updates follow nm_matvec.h's order bit for bit, " .. dt,
       function()
      local gen = lcg(79)
      for trial, sh in ipairs{{1, 1}, {3, 15}, {5, 16}, {7, 17}, {9, 33}, {4, 47}, {70, 100},
                              {6, 130}, {67, 3}, {130, 70}} do
        local m, n = sh[1], sh[2]
        local A = random({ m, n }, dt, "contig", gen)
        local x, y = random({ n }, dt, "contig", gen), random({ m }, dt, "contig", gen)
        local alpha, beta = trial % 2 == 0 and 1 or r(gen(-2, 2)), trial % 3 == 0 and 0 or r(gen(-2, 2))
        local y0 = y:clone()
        y:addmv(alpha, A, x, beta)
        for i = 1, m do
          assert.equal(finish(ref_dot(A, i, x, n), alpha, beta, y0:get(i)), y:get(i),
                       ("mv %dx%d row %d"):format(m, n, i))
        end
        -- the transposed product: the rows of A in order, for each column
        local z = random({ n }, dt, "contig", gen)
        local z0 = z:clone()
        z:addmv(alpha, A:t(), y0, beta)
        for j = 1, n do
          local v = 0
          for i = 1, m do v = r(v + r(A:get(i, j) * y0:get(i))) end
          assert.equal(finish(v, alpha, beta, z0:get(j)), z:get(j), ("mvt %dx%d col %d"):format(m, n, j))
        end
        -- rank-1: c_i = alpha x_i rounded, then a_ij + c_i u_j
        local W0 = A:clone()
        A:addr(alpha, y0, x)
        for i = 1, m do
          local c = r(r(alpha) * y0:get(i))
          for j = 1, n do
            assert.equal(r(W0:get(i, j) + r(c * x:get(j))), A:get(i, j),
                         ("addr %dx%d (%d, %d)"):format(m, n, i, j))
          end
        end
      end
    end)
  end

  it("large transposed products agree with the naive loop", function()
    local gen = lcg(73)
    local A = random({ 70, 90 }, "float64", "transposed", gen)
    local B = random({ 90, 65 }, "float64", "narrow", gen)
    local C = nm.zeros(65, 70, "float64"):t()
    C:mm(A, B)
    local want = ref_gemm(1, A, B, 0, {})
    assert.tensor_near(want, C, 1e-11)
  end)
end)

describe("operators", function()
  for _, dt in ipairs(DTYPES) do
    it("+ - * / and unary minus allocate new tensors, " .. dt, function()
      local gen = lcg(79)
      local a = random({ 3, 4 }, dt, "transposed", gen)
      local b = random({ 3, 4 }, dt, "narrow", gen, 0.5, 2)
      local a0 = snapshot(a)
      local function check(want, got)
        assert.equal(dt, got:dtype())
        assert.is_true(got ~= a and got ~= b)
        assert.tensor_near(want, got, TOL[dt] * 4)
      end
      check(ref_map({ 3, 4 }, function(x, y) return x + y end, a, b), a + b)
      check(ref_map({ 3, 4 }, function(x, y) return x - y end, a, b), a - b)
      check(ref_map({ 3, 4 }, function(x) return x + 2 end, a), a + 2)
      check(ref_map({ 3, 4 }, function(x) return 2 + x end, a), 2 + a)
      check(ref_map({ 3, 4 }, function(x) return 2 - x end, a), 2 - a)
      check(ref_map({ 3, 4 }, function(x) return x - 2 end, a), a - 2)
      check(ref_map({ 3, 4 }, function(x) return x * 3 end, a), a * 3)
      check(ref_map({ 3, 4 }, function(x) return 3 * x end, a), 3 * a)
      check(ref_map({ 3, 4 }, function(x) return x / 4 end, a), a / 4)
      check(ref_map({ 3, 4 }, function(y) return 1 / y end, b), 1 / b)
      check(ref_map({ 3, 4 }, function(x) return -x end, a), -a)
      assert.same(a0, snapshot(a))
      local B = random({ 4, 2 }, dt, "contig", gen)
      local P = a * B
      assert.same({ 3, 2 }, shape_of(P))
      assert.tensor_near(ref_gemm(1, a, B, 0, {}), P, 1e-4)
    end)
  end
end)

-- ------------------------------------------------------------------------

describe("errors", function()
  local f32, f64 = nm.zeros(3, 4), nm.zeros(3, 4, "float64")

  it("name the shapes of a size mismatch", function()
    local msg = error_of(function() return nm.zeros(3, 2):mm(nm.zeros(3, 4), nm.zeros(5, 2)) end)
    assert_has(msg, "bad argument #2 to 'mm'", "size mismatch, [3 x 4] vs [5 x 2]")
    assert_has(error_of(function() return nm.zeros(3, 4) * nm.zeros(5, 2) end),
               "size mismatch, [3 x 4] vs [5 x 2]")
    assert_has(error_of(function() return nm.mm(nm.zeros(3, 4), nm.zeros(5, 2)) end),
               "size mismatch, [3 x 4] vs [5 x 2]")
    assert_has(error_of(function() return nm.zeros(2, 2):mm(nm.zeros(3, 4), nm.zeros(4, 5)) end),
               "[2 x 2] vs [3 x 5]")
    assert_has(error_of(function() return f32:add(nm.zeros(4, 3)) end),
               "size mismatch, [3 x 4] vs [4 x 3]")
    assert_has(error_of(function() return f32 + nm.zeros(5) end), "[3 x 4] vs [5]")
    assert_has(error_of(function() return nm.zeros(2, 2):add(f32, f32) end), "[2 x 2] vs [3 x 4]")
    assert_has(error_of(function() return nm.zeros(3):mv(f32, nm.zeros(5)) end), "[3 x 4] vs [5]")
    assert_has(error_of(function() return f32:addr(1, nm.zeros(3), nm.zeros(5)) end),
               "size mismatch, [3 x 4] vs [3] x [5]")
    assert_has(error_of(function() return f32:addr_masked(1, nm.zeros(3), nm.zeros(4), nm.zeros(4, 3)) end),
               "[3 x 4] vs [4 x 3]")
    assert_has(error_of(function() return nm.zeros(3):dot(nm.zeros(4)) end), "[3] vs [4]")
    assert_has(error_of(function() return f32:gt(nm.zeros(2)) end), "[3 x 4] vs [2]")
    assert_has(error_of(function() return f32:maskedfill(nm.zeros(4), 1) end), "[3 x 4] vs [4]")
    assert_has(error_of(function() return nm.zeros(5):sum(f32, 2) end), "[5] vs [3]")
    assert_has(error_of(function() return nm.zeros(3):exp(f32) end), "[3] vs [3 x 4]")
  end)

  it("name the dtypes of a mismatch", function()
    assert_has(error_of(function() return f32:add(f64) end), "dtype mismatch, float32 vs float64")
    assert_has(error_of(function() return f32 + f64 end), "float32 vs float64")
    assert_has(error_of(function() return nm.zeros(3, 3):mm(f32, f64:t()) end), "float32 vs float64")
    assert_has(error_of(function() return nm.zeros(4):axpy(1, nm.zeros(4, "float64")) end),
               "float32 vs float64")
    assert_has(error_of(function() return f32:dot(f64) end), "float32 vs float64")
    assert_has(error_of(function() return nm.zeros(3):max(nm.zeros(3), f32, 2) end),
               "indices must be float64")
    assert_has(error_of(function() return nm.zeros(3, "float64"):sum(f32, 2) end),
               "float64 vs float32")
  end)

  it("reject wrong types, dimensions and parameters", function()
    assert_has(error_of(function() return f32:add("x") end), "tensor or number expected")
    assert_has(error_of(function() return f32:add({}) end), "tensor or number expected")
    assert_has(error_of(function() return f32:exp(3) end), "tensor expected")
    assert_has(error_of(function() return f32:axpy(f32, f32) end), "number expected")
    assert_has(error_of(function() return nm.zeros(3):mm(nm.zeros(3), nm.zeros(3)) end),
               "2-D tensor expected, got [3]")
    assert_has(error_of(function() return nm.zeros(3):mv(nm.zeros(3), nm.zeros(3)) end),
               "2-D tensor expected, got [3]")
    assert_has(error_of(function() return nm.zeros(3) * nm.zeros(3, 3) end), "[3] vs [3 x 3]")
    assert_has(error_of(function() return f32 / f32 end), "number expected")
    assert_has(error_of(function() return f32:sum(3) end), "dimension 3 out of range")
    assert_has(error_of(function() return f32:max(0) end), "dimension 0 out of range")
    assert_has(error_of(function() return f32:norm(-1) end), "p must be >= 0")
    assert_has(error_of(function() return f32:clamp(1, 0) end), "lo must not exceed hi")
    assert_has(error_of(function() return f32:softplus(0) end), "beta must be positive")
    assert_has(error_of(function() return f32:dsoftplus(-1) end), "beta must be positive")
    assert_has(error_of(function() return f32:pow() end), "number expected")
    assert_has(error_of(function() return nm.zeros(2, 2, 2):softmax() end),
               "1-D or 2-D tensor expected, got [2 x 2 x 2]")
    assert_has(error_of(function() return nm.zeros(3):max(3) end), "out of range")
    local closed = nm.zeros(3)
    closed:close()
    assert_has(error_of(function() return closed:add(1) end), "closed")
    assert_has(error_of(function() return nm.zeros(3):add(closed) end), "closed")
  end)
end)
