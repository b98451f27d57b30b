-- spec/meta_spec.lua: the motif rule and its meta-gradient (rules/motifs.lua,
-- lua/nm/models/motif_net.lua, lua/nm/models/meta.lua). Meta-gradients
-- equal central finite differences (float64, small network, short inner
-- loop) for every motif and feedback mode; the compiled step and its
-- generated adjoint (nm.compile) equal the rule's Lua step on the generic
-- autograd tape; theta_0 alone with BP feedback is SGD; a 250-step
-- meta-gradient stays within the stated memory bound; tasks, guards and
-- errors.

local nm = require "neuromic"
local ag = require "nm.autograd"
local meta = require "nm.models.meta"
local motif_net = require "nm.models.motif_net"
local motifs = require("nm.rule").definition("motifs")

-- A small episode: network 6-5-4-3, T steps on random inputs in [0, 1].
local function episode(feedback, T, seed, dtype)
  local g = nm.generator(seed or 1)
  local net = motif_net.new{rule = motifs, sizes = {6, 5, 4, 3}, feedback = feedback, dtype = dtype or "float64"}
  local W, B = net:init(g)
  local X = nm.zeros(T, 6, net.dtype):uniform(g, 0, 1)
  local labels = {}
  for t = 1, T do labels[t] = g:integer(1, 3) end
  local Xq = nm.zeros(7, 6, net.dtype):uniform(g, 0, 1)
  local labels_q = {}
  for i = 1, 7 do labels_q[i] = g:integer(1, 3) end
  return {net = net, W = W, B = B, X = X, labels = labels, Xq = Xq, labels_q = labels_q, T = T}
end

-- The meta-loss of theta, untracked (for finite differences).
local function meta_loss(ep, theta)
  local W = ep.W
  for t = 1, ep.T do W = motif_net.step(ep.net, W, theta, ep.X:row(t), ep.labels[t], ep.B) end
  return ag.value(motif_net.query_loss(ep.net, W, ep.Xq, ep.labels_q))
end

-- The meta-gradient (theta and W0): how = "unroll" (the default unroll:
-- the compiled step) or "generic" (the rule's Lua step on the tape, with
-- the generic query loss: an independent reference).
local function meta_grad(ep, theta, how)
  local tape = ag.tape()
  local th = tape:leaf(theta)
  local W0 = {}
  for l = 1, ep.net.layers do W0[l] = tape:leaf(ep.W[l]) end
  local WT = motif_net.unroll(ep.net, W0, ep.B, ep.X, ep.labels, th, ep.T,
                              {segment = 2, mode = how})
  local loss = how == "generic" and motif_net.query_loss(ep.net, WT, ep.Xq, ep.labels_q)
    or motif_net.fused_query_loss(ep.net, WT, ep.Xq, ep.labels_q)
  tape:backward(loss)
  local gw = {}
  for l = 1, ep.net.layers do gw[l] = W0[l].grad end
  return th.grad, gw, ag.value(loss)
end

-- One untracked step of the compiled rule (a new list).
local function compiled_step(net, W, theta, x, label, B)
  local out = {}
  for l = 1, net.layers do out[l] = nm.zeros(W[l]:size(), net.dtype) end
  return motif_net.step_into(net, out, W, theta, x, label, B)
end

-- A theta using the motifs of `list` (0-based): theta_0 = 0.05 keeps the
-- network learning; the others get values large enough to matter.
local function theta_of(list, g)
  local t = nm.zeros(10, "float64")
  t:set(1, 0.05)
  for _, r in ipairs(list) do
    if r ~= 0 then t:set(r + 1, (g:uniform() - 0.5) * 0.06) end
  end
  return t
end

describe("motif rule meta-gradients", function()
  for _, fb in ipairs{"fa", "bp"} do
    it("equal central finite differences for every motif (" .. fb .. ")", function()
      local g = nm.generator(21)
      local ep = episode(fb, 5, 3)
      for r = 0, 9 do
        local theta = theta_of({r}, g)
        local grad = meta_grad(ep, theta, "unroll")
        local h = 1e-6
        local tp, tm = theta:clone(), theta:clone()
        tp:set(r + 1, theta:get(r + 1) + h)
        tm:set(r + 1, theta:get(r + 1) - h)
        local fd = (meta_loss(ep, tp) - meta_loss(ep, tm)) / (2 * h)
        local got = grad:get(r + 1)
        assert.is_true(math.abs(got - fd) <= 1e-7 * math.max(1, math.abs(fd)),
                       string.format("%s motif %d: meta-gradient %.10g, differences %.10g", fb, r, got, fd))
      end
    end)
  end

  it("equal central finite differences for all ten at once, and for W0", function()
    local g = nm.generator(8)
    local ep = episode("fa", 4, 5)
    local all = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
    local theta = theta_of(all, g)
    local grad, gw = meta_grad(ep, theta, "unroll")
    local fd = ag.numgrad(function() return meta_loss(ep, theta) end, theta)
    assert.tensor_near(fd, grad, 1e-7)
    local W1 = ep.W[1]
    local fdw = ag.numgrad(function() return meta_loss(ep, theta) end, W1)
    assert.tensor_near(fdw, gw[1], 1e-7)
  end)

  it("generated adjoint = generic tape, for sparse and full theta", function()
    local g = nm.generator(4)
    for _, fb in ipairs{"fa", "bp", "bp_detached"} do
      local ep = episode(fb, 6, 9)
      for _, list in ipairs{{0}, {0, 2}, {0, 9}, {0, 2, 9}, {0, 3}, {0, 6, 7}, {0, 8},
                            {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}} do
        local theta = theta_of(list, g)
        local g1, w1, l1 = meta_grad(ep, theta, "generic")
        local g2, w2, l2 = meta_grad(ep, theta, "unroll")
        local what = fb .. " {" .. table.concat(list, ",") .. "}"
        assert.is_true(math.abs(l1 - l2) < 1e-13, what)
        assert.tensor_near(g1, g2, 1e-11, what)
        for l = 1, 3 do assert.tensor_near(w1[l], w2[l], 1e-11, what .. " W" .. l) end
      end
    end
  end)

  it("bp_detached holds the feedback copy constant (differs from bp in W0's gradient)", function()
    local g = nm.generator(2)
    local ep_bp, ep_det = episode("bp", 4, 7), episode("bp_detached", 4, 7)
    local theta = theta_of({0, 2}, g)
    local _, wb = meta_grad(ep_bp, theta, "unroll")
    local _, wd = meta_grad(ep_det, theta, "unroll")
    assert.is_true((wb[2] - wd[2]):abs():max() > 1e-6)
  end)

  it("the adjoint also gives the gradient with respect to the FA feedback matrices", function()
    local g = nm.generator(12)
    local ep = episode("fa", 1, 19)
    local theta = theta_of({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, g)
    local G0 = {}
    for l = 1, 3 do G0[l] = nm.zeros(ep.W[l]:size(), "float64"):normal(g, 0, 1) end
    local function loss()          -- <G0, W'> after one step of the Lua rule
      local Wn = motif_net.step(ep.net, ep.W, theta, ep.X:row(1), ep.labels[1], ep.B)
      local s = 0
      for l = 1, 3 do s = s + Wn[l]:dot(G0[l]) end
      return s
    end
    local f = motif_net.compiled_step(ep.net, ep.B)
    local tape = ag.tape()
    local Bv = {}
    for l = 1, 3 do Bv[l] = tape:leaf(ep.B[l]) end
    local Wn = f:call(ep.W, theta, ep.X:row(1), ep.labels[1], Bv)
    local s = ag.sum(ag.mul(Wn[1], G0[1]))
    for l = 2, 3 do s = ag.add(s, ag.sum(ag.mul(Wn[l], G0[l]))) end
    tape:backward(s)
    for l = 1, 3 do
      assert.tensor_near(ag.numgrad(loss, ep.B[l]), Bv[l].grad, 1e-8, "B" .. l)
    end
  end)

  it("float32 kernels agree with float64 ones", function()
    local g = nm.generator(6)
    local theta = theta_of({0, 2, 9}, g)
    local e64, e32 = episode("fa", 5, 11, "float64"), episode("fa", 5, 11, "float32")
    local a = meta_grad(e64, theta, "unroll")
    local b = meta_grad(e32, theta, "unroll")
    assert.tensor_near(a, b, 1e-4 * a:norm(math.huge))
  end)
end)

describe("motif rule steps", function()
  it("theta_0 alone with BP feedback is SGD on the cross-entropy", function()
    local ep = episode("bp", 8, 13)
    local theta = motif_net.theta{[0] = 0.3}
    local W, V = ep.W, ep.W
    for t = 1, ep.T do
      local x, c = ep.X:row(t), ep.labels[t]
      W = compiled_step(ep.net, W, theta, x, c)
      -- SGD: the gradient of -log softmax(z_L)[c] by an independent tape
      local tape = ag.tape()
      local vars = {}
      for l = 1, 3 do vars[l] = tape:leaf(V[l]) end
      local y = x
      for l = 1, 3 do
        local z = ag.mv(vars[l], y)
        y = l < 3 and ag.softplus(z, 10) or z
      end
      tape:backward(ag.cross_entropy(y, c))
      local nv = {}
      for l = 1, 3 do nv[l] = V[l]:clone():axpy(-0.3, vars[l].grad) end
      V = nv
      for l = 1, 3 do assert.tensor_near(V[l], W[l], 1e-13, "step " .. t .. " W" .. l) end
    end
  end)

  it("the compiled step equals the literal motif forms, in place or not", function()
    local g = nm.generator(3)
    for _, fb in ipairs{"fa", "bp"} do
      local ep = episode(fb, 3, 17)
      local theta = theta_of({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, g)
      local a = motif_net.step(ep.net, ep.W, theta, ep.X:row(1), 2, ep.B)
      local b = compiled_step(ep.net, ep.W, theta, ep.X:row(1), 2, ep.B)
      local c = {}
      for l = 1, 3 do c[l] = ep.W[l]:clone() end
      motif_net.step_into(ep.net, c, c, theta, ep.X:row(1), 2, ep.B)
      for l = 1, 3 do
        assert.tensor_near(a[l], b[l], 1e-14)
        assert.tensor_near(a[l], c[l], 1e-14)
      end
    end
  end)

  it("each motif has its tabulated form", function()
    -- F^r from the signals, computed here with plain tensor methods.
    local ep = episode("fa", 1, 23)
    local net, W = ep.net, ep.W
    local x, c = ep.X:row(1), 3
    local y, e = net:signals(W, ep.B, x, c)
    local l = 2
    local Wl, yp, yq, ep_, eq = W[l], y[l - 1], y[l], e[l - 1], e[l]
    local function outer(a, b) return nm.outer(a, b) end
    local cval = yq:dot(nm.mv(Wl, ep_))
    local dval = eq:dot(nm.mv(Wl, yp))
    local want = {
      [0] = outer(eq, yp):scale(-1), outer(yq, ep_):scale(-1), outer(eq, ep_):scale(-1),
      Wl:clone():scale(-1), outer(nm.ones(4, "float64"), ep_):scale(-1),
      outer(eq, yp):scale(-yq:sum()), outer(yq, ep_):scale(-cval), outer(eq, yp):scale(-cval),
      outer(yq, ep_):scale(-dval), outer(yq, yp) - nm.mm(outer(yq, yq), Wl),
    }
    local F = motifs.terms(Wl, yp, yq, ep_, eq)
    for r = 0, 9 do assert.tensor_near(want[r], F[r], 1e-14, "motif " .. r) end
    -- and the step adds sum_r theta_r F^r
    for r = 0, 9 do
      local th = nm.zeros(10, "float64")
      th:set(r + 1, 0.1)
      local Wn = compiled_step(net, W, th, x, c, ep.B)
      assert.tensor_near(W[l] + want[r]:scale(0.1), Wn[l], 1e-14, "step with motif " .. r)
    end
  end)

  it("the fused query loss and its gradient equal the generic ones", function()
    local ep = episode("fa", 1, 31)
    local loss1, correct = ep.net.kernel:query(ep.W, ep.Xq, ep.labels_q)
    local tape = ag.tape()
    local vars = {}
    for l = 1, 3 do vars[l] = tape:leaf(ep.W[l]) end
    local Z = motif_net.logits(ep.net, vars, ep.Xq)
    local loss2 = ag.cross_entropy(Z, ep.labels_q)
    tape:backward(loss2)
    assert.is_true(math.abs(loss1 - ag.value(loss2)) < 1e-13)
    local right = 0
    local pred = ag.value(Z):argmax(2)
    for i = 1, 7 do if pred:get(i) == ep.labels_q[i] then right = right + 1 end end
    assert.are.equal(right, correct)
    local G = {}
    for l = 1, 3 do G[l] = nm.zeros(ep.W[l]:size(), "float64") end
    ep.net.kernel:query(ep.W, ep.Xq, ep.labels_q, G)
    for l = 1, 3 do assert.tensor_near(vars[l].grad, G[l], 1e-14) end
  end)

  it("Xavier draws have the stated range", function()
    local net = motif_net.new{rule = motifs, sizes = {30, 20, 10}, dtype = "float64"}
    local W, B = net:init(nm.generator(1))
    local a = math.sqrt(6 / 50)
    assert.is_true(W[1]:abs():max() <= a and W[1]:abs():max() > 0.9 * a)
    assert.is_true(B[1]:abs():max() <= a)
    assert.is_nil(select(2, motif_net.new{rule = motifs, sizes = {3, 2}, feedback = "bp"}:init(nm.generator(1))))
  end)
end)

describe("motif network error pathways from rule files", function()
  -- e_{l} by hand: (M^T e_src) .* (1 - exp(-beta y_l)), plain tensors.
  local function naive_errors(net, W, M, y, label, output)
    local L = net.layers
    local e = {}
    e[L] = y[L]:clone()
    e[L]:set(label, e[L]:get(label) - 1)
    for l = L - 1, 0, -1 do
      local src = output and L or l + 1
      local v = nm.mv(M[l + 1]:t(), e[src])
      local s = y[l]:clone():scale(-net.beta):exp():scale(-1):add(1)
      e[l] = v:mul(v, s)
    end
    return e
  end

  it("sign_symmetry: e_l = (sign(W_{l+1})^T e_{l+1}) .* f'; dfa: (D_l^T e_L) .* f'", function()
    for _, fb in ipairs{"sign_symmetry", "dfa"} do
      local ep = episode(fb, 1, 41)
      local net, W = ep.net, ep.W
      assert.truthy(net.pathway)                       -- no compiled form: the Lua path
      assert.are.equal(fb, net.pathway.name)
      local y, e = net:signals(W, ep.B, ep.X:row(1), 2)
      local M = {}
      for l = 1, net.layers do
        if fb == "dfa" then
          M[l] = ep.B[l].Dt
          assert.are.same({3, net.sizes[l]}, M[l]:size())
        else
          M[l] = W[l]:clone():sign(W[l])
        end
      end
      local want = naive_errors(net, W, M, y, 2, fb == "dfa")
      for l = 0, net.layers do assert.tensor_near(want[l], e[l], 1e-14, fb .. " e_" .. l) end
    end
  end)

  it("meta-gradients through a pathway without C form equal finite differences", function()
    local ep = episode("sign_symmetry", 3, 43)
    local theta = theta_of({0, 2, 9}, nm.generator(44))
    local gt = meta_grad(ep, theta, "unroll")          -- falls back to the rule's Lua step
    local num = ag.numgrad(function() return meta_loss(ep, theta) end, theta)
    assert.tensor_near(num, gt, 1e-7)
  end)

  it("the compiled unroll equals the rule's Lua step; a pathway has no compiled form", function()
    local ep = episode("fa", 4, 45)
    local theta = theta_of({0, 2, 9}, nm.generator(46))
    local a = motif_net.unroll(ep.net, ep.W, ep.B, ep.X, ep.labels, theta, ep.T)
    local b = motif_net.unroll(ep.net, ep.W, ep.B, ep.X, ep.labels, theta, ep.T, {mode = "generic"})
    for l = 1, 3 do assert.tensor_near(a[l], b[l], 1e-13) end
    local ss = episode("sign_symmetry", 1, 47)
    assert.has_error(function()
      motif_net.unroll(ss.net, ss.W, ss.B, ss.X, ss.labels, theta, 1, {mode = "compiled"})
    end, "motif_net: unroll: the pathway 'sign_symmetry' has no compiled form: use mode 'generic'")
    assert.has_error(function() motif_net.new{rule = motifs, feedback = "nope"} end)
    assert.has_error(function() motif_net.new{rule = require("nm.rule").definition("rcn")} end,
                     "motif_net.new: rule 'rcn' is for model 'rcn', not 'motif_net'")
  end)
end)

describe("meta-gradient memory", function()
  -- The stated bound: checkpoints of ceil(T/S) weight sets, one segment
  -- of S weight sets being recomputed: with S = ceil(sqrt(T)) about
  -- 2 sqrt(T) + O(1) weight sets, against T for a stored unroll; and T
  -- traces of vectors (about 1/30 of a weight set each here).
  local T = 250
  local net = motif_net.new{rule = motifs, feedback = "fa", dtype = "float32"}     -- 784-170-130-100-70-10
  local g = nm.generator(1)
  local task = {X = nm.zeros(T, 784, "float32"):uniform(g, 0, 1), labels = {},
                Xq = nm.zeros(20, 784, "float32"):uniform(g, 0, 1), labels_q = {}, steps = T}
  for t = 1, T do task.labels[t] = (t % 10) + 1 end
  for i = 1, 20 do task.labels_q[i] = (i % 10) + 1 end
  local state_kb = 0
  for l = 1, net.layers do state_kb = state_kb + net.sizes[l] * net.sizes[l + 1] * 4 / 1024 end
  local S = math.ceil(math.sqrt(T))
  local bound_kb = (2 * S + 6) * state_kb

  it("unroll: everything one 250-step meta-gradient allocates fits the bound", function()
    local learner = motif_net.learner{net = net, motifs = {0, 2, 9},
                                 theta0 = {[0] = 1e-3, [2] = 1e-5, [9] = 1e-5}}
    if not require("nm.compile").toolchain() then
      pending("no C compiler: the interpreted step allocates its intermediates at every step " ..
              "(the bound is for the compiled kernels)")
      return
    end
    learner:meta_gradient(task, nm.generator(2))   -- the kernels are built (or loaded) once
    collectgarbage("collect")
    collectgarbage("collect")              -- tensors are finalised: freed a cycle late
    collectgarbage("stop")                 -- count every allocation, garbage included
    local kb0 = collectgarbage("count")
    local stats = {}
    local loss, _, _, grad = learner:meta_gradient(task, nm.generator(2), stats)
    local grown = collectgarbage("count") - kb0
    collectgarbage("restart")
    assert.is_true(meta.finite(loss) and meta.finite(grad:norm()))
    assert.are.equal(S, stats.segment)
    assert.are.equal(math.ceil(T / S), stats.snapshots)
    assert.is_true(grown < bound_kb, string.format("allocated %.0f KB, bound %.0f KB (T states: %.0f KB)",
                                                   grown, bound_kb, T * state_kb))
    -- the buffers: segment starts and one segment of states, and a trace
    -- per step (the backward replays each step from it: vectors, about
    -- 1/30 of a weight set here, so T traces are about 8 weight sets)
    assert.is_true(stats.trace_bytes > 0 and stats.trace_bytes < state_kb * 1024 / 20)
    assert.are.equal((math.ceil(T / S) + S) * stats.state_bytes + T * stats.trace_bytes,
                     stats.workspace_bytes)
  end)

  it("a tape per segment over the compiled step: the live memory at the peak fits the bound",
     function()
    local W0, B = net:init(nm.generator(2))
    local f = motif_net.compiled_step(net, B)
    local theta = nm.zeros(10, "float32"):copy(motif_net.theta{[0] = 1e-3})
    local function run(stats)
      local tape = ag.tape()
      local th = tape:leaf(theta)
      local WT = ag.scan(function(s, p, t) return f:call(s, p[1], task.X:row(t), task.labels[t], B) end,
                         W0, {th}, T, {stats = stats, collect = true})
      tape:backward(motif_net.fused_query_loss(net, WT, task.Xq, task.labels_q))
    end
    run({})                                        -- the kernels are built (or loaded) once
    collectgarbage("collect")
    collectgarbage("collect")
    local kb0 = collectgarbage("count")
    local stats = {}
    run(stats)
    local peak = stats.peak_kb - kb0
    assert.is_true(peak < bound_kb, string.format("peak %.0f KB, bound %.0f KB", peak, bound_kb))
    assert.is_true(peak > S * state_kb * 0.9)         -- it does hold one segment
  end)
end)

describe("meta-learning", function()
  -- A synthetic split: 4 classes of 40 rows each.
  local function split()
    local g = nm.generator(9)
    local n = 160
    local X = nm.zeros(n, 6, "float64"):uniform(g, 0, 1)
    local labels = {}
    for i = 1, n do labels[i] = (i - 1) % 4 + 1 end
    return {X = X, labels = labels, classes = 4, n = n}
  end

  it("samples tasks of M classes with K + Q distinct images each", function()
    local s = split()
    local sampler = meta.sampler(s, {M = 3, K = 5, Q = 2})
    local task = sampler:sample(nm.generator(3))
    assert.are.equal(15, task.X:size(1))
    assert.are.equal(6, task.Xq:size(1))
    assert.are.equal(15, task.steps)
    local classes = {}
    for _, c in ipairs(task.classes) do classes[c] = true end
    local count = 0
    for _ in pairs(classes) do count = count + 1 end
    assert.are.equal(3, count)
    -- every row is an image of its label, none in both sets
    local seen = {}
    local function find(row, label)
      for i = 1, s.n do
        if s.labels[i] == label and (s.X:row(i) - row):abs():max() == 0 then return i end
      end
    end
    for i = 1, 15 do
      assert.is_true(classes[task.labels[i]])
      local r = find(task.X:row(i), task.labels[i])
      assert.is_not_nil(r)
      assert.is_nil(seen[r])
      seen[r] = true
    end
    for i = 1, 6 do
      local r = find(task.Xq:row(i), task.labels_q[i])
      assert.is_not_nil(r)
      assert.is_nil(seen[r])
      seen[r] = true
    end
    assert.has_error(function() meta.sampler(s, {M = 5}) end,
                     "meta: sampler: M = 5 classes requested, the split has 4")
  end)

  it("a meta-step moves only the active motifs, by about the learning rate", function()
    local s = split()
    local sampler = meta.sampler(s, {M = 3, K = 4, Q = 2})
    local net = motif_net.new{rule = motifs, sizes = {6, 5, 4}, dtype = "float64"}
    local learner = motif_net.learner{net = net, motifs = {0, 2}, lr = 1e-3, theta0 = {[0] = 0.05}}
    local g = nm.generator(1)
    local info = learner:meta_step(sampler:sample(g), g)
    assert.are.equal("update", info.action)
    local th = info.theta
    assert.is_true(math.abs(math.abs(th:get(1) - 0.05) - 1e-3) < 1e-6)   -- Adam's first step
    assert.is_true(math.abs(math.abs(th:get(3)) - 1e-3) < 1e-6)
    for r = 0, 9 do
      if r ~= 0 and r ~= 2 then assert.are.equal(0, th:get(r + 1)) end
    end
  end)

  it("guards: non-finite meta-gradients are skipped or rolled back, and counted", function()
    local s = split()
    local sampler = meta.sampler(s, {M = 3, K = 4, Q = 2})
    local net = motif_net.new{rule = motifs, sizes = {6, 5, 4}, dtype = "float64"}
    for _, guard in ipairs{"skip", "rollback"} do
      local learner = motif_net.learner{net = net, motifs = {0, 3}, guard = guard,
                                   theta0 = {[0] = 0.05}}
      local g = nm.generator(1)
      learner:meta_step(sampler:sample(g), g)
      local before = learner.phi:clone()
      learner.phi:set(4, -1e100)               -- decay of -1e100: the weights overflow
      local info = learner:meta_step(sampler:sample(g), g)
      assert.is_false(info.finite)
      assert.are.equal(guard, info.action)
      if guard == "skip" then
        assert.are.equal(1, learner.skipped)
        assert.are.equal(-1e100, learner.phi:get(4))
      else
        assert.are.equal(1, learner.rollbacks)
        -- back to the state before the previous update
        assert.tensor_near(motif_net.theta{[0] = 0.05}, learner.phi, 0)
        assert.is_true((before - learner.phi):abs():max() > 0)
      end
    end
  end)

  it("rolls back to the state marked good and halves the learning rate", function()
    local s = split()
    local sampler = meta.sampler(s, {M = 3, K = 4, Q = 2})
    local net = motif_net.new{rule = motifs, sizes = {6, 5, 4}, dtype = "float64"}
    local learner = motif_net.learner{net = net, motifs = {0, 3}, theta0 = {[0] = 0.05}, lr = 1e-3}
    local g = nm.generator(2)
    learner:meta_step(sampler:sample(g), g)
    learner:mark_good()
    local good = learner.phi:clone()
    learner:meta_step(sampler:sample(g), g)
    learner:meta_step(sampler:sample(g), g)
    learner.phi:set(4, -1e100)
    local info = learner:meta_step(sampler:sample(g), g)
    assert.are.equal("rollback", info.action)
    assert.tensor_near(good, learner.phi, 0)
    assert.are.equal(5e-4, learner.opts.theta.lr)
    assert.is_true(learner:rollback())             -- by hand too (a held-out collapse)
    assert.are.equal(2.5e-4, learner.opts.theta.lr)
    assert.are.equal(2, learner.rollbacks)
    local fresh = motif_net.learner{net = net, motifs = {0}}
    assert.is_false(fresh:rollback())              -- nothing to go back to
  end)

  it("clips the meta-gradient and scales motifs", function()
    local s = split()
    local sampler = meta.sampler(s, {M = 3, K = 4, Q = 2})
    local net = motif_net.new{rule = motifs, sizes = {6, 5, 4}, dtype = "float64"}
    local learner = motif_net.learner{net = net, motifs = {0, 5}, scale = {[5] = 0.01},
                                 theta0 = {[0] = 0.05, [5] = 0.001}, clip = 1e-3}
    assert.is_true(math.abs(learner.phi:get(6) - 0.1) < 1e-15)       -- phi = theta / s
    assert.is_true(math.abs(learner:theta():get(6) - 0.001) < 1e-15)
    local g = nm.generator(1)
    local task = sampler:sample(g)
    local _, _, _, grad = learner:meta_gradient(task, g:clone())
    local norm = grad:norm()
    -- d loss / d phi_5 = s_5 d loss / d theta_5: compare with a learner without scaling
    local plain = motif_net.learner{net = net, motifs = {0, 5}, theta0 = {[0] = 0.05, [5] = 0.001}}
    local _, _, _, g2 = plain:meta_gradient(task, g:clone())
    assert.is_true(math.abs(grad:get(6) - 0.01 * g2:get(6)) < 1e-12 * math.max(1, math.abs(g2:get(6))))
    local info = learner:meta_step(task, g:clone())
    assert.are.equal(norm, info.grad_norm)
  end)

  it("reports the meta-gradient per coefficient and its norm before clipping", function()
    local s = split()
    local sampler = meta.sampler(s, {M = 3, K = 4, Q = 2})
    local net = motif_net.new{rule = motifs, sizes = {6, 5, 4}, dtype = "float64"}
    local function learner_at(d2, clip)
      return motif_net.learner{net = net, motifs = {0, 2, 5}, scale = {[5] = 0.01},
                               theta0 = {[0] = 0.05, [2] = 0.01 + d2}, clip = clip, lambda = 1e-3}
    end
    local learner = learner_at(0, 1e-6)
    local g = nm.generator(3)
    local task = sampler:sample(g)
    local _, _, _, grad = learner:meta_gradient(task, g:clone())
    local want = grad:clone()                   -- of phi; theta_5 = 0.01 phi_5
    local info = learner:meta_step(task, g:clone())
    assert.are.equal(want:norm(), info.grad_norm)
    assert.are.equal(want:norm(), info.grad_norms.theta)
    assert.is_true(info.grad_norm > 1e-6)       -- measured before the clip to 1e-6
    assert.are.equal(want:get(1), info.grad[0])
    assert.are.equal(want:get(3), info.grad[2])
    assert.near(want:get(6) / 0.01, info.grad[5], 1e-14 * math.abs(want:get(6) / 0.01))
    for r = 0, 9 do
      if r ~= 0 and r ~= 2 and r ~= 5 then assert.is_nil(info.grad[r]) end
    end
    -- d meta-loss / d theta_2 (the L1 term included) against a central difference
    local h = 1e-6
    local fd = (learner_at(h):meta_gradient(task, g:clone()) -
                learner_at(-h):meta_gradient(task, g:clone())) / (2 * h)
    assert.near(fd, info.grad[2], 1e-6 * math.max(1, math.abs(fd)))
  end)

  it("the learner's state survives a checkpoint round trip", function()
    local net = motif_net.new{rule = motifs, sizes = {6, 5, 4}, dtype = "float64"}
    local s = split()
    local sampler = meta.sampler(s, {M = 3, K = 4, Q = 2})
    local a = motif_net.learner{net = net, motifs = {0, 2}}
    local g = nm.generator(5)
    a:meta_step(sampler:sample(g), g)
    local b = motif_net.learner{net = net, motifs = {0, 2}}
    b:load_state(require("nm.checkpoint").decode(require("nm.checkpoint").encode(a:state())))
    local g1, g2 = g:clone(), g:clone()
    local t1, t2 = sampler:sample(g1), nil
    local i1 = a:meta_step(t1, g1)
    t2 = sampler:sample(g2)
    local i2 = b:meta_step(t2, g2)
    assert.tensor_near(i1.theta, i2.theta, 0)
  end)
end)

describe("motif kernel errors", function()
  it("names the shapes and the values", function()
    local net = motif_net.new{rule = motifs, sizes = {4, 3, 2}, dtype = "float64"}
    local W, B = net:init(nm.generator(1))
    local x = nm.zeros(4, "float64")
    local th = motif_net.theta{[0] = 0.1}
    local k = net.kernel
    local out = {nm.zeros(3, 4, "float64"), nm.zeros(2, 3, "float64")}
    local ok, e = pcall(motif_net.step_into, net, out, W, th, nm.zeros(5, "float64"), 1, B)
    assert.is_false(ok)
    -- compiled: the kernel's argument check; interpreted: the operation's
    assert.truthy(tostring(e):find("has 5 elements, 4 expected", 1, true) or
                  tostring(e):find("size mismatch, [3 x 4] vs [5]", 1, true), e)
    assert.has_error(function() k:query(W, nm.zeros(2, 4, "float64"), {1}) end,
      "bad argument #3 to 'query' (1 labels for 2 rows)")
    assert.has_error(function() motif_net.new{rule = motifs, sizes = {4}} end,
      "motif_net: new: sizes must list at least 2 layer widths")
    -- dfa is a pathway now (the Lua path); an unknown one is an error
    local ok, e = pcall(motif_net.new, {rule = motifs, sizes = {4, 2}, feedback = "nope"})
    assert.is_false(ok)
    assert.truthy(e:find("motif_net: new: feedback: no error pathway 'nope'", 1, true))
    assert.has_error(function() motif_net.learner{net = net, motifs = {10}} end,
      "motif_net: learner: motif indices are 0..9")
  end)
end)

describe("experiments/metaplasticity.lua", function()
  local json = require "nm.json"
  local support = require "spec.support"
  local run, tmp = support.experiment("metaplasticity.lua")

  -- Regression: each run's task stream and test episodes were seeded by its
  -- position in --runs, so `--runs bio` alone gave other numbers than bio
  -- in the full list, and the runs of one table were scored on different
  -- test episodes.
  it("gives a run the same result alone as within the full list", function()
    local all, one = tmp .. "-all", tmp .. "-one"
    assert.equal(0, run("--quick --out " .. all))
    assert.equal(0, run("--quick --runs bio --out " .. one))
    local ra = json.read_file(all .. "/results.json").final.runs
    local ro = json.read_file(one .. "/results.json").final.runs
    assert.same(ra.bio.final_theta, ro.bio.final_theta)
    assert.equal(ra.bio.final_accuracy, ro.bio.final_accuracy)
    assert.equal(ra.bio.best_loss, ro.bio.best_loss)
    os.execute(string.format("rm -rf %q %q %q", all, one, tmp .. ".log"))
  end)

  it("takes a user's meta rule file in --rules: same tables as the built-in rule", function()
    -- the motif rule without its C kernel: the Lua step, float64 to rounding
    local dir = tmp .. "-rules"
    local path = support.user_rule(dir, "motifs", "my_motifs")
    local f = assert(io.open(dir .. "/bad.lua", "w"))
    f:write('return {kind = "meta", name = "bad", equation = "W += 0", params = {p = {default = 1}}}\n')
    f:close()
    local out = tmp .. "-user"
    assert.equal(0, run("--quick --runs bp_lr --episodes 2 --dtype float64 --rules motifs," ..
                        path .. " --out " .. out))
    local r = json.read_file(out .. "/results.json").final.runs
    local a, b = r.bp_lr, r["bp_lr-my_motifs"]
    assert.is_true(math.abs(a.best_loss - b.best_loss) < 1e-12)
    for i = 1, 10 do assert.is_true(math.abs(a.final_theta[i] - b.final_theta[i]) < 1e-15) end
    assert.truthy(b.title:find("[my_motifs]", 1, true))
    -- an invalid rule file: one line per problem, exit status 2
    assert.equal(2, run("--quick --rules " .. dir .. "/bad.lua --out " .. out .. "-bad"))
    f = assert(io.open(tmp .. ".log"))
    local log = f:read("a")
    f:close()
    assert.truthy(log:find("bad.lua: meta rule 'bad': field 'paper'", 1, true))
    assert.truthy(log:find("parameter 'p' has no doc string", 1, true))
    assert.truthy(log:find("field 'step' (the Lua reference of one step) is missing", 1, true))
    -- a rule of another kind
    assert.equal(2, run("--quick --rules hebb --out " .. out .. "-bad"))
    f = assert(io.open(tmp .. ".log"))
    log = f:read("a")
    f:close()
    assert.truthy(log:find("not a meta rule for model motif_net", 1, true))
    os.execute(string.format("rm -rf %q %q %q %q", dir, out, out .. "-bad", tmp .. ".log"))
  end)

  -- Regression: a meta-step whose loss is NaN (here theta_0 = 1e3 blows
  -- the network up) stopped the run as failed ("ce is NaN"), so runs
  -- without guards could not be measured at all.
  it("records non-finite meta-losses and gradients, guarded or not, and logs the gradients", function()
    for _, guards in ipairs{"--no-guards", "--guards"} do
      local out = tmp .. "-nf" .. guards
      assert.equal(0, run("--quick --runs bio --theta0 1e3 " .. guards .. " --out " .. out))
      local res = json.read_file(out .. "/results.json")
      assert.equal("finished", res.status)
      local bio = res.final.runs.bio
      assert.equal(guards == "--guards", bio.guarded)
      assert.equal(4, bio.skipped + bio.rollbacks)
      local rows = support.metric_rows(out)
      assert.equal(json.null, rows[1].ce)
      assert.equal(json.null, rows[1].grad_norm)
      os.execute(string.format("rm -rf %q", out))
    end
    -- a finite run logs the norm per group and the components of theta 0, 2, 9
    local out = tmp .. "-gn"
    assert.equal(0, run("--quick --runs bio --out " .. out))
    for _, row in ipairs(support.metric_rows(out)) do
      assert.equal(row.grad_norm, row.grad_norm_theta)
      local sq = row.grad_theta_0 ^ 2 + row.grad_theta_2 ^ 2 + row.grad_theta_9 ^ 2
      assert.is_true(math.abs(math.sqrt(sq) - row.grad_norm) <= 1e-9 * row.grad_norm)
      assert.is_nil(row.grad_theta_1)
      assert.equal(1e-3, row.lr)
    end
    os.execute(string.format("rm -rf %q %q", out, tmp .. ".log"))
  end)

  -- Regression: --clip 0 clipped every meta-gradient to norm 0 (theta
  -- never moved); it means no clipping. --revert-drop 1 never reverts, so
  -- the guards with both switched off train exactly like --no-guards.
  it("--clip 0 switches clipping off; with --revert-drop 1 it equals --no-guards", function()
    local a, b = tmp .. "-c0", tmp .. "-ng"
    assert.equal(0, run("--quick --runs bio --clip 0 --revert-drop 1 --out " .. a))
    assert.equal(0, run("--quick --runs bio --no-guards --out " .. b))
    local ra, rb = support.metric_rows(a), support.metric_rows(b)
    assert.is_true(ra[1].theta_9 ~= 0)
    for i, row in ipairs(ra) do
      for _, r in ipairs{0, 2, 9} do assert.equal(rb[i]["theta_" .. r], row["theta_" .. r]) end
    end
    assert.is_true(json.read_file(a .. "/results.json").final.runs.bio.guarded)
    os.execute(string.format("rm -rf %q %q %q", a, b, tmp .. ".log"))
  end)

  it("refuses --scale5 0 (phi_5 would be 0/0) with exit status 2", function()
    assert.equal(2, run("--quick --scale5 0 --out " .. tmp .. "-s0"))
    local f = assert(io.open(tmp .. ".log"))
    local log = f:read("a")
    f:close()
    assert.truthy(log:find("--scale5 must be > 0", 1, true))
    local net = motif_net.new{rule = motifs, sizes = {4, 3, 2}, feedback = "fa", dtype = "float64"}
    assert.has_error(function() motif_net.learner{net = net, motifs = {0, 5}, scale = {[5] = 0}} end,
      "motif_net: learner: scale of motif 5 must be a positive finite number, got 0 " ..
      "(a tiny scale such as 1e-9 switches the motif off)")
    os.execute(string.format("rm -rf %q %q", tmp .. "-s0", tmp .. ".log"))
  end)
end)

describe("experiments/metaplasticity.lua and rcn.lua resume", function()
  local json = require "nm.json"
  local support = require "spec.support"

  for _, c in ipairs{{"metaplasticity.lua", "bp_lr,bio"}, {"rcn.lua", "motif,rcn2"}} do
    it(c[1] .. " resumes after SIGTERM to the same results as an uninterrupted run", function()
      local run, tmp = support.experiment(c[1])
      -- 2 runs x 6 episodes; the stop falls inside the second run
      local common = "--quick --runs " .. c[2] .. " --episodes 6 --checkpoint-every 2 --stop-after 9"
      local a, b = tmp .. "-a", tmp .. "-b"
      assert.equal(0, run(common:gsub("%-%-stop%-after 9", "--stop-after 1000") .. " --out " .. a))
      assert.equal(143, run(common .. " --out " .. b))
      assert.equal("stopped", json.read_file(b .. "/results.json").status)
      assert.equal(0, run(common .. " --resume --out " .. b))
      local ra, rb = json.read_file(a .. "/results.json"), json.read_file(b .. "/results.json")
      assert.equal("finished", rb.status)
      assert.equal(1, rb.resumed)
      for name, r in pairs(ra.final.runs) do
        local s = rb.final.runs[name]
        assert.equal(r.final_loss, s.final_loss, name)
        assert.equal(r.best_loss, s.best_loss, name)
        assert.same(r.final_theta or r.params, s.final_theta or s.params, name)
      end
      local strip = function(rows)
        for _, row in ipairs(rows) do row.time_s, row.seconds = nil, nil end
        return rows
      end
      assert.same(strip(support.metric_rows(a)), strip(support.metric_rows(b)))
      os.execute(string.format("rm -rf %q %q %q", a, b, tmp .. ".log"))
    end)
  end
end)
