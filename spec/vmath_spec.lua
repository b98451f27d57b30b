-- The branch-free vector transcendentals (csrc/core/nm_vmath.h) behind
-- t:exp(), log, expm1, log1p, tanh, sigmoid, softplus and the derivatives:
-- their error against libm's long double functions over the whole range
-- (nm.ulp_scan: 400,000 evenly spaced bit patterns per function and type,
-- every float32 pattern near the overflow and underflow thresholds), and
-- the special values (+-0, subnormals, +-inf, NaN) against libm's answers.
local nm = require "neuromic"

local nan, inf = 0 / 0, math.huge
local MAX_ULP = 4          -- measured: 3.73 (float32 softplus, beta 0.3)

-- {op, lo, hi[, beta]}: the working range, from below the underflow to
-- past the overflow threshold (exp's float64 scan covers its float32 range).
local RANGES = {
  { "exp", -760, 720 }, { "expm1", -760, 720 }, { "log", 0, 1.7e308 },
  { "log1p", -1, 1.7e308 }, { "tanh", -40, 40 }, { "dtanh", -400, 400 },
  { "sigmoid", -760, 760 }, { "dsigmoid", -760, 760 }, { "softplus", -760, 760 },
  { "dsoftplus", -760, 760 }, { "softplus", -760, 760, 0.3 }, { "dsoftplus", -200, 200, 7 },
}

local F32_MAX = 3.4028234663852886e38

describe("vector transcendentals", function()
  for _, dt in ipairs { "float32", "float64" } do
    it(dt .. ": within " .. MAX_ULP .. " ulp of libm over the whole range", function()
      for _, r in ipairs(RANGES) do
        local lo, hi = r[2], r[3]
        if dt == "float32" then
          lo, hi = math.max(lo, -F32_MAX), math.min(hi, F32_MAX)
        end
        local err, worst, n = nm.ulp_scan(r[1], dt, lo, hi, 400000, r[4])
        assert.is_true(n >= 360000, r[1])
        -- none is correctly rounded, so a scan that measures at all sees
        -- more than half an ulp somewhere
        assert.is_true(err > 0.5, r[1])
        if not (err <= MAX_ULP) then
          error(string.format("%s %s (beta %s): %.3f ulp at %a", r[1], dt, r[4] or 1, err, worst))
        end
      end
    end)
  end

  it("float32: every input (or every few) around the thresholds", function()
    -- exp overflows above 88.72, is subnormal below -87.34 and 0 below
    -- -103.97; expm1 reaches -1 near -17.3; dtanh underflows near -51.9
    for _, r in ipairs {
      { "exp", 88, 89 }, { "exp", -88, -86 }, { "exp", -104, -100 }, { "expm1", 88, 89 },
      { "expm1", -18, -16 }, { "sigmoid", -104, -100 }, { "sigmoid", -88, -86 },
      { "dsigmoid", -104, -100 }, { "dsigmoid", -88, -86 }, { "dsoftplus", -104, -100 },
      { "softplus", -104, -100 }, { "dtanh", -52, -51 }, { "dtanh", -44, -43 },
      { "log", 0, 2 ^ -126 }, { "log1p", -1, -0.99 }, { "tanh", 2 ^ -12, 2 ^ -11 },
    } do
      local err, worst, n = nm.ulp_scan(r[1], "float32", r[2], r[3], 2 ^ 21)
      assert.is_true(n > 100000, r[1])
      if not (err <= MAX_ULP) then
        error(string.format("%s: %.3f ulp at %a", r[1], err, worst))
      end
    end
  end)

  it("the scan refuses bad arguments", function()
    assert.has_error(function() nm.ulp_scan("exp", "float32", 1, 0, 10) end)
    assert.has_error(function() nm.ulp_scan("exp", "float32", -1e39, 0, 10) end)
    assert.has_error(function() nm.ulp_scan("sqrt", "float32", 0, 1, 10) end)
    assert.has_error(function() nm.ulp_scan("softplus", "float32", 0, 1, 10, 0) end)
    assert.has_error(function() nm.ulp_scan("exp", "float32", 0, 1, 0) end)
    assert.has_error(function() nm.ulp_scan("exp", "float32", 0, 1, 2 ^ 40) end)
    assert.has_error(function() nm.ulp_scan("exp", "int", 0, 1, 10) end)
    assert.has_error(function() nm.ulp_scan("exp", "float64", 0, 1 / 0, 10) end)
  end)

  local function values(op, dt, xs, beta)
    local t = nm.tensor(xs, dt)
    if beta then t[op](t, beta) else t[op](t) end
    return t:totable()
  end

  local function same(want, got, what)
    for i = 1, #want do
      local w, g = want[i], got[i]
      local ok = (w ~= w and g ~= g) or (w == g and (w ~= 0 or 1 / w == 1 / g))
      if not ok then
        error(string.format("%s [%d]: want %s, got %s", what, i,
                            w == 0 and 1 / w < 0 and "-0" or tostring(w),
                            g == 0 and 1 / g < 0 and "-0" or tostring(g)))
      end
    end
  end

  for _, dt in ipairs { "float32", "float64" } do
    it(dt .. ": special values as libm", function()
      local tiny = dt == "float32" and 2 ^ -149 or 2 ^ -1074      -- least subnormal
      local big = dt == "float32" and 88.8 or 709.9                -- exp overflows
      local xs = { 0, -0.0, inf, -inf, nan, tiny, -tiny, big, -big * 1.2 }
      same({ 1, 1, inf, 0, nan, 1, 1, inf, 0 }, values("exp", dt, xs), dt .. " exp")
      same({ 0, -0.0, inf, -1, nan, tiny, -tiny, inf, -1 }, values("expm1", dt, xs), "expm1")
      local lt = values("log", dt, { 0, -0.0, inf, -inf, nan, -1, 1, tiny })
      same({ -inf, -inf, inf, nan, nan, nan, 0 }, lt, "log")
      local want = dt == "float32" and -149 * math.log(2) or -1074 * math.log(2)
      assert.is_true(math.abs(lt[8] - want) < 1e-5 * math.abs(want), "log of a subnormal")
      same({ 0, -0.0, inf, nan, nan, -inf, nan, tiny, -tiny },
           values("log1p", dt, { 0, -0.0, inf, -inf, nan, -1, -2, tiny, -tiny }), "log1p")
      same({ 0, -0.0, 1, -1, nan, tiny, -tiny, 1, -1 }, values("tanh", dt, xs), "tanh")
      same({ 1, 1, 0, 0, nan, 1, 1, 0, 0 }, values("dtanh", dt, xs), "dtanh")
      same({ 0.5, 0.5, 1, 0, nan, 0.5, 0.5, 1, 0 }, values("sigmoid", dt, xs), "sigmoid")
      same({ 0.25, 0.25, 0, 0, nan, 0.25, 0.25 }, values("dsigmoid", dt, { 0, -0.0, inf, -inf, nan, tiny, -tiny }), "dsigmoid")
      local sp = values("softplus", dt, { 0, -0.0, inf, -inf, nan, 1e6, -1e6 })
      local l2 = values("log", dt, { 2 })[1]
      same({ l2, l2, inf, 0, nan, 1e6, 0 }, sp, "softplus")
      same({ 0.5, 0.5, 1, 0, nan }, values("dsoftplus", dt, { 0, -0.0, inf, -inf, nan }, 3), "dsoftplus")
    end)

    it(dt .. ": derivatives stay accurate where the function rounds to its limit", function()
      -- tanh(20) and sigmoid(40) round to 1; 1 - t^2 and s (1 - s) would give 0
      local dth = values("dtanh", dt, { 20, -20 })
      local dsg = values("dsigmoid", dt, { 40, -40 })
      local e40 = 4 * math.exp(-40)
      for _, v in ipairs(dth) do assert.is_true(math.abs(v - e40) < 1e-5 * e40) end
      for _, v in ipairs(dsg) do assert.is_true(math.abs(v - math.exp(-40)) < 1e-5 * math.exp(-40)) end
    end)

    it(dt .. ": strided and in-place views give the contiguous results", function()
      local xs = {}
      for i = 1, 301 do xs[i] = (i - 150) * 0.37 end
      for _, op in ipairs { "exp", "tanh", "sigmoid", "softplus", "dsigmoid", "log1p" } do
        local a = nm.tensor(xs, dt)
        if op == "log1p" then a:abs() end
        local flat = a:clone()[op](a:clone())
        local m = a:view(7, 43):t()                 -- a transposed, non-contiguous view
        local r = nm.zeros(43, 7, dt)
        r[op](r, m)
        local want = flat:view(7, 43):t()
        assert.equal(0, (r - want):abs():max(), op)
      end
    end)
  end
end)
