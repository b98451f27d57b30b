-- spec/folded_ae_spec.lua: the energy-based folded autoencoder
-- (nm.folded_ae, rules/folded_ae.lua): the energy against a naive Lua sum,
-- its gradient and the compartment dynamics against central finite
-- differences, the energy never rising along small Euler steps, the fixed
-- points of the two paths, the rules against hand computation, the linear
-- case converging to the PCA subspace, the G-update/backprop alignment at
-- small lambda, PCA and principal angles against independent references,
-- non-convergence counts, no allocation in training, state round trips
-- and errors.

local nm = require "neuromic"
local fae = require "nm.models.folded_ae"
local rule = require "nm.rule"
local optim = require "nm.optim"

local tanh = math.tanh

local function rand(g, r, c, std)
  return nm.zeros(r, c, "float64"):normal(g, 0, std or 1)
end

local function small_net(o)
  o = o or {}
  local s = {sizes = {6, 5, 4, 3}, dtype = "float64", gen = nm.generator(o.seed or 7),
             init_scale = 1.5}
  for k, v in pairs(o) do if k ~= "seed" then s[k] = v end end
  return fae.new(s)
end

local function random_state(net, B, g)
  local U = {}
  for i = 0, net.N do U[i] = rand(g, B, net.sizes[i]) end
  return U
end

-- Independent energy: plain Lua loops over every sample, unit and synapse
-- (tanh areas 1..N, linear area 0).
local function naive_energy(net, U, X, lam, beta, clamp, form)
  local N, B = net.N, X:size(1)
  local u, x = {}, X:totable()
  for i = 0, N do u[i] = U[i]:totable() end
  if clamp == "hard" then u[0] = x end
  local W, G = {}, {}
  for i = 1, N do W[i] = net.W[i]:totable() end
  for i = 0, N - 1 do G[i] = net.G[i]:totable() end
  local function r(i, b, j) return i == 0 and u[0][b][j] or tanh(u[i][b][j]) end
  local E = 0
  for b = 1, B do
    for i = 1, N do
      for k = 1, net.sizes[i] do
        local p = 0
        for j = 1, net.sizes[i - 1] do p = p + W[i][k][j] * r(i - 1, b, j) end
        E = E + lam / 2 * (u[i][b][k] - p) ^ 2
      end
    end
    for i = 0, N - 1 do
      for k = 1, net.sizes[i] do
        local p = 0
        for j = 1, net.sizes[i + 1] do p = p + G[i][k][j] * r(i + 1, b, j) end
        E = E + (1 - lam) / 2 * (u[i][b][k] - p) ^ 2
      end
    end
    if clamp == "soft" then
      for k = 1, net.sizes[0] do E = E + beta * (u[0][b][k] - x[b][k]) ^ 2 end
    end
    if form == "compartments" then
      for k = 1, net.sizes[N] do E = E + (1 - lam) / 2 * u[N][b][k] ^ 2 end
      if clamp ~= "hard" then
        for k = 1, net.sizes[0] do E = E + lam / 2 * u[0][b][k] ^ 2 end
      end
    end
  end
  return E
end

-- Largest |V - k * (-dE/du)_central| over every free potential.
local function fd_velocity_error(net, U, X, o, k)
  local _, V = net:evaluate(U, X, o)
  local Vc = {}
  for i = 0, net.N do Vc[i] = V[i]:clone() end
  local h, worst, scale = 1e-5, 0, 0
  local clamp = o.clamp or net.o.clamp
  for i = 0, net.N do
    local frozen = (i == 0 and clamp == "hard") or (i == net.N and o.top)
    for b = 1, X:size(1) do
      for j = 1, net.sizes[i] do
        local v = U[i]:get(b, j)
        U[i]:set(b, j, v + h); local Ep = net:evaluate(U, X, o)
        U[i]:set(b, j, v - h); local Em = net:evaluate(U, X, o)
        U[i]:set(b, j, v)
        local want = frozen and 0 or -k * (Ep - Em) / (2 * h) / (o.tau or 1)
        worst = math.max(worst, math.abs(want - Vc[i]:get(b, j)))
        scale = math.max(scale, math.abs(want))
      end
    end
  end
  return worst, scale
end

describe("folded_ae", function()
  describe("energy", function()
    it("equals a naive sum over samples, units and synapses", function()
      local g = nm.generator(1)
      local net = small_net()
      local X = rand(g, 3, 6)
      local U = random_state(net, 3, g)
      for _, c in ipairs{{0.3, 0.7, "soft", "energy"}, {0.8, 0, "hard", "energy"},
                         {0.1, 2, "soft", "compartments"}, {0.5, 1, "none", "compartments"},
                         {0, 1, "hard", "compartments"}, {1, 1, "none", "energy"}} do
        local lam, beta, clamp, form = c[1], c[2], c[3], c[4]
        local E = net:evaluate(U, X, {lambda = lam, beta = beta, clamp = clamp, form = form})
        local want = naive_energy(net, U, X, lam, beta, clamp, form)
        assert.is_true(math.abs(E - want) <= 1e-10 * math.abs(want),
                       string.format("%s/%s: %.15g vs %.15g", clamp, form, E, want))
      end
    end)

    it("has the gradient -tau du/dt, checked by central differences (float64)", function()
      local g = nm.generator(2)
      local net = small_net()
      local X = rand(g, 3, 6)
      local U = random_state(net, 3, g)
      for _, o in ipairs{{lambda = 0.3, beta = 0.7, clamp = "soft"},
                         {lambda = 0.9, clamp = "hard"},
                         {lambda = 0.05, clamp = "none", tau = 2.5},
                         {lambda = 0.4, clamp = "hard", top = rand(g, 3, 3)}} do
        local worst, scale = fd_velocity_error(net, U, X, o, 1)
        assert.is_true(scale > 0.1)
        assert.is_true(worst < 1e-7 * math.max(1, scale), "fd error " .. worst)
      end
    end)

    it("drives the poster's compartments: du/dt = -(g_l + g_e)/tau dE_c/du", function()
      local g = nm.generator(3)
      local net = small_net()
      local X = rand(g, 2, 6)
      local U = random_state(net, 2, g)
      for _, o in ipairs{{lambda = 0.3, beta = 0.7, clamp = "soft", g_l = 1, g_e = 0.1},
                         {lambda = 0.6, clamp = "hard", g_l = 0.5, g_e = 2, tau = 3},
                         {lambda = 0.02, clamp = "none", g_l = 2, g_e = 0.3}} do
        o.form = "compartments"
        local worst, scale = fd_velocity_error(net, U, X, o, o.g_l + o.g_e)
        assert.is_true(scale > 0.1)
        assert.is_true(worst < 1e-7 * math.max(1, scale), "fd error " .. worst)
      end
    end)

    it("gives the compartment and energy forms the same interior dynamics up to g_l + g_e", function()
      local g = nm.generator(4)
      local net = small_net()
      local X = rand(g, 2, 6)
      local U = random_state(net, 2, g)
      local _, Ve = net:evaluate(U, X, {lambda = 0.3, clamp = "hard"})
      local V1, V2 = Ve[1]:clone(), Ve[2]:clone()
      local _, Vc = net:evaluate(U, X, {lambda = 0.3, clamp = "hard", form = "compartments",
                                        g_l = 1, g_e = 0.25})
      assert.tensor_near(V1:scale(1.25), Vc[1], 1e-12)
      assert.tensor_near(V2:scale(1.25), Vc[2], 1e-12)
    end)
  end)

  describe("settling", function()
    it("never raises the energy along small Euler steps", function()
      local g = nm.generator(5)
      for _, o in ipairs{{form = "energy", clamp = "hard", lambda = 0.2},
                         {form = "energy", clamp = "soft", lambda = 0.6, beta = 3},
                         {form = "compartments", clamp = "hard", lambda = 0.1},
                         {form = "compartments", clamp = "soft", lambda = 0.5, beta = 0.5}} do
        local net = small_net{seed = 11}
        local X = rand(g, 4, 6)
        local trace = {}
        o.solver, o.dt, o.adapt, o.max_iter, o.tol, o.trace = "euler", 0.02, false, 300, 0, trace
        o.start = "zero"
        net:settle(X, o)
        assert.are.equal(301, #trace)
        for k = 2, #trace do
          assert.is_true(trace[k] <= trace[k - 1],
                         string.format("%s/%s: E rose at step %d: %.17g -> %.17g", o.form,
                                       o.clamp, k - 1, trace[k - 1], trace[k]))
        end
        assert.is_true(trace[#trace] < 0.9 * trace[1])
      end
    end)

    it("lowers the energy at every Euler step of dt = 1/L (curvature bound)", function()
      local g = nm.generator(25)
      -- spectral_norm against power iteration
      local A = rand(g, 7, 4)
      local v = nm.ones(4, "float64")
      for _ = 1, 500 do
        v = nm.mv(A:t(), nm.mv(A, v))
        v:scale(1 / v:norm())
      end
      assert.is_true(math.abs(fae.spectral_norm(A) - nm.mv(A, v):norm()) < 1e-9)
      for _, o in ipairs{{lambda = 0.1}, {lambda = 0.7, clamp = "soft", beta = 2},
                         {lambda = 0.3, form = "compartments", g_e = 0.5}} do
        local net = small_net{seed = 26, init_scale = 2}
        local X = rand(g, 5, 6)
        local L = net:curvature_bound(o)
        local trace = {}
        o.solver, o.adapt, o.dt, o.trace, o.max_iter, o.tol = "euler", false, 1 / L, trace, 6000, 1e-6
        local info = net:settle(X, o)
        assert.is_true(info.converged)
        for k = 2, #trace do assert.is_true(trace[k] <= trace[k - 1] + 1e-13 * trace[k - 1]) end
        -- ... while a step far above 2/L makes it rise.
        trace = {}
        o.dt, o.max_iter, o.trace = 40 / L, 30, trace
        net:settle(X, o)
        local rose = false
        for k = 2, #trace do rose = rose or trace[k] > trace[k - 1] end
        assert.is_true(rose)
      end
    end)

    it("reaches the same fixed point with both solvers", function()
      local g = nm.generator(6)
      local net = small_net{lambda = 0.2}
      local X = rand(g, 4, 6)
      local a = net:settle(X, {solver = "euler", tol = 1e-9, max_iter = 20000})
      assert.is_true(a.converged)
      local euler_iterations = a.iterations           -- info is reused by the next call
      local U1 = net.cur.U[1]:clone()
      local U3 = net.cur.U[3]:clone()
      local b = net:settle(X, {solver = "momentum", tol = 1e-9, max_iter = 20000})
      assert.is_true(b.converged)
      assert.is_true(b.iterations < euler_iterations)
      assert.tensor_near(U1, net.cur.U[1], 1e-7)
      assert.tensor_near(U3, net.cur.U[3], 1e-7)
    end)

    it("settles at lambda = 1 to the W path and at lambda = 0 (top clamped) to the G path", function()
      local g = nm.generator(7)
      local net = small_net()
      local X = rand(g, 3, 6)
      local info = net:settle(X, {lambda = 1, tol = 1e-10, max_iter = 20000})
      assert.is_true(info.converged)
      local settled = net.cur.U[3]:clone()
      assert.tensor_near(net:encode(X), settled, 1e-8)
      local Z = rand(g, 3, 3)
      info = net:settle(X, {lambda = 0, clamp = "none", top = Z, tol = 1e-10, max_iter = 20000})
      assert.is_true(info.converged)
      local bottom = net.cur.U[0]:clone()
      assert.tensor_near(net:decode(Z), bottom, 1e-8)
    end)

    it("reports non-convergence: counted per sample and in the stats", function()
      local g = nm.generator(8)
      local net = small_net()
      local X = rand(g, 5, 6)
      local info = net:settle(X, {max_iter = 3, tol = 1e-12})
      assert.are.equal(3, info.iterations)
      assert.is_false(info.converged)
      assert.are.equal(5, info.nonconverged)
      info = net:settle(X, {max_iter = 1000, tol = 1e-6})
      assert.is_true(info.converged)
      assert.are.equal(0, info.nonconverged)
      assert.is_true(info.residual <= 1e-6)
      assert.are.same({settles = 2, samples = 10, nonconverged = 5,
                       iterations = 3 + info.iterations, halvings = info.halvings}, net.stats)
      -- One sample pushed away from its fixed point among settled ones:
      -- only it is counted.
      net.cur.U[1]:row(2):fill(3)
      info = net:settle(X, {max_iter = 2, tol = 1e-6, start = "keep"})
      assert.is_false(info.converged)
      assert.are.equal(1, info.nonconverged)
      assert.are.equal(6, net.stats.nonconverged)
      net:reset_stats()
      assert.are.equal(0, net.stats.nonconverged)
    end)

    it("gives the same states with the fused C kernels as with tensor operations", function()
      local g = nm.generator(24)
      for _, phi in ipairs{"tanh", "sigmoid", {"softplus", beta = 2}, "relu", "identity"} do
        for _, o in ipairs{{clamp = "hard", solver = "momentum"},
                           {clamp = "soft", beta = 0.5, solver = "euler", lambda = 0.3}} do
          local X = rand(g, 3, 6)
          local a = small_net{phi = phi, fused = true}
          local b = small_net{phi = phi, fused = false}
          assert.is_true(a.fused and not b.fused)
          o.max_iter, o.tol = 25, 0
          local ia = a:settle(X, o)
          local Ea, ra = ia.energy, ia.residual
          local ib = b:settle(X, o)
          assert.is_true(math.abs(Ea - ib.energy) <= 1e-12 * math.abs(Ea))
          assert.is_true(math.abs(ra - ib.residual) <= 1e-12 * math.max(1, ra))
          for i = 0, 3 do assert.tensor_near(a.cur.U[i], b.cur.U[i], 1e-12) end
        end
      end
      -- The kernels' errors name the operands.
      local r = nm.zeros(2, 3)
      assert.has_error(function() nm.kernels.folded.rates(r, nil, nm.zeros(3, 2), "tanh") end,
                       "bad argument #3 to 'rates' (size mismatch, [2 x 3] vs [3 x 2])")
      assert.has_error(function() nm.kernels.folded.rates(r, nil, nm.zeros(2, 3, "float64"), "tanh") end,
                       "bad argument #3 to 'rates' (dtype mismatch, float32 vs float64)")
      assert.has_error(function() nm.kernels.folded.rates(r, nil, r, "cosh") end,
                       "bad argument #4 to 'rates' (invalid option 'cosh')")
      assert.has_error(function() nm.kernels.folded.velocity(r, nil, 1, nil, 1, nil, 1, r, nil, 1) end,
                       "bad argument #9 to 'velocity' (d and back must be given together)")
      assert.has_error(function() nm.kernels.folded.step(nm.zeros(2, 2, 2), nil, nm.zeros(2, 2, 2), 1) end,
                       "bad argument #1 to 'step' (1-D or 2-D tensor expected, got [2 x 2 x 2])")
      local d = nm.zeros(2, 3)
      assert.are.equal(0, nm.kernels.folded.velocity(d, nil, 1, nil, 1, nil, 1, nil, nil, 1))
    end)

    it("halves the step when the energy rises (adapt) and still converges", function()
      local g = nm.generator(9)
      local net = small_net{init_scale = 3}
      local X = rand(g, 4, 6)
      local info = net:settle(X, {solver = "euler", dt = 3, max_iter = 5000, tol = 1e-8})
      assert.is_true(info.halvings >= 1)
      assert.is_true(info.converged)
      assert.is_true(info.dt < 3)
    end)
  end)

  describe("plasticity", function()
    it("the rule file is documented and its kernel equals its step and a hand loop", function()
      local def = rule.definition("folded_ae")
      assert.equal("circuit", def.kind)
      assert.equal("folded_ae", def.model)
      assert.matches("u_post %- V r_pre", def.equation)
      assert.matches("Dold", def.paper)
      assert.is_string(def.params.eta.doc)
      for _, dt in ipairs{"float64", "float32"} do
        local g = nm.generator(10)
        local W = rand(g, 4, 3):cast(dt)
        local Eb, R = rand(g, 5, 4):cast(dt), rand(g, 5, 3):cast(dt)
        local want = W:clone()
        for a = 1, 4 do
          for b = 1, 3 do
            local sum = 0
            for s = 1, 5 do sum = sum + Eb:get(s, a) * R:get(s, b) end
            want:set(a, b, want:get(a, b) + 0.3 * sum / 5)
          end
        end
        local inst = rule.new("folded_ae", {eta = 0.3})
        local tol = dt == "float64" and 1e-12 or 1e-5
        local s = {V = W:clone(), dV = W:clone():fill(7), e = Eb, e_t = Eb:t(), r = R, batch = 5}
        def.step(s, inst.p)                           -- writes dV, whatever it held
        s.V:add(s.dV)
        assert.tensor_near(want, s.V, tol)
        s.V:copy(W)
        def.kernel(s, inst.p)
        assert.tensor_near(want, s.V, tol)
      end
      assert.has_error(function() rule.new("folded_ae", {eta = -1}) end,
                       "rule 'folded_ae': parameter 'eta' must be >= 0")
    end)

    it("takes any circuit rule of the model per pathway; a Lua-only rule gives the kernel's numbers", function()
      local lua_only = {}
      for k, v in pairs(rule.definition("folded_ae")) do lua_only[k] = v end
      lua_only.kernel, lua_only.name = nil, "folded_ae_lua"
      local g = nm.generator(14)
      local X = rand(g, 3, 6)
      local a = small_net{eta_W = 0.2, eta_G = 0.05}
      local b = small_net{eta_W = 0.2, eta_G = 0.05, rules = {W = lua_only, G = lua_only}}
      assert.equal(0.2, b.rules.W.p.eta)
      assert.equal(0.05, b.rules.G.p.eta)
      for _ = 1, 3 do a:train_batch(X); b:train_batch(X) end
      for i = 1, a.N do assert.tensor_near(a.W[i], b.W[i], 1e-12) end
      for i = 0, a.N - 1 do assert.tensor_near(a.G[i], b.G[i], 1e-12) end
      -- an instance is used as it is; rules of another kind or model are refused
      local c = small_net{rules = {G = rule.new("folded_ae", {eta = 0})}}
      local G0 = c.G[0]:clone()
      c:train_batch(X)
      assert.tensor_near(G0, c.G[0], 0)
      assert.has_error(function() small_net{rules = {W = "bmvr"}} end,
        "folded_ae.new: rule 'bmvr' is a circuit rule of model 'bmvr', not of model 'folded_ae'")
      assert.has_error(function() small_net{rules = {U = "folded_ae"}} end,
                       "folded_ae.new: rules has no pathway 'U' (W, G)")
    end)

    it("learn() applies dW_i = eta_W e^W_i r_{i-1}^T and dG_i = eta_G e^G_i r_{i+1}^T at the fixed point", function()
      local g = nm.generator(11)
      local net = small_net{eta_W = 0.2, eta_G = 0.05}
      local X = rand(g, 3, 6)
      net:settle(X, {tol = 1e-9, max_iter = 5000})
      local bs = net.cur
      local U, B = {}, 3
      for i = 0, net.N do U[i] = bs.U[i]:totable() end
      local function r(i, b, j) return i == 0 and U[0][b][j] or tanh(U[i][b][j]) end
      local W0, G0 = {}, {}
      for i = 1, net.N do W0[i] = net.W[i]:clone() end
      for i = 0, net.N - 1 do G0[i] = net.G[i]:clone() end
      local function expected(V, i, pre_area, eta)
        local out = V:clone()
        for a = 1, V:size(1) do
          for c = 1, V:size(2) do
            local sum = 0
            for b = 1, B do
              local p = 0
              for j = 1, V:size(2) do p = p + V:get(a, j) * r(pre_area, b, j) end
              sum = sum + (U[i][b][a] - p) * r(pre_area, b, c)
            end
            out:set(a, c, V:get(a, c) + eta * sum / B)
          end
        end
        return out
      end
      local wantW, wantG = {}, {}
      for i = 1, net.N do wantW[i] = expected(W0[i], i, i - 1, 0.2) end
      for i = 0, net.N - 1 do wantG[i] = expected(G0[i], i, i + 1, 0.05) end
      net:learn()
      for i = 1, net.N do assert.tensor_near(wantW[i], net.W[i], 1e-12) end
      for i = 0, net.N - 1 do assert.tensor_near(wantG[i], net.G[i], 1e-12) end
    end)

    it("respects the plasticity switches", function()
      local g = nm.generator(12)
      local net = small_net()
      local X = rand(g, 3, 6)
      local W1, G0 = net.W[1]:clone(), net.G[0]:clone()
      net:set_plastic(false, "W")
      net:train_batch(X)
      assert.tensor_near(W1, net.W[1], 0)
      assert.is_true((G0 - net.G[0]):norm() > 0)
      net:set_plastic(true)
      rule.set_learning(false)
      local W1b = net.W[1]:clone()
      net:train_batch(X)
      rule.set_learning(true)
      assert.tensor_near(W1b, net.W[1], 0)
    end)

    it("continuous plasticity (every Euler step) changes the weights by eta dt per step", function()
      local g = nm.generator(13)
      local X = rand(g, 2, 6)
      local a = small_net{schedule = "continuous", solver = "euler", dt = 0.1, max_iter = 1,
                          tol = 0, eta_W = 0.5, eta_G = 0.5}
      local b = small_net{eta_W = 0.5 * 0.1, eta_G = 0.5 * 0.1}
      -- One step: plasticity at the start state and after the first step.
      local trace = {}
      a:train_batch(X, {trace = trace})
      assert.are.equal(2, #trace)
      b:settle(X, {max_iter = 0}); b:learn()
      b:settle(X, {solver = "euler", dt = 0.1, max_iter = 1, tol = 0, start = "forward"})
      assert.is_true((a.W[1] - b.W[1]):norm() < 0.05 * (a.W[1]):norm())
      assert.are.equal(0.5, a.rules.W.p.eta)            -- restored after the settle
      assert.has_error(function() small_net{schedule = "continuous"} end,
        "folded_ae: schedule 'continuous' needs solver 'euler' (plasticity runs along the dynamics)")
    end)

    it("allocates nothing per batch once the buffers exist", function()
      local g = nm.generator(14)
      local net = fae.new{sizes = {20, 10, 5}, gen = g, optim = optim.adam{lr = 1e-3}}
      local X = nm.zeros(8, 20):normal(g, 0, 1)
      for _ = 1, 2 do net:train_batch(X); net:reconstruct(X) end
      local grown = require("spec.support").allocated(function()
        net:train_batch(X); net:reconstruct(X)
      end, 30)
      assert.is_true(grown < 4096, "grew by " .. grown .. " bytes")
    end)
  end)

  describe("the poster's claims", function()
    it("the linear folded AE learns the PCA subspace", function()
      local g = nm.generator(15)
      -- Data with a clear 3-dimensional principal subspace in 10 dimensions.
      local d, k, n = 10, 3, 2000
      local A = rand(g, d, d)
      local Z = rand(g, n, d)
      local scales = {3, 2.5, 2, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1}
      for j = 1, d do Z:col(j):scale(scales[j]) end
      local Q = fae.principal_angles and A      -- a random rotation: orthonormalise A
      local q = {}
      for j = 1, d do
        local v = Q:col(j)
        for l = 1, j - 1 do v:axpy(-q[l]:dot(v), q[l]) end
        v:scale(1 / v:norm())
        q[j] = v
      end
      local X = nm.mm(Z, Q:t())
      local p = fae.pca(X, k)
      local net = fae.new{sizes = {d, 6, k}, phi = "identity", lambda = 0.1, dtype = "float64",
                          gen = nm.generator(16), init_scale = 0.5, eta_W = 0.02, eta_G = 0.02,
                          tol = 1e-6}
      local function angle()
        local Enc, Dec = net:linear_maps()
        local ad = fae.principal_angles(Dec, p.components:t())
        local ae = fae.principal_angles(Enc:t(), p.components:t())
        return ad[#ad], ae[#ae]
      end
      local before_dec, before_enc = angle()
      for _ = 1, 8 do
        for first = 1, n, 50 do net:train_batch(X:narrow(1, first, 50)) end
      end
      local after_dec, after_enc = angle()
      assert.is_true(before_dec > 45 and before_enc > 45, "start " .. before_dec)
      -- G learns the subspace fast; W follows the settled codes, slowly in
      -- the input directions of small variance (12.8 degrees here).
      assert.is_true(after_dec < 1, "decoder angle " .. after_dec)
      assert.is_true(after_enc < 15, "encoder angle " .. after_enc)
      local mse = net:reconstruction_mse(X)
      assert.is_true(mse < 1.02 * fae.pca_mse(p, X), string.format("%g vs %g", mse, fae.pca_mse(p, X)))
      assert.are.equal(0, net.stats.nonconverged)
    end)

    it("G's update follows the backprop gradient of C as lambda -> 0 (weak nudging)", function()
      local g = nm.generator(17)
      local net = small_net{seed = 18}
      local X = rand(g, 4, 6)
      local cos = net:g_alignment(X, {lambda = 1e-4, clamp = "soft", beta = 1e-3, tol = 1e-11,
                                      max_iter = 100000})
      for i = 0, net.N - 1 do assert.is_true(cos[i] > 0.99, "G_" .. i .. ": " .. cos[i]) end
      local far = net:g_alignment(X, {lambda = 0.5, clamp = "soft", beta = 1e-3, tol = 1e-11,
                                      max_iter = 100000})
      assert.is_true(far[0] < cos[0])
    end)

    it("reconstruction_grad is the gradient of C, checked by central differences", function()
      local g = nm.generator(19)
      local net = small_net()
      local X = rand(g, 3, 6)
      net:settle(X, {max_iter = 50})
      local Z = net.cur.U[3]:clone()
      local grads = net:reconstruction_grad()
      local function C()
        local Xr = net:decode(Z)
        local d = Xr:clone():sub(X)
        return d:dot(d) / 3
      end
      local h = 1e-6
      for i = 0, net.N - 1 do
        local want = grads[i]:clone()
        local Gi = net.G[i]
        for a = 1, Gi:size(1) do
          for b = 1, Gi:size(2) do
            local v = Gi:get(a, b)
            Gi:set(a, b, v + h); local cp = C()
            Gi:set(a, b, v - h); local cm = C()
            Gi:set(a, b, v)
            want:set(a, b, (cp - cm) / (2 * h))
          end
        end
        assert.tensor_near(want, grads[i], 1e-6)
      end
    end)
  end)

  describe("PCA and principal angles", function()
    it("pca matches subspace iteration and its MSE is the sum of the trailing eigenvalues", function()
      local g = nm.generator(20)
      local n, d, k = 400, 8, 3
      local X = rand(g, n, d)
      for j = 1, d do X:col(j):scale(1 + j) end
      X:add(0.5)
      local p = fae.pca(X, k, 64)                       -- several blocks
      -- Independent reference: covariance by loops, orthogonal iteration.
      local mean = {}
      for j = 1, d do
        local s = 0
        for i = 1, n do s = s + X:get(i, j) end
        mean[j] = s / n
      end
      local C = nm.zeros(d, d, "float64")
      for a = 1, d do
        for b = 1, d do
          local s = 0
          for i = 1, n do s = s + (X:get(i, a) - mean[a]) * (X:get(i, b) - mean[b]) end
          C:set(a, b, s / n)
        end
      end
      assert.tensor_near(mean, p.mean, 1e-12)
      local Qm = rand(g, d, k)
      for _ = 1, 500 do
        Qm = nm.mm(C, Qm)
        for j = 1, k do                                 -- Gram-Schmidt
          local v = Qm:col(j)
          for l = 1, j - 1 do v:axpy(-Qm:col(l):dot(v), Qm:col(l)) end
          v:scale(1 / v:norm())
        end
      end
      local ang = fae.principal_angles(Qm, p.components:t())
      assert.is_true(ang[#ang] < 1e-4, "angle " .. ang[#ang])
      for j = 1, k do                                   -- Rayleigh quotients
        local v = Qm:col(j)
        local lam = v:dot(nm.mv(C, v))
        assert.is_true(math.abs(lam - p.eigenvalues[j]) < 1e-8 * p.eigenvalues[1])
      end
      local tail = 0
      for j = k + 1, d do tail = tail + p.eigenvalues[j] end
      assert.is_true(math.abs(fae.pca_mse(p, X) - tail / d) < 1e-10)
      assert.tensor_near(nm.mm(p.components, p.components:t()), nm.eye(k, k, "float64"), 1e-12)
      local R = fae.pca_reconstruct(p, X)
      local diff = R:clone():sub(X)
      assert.is_true(math.abs(diff:dot(diff) / (n * d) - tail / d) < 1e-10)
    end)

    it("principal_angles gives known angles", function()
      local A = nm.tensor({{1, 0}, {0, 1}, {0, 0}}, "float64")
      local th = math.rad(30)
      local B = nm.tensor({{1, 0}, {0, math.cos(th)}, {0, math.sin(th)}}, "float64")
      local ang = fae.principal_angles(A, B:clone():scale(3))
      assert.is_true(math.abs(ang[1]) < 1e-6 and math.abs(ang[2] - 30) < 1e-9)
      assert.has_error(function() fae.principal_angles(A, nm.zeros(4, 2, "float64")) end,
                       "principal_angles: A [d x k] and B [d x k'] with k <= k' expected")
    end)
  end)

  describe("state and errors", function()
    it("round-trips its weights through state/load_state", function()
      local a = small_net{seed = 21}
      local b = small_net{seed = 22}
      b:load_state(a:state())
      for i = 1, 3 do assert.tensor_near(a.W[i], b.W[i], 0) end
      for i = 0, 2 do assert.tensor_near(a.G[i], b.G[i], 0) end
      local c = fae.new{sizes = {6, 4}, gen = nm.generator(1), dtype = "float64"}
      assert.has_error(function() c:load_state(a:state()) end,
                       "folded_ae: state does not belong to a network with 1 weight layers")
    end)

    it("rejects written outputs that share memory (was silently wrong)", function()
      local r, u, m = nm.zeros(2, 3), nm.ones(2, 3), nm.zeros(2, 3)
      local ok, msg = pcall(nm.kernels.folded.rates, r, r, u, "tanh")
      assert.is_false(ok)
      assert.truthy(msg:find("r shares memory with d", 1, true))
      ok, msg = pcall(nm.kernels.folded.step, u, u, m, 0.1, 0.5)
      assert.is_false(ok)
      assert.truthy(msg:find("u shares memory with m", 1, true))
      -- r written over its own input is fine: one read per element
      nm.kernels.folded.rates(u, nil, u, "tanh")
      assert.tensor_near(nm.full(math.tanh(1), 2, 3), u, 1e-6)
    end)

    it("raises errors naming the problem", function()
      local g = nm.generator(23)
      assert.has_error(function() fae.new() end, "folded_ae.new: options table expected")
      assert.has_error(function() fae.new{sizes = {5}, gen = g} end,
        "folded_ae.new: sizes = {n_0, n_1, ...} with at least two areas expected")
      assert.has_error(function() fae.new{sizes = {5, 0}, gen = g} end,
        "folded_ae.new: sizes[2] must be a positive integer")
      assert.has_error(function() fae.new{sizes = {5, 3}} end,
        "folded_ae.new: gen (nm.generator) is needed to draw the weights")
      assert.has_error(function() fae.new{sizes = {5, 3}, gen = g, lambda = 1.5} end,
        "folded_ae: option 'lambda' must be a number >= 0 and <= 1, got 1.5")
      assert.has_error(function() fae.new{sizes = {5, 3}, gen = g, clamp = "tight"} end,
        "folded_ae: option 'clamp' must be one of hard, none, soft, got 'tight'")
      assert.has_error(function() fae.new{sizes = {5, 3}, gen = g, dt = 0} end,
        "folded_ae: option 'dt' must be a number > 0, got 0")
      assert.has_error(function() fae.new{sizes = {5, 3}, gen = g, lamda = 0.1} end)
      assert.has_error(function() fae.new{sizes = {5, 3}, gen = g, phi = "softmax"} end,
        "folded_ae.new: rate functions must be elementwise (not softmax)")
      local net = fae.new{sizes = {5, 3}, gen = g}
      assert.has_error(function() net:learn() end, "folded_ae: learn before settle")
      assert.has_error(function() net:settle(nm.zeros(2, 4)) end,
        "bad argument #1 to 'settle' (X must be a [B x 5] tensor, got [2 x 4])")
      assert.has_error(function() net:encode(nm.zeros(5)) end,
        "bad argument #1 to 'encode' (X must be a [B x 5] tensor, got [5])")
      assert.has_error(function() net:decode(nm.zeros(2, 5)) end,
        "bad argument #1 to 'decode' (Z must be a [B x 3] tensor, got [2 x 5])")
      assert.has_error(function() net:settle(nm.zeros(2, 5), {top = nm.zeros(3, 3)}) end,
        "bad argument #2 to 'settle' (top has 3 rows, X has 2)")
      assert.has_error(function() net:settle(nm.zeros(2, 5), {max_iter = 1.5}) end,
        "folded_ae: option 'max_iter' must be an integer >= 0, got 1.5")
      assert.has_error(function() net:evaluate({}, nm.zeros(2, 5)) end,
        "bad argument #1 to 'evaluate' (U[0] must be a [2 x 5] tensor)")
      assert.has_error(function() fae.pca(nm.zeros(3, 4), 5) end,
        "bad argument #2 to 'pca' (k must be an integer in [1, 4])")
    end)
  end)
end)

describe("experiments/folded_ae.lua", function()
  local json = require "nm.json"
  local support = require "spec.support"
  local run, tmp = support.experiment("folded_ae.lua")
  local function rows(dir) return support.metric_rows(dir) end

  it("resumes after SIGTERM to the same metrics and weights as an uninterrupted run", function()
    local common = "--quick --dataset mnist-subset --hidden 24,6 --epochs 2 --batch 20 " ..
                   "--train-subset 200 --test-subset 100 --probe 16 --lambdas 0.1 " ..
                   "--align-iter 100 --no-plot --checkpoint-every 3 --stop-after 13"
    local a, b = tmp .. "-a", tmp .. "-b"
    assert.equal(0, run(common:gsub("%-%-stop%-after 13", "--stop-after 1000") .. " --out " .. a))
    assert.equal(143, run(common .. " --out " .. b))         -- stopped by SIGTERM in the folded cell
    assert.equal("stopped", json.read_file(b .. "/results.json").status)
    assert.equal(0, run(common .. " --resume --out " .. b))
    local ra, rb = json.read_file(a .. "/results.json"), json.read_file(b .. "/results.json")
    assert.equal("finished", rb.status)
    assert.equal(1, rb.resumed)
    assert.same(rows(a), rows(b))
    local fa, fb = ra.final.datasets["mnist-subset"], rb.final.datasets["mnist-subset"]
    assert.equal(fa.folded_weights_crc32, fb.folded_weights_crc32)
    assert.equal(fa.folded_test_mse, fb.folded_test_mse)
    assert.equal(fa.bp_test_mse, fb.bp_test_mse)
    -- the demo's summary: labelled figures with units
    assert.is_true(#ra.final.summary >= 4)
    for _, e in ipairs(ra.final.summary) do
      assert.is_string(e.label)
      assert.is_number(e.ours)
      assert.is_string(e.unit)
    end
    os.execute(string.format("rm -rf %q %q %q", a, b, tmp .. ".log"))
  end)
end)
