-- BMVR (rules/bmvr.lua, rules/bmvr_backprop.lua, nm.kernels.bmvr,
-- lua/nm/models/bmvr.lua, nm.rrr and nm.symeig) against independent
-- references: the RRR solver against alternating least squares in plain
-- Lua and against the problem with redundant columns removed; the
-- online rules against that optimum; the gain-control constraint; the
-- decay of Q^T - R; the fused C loop against the Lua rules; backprop
-- against finite differences; the measures against Lua loops; errors.
local nm = require "neuromic"
local rule = require "nm.rule"
local bmvr = require "nm.models.bmvr"

-- ------------------------------------------------------ plain-Lua linear algebra

local function zeros(r, c)
  local M = {}
  for i = 1, r do
    M[i] = {}
    for j = 1, c do M[i][j] = 0 end
  end
  return M
end

local function matmul(A, B)
  local r, inner, c = #A, #B, #B[1]
  local C = zeros(r, c)
  for i = 1, r do
    for l = 1, inner do
      local a = A[i][l]
      for j = 1, c do C[i][j] = C[i][j] + a * B[l][j] end
    end
  end
  return C
end

local function transpose(A)
  local T = zeros(#A[1], #A)
  for i = 1, #A do for j = 1, #A[1] do T[j][i] = A[i][j] end end
  return T
end

-- Inverse by Gauss-Jordan with partial pivoting (small, well-conditioned).
local function inverse(A)
  local n = #A
  local M = zeros(n, 2 * n)
  for i = 1, n do
    for j = 1, n do M[i][j] = A[i][j] end
    M[i][n + i] = 1
  end
  for col = 1, n do
    local p = col
    for i = col + 1, n do if math.abs(M[i][col]) > math.abs(M[p][col]) then p = i end end
    M[col], M[p] = M[p], M[col]
    local d = M[col][col]
    for j = 1, 2 * n do M[col][j] = M[col][j] / d end
    for i = 1, n do
      if i ~= col then
        local f = M[i][col]
        for j = 1, 2 * n do M[i][j] = M[i][j] - f * M[col][j] end
      end
    end
  end
  local inv = zeros(n, n)
  for i = 1, n do for j = 1, n do inv[i][j] = M[i][n + j] end end
  return inv
end

-- (1/T) sum_t ||y_t - B x_t||^2 with plain loops.
local function objective(X, Y, B)
  local T, n, m = #X, #X[1], #Y[1]
  local s = 0
  for t = 1, T do
    for i = 1, m do
      local p = 0
      for j = 1, n do p = p + B[i][j] * X[t][j] end
      s = s + (Y[t][i] - p) ^ 2
    end
  end
  return s / T
end

-- Rank-k regression by alternating least squares from a fixed start:
-- W2 = Cyz Czz^-1 given W1, W1 = (W2^T W2)^-1 W2^T Cyx Cxx^-1 given W2.
local function rrr_als(X, Y, k, iters)
  local T = #X
  local Xt = transpose(X)
  local Cxx, Cxy = matmul(Xt, X), matmul(Xt, Y)
  local Cyx = transpose(Cxy)
  local CyxCxxi = matmul(Cyx, inverse(Cxx))
  local n, m = #X[1], #Y[1]
  local W1 = zeros(k, n)
  for i = 1, k do for j = 1, n do W1[i][j] = math.sin(i * 7 + j * 3) end end
  local W2
  for _ = 1, iters do
    local Z = matmul(X, transpose(W1))                   -- T x k
    local Zt = transpose(Z)
    W2 = matmul(matmul(transpose(Y), Z), inverse(matmul(Zt, Z)))
    local W2t = transpose(W2)
    W1 = matmul(matmul(inverse(matmul(W2t, W2)), W2t), CyxCxxi)
  end
  local B = matmul(W2, W1)
  return objective(X, Y, B), B, T
end

local function to_table(t) return t:totable() end

local function lcg(seed)
  local s = seed
  return function()
    s = s * 6364136223846793005 + 1442695040888963407
    return ((s >> 11) & ((1 << 53) - 1)) / 2.0 ^ 53 - 0.5
  end
end

-- A regression problem in plain tables: Y = X A^T + noise.
local function problem(T, n, m, seed)
  local r = lcg(seed)
  local X, Y, A = zeros(T, n), zeros(T, m), zeros(m, n)
  for i = 1, m do for j = 1, n do A[i][j] = r() * 2 end end
  for t = 1, T do
    for j = 1, n do X[t][j] = r() * 3 + (j == 1 and 0.5 or 0) end
    for i = 1, m do
      local s = 0
      for j = 1, n do s = s + A[i][j] * X[t][j] end
      Y[t][i] = s + 0.3 * r()
    end
  end
  return X, Y
end

local function rel(a, b) return math.abs(a - b) / math.max(math.abs(b), 1e-300) end

-- ------------------------------------------------------------------- RRR

describe("nm.rrr, the RRR solver (csrc/core/nm_linalg.c)", function()
  local X, Y = problem(120, 6, 4, 11)

  it("matches alternating least squares and its own B", function()
    for k = 1, 3 do
      local r = nm.rrr(nm.tensor(X, "float64"), nm.tensor(Y, "float64"), k)
      local als = rrr_als(X, Y, k, 400)
      assert.is_true(rel(r.objective, als) < 1e-9, ("k=%d: %.15g vs ALS %.15g"):format(k, r.objective, als))
      assert.is_true(rel(objective(X, Y, to_table(r.B)), r.objective) < 1e-10)
      assert.equal(6, r.rank)
      -- W2T^T W1 = B and W1 Cxx W1^T = I (the saturated constraint)
      assert.tensor_near(r.B, r.W2T:t():contiguous() * r.W1, 1e-10)
      local Z = nm.tensor(X, "float64") * r.W1:t()
      assert.tensor_near(nm.eye(k, k, "float64"), (Z:t() * Z):mul(1 / #X), 1e-10)
    end
  end)

  it("gives the unconstrained optimum at full rank and trace Cyy", function()
    local r = nm.rrr(nm.tensor(X, "float64"), nm.tensor(Y, "float64"), 4)
    local Xt = transpose(X)
    local Bols = transpose(matmul(inverse(matmul(Xt, X)), matmul(Xt, Y)))
    assert.is_true(rel(r.ols_objective, objective(X, Y, Bols)) < 1e-10)
    assert.is_true(rel(r.objective, r.ols_objective) < 1e-10)
    assert.is_true(rel(r.trace_cyy, objective(X, Y, zeros(4, 6))) < 1e-12)
    local mu = r.mu:totable()
    for i = 2, #mu do assert.is_true(mu[i - 1] >= mu[i]) end
  end)

  it("uses the pseudo-inverse when columns are zero or repeated", function()
    local Xs = zeros(#X, 8)
    for t = 1, #X do
      for j = 1, 6 do Xs[t][j] = X[t][j] end
      Xs[t][7] = 0                        -- a pixel that is never on
      Xs[t][8] = X[t][2]                  -- a copy of column 2
    end
    local full = nm.rrr(nm.tensor(X, "float64"), nm.tensor(Y, "float64"), 2)
    local sing = nm.rrr(nm.tensor(Xs, "float64"), nm.tensor(Y, "float64"), 2)
    assert.equal(6, sing.rank)
    assert.is_true(rel(sing.objective, full.objective) < 1e-8)
    assert.is_true(rel(objective(Xs, Y, to_table(sing.B)), full.objective) < 1e-8)
  end)

  it("accepts float32 data and strided rows", function()
    local big = nm.tensor(X, "float64")
    local wide = nm.zeros(#X, 9, "float32")
    wide:narrow(2, 2, 6):copy(big)
    local r32 = nm.rrr(wide:narrow(2, 2, 6), nm.tensor(Y, "float32"), 2)
    local r64 = nm.rrr(big, nm.tensor(Y, "float64"), 2)
    assert.is_true(rel(r32.objective, r64.objective) < 1e-5)
  end)

  it("rejects bad ranks and shapes", function()
    local Xt, Yt = nm.tensor(X, "float64"), nm.tensor(Y, "float64")
    assert.has_error(function() nm.rrr(Xt, Yt, 0) end,
                     "bad argument #3 to 'rrr' (rank 0 out of range [1, 4])")
    assert.has_error(function() nm.rrr(Xt, Yt, 5) end)
    assert.has_error(function() nm.rrr(Xt, Yt:narrow(1, 1, 10), 1) end)
    local ok, err = pcall(nm.rrr, nm.zeros(5, 3, "float64"), nm.zeros(5, 2, "float64"), 1)
    assert.is_false(ok)
    assert.matches("rank", err)
  end)
end)

describe("nm.symeig and Tensor:symeig (csrc/core/nm_linalg.c)", function()
  it("finds the eigenvalues of V diag V^T", function()
    -- V: a rotation in the (1,2) plane and a reflection of axis 3
    local c, s = math.cos(0.3), math.sin(0.3)
    local V = {{c, -s, 0}, {s, c, 0}, {0, 0, -1}}
    local D = {{3, 0, 0}, {0, -1, 0}, {0, 0, 0.5}}
    local A = nm.tensor(matmul(matmul(V, D), transpose(V)), "float64")
    local w, E = nm.symeig(A, true)
    assert.tensor_near({-1, 0.5, 3}, w, 1e-12)
    -- A E = E diag(w)
    local AE = A * E
    for j = 1, 3 do
      for i = 1, 3 do assert.is_true(math.abs(AE:get(i, j) - E:get(i, j) * w:get(j)) < 1e-12) end
    end
    assert.tensor_near(nm.eye(3, 3, "float64"), E:t():contiguous() * E, 1e-12)
    assert.tensor_near({-1, 0.5, 3}, nm.symeig(A:float()), 1e-6)
    local w2, E2 = A:symeig(true)                 -- the method is the same function
    assert.tensor_near(w, w2, 0)
    assert.tensor_near(E, E2, 0)
  end)

  it("rejects non-square and non-finite matrices", function()
    assert.has_error(function() nm.symeig(nm.zeros(2, 3, "float64")) end)
    local A = nm.zeros(2, 2, "float64")
    A:set(1, 1, 0 / 0)
    assert.has_error(function() nm.symeig(A) end)
  end)
end)

-- ------------------------------------------------------------ the rules

local function make_net(k, n, m, dt, seed, extra)
  local g = nm.generator(seed)
  local net = {
    W1 = nm.zeros(k, n, dt):normal(g, 0, 0.3), W2T = nm.zeros(k, m, dt):normal(g, 0, 0.3),
    Q = nm.eye(k, k, dt):add(nm.zeros(k, k, dt):normal(g, 0, 0.1)),
    R = nm.eye(k, k, dt):add(nm.zeros(k, k, dt):normal(g, 0, 0.1)),
    zbar = nm.zeros(k, dt):fill(0.1), t = 0,
  }
  for key, v in pairs(extra or {}) do net[key] = v end
  return net
end

local function max_diff(a, b)
  local d = 0
  for _, f in ipairs{"W1", "W2T", "Q", "R", "zbar"} do
    if a[f] then d = math.max(d, ((a[f] - b[f]):abs():max())) end
  end
  return d
end

-- A network of the model with make_net's weights (zbar, R random too).
local function model_net(k, n, m, dt, o)
  local net = bmvr.new(o)
  local w = make_net(k, n, m, dt, 7)
  for _, f in ipairs{"W1", "W2T", "Q", "R", "zbar"} do
    if net[f] then net[f]:copy(w[f]) end
  end
  return net
end

describe("bmvr circuit rules", function()
  local configs = {
    {}, {relu = true}, {relu = true, gate = "z"}, {decoupled = true},
    {relu = true, decoupled = true, track_mean = false}, {relu = true, gate = "none"},
    {relu = true, mean = "before"}, {relu = true, mean = "before", gate = "none"},
  }
  -- The built-in rule without its kernel: a rule written only in Lua.
  local function lua_only(name)
    local def = {}
    for key, v in pairs(rule.definition(name)) do def[key] = v end
    def.kernel, def.name = nil, name .. "_lua"
    return def
  end
  -- The C loop and the rules' steps (tensor operations) run the same matrix-vector kernels
  -- (nm_matvec.h), so they agree bit for bit: on tiny shapes and on shapes past the 16 lanes
  -- of the product and the 64-column blocks of the transposed product (k = 67; with OpenBLAS's
  -- gemv/ger in the C loop these differed in the last bits).
  local shapes = {{T = 40, n = 7, m = 4, k = 3, sd = 1}, {T = 12, n = 37, m = 18, k = 67, sd = 0.1}}
  for _, dt in ipairs{"float64", "float32"} do
    for ci, cfg in ipairs(configs) do
      for _, name in ipairs{"bmvr", "bmvr_backprop"} do
        it(("kernel equals step bit for bit (%s, config %d, %s)"):format(dt, ci, name), function()
         for _, sh in ipairs(shapes) do
          local g = nm.generator(100 + ci)
          local T, n, m, k = sh.T, sh.n, sh.m, sh.k
          local X = nm.zeros(T, n, dt):normal(g, 0, sh.sd)
          local Y = nm.zeros(T, m, dt):normal(g, 0, sh.sd)
          local function new(r)
            local o = {n = n, m = m, k = k, dtype = dt, rules = r, eta_w1 = 0.05, eta_w2 = 0.04,
                       t0 = 10}
            for key, v in pairs(cfg) do o[key] = v end
            if name == "bmvr" then o.eta_q = 0.03 else o.gate = nil end
            return model_net(k, n, m, dt, o)
          end
          local a, b, c, d = new(name), new(name), new(name), new(lua_only(name))
          local order = g:permutation(T)
          a:train(X, Y, {order = order, fused = false})
          b:train(X, Y, {order = order})
          d:train(X, Y, {order = order})
          assert.equal(T, a.t)
          assert.equal(T, b.t)
          assert.equal(T, d.t)
          assert.equal(0, max_diff(a, b), k)
          assert.equal(0, max_diff(a, d))          -- the Lua-only rule is the step itself
          -- the kernel one sample at a time (no deferred W1 update across calls)
          for i = 1, T do c:train(X, Y, {order = order:narrow(1, i, 1)}) end
          assert.equal(0, max_diff(a, c), k)
         end
        end)
      end
    end
  end

  it("takes a rule by path, definition or instance, and only circuit rules of bmvr", function()
    local o = {n = 3, m = 2, k = 2, eta_w1 = 0.02}
    local by_name = bmvr.new(o)
    assert.equal("W1=bmvr W2T=bmvr Q=bmvr", by_name:rule_names())
    assert.equal(0.02, by_name.rules.W1.p.eta)
    assert.equal(0.005, by_name.rules.Q.p.eta)                -- the paper's eta_q
    local dir = debug.getinfo(1, "S").source:match("^@(.*)spec/[^/]*$") or "./"
    o.rules = dir .. "rules/bmvr_backprop.lua"
    assert.equal("W1=bmvr_backprop W2T=bmvr_backprop", bmvr.new(o):rule_names())
    o.rules = rule.new("bmvr", {eta = 0.5})                   -- an instance keeps its eta
    assert.equal(0.5, bmvr.new(o).rules.W1.p.eta)
    o.rules = {Q = false, W2T = rule.definition("bmvr_backprop")}
    assert.equal("W1=bmvr W2T=bmvr_backprop", bmvr.new(o):rule_names())
    local errors = {
      {"hebb", "bmvr.new: rule 'hebb' is a connection rule, not a circuit rule"},
      {"folded_ae", "bmvr.new: rule 'folded_ae' is a circuit rule of model 'folded_ae', not of model 'bmvr'"},
      {{Z = "bmvr"}, "bmvr.new: no pathway 'Z' (W1, W2T, Q, R)"},
      {{Q = "bmvr_backprop"}, "bmvr.new: rule 'bmvr_backprop' drives W1, W2T, not pathway Q"},
      {{W1 = {kind = "circuit", name = "no_eta", model = "bmvr", pathway = "W1", params = {},
              equation = "none", paper = "none", step = function() end}},
       "bmvr.new: rule 'no_eta' must declare the parameter eta (the rate the model sets)"},
    }
    for _, e in ipairs(errors) do
      o.rules = e[1]
      assert.has_error(function() bmvr.new(o) end, e[2])
    end
  end)

  -- A user's rule for W1 written in Lua only, W1 += eta (v x^T - lambda W1),
  -- beside the paper's rules for the other pathways, against a naive
  -- transcription of the whole step in plain Lua numbers.
  it("takes a Lua-only rule for one pathway: equal to a naive transcription", function()
    local decay_w1 = {
      kind = "circuit", name = "decay_w1", model = "bmvr", pathway = "W1",
      equation = "W1 += eta (v x^T - lambda W1)", paper = "a test",
      params = {eta = {default = 0.01, doc = "rate"}, lambda = {default = 0.1, doc = "decay"}},
      step = function(s, p) s.W:mul(1 - p.eta * p.lambda):addr(p.eta, s.v, s.x) end,
    }
    local n, m, k, T = 5, 2, 3, 30
    local g = nm.generator(5)
    local X = nm.zeros(T, n, "float64"):normal(g, 0, 1)
    local Y = nm.zeros(T, m, "float64"):normal(g, 0, 1)
    for _, decoupled in ipairs{false, true} do
      local net = bmvr.new{n = n, m = m, k = k, dtype = "float64", relu = true, decoupled = decoupled,
                           rules = {W1 = decay_w1}, eta_w1 = 0.02, eta_w2 = 0.03, eta_q = 0.04,
                           t0 = 10, lambda = 0.5, mean_eps = 0.1, seed = 3}
      assert.equal("W1=decay_w1 W2T=bmvr Q=bmvr" .. (decoupled and " R=bmvr" or ""), net:rule_names())
      local W1, W2T, Q, zbar = net.W1:totable(), net.W2T:totable(), net.Q:totable(), net.zbar:totable()
      local R = decoupled and net.R:totable()
      local order = g:permutation(T)
      net:train(X, Y, {order = order})
      for i = 1, T do                 -- the naive step
        local r = math.tointeger(order:get(i))
        local x, y = X:row(r):totable(), Y:row(r):totable()
        local dec = 1 / (1 + (i - 1) / 10)
        local u, z, d, a, nn, v = {}, {}, {}, {}, {}, {}
        for h = 1, k do
          u[h] = 0
          for j = 1, n do u[h] = u[h] + W1[h][j] * x[j] end
          d[h] = u[h] > 0 and 1 or 0
          local relu = math.max(u[h], 0)
          zbar[h] = zbar[h] + 0.1 * (relu - zbar[h])
          z[h] = relu - zbar[h]
        end
        for h = 1, k do
          a[h] = 0
          for j = 1, m do a[h] = a[h] + W2T[h][j] * y[j] end
          nn[h] = 0
          for j = 1, k do nn[h] = nn[h] + (decoupled and R[h][j] or Q[j][h]) * z[j] end
        end
        for h = 1, k do
          v[h] = a[h]
          for j = 1, k do v[h] = v[h] - Q[h][j] * nn[j] end
        end
        local e1, e2, eq = 0.02, 0.03 * dec, 0.04 * dec
        for h = 1, k do
          for j = 1, n do W1[h][j] = W1[h][j] * (1 - e1 * 0.5) + e1 * v[h] * x[j] end
          for j = 1, m do W2T[h][j] = W2T[h][j] * (1 - e2) + e2 * z[h] * y[j] end
          for j = 1, k do
            Q[h][j] = Q[h][j] * (1 - eq) + eq * z[h] * nn[j]
            if R then R[h][j] = R[h][j] * (1 - eq) + eq * nn[h] * z[j] end
          end
        end
      end
      assert.tensor_near(W1, net.W1, 1e-12)
      assert.tensor_near(W2T, net.W2T, 1e-12)
      assert.tensor_near(Q, net.Q, 1e-12)
      assert.tensor_near(zbar, net.zbar, 1e-12)
      if R then assert.tensor_near(R, net.R, 1e-12) end
    end
  end)

  it("runs the C pass only when every plastic pathway's rule names it; else the steps, alike", function()
    local n, m, k, T = 6, 3, 4, 40
    local g = nm.generator(8)
    local X = nm.zeros(T, n, "float64"):normal(g, 0, 1)
    local Y = nm.zeros(T, m, "float64"):normal(g, 0, 1)
    local function new(rules)
      return bmvr.new{n = n, m = m, k = k, dtype = "float64", relu = true, rules = rules,
                      eta_w1 = 0.02, eta_w2 = 0.03, eta_q = 0.04, t0 = 10, seed = 4}
    end
    local copy = {}
    for key, v in pairs(rule.definition("bmvr")) do copy[key] = v end
    copy.name, copy.kernel = "bmvr_lua", nil
    local calls, real = 0, nm.kernels.bmvr.train
    nm.kernels.bmvr.train = function(...) calls = calls + 1; return real(...) end
    local fused, mixed, frozen = new(), new{Q = copy}, new{Q = false}
    local order = g:permutation(T)
    local ok, err = pcall(function()
      fused:train(X, Y, {order = order})
      assert.equal(1, calls)
      mixed:train(X, Y, {order = order})
      frozen:train(X, Y, {order = order})
    end)
    nm.kernels.bmvr.train = real
    assert(ok, err)
    assert.equal(1, calls)                   -- neither the mixed nor the frozen network ran it
    for _, f in ipairs{"W1", "W2T", "Q", "zbar"} do      -- the same kernels: the same bits
      assert.equal(0, ((fused[f] - mixed[f]):abs():max()), f)
    end
    assert.tensor_near(new().Q:totable(), frozen.Q, 0)          -- Q does not learn
    assert.is_true(((fused.W1 - frozen.W1):abs():max()) > 1e-3)  -- the others do
  end)
end)

describe("bmvr fused step", function()
  it("changes the weights as the equations say for one sample", function()
    local n, m, k = 3, 2, 2
    local net = {W1 = nm.tensor({{1, 0, 2}, {0, -1, 1}}, "float64"),
                 W2T = nm.tensor({{1, 2}, {-1, 0.5}}, "float64"),
                 Q = nm.tensor({{2, 0.5}, {0, 1}}, "float64"), t = 0}
    local x, y = nm.tensor({{1, 2, 3}}, "float64"), nm.tensor({{1, -1}}, "float64")
    local t = nm.kernels.bmvr.train(net, x, y, {eta_w1 = 0.1, eta_w2 = 0.2, eta_q = 0.5})
    assert.equal(1, t)
    -- z = (7, 1); a = W2T y = (-1, -1.5); n = Q^T z = (14, 4.5);
    -- Q n = (30.25, 4.5); c = a - Q n = (-31.25, -6)
    assert.tensor_near({{1 - 3.125, -6.25, 2 - 9.375}, {-0.6, -1 - 1.2, 1 - 1.8}}, net.W1, 1e-12)
    -- W2T = 0.8 W2T + 0.2 z y^T
    assert.tensor_near({{0.8 + 1.4, 1.6 - 1.4}, {-0.8 + 0.2, 0.4 - 0.2}}, net.W2T, 1e-12)
    -- Q = 0.5 Q + 0.5 z n^T
    assert.tensor_near({{1 + 49, 0.25 + 15.75}, {7, 0.5 + 2.25}}, net.Q, 1e-12)
  end)
end)

describe("bmvr linear rules", function()
  -- Y = X A^T + noise with A of rank 3 and singular values 3, 2, 1; k = 2.
  local data = require "nm.data"
  local task = data.lowrank{m = 6, n = 10, k = 3, sv = {3, 2, 1}, noise = 0.1,
                            dtype = "float64", seed = 5}
  local T = 1000
  local X, Y = task:sample(T, nm.generator(6))
  local opt = nm.rrr(X, Y, 2)

  it("converge to the RRR optimum within 1% and saturate the constraint", function()
    local net = bmvr.new{n = 10, m = 6, k = 2, dtype = "float64", seed = 3,
                         eta_w1 = 0.01, eta_w2 = 0.01, eta_q = 0.005, t0 = 5000}
    local g = nm.generator(9)
    for _ = 1, 60 do net:train(X, Y, {order = g:permutation(T)}) end
    local f = net:objective(X, Y)
    assert.is_true(f >= opt.objective * (1 - 1e-9))
    assert.is_true(rel(f, opt.objective) < 0.01,
                   ("objective %.6g vs optimum %.6g"):format(f, opt.objective))
    -- all eigenvalues of (1/T) sum z z^T at 1: the constraint is tight
    local eig = net:constraint(X)
    for i = 1, 2 do assert.is_true(math.abs(eig[i] - 1) < 0.03, "eigenvalue " .. eig[i]) end
    -- W2T^T W1 is the optimal map B
    local B = net.W2T:t():contiguous() * net.W1
    local err = (B - opt.B):norm() / opt.B:norm()
    assert.is_true(err < 0.05, "relative error of W2 W1: " .. err)
    -- the plateau signal points along the backpropagated error near the optimum
    local _, update_cos = net:alignment(X, Y)
    assert.is_true(update_cos > -1 and update_cos <= 1)
  end)

  it("drive a slack constraint to saturation (top eigenvalue -> 1)", function()
    local net = bmvr.new{n = 10, m = 6, k = 2, dtype = "float64", seed = 4, w1_std = 0.01,
                         eta_w1 = 0.01, eta_w2 = 0.01, eta_q = 0.005, t0 = 5000}
    local first = net:constraint(X)[1]
    assert.is_true(first < 0.01, "initial top eigenvalue " .. first)
    local g = nm.generator(10)
    for _ = 1, 60 do net:train(X, Y, {order = g:permutation(T)}) end
    local eig = net:constraint(X)
    for i = 1, 2 do assert.is_true(math.abs(eig[i] - 1) < 0.03, "eigenvalue " .. eig[i]) end
  end)

  it("decoupled R converges to Q^T as (1 - eta_q)^t", function()
    for _, t0 in ipairs{0, 50} do
      local eta_q = 0.01
      local net = bmvr.new{n = 10, m = 6, k = 2, dtype = "float64", seed = 5, decoupled = true,
                           eta_w1 = 0.01, eta_w2 = 0.01, eta_q = eta_q, t0 = t0}
      net.R:copy(nm.tensor({{0.3, -0.2}, {0.5, 1.4}}, "float64"))
      local gap0 = net:qr_gap()
      net:train(X, Y, {count = 300})
      local predicted = gap0
      for s = 0, 299 do
        local eta = t0 > 0 and eta_q / (1 + s / t0) or eta_q
        predicted = predicted * (1 - eta)
      end
      assert.is_true(rel(net:qr_gap(), predicted) < 1e-8,
                     ("t0=%g: gap %.10g, predicted %.10g"):format(t0, net:qr_gap(), predicted))
      if t0 == 0 then assert.is_true(rel(predicted, gap0 * (1 - eta_q) ^ 300) < 1e-12) end
    end
  end)
end)

describe("bmvr backprop step", function()
  -- L = 1/2 ||y - W2T^T z||^2 in plain Lua, zbar frozen.
  local function loss(W1, W2T, zbar, x, y, relu, before)
    local k, n, m = #W1, #x, #y
    local z = {}
    for j = 1, k do
      local u = 0
      for i = 1, n do u = u + W1[j][i] * x[i] end
      z[j] = relu and (before and math.max(u - zbar[j], 0) or (math.max(u, 0) - zbar[j])) or u
    end
    local L = 0
    for i = 1, m do
      local yh = 0
      for j = 1, k do yh = yh + W2T[j][i] * z[j] end
      L = L + 0.5 * (y[i] - yh) ^ 2
    end
    return L
  end

  for _, case in ipairs{{false, "after"}, {true, "after"}, {true, "before"}} do
    local relu, mean = case[1], case[2]
    it("is a gradient step on the squared loss (finite differences, relu = " ..
       tostring(relu) .. ", mean " .. mean .. ")", function()
      local k, n, m = 3, 5, 4
      local net = make_net(k, n, m, "float64", 21, {relu = relu, track_mean = false, mean = mean})
      local g = nm.generator(22)
      local x = nm.zeros(1, n, "float64"):normal(g, 0, 1)
      local y = nm.zeros(1, m, "float64"):normal(g, 0, 1)
      local W1, W2T, zbar = net.W1:totable(), net.W2T:totable(), net.zbar:totable()
      local xt, yt = x:totable()[1], y:totable()[1]
      local eta1, eta2 = 0.1, 0.05
      nm.kernels.bmvr.backprop(net, x, y, {relu = relu, mean = mean, track_mean = false,
                                   eta_w1 = eta1, eta_w2 = eta2})
      local h = 1e-6
      for _, which in ipairs{{"W1", W1, eta1}, {"W2T", W2T, eta2}} do
        local name, W, eta = which[1], which[2], which[3]
        for i = 1, #W do
          for j = 1, #W[1] do
            local keep = W[i][j]
            W[i][j] = keep + h
            local lp = loss(W1, W2T, zbar, xt, yt, relu, mean == "before")
            W[i][j] = keep - h
            local lm = loss(W1, W2T, zbar, xt, yt, relu, mean == "before")
            W[i][j] = keep
            local expected = keep - eta * (lp - lm) / (2 * h)
            assert.is_true(math.abs(net[name]:get(i, j) - expected) < 1e-7,
                           ("%s[%d,%d]: %.12g vs %.12g"):format(name, i, j, net[name]:get(i, j), expected))
          end
        end
      end
    end)
  end
end)

describe("bmvr measures", function()
  local k, n, m, T = 3, 6, 4, 300       -- T > one block of 256 rows
  local g = nm.generator(31)
  local X = nm.zeros(T, n, "float64"):normal(g, 0, 1)
  local Y = nm.zeros(T, m, "float64"):normal(g, 0, 1)

  -- z, u for every row in plain Lua
  local function hidden(net, relu)
    local W1, zbar, Xt = net.W1:totable(), net.zbar:totable(), X:totable()
    local Z, U = {}, {}
    for t = 1, T do
      Z[t], U[t] = {}, {}
      for j = 1, k do
        local u = 0
        for i = 1, n do u = u + W1[j][i] * Xt[t][i] end
        U[t][j] = u
        Z[t][j] = relu and (math.max(u, 0) - zbar[j]) or u
      end
    end
    return Z, U
  end

  for _, relu in ipairs{false, true} do
    it("evaluate, forward, hidden_cov and alignment match Lua loops (relu = " ..
       tostring(relu) .. ")", function()
      local net = make_net(k, n, m, "float64", 32, {relu = relu})
      local Z, U = hidden(net, relu)
      local W2T, Q, Yt = net.W2T:totable(), net.Q:totable(), Y:totable()
      local sq, hits, C = 0, 0, zeros(k, k)
      local cos_sum, cos_n = 0, 0
      local Gb, Gp = zeros(k, n), zeros(k, n)
      local Xt = X:totable()
      for t = 1, T do
        local yh, best, label = {}, 1, 1
        for i = 1, m do
          yh[i] = 0
          for j = 1, k do yh[i] = yh[i] + W2T[j][i] * Z[t][j] end
          sq = sq + (Yt[t][i] - yh[i]) ^ 2
          if yh[i] > yh[best] then best = i end
          if Yt[t][i] > Yt[t][label] then label = i end
        end
        if best == label then hits = hits + 1 end
        for a = 1, k do for b = 1, k do C[a][b] = C[a][b] + Z[t][a] * Z[t][b] / T end end
        -- c = g (a - Q Q^T z), d = 1(u>0) W2T (y - yhat)
        local nv, c, d = {}, {}, {}
        for j = 1, k do
          nv[j] = 0
          for l = 1, k do nv[j] = nv[j] + Q[l][j] * Z[t][l] end
        end
        local cc, dd, cd = 0, 0, 0
        for j = 1, k do
          local a, qn, dj = 0, 0, 0
          for i = 1, m do a = a + W2T[j][i] * Yt[t][i]; dj = dj + W2T[j][i] * (Yt[t][i] - yh[i]) end
          for l = 1, k do qn = qn + Q[j][l] * nv[l] end
          c[j], d[j] = a - qn, dj
          if relu and not (U[t][j] > 0) then c[j], d[j] = 0, 0 end
          cc, dd, cd = cc + c[j] ^ 2, dd + d[j] ^ 2, cd + c[j] * d[j]
        end
        if cc > 0 and dd > 0 then cos_sum, cos_n = cos_sum + cd / math.sqrt(cc * dd), cos_n + 1 end
        for j = 1, k do
          for i = 1, n do
            Gb[j][i] = Gb[j][i] + c[j] * Xt[t][i]
            Gp[j][i] = Gp[j][i] + d[j] * Xt[t][i]
          end
        end
      end
      local mse, acc, correct = nm.kernels.bmvr.evaluate(net, X, Y)
      assert.is_true(rel(mse, sq / T) < 1e-12)
      assert.equal(hits, correct)
      assert.is_true(math.abs(acc - hits / T) < 1e-15)
      assert.tensor_near(C, nm.kernels.bmvr.hidden_cov(net, X), 1e-12)
      local Yhat, Zt = nm.kernels.bmvr.forward(net, X)
      assert.tensor_near(Z, Zt, 1e-12)
      assert.is_true(rel(((Yhat - Y):pow(2):sum()) / T, sq / T) < 1e-12)
      local mean_cos, update_cos = nm.kernels.bmvr.alignment(net, X, Y)
      assert.is_true(math.abs(mean_cos - cos_sum / cos_n) < 1e-12)
      local gg, pp, gp = 0, 0, 0
      for j = 1, k do
        for i = 1, n do gg, pp, gp = gg + Gb[j][i] ^ 2, pp + Gp[j][i] ^ 2, gp + Gb[j][i] * Gp[j][i] end
      end
      assert.is_true(math.abs(update_cos - gp / math.sqrt(gg * pp)) < 1e-12)
    end)
  end
end)

describe("bmvr errors", function()
  local dt = "float32"
  local function net() return make_net(2, 3, 2, dt, 41) end
  local X, Y = nm.zeros(5, 3, dt), nm.zeros(5, 2, dt)
  local p = {eta_w1 = 0.1, eta_w2 = 0.1, eta_q = 0.1}

  it("name the argument and the shapes", function()
    assert.has_error(function() nm.kernels.bmvr.train(net(), nm.zeros(5, 4, dt), Y, p) end,
      "bad argument #2 to 'train' (X is float32 [5 x 4], expected a float32 [T x 3] matrix with contiguous rows)")
    assert.has_error(function() nm.kernels.bmvr.train(net(), X, nm.zeros(4, 2, dt), p) end,
      "bad argument #3 to 'train' (Y is float32 [4 x 2], expected a float32 [5 x 2] matrix with contiguous rows)")
    assert.has_error(function() nm.kernels.bmvr.train(net(), X:double(), Y, p) end)
    local bad = net()
    bad.Q = nm.zeros(3, 3, dt)
    assert.has_error(function() nm.kernels.bmvr.train(bad, X, Y, p) end,
      "bad argument #1 to 'train' (Q is float32 [3 x 3], expected a contiguous float32 [2 x 2])")
    bad = net()
    bad.W2T = nil
    assert.has_error(function() nm.kernels.bmvr.train(bad, X, Y, p) end,
      "bad argument #1 to 'train' (field 'W2T' must be a tensor, got nil)")
    assert.has_error(function() nm.kernels.bmvr.train(net(), X, Y, {eta_w1 = 0.1, eta_w2 = 0.1}) end,
      "bad argument #4 to 'train' (option 'eta_q' must be a number, got nil)")
    assert.has_error(function() nm.kernels.bmvr.train(net(), X, Y, {eta_w1 = 0.1, eta_w2 = 0.1, eta_q = 0, gate = "x"}) end,
      "bad argument #4 to 'train' (option 'gate' must be \"u\", \"z\" or \"none\")")
    assert.has_error(function() nm.kernels.bmvr.train(net(), X, Y, p, nm.tensor({1, 6})) end,
      "bad argument #5 to 'train' (order[2] = 6.0 is not a row number in [1, 5])")
    assert.has_error(function() nm.kernels.bmvr.train(net(), X, Y, p, nil, 6) end,
      "bad argument #6 to 'train' (count 6 out of range [0, 5])")
    local relu = net()
    relu.zbar = nil
    assert.has_error(function() nm.kernels.bmvr.train(relu, X, Y, {eta_w1 = 0, eta_w2 = 0, eta_q = 0, relu = true}) end,
      "bad argument #1 to 'train' (field 'zbar' must be a tensor, got nil)")
    assert.has_error(function() bmvr.new{n = 3, m = 2} end,
      "bmvr.new: option k must be a positive integer, got nil")
    assert.has_error(function() bmvr.new{n = 3, m = 2, k = 2, gate = "w"} end)
    assert.has_error(function() bmvr.new{n = 3, m = 2, k = 2, mean = "w"} end)
    assert.has_error(function() rule.new("bmvr", {bogus = 1}) end)
  end)

  it("report divergence instead of crashing", function()
    local g = nm.generator(42)
    local Xb = nm.zeros(50, 3, dt):normal(g, 0, 10)
    local Yb = nm.zeros(50, 2, dt):normal(g, 0, 10)
    local n1 = net()
    local t, finite = nm.kernels.bmvr.train(n1, Xb, Yb, {eta_w1 = 10, eta_w2 = 10, eta_q = 10})
    assert.is_false(finite)
    assert.is_true(t < 50)
    local model = bmvr.new{n = 3, m = 2, k = 2, eta_w1 = 10, eta_w2 = 10, eta_q = 10, t0 = 0}
    assert.has_error(function() model:train(Xb, Yb) end)
  end)
end)

describe("experiments/bmvr.lua --table1-t0", function()
  local json = require "nm.json"
  local support = require "spec.support"
  local run, tmp = support.experiment("bmvr.lua")

  -- The decaying-rate option reaches the network: the experiment's k = 16
  -- MNIST row equals a network trained here with the same rates and t0.
  it("trains Table 1 with eta/(1 + t/t0), as a direct nm.kernels.bmvr run does", function()
    local nm = require "neuromic"
    local data = require "nm.data"
    local bmvr = require "nm.models.bmvr"
    local function accuracy(t0)
      local dir = tmp .. "-t0-" .. t0
      assert.equal(0, run("--quick --parts table1 --no-plot --table1-t0 " .. t0 .. " --out " .. dir))
      local r = json.read_file(dir .. "/results.json")
      os.execute(string.format("rm -rf %q", dir))
      assert.equal(t0, r.options.table1_t0)
      return r.final["table1_mnist-subset_k16_bmvr_test"]
    end
    local ds = data.load("mnist-subset", {seed = 1})
    local X, Y = ds.train.X, ds.train.Y
    local net = bmvr.new{n = X:size(2), m = Y:size(2), k = 16, relu = true,
                         eta_w1 = 1e-2, eta_w2 = 1e-4, eta_q = 1e-3, t0 = 500, seed = 1}
    net:train(X, Y, {order = nm.generator(1 + 2000):permutation(X:size(1))})
    local _, te = net:evaluate(ds.test.X, ds.test.Y)
    local decayed = accuracy(500)
    assert.equal(100 * te, decayed)
    assert.are_not.equal(accuracy(0), decayed)
    os.execute(string.format("rm -f %q", tmp .. ".log"))
  end)
end)

describe("experiments/bmvr.lua --search", function()
  local json = require "nm.json"
  local support = require "spec.support"
  local run, tmp = support.experiment("bmvr.lua")

  -- A grid candidate that diverges (eta_w1 = 0.1 at k = 64 within 4
  -- passes) is an outcome of the search: it used to stop the run as failed
  -- ("validation is NaN") at full scale (~15 s of CPU).
  it("records a diverged candidate and goes on to choose the rates", function()
    local dir = tmp .. "-search"
    assert.equal(0, run("--parts table1 --search --search-epochs 4 --datasets mnist-subset --ks 64 " ..
                        "--epochs 1 --no-variants --no-plot --out " .. dir))
    local diverged, searched = 0, 0
    for _, row in ipairs(json.read_lines(dir .. "/metrics.jsonl")) do
      if row.part == "search" then
        searched = searched + 1
        if row.diverged then
          diverged = diverged + 1
          assert.equal(json.null, row.validation)
        else
          assert.is_number(row.validation)
        end
      end
    end
    assert.equal(32 + 16, searched)            -- the whole grid: BMVR 4 x 4 x 2, backprop 4 x 4
    assert.truthy(diverged > 0)
    local r = json.read_file(dir .. "/results.json")
    assert.equal("finished", r.status)
    assert.truthy(support.read_file(dir .. "/table1.md"):find("| mnist-subset | 64 | bmvr | searched |", 1, true))
    os.execute(string.format("rm -rf %q %q", dir, tmp .. ".log"))
  end)
end)

describe("experiments/bmvr.lua and folded_ae.lua --rules", function()
  local support = require "spec.support"
  it("refuse a rule that is invalid or of another kind or model: one line each, status 2", function()
    for _, x in ipairs{{"bmvr.lua", "bmvr"}, {"folded_ae.lua", "folded_ae"}} do
      local run, tmp = support.experiment(x[1])
      local bad = tmp .. "-bad.lua"
      support.write_file(bad, 'return {kind = "circuit", name = "x", model = "' .. x[2] .. '", params = {}}')
      assert.equal(2, run("--quick --rules " .. bad .. " --out " .. tmp))
      local log = support.read_file(tmp .. ".log")
      local lines = {}
      for line in log:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equal(5, #lines, log)
      for _, line in ipairs(lines) do
        assert.equal(1, line:find(x[2] .. ": " .. bad .. ": circuit rule 'x': ", 1, true), log)
      end
      assert.equal(2, run("--quick --rules hillclimb --out " .. tmp))
      log = support.read_file(tmp .. ".log")
      assert.equal(x[2] .. ": hillclimb: rule 'hillclimb' is a circuit rule of model 'nk', not of " ..
                   "model '" .. x[2] .. "'\n", log)
      os.remove(bad)
      os.remove(tmp .. ".log")
    end
  end)

  it("bmvr.lua takes pathway=rule items: BMVR with that pathway's rule replaced, a method of its own", function()
    local json = require "nm.json"
    local run, tmp = support.experiment("bmvr.lua")
    local dir = tmp .. "-rules"
    nm.sys.mkdir(dir)
    local mine = dir .. "/my_w1.lua"
    support.write_file(mine, [[
local def = {}
for k, v in pairs(require("nm.rule").definition("bmvr")) do def[k] = v end
def.name, def.kernel, def.pathways, def.pathway = "my_w1", nil, nil, "W1"
return def]])
    assert.equal(0, run("--quick --parts table1 --no-plot --rules bmvr,W1=" .. mine .. " --out " .. tmp))
    local r = json.read_file(tmp .. "/results.json")
    -- a Lua copy of the paper's W1 rule beside the kernel's: the same accuracy
    assert.truthy(r.final["table1_mnist-subset_k16_bmvr_test"])
    assert.equal(r.final["table1_mnist-subset_k16_bmvr_test"], r.final["table1_mnist-subset_k16_bmvr+W1=my_w1_test"])
    assert.equal(2, run("--quick --rules Q=" .. mine .. " --out " .. tmp))
    assert.equal("bmvr: --rules: rule 'my_w1' drives W1, not pathway Q\n", support.read_file(tmp .. ".log"))
    assert.equal(2, run("--quick --rules Z=bmvr --out " .. tmp))
    assert.equal("bmvr: --rules: no pathway 'Z' (W1, W2T, Q, R)\n", support.read_file(tmp .. ".log"))
    os.execute(string.format("rm -rf %q %q %q", tmp, dir, tmp .. ".log"))
  end)
end)
