-- nm/stats.lua: summary statistics and the tests the experiments report:
-- Shapiro-Wilk normality test (Royston 1995, algorithm AS R94, as in R's
-- shapiro.test), Student's and Welch's two-sample t-tests with two-sided
-- p-values, and the distribution functions they need (log-gamma,
-- regularised incomplete beta and gamma, normal CDF and quantile,
-- Student t CDF). Plain Lua numbers in, plain numbers out; nothing here
-- allocates tensors.
--
--   local stats = require "nm.stats"
--   stats.summary{1, 2, 3}          --> {n = 3, mean = 2, sd = 1, min = 1, max = 3}
--   stats.shapiro_wilk(xs)          --> {w = ..., p = ..., n = ...}
--   stats.t_test(xs, ys)            --> {t, df, p, mean_x, mean_y}   (Student, pooled)
--   stats.welch_test(xs, ys)        --> {t, df, p, mean_x, mean_y}   (Welch)
--   stats.paired_t_test(xs, ys)     --> {t, df, p, mean, lo, hi}     (on xs[i] - ys[i])
-- The paired and Welch tests take an optional delta (the difference
-- tested against, default 0) and also give one-sided p-values: p_greater
-- (the alternative: the mean difference exceeds delta) and p_less.
--   stats.mean_ci(xs [, level])     --> {n, mean, sd, half, lo, hi}  (Student t interval)
--   stats.qt(p, df)                 --> the Student t quantile
--   stats.fisher_exact(a, b, c, d)  --> two-sided p of the 2 x 2 table {{a, b}, {c, d}}
local stats = {}

local abs, exp, log, sqrt, huge = math.abs, math.exp, math.log, math.sqrt, math.huge

local function check_sample(xs, min_n, fname)
  if type(xs) ~= "table" then
    error(string.format("bad argument to '%s' (list of numbers expected, got %s)",
                        fname, type(xs)), 3)
  end
  for i = 1, #xs do
    local v = xs[i]
    if type(v) ~= "number" or v ~= v or v == huge or v == -huge then
      error(string.format("bad argument to '%s' (element %d is not a finite number)",
                          fname, i), 3)
    end
  end
  if #xs < min_n then
    error(string.format("bad argument to '%s' (needs at least %d values, got %d)",
                        fname, min_n, #xs), 3)
  end
end

-- ----------------------------------------------------------- summaries

function stats.mean(xs)
  check_sample(xs, 1, "mean")
  local sum = 0
  for i = 1, #xs do sum = sum + xs[i] end
  return sum / #xs
end

-- Sample variance (divisor n - 1), by a second pass about the mean.
function stats.var(xs)
  check_sample(xs, 2, "var")
  local m, ss = stats.mean(xs), 0
  for i = 1, #xs do ss = ss + (xs[i] - m) ^ 2 end
  return ss / (#xs - 1)
end

function stats.sd(xs) return sqrt(stats.var(xs)) end

function stats.min(xs)
  check_sample(xs, 1, "min")
  return math.min(table.unpack(xs))
end

function stats.max(xs)
  check_sample(xs, 1, "max")
  return math.max(table.unpack(xs))
end

-- {n, mean, sd (nil for n = 1), min, max}
function stats.summary(xs)
  check_sample(xs, 1, "summary")
  local lo, hi = huge, -huge
  for i = 1, #xs do lo, hi = math.min(lo, xs[i]), math.max(hi, xs[i]) end
  return {n = #xs, mean = stats.mean(xs), sd = #xs > 1 and stats.sd(xs) or nil,
          min = lo, max = hi}
end

-- --------------------------------------------------- special functions

-- log Gamma(x), x > 0: Lanczos (g = 7, 9 terms), about 1e-15 relative.
local lanczos = {0.99999999999980993, 676.5203681218851, -1259.1392167224028,
                 771.32342877765313, -176.61502916214059, 12.507343278686905,
                 -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7}
function stats.lgamma(x)
  if x < 0.5 then   -- reflection
    return log(math.pi / abs(math.sin(math.pi * x))) - stats.lgamma(1 - x)
  end
  x = x - 1
  local a, t = lanczos[1], x + 7.5
  for i = 1, 8 do a = a + lanczos[i + 1] / (x + i) end
  return 0.5 * log(2 * math.pi) + (x + 0.5) * log(t) - t + log(a)
end

-- Continued fraction of the incomplete beta (modified Lentz).
local function betacf(a, b, x)
  local tiny, eps = 1e-300, 1e-16
  local qab, qap, qam = a + b, a + 1, a - 1
  local c, d = 1, 1 - qab * x / qap
  if abs(d) < tiny then d = tiny end
  d = 1 / d
  local h = d
  for m = 1, 10000 do
    local m2 = 2 * m
    local aa = m * (b - m) * x / ((qam + m2) * (a + m2))
    d = 1 + aa * d; if abs(d) < tiny then d = tiny end
    c = 1 + aa / c; if abs(c) < tiny then c = tiny end
    d = 1 / d
    h = h * d * c
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
    d = 1 + aa * d; if abs(d) < tiny then d = tiny end
    c = 1 + aa / c; if abs(c) < tiny then c = tiny end
    d = 1 / d
    local del = d * c
    h = h * del
    if abs(del - 1) < eps then return h end
  end
  error("incomplete beta: continued fraction did not converge", 3)
end

-- Regularised incomplete beta I_x(a, b), a, b > 0, 0 <= x <= 1.
function stats.ibeta(x, a, b)
  if x <= 0 then return 0 end
  if x >= 1 then return 1 end
  local front = exp(stats.lgamma(a + b) - stats.lgamma(a) - stats.lgamma(b)
                    + a * log(x) + b * log(1 - x))
  if x < (a + 1) / (a + b + 2) then return front * betacf(a, b, x) / a end
  return 1 - front * betacf(b, a, 1 - x) / b
end

-- Regularised upper incomplete gamma Q(a, x) (series below a + 1,
-- continued fraction above).
function stats.gammq(a, x)
  if x <= 0 then return 1 end
  local gln = stats.lgamma(a)
  if x < a + 1 then
    local ap, sum = a, 1 / a
    local del = sum
    for _ = 1, 10000 do
      ap = ap + 1
      del = del * x / ap
      sum = sum + del
      if abs(del) < abs(sum) * 1e-17 then break end
    end
    return 1 - sum * exp(-x + a * log(x) - gln)
  end
  local tiny = 1e-300
  local b = x + 1 - a
  local c, d = 1 / tiny, 1 / b
  local h = d
  for i = 1, 10000 do
    local an = -i * (i - a)
    b = b + 2
    d = an * d + b; if abs(d) < tiny then d = tiny end
    c = b + an / c; if abs(c) < tiny then c = tiny end
    d = 1 / d
    local del = d * c
    h = h * del
    if abs(del - 1) < 1e-16 then break end
  end
  return exp(-x + a * log(x) - gln) * h
end

-- Standard normal CDF, and its upper tail without cancellation:
-- Phi(x) = erfc(-x / sqrt 2) / 2, erfc(z) = Q(1/2, z^2) for z >= 0.
function stats.pnorm(x, upper)
  if upper then x = -x end
  local z = x / sqrt(2)
  if z < 0 then return 0.5 * stats.gammq(0.5, z * z) end
  return 1 - 0.5 * stats.gammq(0.5, z * z)
end

-- Standard normal quantile (Wichura 1988, AS 241, PPND16: about 1e-16).
function stats.qnorm(p)
  if p <= 0 then return -huge end
  if p >= 1 then return huge end
  local q = p - 0.5
  if abs(q) <= 0.425 then
    local r = 0.180625 - q * q
    return q * (((((((2509.0809287301226727 * r + 33430.575583588128105) * r
      + 67265.770927008700853) * r + 45921.953931549871457) * r
      + 13731.693765509461125) * r + 1971.5909503065514427) * r
      + 133.14166789178437745) * r + 3.387132872796366608)
      / (((((((5226.495278852545925 * r + 28729.085735721942674) * r
      + 39307.89580009271061) * r + 21213.794301586595867) * r
      + 5394.1960214247511077) * r + 687.1870074920579083) * r
      + 42.313330701600911252) * r + 1)
  end
  local r = q < 0 and p or 1 - p
  r = sqrt(-log(r))
  local val
  if r <= 5 then
    r = r - 1.6
    val = (((((((7.7454501427834140764e-4 * r + 0.0227238449892691845833) * r
      + 0.24178072517745061177) * r + 1.27045825245236838258) * r
      + 3.64784832476320460504) * r + 5.7694972214606914055) * r
      + 4.6303378461565452959) * r + 1.42343711074968357734)
      / (((((((1.05075007164441684324e-9 * r + 5.475938084995344946e-4) * r
      + 0.0151986665636164571966) * r + 0.14810397642748007459) * r
      + 0.68976733498510000455) * r + 1.6763848301838038494) * r
      + 2.05319162663775882187) * r + 1)
  else
    r = r - 5
    val = (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r
      + 0.0012426609473880784386) * r + 0.026532189526576123093) * r
      + 0.29656057182850489123) * r + 1.7848265399172913358) * r
      + 5.4637849111641143699) * r + 6.6579046435011037772)
      / (((((((2.04426310338993978564e-15 * r + 1.4215117583164458887e-7) * r
      + 1.8463183175100546818e-5) * r + 7.868691311456132591e-4) * r
      + 0.0148753612908506148525) * r + 0.13692988092273580531) * r
      + 0.59983220655588793769) * r + 1)
  end
  return q < 0 and -val or val
end

-- Student t: P(T <= t) with df degrees of freedom (df > 0, not
-- necessarily an integer), and the two-sided tail P(|T| >= |t|).
function stats.pt(t, df)
  local tail = 0.5 * stats.ibeta(df / (df + t * t), df / 2, 0.5)
  return t > 0 and 1 - tail or tail
end

function stats.pt_two_sided(t, df)
  return stats.ibeta(df / (df + t * t), df / 2, 0.5)
end

-- The Student t quantile: the t with P(T <= t) = p, df > 0 degrees of
-- freedom, 0 < p < 1 (bracketing, then bisection on stats.pt to the
-- last bit).
function stats.qt(p, df)
  if type(p) ~= "number" or not (p > 0 and p < 1) then
    error(string.format("bad argument #1 to 'qt' (a probability in (0, 1) expected, got %s)",
                        tostring(p)), 2)
  end
  if type(df) ~= "number" or not (df > 0 and df < huge) then
    error(string.format("bad argument #2 to 'qt' (degrees of freedom > 0 expected, got %s)",
                        tostring(df)), 2)
  end
  if p == 0.5 then return 0 end
  if p < 0.5 then return -stats.qt(1 - p, df) end
  local lo, hi = 0, 1
  while stats.pt(hi, df) < p do
    lo, hi = hi, hi * 2
    if hi == huge then return huge end
  end
  for _ = 1, 200 do
    local mid = 0.5 * (lo + hi)
    if mid == lo or mid == hi then break end
    if stats.pt(mid, df) < p then lo = mid else hi = mid end
  end
  return 0.5 * (lo + hi)
end

-- --------------------------------------------------------- Shapiro-Wilk

-- poly(c, x) = c[1] + c[2] x + c[3] x^2 + ...
local function poly(c, x)
  local r = 0
  for i = #c, 1, -1 do r = r * x + c[i] end
  return r
end

local sw_c1 = {0, 0.221157, -0.147981, -2.07119, 4.434685, -2.706056}
local sw_c2 = {0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633}
local sw_c3 = {0.544, -0.39978, 0.025054, -6.714e-4}
local sw_c4 = {1.3822, -0.77857, 0.062767, -0.0020322}
local sw_c5 = {-1.5861, -0.31082, -0.083751, 0.0038915}
local sw_c6 = {-0.4803, -0.082676, 0.0030302}
local sw_g = {-2.273, 0.459}

-- Shapiro-Wilk W and its p-value for 3 <= n <= 5000 values (Royston
-- 1995, Applied Statistics 44, 547-551, algorithm AS R94; the same steps
-- as R's swilk.c). Returns {w, p, n}. Identical values are an error.
function stats.shapiro_wilk(xs)
  check_sample(xs, 3, "shapiro_wilk")
  local n = #xs
  if n > 5000 then error("bad argument to 'shapiro_wilk' (at most 5000 values)", 2) end
  local x = {}
  for i = 1, n do x[i] = xs[i] end
  table.sort(x)
  local range = x[n] - x[1]
  if range < 1e-10 * math.max(1, abs(x[1])) then
    error("bad argument to 'shapiro_wilk' (all values are identical)", 2)
  end
  -- coefficients a[1..n/2] of the upper half (by antisymmetry)
  local nn2, a = n // 2, {}
  if n == 3 then
    a[1] = sqrt(0.5)
  else
    local summ2 = 0
    for i = 1, nn2 do
      a[i] = stats.qnorm((i - 0.375) / (n + 0.25))
      summ2 = summ2 + a[i] * a[i]
    end
    summ2 = summ2 * 2
    local ssumm2, rsn = sqrt(summ2), 1 / sqrt(n)
    local a1 = poly(sw_c1, rsn) - a[1] / ssumm2
    local i1, fac
    if n > 5 then
      i1 = 3
      local a2 = -a[2] / ssumm2 + poly(sw_c2, rsn)
      fac = sqrt((summ2 - 2 * a[1] ^ 2 - 2 * a[2] ^ 2) / (1 - 2 * a1 ^ 2 - 2 * a2 ^ 2))
      a[2] = a2
    else
      i1 = 2
      fac = sqrt((summ2 - 2 * a[1] ^ 2) / (1 - 2 * a1 ^ 2))
    end
    a[1] = a1
    for i = i1, nn2 do a[i] = -a[i] / fac end
  end
  -- W as the squared correlation of the scaled data with the
  -- coefficients (0-based i, j as in AS R94)
  local function coef(i, j)   -- signed coefficient of the (i+1)-th smallest
    if i == j then return 0 end
    local s = i - j > 0 and 1 or -1
    return s * a[1 + math.min(i, j)]
  end
  local sa, sx = 0, 0
  for i = 0, n - 1 do
    sa = sa + coef(i, n - 1 - i)
    sx = sx + x[i + 1] / range
  end
  sa, sx = sa / n, sx / n
  local ssa, ssx, sax = 0, 0, 0
  for i = 0, n - 1 do
    local asa = coef(i, n - 1 - i) - sa
    local xsx = x[i + 1] / range - sx
    ssa = ssa + asa * asa
    ssx = ssx + xsx * xsx
    sax = sax + asa * xsx
  end
  local ssassx = sqrt(ssa * ssx)
  local w1 = (ssassx - sax) * (ssassx + sax) / (ssa * ssx)   -- 1 - W, accurately
  local w = 1 - w1
  local p
  if n == 3 then   -- exact
    p = 6 / math.pi * (math.asin(sqrt(w)) - math.pi / 3)
    p = math.max(p, 0)
  else
    local y, lnn = log(w1), log(n)
    local m, s
    if n <= 11 then
      local gamma = poly(sw_g, n)
      if y >= gamma then return {w = w, p = 1e-99, n = n} end
      y = -log(gamma - y)
      m = poly(sw_c3, n)
      s = exp(poly(sw_c4, n))
    else
      m = poly(sw_c5, lnn)
      s = exp(poly(sw_c6, lnn))
    end
    p = stats.pnorm((y - m) / s, true)
  end
  return {w = w, p = p, n = n}
end

-- ------------------------------------------------------------- t-tests

local function moments(xs)
  local m = stats.mean(xs)
  local ss = 0
  for i = 1, #xs do ss = ss + (xs[i] - m) ^ 2 end
  return m, ss / (#xs - 1), #xs
end

-- One-sided p-values of a t statistic r.t with r.df degrees of freedom:
-- p_greater (the alternative: the difference exceeds delta) and p_less.
local function one_sided(r)
  local t, df = r.t, r.df
  if t ~= t then r.p_greater, r.p_less = 1, 1
  elseif t == huge then r.p_greater, r.p_less = 0, 1
  elseif t == -huge then r.p_greater, r.p_less = 1, 0
  else r.p_greater, r.p_less = 1 - stats.pt(t, df), stats.pt(t, df) end
  return r
end

-- Student's two-sample t-test (pooled variance), two-sided.
function stats.t_test(xs, ys)
  check_sample(xs, 2, "t_test")
  check_sample(ys, 2, "t_test")
  local mx, vx, nx = moments(xs)
  local my, vy, ny = moments(ys)
  local df = nx + ny - 2
  local pooled = ((nx - 1) * vx + (ny - 1) * vy) / df
  local se = sqrt(pooled * (1 / nx + 1 / ny))
  local t = (mx - my) / se
  if se == 0 then t = mx == my and 0 / 0 or (mx > my and huge or -huge) end
  local p = (t ~= t) and 1 or (abs(t) == huge and 0 or stats.pt_two_sided(t, df))
  return {t = t, df = df, p = p, mean_x = mx, mean_y = my}
end

-- Welch's two-sample t-test (unequal variances, Welch-Satterthwaite
-- degrees of freedom) of mean_x - mean_y against delta (default 0):
-- two-sided p, and p_greater / p_less.
function stats.welch_test(xs, ys, delta)
  check_sample(xs, 2, "welch_test")
  check_sample(ys, 2, "welch_test")
  delta = delta or 0
  local mx, vx, nx = moments(xs)
  local my, vy, ny = moments(ys)
  local qx, qy = vx / nx, vy / ny
  local se = sqrt(qx + qy)
  local df = (qx + qy) ^ 2 / (qx * qx / (nx - 1) + qy * qy / (ny - 1))
  local d = mx - my - delta
  local t = d / se
  if se == 0 then
    t = d == 0 and 0 / 0 or (d > 0 and huge or -huge)
    df = nx + ny - 2
  end
  local p = (t ~= t) and 1 or (abs(t) == huge and 0 or stats.pt_two_sided(t, df))
  return one_sided({t = t, df = df, p = p, mean_x = mx, mean_y = my, delta = delta})
end

-- The mean of xs with its two-sided Student t confidence interval at
-- `level` (default 0.95): {n, mean, sd, half (the half-width), lo, hi}.
-- One value gives half = NaN (no interval).
function stats.mean_ci(xs, level)
  check_sample(xs, 1, "mean_ci")
  level = level or 0.95
  if type(level) ~= "number" or not (level > 0 and level < 1) then
    error(string.format("bad argument #2 to 'mean_ci' (a level in (0, 1) expected, got %s)",
                        tostring(level)), 2)
  end
  local n, m = #xs, stats.mean(xs)
  if n < 2 then return {n = 1, mean = m, half = 0 / 0, lo = 0 / 0, hi = 0 / 0} end
  local sd = stats.sd(xs)
  local half = stats.qt(0.5 + level / 2, n - 1) * sd / sqrt(n)
  return {n = n, mean = m, sd = sd, half = half, lo = m - half, hi = m + half}
end

-- The paired t-test of xs against ys (same length, at least 2 pairs):
-- the one-sample t-test of the differences d_i = xs[i] - ys[i] against
-- delta (default 0). {t, df, p (two-sided), p_greater, p_less, mean (of
-- d), lo, hi (its 95% interval)}.
function stats.paired_t_test(xs, ys, delta)
  check_sample(xs, 2, "paired_t_test")
  check_sample(ys, 2, "paired_t_test")
  if #xs ~= #ys then
    error(string.format("bad argument to 'paired_t_test' (%d values paired with %d)", #xs, #ys), 2)
  end
  local d = {}
  for i = 1, #xs do d[i] = xs[i] - ys[i] end
  local ci = stats.mean_ci(d)
  local df = #d - 1
  delta = delta or 0
  local se = ci.sd / sqrt(#d)
  local t = (ci.mean - delta) / se
  if se == 0 then t = ci.mean == delta and 0 / 0 or (ci.mean > delta and huge or -huge) end
  local p = (t ~= t) and 1 or (abs(t) == huge and 0 or stats.pt_two_sided(t, df))
  return one_sided({t = t, df = df, p = p, mean = ci.mean, lo = ci.lo, hi = ci.hi, delta = delta})
end

-- Fisher's exact test of the 2 x 2 table {{a, b}, {c, d}} (counts),
-- two-sided: the sum of the probabilities of every table with the same
-- margins that is no more likely than the one observed.
function stats.fisher_exact(a, b, c, d)
  for i, v in ipairs{a, b, c, d} do
    if type(v) ~= "number" or not (v >= 0 and v < huge and v == math.floor(v)) then
      error(string.format("bad argument #%d to 'fisher_exact' (a count expected, got %s)", i,
                          tostring(v)), 2)
    end
  end
  local r1, r2, c1 = a + b, c + d, a + c
  local n = r1 + r2
  local function lfact(k) return stats.lgamma(k + 1) end
  local base = lfact(r1) + lfact(r2) + lfact(c1) + lfact(n - c1) - lfact(n)
  local function logp(x)
    return base - lfact(x) - lfact(r1 - x) - lfact(c1 - x) - lfact(r2 - c1 + x)
  end
  local observed = logp(a)
  local p = 0
  for x = math.max(0, c1 - r2), math.min(r1, c1) do
    local lp = logp(x)
    if lp <= observed + 1e-7 then p = p + exp(lp) end
  end
  return math.min(p, 1)
end

return stats
