-- Random generators: known values of splitmix64 and xoshiro256**, a naive
-- Lua 5.4 reference of every draw, distribution moments (fixed seeds, so
-- nothing can flake), permutations and samples, state round trips, fills.
local nm = require "neuromic"

-- Reference implementation on Lua 5.4's wrapping 64-bit integers (>> is a
-- logical shift, * and + wrap), independent of the C code.
local ref = {}

function ref.splitmix64(x)
  x = x + 0x9e3779b97f4a7c15
  local z = x
  z = (z ~ (z >> 30)) * 0xbf58476d1ce4e5b9
  z = (z ~ (z >> 27)) * 0x94d049bb133111eb
  return x, z ~ (z >> 31)
end

local function rotl(x, k) return (x << k) | (x >> (64 - k)) end

function ref.new(seed)
  local s, x = {}, seed
  for i = 1, 4 do x, s[i] = ref.splitmix64(x) end
  return {s = s}
end

function ref.next(r)
  local s = r.s
  local result = rotl(s[2] * 5, 7) * 9
  local t = s[2] << 17
  s[3] = s[3] ~ s[1]
  s[4] = s[4] ~ s[2]
  s[2] = s[2] ~ s[3]
  s[1] = s[1] ~ s[4]
  s[3] = s[3] ~ t
  s[4] = rotl(s[4], 45)
  return result
end

function ref.uniform(r) return (ref.next(r) >> 11) * 2.0^-53 end

-- 128-bit product of two unsigned 64-bit integers, from 32-bit halves.
local function mul_hi_lo(a, b)
  local mask = 0xffffffff
  local a_lo, a_hi, b_lo, b_hi = a & mask, a >> 32, b & mask, b >> 32
  local ll, lh, hl, hh = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
  local mid = (ll >> 32) + (lh & mask) + (hl & mask)
  return hh + (lh >> 32) + (hl >> 32) + (mid >> 32), (mid << 32) | (ll & mask)
end

-- a mod n for unsigned 64-bit a and n (Lua's % is signed).
local function umod(a, n)
  if n < 0 then return math.ult(a, n) and a or a - n end
  if a >= 0 then return a % n end
  local r = a - (((a >> 1) // n) << 1) * n
  while not math.ult(r, n) do r = r - n end
  return r
end

-- Lemire's unbiased integer in [0, n) (unsigned n).
function ref.below(r, n)
  local hi, lo = mul_hi_lo(ref.next(r), n)
  if math.ult(lo, n) then
    local threshold = umod(-n, n) -- 2^64 mod n
    while math.ult(lo, threshold) do hi, lo = mul_hi_lo(ref.next(r), n) end
  end
  return hi
end

function ref.normal(r)
  if r.cached then
    local v = r.cached
    r.cached = nil
    return v
  end
  local u, v, s
  repeat
    u = 2 * ref.uniform(r) - 1
    v = 2 * ref.uniform(r) - 1
    s = u * u + v * v
  until s < 1 and s ~= 0
  local f = math.sqrt(-2 * math.log(s) / s)
  r.cached = v * f
  return u * f
end

local function hex_state(s, normal)
  return string.format("xoshiro256** %016x %016x %016x %016x %s", s[1], s[2], s[3], s[4],
                       normal or "-")
end

local function errmsg(f, ...)
  local ok, msg = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(msg)
end

describe("splitmix64 seeding", function()
  it("the Lua reference reproduces published splitmix64 outputs", function()
    -- First outputs for seed 1234567 (Vigna's splitmix64.c, as used by the
    -- test suites of several xoshiro ports).
    local x, out = 1234567, {}
    for i = 1, 5 do x, out[i] = ref.splitmix64(x) end
    assert.same({6457827717110365317, 3203168211198807973, -8629252141511181193,
                 4593380528125082431, -2037821214251327795}, out)
  end)

  it("a seed gives the state of four successive splitmix64 outputs", function()
    for _, seed in ipairs({0, 1, 42, -1, 1234567, math.maxinteger, math.mininteger}) do
      local r = ref.new(seed)
      assert.equal(hex_state(r.s), nm.generator(seed):state())
    end
  end)

  it("same seed, same stream; different seeds, different streams", function()
    local a, b, c = nm.generator(7), nm.generator(7), nm.generator(8)
    local differ = false
    for _ = 1, 100 do
      local x = a:bits()
      assert.equal(x, b:bits())
      if x ~= c:bits() then differ = true end
    end
    assert.is_true(differ)
    assert.equal(nm.generator(3):uniform(), nm.generator(3.0):uniform())
  end)

  it("g:seed restarts the stream", function()
    local g = nm.generator(5)
    local first = g:uniform()
    g:uniform()
    assert.equal(g, g:seed(5))
    assert.equal(first, g:uniform())
  end)
end)

describe("xoshiro256** outputs", function()
  it("matches the reference outputs from state {1, 2, 3, 4}", function()
    local g = nm.generator(0):set_state(hex_state({1, 2, 3, 4}))
    local expected = {11520, 0, 1509978240, 1215971899390074240}
    for i = 1, #expected do assert.equal(expected[i], g:bits()) end
  end)

  it("matches the reference C code from state {0, 0, 0, 1}, and its jump", function()
    -- Outputs and jumped state produced by Vigna's xoshiro256starstar.c
    -- (table in DSCF-1224/xoshiro-fortran test/README.md).
    local g = nm.generator(0):set_state(hex_state({0, 0, 0, 1}))
    local expected = {0x0, 0x0, 0x1680, 0x02D0000000001680, 0x02D0005A2D001680,
                      0x0000005A2D0B4120, 0x68B45A5A2D0B57A0, 0x68B48716AD000120,
                      0x1CB48716B2A00288, 0x11B10070BDEB59BC}
    for i = 1, #expected do assert.equal(expected[i], g:bits()) end
    local j = nm.generator(0):set_state(hex_state({0, 0, 0, 1}))
    assert.equal(j, j:jump())
    assert.equal(hex_state({0x934D05E8B2076310, 0xEABDD0BF76A1BE51, 0x75DD6A992ACCB1E8,
                            0xC660C602A7330187}), j:state())
    local after = {0xAED8D3ED373A211A, 0x055BAFF45A8CDB8E, 0x4F99E3C7B7AA48F2,
                   0x36634B1D710C7653, 0xF9660F773C654151}
    for i = 1, #after do assert.equal(after[i], j:bits()) end
  end)

  it("agrees with the naive Lua reference for a long stream", function()
    for _, seed in ipairs({1, 99, -12345}) do
      local g, r = nm.generator(seed), ref.new(seed)
      for _ = 1, 2000 do assert.equal(ref.next(r), g:bits()) end
      assert.equal(hex_state(r.s), g:state())
    end
  end)

  it("uniform() is the top 53 bits times 2^-53, exactly", function()
    local g, r = nm.generator(2024), ref.new(2024)
    for _ = 1, 1000 do
      local u = g:uniform()
      assert.equal(ref.uniform(r), u)
      assert.is_true(u >= 0 and u < 1)
    end
    g, r = nm.generator(3), ref.new(3)
    for _ = 1, 100 do
      assert.equal(-2 + 5 * ref.uniform(r), g:uniform(-2, 3))
    end
  end)

  it("integer(lo, hi) is Lemire's unbiased method, like the reference", function()
    local g, r = nm.generator(11), ref.new(11)
    for _ = 1, 500 do
      assert.equal(1 + ref.below(r, 6), g:integer(1, 6))
      assert.equal(-5 + ref.below(r, 1), g:integer(-5, -5))
      local n = (1 << 40) + 3
      assert.equal(100 + ref.below(r, n), g:integer(100, 100 + n - 1))
      -- a range above 2^63 exercises the unsigned threshold
      assert.equal(math.mininteger + ref.below(r, -(1 << 62)),
                   g:integer(math.mininteger, math.maxinteger - (1 << 62)))
      assert.equal(math.mininteger + ref.next(r), g:integer(math.mininteger, math.maxinteger))
      assert.equal(1 + ref.below(r, 10), g:integer(10))
    end
  end)

  it("normal() follows the polar method with a cached second value", function()
    local g, r = nm.generator(77), ref.new(77)
    for _ = 1, 2000 do
      local z, zr = g:normal(), ref.normal(r)
      -- The C side uses its own portable logarithm: a few ulps apart.
      assert.is_true(math.abs(z - zr) <= 1e-13 * math.max(1, math.abs(zr)),
                     string.format("%.17g vs %.17g", z, zr))
    end
    local a, b = nm.generator(5), nm.generator(5)
    assert.is_true(math.abs(a:normal(3, 2) - (3 + 2 * b:normal())) < 1e-15)
  end)
end)

describe("distributions", function()
  local N = 200000

  it("uniform has the moments of U(0, 1)", function()
    local g = nm.generator(123)
    local s1, s2 = 0, 0
    for _ = 1, N do
      local u = g:uniform()
      s1, s2 = s1 + u, s2 + u * u
    end
    local mean = s1 / N
    assert.is_true(math.abs(mean - 0.5) < 0.003)
    assert.is_true(math.abs(s2 / N - mean * mean - 1 / 12) < 0.002)
  end)

  it("normal has mean 0, variance 1, skewness 0, kurtosis 3", function()
    local t = nm.randn(nm.generator(321), N, "float64")
    local s1, s2, s3, s4 = 0, 0, 0, 0
    for i = 1, N do
      local z = t:get(i)
      s1, s2, s3, s4 = s1 + z, s2 + z * z, s3 + z ^ 3, s4 + z ^ 4
    end
    assert.is_true(math.abs(s1 / N) < 0.01)
    assert.is_true(math.abs(s2 / N - 1) < 0.015)
    assert.is_true(math.abs(s3 / N) < 0.03)
    assert.is_true(math.abs(s4 / N - 3) < 0.06)
  end)

  it("integer(1, 6) is uniform (chi-square, 5 degrees of freedom)", function()
    local g, counts, n = nm.generator(9), {0, 0, 0, 0, 0, 0}, 60000
    for _ = 1, n do
      local k = g:integer(1, 6)
      counts[k] = counts[k] + 1
    end
    local chi2 = 0
    for k = 1, 6 do chi2 = chi2 + (counts[k] - n / 6) ^ 2 / (n / 6) end
    assert.is_true(chi2 < 20.5) -- p = 0.001
  end)

  it("bernoulli(p) returns booleans with frequency p", function()
    local g, hits = nm.generator(4), 0
    for _ = 1, N do
      local b = g:bernoulli(0.3)
      assert.is_boolean(b)
      if b then hits = hits + 1 end
    end
    assert.is_true(math.abs(hits / N - 0.3) < 0.005)
    assert.is_false(g:bernoulli(0))
    assert.is_true(g:bernoulli(1))
  end)
end)

describe("permutation and sample", function()
  local function check_distinct(t, n)
    local seen = {}
    for i = 1, t:size(1) do
      local v = t:get(i)
      assert.is_true(v == math.floor(v) and v >= 1 and v <= n, "value " .. v)
      assert.is_nil(seen[v], "duplicate " .. v)
      seen[v] = true
    end
  end

  it("permutation(n) holds 1..n once each, as float64", function()
    local g = nm.generator(1)
    for _, n in ipairs({1, 2, 10, 1000}) do
      local p = g:permutation(n)
      assert.equal("float64", p:dtype())
      assert.same({n}, p:size())
      check_distinct(p, n)
    end
    assert.same({0}, g:permutation(0):size())
  end)

  it("permutation is Fisher-Yates driven by Lemire integers", function()
    local g, r = nm.generator(31), ref.new(31)
    local p, q = g:permutation(50), {}
    for i = 1, 50 do q[i] = i end
    for i = 50, 2, -1 do
      local j = ref.below(r, i) + 1
      q[i], q[j] = q[j], q[i]
    end
    assert.same(q, p:totable())
  end)

  it("shuffle(list) is the loop of g:integer(1, i) swaps, as permutation(n)", function()
    for _, n in ipairs({0, 1, 2, 7, 1000}) do
      local g, h, k = nm.generator(n + 5), nm.generator(n + 5), nm.generator(n + 5)
      local list, want = {}, {}
      for i = 1, n do list[i] = (i % 3 == 0) and ("s" .. i) or i; want[i] = list[i] end
      for i = n, 2, -1 do
        local j = h:integer(1, i)
        want[i], want[j] = want[j], want[i]
      end
      assert.equal(list, g:shuffle(list))
      assert.same(want, list)
      assert.equal(h:state(), g:state())
      local p, q = k:permutation(n), {}
      for i = 1, n do q[i] = i end
      assert.same(p:totable(), nm.generator(n + 5):shuffle(q))
    end
    assert.has_error(function() nm.generator(1):shuffle(5) end)
  end)

  it("every position of a permutation is uniform", function()
    local g, counts, trials = nm.generator(17), {}, 12000
    for i = 1, 4 do counts[i] = 0 end
    for _ = 1, trials do
      local first = g:permutation(4):get(1)
      counts[first] = counts[first] + 1
    end
    local chi2 = 0
    for i = 1, 4 do chi2 = chi2 + (counts[i] - trials / 4) ^ 2 / (trials / 4) end
    assert.is_true(chi2 < 16.3) -- 3 degrees of freedom, p = 0.001
  end)

  it("sample(n, k) gives k distinct values of 1..n", function()
    local g = nm.generator(2)
    for _, nk in ipairs({{10, 0}, {10, 1}, {10, 3}, {10, 10}, {1000, 999}, {50, 25}}) do
      local s = g:sample(nk[1], nk[2])
      assert.same({nk[2]}, s:size())
      check_distinct(s, nk[1])
    end
    -- O(k) whatever n
    local big = g:sample(1e15, 5)
    check_distinct(big, 1e15)
  end)

  it("sample is uniform over values and positions", function()
    local g, counts, trials = nm.generator(23), {}, 20000
    for v = 1, 5 do counts[v] = {0, 0} end
    for _ = 1, trials do
      local s = g:sample(5, 2)
      for pos = 1, 2 do
        local v = s:get(pos)
        counts[v][pos] = counts[v][pos] + 1
      end
    end
    local chi2 = 0
    for v = 1, 5 do
      for pos = 1, 2 do chi2 = chi2 + (counts[v][pos] - trials / 5) ^ 2 / (trials / 5) end
    end
    assert.is_true(chi2 < 27.9) -- 9 degrees of freedom, p = 0.001
  end)
end)

describe("state, clone and jump", function()
  it("state() then set_state() reproduces every stream, cached normal included", function()
    local g = nm.generator(99)
    g:normal() -- leaves the second deviate cached
    local s = g:state()
    assert.truthy(s:match("^xoshiro256%*%* %x+ %x+ %x+ %x+ %x+$"))
    local a = {g:normal(), g:uniform(), g:integer(1, 100), g:normal(), g:bits()}
    local h = nm.generator(1)
    assert.equal(h, h:set_state(s))
    local b = {h:normal(), h:uniform(), h:integer(1, 100), h:normal(), h:bits()}
    assert.same(a, b)
    assert.equal(g:state(), h:state())
  end)

  it("clone() is independent and starts in the same state", function()
    local g = nm.generator(8)
    g:normal()
    local c = g:clone()
    assert.not_equal(g, c)
    local x = c:normal()
    c:uniform()
    assert.equal(x, g:normal())
    assert.equal(getmetatable(g), getmetatable(c))
  end)

  it("jump() moves to a distinct substream and drops the cached normal", function()
    local g = nm.generator(8)
    g:normal()
    local j = g:clone():jump()
    assert.truthy(j:state():match(" %-$"))
    local same = 0
    for _ = 1, 100 do
      if g:bits() == j:bits() then same = same + 1 end
    end
    assert.equal(0, same)
  end)

  it("set_state rejects malformed states without touching the generator", function()
    local g = nm.generator(1)
    local before = g:state()
    local bad = {
      "", "pcg64 0", "xoshiro256** 1 2 3 4 -",
      "xoshiro256** 0000000000000000 0000000000000000 0000000000000000 0000000000000000 -",
      before .. " ", before:sub(1, -2), before:gsub("-$", "7ff0000000000000"),
      before:gsub(" %x", " g", 1),
    }
    for _, s in ipairs(bad) do
      local msg = errmsg(g.set_state, g, s)
      assert.truthy(msg:find("bad argument #2", 1, true), msg)
      assert.truthy(msg:find("state", 1, true), msg)
    end
    assert.equal(before, g:state())
    assert.truthy(errmsg(g.set_state, g, bad[4]):find("all%-zero"))
  end)
end)

describe("tensor fills", function()
  it("t:uniform(g, a, b) fills in row-major order, same values as g:uniform", function()
    local g, r = nm.generator(12), nm.generator(12)
    local t = nm.zeros(3, 4, "float64")
    assert.equal(t, t:uniform(g, -1, 2))
    for i = 1, 3 do
      for j = 1, 4 do assert.equal(r:uniform(-1, 2), t:get(i, j)) end
    end
  end)

  it("a strided view gets the values a contiguous tensor of its shape gets", function()
    local base = nm.zeros(4, 3, "float64")
    local view = base:t()               -- 3 x 4, non-contiguous
    view:normal(nm.generator(6), 1, 2)
    local flat = nm.zeros(3, 4, "float64"):normal(nm.generator(6), 1, 2)
    assert.same(flat:totable(), view:totable())
    local narrow = nm.zeros(5, 5, "float64")
    narrow:narrow(2, 2, 3):uniform(nm.generator(3))
    for i = 1, 5 do
      assert.equal(0, narrow:get(i, 1))
      assert.is_true(narrow:get(i, 2) > 0)
      assert.equal(0, narrow:get(i, 5))
    end
  end)

  it("float32 fills are the float64 values rounded and stay below b", function()
    local a = nm.zeros(1000):uniform(nm.generator(4))
    local b = nm.zeros(1000, "float64"):uniform(nm.generator(4))
    for i = 1, 1000 do
      local v = a:get(i)
      assert.is_true(v >= 0 and v < 1)
      assert.is_true(math.abs(v - b:get(i)) < 1e-7)
    end
    local tight = nm.zeros(2000):uniform(nm.generator(1), 1, 1 + 1e-7)
    for i = 1, 2000 do assert.is_true(tight:get(i) < 1 + 1e-7 and tight:get(i) >= 1) end
  end)

  it("bernoulli fills 0/1 with frequency p; normal fills have the right moments", function()
    local t = nm.zeros(100, 100):bernoulli(nm.generator(8), 0.25)
    local ones = 0
    for i = 1, 100 do
      for j = 1, 100 do
        local v = t:get(i, j)
        assert.is_true(v == 0 or v == 1)
        ones = ones + v
      end
    end
    assert.is_true(math.abs(ones / 10000 - 0.25) < 0.015)
    local z = nm.zeros(20000, "float64"):normal(nm.generator(2), 5, 0.5)
    local s1, s2 = 0, 0
    for i = 1, 20000 do
      local v = z:get(i)
      s1, s2 = s1 + v, s2 + v * v
    end
    local mean = s1 / 20000
    assert.is_true(math.abs(mean - 5) < 0.01)
    assert.is_true(math.abs(math.sqrt(s2 / 20000 - mean * mean) - 0.5) < 0.01)
    local zero_std = nm.zeros(3, "float64"):normal(nm.generator(2), 7, 0)
    assert.same({7, 7, 7}, zero_std:totable())
  end)

  it("nm.rand and nm.randn allocate filled tensors of the given shape", function()
    local u = nm.rand(nm.generator(5), 2, 3)
    assert.equal("float32", u:dtype())
    assert.same({2, 3}, u:size())
    local expect = nm.zeros(2, 3):uniform(nm.generator(5))
    assert.same(expect:totable(), u:totable())
    local n = nm.randn(nm.generator(5), {2, 2}, "float64")
    assert.equal("float64", n:dtype())
    assert.same(nm.zeros(2, 2, "float64"):normal(nm.generator(5)):totable(), n:totable())
    assert.equal("float64", nm.rand(nm.generator(1), 3, {dtype = "float64"}):dtype())
  end)
end)

describe("misuse is an error, never a crash", function()
  local g = nm.generator(1)
  local cases = {
    {"number expected", function() nm.generator() end},
    {"number has no integer representation", function() nm.generator(1.5) end},
    {"a <= b", function() g:uniform(2, 1) end},
    {"number expected", function() g:uniform(1) end},
    {"finite", function() g:uniform(0, math.huge) end},
    {"overflows", function() g:uniform(-1e308, 1e308) end},
    {">= 0", function() g:normal(0, -1) end},
    {"empty", function() g:integer(5, 1) end},
    {"empty", function() g:integer(0) end},
    {"[0, 1]", function() g:bernoulli(1.5) end},
    {"[0, 1]", function() g:bernoulli(0 / 0) end},
    {"must be in", function() g:permutation(-1) end},
    {"must not exceed", function() g:sample(3, 5) end},
    {"must be in", function() g:sample(3, -1) end},
    {"Generator expected", function() nm.zeros(3):uniform("g") end},
    {"Generator expected", function() g.uniform(nm.zeros(2)) end},
    {"[0, 1]", function() nm.zeros(3):bernoulli(g, -0.1) end},
    {"a <= b", function() nm.zeros(3):uniform(g, 1, 0) end},
    {">= 0", function() nm.zeros(3):normal(g, 0, -2) end},
    {"Generator expected", function() nm.rand(3, 2) end},
    {"too many dimensions", function() nm.rand(g, 1, 2, 3, 4, 5) end},
    {"non%-negative", function() nm.randn(g, -2) end},
    {"dtype", function() nm.randn(g, 2, "float16") end},
  }
  for i, case in ipairs(cases) do
    it("case " .. i .. ": " .. case[1], function()
      local msg = errmsg(case[2])
      assert.truthy(msg:find(case[1], 1, case[1]:find("%", 1, true) == nil), msg)
    end)
  end
end)
