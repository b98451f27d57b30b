-- NK models and the neuron-autoencoder hill climber (nm.kernels.nk, csrc/models/nm_nk.c,
-- lua/nm/models/nk.lua, rules/hillclimb.lua) against independent references: the hash and the
-- fitness recomputed in plain Lua, stored tables against on-demand
-- entries, forward passes computed by hand, the incremental kernel
-- against the naive full pass and against the Lua rule decision by
-- decision (ties included), checkpoints, and errors.
local nm = require "neuromic"
local rule = require "nm.rule"
local nk = require "nm.models.nk"

-- splitmix64's finaliser and the entry hash, in Lua integers (wrapping).
local function mix64(z)
  z = (z ~ (z >> 30)) * 0xbf58476d1ce4e5b9
  z = (z ~ (z >> 27)) * 0x94d049bb133111eb
  return z ~ (z >> 31)
end

local function hash_entry(seed, gene0, pattern)
  local z = mix64(seed + 0x9e3779b97f4a7c15 * (gene0 + 1))
  z = mix64(z ~ ((pattern + 1) * 0xd1342543de82ef95))
  return (z >> 11) * 2.0^-53
end

-- F(genome) from the model's partners and entries, genome a list of 0/1.
local function lua_fitness(m, genome)
  local n, k, sum = m:n(), m:k(), 0
  for i = 1, n do
    local pat = genome[i]
    for _, p in ipairs(m:partners(i)) do pat = pat * 2 + genome[p] end
    assert(pat < 2 ^ (k + 1))
    sum = sum + m:entry(i, pat)
  end
  return sum / n
end

local function sigmoid(z) return 1 / (1 + math.exp(-z)) end

describe("nm.kernels.nk models", function()
  it("computes table entries from the documented hash", function()
    local m = nm.kernels.nk.model{n = 6, k = 2, generator = nm.generator(3)}
    local seed = m:seed()
    for i = 1, 6 do
      for p = 0, 7 do
        assert.are.equal(hash_entry(seed, i - 1, p), m:entry(i, p))
        assert.are.equal(m:hash_entry(i, p), m:entry(i, p))
      end
    end
  end)

  it("is reproducible from the generator's seed", function()
    local a = nm.kernels.nk.model{n = 30, k = 4, generator = nm.generator(11)}
    local b = nm.kernels.nk.model{n = 30, k = 4, generator = nm.generator(11)}
    local c = nm.kernels.nk.model{n = 30, k = 4, generator = nm.generator(12)}
    assert.are.equal(a:seed(), b:seed())
    assert.are_not.equal(a:seed(), c:seed())
    for i = 1, 30, 7 do
      assert.are.same(a:partners(i), b:partners(i))
      for p = 0, 31, 5 do assert.are.equal(a:entry(i, p), b:entry(i, p)) end
    end
  end)

  it("gives the same function with a stored table and with on-demand entries", function()
    local stored = nm.kernels.nk.model{n = 40, k = 5, generator = nm.generator(5), table = true}
    local hashed = nm.kernels.nk.model{n = 40, k = 5, generator = nm.generator(5), table = false}
    assert.is_true(stored:stored())
    assert.is_false(hashed:stored())
    for i = 1, 40 do
      for p = 0, 63 do assert.are.equal(stored:entry(i, p), hashed:entry(i, p)) end
    end
    local X1, F1 = stored:dataset(50, nm.generator(9))
    local X2, F2 = hashed:dataset(50, nm.generator(9))
    assert.are.same(X1:totable(), X2:totable())
    assert.are.same(F1:totable(), F2:totable())
    -- "auto" stores small tables and hashes large ones
    assert.is_true(nm.kernels.nk.model{n = 20, k = 10, generator = nm.generator(1)}:stored())
    assert.is_false(nm.kernels.nk.model{n = 50, k = 10, generator = nm.generator(1)}:stored())
    assert.is_false(nm.kernels.nk.model{n = 1000, k = 15, generator = nm.generator(1)}:stored())
  end)

  it("draws K distinct partners other than the gene, or the K next ones", function()
    local m = nm.kernels.nk.model{n = 12, k = 11, generator = nm.generator(2)}
    for i = 1, 12 do
      local seen = {[i] = true}
      local ps = m:partners(i)
      assert.are.equal(11, #ps)
      for _, p in ipairs(ps) do
        assert.is_nil(seen[p])
        assert.is_true(p >= 1 and p <= 12)
        seen[p] = true
      end
    end
    local adj = nm.kernels.nk.model{n = 5, k = 3, generator = nm.generator(2), partners = "adjacent"}
    assert.are.same({5, 1, 2}, adj:partners(4))
    assert.are.same({2, 3, 4}, adj:partners(1))
    local k0 = nm.kernels.nk.model{n = 4, k = 0, generator = nm.generator(2)}
    assert.are.same({}, k0:partners(1))
  end)

  it("computes the fitness as the mean of the genes' entries", function()
    local m = nm.kernels.nk.model{n = 9, k = 3, generator = nm.generator(4)}
    local g = nm.generator(8)
    for _ = 1, 20 do
      local genome = {}
      for i = 1, 9 do genome[i] = g:integer(0, 1) end
      assert.is_near(lua_fitness(m, genome), m:fitness(genome), 1e-15)
    end
  end)

  it("makes data sets of +-1 inputs (0 -> -1) and their fitness", function()
    local m = nm.kernels.nk.model{n = 70, k = 3, generator = nm.generator(4)}
    local X, F = m:dataset(40, nm.generator(21))
    assert.are.same({40, 70}, {X:size(1), X:size(2)})
    assert.are.equal(40, F:size(1))
    assert.are.equal("float64", X:dtype())
    local ones = 0
    for s = 1, 40 do
      local genome = {}
      for i = 1, 70 do
        local v = X:get(s, i)
        assert.is_true(v == 1 or v == -1)
        genome[i] = v > 0 and 1 or 0
        ones = ones + genome[i]
      end
      assert.is_near(lua_fitness(m, genome), F:get(s), 1e-15)
      assert.is_true(F:get(s) >= 0 and F:get(s) < 1)
    end
    assert.is_true(ones > 40 * 70 * 0.4 and ones < 40 * 70 * 0.6)
    local X32, F32 = m:dataset(3, nm.generator(21), "float32")
    assert.are.equal("float32", X32:dtype())
    assert.are.equal(X:get(2, 5), X32:get(2, 5))
    assert.is_near(F:get(3), F32:get(3), 1e-7)
  end)

  it("rejects bad arguments", function()
    local g = nm.generator(1)
    assert.has_error(function() nm.kernels.nk.model{n = 0, k = 0, generator = g} end)
    assert.has_error(function() nm.kernels.nk.model{n = 5, k = 5, generator = g} end)
    assert.has_error(function() nm.kernels.nk.model{n = 5, k = -1, generator = g} end)
    assert.has_error(function() nm.kernels.nk.model{n = 5, k = 2} end)
    assert.has_error(function() nm.kernels.nk.model{n = 5, k = 2, generator = g, partners = "near"} end)
    assert.has_error(function() nm.kernels.nk.model{n = 5, k = 2, generator = g, table = 3} end)
    local m = nm.kernels.nk.model{n = 5, k = 2, generator = g}
    assert.has_error(function() m:entry(6, 0) end)
    assert.has_error(function() m:entry(1, 8) end)
    assert.has_error(function() m:dataset(0, g) end)
    assert.has_error(function() m:dataset(3) end)
    assert.has_error(function() m:fitness({1, 0}) end)
    local ok, msg = pcall(nm.kernels.nk.model, {n = 5, k = 9, generator = g})
    assert.is_false(ok)
    assert.matches("K must be at most N %- 1", msg)
  end)
end)

-- A tiny network whose passes are computed by hand below.
local function tiny(kind, target)
  local X = nm.tensor({{1, -1, 1}, {-1, -1, 1}, {1, 1, -1}, {-1, 1, 1}}, "float64")
  local F = nm.tensor({0.2, 0.7, 0.5, 0.9}, "float64")
  local net = nm.kernels.nk.network{kind = kind, x = X, f = F, h = 2, generator = nm.generator(1),
                            target = target}
  local W = {{0.5, -0.25, 0.75, 0.125}, {-1, 0.5, 0.25, -0.5}}       -- [H x N+1]
  local V = {{0.3, -0.7, 0.1}}                                         -- [1 x H+1]
  local D
  if kind == "NAN" then
    D = {{0.4, -0.6, 0.2, 0.1, 0.3, -0.2}, {-0.5, 0.7, 0.9, -0.3, 0.2, 0.6}}
  elseif kind == "ANN" then
    D = {{0.4, -0.6, 0.2}, {0.1, 0.3, -0.2}, {-0.5, 0.7, 0.9}}         -- [N x H+1]
  end
  net:set_weights{hidden = nm.tensor(W, "float64"), output = nm.tensor(V, "float64"),
                  decoder = D and nm.tensor(D, "float64")}
  return net, X:totable(), F:totable(), W, V, D
end

local function hand_errors(kind, X, F, W, V, D, binary)
  local S, N, H = #X, #X[1], #W
  local task, rec = 0, {}
  for h = 1, (kind == "NAN" and H or 1) do rec[h] = 0 end
  for s = 1, S do
    local a = {}
    for h = 1, H do
      local u = W[h][N + 1]
      for i = 1, N do u = u + W[h][i] * X[s][i] end
      a[h] = sigmoid(u)
    end
    local z = V[1][H + 1]
    for h = 1, H do z = z + V[1][h] * a[h] end
    task = task + (sigmoid(z) - F[s]) ^ 2
    for i = 1, N do
      local t = binary and (X[s][i] + 1) / 2 or X[s][i]
      if kind == "NAN" then
        for h = 1, H do
          rec[h] = rec[h] + (t - sigmoid(D[h][i] * a[h] + D[h][N + i])) ^ 2
        end
      elseif kind == "ANN" then
        local v = D[i][H + 1]
        for h = 1, H do v = v + D[i][h] * a[h] end
        rec[1] = rec[1] + (t - sigmoid(v)) ^ 2
      end
    end
  end
  for h = 1, #rec do rec[h] = rec[h] / (S * N) end
  return task / S, kind ~= "NN" and rec or {}
end

describe("nm.kernels.nk.sigmoid", function()
  local function f32(z) return (string.unpack("f", string.pack("f", z))) end

  it("is within 2^-21 relative of the double sigmoid of its float32 argument", function()
    local worst, at, not_f32 = 0, nil, 0
    for k = -870000, 870000, 7 do                  -- z in [-87, 87], dense
      local z = f32(k * 1e-4)
      local got, want = nm.kernels.nk.sigmoid(z), sigmoid(z)
      if f32(got) ~= got then not_f32 = not_f32 + 1 end
      local rel = math.abs(got - want) / want
      if rel > worst then worst, at = rel, z end
    end
    assert.are.equal(0, not_f32)                   -- float32 values
    -- measured: 2.9 * 2^-24 (at z = -9.703)
    assert.is_true(worst <= 2 ^ -21, ("relative error %.3g at z = %.9g"):format(worst, at))
    assert.is_true(worst > 0)                      -- float32: not the double function
  end)

  it("has the exact values and limits of the documented formula", function()
    local s = nm.kernels.nk.sigmoid
    assert.are.equal(0.5, s(0))
    assert.are.equal(0.5, s(-0.0))
    assert.are.equal(1, s(17))                     -- 1 / (1 + e^-17) rounds to 1
    assert.are.equal(1, s(1e30))
    assert.are.equal(1, s(math.huge))
    assert.is_true(s(-20) > 0 and s(-20) < 2.1e-9)
    -- below -87 the clamp: sigmoid(-87), a normal float32 below 1.7e-38
    assert.are.equal(s(-87), s(-100))
    assert.are.equal(s(-87), s(-math.huge))
    assert.is_true(s(-87) > 1.17e-38 and s(-87) < 1.7e-38)
    assert.is_true(s(0 / 0) ~= s(0 / 0))           -- NaN stays NaN
    for _, z in ipairs{0.25, 1, 3.5, 10} do        -- symmetry within float32 rounding
      assert.is_near(1, s(z) + s(-z), 2 ^ -23)
    end
  end)
end)

describe("nm.kernels.nk networks", function()
  for _, kind in ipairs{"NN", "NAN", "ANN"} do
    for _, target in ipairs{"input", "binary"} do
      it(kind .. " errors (" .. target .. " targets) match a forward pass by hand", function()
        local net, X, F, W, V, D = tiny(kind, target)
        local task, rec = hand_errors(kind, X, F, W, V, D, target == "binary")
        local t1, mean1, rec1 = net:naive()
        local t2, mean2, rec2 = net:errors()
        -- the networks compute in float32 (doc/nk.md): each sigmoid within
        -- 2^-21 relative (spec below) of a pre-activation within a few 2^-24
        -- relative, so an error term (t - s)^2 <= 4 is within ~5e-6 of the
        -- double value computed here, and so is their mean
        assert.is_near(task, t1, 5e-6)
        assert.are.equal(t1, t2)
        assert.are.equal(#rec, #rec1)
        for h = 1, #rec do
          assert.is_near(rec[h], rec1[h], 5e-6)
          assert.are.equal(rec1[h], rec2[h])
        end
        if kind == "NN" then assert.is_nil(mean1) else assert.are.equal(mean1, mean2) end
        local X2 = nm.tensor(X, "float64")
        assert.are.equal(t1, net:test_error(X2, nm.tensor(F, "float64")))
      end)
    end
  end

  it("exposes parameter groups with their shapes and grids", function()
    local net = tiny("NAN")
    assert.are.same({2, 4}, {net:shape("hidden")})
    assert.are.same({1, 3}, {net:shape("output")})
    assert.are.same({2, 6}, {net:shape("decoder")})
    assert.are.same({3, 3}, {tiny("ANN"):shape("decoder")})
    assert.are.same({0, 0}, {tiny("NN"):shape("decoder")})
    assert.are.equal(-0.25, net:get("hidden", 1, 2))
    net:set("hidden", 1, 2, 0.1)                              -- rounded to 2^-32
    assert.are.equal(math.floor(0.1 * 2^32 + 0.5) / 2^32, net:get("hidden", 1, 2))
    net:set("output", 1, 3, 0.1)
    assert.are.equal(0.1, net:get("output", 1, 3))
    local old = net:perturb("decoder", 2, 5, 0.25)
    assert.are.equal(0.2, old)
    assert.are.equal(0.2 + 0.25, net:get("decoder", 2, 5))
    local w = net:weights()
    assert.are.equal(net:get("decoder", 2, 5), w.decoder:get(2, 5))
    assert.are.equal(net:get("hidden", 1, 2), w.hidden:get(1, 2))
  end)

  it("starts with weights U[-1, 1] drawn from the generator", function()
    local m = nm.kernels.nk.model{n = 20, k = 2, generator = nm.generator(1)}
    local X, F = m:dataset(30, nm.generator(2))
    local a = nm.kernels.nk.network{kind = "ANN", x = X, f = F, generator = nm.generator(3)}
    local b = nm.kernels.nk.network{kind = "ANN", x = X, f = F, generator = nm.generator(3)}
    local wa, wb = a:weights(), b:weights()
    for _, name in ipairs{"hidden", "output", "decoder"} do
      assert.are.same(wa[name]:totable(), wb[name]:totable())
      local lo, hi = math.huge, -math.huge
      for _, row in ipairs(wa[name]:totable()) do
        for _, v in ipairs(row) do lo, hi = math.min(lo, v), math.max(hi, v) end
      end
      assert.is_true(lo >= -1 and hi <= 1 and hi - lo > 1)
    end
    assert.are.same({11, 21}, {wa.decoder:size(2), wa.hidden:size(2)})
  end)

  it("rejects bad arguments", function()
    local m = nm.kernels.nk.model{n = 8, k = 2, generator = nm.generator(1)}
    local X, F = m:dataset(10, nm.generator(2))
    local g = nm.generator(3)
    local function net(t)
      local o = {kind = "NAN", x = X, f = F, generator = g}
      for k, v in pairs(t) do o[k] = v end
      return nm.kernels.nk.network(o)
    end
    assert.has_error(function() net{kind = "CNN"} end)
    assert.has_error(function() net{generator = false} end)
    assert.has_error(function() net{h = 0} end)
    assert.has_error(function() net{range = -1} end)
    assert.has_error(function() net{target = "other"} end)
    assert.has_error(function() net{x = nm.zeros(10, 8, "float64")} end)  -- not +-1
    local ok, msg = pcall(net, {f = nm.zeros(9, "float64")})
    assert.is_false(ok)
    assert.matches("size mismatch, inputs %[10 x 8%] vs targets %[9%]", msg)
    local n = net{}
    ok, msg = pcall(n.get, n, "hidden", 3, 10)
    assert.is_false(ok)
    assert.matches("out of range for hidden %[10 x 9%]", msg)
    assert.has_error(function() n:get("weights", 1, 1) end)
    assert.has_error(function() n:step(-1, g) end)
    assert.has_error(function() n:step(1) end)
    assert.has_error(function() n:set("output", 1, 1, 0 / 0) end)
    assert.has_error(function() n:test_error(nm.zeros(3, 7, "float64"), nm.zeros(3, "float64")) end)
    assert.has_error(function() n:set_weights{hidden = nm.zeros(2, 2)} end)
    local nn = nm.kernels.nk.network{kind = "NN", x = X, f = F, generator = g}
    assert.has_error(function() nn:get("decoder", 1, 1) end)
    assert.has_error(function() rule.new("hillclimb", {rate = 1}) end)
    assert.has_error(function() rule.new("hillclimb", {range = 0}) end,
                     "rule 'hillclimb': parameter 'range' must be > 0")
    assert.has_error(function() nk.new{kind = "NN", x = X, f = F, generator = g, rule = "hebb"} end,
                     "nk.new: rule 'hebb' is a connection rule, not a circuit rule")
  end)

  -- nm.models.nk's networks pass their methods on to the kernel network;
  -- passed on as tail calls, an argument error named the method '?'.
  it("name the method in an argument error through nm.models.nk", function()
    local m = nm.kernels.nk.model{n = 10, k = 3, generator = nm.generator(1)}
    local X, F = m:dataset(20, nm.generator(2))
    local net = nk.new{kind = "NN", x = X, f = F, generator = nm.generator(3)}
    local cases = {
      {"get", "bad argument #1 to 'get' (invalid option 'bad')"},
      {"set", "bad argument #1 to 'set' (invalid option 'bad')"},
      {"perturb", "bad argument #1 to 'perturb' (invalid option 'bad')"},
      {"shape", "bad argument #1 to 'shape' (invalid option 'bad')"},
      {"test_error", "bad argument #1 to 'test_error' (neuromic.Tensor expected, got string)"},
      {"set_weights", "bad argument #1 to 'set_weights' (table expected, got string)"},
    }
    for _, c in ipairs(cases) do
      local ok, msg = pcall(net[c[1]], net, "bad")
      assert.is_false(ok)
      assert.truthy(msg:find(c[2], 1, true), msg)
    end
    -- and the methods still return all their results
    local a, b, c = net:counts()
    assert.are.same({0, 0, 0}, {a, b, c})
    assert.are.equal(select("#", net:errors()), select("#", net.net:errors()))
  end)
end)

-- Two networks that start equal.
local function twins(kind, n, s, seed, k)
  local m = nm.kernels.nk.model{n = n, k = k or 3, generator = nm.generator(seed)}
  local X, F = m:dataset(s, nm.generator(seed + 1))
  local a = nm.kernels.nk.network{kind = kind, x = X, f = F, generator = nm.generator(seed + 2)}
  local b = nm.kernels.nk.network{kind = kind, x = X, f = F, generator = nm.generator(seed + 2)}
  return a, b
end

-- The same as models of nm.models.nk (rules[i]: the rule of model i).
local function model_twins(kind, n, s, seed, k, rules)
  local m = nm.kernels.nk.model{n = n, k = k or 3, generator = nm.generator(seed)}
  local X, F = m:dataset(s, nm.generator(seed + 1))
  local out = {}
  for i = 1, 2 do
    out[i] = nk.new{kind = kind, x = X, f = F, generator = nm.generator(seed + 2),
                    rule = rules and rules[i]}
  end
  return out[1], out[2]
end

-- The hill climber written only in Lua (its kernel removed).
local function lua_only()
  local def = {}
  for key, v in pairs(rule.definition("hillclimb")) do def[key] = v end
  def.kernel, def.name = nil, "hillclimb_lua"
  return def
end

local function same_cycle(x, y, where)
  for _, key in ipairs{"autoenc", "group", "i", "j", "delta", "before", "after", "kept", "tie"} do
    if x[key] ~= y[key] then
      error(string.format("%s: field %s differs: %s vs %s", where, key,
                          tostring(x[key]), tostring(y[key])), 2)
    end
  end
end

describe("a network's kept test set", function()
  for _, kind in ipairs{"NN", "NAN", "ANN"} do
    it(kind .. ": test_error() equals test_error(Xt, Ft) bit for bit as weights change", function()
      local m = nm.kernels.nk.model{n = 30, k = 4, generator = nm.generator(21)}
      local X, F = m:dataset(80, nm.generator(22))
      local Xt, Ft = m:dataset(70, nm.generator(23))
      local net = nm.kernels.nk.network{kind = kind, x = X, f = F, generator = nm.generator(24),
                                        h = 6, test_x = Xt, test_f = Ft}
      local plain = nm.kernels.nk.network{kind = kind, x = X, f = F, generator = nm.generator(24),
                                          h = 6}
      local g, g2, seen = nm.generator(25), nm.generator(25), {}
      local function check(where, twin)
        local v = net:test_error()
        assert.are.equal(net:test_error(Xt, Ft), v, where)
        if twin then assert.are.equal(plain:test_error(Xt, Ft), v, where) end
        seen[v] = true
      end
      check("start", true)
      for r = 1, 30 do          -- kept hidden changes update the kept pre-activations
        net:step(37, g)
        plain:step(37, g2)
        check("chunk " .. r, true)
      end
      net:perturb("hidden", 3, 31, 0.25)           -- a bias, set from Lua
      net:set("hidden", 1, 2, 7.5)
      check("set")
      local w = net:weights()
      w.hidden:set(2, 5, -3)
      net:set_weights(w)
      check("set_weights")
      net:step_naive(40, g)
      check("naive steps")
      net:step(200, g)
      check("after")
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      assert.is_true(n > 20)                       -- the test error moved
    end)
  end

  it("is an error when absent, malformed or not +-1", function()
    local m = nm.kernels.nk.model{n = 8, k = 2, generator = nm.generator(1)}
    local X, F = m:dataset(10, nm.generator(2))
    local net = nm.kernels.nk.network{kind = "NN", x = X, f = F, generator = nm.generator(3)}
    assert.has_error(function() net:test_error() end,
                     "bad argument #1 to 'test_error' (tensor expected: this network keeps no " ..
                     "test set (test_x, test_f of nm.kernels.nk.network))")
    local function new(tx, tf)
      return nm.kernels.nk.network{kind = "NN", x = X, f = F, generator = nm.generator(3),
                                   test_x = tx, test_f = tf}
    end
    assert.has_error(function() new(X) end)
    assert.has_error(function() new(nil, F) end)
    assert.has_error(function() new(nm.zeros(10, 9, "float64"), F) end)
    assert.has_error(function() new(X, nm.zeros(9, "float64")) end)
    local ok, e = pcall(new, nm.zeros(10, 8, "float64"), F)
    assert.is_false(ok)
    assert.matches("test inputs must be -1 or 1", e, 1, true)
    assert.are.equal(net:test_error(X, F), new(X, F):test_error())
  end)
end)

describe("the hill climber", function()
  for _, kind in ipairs{"NN", "NAN", "ANN"} do
    it(kind .. ": incremental and naive scoring take every decision alike", function()
      local a, b = twins(kind, 24, 150, 40)
      local ga, gb = nm.generator(77), nm.generator(77)
      local kept = 0
      for c = 1, 2500 do
        a:step(1, ga)
        b:step_naive(1, gb)
        same_cycle(a:last(), b:last(), kind .. " cycle " .. c)
        if a:last().kept then kept = kept + 1 end
      end
      assert.is_true(kept > 100)
      assert.are.same({a:counts()}, {b:counts()})
      local wa, wb = a:weights(), b:weights()
      for name, t in pairs(wa) do assert.are.same(t:totable(), wb[name]:totable()) end
      -- the kept errors are those of a full pass, bit for bit
      local t1, m1, r1 = a:errors()
      local t2, m2, r2 = a:naive()
      assert.are.equal(t1, t2)
      assert.are.equal(m1, m2)
      assert.are.same(r1, r2)
      -- and learning happened
      local start = twins(kind, 24, 150, 40)
      assert.is_true(t1 < start:errors() * 0.5)
    end)

    it(kind .. ": the rule's step and its kernel take every decision alike", function()
      local a, b = model_twins(kind, 10, 60, 50)
      local ga, gb = nm.generator(5), nm.generator(5)
      for c = 1, 600 do
        a:run(ga, 1)
        local d = b:cycle(gb)
        same_cycle(a:last(), d, kind .. " cycle " .. c)
        same_cycle(b:last(), d, kind .. " cycle " .. c)
      end
      local wa, wb = a:weights(), b:weights()
      for name, t in pairs(wa) do assert.are.same(t:totable(), wb[name]:totable()) end
      assert.are.equal(ga:uniform(), gb:uniform())
      assert.are.same({a:counts()}, {b:counts()})
    end)
  end

  -- The kernels score NK_BLOCK (32) columns at a time over tiles of samples:
  -- N over several blocks with a partial last one, S neither a multiple of
  -- the tile (8) nor of the 16-sample partial sums, and S a multiple of 8
  -- whose last partial sum ends inside a tile.
  for _, case in ipairs{{70, 61}, {45, 40}} do
    for _, kind in ipairs{"NAN", "ANN"} do
      it(string.format("%s: incremental and naive scoring agree at N = %d, S = %d", kind,
                       case[1], case[2]), function()
        local a, b = twins(kind, case[1], case[2], 43)
        local ga, gb = nm.generator(78), nm.generator(78)
        local hidden = 0
        for c = 1, 400 do
          a:step(1, ga)
          b:step_naive(1, gb)
          same_cycle(a:last(), b:last(), kind .. " cycle " .. c)
          if a:last().group == "hidden" then hidden = hidden + 1 end
        end
        assert.is_true(hidden > 50)
        local t1, m1, r1 = a:errors()
        local t2, m2, r2 = a:naive()
        assert.are.equal(t1, t2)
        assert.are.equal(m1, m2)
        assert.are.same(r1, r2)
      end)
    end
  end

  it("keeps ties with probability 0.5, alike in both forms", function()
    -- saturated hidden neurons: changing an input weight changes nothing
    local a, b = model_twins("NAN", 16, 80, 60)
    for _, net in ipairs{a, b} do
      for h = 1, 10 do net:set("hidden", h, 17, 60000) end
    end
    local ga, gb = nm.generator(9), nm.generator(9)
    local ties, kept = 0, 0
    for c = 1, 1500 do
      a:run(ga, 1)
      local d = b:cycle(gb)
      same_cycle(a:last(), d, "cycle " .. c)
      if d.tie then
        ties = ties + 1
        if d.kept then kept = kept + 1 end
      end
    end
    assert.are.equal(ties, select(3, a:counts()))
    assert.is_true(ties > 100)
    assert.is_true(kept > 0.3 * ties and kept < 0.7 * ties)
  end)

  it("follows the documented draw order", function()
    local a = twins("NAN", 12, 30, 70)
    local g, r = nm.generator(4), nm.generator(4)
    for _ = 1, 50 do
      a:step(1, g)
      local last = a:last()
      local autoenc = r:uniform() < 0.5
      assert.are.equal(autoenc, last.autoenc)
      if autoenc then
        assert.are.equal(r:integer(0, 9) + 1, last.i)
        local j = r:integer(0, 36)
        assert.are.equal(j <= 12 and "hidden" or "decoder", last.group)
        assert.are.equal(j <= 12 and j + 1 or j - 12, last.j)
      else
        assert.are.equal("output", last.group)
        assert.are.equal(r:integer(0, 10) + 1, last.j)
      end
      assert.are.equal(2 * r:uniform() - 1, last.delta)
      if last.tie then r:uniform() end
      if last.kept then assert.is_true(last.after <= last.before)
      else assert.is_true(last.after >= last.before) end
    end
  end)

  it("computes full passes exactly with huge hidden weights (integer path, not BLAS)", function()
    -- full passes take the hidden layer from one double product while every
    -- neuron's sum of |weights| stays below 2^52 quanta (exact in any
    -- order), else from the integer loop; the caches always from integers
    for _, kind in ipairs{"NN", "NAN", "ANN"} do
      local m = nm.kernels.nk.model{n = 24, k = 3, generator = nm.generator(5)}
      local X, F = m:dataset(150, nm.generator(6))
      local net = nm.kernels.nk.network{kind = kind, x = X, f = F, generator = nm.generator(7)}
      for j = 1, 25 do net:set("hidden", 2, j, (j % 2 == 0 and 1 or -1) * 60000 * (1 + j / 1e4)) end
      net:refresh()
      local t1, m1, r1 = net:errors()
      local t2, m2, r2 = net:naive()
      assert.are.equal(t1, t2)
      assert.are.equal(m1, m2)
      assert.are.same(r1, r2)
      assert.are.equal(t1, net:test_error(X, F))
      local t3 = net:test_error(X:narrow(1, 1, 70), F:narrow(1, 1, 70))   -- chunks of 64 and 6
      assert.is_true(t3 > 0)
      -- and back below the bound (BLAS), alike
      for j = 1, 25 do net:set("hidden", 2, j, 0.5) end
      net:refresh()
      t1, m1, r1 = net:errors()
      t2, m2, r2 = net:naive()
      assert.are.equal(t1, t2)
      assert.are.same(r1, r2)
      assert.are.equal(t1, net:test_error(X, F))
    end
  end)

  it("resumes from a saved state exactly", function()
    local a = twins("ANN", 14, 50, 80)
    local g = nm.generator(6)
    a:step(300, g)
    local st, gst = a:state(), g:state()
    a:step(200, g)
    local w1, e1 = a:weights(), a:errors()
    a:step(50, g)
    a:set_state(st)
    g:set_state(gst)
    assert.are.same({300}, {(a:counts())})
    a:step(200, g)
    assert.are.equal(e1, a:errors())
    for name, t in pairs(a:weights()) do assert.are.same(w1[name]:totable(), t:totable()) end
    assert.are.equal(500, (a:counts()))
  end)

  it("runs its rule by kernel or step, and a rule written only in Lua, alike", function()
    for _, kind in ipairs{"NN", "NAN", "ANN"} do
      local a, b = model_twins(kind, 10, 40, 90)
      local ka = a:run(nm.generator(3), 200)
      local kb = b:run(nm.generator(3), 200, {fused = false})
      assert.are.equal(ka, kb)
      assert.are.equal(a:errors(), (b:errors()))
      assert.are.same({a:counts()}, {b:counts()})
      local c = model_twins(kind, 10, 40, 90, nil, {lua_only()})
      assert.are.equal(ka, c:run(nm.generator(3), 200))
      assert.are.same({a:counts()}, {c:counts()})
      for name, t in pairs(a:weights()) do assert.are.same(t:totable(), c:weights()[name]:totable()) end
    end
  end)

  it("takes the rule by name, path or instance, with its range", function()
    local m = nm.kernels.nk.model{n = 8, k = 2, generator = nm.generator(1)}
    local X, F = m:dataset(20, nm.generator(2))
    local dir = debug.getinfo(1, "S").source:match("^@(.*)spec/[^/]*$") or "./"
    local a = nk.new{kind = "NAN", x = X, f = F, generator = nm.generator(3), range = 0.25,
                     rule = dir .. "rules/hillclimb.lua"}
    assert.are.equal(0.25, a.rule.p.range)
    assert.are.equal(0.25, a.net:info().range)
    local b = nk.new{kind = "NAN", x = X, f = F, generator = nm.generator(3),
                     rule = rule.new("hillclimb", {range = 0.5})}
    assert.are.equal(0.5, b.net:info().range)
    local d = b:cycle(nm.generator(4))
    assert.is_true(math.abs(d.delta) <= 0.5)
  end)
end)

describe("experiments/nan_nk.lua --rules", function()
  local support = require "spec.support"
  local json = require "nm.json"
  local run, tmp = support.experiment("nan_nk.lua")
  local read, write = support.read_file, support.write_file

  -- The hill climber copied into a user's file without its kernel: the
  -- grid runs it through its Lua step and finds the same test errors.
  it("runs a user's rule file beside the hill climber, with the same tables", function()
    os.execute(string.format("mkdir -p %q", tmp))
    local src = read(support.root .. "/rules/hillclimb.lua")
    src = src:gsub('name = "hillclimb"', 'name = "my_hc"')
             :gsub("\n  kernel = function%(s, p, cycles%)\n.-\n  end,\n", "\n")
    assert.is_nil(src:find("kernel", 1, true) and src:find("s.net:step", 1, true))
    write(tmp .. "/my_hc.lua", src)
    local out = tmp .. "/out"
    local args = "--quick --nets NAN --grid-n 20 --grid-k 1 --fig5-n 20 --fig5-k 1 --fig7-n 20 " ..
                 "--fig7-k 1 --runs 3 --cycles 100 --eval-every 50 --early 50 --samples 40 " ..
                 "--out " .. out .. " --rules hillclimb," .. tmp .. "/my_hc.lua"
    assert.equal(0, run(args))
    local findings = read(out .. "/findings.md")
    local row = findings:match("### NAN%+my_hc vs NAN.-\n| 20 | 1 | ([^\n]*)")
    assert.is_string(row, findings)
    local a, b = row:match("^(%S+ %[[^%]]*%]) | (%S+ %[[^%]]*%])")
    assert.equal(a, b)
    local r = json.read_file(out .. "/results.json")
    assert.same({"hillclimb", tmp .. "/my_hc.lua"}, r.options.rules)
    write(tmp .. "/bad.lua", 'return {kind = "circuit", name = "bad", model = "nk", params = {}}')
    assert.equal(2, run("--quick --rules " .. tmp .. "/bad.lua --out " .. out .. "-bad"))
    local log = read(tmp .. ".log")
    assert.matches("nan_nk: " .. tmp .. "/bad.lua: circuit rule 'bad': field 'step'", log, 1, true)
    assert.equal(2, run("--quick --rules bmvr --out " .. out .. "-bad"))
    assert.matches("nan_nk: bmvr: rule 'bmvr' is a circuit rule of model 'bmvr', not of model 'nk'",
                   read(tmp .. ".log"), 1, true)
    os.execute(string.format("rm -rf %q %q", tmp, tmp .. ".log"))
  end)

  -- The findings' mean-predictor column comes from the cells' records;
  -- a grid whose cells lack them (older runs) makes the data again and
  -- writes the same tables.
  it("takes the mean predictor's MSE from the cells, equal to the data made again", function()
    os.execute(string.format("mkdir -p %q", tmp))
    local out = tmp .. "/out"
    local args = "--quick --nets NAN,NN --grid-n 20 --grid-k 1,5 --fig5-n 20 --fig5-k 1 " ..
                 "--fig7-n 20 --fig7-k 5 --runs 3 --cycles 60 --eval-every 30 --early 30 " ..
                 "--samples 40 --jobs 2"
    assert.equal(0, run(args .. " --out " .. out))
    -- each cell's value against the data of its point (nan_nk's point_seed)
    local lines, checked = {}, 0
    for line in read(out .. "/grid/sweep.jsonl"):gmatch("[^\n]+") do
      local r = json.decode(line)
      local n, k = tonumber(r.options.n), tonumber(r.options.k)
      local g = nm.generator((r.seed * 1000003 + n) * 1009 + k)
      local m = nm.kernels.nk.model{n = n, k = k, generator = g}
      local _, Ftr = m:dataset(40, g)
      local _, Fte = m:dataset(40, g)
      local mean, se = Ftr:mean(), 0
      for i = 1, 40 do se = se + (Fte:get(i) - mean) ^ 2 end
      assert.are.equal(se / 40, r.results.final.mean_mse)
      checked = checked + 1
      r.results.final.mean_mse = nil
      lines[#lines + 1] = json.encode(r)
    end
    assert.are.equal(2 * 2 * 3, checked)
    os.execute(string.format("cp -r %q %q", out .. "/grid", tmp .. "/old"))
    write(tmp .. "/old/sweep.jsonl", table.concat(lines, "\n") .. "\n")
    assert.equal(0, run(args .. " --out " .. tmp .. "/again --grid-dir " .. tmp .. "/old"))
    local function tables(path)   -- the findings less the line with the grid's wall time
      return (read(path):gsub("Grid wall time[^\n]*", ""))
    end
    assert.are.equal(tables(out .. "/findings.md"), tables(tmp .. "/again/findings.md"))
    assert.matches("| 20 | 5 |", read(out .. "/findings.md"), 1, true)
    os.execute(string.format("rm -rf %q %q", tmp, tmp .. ".log"))
  end)
end)
