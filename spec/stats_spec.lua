-- nm.stats against published and independently computed reference values.
-- References: scipy 1.10.1 (Debian 12 python3-scipy: stats.shapiro, whose
-- swilk.f is the same AS R94 algorithm as R's shapiro.test but computes
-- in single precision, hence the 1e-5 tolerances on W and p;
-- stats.ttest_ind; special.betainc; special.gammaln; stats.t and
-- stats.norm), the weights of 11 men of Shapiro & Wilk (1965, Biometrika
-- 52, p. 604, W = 0.79 printed there), and values worked by hand.
local stats = require "nm.stats"

describe("nm.stats summaries", function()
  it("computes mean, sd, min, max", function()
    local s = stats.summary{2, 4, 4, 4, 5, 5, 7, 9}
    assert.are.equal(8, s.n)
    assert.are.equal(5, s.mean)
    assert.is_near(math.sqrt(32 / 7), s.sd, 1e-15)   -- sum of squares 32, n - 1 = 7
    assert.are.equal(2, s.min)
    assert.are.equal(9, s.max)
    assert.is_nil(stats.summary{3}.sd)
    assert.are.equal(-1, stats.min{3, -1, 2})
    assert.are.equal(3, stats.max{3, -1, 2})
    assert.is_near(2.5, stats.var{1, 2, 3, 4, 5}, 1e-15)
  end)

  it("rejects empty or non-numeric samples", function()
    assert.has_error(function() stats.mean{} end)
    assert.has_error(function() stats.sd{1} end)
    assert.has_error(function() stats.mean{1, "x"} end)
    assert.has_error(function() stats.mean{1, 0 / 0} end)
    assert.has_error(function() stats.mean(3) end)
  end)
end)

describe("nm.stats distribution functions", function()
  it("match scipy", function()
    assert.is_near(0.5723649429247, stats.lgamma(0.5), 1e-13)          -- log sqrt(pi)
    assert.is_near(13.482036786138359, stats.lgamma(10.3), 1e-12)
    assert.is_near(600.0094705553274, stats.lgamma(150), 1e-10)
    assert.is_near(math.log(120), stats.lgamma(6), 1e-13)              -- 5!
    assert.is_near(0.01892712407194565, stats.ibeta(0.3, 2.5, 0.5), 1e-14)
    assert.is_near(0.889130022255, stats.ibeta(0.9, 10, 3), 1e-13)
    assert.is_near(0.5, stats.ibeta(0.5, 0.5, 0.5), 1e-14)
    assert.is_near(0.9303370157205785, stats.pt(2.0, 3), 1e-14)
    assert.is_near(0.11606338940780428, stats.pt(-1.3, 7.5), 1e-14)
    assert.is_near(0.00343646683857923, 1 - stats.pt(12, 2), 1e-14)
    assert.is_near(0.9750021048517795, stats.pnorm(1.96), 1e-15)
    assert.is_near(6.22096057427174e-16, stats.pnorm(8.0, true), 1e-25)
    assert.is_near(1.959963984540054, stats.qnorm(0.975), 1e-14)
    assert.is_near(-6.361340902404056, stats.qnorm(1e-10), 1e-12)
    assert.are.equal(0, stats.qnorm(0.5))
    -- by hand: t with 1 df is Cauchy, P(T <= 1) = 3/4; with 2 df,
    -- P(T <= t) = 1/2 + t / (2 sqrt(t^2 + 2))
    assert.is_near(0.75, stats.pt(1, 1), 1e-15)
    assert.is_near(0.5 + 1.5 / (2 * math.sqrt(2.25 + 2)), stats.pt(1.5, 2), 1e-15)
    for _, p in ipairs{1e-8, 0.01, 0.3, 0.5, 0.77, 0.999} do
      assert.is_near(p, stats.pnorm(stats.qnorm(p)), 1e-14 + 1e-12 * p)
    end
  end)
end)

describe("nm.stats Shapiro-Wilk", function()
  local cases = {
    {"Shapiro & Wilk 1965 weights", {148, 154, 158, 160, 161, 162, 166, 170, 182, 195, 236},
     0.7888147830963135, 0.006703833118081093},
    {"n = 3 (exact p)", {1.0, 2.0, 4.0}, 0.9642857313156128, 0.6368856430053711},
    {"n = 4", {2.1, 3.7, 3.9, 5.0}, 0.9576742649078369, 0.7642722725868225},
    {"n = 5", {4.5, 1.2, 3.3, 8.9, 2.0}, 0.8945896029472351, 0.38070863485336304},
    {"n = 8", {6.1, 5.2, 7.7, 6.9, 5.9, 6.4, 8.8, 6.0}, 0.9246039390563965, 0.4683208465576172},
  }
  local u = {}
  for i = 0, 19 do u[#u + 1] = i / 19 end
  cases[#cases + 1] = {"20 evenly spaced", u, 0.9603754281997681, 0.55137699842453}
  local q = {}
  for i = 0, 29 do q[#q + 1] = (i * 0.37) % 1 * 3 + (i % 7) ^ 2 * 0.1 end
  cases[#cases + 1] = {"30 values, n >= 12 branch", q, 0.9670431017875671, 0.4617545008659363}

  for _, c in ipairs(cases) do
    it("matches the reference for " .. c[1], function()
      local r = stats.shapiro_wilk(c[2])
      assert.are.equal(#c[2], r.n)
      assert.is_near(c[3], r.w, 1e-6)
      assert.is_near(c[4], r.p, 1e-5)
    end)
  end

  it("gives W = 27/28 for 1, 2, 4 (n = 3, by hand)", function()
    -- n = 3: a = (-1, 0, 1)/sqrt 2, W = (x3 - x1)^2 / 2 / SS; for 1, 2, 4:
    -- SS = 14/3, (x3 - x1)^2 / 2 = 9/2, W = 27/28
    assert.is_near(27 / 28, stats.shapiro_wilk{4, 1, 2}.w, 1e-15)
  end)

  it("does not depend on order, location or scale", function()
    local a = stats.shapiro_wilk{5, 3, 9, 1, 4, 4.5, 7, 2.2, 6.1, 8, 0.5, 3.3, 12}
    local b = stats.shapiro_wilk{1003, 1009, 1001, 1005, 1004, 1004.5, 1007, 1002.2,
                                 1006.1, 1008, 1000.5, 1003.3, 1012}
    local c = stats.shapiro_wilk{0.005, 0.003, 0.009, 0.001, 0.004, 0.0045, 0.007, 0.0022,
                                 0.0061, 0.008, 0.0005, 0.0033, 0.012}
    assert.is_near(a.w, b.w, 1e-10)
    assert.is_near(a.w, c.w, 1e-12)
    assert.is_near(a.p, b.p, 1e-9)
  end)

  it("rejects too few, too many or identical values", function()
    assert.has_error(function() stats.shapiro_wilk{1, 2} end)
    assert.has_error(function() stats.shapiro_wilk{2, 2, 2, 2} end)
    local big = {}
    for i = 1, 5001 do big[i] = i end
    assert.has_error(function() stats.shapiro_wilk(big) end)
  end)
end)

describe("nm.stats t-tests", function()
  local a = {19.1, 21.3, 18.7, 22.0, 20.5, 19.9, 23.1}
  local b = {17.2, 18.9, 16.5, 19.3, 18.0, 17.7}
  local a2 = {1.2, 3.4, 2.2, 5.9, 0.3, 4.4, 2.8, 3.1, 9.5}
  local b2 = {2.0, 2.1, 1.9, 2.3, 2.2}

  it("Student's test matches scipy", function()
    local r = stats.t_test(a, b)
    assert.is_near(3.5871539855450942, r.t, 1e-12)
    assert.is_near(0.004264841004467327, r.p, 1e-14)
    assert.are.equal(11, r.df)
    r = stats.t_test(a2, b2)
    assert.is_near(1.2345893974405155, r.t, 1e-12)
    assert.is_near(0.24061311057489768, r.p, 1e-13)
  end)

  it("Welch's test matches scipy", function()
    local r = stats.welch_test(a, b)
    assert.is_near(3.707304745983075, r.t, 1e-12)
    assert.is_near(0.0037878476872618225, r.p, 1e-14)
    r = stats.welch_test(a2, b2)
    assert.is_near(1.683149191945278, r.t, 1e-12)
    assert.is_near(0.13039997289198726, r.p, 1e-13)
    -- Welch-Satterthwaite df by hand for a2, b2
    local v1, v2 = stats.var(a2) / 9, stats.var(b2) / 5
    assert.is_near((v1 + v2) ^ 2 / (v1 ^ 2 / 8 + v2 ^ 2 / 4), r.df, 1e-12)
  end)

  it("is antisymmetric and handles constant samples", function()
    local r1, r2 = stats.welch_test(a, b), stats.welch_test(b, a)
    assert.are.equal(-r1.t, r2.t)
    assert.are.equal(r1.p, r2.p)
    assert.are.equal(1, stats.t_test({1, 1}, {1, 1}).p)
    assert.are.equal(0, stats.welch_test({1, 1}, {2, 2}).p)
    assert.has_error(function() stats.t_test({1}, {1, 2}) end)
  end)
end)

describe("confidence intervals and paired and exact tests", function()
  it("qt inverts pt: closed forms for 1 and 2 degrees of freedom, tables, the normal limit", function()
    for _, p in ipairs{0.6, 0.9, 0.975, 0.995, 0.025} do
      assert.is_near(math.tan(math.pi * (p - 0.5)), stats.qt(p, 1), 1e-9 * math.max(1, math.abs(math.tan(math.pi * (p - 0.5)))))
      assert.is_near((2 * p - 1) / math.sqrt(2 * p * (1 - p)), stats.qt(p, 2), 1e-12)
    end
    assert.is_near(2.776445105197793, stats.qt(0.975, 4), 1e-12)     -- closed form for even df
    assert.is_near(2.262157162798204, stats.qt(0.975, 9), 1e-12)     -- closed form for odd df
    assert.is_near(stats.qnorm(0.975), stats.qt(0.975, 1e7), 1e-6)
    assert.are.equal(0, stats.qt(0.5, 3))
    assert.has_error(function() stats.qt(1, 3) end,
      "bad argument #1 to 'qt' (a probability in (0, 1) expected, got 1)")
    assert.has_error(function() stats.qt(0.9, 0) end,
      "bad argument #2 to 'qt' (degrees of freedom > 0 expected, got 0)")
  end)

  it("mean_ci is the Student t interval", function()
    local ci = stats.mean_ci{1, 2, 3}
    local q = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)           -- t(0.975, 2)
    assert.are.equal(2, ci.mean)
    assert.is_near(q / math.sqrt(3), ci.half, 1e-12)
    assert.is_near(2 - q / math.sqrt(3), ci.lo, 1e-12)
    local one = stats.mean_ci{5}
    assert.are.equal(5, one.mean)
    assert.is_true(one.half ~= one.half)
    assert.has_error(function() stats.mean_ci({1, 0 / 0}) end)
  end)

  it("the paired t-test is the one-sample test of the differences", function()
    -- d = 1, 2, 4: mean 7/3, sd sqrt(7/3), t = sqrt(7); df 2: p = 1 - t / sqrt(2 + t^2)
    local r = stats.paired_t_test({2, 3, 5}, {1, 1, 1})
    assert.is_near(math.sqrt(7), r.t, 1e-12)
    assert.are.equal(2, r.df)
    assert.is_near(1 - math.sqrt(7) / 3, r.p, 1e-12)
    assert.is_near(7 / 3, r.mean, 1e-15)
    local q = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
    assert.is_near(7 / 3 + q * math.sqrt(7 / 3) / math.sqrt(3), r.hi, 1e-12)
    assert.are.equal(1, stats.paired_t_test({1, 2}, {1, 2}).p)
    assert.has_error(function() stats.paired_t_test({1, 2, 3}, {1, 2}) end,
      "bad argument to 'paired_t_test' (3 values paired with 2)")
  end)

  it("Fisher's exact test: the tea-tasting table and a complete separation", function()
    -- margins 4, 4 of 8: P(x) = C(4,x) C(4,4-x) / 70; x = 3 observed -> (1+16+16+1)/70
    assert.is_near(34 / 70, stats.fisher_exact(3, 1, 1, 3), 1e-12)
    assert.is_near(2 / 252, stats.fisher_exact(5, 0, 0, 5), 1e-14)
    assert.is_near(1, stats.fisher_exact(2, 2, 2, 2), 1e-12)
    assert.has_error(function() stats.fisher_exact(1, -1, 0, 0) end,
      "bad argument #2 to 'fisher_exact' (a count expected, got -1)")
  end)
end)

describe("nm.stats one-sided p-values and a tested difference (delta)", function()
  it("paired_t_test: the df = 2 closed form, and against delta", function()
    -- differences 1, 2, 3: mean 2, sd 1, t = 2 sqrt(3); for df = 2,
    -- P(T > t) = 1/2 - t / (2 sqrt(t^2 + 2))
    local r = stats.paired_t_test({11, 22, 33}, {10, 20, 30})
    local t = 2 * math.sqrt(3)
    assert.is_near(t, r.t, 1e-12)
    local upper = 0.5 - t / (2 * math.sqrt(t * t + 2))
    assert.is_near(upper, r.p_greater, 1e-12)
    assert.is_near(1 - upper, r.p_less, 1e-12)
    assert.is_near(2 * upper, r.p, 1e-12)
    -- against delta = 2 the mean difference is on the bound: t = 0
    local rd = stats.paired_t_test({11, 22, 33}, {10, 20, 30}, 2)
    assert.are.equal(0, rd.t)
    assert.is_near(0.5, rd.p_greater, 1e-12)
    -- against delta = 1: t = (2 - 1) sqrt(3)
    assert.is_near(math.sqrt(3), stats.paired_t_test({11, 22, 33}, {10, 20, 30}, 1).t, 1e-12)
  end)

  it("welch_test: the one-sided p-values split the two-sided one; delta shifts ys", function()
    local xs, ys = {5.1, 4.9, 5.6, 5.8, 6.0}, {4.1, 4.5, 4.0, 4.6}
    local r = stats.welch_test(xs, ys)
    assert.is_true(r.t > 0)
    assert.is_near(r.p / 2, r.p_greater, 1e-14)
    assert.is_near(1 - r.p / 2, r.p_less, 1e-14)
    local shifted = {}
    for i, y in ipairs(ys) do shifted[i] = y + 1 end
    local rd, r1 = stats.welch_test(xs, ys, 1), stats.welch_test(xs, shifted)
    assert.is_near(r1.t, rd.t, 1e-12)
    assert.is_near(r1.df, rd.df, 1e-12)
    assert.is_near(r1.p_greater, rd.p_greater, 1e-12)
    assert.are.equal(0, stats.welch_test({1, 1}, {2, 2}).p_less)
  end)
end)

