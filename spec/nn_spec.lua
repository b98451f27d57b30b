-- spec/nn_spec.lua: networks (nm.nn): backprop gradients against central
-- finite differences, FA with B = W against BP, DFA on a hand-computed
-- case, single-sample against batch passes, allocation-free training
-- loops, masks, plasticity switches, state round trips, errors; and
-- checkpoint/resume of a short baselines run.

local nm = require "neuromic"
local nn = require "nm.nn"
local rule = require "nm.rule"
local optim = require "nm.optim"
local checkpoint = require "nm.checkpoint"
local measures = require "nm.measures"

local function onehot(B, C, seed, dtype)
  local T = nm.zeros(B, C, dtype or "float64")
  for i = 1, B do T:set(i, (i * 7 + seed) % C + 1, 1) end
  return T
end

-- Analytic gradients from the explicit backward pass: dL/dW_l =
-- E_l^T Y_{l-1} / B, dL/db_l = column means of E_l.
local function analytic_grads(net)
  local bs, G = net.cur, {}
  for l = 1, net.L do
    local gw = nm.zeros(net.sizes[l], net.sizes[l - 1], "float64")
    gw:addmm(1 / bs.B, bs.E[l]:t(), bs.Y[l - 1], 0)
    local gb = nm.zeros(net.sizes[l], "float64")
    gb:addmv(1 / bs.B, bs.E[l]:t(), bs.ones, 0)
    G[l] = {W = gw, b = gb}
  end
  return G
end

-- Largest |analytic - central difference| over every weight and bias.
local function max_fd_error(net, X, T)
  net:forward(X)
  net:backward(T, "bp")
  local G = analytic_grads(net)
  local h, worst = 1e-6, 0
  local function loss()
    net:forward(X)
    return net:loss_value(T)
  end
  for l = 1, net.L do
    local c = net.conns[l]
    for i = 1, c.n_post do
      for j = 1, c.n_pre do
        local w = c.W:get(i, j)
        c.W:set(i, j, w + h); local lp = loss()
        c.W:set(i, j, w - h); local lm = loss()
        c.W:set(i, j, w)
        worst = math.max(worst, math.abs((lp - lm) / (2 * h) - G[l].W:get(i, j)))
      end
      local b = c.b:get(i)
      c.b:set(i, b + h); local lp = loss()
      c.b:set(i, b - h); local lm = loss()
      c.b:set(i, b)
      worst = math.max(worst, math.abs((lp - lm) / (2 * h) - G[l].b:get(i)))
    end
  end
  return worst
end

local allocated = require("spec.support").allocated

describe("nn.mlp", function()
  describe("backprop gradients equal central finite differences (float64)", function()
    local cases = {
      {act = "sigmoid", out = "softmax", loss = "xent"},
      {act = "tanh", out = "identity", loss = "mse"},
      {act = "relu", out = "sigmoid", loss = "mse"},
      {act = {"softplus", beta = 2}, out = "softmax", loss = "mse"},
      {act = "identity", out = "tanh", loss = "mse"},
      {act = "softmax", out = "softmax", loss = "xent"},
      {acts = {"tanh", "relu"}, out = "softplus", loss = "mse"},
    }
    for k, c in ipairs(cases) do
      local actname = type(c.act) == "table" and c.act[1] or c.act or table.concat(c.acts, "+")
      it(string.format("%s hidden, %s output, %s loss", actname, c.out, c.loss), function()
        local g = nm.generator(100 + k)
        local net = nn.mlp{sizes = {4, 5, 3, 3}, act = c.act, acts = c.acts, out = c.out,
                           loss = c.loss, gen = g, dtype = "float64"}
        local X = nm.randn(g, 6, 4, "float64")
        local T = c.loss == "xent" and onehot(6, 3, k) or nm.rand(g, 6, 3, "float64")
        assert.is_true(max_fd_error(net, X, T) < 1e-7)
      end)
    end
  end)

  it("FA with B = W gives exactly the BP errors and updates", function()
    local g = nm.generator(7)
    local bp = nn.mlp{sizes = {6, 5, 4, 3}, act = "tanh", gen = g, dtype = "float64",
                      rule = "backprop", params = {eta = 0.3}}
    local fa = nn.mlp{sizes = {6, 5, 4, 3}, act = "tanh", gen = nm.generator(99),
                      dtype = "float64", rule = "fa", params = {eta = 0.3}}
    fa:load_state(bp:state())
    for l = 2, 3 do fa.paths.fa.state[l - 1].B:copy(bp.conns[l].W) end
    assert.equal("fa", fa.feedback)
    local X, T = nm.randn(g, 8, 6, "float64"), onehot(8, 3, 1)
    bp:forward(X); bp:backward(T)
    fa:forward(X); fa:backward(T)
    for l = 1, 3 do assert.same(bp.cur.E[l]:totable(), fa.cur.E[l]:totable()) end
    bp:update(); fa:update()
    for l = 1, 3 do
      assert.same(bp.conns[l].W:totable(), fa.conns[l].W:totable())
      assert.same(bp.conns[l].b:totable(), fa.conns[l].b:totable())
    end
  end)

  it("DFA, FA and BP errors match a hand computation on a small case", function()
    local net = nn.mlp{sizes = {3, 2, 2}, act = "tanh", out = "softmax", loss = "xent",
                       gen = nm.generator(1), dtype = "float64"}
    local W1 = {{0.5, -0.2, 0.1}, {0.3, 0.8, -0.5}}
    local b1 = {0.1, -0.1}
    local W2 = {{1.0, -1.5}, {0.7, 0.2}}
    local b2 = {0.05, 0.0}
    local B2 = {{-0.4, 0.9}, {0.6, 0.3}}
    local D1 = {{0.2, -0.7}, {1.1, 0.4}}     -- n_1 x n_L
    net.conns[1].W:copy(nm.tensor(W1, "float64")); net.conns[1].b:copy(nm.tensor(b1, "float64"))
    net.conns[2].W:copy(nm.tensor(W2, "float64")); net.conns[2].b:copy(nm.tensor(b2, "float64"))
    net.paths.fa.state[1].B:copy(nm.tensor(B2, "float64"))
    net.paths.dfa.state[1].Dt:t():copy(nm.tensor(D1, "float64"))
    local x, t = {1.0, -2.0, 0.5}, {0, 1}
    -- naive reference
    local a1, y1 = {}, {}
    for i = 1, 2 do
      a1[i] = b1[i]
      for j = 1, 3 do a1[i] = a1[i] + W1[i][j] * x[j] end
      y1[i] = math.tanh(a1[i])
    end
    local a2, z = {}, 0
    for i = 1, 2 do
      a2[i] = b2[i]
      for j = 1, 2 do a2[i] = a2[i] + W2[i][j] * y1[j] end
      z = z + math.exp(a2[i])
    end
    local e2 = {}
    for i = 1, 2 do e2[i] = math.exp(a2[i]) / z - t[i] end
    local function hidden(M, transpose)
      local e = {}
      for i = 1, 2 do
        local s = 0
        for k = 1, 2 do s = s + (transpose and M[k][i] or M[i][k]) * e2[k] end
        e[i] = s * (1 - math.tanh(a1[i]) ^ 2)
      end
      return e
    end
    local X, T = nm.tensor({x, x}, "float64"), nm.tensor({t, t}, "float64")
    net:forward(X)
    local S2 = {{1, -1}, {1, 1}}             -- sign(W2)
    for _, case in ipairs{{"bp", hidden(W2, true)}, {"fa", hidden(B2, true)},
                          {"dfa", hidden(D1, false)}, {"sign_symmetry", hidden(S2, true)}} do
      net:backward(T, case[1])
      assert.tensor_near({e2, e2}, net.cur.E[2], 1e-14)
      assert.tensor_near({case[2], case[2]}, net.cur.E[1], 1e-14)
    end
  end)

  it("takes an error pathway defined by a user's rule file", function()
    local pw = {name = "half_bp", doc = "W_{l+1}^T / 2", source = "next",
                init = function(rows, cols, dtype) return {M = nm.zeros(rows, cols, dtype)} end,
                matrix = function(W, st) return st.M:scale(W, 0.5) end}
    local def = {kind = "connection", name = "half", equation = "delta rule, e through W/2",
                 paper = "spec 2026", params = {eta = {default = 0.1, doc = "rate"}},
                 pathway = pw, bias = true, update = rule.definition("backprop").update}
    local g = nm.generator(5)
    local net = nn.mlp{sizes = {4, 3, 2}, act = "tanh", gen = nm.generator(8), dtype = "float64",
                       rule = rule.new(def)}
    local ref = nn.mlp{sizes = {4, 3, 2}, act = "tanh", gen = nm.generator(8), dtype = "float64"}
    assert.equal("half_bp", net.feedback)
    assert.same(ref.conns[1].W:totable(), net.conns[1].W:totable())
    local X, T = nm.randn(g, 5, 4, "float64"), onehot(5, 2, 1)
    net:forward(X); net:backward(T)
    ref:forward(X); ref:backward(T)
    assert.tensor_near(ref.cur.E[1] * 0.5, net.cur.E[1], 1e-15)
    assert.near(0, measures.feedback_angles(net)[1], 1e-6)  -- W/2 is parallel to W
    assert.equal(0, measures.feedback_angles(ref)[1])
  end)

  it("sign_symmetry's feedback angle is the angle between sign(W) and W", function()
    local net = nn.mlp{sizes = {3, 2, 2}, act = "tanh", gen = nm.generator(1), dtype = "float64",
                       rule = "sign_symmetry"}
    net.conns[2].W:copy(nm.tensor({{3, -1}, {0.5, 0.5}}, "float64"))
    -- <sign(W), W> = 3 + 1 + 0.5 + 0.5 = 5; |sign W| = 2, |W| = sqrt(10.5)
    local expect = math.deg(math.acos(5 / (2 * math.sqrt(10.5))))
    assert.near(expect, measures.feedback_angles(net)[1], 1e-12)
  end)

  it("clears dW between updates: a rule that adds 1 moves W[1][1] by 1 per batch", function()
    local def = {kind = "connection", name = "plus_one", equation = "dW = 1", paper = "issue 2026",
                 params = {}, update = function(q) q.dW:add(1) end}
    local net = nn.mlp{sizes = {3, 2}, gen = nm.generator(1), dtype = "float64", rule = rule.new(def),
                       out = "identity", loss = "mse"}
    local w0 = net.conns[1].W:get(1, 1)
    local X, T = nm.ones(4, 3, "float64"), nm.zeros(4, 2, "float64")
    for k = 1, 4 do
      net:train_batch(X, T)
      assert.near(w0 + k, net.conns[1].W:get(1, 1), 1e-12)
    end
  end)

  it("stops on non-finite weights or loss naming the rule, the connection and the update", function()
    local calls = 0
    local def = {kind = "connection", name = "blowup", equation = "dW = NaN after 3 updates",
                 paper = "issue 2026", params = {},
                 update = function(q) calls = calls + 1; if calls == 3 then q.dW:fill(0 / 0) end end}
    local X, T = nm.ones(4, 3, "float64"), onehot(4, 2, 0)
    local net = nn.mlp{sizes = {3, 4, 2}, gen = nm.generator(1), dtype = "float64", rule = rule.new(def),
                       check_every = 1}
    net:train_batch(X, T)
    local ok, err = pcall(net.train_batch, net, X, T)     -- calls 3 (layer 1) and 4
    assert.is_false(ok)
    assert.equal("nn: rule 'blowup' made the weights of connection W1 non-finite at update 2", err)
    calls = 0
    local going = nn.mlp{sizes = {3, 4, 2}, gen = nm.generator(1), dtype = "float64",
                         rule = rule.new(def), keep_going = true}
    for _ = 1, 3 do going:train_batch(X, T) end       -- 12 samples: not checked yet
    assert.is_nil(going.nonfinite)
    for _ = 1, 13 do going:train_batch(X, T) end      -- 64 samples: checked
    assert.equal("nn: rule 'blowup' made the weights of connection W1 non-finite between " ..
                 "updates 1 and 16", going.nonfinite)
    local loss = going:evaluate(X, T)
    assert.is_true(loss ~= loss)
    calls = 0
    local eval = nn.mlp{sizes = {3, 4, 2}, gen = nm.generator(1), dtype = "float64",
                        rule = rule.new(def)}
    for _ = 1, 3 do eval:train_batch(X, T) end
    ok, err = pcall(eval.evaluate, eval, X, T)          -- evaluation checks first
    assert.is_false(ok)
    assert.equal("nn: rule 'blowup' made the weights of connection W1 non-finite between " ..
                 "updates 1 and 3", err)
    -- a loss that overflows with finite weights
    local big = nn.mlp{sizes = {3, 2}, gen = nm.generator(1), dtype = "float64", out = "identity",
                       loss = "mse"}
    big.conns[1].W:fill(1e200)
    ok, err = pcall(big.evaluate, big, X, nm.zeros(4, 2, "float64"))
    assert.is_false(ok)
    assert.equal("nn: the loss of rule 'backprop' is non-finite (inf) at update 0", err)
  end)

  it("DFA matrices are n_l x n_L and deliver e_L to every hidden layer", function()
    local g = nm.generator(3)
    local net = nn.mlp{sizes = {5, 4, 3, 2}, act = "relu", gen = g, dtype = "float64",
                       rule = "dfa"}
    assert.equal("dfa", net.feedback)
    local D = {net.paths.dfa.state[1].Dt:t(), net.paths.dfa.state[2].Dt:t()}
    assert.same({4, 2}, D[1]:size())
    assert.same({3, 2}, D[2]:size())
    local X, T = nm.randn(g, 7, 5, "float64"), onehot(7, 2, 0)
    net:forward(X)
    net:backward(T)
    local E = net.cur.E
    for l = 1, 2 do
      local expect = nm.mm(E[3], D[l]:t())
      local d = net.cur.A[l]:clone():drelu()
      expect:mul(d)
      assert.tensor_near(expect, E[l], 1e-14)
      assert.same({7, net.sizes[l]}, E[l]:size())
    end
  end)

  it("single-sample passes equal the rows of batch passes", function()
    local g = nm.generator(11)
    local net = nn.mlp{sizes = {6, 5, 4, 3}, act = "sigmoid", gen = g, dtype = "float64",
                       rule = "fa"}
    local X, T = nm.randn(g, 4, 6, "float64"), onehot(4, 3, 2)
    net:forward(X)
    net:backward(T)
    local Y = net.cur.Y[3]:clone()
    local E1 = net.cur.E[1]:clone()
    for i = 1, 4 do
      local y = net:forward(X:row(i))
      assert.tensor_near(Y:row(i), y, 1e-14)
      net:backward(T:row(i))
      assert.tensor_near(E1:row(i), net.cur.E[1]:row(1), 1e-14)
      local y2 = net:forward(X:narrow(1, i, 1))        -- [1 x n]: the same vector path
      assert.same({1, 3}, y2:size())
      assert.tensor_near(Y:row(i), y2:row(1), 1e-14)
    end
  end)

  it("trains without allocating (batch, single sample, with Adam)", function()
    local g = nm.generator(5)
    local net = nn.mlp{sizes = {20, 16, 8, 4}, act = "relu", gen = g, rule = "fa",
                       params = {eta = 0.05}}
    local X, T = nm.randn(g, 10, 20), onehot(10, 4, 3, "float32")
    assert.equal(0, allocated(function() net:train_batch(X, T) end, 20))
    local x, t = X:row(1):clone(), T:row(1):clone()
    assert.equal(0, allocated(function() net:train_batch(x, t) end, 20))
    net:set_optimiser(optim.adam{lr = 1e-3})
    assert.equal(0, allocated(function() net:train_batch(X, T) end, 20))
    local dfa = nn.mlp{sizes = {20, 16, 8, 4}, act = "tanh", out = "identity", loss = "mse",
                       gen = g, rule = "dfa"}
    assert.equal(0, allocated(function() dfa:train_batch(X, T) end, 20))
  end)

  it("runs on buffers a caller's allocator makes (net.zeros): the same bits; one sample takes " ..
     "the batch path", function()
    local function pair(r)
      local function make()
        return nn.mlp{sizes = {6, 5, 4, 3}, act = "sigmoid", gen = nm.generator(3),
                      dtype = "float64", rule = r, density = {0.7, 0.8, 1}}
      end
      local a, z = make(), make()
      local made = {}
      z.zeros = function(...)
        local sizes = {...}
        made[#made + 1] = sizes
        if sizes[2] then return nm.zeros(sizes[1], sizes[2], "float64") end
        return nm.zeros(sizes[1], "float64")
      end
      return a, z, made
    end
    local g = nm.generator(8)
    local X, T = nm.randn(g, 4, 6, "float64"), onehot(4, 3, 1)
    for _, r in ipairs{"fa", "hebb", "sign_symmetry"} do
      local a, z, made = pair(r)
      for _ = 1, 3 do a:train_batch(X, T); z:train_batch(X, T) end
      assert.is_true(#made > 0, r)
      local n = #made
      z:train_batch(X, T)
      assert.equal(n, #made, r .. ": buffers made once per batch size")
      a:train_batch(X, T)
      for l = 1, 3 do
        assert.equal(0, (a.conns[l].W - z.conns[l].W):abs():max(), r .. " W" .. l)
        assert.equal(0, (a.conns[l].b - z.conns[l].b):abs():max(), r .. " b" .. l)
      end
      assert.equal(0, (a.cur.E[1] - z.cur.E[1]):abs():max(), r .. " errors")
      -- one sample [1 x n]: the allocator's buffers have no 1-D views
      local y = a:forward(X:narrow(1, 2, 1)):clone()
      local yz = z:forward(X:narrow(1, 2, 1))
      assert.is_nil(z.cur.x1)
      assert.equal(1, made[#made][1])
      assert.tensor_near(y, yz, 1e-14)
    end
  end)

  -- MLP:train_batch on one sample runs nm.kernels.mlp_step (the whole
  -- step in one C call) where the network qualifies; a twin network
  -- forced onto the general path (fused = false) must end with the same
  -- bits in every weight, bias and buffer.
  describe("one-sample steps in one call equal forward, backward and update", function()
    -- A network and its twin on the general path end alike: counters, and
    -- every weight, bias and buffer bit for bit (`when` names the moment).
    local function same_as_twin(fast, general, when)
      when = when and (" " .. when) or ""
      assert.equal(general.updates, fast.updates)
      assert.equal(general.checked, fast.checked)
      assert.equal(general.unchecked, fast.unchecked)
      local bf, bg = fast.cur, general.cur
      assert.equal(bg.B, bf.B)
      for l = 1, fast.L do
        local cf, cg = fast.conns[l], general.conns[l]
        assert.equal(0, (cf.W - cg.W):abs():max(), "W" .. l .. when)
        if cf.b then assert.equal(0, (cf.b - cg.b):abs():max(), "b" .. l .. when) end
        for _, k in ipairs{"A", "Y", "E"} do
          assert.equal(0, (bf[k][l] - bg[k][l]):abs():max(), k .. l .. when)
        end
      end
    end
    -- An annealed rate and a frozen layer, in both networks.
    local function anneal_and_freeze(...)
      for _, net in ipairs{...} do
        net.conns[1].rule.p.eta = 0.05
        net.conns[2].plastic = false
      end
    end

    local cases = {
      {rule = "fa", act = {"softplus", beta = 2}, sizes = {12, 9, 7, 6, 5}},
      {rule = "backprop", act = "relu", masks = true, sizes = {12, 9, 7, 5}},
      {rule = "dfa", act = "tanh", out = "identity", loss = "mse", sizes = {12, 9, 7, 5}},
      {rule = "backprop", act = "sigmoid", out = "sigmoid", loss = "mse", dtype = "float64",
       sizes = {12, 9, 5}},
      {rule = "fa", act = "identity", sizes = {12, 9, 5}, bias = false},
    }
    for _, c in ipairs(cases) do
      local what = string.format("%s, %s hidden, %s loss, %s", c.rule,
                                 type(c.act) == "table" and "softplus(2)" or c.act,
                                 c.loss or "xent", c.dtype or "float32")
      it(what, function()
        local dtype = c.dtype or "float32"
        local function make()
          local g = nm.generator(4)
          local masks
          if c.masks then masks = {nm.zeros(c.sizes[2], c.sizes[1], dtype):bernoulli(g, 0.6)} end
          return nn.mlp{sizes = c.sizes, act = c.act, out = c.out, loss = c.loss, rule = c.rule,
                        params = {eta = 0.3}, gen = g, dtype = dtype, masks = masks,
                        bias = c.bias}
        end
        local fast, general = make(), make()
        general.fused = false
        local g = nm.generator(9)
        local n0, nL = c.sizes[1], c.sizes[#c.sizes]
        for step = 1, 12 do
          -- inputs as [n], [1 x n] and float64 rows; targets likewise
          local X = nm.randn(g, 1, n0, step % 3 == 0 and "float64" or dtype)
          local T = onehot(1, nL, step, step % 2 == 0 and "float64" or dtype)
          if step % 4 == 1 then X, T = X:row(1), T:row(1) end
          if step == 5 then anneal_and_freeze(fast, general) end   -- honoured
          fast:train_batch(X, T)
          general:train_batch(X, T)
        end
        assert.is_table(fast.fused[1])          -- the one-call step did run
        assert.equal(12, fast.updates)
        same_as_twin(fast, general)
        assert.is_true(fast.conns[1].W:all_finite())
      end)
    end

    it("takes the general path where it does not apply, and again after a change", function()
      local g = nm.generator(6)
      local X, T = nm.randn(g, 8), onehot(1, 3, 1, "float32"):row(1)
      local ss = nn.mlp{sizes = {8, 5, 3}, gen = nm.generator(1), rule = "sign_symmetry"}
      ss:train_batch(X, T)
      assert.is_false(ss.fused[1])
      local net = nn.mlp{sizes = {8, 5, 3}, gen = nm.generator(1), rule = "backprop"}
      local twin = nn.mlp{sizes = {8, 5, 3}, gen = nm.generator(1), rule = "backprop"}
      twin.fused = false
      local function both()
        net:train_batch(X, T)
        twin:train_batch(X, T)
        assert.equal(0, (net.conns[1].W - twin.conns[1].W):abs():max())
        assert.equal(0, (net.conns[2].W - twin.conns[2].W):abs():max())
      end
      both()
      assert.is_table(net.fused[1])
      for _, m in ipairs{net, twin} do m:set_optimiser(optim.sgd{momentum = 0.9}) end
      both()
      for _, m in ipairs{net, twin} do m:set_optimiser(nil); m.conns[2]:set_rule("hebb") end
      both()                                   -- hebb: not the delta rule
      assert.is_nil(net.fused[1])
      both()
      assert.is_false(net.fused[1])
      -- a rule compiled by the rule compiler runs its own kernel: the general path
      net = nn.mlp{sizes = {8, 5, 3}, gen = nm.generator(1), rule = "backprop"}
      twin = nn.mlp{sizes = {8, 5, 3}, gen = nm.generator(1), rule = "backprop"}
      twin.fused = false
      both()
      assert.is_table(net.fused[1])
      for _, m in ipairs{net, twin} do m.conns[1].rule.use_compiled = true end
      both()
      assert.is_nil(net.fused[1])
      -- a wrong input still gets the general path's message
      assert.has_error(function() net:train_batch(nm.zeros(9), T) end,
        "nn: input of size [9] does not fit the input layer (8 units): expected [B x 8] or [8]")
    end)

    -- Two equal networks for the train_online specs (case c: rule, act,
    -- out, loss, sizes, dtype, bias, eta, masks on the first layer), Xavier
    -- weights, checks every 7 samples: fast, and general on the general
    -- path (fused = false).
    local function online_twins(c)
      local function make()
        local g = nm.generator(4)
        local masks
        if c.masks then masks = {nm.zeros(c.sizes[2], c.sizes[1], c.dtype):bernoulli(g, 0.6)} end
        return nn.mlp{sizes = c.sizes, act = c.act, out = c.out, loss = c.loss, rule = c.rule,
                      params = {eta = c.eta or 0.2}, gen = g, dtype = c.dtype, bias = c.bias,
                      masks = masks, init = "xavier", check_every = 7}
      end
      local fast, general = make(), make()
      general.fused = false
      return fast, general
    end

    -- The networks both train_online twin tables run: widths around the 16
    -- lanes and the 4-row blocks, the `fourth` one each table's own, then a
    -- masked one (row by row).
    local function online_cases(fourth)
      return {
        {rule = "fa", act = {"softplus", beta = 10}, sizes = {37, 21, 16, 17, 5}, dtype = "float32"},
        {rule = "backprop", act = "tanh", sizes = {50, 33, 3, 10}, dtype = "float64"},
        {rule = "dfa", act = "relu", out = "identity", loss = "mse", sizes = {19, 15, 64, 4},
         dtype = "float32", bias = false, eta = 0.01},
        fourth,
        {rule = "backprop", act = "relu", masks = true, sizes = {12, 9, 5}, dtype = "float32"},
      }
    end

    -- MLP:train_online: rows in C, each layer's update fused with the next
    -- sample's product (nm_matvec.h's rank1_mv): the bits of train_batch on
    -- each row of a twin on the general path, buffers and counters too.
    -- Widths around the 16 lanes and the 4-row blocks; stretches that end at
    -- the finiteness checks (check_every 7); a layer frozen half way.
    for _, c in ipairs(online_cases {rule = "fa", act = "sigmoid", out = "sigmoid", loss = "mse",
                                     sizes = {70, 130, 47}, dtype = "float64"}) do
      it(string.format("train_online over rows: %s, %s, %s%s", c.rule, c.dtype,
                       table.concat(c.sizes, "-"), c.masks and ", masked (row by row)" or ""),
         function()
        local dtype = c.dtype
        local fast, general = online_twins(c)
        local g = nm.generator(9)
        local n0, nL, N = c.sizes[1], c.sizes[#c.sizes], 40
        local X = nm.randn(g, N, n0, "float64")         -- cast row by row, as train_batch does
        local T = onehot(N, nL, 3, dtype)
        fast:train_online(X, T, 1, 13)
        for r = 1, 13 do general:train_batch(X:narrow(1, r, 1), T:narrow(1, r, 1)) end
        for _, net in ipairs{fast, general} do net.conns[2].plastic = false end
        fast:train_online(X, T, 14)
        for r = 14, N do general:train_batch(X:narrow(1, r, 1), T:narrow(1, r, 1)) end
        assert.equal(N, fast.updates)
        same_as_twin(fast, general)
        assert.is_true(fast.conns[1].W:all_finite())
        local step = fast.fused[1] and fast.fused[1].step
        if c.masks then
          assert.is_false(step:run_rows(X, T, 1, 2, 0.1, 0.1))   -- masks: row by row
        else
          assert.is_true(step:run_rows(X, T, 1, 2, table.unpack(fast.fused[1].etas, 1, fast.L)))
        end
      end)
    end

    -- MLP:train_batch on B > 1 rows runs the batch step in one C call
    -- (nm.kernels.mlp_step over the buffers of B rows) where the network
    -- qualifies: a twin on the general path (fused = false) must end with
    -- the same bits in every weight, bias, buffer and counter. Odd batch
    -- sizes, one-sample steps between batches, float64 and transposed
    -- inputs (copied), float64 targets (copied), an annealed rate, a layer
    -- frozen halfway, finiteness checks every 20 samples.
    for _, c in ipairs {
      {rule = "backprop", act = "relu", sizes = {37, 21, 10}, dtype = "float32"},
      {rule = "fa", act = "sigmoid", sizes = {37, 21, 16, 10}, dtype = "float32"},
      {rule = "dfa", act = "tanh", sizes = {19, 15, 17, 6}, dtype = "float64"},
      {rule = "fa", act = {"softplus", beta = 10}, sizes = {20, 33, 5}, dtype = "float64"},
      {rule = "backprop", act = "relu", out = "identity", loss = "mse", sizes = {12, 9, 7, 4},
       dtype = "float64", bias = false},
      {rule = "fa", act = "tanh", out = "sigmoid", loss = "mse", sizes = {12, 17, 4},
       dtype = "float32"},
      {rule = "dfa", act = "softplus", out = "tanh", loss = "mse", sizes = {30, 16, 8, 3},
       dtype = "float32"},
    } do
      local act = type(c.act) == "table" and "softplus(10)" or c.act
      it(string.format("train_batch in one call: %s, %s hidden, %s/%s, %s, %s", c.rule, act,
                       c.out or "softmax", c.loss or "xent", c.dtype,
                       table.concat(c.sizes, "-")), function()
        local dtype = c.dtype
        local function make()
          return nn.mlp{sizes = c.sizes, act = c.act, out = c.out, loss = c.loss, rule = c.rule,
                        params = {eta = 0.2}, gen = nm.generator(4), dtype = dtype,
                        bias = c.bias, check_every = 20}
        end
        local fast, general = make(), make()
        general.fused = false
        local g = nm.generator(9)
        local n0, nL, N = c.sizes[1], c.sizes[#c.sizes], 64
        local X = nm.randn(g, N, n0, dtype)
        local X64 = nm.randn(g, N, n0, "float64")
        local Xt = nm.randn(g, n0, N, dtype)       -- its transpose: not contiguous
        local T = onehot(N, nL, 3, dtype)
        local T64 = onehot(N, nL, 5, "float64")
        local first, step = 1, 0
        for _, B in ipairs{7, 13, 1, 2, 7, 5, 13, 3, 7, 5} do
          step = step + 1
          local x = step % 3 == 0 and X64:narrow(1, first, B) or
                    step % 4 == 0 and Xt:narrow(2, first, B):t() or X:narrow(1, first, B)
          local t = step % 2 == 0 and T64:narrow(1, first, B) or T:narrow(1, first, B)
          if step == 5 then anneal_and_freeze(fast, general) end
          fast:train_batch(x, t)
          general:train_batch(x, t)
          same_as_twin(fast, general, "after batch " .. step)
          -- the input as the general path binds it: in place, or copied into X
          local bf, bg = fast.cur, general.cur
          assert.equal(0, (bf.Y[0] - bg.Y[0]):abs():max())
          assert.equal(bg.Y[0] == x, bf.Y[0] == x)
          assert.equal(bf.Y[0], bf.q[1].pre)
          first = first + B
        end
        for _, B in ipairs{7, 13, 2, 5, 3} do
          assert.is_table(fast.fused[B], "the batch step of " .. B .. " rows ran")
        end
        assert.is_true(fast.conns[1].W:all_finite())
      end)
    end

    it("train_batch in one call: masks fall back, shapes and shared memory decline", function()
      local g = nm.generator(3)
      local function make(masked)
        return nn.mlp{sizes = {6, 6, 3}, gen = nm.generator(1), rule = "backprop",
                      masks = masked and {nm.zeros(6, 6):bernoulli(nm.generator(2), 0.5)}}
      end
      -- a masked network: the one-sample step serves, the batch step does not
      local net, twin = make(true), make(true)
      twin.fused = false
      local X, T = nm.randn(g, 5, 6), onehot(5, 3, 1, "float32")
      for _ = 1, 3 do
        net:train_batch(X, T)
        twin:train_batch(X, T)
        net:train_batch(X:row(2), T:row(2))
        twin:train_batch(X:row(2), T:row(2))
      end
      assert.is_false(net.fused[5])
      assert.is_table(net.fused[1])
      for l = 1, 2 do assert.equal(0, (net.conns[l].W - twin.conns[l].W):abs():max()) end
      -- shapes that do not fit: the general path's errors, as before
      net = make()
      net:train_batch(X, T)
      local step = net.fused[5].step
      assert.is_true(step:run(X, T, 0.1, 0.1))
      assert.has_error(function() net:train_batch(X, onehot(5, 4, 1, "float32")) end,
        "nn: targets [5 x 4] do not fit the output [5 x 3]")
      assert.has_error(function() net:train_batch(X, onehot(4, 3, 1, "float32")) end,
        "nn: targets [4 x 3] do not fit the output [5 x 3]")
      assert.has_error(function() net:train_batch(nm.zeros(5, 7), T) end,
        "nn: input of size [5 x 7] does not fit the input layer (6 units): expected [B x 6] or [6]")
      assert.is_false(step:run(nm.zeros(4, 6), T, 0.1, 0.1))      -- not B rows
      assert.is_false(step:run(X, nm.zeros(5, 4), 0.1, 0.1))
      assert.is_false(step:run(X:row(1), T, 0.1, 0.1))
      -- inputs or targets that share memory with the network: the general way
      local bs = net.fused[5].bs
      assert.is_false(step:run(bs.A[1], T, 0.1, 0.1))
      assert.is_false(step:run(X, bs.E[2], 0.1, 0.1))
      assert.is_true(step:run(bs.X, bs.T, 0.1, 0.1))             -- its own buffers are fine
      assert.truthy(tostring(step):find("batch 5", 1, true))
      bs.E[1]:close()
      assert.has_error(function() step:run(X, T, 0.1, 0.1) end,
        "mlp_step: a tensor of the network was closed")
      -- batch buffers refuse views, masks, and need ones with biases
      net = make()
      bs = net:buffers(4)
      local function spec(over)
        local layers = {}
        for l = 1, 2 do
          layers[l] = {W = net.conns[l].W, b = net.conns[l].b, A = bs.A[l], Y = bs.Y[l],
                       E = bs.E[l], act = l == 1 and "relu" or "softmax"}
        end
        layers[1].Mt = net.conns[2].W:t()
        local s = {X = bs.X, T = bs.T, ones = bs.ones, layers = layers}
        over(s)
        return s
      end
      assert.has_no_error(function() nm.kernels.mlp_step(spec(function() end)) end)
      for _, b in ipairs{
        {function(s) s.ones = nil end, "ones must be [B]"},
        {function(s) s.ones = nm.ones(3) end, "ones must be [B]"},
        {function(s) s.x1 = bs.X:row(1) end, "without a view"},
        {function(s) s.layers[1].a1 = bs.A[1]:row(1) end, "without views"},
        {function(s) s.layers[1].mask = nm.ones(6, 6) end, "takes no masks"},
        {function(s) s.T = nm.zeros(3, 3) end, "target buffer must be [B x n_L]"},
      } do
        local ok, err = pcall(nm.kernels.mlp_step, spec(b[1]))
        assert.is_false(ok)
        assert.truthy(tostring(err):find(b[2], 1, true), tostring(err))
      end
    end)

    it("train_batch in one call: non-finite weights stop at the same update", function()
      for _, keep_going in ipairs{false, true} do
        local function make()
          return nn.mlp{sizes = {8, 6, 3}, gen = nm.generator(1), rule = "fa",
                        check_every = 20, keep_going = keep_going}
        end
        local fast, general = make(), make()
        general.fused = false
        local g = nm.generator(5)
        local X, T = nm.randn(g, 7, 8), onehot(7, 3, 2, "float32")
        local out = {}
        for i, net in ipairs{fast, general} do
          local ok, err = pcall(function()
            for k = 1, 12 do
              if k == 5 then net.conns[2].W:set(2, 3, 0 / 0) end
              net:train_batch(X, T)
            end
          end)
          out[i] = {ok = ok, err = err, updates = net.updates, nonfinite = net.nonfinite}
        end
        assert.is_table(fast.fused[7])
        assert.same(out[2], out[1])
        if keep_going then
          assert.equal(12, out[1].updates)
          assert.truthy(tostring(out[1].nonfinite):find("non-finite between updates 4 and 6", 1, true))
        else
          assert.is_false(out[1].ok)
          assert.equal(6, out[1].updates)
          assert.equal("nn: rule 'fa' made the weights of connection W1 non-finite between " ..
                       "updates 4 and 6", out[1].err)
        end
      end
    end)

    it("train_online checks its rows; run_rows declines what does not fit", function()
      local net = nn.mlp{sizes = {4, 3, 2}, gen = nm.generator(1), rule = "fa"}
      local X, T = nm.zeros(5, 4), nm.zeros(5, 2)
      assert.has_error(function() net:train_online(X:row(1), T) end,
        "nn: train_online needs X [N x n_0] and T [N x n_L] (rows are samples)")
      assert.has_error(function() net:train_online(X, T, 3, 4) end,
        "nn: train_online: rows 3 .. 6 are not in X [5 x 4] and T [5 x 2]")
      assert.has_error(function() net:train_online(X, T, math.maxinteger - 1, 3) end)
      assert.has_error(function() net:train_online(X, T, 2, 1.5) end)
      net:train_online(X, T, 5, 0)
      assert.equal(0, net.updates)
      net:train_online(X, T)
      assert.equal(5, net.updates)
      local step = net.fused[1].step
      assert.is_false(step:run_rows(X, T, 5, 2, 0.1, 0.1))          -- past the last row
      assert.is_false(step:run_rows(X, T, math.maxinteger - 1, 3, 0.1, 0.1))
      assert.is_false(step:run_rows(X, T, 2, math.maxinteger, 0.1, 0.1))
      assert.is_false(step:run_rows(X:t(), T, 1, 1, 0.1, 0.1))      -- [4 x 5]: not n_0 wide
      assert.is_false(step:run_rows(net.cur.X, T, 1, 1, 0.1, 0.1))  -- the network's own buffer
      assert.is_true(step:run_rows(X, T, 1, 5, 0.1, false))
    end)

    -- train_online through an epoch's order (data.batches's
    -- Batches:epoch_order(), the draw Batches:epoch makes): the bits of
    -- data.batches at batch size 1 + train_batch with the same generator
    -- seed, on a twin on the general path (fused = false); weights,
    -- biases, buffers, counters and the generator's next draw. Two epochs,
    -- the second in two calls (first/count, as a resumed run takes it) with
    -- a layer frozen in between; stretches end at the checks (check_every 7).
    local data = require "nm.data"
    for _, c in ipairs(online_cases {rule = "fa", act = "sigmoid", sizes = {20, 17, 6},
                                     dtype = "float64", xdtype = "float32"}) do
      it(string.format("train_online through a shuffled order: %s, %s, %s%s", c.rule, c.dtype,
                       table.concat(c.sizes, "-"), c.masks and ", masked (row by row)" or ""),
         function()
        local dtype = c.dtype
        local fast, general = online_twins(c)
        local g = nm.generator(9)
        local n0, nL, N = c.sizes[1], c.sizes[#c.sizes], 37
        local split = {X = nm.randn(g, N, n0, c.xdtype or "float64"), Y = onehot(N, nL, 3, dtype)}
        local bf_, bg_ = data.batches(split, 1, {seed = 21}), data.batches(split, 1, {seed = 21})
        local mid = 16
        for epoch = 1, 2 do
          local order = bf_:epoch_order()
          if epoch == 1 then
            fast:train_online(split.X, split.Y, {order = order})
          else
            fast:train_online(split.X, split.Y, {order = order, first = 1, count = mid})
            fast.conns[2].plastic = false
            fast:train_online(split.X, split.Y, {order = order, first = mid + 1})
          end
          local k = 0
          for b in bg_:epoch() do
            k = k + 1
            if epoch == 2 and k == mid + 1 then general.conns[2].plastic = false end
            general:train_batch(b.X, b.Y)
          end
        end
        assert.equal(2 * N, fast.updates)
        assert.equal(bg_.epochs, bf_.epochs)
        assert.equal(bg_.generator:integer(1, 1 << 40), bf_.generator:integer(1, 1 << 40))
        same_as_twin(fast, general)
        local bf = fast.cur
        assert.is_true(fast.conns[1].W:all_finite())
        -- the order was taken: the last sample is the epoch's last row, not row N
        local last = bf_.perm[N]
        assert.is_true(last ~= N)
        local x = split.X:narrow(1, last, 1):cast(dtype)
        assert.equal(0, (bf.X - x):abs():max())
        if c.masks then assert.is_false(fast.fused[1].step:run_order(split.X, split.Y, {1}, 1, 1,
                                                                  0.1, 0.1))
        else assert.is_table(fast.fused[1]) end
      end)
    end

    it("train_online checks its order; run_order reads it as index_rows", function()
      local net = nn.mlp{sizes = {4, 3, 2}, gen = nm.generator(1), rule = "fa"}
      local X, T = nm.zeros(5, 4), nm.zeros(6, 2)
      local function err(o, msg)
        local ok, e = pcall(net.train_online, net, X, T, o)
        assert.is_false(ok)
        assert.equal(msg, e)
      end
      err({order = 3}, "nn: train_online: opts.order must be a list of row numbers")
      err({order = {1, 2, 6}},
          "nn: train_online: order[3] = 6 is not a row of X [5 x 4] and T [6 x 2]")
      err({order = {1, 0}}, "nn: train_online: order[2] = 0 is not a row of X [5 x 4] and T [6 x 2]")
      err({order = {1, 2.5}},
          "nn: train_online: order[2] = 2.5 is not a row of X [5 x 4] and T [6 x 2]")
      err({order = {1, 2}, first = 2, count = 2},
          "nn: train_online: positions 2 .. 3 are not in the order (2 rows)")
      err({order = {1, 2}, first = 4}, "nn: train_online: positions 4 .. 2 are not in the order (2 rows)")
      err({order = {1, 2}, first = math.maxinteger, count = 3},
          "nn: train_online: positions 9223372036854775807 .. -9223372036854775807 are not in " ..
          "the order (2 rows)")
      assert.equal(0, net.updates)                   -- nothing trained before the check
      net:train_online(X, T, {order = {1, 2, 0}, first = 1, count = 2})   -- only those used
      net:train_online(X, T, {order = {5, 4, 3}, first = 3, count = 0})
      net:train_online(X, T, {order = {}})
      assert.equal(2, net.updates)
      net:train_online(X, T, {first = 5})             -- no order: the rows
      assert.equal(3, net.updates)
      err({first = 5, count = 2}, "nn: train_online: rows 5 .. 6 are not in X [5 x 4] and T [6 x 2]")
      local step = net.fused[1].step
      local e = {0.1, 0.1}
      local function bad(msg, ...)
        local ok, m = pcall(step.run_order, step, ...)
        assert.is_false(ok)
        assert.truthy(tostring(m):find(msg, 1, true), tostring(m))
      end
      bad("index 6 at position 2 out of range [1, 5]", X, T, {1, 6}, 1, 2, 0.1, 0.1)
      bad("index 0 at position 1 out of range [1, 5]", X, T, {0}, 1, 1, 0.1, 0.1)
      bad("index at position 2 is not an integer", X, T, {1, "x"}, 1, 2, 0.1, 0.1)
      bad("2 rows from position 2 need more than the 2 indices", X, T, {1, 2}, 2, 2, 0.1, 0.1)
      bad("2 rows from position 0 need more", X, T, {1, 2}, 0, 2, 0.1, 0.1)
      bad("table expected", X, T, nm.ones(2), 1, 2, 0.1, 0.1)
      assert.is_false(step:run_order(X:t(), T, {1}, 1, 1, 0.1, 0.1))   -- not n_0 wide
      assert.is_false(step:run_order(net.cur.X, T, {1}, 1, 1, 0.1, 0.1))
      assert.is_false(step:run_order(X, T, {1}, 1, -1, 0.1, 0.1))
      assert.equal(3, net.updates)
      assert.is_true(step:run_order(X, T, {5, 1, 5}, 1, 3, table.unpack(e)))
      -- no allocation once the stretch's index scratch is there
      local order = {}
      for i = 1, 64 do order[i] = (i * 3) % 5 + 1 end
      local opts = {order = order}
      assert.equal(0, allocated(function() net:train_online(X, T, opts) end, 5))
      -- a list read through its metamethods, as index_rows reads one
      local sly = setmetatable({}, {__len = function() return 2 end,
                                   __index = function(_, i) return i end})
      assert.is_true(step:run_order(X, T, sly, 1, 2, 0.1, 0.1))
    end)

    it("train_online through an order keeps the finiteness checks and their messages", function()
      local function make(keep)
        return nn.mlp{sizes = {6, 5, 4}, act = "identity", out = "identity", loss = "mse",
                      rule = "backprop", params = {eta = 1e18}, gen = nm.generator(3),
                      check_every = 5, keep_going = keep}
      end
      local g = nm.generator(2)
      local split = {X = nm.randn(g, 30, 6), Y = nm.randn(g, 30, 4)}
      local msgs = {}
      for i, way in ipairs{"order", "batches"} do
        local net, b = make(false), data.batches(split, 1, {seed = 5})
        local ok, e = pcall(function()
          if way == "order" then net:train_online(split.X, split.Y, {order = b:epoch_order()})
          else for bt in b:epoch() do net:train_batch(bt.X, bt.Y) end end
        end)
        assert.is_false(ok)
        msgs[i] = e
        local going = make(true)
        b = data.batches(split, 1, {seed = 5})
        if way == "order" then going:train_online(split.X, split.Y, {order = b:epoch_order()})
        else for bt in b:epoch() do going:train_batch(bt.X, bt.Y) end end
        msgs[i + 2] = going.nonfinite
        assert.equal(30, going.updates)
      end
      assert.truthy(msgs[1]:find("^nn: rule 'backprop' made the weights of connection W%d " ..
                                 "non%-finite between updates %d+ and %d+$"), msgs[1])
      assert.equal(msgs[2], msgs[1])
      assert.equal(msgs[4], msgs[3])
      assert.equal(msgs[1], msgs[3])
    end)

    it("nm.kernels.mlp_step refuses operands that do not fit, and closed tensors", function()
      local net = nn.mlp{sizes = {4, 3, 2}, gen = nm.generator(1), rule = "fa"}
      local x, t = nm.zeros(4), nm.zeros(2)
      net:train_batch(x, t)
      local step = net.fused[1].step
      assert.is_false(step:run(nm.zeros(5), t, 0.1, 0.1))    -- not one sample of n_0
      assert.is_false(step:run(nm.zeros(2, 4), t, 0.1, 0.1))
      assert.is_false(step:run(x, nm.zeros(3), 0.1, 0.1))
      assert.is_true(step:run(x, t, 0.1, false))
      assert.has_error(function() step:run(x, t, "fast", 0.1) end)
      local bs = net.cur
      local function spec(over)
        local layers = {}
        for l = 1, 2 do
          layers[l] = {W = net.conns[l].W, b = net.conns[l].b, A = bs.A[l], Y = bs.Y[l],
                       E = bs.E[l], a1 = bs.a1[l], y1 = bs.y1[l], e1 = bs.e1[l],
                       act = l == 1 and "relu" or "softmax"}
        end
        layers[1].Mt = net.paths.fa.state[1].B:t()
        local s = {X = bs.X, x1 = bs.x1, T = bs.T, t1 = bs.t1, layers = layers}
        over(s)
        return s
      end
      assert.has_no_error(function() nm.kernels.mlp_step(spec(function() end)) end)
      local bad = {
        {function(s) s.layers[1].W = nm.zeros(3, 5) end, "weights must be"},
        {function(s) s.layers[1].Mt = nil end, "feedback matrix"},
        {function(s) s.layers[2].act = "relu" end, "xent needs softmax"},
        {function(s) s.layers[1].act = "softmax" end, "softmax only on the output"},
        {function(s) s.layers[1].act = "swish" end, "invalid option 'swish'"},
        {function(s) s.layers[1].b = net.conns[1].W:row(1):narrow(1, 1, 3) end, "share memory"},
        {function(s) s.layers[2].E = bs.A[2] end, "with their [n_l] views"},
        {function(s) s.X = nm.zeros(1, 4, "float64"); s.x1 = s.X:row(1) end, "one dtype"},
        {function(s) s.layers[1].A = 7 end, "must be an open tensor"},
        {function(s) s.layers = {} end, "between 1 and 4096 layers"},
      }
      for _, b in ipairs(bad) do
        local ok, err = pcall(nm.kernels.mlp_step, spec(b[1]))
        assert.is_false(ok)
        assert.truthy(tostring(err):find(b[2], 1, true), tostring(err))
      end
      bs.E[1]:close()
      assert.has_error(function() step:run(x, t, 0.1, 0.1) end,
        "mlp_step: a tensor of the network was closed")
    end)
  end)

  it("learns a small classification task (loss falls)", function()
    local g = nm.generator(21)
    local net = nn.mlp{sizes = {8, 16, 3}, act = "relu", gen = g, rule = "backprop",
                       params = {eta = 0.5}, dtype = "float64"}
    local X = nm.randn(g, 60, 8, "float64")
    local T = nm.zeros(60, 3, "float64")
    for i = 1, 60 do   -- class = sign pattern of two inputs
      local c = (X:get(i, 1) > 0 and 1 or 0) + (X:get(i, 2) > 0 and 1 or 0) + 1
      T:set(i, c, 1)
    end
    net:forward(X)
    local first = net:loss_value(T)
    for _ = 1, 300 do net:train_batch(X, T) end
    net:forward(X)
    assert.is_true(net:loss_value(T) < 0.3 * first)
    assert.is_true(net:correct(T) >= 55)
  end)

  it("masked weights stay zero under training (Lua and fused forms)", function()
    for _, fused in ipairs{true, false} do
      local g = nm.generator(8)
      local mask = nm.zeros(6, 10):bernoulli(g, 0.5)
      local net = nn.mlp{sizes = {10, 6, 3}, act = "tanh", gen = g, rule = "backprop",
                         masks = {mask}, params = {eta = 0.2}}
      net.conns[1].rule.use_fused = fused
      local X, T = nm.randn(g, 5, 10), onehot(5, 3, 0, "float32")
      for _ = 1, 10 do net:train_batch(X, T) end
      local W = net.conns[1].W
      local moved = 0
      for i = 1, 6 do
        for j = 1, 10 do
          if mask:get(i, j) == 0 then assert.equal(0, W:get(i, j)) else moved = moved + 1 end
        end
      end
      assert.is_true(moved > 0)
    end
  end)

  it("respects per-connection and global plasticity switches", function()
    local g = nm.generator(9)
    local net = nn.mlp{sizes = {5, 4, 3}, gen = g, rule = "backprop", params = {eta = 0.5}}
    local X, T = nm.randn(g, 6, 5), onehot(6, 3, 1, "float32")
    local W1, W2 = net.conns[1].W:clone(), net.conns[2].W:clone()
    net.conns[1].plastic = false
    net:train_batch(X, T)
    assert.same(W1:totable(), net.conns[1].W:totable())
    assert.are_not.same(W2:totable(), net.conns[2].W:totable())
    net.conns[1].plastic = true
    W2 = net.conns[2].W:clone()
    rule.set_learning(false)
    net:train_batch(X, T)
    rule.set_learning(true)
    assert.same(W1:totable(), net.conns[1].W:totable())
    assert.same(W2:totable(), net.conns[2].W:totable())
    -- with an optimiser (momentum), a switched-off connection stays put too
    net:set_optimiser(optim.sgd{momentum = 0.9})
    net:train_batch(X, T)
    W1 = net.conns[1].W:clone()
    net.conns[1].plastic = false
    net:train_batch(X, T)
    assert.same(W1:totable(), net.conns[1].W:totable())
  end)

  it("state survives a checkpoint round trip", function()
    local g = nm.generator(12)
    local net = nn.mlp{sizes = {5, 4, 3}, gen = g, rule = "oja", feedback = "bp"}
    local other = nn.mlp{sizes = {5, 4, 3}, gen = nm.generator(13), rule = "oja", feedback = "bp"}
    local st = checkpoint.decode(checkpoint.encode(net:state()))
    other:load_state(st)
    local X = nm.randn(g, 3, 5)
    assert.same(net:forward(X):totable(), other:forward(X):totable())
    assert.same(net.paths.fa.state[1].B:totable(), other.paths.fa.state[1].B:totable())
    assert.same(net.paths.dfa.state[1].Dt:totable(), other.paths.dfa.state[1].Dt:totable())
  end)

  it("reports misuse as errors naming the shapes", function()
    local net = nn.mlp{sizes = {5, 4, 3}, gen = nm.generator(1)}
    assert.has_error(function() net:forward(nm.zeros(2, 6)) end,
      "nn: input of size [2 x 6] does not fit the input layer (5 units): expected [B x 5] or [5]")
    net:forward(nm.zeros(2, 5))
    assert.has_error(function() net:backward(nm.zeros(3, 3)) end,
      "nn: targets [3 x 3] do not fit the output [2 x 3]")
    assert.has_error(function() nn.mlp{sizes = {2, 2}, out = "identity", loss = "xent", gen = nm.generator(1)} end,
      "nn.mlp: loss 'xent' (softmax cross-entropy) needs out = 'softmax'")
    assert.has_error(function() nn.mlp{sizes = {2, 2, 2}, act = "swish", gen = nm.generator(1)} end)
    assert.has_error(function() nn.mlp{sizes = {2, 2}, rule = "nosuchrule", gen = nm.generator(1)} end)
    assert.has_error(function() nn.mlp{sizes = {2, 2}} end,
      "nn.init_weights: init 'pytorch' needs gen (nm.generator)")
  end)
end)

describe("experiments/baselines.lua", function()
  local json = require "nm.json"
  local support = require "spec.support"
  local run, tmp = support.experiment("baselines.lua")
  local function rows(dir) return support.metric_rows(dir) end

  it("resumes after SIGTERM to the same metrics and weights as an uninterrupted run", function()
    local common = "--quick --dataset mnist-subset --arch 256 --rules bp,dfa --epochs 2 " ..
                   "--train-subset 1000 --test-subset 300 --probe 100 --no-plot " ..
                   "--checkpoint-every 7 --stop-after 33"
    local a, b = tmp .. "-a", tmp .. "-b"
    -- uninterrupted: --stop-after past the end never fires
    assert.equal(0, run(common:gsub("%-%-stop%-after 33", "--stop-after 1000") .. " --out " .. a))
    assert.equal(143, run(common .. " --out " .. b))         -- stopped by SIGTERM
    local stopped = json.read_file(b .. "/results.json")
    assert.equal("stopped", stopped.status)
    assert.equal(0, run(common .. " --resume --out " .. b))
    local ra, rb = json.read_file(a .. "/results.json"), json.read_file(b .. "/results.json")
    assert.equal("finished", rb.status)
    assert.equal(1, rb.resumed)
    assert.same(rows(a), rows(b))
    assert.equal(#ra.final.cells, #rb.final.cells)
    for i, c in ipairs(ra.final.cells) do
      assert.equal(c.weights_crc32, rb.final.cells[i].weights_crc32)
      assert.equal(c.test_accuracy, rb.final.cells[i].test_accuracy)
    end
    os.execute(string.format("rm -rf %q %q %q", a, b, tmp .. ".log"))
  end)

  -- --batch 1 trains through net:train_online in stretches that end at the
  -- evaluations, checkpoints and --stop-after: a run stopped and resumed
  -- part way through an epoch ends as an uninterrupted one; plain SGD
  -- takes the fused path, Adam row by row.
  it("--batch 1 resumes after SIGTERM to the same metrics and weights", function()
    local common = "--quick --dataset mnist-subset --arch 32 --rules bp,fa --epochs 2 " ..
                   "--train-subset 300 --test-subset 100 --probe 50 --no-plot --batch 1 " ..
                   "--eval-every 120 --checkpoint-every 50 --stop-after 333"
    for _, optim_ in ipairs{"--optim sgd --lr 0.01", "--optim adam"} do
      local c = common .. " " .. optim_
      local a, b = tmp .. "-a", tmp .. "-b"
      assert.equal(0, run(c:gsub("%-%-stop%-after 333", "--stop-after 100000") .. " --out " .. a))
      assert.equal(143, run(c .. " --out " .. b))
      assert.equal(0, run(c .. " --resume --out " .. b))
      local ra, rb = json.read_file(a .. "/results.json"), json.read_file(b .. "/results.json")
      assert.equal(1, rb.resumed)
      local r = rows(a)
      assert.equal(2 * (1 + 2 * 3), #r)         -- per cell: step 0, then 120, 240, 300 per epoch
      assert.equal(540, r[6].step)
      assert.equal(600, r[7].step)
      assert.same(r, rows(b))
      for i, cell in ipairs(ra.final.cells) do
        assert.equal(cell.weights_crc32, rb.final.cells[i].weights_crc32)
      end
      os.execute(string.format("rm -rf %q %q %q", a, b, tmp .. ".log"))
    end
  end)

  -- A rule file of the user's: a copy of fa.lua under another name must
  -- give exactly fa's cell (same loop, angles, weights); an invalid one
  -- is one line per problem and exit status 2; a diverging one stops.
  local write, read = support.write_file, support.read_file

  it("runs a user's rule file like a built-in rule", function()
    local dir = tmp .. "-rules"
    os.execute(string.format("mkdir -p %q", dir))
    write(dir .. "/my_fa.lua", (read(support.root .. "/rules/fa.lua"):gsub('name = "fa"', 'name = "my_fa"', 1)))
    local common = "--quick --dataset mnist-subset --arch 256-256 --epochs 1 --train-subset 300 " ..
                   "--test-subset 100 --probe 50 --no-plot"
    local out = tmp .. "-user"
    assert.equal(0, run(common .. " --rules fa," .. dir .. "/my_fa.lua,sign_symmetry --out " .. out))
    local cells = json.read_file(out .. "/results.json").final.cells
    assert.same({"fa", "my_fa", "sign_symmetry"}, {cells[1].rule, cells[2].rule, cells[3].rule})
    for _, k in ipairs{"weights_crc32", "test_accuracy", "train_loss", "update_angle_1",
                       "update_angle_2", "feedback_angle_1", "feedback_angle_2"} do
      assert.is_not_nil(cells[1][k], k)
      assert.equal(cells[1][k], cells[2][k], k)
    end
    assert.are_not.equal(cells[1].weights_crc32, cells[3].weights_crc32)
    assert.truthy(read(tmp .. ".log"):find("my_fa", 1, true))

    write(dir .. "/bad.lua", [[return {kind = "connection", name = "bad", paper = "p",
      params = {eta = {default = 1}}, update = 3}]])
    assert.equal(2, run(common .. " --rules bp," .. dir .. "/bad.lua --out " .. out .. "2"))
    local lines = {}
    for line in read(tmp .. ".log"):gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.same({
      "baselines: " .. dir .. "/bad.lua: connection rule 'bad': field 'equation' (the rule as text) is missing",
      "baselines: " .. dir .. "/bad.lua: connection rule 'bad': parameter 'eta' has no doc string",
      "baselines: " .. dir .. "/bad.lua: connection rule 'bad': field 'update' must be function(q, p), got number",
    }, lines)
    assert.equal(2, run(common .. " --rules bmvr --out " .. out .. "2"))
    assert.truthy(read(tmp .. ".log"):find("rule 'bmvr' is a circuit rule", 1, true))

    write(dir .. "/nan.lua", [[return {kind = "connection", name = "nan", equation = "dW = NaN",
      paper = "spec 2026", params = {}, update = function(q) q.dW:fill(0 / 0) end}]])
    assert.equal(1, run(common .. " --rules " .. dir .. "/nan.lua --out " .. out .. "3"))
    -- one line naming the rule: the update angle of its first (NaN) update on
    -- the probe batch, or the weights it made non-finite; the run is failed
    local msg = read(tmp .. ".log"):gsub("^baselines: %-%-quick[^\n]*\n", "")
    assert.truthy(msg:match("^baselines: [^\n]*rule[ ']nan[^\n]*status failed%)\n$"), msg)
    assert.equal("failed", json.read_file(out .. "3/results.json").status)
    assert.equal(0, run(common .. " --keep-going --rules " .. dir .. "/nan.lua --out " .. out .. "3 --overwrite"))
    assert.truthy(json.read_file(out .. "3/results.json").final.cells[1].nonfinite:find("update 1", 1, true))
    os.execute(string.format("rm -rf %q %q %q %q %q %q", dir, out, out .. "2", out .. "3", tmp .. ".log",
                             tmp))
  end)

  -- Regression: --stop-after 1 sent SIGTERM before run:poll had installed
  -- the stop handler, so the process died with no checkpoint.
  it("stops at the very first batch with a checkpoint and resumes from it", function()
    local common = "--quick --dataset mnist-subset --arch 256 --rules fa --epochs 1 " ..
                   "--train-subset 300 --test-subset 100 --probe 50 --no-plot --stop-after 1"
    local a, b = tmp .. "-a1", tmp .. "-b1"
    assert.equal(0, run(common:gsub("%-%-stop%-after 1", "--stop-after 1000") .. " --out " .. a))
    assert.equal(143, run(common .. " --out " .. b))
    assert.equal("stopped", json.read_file(b .. "/results.json").status)
    assert.truthy(io.open(b .. "/checkpoint.nmc", "rb"), "no checkpoint written")
    assert.equal(0, run(common .. " --resume --out " .. b))
    local ra, rb = json.read_file(a .. "/results.json"), json.read_file(b .. "/results.json")
    assert.equal(1, rb.resumed)
    assert.same(rows(a), rows(b))
    assert.equal(ra.final.cells[1].weights_crc32, rb.final.cells[1].weights_crc32)
    os.execute(string.format("rm -rf %q %q %q", a, b, tmp .. ".log"))
  end)
end)
