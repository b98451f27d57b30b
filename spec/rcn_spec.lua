-- spec/rcn_spec.lua: recurrent chemical networks (rules/rcn.lua,
-- lua/nm/models/rcn.lua, nm_rcn.c).
-- The chemical timescales follow their formula; with L = 1, K = 0, v = 1
-- the step is W + tanh(motif update), so small arguments give the motif
-- rule; the fused C step equals the literal autograd rule for every
-- variant; meta-gradients of the query loss equal central finite
-- differences (float64, small network, short inner loop) for P, K, v and
-- b, and the checkpointed adjoint equals the generic tape; the float32
-- kernel (its fast tanh) agrees with float64; the learner, its guards, the
-- memory bound with per-synapse biases, and errors.

local nm = require "neuromic"
local ag = require "nm.autograd"
local rule = require "nm.rule"
local motif_net = require "nm.models.motif_net"
local rcn = require "nm.models.rcn"
local rcn_rule = rule.definition("rcn")

-- An RCN network with the rule rules/rcn.lua.
local function new_net(o)
  o.rule = o.rule or rcn_rule
  return rcn.new(o)
end

local SIZES = {6, 5, 4, 3}

-- A network and an episode: T steps on random inputs in [0, 1], 7 query
-- samples; meta-parameters drawn large enough that every term matters.
local function setup(cfg, T, seed)
  local o = {}
  for k, v in pairs(cfg) do o[k] = v end
  o.sizes = o.sizes or SIZES
  o.dtype = o.dtype or "float64"
  local net = new_net(o)
  local g = nm.generator(seed or 1)
  local p = rcn.meta_params(net)
  local list = rcn.param_list(net, p)
  list[1]:uniform(g, -0.1, 0.1)
  list[2]:uniform(g, -0.3, 0.3)
  list[3]:uniform(g, 0.2, 0.6)
  for i = 4, #list do list[i]:uniform(g, -0.05, 0.05) end
  for r = 0, 9 do
    if not net.use[r] then
      if net.share == "layer" then list[1]:narrow(3, r + 1, 1):zero()
      else list[1]:narrow(2, r + 1, 1):zero() end
    end
  end
  if net.bias == "none" then list[4]:zero() end
  local Wx, B = net.mnet:init(g)
  local n0, nL = SIZES[1], SIZES[#SIZES]
  if o.sizes ~= SIZES then n0, nL = o.sizes[1], o.sizes[#o.sizes] end
  local X = nm.zeros(T, n0, net.dtype):uniform(g, 0, 1)
  local labels = {}
  for t = 1, T do labels[t] = g:integer(1, nL) end
  local Xq = nm.zeros(7, n0, net.dtype):uniform(g, 0, 1)
  local labels_q = {}
  for i = 1, 7 do labels_q[i] = g:integer(1, nL) end
  return {net = net, p = p, list = list, Wx = Wx, B = B, X = X, labels = labels, Xq = Xq,
          labels_q = labels_q, T = T, g = g}
end

-- The meta-loss with the parameters' current values, untracked.
local function meta_loss(ep)
  local H0, W0 = rcn.initial_state(ep.net, ep.Wx, ep.list[3])
  local res = rcn.unroll(ep.net, H0, W0, ep.B, ep.X, ep.labels, ep.list, ep.T)
  local NL = ep.net.layers
  local WT = {}
  for l = 1, NL do WT[l] = res[NL + l] end
  return (ep.net.mnet.kernel:query(WT, ep.Xq, ep.labels_q))
end

-- The meta-gradient through the fused unroll (how: "unroll", the hand C
-- kernel), the generated one ("compiled") or the generic tape ("generic").
local function meta_grad(ep, how, segment)
  local net, NL = ep.net, ep.net.layers
  local tape = ag.tape()
  local vars = {}
  for i, q in ipairs(ep.list) do vars[i] = tape:leaf(q) end
  local H0, W0 = rcn.initial_state(net, ep.Wx, vars[3])
  local WT = {}
  if how == "generic" then
    local state = {}
    for l = 1, NL do state[l] = W0[l] end
    for l = 1, NL do
      for c = 1, net.chemicals do
        state[NL + (l - 1) * net.chemicals + c] = H0[l]:select(1, c):clone()
      end
    end
    local final = ag.scan(function(s, p, t)
      return rcn.step(net, s, p, ep.X:row(t), ep.labels[t], ep.B)
    end, state, vars, ep.T, {segment = segment or 2})
    for l = 1, NL do WT[l] = final[l] end
    local loss = motif_net.query_loss(net.mnet, WT, ep.Xq, ep.labels_q)
    tape:backward(loss)
    local grads = {}
    for i, v in ipairs(vars) do grads[i] = v.grad or nm.zeros(ep.list[i]:size(), "float64") end
    return grads, ag.value(loss)
  end
  local res = rcn.unroll(net, H0, W0, ep.B, ep.X, ep.labels, vars, ep.T,
                         {segment = segment or 3, mode = how == "compiled" and "compiled" or nil})
  for l = 1, NL do WT[l] = res[NL + l] end
  local loss = motif_net.fused_query_loss(net.mnet, WT, ep.Xq, ep.labels_q)
  tape:backward(loss)
  local grads = {}
  for i, v in ipairs(vars) do grads[i] = v.grad end
  return grads, ag.value(loss)
end

describe("RCN timescales", function()
  it("follow tau_c = (tau_max/tau_min)^(c/(L-1)), z_c = 1/(tau_min tau_c), y_c = 1 - z_c, y_0 = 1",
     function()
    local tau, y, z = rcn_rule.timescales(3)
    local want = {1, math.sqrt(50), 50}
    for c = 1, 3 do
      assert.is_true(math.abs(tau[c] - want[c]) < 1e-12 * want[c])
      assert.is_true(math.abs(z[c] - 1 / want[c]) < 1e-15)
    end
    assert.are.equal(1, y[1])
    assert.is_true(math.abs(y[2] - (1 - 1 / math.sqrt(50))) < 1e-15)
    assert.is_true(math.abs(y[3] - 0.98) < 1e-15)
    -- the report's exponent c / L; other tau_min, tau_max
    tau, y, z = rcn_rule.timescales(4, {exponent = "L", tau_min = 2, tau_max = 20})
    for c = 0, 3 do
      assert.is_true(math.abs(tau[c + 1] - 10 ^ (c / 4)) < 1e-12 * 10)
      assert.is_true(math.abs(z[c + 1] - 1 / (2 * 10 ^ (c / 4))) < 1e-15)
    end
    assert.are.equal(1, y[1])
    assert.is_true(math.abs(y[4] - (1 - z[4])) < 1e-15)
    -- one chemical: tau 1, y 1, z 1 (the motif rule's step)
    tau, y, z = rcn_rule.timescales(1)
    assert.are.same({{1}, {1}, {1}}, {tau, y, z})
  end)

  it("are what the kernel uses", function()
    local net = new_net{sizes = SIZES, chemicals = 5, exponent = "L", dtype = "float64"}
    local info = net.kernel:info()
    local _, y, z = rcn_rule.timescales(5, {exponent = "L"})
    assert.are.same(y, info.decay)
    assert.are.same(z, info.gain)
    assert.are.same({0, 2, 9}, info.motifs)
  end)
end)

describe("RCN step", function()
  it("with L = 1, K = 0, v = 1, b = 0 is W + tanh(the motif rule's update)", function()
    for _, fb in ipairs{"fa", "bp"} do
      local ep = setup({chemicals = 1, motifs = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, feedback = fb}, 1, 3)
      local net = ep.net
      ep.list[2]:zero()
      ep.list[3]:fill(1)
      ep.list[4]:zero()
      local theta = ep.list[1]:select(1, 1):clone()
      local H, W = rcn.initial_state(net, ep.Wx, ep.list[3])
      local x = ep.X:row(1)
      local _, W1 = rcn.fused_step(net, H, W, ep.list, x, ep.labels[1], ep.B)
      local Wm = motif_net.step(net.mnet, W, theta, x, ep.labels[1], ep.B)
      for l = 1, 3 do
        local want = W[l] + nm.zeros(W[l]:size(), "float64"):tanh(Wm[l] - W[l])
        assert.tensor_near(want, W1[l], 1e-15, fb .. " layer " .. l)
      end
    end
  end)

  it("reduces to the motif rule for small arguments (error third order)", function()
    -- 5 steps of the RCN against 5 steps of W += sum_r theta_r F^r with
    -- theta = P[0,:] scaled by s: the difference relative to the total
    -- change shrinks like s^2 (tanh(u) = u - u^3/3 + ...).
    local ep = setup({chemicals = 1, motifs = {0, 2, 9}}, 5, 4)
    local net = ep.net
    ep.list[2]:zero()
    ep.list[3]:fill(1)
    ep.list[4]:zero()
    local base = nm.tensor({{0.5, 0, -0.3, 0, 0, 0, 0, 0, 0, 0.2}}, "float64")
    local rel = {}
    for k, s in ipairs{1e-1, 1e-2} do
      ep.list[1]:copy(base):scale(s)
      local theta = ep.list[1]:select(1, 1):clone()
      local H, W = rcn.initial_state(net, ep.Wx, ep.list[3])
      local Wm = ep.Wx
      for t = 1, ep.T do
        H, W = rcn.fused_step(net, H, W, ep.list, ep.X:row(t), ep.labels[t], ep.B)
        local Wn = {}
        for l = 1, 3 do Wn[l] = nm.zeros(Wm[l]:size(), "float64") end
        Wm = motif_net.step_into(net.mnet, Wn, Wm, theta, ep.X:row(t), ep.labels[t], ep.B)
      end
      local d, total = 0, 0
      for l = 1, 3 do
        d = math.max(d, ((W[l] - Wm[l]):abs():max()))
        total = math.max(total, ((Wm[l] - ep.Wx[l]):abs():max()))
      end
      rel[k] = d / total
    end
    assert.is_true(rel[2] < 1e-5, "relative difference " .. rel[2])
    assert.is_true(rel[2] < rel[1] / 50, string.format("%.3g then %.3g", rel[1], rel[2]))
  end)

  local VARIANTS = {
    {chemicals = 1},
    {chemicals = 3},
    {chemicals = 3, share = "layer"},
    {chemicals = 2, bias = "neuron"},
    {chemicals = 2, bias = "shared", motifs = {0, 3, 6, 7}},
    {chemicals = 2, momentum = true},
    {chemicals = 3, exponent = "L", motifs = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
    {chemicals = 2, share = "layer", bias = "none", momentum = true, motifs = {0, 1, 4, 5, 8, 9}},
  }
  local function name(cfg)
    local parts = {}
    for _, k in ipairs{"chemicals", "share", "bias", "momentum", "exponent", "feedback"} do
      if cfg[k] ~= nil then parts[#parts + 1] = k .. "=" .. tostring(cfg[k]) end
    end
    if cfg.motifs then parts[#parts + 1] = "motifs={" .. table.concat(cfg.motifs, ",") .. "}" end
    return table.concat(parts, " ")
  end

  it("fused C step = literal autograd rule, for every variant, in place or not", function()
    for _, fb in ipairs{"fa", "bp"} do
      for _, cfg in ipairs(VARIANTS) do
        local c2 = {feedback = fb}
        for k, v in pairs(cfg) do c2[k] = v end
        local ep = setup(c2, 1, 7)
        local net = ep.net
        local H, W = rcn.initial_state(net, ep.Wx, ep.list[3])
        for l = 1, 3 do H[l]:uniform(ep.g, -0.5, 0.5) end
        if not net.momentum then W = rcn.readout(net, H, ep.list[3]) end
        local x = ep.X:row(1)
        local H1, W1 = rcn.fused_step(net, H, W, ep.list, x, 2, ep.B)
        local s = rcn.step(net, rcn.flatten(net, H, W), ep.list, x, 2, ep.B)
        local H2, W2 = rcn.unflatten(net, s)
        local H3, W3 = {}, {}
        for l = 1, 3 do H3[l], W3[l] = H[l]:clone(), W[l]:clone() end
        net.kernel:forward(H3, W3, H3, W3, ep.B, x, 2, rcn.param_table(net, ep.list))
        for l = 1, 3 do
          local what = fb .. " " .. name(cfg) .. " layer " .. l
          assert.tensor_near(H2[l], H1[l], 1e-14, what)
          assert.tensor_near(W2[l], W1[l], 1e-14, what)
          assert.tensor_near(H1[l], H3[l], 0, what .. " in place")
          assert.tensor_near(W1[l], W3[l], 0, what .. " in place")
        end
      end
    end
  end)

  it("momentum RCN starts with H = 0 and adds v.h to W", function()
    local ep = setup({chemicals = 2, momentum = true}, 1, 9)
    local H, W = rcn.initial_state(ep.net, ep.Wx, ep.list[3])
    assert.are.equal(0, H[1]:norm(math.huge))
    assert.tensor_near(ep.Wx[2], W[2], 0)
    local H1, W1 = rcn.fused_step(ep.net, H, W, ep.list, ep.X:row(1), 1, ep.B)
    for l = 1, 3 do
      local want = W[l]:clone()
      for c = 1, 2 do want:axpy(ep.list[3]:get(c), H1[l]:select(1, c)) end
      assert.tensor_near(want, W1[l], 1e-15)
    end
  end)

  it("plain RCN: W = v.h, and every chemical starts as the Xavier draw", function()
    local ep = setup({chemicals = 3}, 1, 10)
    local H, W = rcn.initial_state(ep.net, ep.Wx, ep.list[3])
    for c = 1, 3 do assert.tensor_near(ep.Wx[1], H[1]:select(1, c), 0) end
    local vs = ep.list[3]:sum()
    assert.tensor_near(ep.Wx[1]:clone():scale(vs), W[1], 1e-15)
  end)
end)

describe("RCN meta-gradients", function()
  local CASES = {
    {chemicals = 1},
    {chemicals = 3},
    {chemicals = 3, share = "layer"},
    {chemicals = 2, bias = "neuron"},
    {chemicals = 2, bias = "shared", motifs = {0, 3, 6, 7}},
    {chemicals = 2, momentum = true},
    {chemicals = 2, share = "layer", momentum = true, motifs = {0, 1, 4, 5, 8, 9}},
  }
  for _, fb in ipairs{"fa", "bp"} do
    it("equal central finite differences for P, K, v and b (" .. fb .. ")", function()
      for i, cfg in ipairs(CASES) do
        local c2 = {feedback = fb}
        for k, v in pairs(cfg) do c2[k] = v end
        local ep = setup(c2, 4, 20 + i)
        local grads = meta_grad(ep)
        for j, q in ipairs(ep.list) do
          local fd = ag.numgrad(function() return meta_loss(ep) end, q, 1e-6)
          local scale = math.max(1e-2, fd:norm(math.huge))
          local err = ((fd - grads[j]):abs():max()) / scale
          assert.is_true(err < 1e-6, string.format("%s case %d parameter %d: relative error %.3g",
                                                   fb, i, j, err))
          assert.is_true(fd:norm(math.huge) > 0 or j >= 4, "a parameter without influence")
        end
      end
    end)
  end

  it("the checkpointed fused adjoint equals the generic tape, any segment length", function()
    for i, cfg in ipairs{{chemicals = 2}, {chemicals = 2, bias = "neuron", share = "layer"},
                         {chemicals = 3, momentum = true, feedback = "bp",
                          motifs = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}}} do
      local ep = setup(cfg, 5, 40 + i)
      local g1, l1 = meta_grad(ep, "generic", 2)
      for _, S in ipairs{1, 2, 5} do
        local g2, l2 = meta_grad(ep, "unroll", S)
        assert.is_true(math.abs(l1 - l2) < 1e-13)
        for j = 1, #g1 do
          assert.tensor_near(g1[j], g2[j], 1e-11, string.format("case %d S %d parameter %d", i, S, j))
        end
      end
    end
  end)

  it("the generated step and adjoint (mode 'compiled') give the hand kernel's unroll and " ..
     "meta-gradient, every case", function()
    for i, cfg in ipairs(CASES) do
      local c2 = {}
      for k, v in pairs(cfg) do c2[k] = v end
      if i % 3 == 0 then c2.feedback = "bp" end
      local ep = setup(c2, 5, 60 + i)
      local g1, l1 = meta_grad(ep, "unroll", 2)
      local g2, l2 = meta_grad(ep, "compiled", 2)
      assert.is_true(math.abs(l1 - l2) <= 1e-12 * math.abs(l1), string.format("variant %d: %.17g vs %.17g", i, l1, l2))
      for j = 1, #g1 do
        if j == 4 and ep.net.bias == "none" then
          -- no bias term: the rule's step (and so the generated one) gives
          -- b no gradient; the hand kernel's is of a bias it adds at 0
          -- (never learned: the learner leaves b out with bias = "none")
          assert.are.equal(0, g2[j]:clone():abs():max())
        else
          local scale = math.max(g1[j]:clone():abs():max(), 1e-300)
          assert.is_true((g1[j] - g2[j]):abs():max() <= 1e-12 * scale,
                         string.format("variant %d parameter %d", i, j))
        end
      end
    end
  end)

  it("the adjoint reads tanh off the step's output as it recomputes it", function()
    for i, cfg in ipairs{{chemicals = 3, momentum = true}, {chemicals = 2, bias = "neuron",
                         motifs = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}}} do
      local ep = setup(cfg, 1, 60 + i)
      local net, k, g = ep.net, ep.net.kernel, ep.g
      local H, W = rcn.initial_state(net, ep.Wx, ep.list[3])
      local Ho, Wo = {}, {}
      for l = 1, 3 do
        H[l]:uniform(g, -0.5, 0.5)
        Ho[l], Wo[l] = H[l]:clone(), W[l]:clone()
      end
      local pt = rcn.param_table(net, ep.list)
      local trace = k:new_trace()
      k:forward(Ho, Wo, H, W, ep.B, ep.X:row(1), 2, pt, trace)
      local function adjoint(with_out)
        local GH, GW = {}, {}
        for l = 1, 3 do
          GH[l] = nm.zeros(H[l]:size(), "float64"):uniform(nm.generator(l), -1, 1)
          GW[l] = nm.zeros(W[l]:size(), "float64"):uniform(nm.generator(10 + l), -1, 1)
        end
        local gp = {}
        for j, q in ipairs(ep.list) do gp[j] = nm.zeros(q:size(), "float64") end
        k:backward(GH, GW, H, W, ep.B, trace, pt, rcn.param_table(net, gp), with_out and Ho or nil)
        return GH, GW, gp
      end
      local h1, w1, p1 = adjoint(true)
      local h2, w2, p2 = adjoint(false)
      for l = 1, 3 do
        assert.tensor_near(h2[l], h1[l], 1e-12)
        assert.tensor_near(w2[l], w1[l], 1e-12)
      end
      for j = 1, #p1 do assert.tensor_near(p2[j], p1[j], 1e-12) end
    end
  end)

  it("float32 kernels (fast tanh) agree with float64 ones", function()
    local e64 = setup({chemicals = 3, dtype = "float64"}, 5, 11)
    local e32 = setup({chemicals = 3, dtype = "float32"}, 5, 11)
    local a = meta_grad(e64)
    local b = meta_grad(e32)
    for j = 1, #a do
      assert.tensor_near(a[j], b[j], 1e-4 * math.max(1e-2, a[j]:norm(math.huge)), "parameter " .. j)
    end
  end)
end)

describe("RCN learner", function()
  -- A task of the network 6-5-4-3 on random data.
  local function task(g, T)
    local t = {X = nm.zeros(T, 6, "float32"):uniform(g, 0, 1), labels = {},
               Xq = nm.zeros(6, 6, "float32"):uniform(g, 0, 1), labels_q = {}, steps = T}
    for i = 1, T do t.labels[i] = g:integer(1, 3) end
    for i = 1, 6 do t.labels_q[i] = g:integer(1, 3) end
    return t
  end

  it("starts at v = 1/L, K = 0, b = 0, P[:,0] = 1e-3; moves only the learned parts", function()
    local net = new_net{sizes = SIZES, chemicals = 4, share = "layer", motifs = {0, 2}}
    local ln = rcn.learner{net = net, learn = {P = true, v = true}}
    assert.are.equal(0.25, ln.p.v:get(2, 3))
    assert.are.equal(1e-3, ln.p.P:get(3, 4, 1))
    assert.are.equal(0, ln.p.P:narrow(3, 2, 9):norm(math.huge))
    assert.are.equal(0, ln.p.K:norm(math.huge))
    local g = nm.generator(1)
    for _ = 1, 3 do
      local info = ln:meta_step(task(g, 6), g)
      assert.are.equal("update", info.action)
    end
    assert.are.equal(0, ln.p.K:norm(math.huge))                      -- not learned
    assert.are.equal(0, ln.p.b:norm(math.huge))
    assert.are.equal(0, ln.p.P:narrow(3, 4, 7):norm(math.huge))       -- motifs not in use
    assert.is_true(ln.p.P:narrow(3, 3, 1):norm(math.huge) > 0)        -- motif 2 moved
    assert.is_true(math.abs(ln.p.v:get(1, 1) - 0.25) > 0)
    assert.are.equal(3 * (4 * 2 + 16 + 4) + 4 * 3, rcn.count(net))
  end)

  it("moves each group at its own rate (lr_scale), and restores its state", function()
    local g = nm.generator(3)
    local net = new_net{sizes = SIZES, chemicals = 2}
    local a = rcn.learner{net = net, lr_scale = {K = 0, b = 0.5}}
    local b = rcn.learner{net = net, lr_scale = {K = 0, b = 0.5}}
    local t1, t2 = task(g, 6), task(g, 6)
    a:meta_step(t1, nm.generator(1))
    b:load_state(a:state())
    a:meta_step(t2, nm.generator(2))
    b:meta_step(t2, nm.generator(2))
    assert.are.equal(0, a.p.K:norm(math.huge))
    assert.is_true(a.p.P:norm(math.huge) > 1e-3)
    -- Adam's first step moves every element by about its rate
    local db = a.p.b:norm(math.huge)
    assert.is_true(db > 0.4e-3 and db < 1.1e-3, "bias moved " .. db)
    for i = 1, #a.list do assert.tensor_near(a.list[i], b.list[i], 0) end
    assert.has_error(function() rcn.learner{net = net, lr_scale = {theta = 1}} end)
  end)

  it("reports the meta-gradient's norm per group (P, K, v, b) before clipping", function()
    local g = nm.generator(4)
    local net = new_net{sizes = SIZES, chemicals = 2}
    local ln = rcn.learner{net = net, clip = 1e-9}
    local t = task(g, 6)
    local _, _, _, grads = ln:meta_gradient(t, g:clone())
    local want, total = {}, 0
    for i, gr in ipairs(grads) do
      local key = ln.groups[i]
      local n = gr:norm()
      want[key] = (want[key] or 0) + n * n
      total = total + n * n
    end
    local info = ln:meta_step(t, g:clone())
    for _, key in ipairs{"P", "K", "v", "b"} do
      assert.is_true(want[key] > 0, key)
      assert.near(math.sqrt(want[key]), info.grad_norms[key], 1e-12 * math.sqrt(want[key]), key)
    end
    assert.near(math.sqrt(total), info.grad_norm, 1e-12 * math.sqrt(total))
    assert.is_nil(info.grad)                     -- components: the motif learner's only
  end)

  it("skips or rolls back non-finite meta-steps", function()
    local g = nm.generator(2)
    for _, guard in ipairs{"skip", "rollback"} do
      local ln = rcn.learner{net = new_net{sizes = SIZES, chemicals = 2}, guard = guard}
      ln:meta_step(task(g, 5), g)
      local before = ln.p.P:clone()
      local bad = task(g, 5)
      bad.X:set(2, 3, 0 / 0)
      local info = ln:meta_step(bad, g)
      assert.is_false(info.finite)
      assert.are.equal(guard, info.action)
      if guard == "skip" then
        assert.tensor_near(before, ln.p.P, 0)
        assert.are.equal(1, ln.skipped)
      else
        assert.are.equal(1, ln.rollbacks)
        assert.is_true((ln.p.P - before):norm(math.huge) > 0)          -- back before the last update
      end
    end
  end)

  it("evaluate and episode agree with the meta-gradient's forward", function()
    local g = nm.generator(5)
    local ln = rcn.learner{net = new_net{sizes = SIZES, chemicals = 2, dtype = "float64"}}
    local t = task(g, 6)
    t.X, t.Xq = t.X:double(), t.Xq:double()
    local acc, loss = ln:evaluate(t, nm.generator(9))
    local l2, ce, acc2 = ln:meta_gradient(t, nm.generator(9))
    assert.is_true(math.abs(loss - ce) < 1e-13 and l2 == ce)
    assert.are.equal(acc, acc2)
  end)
end)

describe("RCN memory", function()
  it("a 100-step meta-gradient with per-synapse biases fits the stated bound", function()
    -- Beyond the unroll's reused buffers (rcn.memory: (ceil(T/S) + S)
    -- states and S traces), a meta-gradient allocates the episode's draws,
    -- initial and final states, adjoints and gradients, the per-synapse
    -- bias gradient accumulated in place: independent of T.
    local T = 100
    local sizes = {784, 100, 10}
    local net = new_net{sizes = sizes, chemicals = 2, bias = "neuron"}
    local ln = rcn.learner{net = net}
    local g = nm.generator(3)
    local t = {X = nm.zeros(T, 784, "float32"):uniform(g, 0, 1), labels = {},
               Xq = nm.zeros(10, 784, "float32"):uniform(g, 0, 1), labels_q = {}, steps = T}
    for i = 1, T do t.labels[i] = (i % 10) + 1 end
    for i = 1, 10 do t.labels_q[i] = (i % 10) + 1 end
    local function allocated(steps)
      t.steps = steps
      ln:meta_gradient(t, nm.generator(4))             -- buffers allocated once
      collectgarbage("collect")
      collectgarbage("collect")
      collectgarbage("stop")
      local kb0 = collectgarbage("count")
      ln:meta_gradient(t, nm.generator(4))
      local kb = (collectgarbage("count") - kb0) * 1024
      collectgarbage("restart")
      return kb
    end
    local grown = allocated(T)
    -- the same for a quarter of the steps: nothing is stored per step
    assert.is_true(math.abs(allocated(T // 4) - grown) < 64 * 1024)
    -- without the rollback copies: (5 + 5 L) N E, N E = one layer set of
    -- weights (experiments/bench/rcn.lua states the whole bound)
    local NE = rcn.state_bytes(net) / 3
    assert.is_true(grown < 15 * NE + 256 * 1024,
                   string.format("allocated %.0f kB, bound %.0f kB", grown / 1024,
                                 (15 * NE + 256 * 1024) / 1024))
    -- the bound grows like sqrt(T), not T
    assert.is_true(rcn.memory(net, 400) < 2.1 * rcn.memory(net, 100))
  end)
end)

describe("RCN errors", function()
  it("reject bad descriptions", function()
    local function err(o) local ok, e = pcall(new_net, o) assert.is_false(ok) return e end
    assert.matches("chemicals must be an integer in 1..16", err{sizes = SIZES, chemicals = 0})
    assert.matches("chemicals must be an integer", err{sizes = SIZES, chemicals = 17})
    assert.matches("chemicals must be an integer", err{sizes = SIZES, chemicals = 1.5})
    assert.matches("share must be 'shared' or 'layer'", err{sizes = SIZES, share = "neuron"})
    assert.matches("bias must be", err{sizes = SIZES, bias = "synapse"})
    assert.matches("motif indices 0..9", err{sizes = SIZES, motifs = {0, 10}})
    assert.matches("motif indices 0..9", err{sizes = SIZES, motifs = {}})
    assert.matches("exponent must be 'L%-1' or 'L'", err{sizes = SIZES, exponent = "c/L"})
    assert.matches("tau_min <= tau_max", err{sizes = SIZES, tau_min = 5, tau_max = 2})
    assert.matches("sizes", err{sizes = {6}})
    local ok, e = pcall(function()
      return nm.kernels.rcn_net{sizes = SIZES, chemicals = 2, decay = {1}, gain = {1, 1}}
    end)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'rcn_net' %(field 'decay' must hold 2 numbers", e)
  end)

  it("name the argument and the shapes in kernel calls", function()
    local ep = setup({chemicals = 2}, 1, 1)
    local net, k = ep.net, ep.net.kernel
    local H, W = rcn.initial_state(net, ep.Wx, ep.list[3])
    local pt = rcn.param_table(net, ep.list)
    local x = ep.X:row(1)
    local function err(...)
      local args = table.pack(...)
      local ok, e = pcall(function() return k:forward(table.unpack(args, 1, args.n)) end)
      assert.is_false(ok)
      return e
    end
    local badH = {nm.zeros(3, 5, 6, "float64"), H[2], H[3]}
    assert.matches("bad argument #1 to 'forward' %(H_out%[1%] must be a contiguous float64 " ..
                   "%[2 x 5 x 6%] tensor, got float64 %[3 x 5 x 6%]%)",
                   err(badH, W, H, W, ep.B, x, 1, pt))
    assert.matches("W_in%[2%] must be a contiguous float64 %[4 x 5%]",
                   err(H, W, H, {W[1], W[1], W[3]}, ep.B, x, 1, pt))
    assert.matches("feedback matrices B expected", err(H, W, H, W, nil, x, 1, pt))
    assert.matches("label 4 is not a class in 1..3", err(H, W, H, W, ep.B, x, 4, pt))
    assert.matches("x must be a 1%-D float64 tensor of 6 values", err(H, W, H, W, ep.B, ep.X, 1, pt))
    assert.matches("params.P must be a contiguous float64 %[2 x 10%] or %[3 x 2 x 10%]",
                   err(H, W, H, W, ep.B, x, 1, {P = nm.zeros(2, 9, "float64"), K = pt.K, v = pt.v}))
    assert.matches("params.v must be a contiguous float64 %[2%] or %[3 x 2%] tensor, got float32",
                   err(H, W, H, W, ep.B, x, 1, {P = pt.P, K = pt.K, v = nm.zeros(2)}))
    local nanP = pt.P:clone()
    nanP:set(1, 1, 0 / 0)
    assert.matches("meta%-parameters must be finite",
                   err(H, W, H, W, ep.B, x, 1, {P = nanP, K = pt.K, v = pt.v, b = pt.b}))
    assert.matches("chemicals and weights must not share memory",
                   err(H, {H[1]:select(1, 1), W[2], W[3]}, H, W, ep.B, x, 1, pt))
    local ok, e = pcall(function() return k:backward(H, W, H, W, ep.B, nil, pt, {}) end)
    assert.is_false(ok)
    assert.matches("the trace of the forward step expected", e)
    local ok2, e2 = pcall(rcn.unroll, net, H, W, ep.B, ep.X, ep.labels, ep.list, 3)
    assert.is_false(ok2)
    assert.matches("T = 3 steps but X has 1 rows", e2)
    assert.has_error(function() rcn.learner{net = net, guard = "ignore"} end)
    assert.has_error(function() rcn.learner{net = net, learn = {theta = true}} end)
  end)
end)

describe("experiments/rcn.lua", function()
  local json = require "nm.json"
  local support = require "spec.support"
  local run, tmp = support.experiment("rcn.lua")

  it("runs --quick to a finished results.json; a run alone equals it within the list; --replot", function()
    local all, one = tmp .. "-all", tmp .. "-one"
    assert.equal(0, run("--quick --out " .. all))
    local ra = json.read_file(all .. "/results.json")
    assert.equal("finished", ra.status)
    for _, name in ipairs{"motif", "rcn1", "rcn2", "layer2", "neuron2", "momentum2"} do
      assert.is_table(ra.final.runs[name], name)
    end
    -- Every run meets the same tasks and test episodes (a paired comparison).
    assert.equal(0, run("--quick --runs rcn2 --out " .. one))
    local ro = json.read_file(one .. "/results.json")
    assert.same(ra.final.runs.rcn2.params, ro.final.runs.rcn2.params)
    assert.equal(ra.final.runs.rcn2.final_loss, ro.final.runs.rcn2.final_loss)
    assert.equal(0, run("--replot --out " .. all))
    os.execute(string.format("rm -rf %q %q %q", all, one, tmp .. ".log"))
  end)

  it("takes a user's RCN rule file in --rules: same table as the built-in rule", function()
    -- rules/rcn.lua without its C kernel: the Lua step, float64 to rounding
    local dir = tmp .. "-rules"
    local path = support.user_rule(dir, "rcn", "my_rcn")
    local out = tmp .. "-user"
    assert.equal(0, run("--quick --runs rcn2 --episodes 1 --K 2 --eval-every 1 --dtype float64 " ..
                        "--rules rcn," .. path .. " --out " .. out))
    local r = json.read_file(out .. "/results.json").final.runs
    local a, b = r.rcn2, r["rcn2-my_rcn"]
    assert.is_true(math.abs(a.final_loss - b.final_loss) < 1e-12)
    assert.is_true(math.abs(a.params.P[1][1] - b.params.P[1][1]) < 1e-15)
    assert.equal(0, run("--replot --out " .. out))
    assert.equal(2, run("--quick --rules motifs,hebb --out " .. out .. "-bad"))
    os.execute(string.format("rm -rf %q %q %q %q", dir, out, out .. "-bad", tmp .. ".log"))
  end)
end)
