-- spec/rules_spec.lua: the rule mechanism (nm.rule), the rule files in
-- rules/, the fused kernels against the Lua forms, masks and switches,
-- Oja's rule against power iteration, the optimisers against hand
-- computations.

local nm = require "neuromic"
local nn = require "nm.nn"
local rule = require "nm.rule"
local optim = require "nm.optim"
local checkpoint = require "nm.checkpoint"

-- A connection and a quantities table with random activity.
local function setup(name, params, o)
  local dtype = o.dtype or "float64"
  local g = nm.generator(o.seed or 1)
  local conn = nn.connection{pre = 7, post = 5, gen = g, dtype = dtype,
                             density = o.masked and 0.6 or nil, rule = name, params = params}
  local ag = nm.generator(1000 + (o.seed or 1))
  local B = o.batch
  local pre, post, err = nm.randn(ag, B, 7, dtype), nm.randn(ag, B, 5, dtype), nm.randn(ag, B, 5, dtype)
  local q = rule.quantities(conn)
  q.pre, q.pre_t, q.post, q.post_t, q.a = pre, pre:t(), post, post:t(), post
  q.error, q.error_t, q.batch, q.ones = err, err:t(), B, nm.ones(B, dtype)
  q.state = conn.state
  if o.mod == "tensor" then q.mod = nm.rand(ag, B, 5, dtype)
  elseif o.mod then q.mod = o.mod end
  return conn, q
end

-- A temporary directory holding rule files (name -> source); removed by
-- the returned function.
local function rule_dir(files)
  local dir = os.tmpname()
  os.remove(dir)
  nm.sys.mkdir(dir)
  local paths = {}
  for name, src in pairs(files) do
    paths[name] = dir .. "/" .. name .. ".lua"
    local f = assert(io.open(paths[name], "w"))
    f:write(src)
    f:close()
  end
  return dir, paths, function()
    for _, path in pairs(paths) do os.remove(path) end
    os.remove(dir)
  end
end

describe("rule files", function()
  local names = rule.list()

  it("rules/ holds every shipped rule (the list is read from the directory)", function()
    local set = {}
    for _, n in ipairs(names) do set[n] = true end
    for _, n in ipairs{"backprop", "fa", "dfa", "sign_symmetry", "hebb", "oja", "three_factor",
                       "bmvr", "folded_ae", "hillclimb", "dendritic_prediction", "apical_silencing", "motifs",
                       "rcn"} do
      assert.is_true(set[n], n)
    end
  end)

  for _, name in ipairs(names) do
    it(name .. " validates and documents its kind, equation, paper and parameters", function()
      local def = rule.definition(name)
      assert.same({}, rule.problems(def, name .. ".lua"))
      assert.equal(name, def.name)
      assert.truthy(({connection = true, circuit = true, meta = true})[def.kind])
      assert.is_true(#def.equation > 5)
      assert.truthy(def.paper:match("%d%d%d%d"))   -- a year in the citation
      for k, spec in pairs(def.params) do
        assert.is_string(spec.doc, k)
        assert.is_not_nil(spec.default, k)
      end
      local text = rule.describe(name)
      assert.truthy(text:find(def.equation, 1, true))
      assert.truthy(text:find(def.paper, 1, true))
      assert.truthy(text:find(def.kind, 1, true))
      assert.equal(def, rule.new(name).def)
    end)
  end

  it("lists by kind", function()
    local seen = {}
    for _, kind in ipairs{"connection", "circuit", "meta"} do
      for _, n in ipairs(rule.list(kind)) do
        assert.equal(kind, rule.definition(n).kind)
        assert.is_nil(seen[n])
        seen[n] = kind
      end
    end
    for _, n in ipairs(names) do assert.is_not_nil(seen[n], n) end
    assert.equal("connection", seen.fa)
    assert.has_error(function() rule.list("synapse") end,
      "rule.list: unknown kind 'synapse' (connection, circuit, meta)")
  end)

  it("rejects unknown parameters, wrong types and bad values", function()
    assert.has_error(function() rule.new("hebb", {etta = 1}) end,
      "rule 'hebb' has no parameter 'etta' (parameters: eta)")
    assert.has_error(function() rule.new("hebb", {eta = "fast"}) end,
      "rule 'hebb': parameter 'eta' must be a number, got string")
    assert.has_error(function() rule.new("three_factor", {factor = "pre"}) end,
      "rule 'three_factor': parameter 'factor' must be 'post' or 'error'")
    assert.has_error(function() rule.new("no_such_rule") end)
    assert.has_error(function() rule.definition("../evil") end)
  end)

  it("reports every problem of a definition at once, one line each", function()
    local ok = {kind = "connection", name = "r", equation = "dW = 0", paper = "none 2000",
                params = {}, update = function() end}
    assert.equal(ok, rule.validate(ok))
    for _, field in ipairs{"kind", "equation", "paper", "update", "params"} do
      local d = {}
      for k, v in pairs(ok) do d[k] = v end
      d[field] = nil
      local problems = rule.problems(d)
      assert.equal(1, #problems, field)
      assert.truthy(problems[1]:find("'" .. field .. "'", 1, true), problems[1])
      assert.has_error(function() rule.validate(d) end)
    end
    local lines = rule.problems({kind = "connection", name = "x", paper = "p 2000",
                                 params = {eta = {default = 1}, mu = 3}, update = 1,
                                 needs = {"pre", "spikes"}}, "rules/x.lua")
    assert.same({
      "rules/x.lua: connection rule 'x': field 'equation' (the rule as text) is missing",
      "rules/x.lua: connection rule 'x': parameter 'eta' has no doc string",
      "rules/x.lua: connection rule 'x': parameter 'mu' needs {default = ..., doc = ...}",
      "rules/x.lua: connection rule 'x': field 'update' must be function(q, p), got number",
      "rules/x.lua: connection rule 'x': field 'needs' names an unknown quantity 'spikes'",
    }, lines)
    assert.same({"rules/y.lua: rule 'x': field 'kind' must be \"connection\", \"circuit\" or " ..
                 "\"meta\", got synapse",
                 "rules/y.lua: rule 'x': field 'name' must be the file's base name 'y'"},
                rule.problems({kind = "synapse", name = "x", equation = "e", paper = "p",
                               params = {}}, "rules/y.lua"))
    assert.same({"c.lua: circuit rule 'c': field 'model' (the model whose state it reads) is missing",
                 "c.lua: circuit rule 'c': field 'step' (function(s, p)) is missing",
                 "c.lua: circuit rule 'c': give exactly one of field 'pathway' (the plastic " ..
                 "pathway it drives, a string) or 'pathways' (a list of them)"},
                rule.problems({kind = "circuit", name = "c", equation = "e", paper = "p",
                               params = {}}, "c.lua"))
    assert.same({"m.lua: meta rule 'm': field 'coefficients' (the meta-parameters' names, " ..
                 "shapes, initial values) is missing"},
                rule.problems({kind = "meta", name = "m", equation = "e", paper = "p", params = {},
                               model = "rcn", step = function() end}, "m.lua"))
    assert.same({"connection rule 'u': field 'update' (function(q, p)) is missing",
                 "connection rule 'u': field 'feedbak' is not a field of connection rules " ..
                 "(did you mean 'feedback'?)",
                 "connection rule 'u': field 'updat' is not a field of connection rules " ..
                 "(did you mean 'update'?)",
                 "connection rule 'u': field 'zzzzzz' is not a field of connection rules"},
                rule.problems({kind = "connection", name = "u", equation = "e", paper = "p",
                               params = {}, updat = function() end, feedbak = "fa", zzzzzz = 1}))
    assert.same({"a rule file must return one rule definition table, got nil"}, rule.problems(nil))
    local err = select(2, pcall(rule.validate, {kind = "connection", name = "z"}, "z.lua"))
    assert.equal(4, #rule.problems({kind = "connection", name = "z"}, "z.lua"))
    assert.equal(table.concat(rule.problems({kind = "connection", name = "z"}, "z.lua"), "\n"), err)
  end)

  it("checks a rule's error pathway", function()
    local base = {kind = "connection", name = "p", equation = "e", paper = "p 2000", params = {},
                  update = function() end}
    local function with(k, v)
      local d = {}
      for key, val in pairs(base) do d[key] = val end
      d[k] = v
      return rule.problems(d)
    end
    assert.same({}, with("feedback", "fa"))
    assert.same({}, with("feedback", "backprop"))
    assert.same(1, #with("feedback", "zigzag"))
    assert.truthy(with("feedback", "zigzag")[1]:find("no error pathway 'zigzag'", 1, true))
    assert.same({"connection rule 'p': field 'pathway': 'source' must be \"next\" (from " ..
                 "e_{l+1}) or \"output\" (from e_L)",
                 "connection rule 'p': field 'pathway': 'matrix' (function(W, state) returning M) " ..
                 "is missing"},
                with("pathway", {name = "q", doc = "d"}))
  end)

  it("loads a rule by name or path through one cache; require is not a second way", function()
    local dir, paths, done = rule_dir{
      mine = [[return {kind = "connection", name = "mine", equation = "dW = 0",
                       paper = "none 2024", params = {}, update = function() end}]],
      broken = [[return {kind = "connection", name = "broken", paper = "none 2024",
                         params = {eta = {default = 1}}}]],
      syntax = "return {",
    }
    local a = rule.definition(paths.mine)
    assert.equal("mine", a.name)
    assert.equal(a, rule.definition(dir .. "/./mine.lua"))
    local old = rule.path
    rule.path = dir .. "/?.lua;" .. old
    assert.equal(a, rule.definition("mine"))
    local set = {}
    for _, n in ipairs(rule.list()) do set[n] = true end
    assert.is_true(set.mine and set.broken and set.syntax and set.fa)
    rule.path = old
    local ok, err = pcall(rule.definition, paths.broken)
    assert.is_false(ok)
    assert.equal(paths.broken .. ": connection rule 'broken': field 'equation' (the rule as " ..
                 "text) is missing\n" ..
                 paths.broken .. ": connection rule 'broken': parameter 'eta' has no doc string\n" ..
                 paths.broken .. ": connection rule 'broken': field 'update' (function(q, p)) is " ..
                 "missing", err)
    ok, err = pcall(rule.definition, paths.syntax)
    assert.is_false(ok)
    assert.truthy(err:find(paths.syntax, 1, true))
    assert.has_error(function() rule.definition(dir .. "/none.lua") end,
      dir .. "/none.lua: no such rule file")
    done()
  end)

  it("a connection takes only connection rules", function()
    assert.has_error(function() nn.connection{pre = 2, post = 2, gen = nm.generator(1), rule = "bmvr"} end,
      "rule 'bmvr' is a circuit rule of model bmvr, not a connection rule")
    assert.has_error(function() rule.require_kind(rule.new("motifs"), "meta", "rcn") end,
      "rule 'motifs' is a meta rule of model 'motif_net', not of model 'rcn'")
  end)

  it("a new rule is a plain table: dW = eta <post pre^T> - decay W", function()
    local def = {
      kind = "connection",
      name = "hebb_decay", equation = "dW = eta <post pre^T> - lambda W", paper = "spec 2024",
      params = {eta = {default = 0.1, doc = "rate"}, lambda = {default = 0.01, doc = "decay"}},
      update = function(q, p)
        q.dW:addmm(p.eta / q.batch, q.post_t, q.pre, 0)
        q.dW:axpy(-p.lambda, q.W)
      end,
    }
    local conn, q = setup(rule.new(def, {lambda = 0.5}), nil, {batch = 3})
    local W0 = conn.W:clone()
    assert.is_true(rule.apply(conn.rule, conn, q))
    local expect = W0 * 0.5
    expect:addmm(0.1 / 3, q.post:t(), q.pre, 1)
    assert.tensor_near(expect, conn.W, 1e-12)
  end)

  it("clears dW and db before each update: a rule that adds 1 moves W by 1 per batch", function()
    local def = {kind = "connection", name = "plus_one", equation = "dW = 1", paper = "spec 2026",
                 params = {}, bias = true,
                 update = function(q) q.dW:add(1); q.db:add(1) end}
    for _, defer in ipairs{false, true} do
      local conn, q = setup(rule.new(def), nil, {batch = 2})
      local w0, b0 = conn.W:get(1, 1), conn.b:get(1)
      q.defer = defer
      for k = 1, 4 do
        rule.apply(conn.rule, conn, q)
        if defer then conn.W:add(conn.dW); conn.b:add(conn.db) end
        assert.near(w0 + k, conn.W:get(1, 1), 1e-12)
        assert.near(b0 + k, conn.b:get(1), 1e-12)
      end
    end
  end)
end)

describe("fused kernels equal their Lua rules", function()
  local cases = {
    {"backprop"}, {"fa"}, {"dfa"}, {"sign_symmetry"}, {"hebb"}, {"oja"},
    {"three_factor", nil, 0.7}, {"three_factor", {factor = "error", eta = -0.05}, "tensor"},
    {"three_factor", nil, "tensor"},
  }
  for _, c in ipairs(cases) do
    for _, masked in ipairs{false, true} do
      for _, batch in ipairs{1, 6} do
        for _, dtype in ipairs{"float64", "float32"} do
          local label = string.format("%s%s, %s, batch %d, %s", c[1],
            c[3] and (" (mod " .. tostring(c[3]) .. ")") or "", masked and "masked" or "dense",
            batch, dtype)
          it(label, function()
            local o = {masked = masked, batch = batch, dtype = dtype, mod = c[3], seed = 4}
            local cf, qf = setup(c[1], c[2], o)
            local cl, ql = setup(c[1], c[2], o)
            cl.rule.use_fused = false
            assert.is_function(cf.rule.def.fused)
            local W0, b0 = cf.W:clone(), cf.b:clone()
            for _ = 1, 3 do
              rule.apply(cf.rule, cf, qf)
              rule.apply(cl.rule, cl, ql)
            end
            local tol = dtype == "float64" and 1e-12 or 2e-5
            assert.tensor_near(cl.W, cf.W, tol)
            assert.tensor_near(cl.b, cf.b, tol)
            assert.is_true((cf.W - W0):norm() > 0)
            if cf.rule.def.bias then assert.is_true((cf.b - b0):norm() > 0)
            else assert.same(b0:totable(), cf.b:totable()) end
            if masked then
              for i = 1, 5 do
                for j = 1, 7 do
                  if cf.mask:get(i, j) == 0 then
                    assert.equal(0, cf.W:get(i, j))
                    assert.equal(0, cl.W:get(i, j))
                  end
                end
              end
            end
          end)
        end
      end
    end
  end

  it("plastic_outer and plastic_oja match naive loops (gate, mask, bias, transposed W)", function()
    local g = nm.generator(2)
    local B, m, n = 4, 3, 5
    local post, pre, gate = nm.randn(g, B, m, "float64"), nm.randn(g, B, n, "float64"),
                            nm.randn(g, B, m, "float64")
    local mask = nm.zeros(m, n, "float64"):bernoulli(g, 0.5)
    local W = nm.randn(g, n, m, "float64"):t()       -- a transposed view
    local b = nm.randn(g, m, "float64")
    local W0, b0 = W:clone(), b:clone()
    nm.kernels.plastic_outer(W, 0.3, post, pre, gate, mask, b)
    for i = 1, m do
      local sb = 0
      for s = 1, B do sb = sb + post:get(s, i) * gate:get(s, i) end
      assert.near(b0:get(i) + 0.3 * sb, b:get(i), 1e-12)
      for j = 1, n do
        local acc = 0
        for s = 1, B do acc = acc + post:get(s, i) * gate:get(s, i) * pre:get(s, j) end
        assert.near(W0:get(i, j) + 0.3 * acc * mask:get(i, j), W:get(i, j), 1e-12)
      end
    end
    W:copy(W0)
    nm.kernels.plastic_oja(W, 0.1, post, pre)
    for i = 1, m do
      for j = 1, n do
        local acc = 0
        for s = 1, B do
          local yw = 0
          for k = 1, m do yw = yw + post:get(s, k) * W0:get(k, j) end
          acc = acc + post:get(s, i) * (pre:get(s, j) - yw)
        end
        assert.near(W0:get(i, j) + 0.1 * acc, W:get(i, j), 1e-12)
      end
    end
  end)

  it("plastic_outer's bias change sums each column in double from the first sample on", function()
    -- the exact promise (same bits as the plain column loop), also past a
    -- block of 256 columns and for a post read down its columns
    local g = nm.generator(3)
    local f32 = nm.zeros(1, "float32")
    local function round(x) f32:set(1, x); return f32:get(1) end
    for _, c in ipairs{{B = 37, m = 300}, {B = 1, m = 5}, {B = 6, m = 260, transposed = true}} do
      local post = c.transposed and nm.randn(g, c.m, c.B, "float32"):t() or
                   nm.randn(g, c.B, c.m, "float32")
      local pre = nm.randn(g, c.B, 4, "float32")
      local W, b = nm.zeros(c.m, 4, "float32"), nm.randn(g, c.m, "float32")
      local b0, alpha = b:clone(), -0.37
      nm.kernels.plastic_outer(W, alpha, post, pre, nil, nil, b)
      for i = 1, c.m do
        local acc = 0
        for s = 1, c.B do acc = acc + post:get(s, i) end
        assert.equal(round(b0:get(i) + round(alpha * acc)), b:get(i))
      end
    end
  end)

  it("mul_dact (fused activation backward) equals the derivative kernels", function()
    local g = nm.generator(6)
    for _, dtype in ipairs{"float64", "float32"} do
      for _, c in ipairs{{"relu", "drelu"}, {"sigmoid", "dsigmoid"}, {"tanh", "dtanh"},
                         {"softplus", "dsoftplus", 2.5}} do
        local A = nm.randn(g, 7, 9, dtype)
        local Y = A:clone()
        if c[1] == "softplus" then Y:softplus(A, c[3]) else Y[c[1]](Y, A) end
        local E = nm.randn(g, 7, 9, dtype)
        local D = A:clone()
        if c[3] then D[c[2]](D, A, c[3]) else D[c[2]](D, A) end
        local expect = E * 1
        expect:mul(D)
        E:mul_dact(A, Y, c[1], c[3])
        assert.tensor_near(expect, E, dtype == "float64" and 1e-14 or 1e-6)
      end
      local E = nm.randn(g, 3, 3, dtype)
      local E0 = E:clone()
      E:mul_dact(E0, E0, "identity")
      assert.same(E0:totable(), E:totable())
    end
    assert.has_error(function() nm.zeros(2, 3):mul_dact(nm.zeros(3, 2), nm.zeros(2, 3), "relu") end)
    assert.has_error(function() nm.zeros(2, 3):mul_dact(nm.zeros(2, 3), nm.zeros(2, 3), "swish") end)
  end)

  it("reports bad operands naming the shapes", function()
    local W = nm.zeros(3, 4)
    assert.has_error(function() nm.kernels.plastic_outer(W, 1, nm.zeros(5, 3), nm.zeros(5, 5)) end,
      "bad argument #4 to 'plastic_outer' (pre size differs from the weight's columns: " ..
      "W [3 x 4], post [5 x 3], pre [5 x 5])")
    assert.has_error(function() nm.kernels.plastic_outer(W, 1, nm.zeros(5, 3), nm.zeros(5, 4), nil, nm.zeros(4, 3)) end,
      "bad argument #6 to 'plastic_outer' (mask must have the shape of the weight: " ..
      "W [3 x 4], post [5 x 3], pre [5 x 4], mask [4 x 3])")
    assert.has_error(function() nm.kernels.plastic_oja(W, 1, nm.zeros(2, 3), nm.zeros(3, 4)) end)
    assert.has_error(function() nm.kernels.plastic_outer(W, 1, nm.zeros(5, 3, "float64"), nm.zeros(5, 4)) end)
  end)
end)

describe("rule.apply", function()
  it("leaves switched-off connections and test phases alone", function()
    local conn, q = setup("hebb", {eta = 1}, {batch = 2})
    local W0 = conn.W:clone()
    conn.plastic = false
    assert.is_false(rule.apply(conn.rule, conn, q))
    assert.same(W0:totable(), conn.W:totable())
    conn.plastic = true
    rule.set_learning(false)
    assert.is_false(rule.learning())
    assert.is_false(rule.apply(conn.rule, conn, q))
    assert.same(W0:totable(), conn.W:totable())
    rule.set_learning(true)
    assert.is_true(rule.apply(conn.rule, conn, q))
    assert.are_not.same(W0:totable(), conn.W:totable())
  end)

  it("deferred: writes dW (masked) and db, leaves W to the caller", function()
    local conn, q = setup("backprop", {eta = 0.5}, {batch = 3, masked = true})
    local W0 = conn.W:clone()
    q.defer = true
    rule.apply(conn.rule, conn, q)
    assert.same(W0:totable(), conn.W:totable())
    local expect = nm.zeros(5, 7, "float64"):addmm(-0.5 / 3, q.error:t(), q.pre, 0)
    expect:mul(conn.mask)
    assert.tensor_near(expect, conn.dW, 1e-12)
    local db = nm.zeros(5, "float64"):addmv(-0.5 / 3, q.error:t(), q.ones, 0)
    assert.tensor_near(db, conn.db, 1e-12)
  end)

  it("names the quantity a rule needs and does not get", function()
    local conn, q = setup("backprop", nil, {batch = 2})
    q.error, q.error_t = nil, nil
    assert.has_error(function() rule.apply(conn.rule, conn, q) end,
      "rule 'backprop' needs quantity 'error', which this connection does not provide")
  end)

  -- Regression: three_factor kept its scratch (and a transposed view of
  -- it) in the rule state, so a checkpoint held them and loading it into a
  -- fresh connection failed ("has no tensor to load into").
  it("three_factor with a tensor modulator resumes from a checkpoint to the same weights", function()
    local a, qa = setup("three_factor", nil, {batch = 3, mod = "tensor"})
    local g = nm.generator(77)
    a.rule.use_fused = false                 -- the Lua form (as under an optimiser)
    rule.apply(a.rule, a, qa)
    local saved = checkpoint.decode(checkpoint.encode(a:state_table()))
    local b, qb = setup("three_factor", nil, {batch = 3, mod = "tensor", seed = 9})
    b.rule.use_fused = false
    b:load_state_table(saved)                -- into a fresh connection, as a resumed run does
    qb.pre, qb.pre_t, qb.post, qb.post_t = qa.pre, qa.pre_t, qa.post, qa.post_t
    for _ = 1, 2 do
      local m = nm.rand(g, 3, 5, "float64")
      qa.mod, qb.mod = m, m
      rule.apply(a.rule, a, qa)
      rule.apply(b.rule, b, qb)
      assert.same(a.W:totable(), b.W:totable())
    end
  end)

  it("low-pass filters a rule's change", function()
    local conn, q = setup(rule.lowpass("hebb", {tau = 4}), nil, {batch = 2})
    assert.equal("hebb+lowpass", conn.rule.name)
    local W0 = conn.W:clone()
    rule.apply(conn.rule, conn, q)
    rule.apply(conn.rule, conn, q)
    local c = nm.zeros(5, 7, "float64"):addmm(0.01 / 2, q.post:t(), q.pre, 0)
    -- dWbar_1 = c/4, dWbar_2 = 3c/16 + c/4: W = W0 + 11/16 c
    assert.tensor_near(W0 + c * (11 / 16), conn.W, 1e-14)
    local one = setup(rule.lowpass("hebb", {tau = 1}), nil, {batch = 2})
    assert.is_not_nil(one)
    assert.has_error(function() rule.lowpass("hebb", {tau = 0.5}) end, "rule.lowpass: tau must be >= 1")
  end)
end)

describe("Oja's subspace rule", function()
  it("converges to the principal subspace found by power iteration", function()
    local g = nm.generator(31)
    local n, m, N = 6, 2, 400
    -- data with a clear spectrum: x = Q diag(s) z, Q random orthogonal
    local Q = nm.randn(g, n, n, "float64")
    for j = 1, n do                                   -- Gram-Schmidt on columns
      local qj = Q:col(j)
      for k = 1, j - 1 do qj:axpy(-qj:dot(Q:col(k)), Q:col(k)) end
      qj:scale(1 / qj:norm())
    end
    local s = nm.tensor({3, 2, 0.6, 0.4, 0.3, 0.2}, "float64")
    local Z = nm.randn(g, N, n, "float64")
    for i = 1, N do Z:row(i):mul(s) end
    local X = nm.mm(Z, Q:t())                         -- rows x_i = Q (s .* z_i)
    -- sample covariance and its top m eigenvectors by power iteration with deflation
    local C = nm.mm(X:t(), X):scale(1 / N)
    local U = nm.zeros(n, m, "float64")
    local Cd = C:clone()
    for k = 1, m do
      local v = nm.ones(n, "float64")
      for _ = 1, 500 do
        local w = nm.mv(Cd, v)
        v = w:scale(1 / w:norm())
      end
      U:col(k):copy(v)
      local lambda = v:dot(nm.mv(Cd, v))
      Cd:addr(-lambda, v, v)
    end
    local conn = nn.connection{pre = n, post = m, bias = false, gen = g, dtype = "float64",
                               init = "normal", std = 0.1, rule = "oja", params = {eta = 0.02}}
    local Y = nm.zeros(10, m, "float64")
    local q = rule.quantities(conn)
    q.post, q.post_t, q.batch, q.state = Y, Y:t(), 10, conn.state
    for epoch = 1, 80 do
      if epoch == 61 then conn.rule.p.eta = 0.002 end   -- anneal: less jitter
      for first = 1, N, 10 do
        local xb = X:narrow(1, first, 10)
        Y:addmm(1, xb, conn.W:t(), 0)               -- y = W x
        q.pre, q.pre_t = xb, xb:t()
        rule.apply(conn.rule, conn, q)
      end
    end
    local W = conn.W
    assert.tensor_near(nm.eye(m, m, "float64"), nm.mm(W, W:t()), 0.02)   -- orthonormal rows
    local Pw, Pu = nm.mm(W:t(), W), nm.mm(U, U:t())
    assert.is_true((Pw - Pu):norm() < 0.02)          -- same subspace
  end)
end)

describe("optimisers", function()
  local function t(v) return nm.tensor(v, "float64") end

  it("SGD: plain, momentum and decay eta0/(1+t/t0) by hand", function()
    local p = t{1, -2}
    local opt = optim.sgd{lr = 0.1}
    opt:step({p}, {t{0.5, -1}})
    assert.tensor_near({0.95, -1.9}, p, 1e-15)
    p = t{1}
    opt = optim.sgd{lr = 0.1, momentum = 0.9}
    opt:step({p}, {t{2}})                  -- v = -2, p = 1 - 0.2
    opt:step({p}, {t{1}})                  -- v = -1.8 - 1 = -2.8, p = 0.8 - 0.28
    assert.tensor_near({0.52}, p, 1e-15)
    p = t{0}
    opt = optim.sgd{lr = 1, t0 = 2}
    opt:step({p}, {t{1}})                  -- lr 1
    opt:step({p}, {t{1}})                  -- lr 1 / 1.5
    opt:step({p}, {t{1}})                  -- lr 1 / 2
    assert.near(-(1 + 1 / 1.5 + 0.5), p:get(1), 1e-15)
    assert.near(1 / 2.5, opt:current_lr(), 1e-15)
  end)

  it("Adam: the first two steps in closed form", function()
    local g1, g2 = {0.5, -3, 1e-3}, {-1, 2, 4e-3}
    local p = t{1, 2, 3}
    local lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    local opt = optim.adam{lr = lr}
    opt:step({p}, {t(g1)})
    local expect1 = {}
    for i = 1, 3 do expect1[i] = ({1, 2, 3})[i] - lr * g1[i] / (math.abs(g1[i]) + eps) end
    assert.tensor_near(expect1, p, 1e-13)
    opt:step({p}, {t(g2)})
    for i = 1, 3 do
      local m = b1 * (1 - b1) * g1[i] + (1 - b1) * g2[i]
      local v = b2 * (1 - b2) * g1[i] ^ 2 + (1 - b2) * g2[i] ^ 2
      local mh, vh = m / (1 - b1 ^ 2), v / (1 - b2 ^ 2)
      assert.near(expect1[i] - lr * mh / (math.sqrt(vh) + eps), p:get(i), 1e-13)
    end
  end)

  it("Adam's fused C step equals its Lua form", function()
    for _, dtype in ipairs{"float64", "float32"} do
      local g = nm.generator(3)
      local pf, pl = nm.randn(g, 4, 5, dtype), nil
      pl = pf:clone()
      local fused, plain = optim.adam{lr = 0.01, t0 = 5}, optim.adam{lr = 0.01, t0 = 5, fused = false}
      for _ = 1, 5 do
        local d = nm.randn(g, 4, 5, dtype)
        fused:apply({pf}, {d})
        plain:apply({pl}, {d})
      end
      assert.tensor_near(pl, pf, dtype == "float64" and 1e-14 or 1e-6)
      assert.tensor_near(plain.m[1], fused.m[1], dtype == "float64" and 1e-15 or 1e-6)
      assert.tensor_near(plain.v[1], fused.v[1], dtype == "float64" and 1e-15 or 1e-6)
    end
  end)

  it("apply(deltas) is step(-deltas); inactive entries are skipped", function()
    for _, make in ipairs{function() return optim.adam{lr = 0.1} end,
                          function() return optim.sgd{lr = 0.5, momentum = 0.5} end} do
      local a, b, frozen = t{1, 2}, t{1, 2}, t{5}
      local oa, ob = make(), make()
      for k = 1, 3 do
        oa:step({a, frozen}, {t{k, -k}, t{1}}, {true, false})
        ob:apply({b}, {t{-k, k}})
      end
      assert.tensor_near(a, b, 1e-15)
      assert.same({5}, frozen:totable())
    end
  end)

  it("state survives a checkpoint: continuing gives identical parameters", function()
    for _, name in ipairs{"adam", "momentum"} do
      local p1, p2 = t{1, 2, 3}, nil
      local o1 = optim.new(name, {lr = 0.1, t0 = 10})
      for k = 1, 3 do o1:step({p1}, {t{k, 1, -k}}) end
      local saved = checkpoint.decode(checkpoint.encode{opt = o1:state(), p = p1})
      p2 = saved.p
      local o2 = optim.new(name, {lr = 0.1, t0 = 10})
      o2:load_state(saved.opt)
      for k = 4, 6 do
        o1:step({p1}, {t{k, -1, 2}})
        o2:step({p2}, {t{k, -1, 2}})
      end
      assert.same(p1:totable(), p2:totable())
    end
    assert.has_error(function() optim.adam():load_state(optim.sgd():state()) end)
  end)

  it("rejects bad options", function()
    assert.has_error(function() optim.sgd{momentum = 1} end)
    assert.has_error(function() optim.adam{lr = -1} end)
    assert.has_error(function() optim.new("rmsprop") end)
  end)
end)
