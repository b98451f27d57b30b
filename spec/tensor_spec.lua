-- Tensor basics: construction, views, access, copy, printing, memory.
local nm = require "neuromic"

local function naive_table(rows, cols, f)
  local t = {}
  for i = 1, rows do
    t[i] = {}
    for j = 1, cols do t[i][j] = f(i, j) end
  end
  return t
end

describe("tensor construction", function()
  it("zeros/ones/full/eye have the right values and dtype", function()
    local z = nm.zeros(2, 3)
    assert.equal("float32", z:dtype())
    assert.same({2, 3}, z:size())
    assert.same({{0, 0, 0}, {0, 0, 0}}, z:totable())
    assert.same({{1, 1}, {1, 1}}, nm.ones(2, 2, "float64"):totable())
    assert.equal("float64", nm.ones({2, 2}, "float64"):dtype())
    assert.same({2.5, 2.5, 2.5}, nm.full(2.5, 3):totable())
    assert.same({{1, 0, 0}, {0, 1, 0}}, nm.eye(2, 3):totable())
    assert.same({1, 3, 5}, nm.range(1, 5, 2):totable())
  end)

  it("builds from nested tables and rejects ragged ones", function()
    local t = nm.tensor({{1, 2}, {3, 4}, {5, 6}}, "float64")
    assert.same({3, 2}, t:size())
    assert.equal(6, t:get(3, 2))
    assert.has_error(function() nm.tensor{{1, 2}, {3}} end)
    assert.has_error(function() nm.tensor{{1, "x"}} end)
  end)

  it("rejects bad sizes and dtypes", function()
    assert.has_error(function() nm.zeros(-1) end)
    assert.has_error(function() nm.zeros(1, 2, 3, 4, 5) end)
    assert.has_error(function() nm.zeros(2, "float16") end)
  end)

  it("float32 rounds, float64 keeps the value", function()
    local v = 0.1
    assert.equal(v, nm.full(v, 1, "float64"):get(1))
    assert.not_equal(v, nm.full(v, 1):get(1))
    assert.is_true(math.abs(nm.full(v, 1):get(1) - v) < 1e-8)
  end)
end)

describe("tensor access", function()
  it("get/set are 1-based and range-checked", function()
    local t = nm.zeros(2, 3)
    t:set(2, 3, 7)
    assert.equal(7, t:get(2, 3))
    assert.has_error(function() t:get(3, 1) end, nil)
    local ok, msg = pcall(t.get, t, 3, 1)
    assert.is_false(ok)
    assert.truthy(msg:find("out of range", 1, true))
    assert.truthy(msg:find("[2 x 3]", 1, true))
    assert.has_error(function() t:get(1) end)
    assert.has_error(function() t:set(0, 1, 1) end)
    assert.equal(2, #t)
    assert.equal(6, t:numel())
  end)

  it("rejects non-tensors with a type error", function()
    local ok, msg = pcall(nm.Tensor.get, {}, 1)
    assert.is_false(ok)
    assert.truthy(msg:find("neuromic.Tensor expected", 1, true))
  end)
end)

describe("views", function()
  local ref = naive_table(4, 5, function(i, j) return 10 * i + j end)

  it("narrow, select, row, col and t share storage", function()
    local a = nm.tensor(ref)
    local n = a:narrow(2, 2, 3)
    assert.same({4, 3}, n:size())
    for i = 1, 4 do for j = 1, 3 do assert.equal(ref[i][j + 1], n:get(i, j)) end end
    n:set(1, 1, -1)
    assert.equal(-1, a:get(1, 2))
    assert.same({41, 42, 43, 44, 45}, a:row(4):totable())
    assert.same({13, 23, 33, 43}, a:col(3):totable())
    assert.same(a:select(1, 2):totable(), a:row(2):totable())
    local at = a:t()
    assert.same({5, 4}, at:size())
    for i = 1, 4 do for j = 1, 5 do assert.equal(a:get(i, j), at:get(j, i)) end end
    assert.is_false(at:is_contiguous())
    assert.is_true(at:contiguous():is_contiguous())
  end)

  it("range-checks views", function()
    local a = nm.tensor(ref)
    assert.has_error(function() a:narrow(2, 4, 3) end)
    assert.has_error(function() a:narrow(3, 1, 1) end)
    assert.has_error(function() a:row(5) end)
    assert.has_error(function() nm.zeros(3):t() end)
  end)

  it("view and reshape keep row-major order", function()
    local a = nm.tensor(ref)
    local v = a:view(20)
    assert.equal(ref[2][1], v:get(6))
    assert.has_error(function() a:view(3, 7) end)
    assert.has_error(function() a:t():view(20) end)
    local r = a:t():reshape(20)
    assert.equal(ref[1][2], r:get(5))
  end)

  it("a view keeps its parent's storage alive", function()
    local v
    do
      local a = nm.tensor(ref)
      v = a:narrow(1, 3, 1)
    end
    collectgarbage(); collectgarbage()
    assert.same({{31, 32, 33, 34, 35}}, v:totable())
  end)
end)

describe("copy, clone, cast, bytes", function()
  it("copy between strided views and dtypes", function()
    local a = nm.tensor({{1, 2, 3}, {4, 5, 6}}, "float64")
    local b = nm.zeros(3, 2)
    b:copy(a:t())
    assert.same({{1, 4}, {2, 5}, {3, 6}}, b:totable())
    local c = nm.zeros(6)
    c:copy(a)
    assert.same({1, 2, 3, 4, 5, 6}, c:totable())
    assert.has_error(function() nm.zeros(5):copy(a) end)
  end)

  it("clone is independent, cast changes dtype", function()
    local a = nm.tensor{1, 2, 3}
    local c = a:clone()
    c:set(1, 9)
    assert.equal(1, a:get(1))
    assert.equal("float64", a:double():dtype())
    assert.same({1, 2, 3}, a:double():totable())
  end)

  it("tobytes/frombytes round trip bit for bit", function()
    local a = nm.tensor({{0.1, -2.5e-30}, {1e30, 3}}, "float64")
    local b = nm.frombytes(a:tobytes(), "float64", 2, 2)
    assert.same(a:totable(), b:totable())
    assert.has_error(function() nm.frombytes("abc", "float32", 1) end)
  end)

  it("fill and zero work on views", function()
    local a = nm.zeros(3, 3)
    a:col(2):fill(4)
    assert.same({{0, 4, 0}, {0, 4, 0}, {0, 4, 0}}, a:totable())
    a:zero()
    assert.same({0, 0, 0}, a:row(1):totable())
  end)
end)

describe("printing and lifetime", function()
  it("tostring shows values and a footer", function()
    local s = tostring(nm.tensor{{1, 2}, {3, 4}})
    assert.truthy(s:find("[neuromic.FloatTensor of size 2x2]", 1, true))
    assert.truthy(s:find("4", 1, true))
    assert.truthy(tostring(nm.zeros(2, "float64")):find("DoubleTensor of size 2", 1, true))
    local big = tostring(nm.zeros(100, 100))
    assert.truthy(#big < 5000)
  end)

  -- The body of tostring(t) without the footer.
  local function body(t) return (tostring(t):gsub("\n%[neuromic%.%a+ of size [^%]]*%]$", "")) end

  it("separates every value, so negative numbers never run together", function()
    -- regression: this printed "-0.7681-0.0004659"
    assert.equal(" -0.7681 -0.0005", body(nm.tensor{-0.7681, -0.0004659}))
    assert.equal("   1   2\n   3 -40", body(nm.tensor{{1, 2}, {3, -40}}))
  end)

  it("aligns the columns of one format for the whole tensor", function()
    assert.equal("  0.5000  2.2500\n -3.1250 10.0000", body(nm.tensor{{0.5, 2.25}, {-3.125, 10}}))
    assert.equal(" 0", body(nm.tensor{-0.0}))      -- no "-0"
  end)

  it("puts a shared scale factor above values far from 1, and uses e-notation across decades", function()
    assert.equal("1e-05 *\n  1.0000  2.0000\n  3.5000 -1.0000",
                 body(nm.tensor({{1e-5, 2e-5}, {3.5e-5, -1e-5}}, "float64")))
    assert.equal("1e+03 *\n 1.2345 2.0000", body(nm.tensor({1234.5, 2000}, "float64")))
    assert.equal(" 1.0000e-08 1.0000e+00", body(nm.tensor({1e-8, 1}, "float64")))
  end)

  it("prints nan (never -nan) and signed infinities", function()
    local t = nm.tensor{0, 1, 2}
    t:set(1, 0 / 0)
    t:set(2, -(0 / 0))
    t:set(3, -1 / 0)
    assert.equal("  nan  nan -inf", body(t))
  end)

  it("elides long rows, columns and blocks and gives the size", function()
    local s = tostring(nm.range(1, 20))
    assert.equal("  1  2  3  4  5  6 ... 15 16 17 18 19 20\n[neuromic.FloatTensor of size 20]", s)
    s = tostring(nm.zeros(30, 4))
    local lines = select(2, s:gsub("\n", ""))
    assert.equal(13 + 1 - 1, lines)            -- 12 rows, "...", then the footer line
    s = tostring(nm.zeros(10, 2, 2))
    assert.truthy(s:find("(3,.,.)", 1, true) and s:find("(8,.,.)", 1, true))
    assert.falsy(s:find("(5,.,.)", 1, true))
    assert.truthy(s:find("[neuromic.FloatTensor of size 10x2x2]", 1, true))
  end)

  it("t[i] is a row view (an element of a 1-D tensor), t[i] = x assigns", function()
    local A = nm.tensor{{1, 2}, {3, 4}}
    assert.same({1, 2}, A[1]:totable())
    assert.equal(3, A[2][1])
    A[1][2] = 5                                  -- a view: writes A
    assert.equal(5, A:get(1, 2))
    A[1] = 7                                     -- a number fills the row
    A[2] = nm.tensor{8, 9}                       -- a tensor is copied in
    assert.same({{7, 7}, {8, 9}}, A:totable())
    local B = nm.zeros(2, 3, 4)
    B[2][3][4] = 1
    assert.equal(1, B:get(2, 3, 4))
    assert.same({3, 4}, B[1]:size())
    assert.equal(A:numel(), 4)                   -- methods still found
    assert.is_nil(A.no_such_method)
  end)

  it("t[i] out of range, not an integer, or a field set is an error naming the shape", function()
    local A = nm.tensor{{1, 2}, {3, 4}}
    assert.has_error(function() return A[3] end, "index: index 3 out of range for dimension 1 of [2 x 2]")
    assert.has_error(function() return A[0] end, "index: index 0 out of range for dimension 1 of [2 x 2]")
    assert.has_error(function() return A[1.5] end, "index: index 1.5 is not an integer")
    assert.has_error(function() A[3] = 1 end, "newindex: index 3 out of range for dimension 1 of [2 x 2]")
    assert.has_error(function() A[1] = nm.zeros(3) end)
    assert.has_error(function() A[1] = "x" end, "newindex: t[1] = x needs a number or a tensor, got string")
    assert.has_error(function() A.x = 1 end, "cannot set field 'x' of a tensor (only t[i] = x)")
  end)

  it("close releases and makes the tensor unusable", function()
    local t = nm.ones(3)
    do local c <close> = t end
    assert.is_true(t:is_closed())
    assert.has_error(function() t:get(1) end)
    assert.truthy(tostring(t):find("closed", 1, true))
  end)

  it("the collector sees tensor memory: 10^6 temporaries run in flat memory", function()
    local function rss_kib()
      local f = assert(io.open("/proc/self/statm"))
      local _, resident = f:read("n", "n")
      f:close()
      return resident * 4
    end
    collectgarbage()
    local before = rss_kib()
    -- The collector lets the heap grow to about twice the live data before a
    -- cycle (other specs may have left data sets cached), so allow that.
    local live_kib = collectgarbage("count")
    for _ = 1, 1000000 do local _ = nm.zeros(1024) end
    -- 10^6 x 4 KiB would be 4 GB if the collector could not see the storage.
    -- AddressSanitizer holds up to 256 MB of freed memory in quarantine.
    local limit = (os.getenv("ASAN_OPTIONS") and 512 or 64) * 1024 + 2 * live_kib
    assert.truthy(rss_kib() - before < limit)
  end)
end)
