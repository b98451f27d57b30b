-- spec/unroll_spec.lua: meta-gradients of plasticity rules' parameters
-- (nm.unroll). For every built-in connection rule and the tutorial's
-- (doc/tutorial.md's my_rules/bcm.lua and my_rules/my_sign.lua, saved from
-- the page as a reader would) in an nn.mlp, and for the microcircuit's
-- circuit rules (dendritic_prediction, apical_silencing and the tutorial's
-- no_attenuation) in the steady state, the gradient of a query loss after
-- T = 5 training steps (segments of 2: checkpointed) with respect to each
-- numeric parameter of the rules and to entries of the initial weights,
-- through the generated step and adjoint, equals central finite
-- differences (float64) of the network itself: trained by its own
-- train_batch (the microcircuit with its rules' Lua steps), scored by its
-- own code - code the unroll does not run. The unroll's weights equal the
-- network's after the same steps, the interpreted graphs give the same
-- gradients, and a rule whose update hides a path from the gradient (its
-- forward unchanged) fails the check.
local nm = require "neuromic"
local nn = require "nm.nn"
local rule = require "nm.rule"
local ag = require "nm.autograd"
local compile = require "nm.compile"
local unroll = require "nm.unroll"
local mc = require "nm.models.microcircuit"
local support = require "spec.support"

local format = string.format

-- Each spec run builds its kernels afresh in its own cache folder.
local kernels = support.compile_cache()
local cache = kernels.dir

local STEPS, B = 5, 3

-- The tutorial's rules, saved from the page.
local tutorial_dir = os.tmpname()
os.remove(tutorial_dir)
local tutorial = support.doc_files("doc/tutorial.md", tutorial_dir)

-- Inputs and targets (the microcircuit's: rates in [0, 1], target potentials).
local function data(case)
  local sizes = case.sizes or {4, 5, 3}
  local g = nm.generator(5)
  local n0, nL = sizes[1], sizes[#sizes]
  local function x(n) return case.model == "microcircuit" and nm.zeros(n, n0, "float64"):uniform(g, 0, 1)
                             or nm.zeros(n, n0, "float64"):normal(g, 0, 1) end
  local function t(n) return case.model == "microcircuit" and nm.zeros(n, nL, "float64"):normal(g, 0, 1)
                             or nm.zeros(n, nL, "float64"):uniform(g, 0, 1) end
  return {X = x(STEPS * B), T = t(STEPS * B), Xq = x(B), Tq = t(B)}
end

local function make(case)
  if case.model == "microcircuit" then
    -- rates of order 1 (the Fig. 2 soft-plus's are ~0.01: gradients below FD's resolution);
    -- the reference runs the rules' Lua steps (compiled = false)
    return mc.new{sizes = case.sizes or {4, 5, 3}, gen = nm.generator(1), mode = "steady",
                  bias = case.bias ~= false, rate = {"softplus", gamma = 1, beta = 1, theta = 0},
                  eta = case.eta, rules = case.rules, compiled = false}
  end
  local r, params = case.rule, case.params
  if case.instance then                -- an instance per layer, made by the case
    r = {}
    for l = 1, #(case.sizes or {4, 5, 3}) - 1 do r[l] = case.instance() end
  elseif type(r) == "table" then       -- a definition: an instance per layer
    r = {}
    for l = 1, #(case.sizes or {4, 5, 3}) - 1 do r[l] = rule.new(case.rule, case.params) end
    params = nil
  end
  local o = {sizes = case.sizes or {4, 5, 3}, act = case.act or "tanh", out = case.out,
             loss = case.loss, gen = nm.generator(1), dtype = "float64", rule = r,
             params = params, bias = case.bias, density = case.density}
  local net = nn.mlp(o)
  net.mod = case.mod
  return net
end

-- The network's own query loss after training with rule parameters theta
-- (in u.names' order) and, optionally, one entry of the initial state
-- moved: the reference, trained by train_batch.
local function reference(case, d, theta, names, poke)
  local net = make(case)
  for i, name in ipairs(names) do
    local c, k = name:match("^(.+)%.(.+)$")
    local conn
    if case.model == "microcircuit" then
      local kind, l = c:match("^W_(%a+)(%d+)$")
      conn = net[kind][tonumber(l)]
    else
      conn = net.conns[tonumber(c:match("%d+"))]
    end
    conn.rule.p[k] = theta[i]
  end
  if poke then poke(net) end
  for t = 1, STEPS do
    net:train_batch(d.X:narrow(1, (t - 1) * B + 1, B), d.T:narrow(1, (t - 1) * B + 1, B),
                    case.sweeps)
  end
  net:forward(d.Xq)
  if case.model == "microcircuit" then       -- 1/2 <||u_N - u_trgt||^2> of the forward pass
    local D = net.cur.U[net.N] - d.Tq
    return 0.5 * D:dot(D) / B, net
  end
  return net:loss_value(d.Tq), net
end

-- The state entries whose gradients are checked: two of every weight
-- matrix, one of every bias and rule-state vector.
local function probes(u)
  local out = {}
  for i, sh in ipairs(u.shapes) do
    if #sh == 2 then
      out[#out + 1] = {i, 1, 1}
      out[#out + 1] = {i, sh[1], sh[2] - 1}
    else
      out[#out + 1] = {i, math.min(2, sh[1])}
    end
  end
  return out
end

-- Where state entry i of the unroll lives in a network.
local function tensor_of(u, net, i)
  local name = u.state_names[i]
  for j, e in ipairs(u.conns) do
    local c = e.kind and net[e.kind][e.k] or net.conns[j]
    local slot = u.slots[j]
    if slot.W == i then return c.W end
    if slot.b == i then return c.b end
    for path, j in pairs(slot.state) do
      if j == i then                         -- "theta", or nested: "inner.theta"
        local t = c.state
        for k in path:gmatch("[^.]+") do t = t[k] end
        return t
      end
    end
  end
  error("no state " .. name)
end

-- max over the checks of |g - fd| / max(|fd|, 1e-3)
local function check(case, mode)
  local d = data(case)
  local net = make(case)
  local u = (case.model == "microcircuit" and unroll.microcircuit or unroll.mlp)(net,
    {params = case.learn, batch = B, segment = 2, mode = mode, sweeps = case.sweeps})
  local loss, g, gS = u:gradient(d.X, d.T, d.Xq, d.Tq, {state = true})
  local theta = {}
  for i = 1, #u.names do theta[i] = u:theta():get(i) end
  local ref_loss, trained = reference(case, d, theta, u.names)
  local worst = 0
  local function cmp(what, got, fd)
    local r = math.abs(got - fd) / math.max(math.abs(fd), 1e-3)
    if r > worst then worst = r end
    return r, what
  end
  assert.is_true(math.abs(loss - ref_loss) <= 1e-12 * math.abs(ref_loss), case.name .. " loss")
  -- the unroll's state after training is the network's
  local ST = u:run(u:theta(), u:state(), d.X, d.T)
  for i = 1, #ST do
    local ref = tensor_of(u, trained, i)
    local diff = (ST[i] - ref):abs():max() / math.max(1, ref:clone():abs():max())
    assert.is_true(diff < 1e-12, format("%s: %s after training differs by %g", case.name,
                                        u.state_names[i], diff))
  end
  local report = {}
  for i = 1, #u.names do
    local h = 1e-4 * math.max(math.abs(theta[i]), 1e-2)
    local tp, tm = {table.unpack(theta)}, {table.unpack(theta)}
    tp[i], tm[i] = theta[i] + h, theta[i] - h
    local fd = (reference(case, d, tp, u.names) - reference(case, d, tm, u.names)) / (2 * h)
    local r = cmp(u.names[i], g:get(i), fd)
    report[#report + 1] = format("%s %.3g", u.names[i], r)
  end
  for _, pr in ipairs(probes(u)) do
    local i = pr[1]
    local function poke_by(h)
      return function(n)
        local t = tensor_of(u, n, i)
        if #pr == 3 then t:set(pr[2], pr[3], t:get(pr[2], pr[3]) + h)
        else t:set(pr[2], t:get(pr[2]) + h) end
      end
    end
    local h = 1e-5
    local fd = (reference(case, d, theta, u.names, poke_by(h)) -
                reference(case, d, theta, u.names, poke_by(-h))) / (2 * h)
    local got = #pr == 3 and gS[i]:get(pr[2], pr[3]) or gS[i]:get(pr[2])
    local r = cmp(u.state_names[i], got, fd)
    report[#report + 1] = format("%s %.3g", u.state_names[i], r)
  end
  return worst, g, gS, table.concat(report, ", ")
end

-- The unroll u (interpreted) gives the gradients g, gS on the data d (1e-10).
local function interpreted_equal(name, u, d, g, gS)
  local _, gi, gSi = u:gradient(d.X, d.T, d.Xq, d.Tq, {state = true})
  assert.is_true((gi - g):abs():max() <= 1e-10 * g:clone():abs():max(), name .. " interpreted")
  for i = 1, #gS do
    local scale = math.max(1e-12, gS[i]:clone():abs():max())
    assert.is_true((gSi[i] - gS[i]):abs():max() <= 1e-10 * scale,
                   name .. " interpreted " .. u.state_names[i])
  end
end

local CASES = {
  {name = "hebb", rule = "hebb", learn = {"eta"}, params = {eta = 0.05}},
  {name = "hebb (mask, no bias, sigmoid, mse)", rule = "hebb", learn = {"eta"},
   params = {eta = 0.05}, density = {0.6, 0.7}, bias = false, act = "sigmoid", loss = "mse"},
  {name = "oja (mse)", rule = "oja", learn = {"eta"}, params = {eta = 0.05}, loss = "mse"},
  {name = "three_factor (post, modulator 0.7)", rule = "three_factor", learn = {"eta"},
   params = {eta = 0.05}, mod = 0.7},
  {name = "three_factor (error, softplus)", rule = "three_factor", learn = {"eta"},
   params = {eta = -0.1, factor = "error"}, act = "softplus"},
  {name = "backprop", rule = "backprop", learn = {"eta"}, sizes = {4, 5, 4, 3}},
  {name = "fa", rule = "fa", learn = {"eta"}, sizes = {4, 5, 4, 3}},
  {name = "dfa", rule = "dfa", learn = {"eta"}, sizes = {4, 5, 4, 3}},
  {name = "sign_symmetry", rule = "sign_symmetry", learn = {"eta"}, sizes = {4, 5, 4, 3}},
  {name = "tutorial bcm", tutorial = "my_rules/bcm.lua", learn = {"eta", "tau"},
   params = {eta = 0.05, tau = 2}},
  {name = "tutorial my_sign", tutorial = "my_rules/my_sign.lua", learn = {"eta"},
   sizes = {4, 5, 4, 3}},
  {name = "rule.lowpass of the tutorial's BCM: the filter's tau (BCM's theta nested in the state)",
   learn = {"tau"}, instance = function()
     return rule.lowpass(rule.new(tutorial["my_rules/bcm.lua"], {eta = 0.05, tau = 2}), {tau = 3})
   end},
  -- circuit rules: the microcircuit in the steady state, every pathway plastic
  {name = "microcircuit: dendritic_prediction (up, ip, down), apical_silencing (pi)",
   model = "microcircuit", learn = {"eta"},
   eta = {up = {0.2, 0.1}, ip = 0.15, pi = 0.1, down = 0.05}},
  {name = "microcircuit: the tutorial's no_attenuation (up), no biases, two hidden layers, " ..
          "two sweeps", model = "microcircuit", sweeps = 2, learn = {"eta"}, tutorial_up = "my_rules/no_attenuation.lua",
   bias = false, sizes = {4, 5, 4, 3}, eta = {up = {0.2, 0.1, 0.1}, ip = 0.15, pi = 0.1}},
}

describe("nm.unroll: meta-gradients of connection rules' parameters", function()
  setup(kernels.use)
  teardown(function()
    kernels.restore()
    os.execute(format("rm -rf %q %q", cache, tutorial_dir))
  end)

  it("saves the tutorial's rules from doc/tutorial.md", function()
    assert.is_string(tutorial["my_rules/bcm.lua"])
    assert.is_string(tutorial["my_rules/my_sign.lua"])
    assert.is_string(tutorial["my_rules/no_attenuation.lua"])
  end)

  for _, case in ipairs(CASES) do
    it(case.name .. ": gradients for every parameter and the initial weights equal central " ..
       "finite differences of the network; interpreted equal", function()
      if case.tutorial then case.rule = tutorial[case.tutorial] end
      if case.tutorial_up then case.rules = {up = tutorial[case.tutorial_up]} end
      local worst, g, gS, report = check(case)
      assert.is_true(worst < 1e-6, case.name .. ": " .. report)
      if os.getenv("UNROLL_REPORT") then                 -- the figures of doc/compiler.md
        io.stderr:write(format("%s: max %.2g (%s)\n", case.name, worst, report))
      end
      -- the same graphs interpreted
      local net = make(case)
      local d = data(case)
      local u = (case.model == "microcircuit" and unroll.microcircuit or unroll.mlp)(net,
        {params = case.learn, batch = B, segment = 2, mode = "interpret", sweeps = case.sweeps})
      interpreted_equal(case.name, u, d, g, gS)
    end)
  end

  it("fails when the adjoint misses a path: a Hebbian rule whose update cuts the gradient " ..
     "through post (same forward) is off by far more than the tolerance", function()
    local def = {}
    for k, v in pairs(rule.definition("hebb")) do def[k] = v end
    def.name, def.fused = "hebb_cut", nil
    def.update = function(q, p)
      -- ag.value: the same numbers, no gradient through post
      local post_t = q.post_t
      if not nm.is_tensor(post_t) then post_t = ag.value(compile.value_of(post_t)) end
      q.dW:addmm(p.eta / q.batch, post_t, q.pre, 0)
    end
    local worst, _, _, report = check({name = "hebb_cut", rule = def, learn = {"eta"},
                                      params = {eta = 0.05}})
    if os.getenv("UNROLL_REPORT") then io.stderr:write(format("hebb_cut: max %.2g (%s)\n", worst, report)) end
    assert.is_true(worst > 1e-2, report)
  end)

  it("carries the rule state the step reads (BCM's theta), not what it writes before " ..
     "reading (Oja's C, the microcircuit's T) or never touches (the steady state's D)", function()
    local function names(u) return " " .. table.concat(u.state_names, " ") .. " " end
    local oja = unroll.mlp(make({rule = "oja"}), {params = {"eta"}, batch = 2})
    assert.equal(" W1 b1 W2 b2 ", names(oja))
    local bcm = unroll.mlp(make({rule = tutorial["my_rules/bcm.lua"], params = {tau = 2}}),
                           {params = {"eta"}, batch = 2})
    assert.equal(" W1 b1 W1.theta W2 b2 W2.theta ", names(bcm))
    local m = unroll.microcircuit(make({model = "microcircuit", eta = {up = 0.1, pi = 0.1}}),
                                  {params = {"eta"}, batch = 2})
    assert.equal(" W_up1 b_up1 W_up2 b_up2 W_down1 W_ip1 b_ip1 W_pi1 ", names(m))
    assert.same({"W_up1.eta", "W_up2.eta", "W_pi1.eta"}, m.names)
    -- a wrapped rule's parameters are numbers in the kernel: a change traces again
    local function lowpass() return rule.lowpass(rule.new("hebb", {eta = 0.05}), {tau = 3}) end
    local d = data({})
    local function loss_of(net)
      local u = unroll.mlp(net, {params = {"tau"}, batch = B, mode = "interpret"})
      return u, u:loss(u:theta(), u:state(), d.X, d.T, d.Xq, d.Tq)
    end
    local n1 = make({instance = lowpass})
    local u1, before = loss_of(n1)
    for _, c in ipairs(n1.conns) do c.rule.inner.p.eta = 0.2 end
    local after = u1:loss(u1:theta(), u1:state(), d.X, d.T, d.Xq, d.Tq)
    local n2 = make({instance = lowpass})
    for _, c in ipairs(n2.conns) do c.rule.inner.p.eta = 0.2 end
    local _, fresh = loss_of(n2)
    assert.is_true(before ~= after)
    assert.equal(fresh, after)
    -- the C of the step and of its adjoint, named
    local src = unroll.mlp(make({rule = "hebb"}), {params = {"eta"}, batch = 2,
                                                   mode = "interpret"}):source()
    assert.truthy(src:find("step of mlp training step (hebb, hebb) (nm.unroll)", 1, true))
    assert.truthy(src:find("adjoint of mlp training step (hebb, hebb) (nm.unroll)", 1, true))
  end)

  it("traces the network's own backward pass for every built-in activation (E:mul_dact) and " ..
     "one sample a step: the weights equal train_batch's", function()
    for _, c in ipairs{{act = "relu", bs = 3}, {act = {"softplus", beta = 2}, bs = 3},
                       {act = "sigmoid", out = "sigmoid", loss = "mse", bs = 3},
                       {act = "tanh", out = "tanh", loss = "mse", bs = 1},
                       {act = "relu", out = "softmax", loss = "mse", bs = 2}} do
      local case = {rule = "backprop", act = c.act, out = c.out, loss = c.loss,
                    sizes = {4, 5, 4, 3}}
      local what = format("%s hidden, %s out, batch %d", type(c.act) == "table" and "softplus" or
                          c.act, c.out or "softmax", c.bs)
      local d = data(case)
      local u = unroll.mlp(make(case), {params = {"eta"}, batch = c.bs, mode = "interpret"})
      local X, T = d.X:narrow(1, 1, 3 * c.bs), d.T:narrow(1, 1, 3 * c.bs)
      local ST = u:run(u:theta(), u:state(), X, T)
      local net = make(case)
      for t = 1, 3 do
        net:train_batch(X:narrow(1, (t - 1) * c.bs + 1, c.bs), T:narrow(1, (t - 1) * c.bs + 1, c.bs))
      end
      for i = 1, #ST do
        local ref = tensor_of(u, net, i)
        local diff = (ST[i] - ref):abs():max() / math.max(1, ref:clone():abs():max())
        assert.is_true(diff < 1e-12, format("%s: %s differs by %g", what, u.state_names[i], diff))
      end
    end
  end)

  it("with the compiler hidden (NEUROMIC_CC=none) runs interpreted, one-line notice, same " ..
     "gradients", function()
    local script = os.tmpname() .. ".lua"
    support.write_file(script, [[
local nm = require "neuromic"
local nn = require "nm.nn"
local unroll = require "nm.unroll"
local net = nn.mlp{sizes = {4, 5, 3}, act = "tanh", rule = "fa", params = {eta = 0.05},
                   gen = nm.generator(1), dtype = "float64"}
local g = nm.generator(5)
local X, T = nm.zeros(12, 4, "float64"):normal(g, 0, 1), nm.zeros(12, 3, "float64"):uniform(g, 0, 1)
local u = unroll.mlp(net, {params = {"eta"}, batch = 3})
local _, grad = u:gradient(X, T, X:narrow(1, 1, 3), T:narrow(1, 1, 3))
print(u:fn():compiled(), string.format("%.17g %.17g", grad:get(1), grad:get(2)))
]])
    local function run(env)
      local out, err = support.sh(format("cd %s && %s NEUROMIC_CACHE=%s %s %s", support.q(support.root),
                                         env, support.q(cache), support.q(support.exe), support.q(script)))
      return out, err
    end
    local without, notice = run("NEUROMIC_CC=none")
    local with = run("")
    os.remove(script)
    assert.truthy(notice:find("^neuromic: no C compiler found"), notice)
    local a, b = without:match("^false%s(%S+) (%S+)\n$")
    assert.is_not_nil(a, without)
    local compiled, c, d = with:match("^(%a+)%s(%S+) (%S+)\n$")
    if compiled == "true" then
      assert.is_true(math.abs(a - c) <= 1e-10 * math.abs(c) and math.abs(b - d) <= 1e-10 * math.abs(d),
                     without .. " vs " .. with)
    end
  end)

  it("checks its arguments", function()
    local net = make({rule = "hebb"})
    local function err(f)
      local ok, e = pcall(f)
      assert.is_false(ok)
      return e
    end
    assert.truthy(err(function() unroll.mlp(net, {params = {"tau"}, batch = 2}) end)
                  :find("no plastic connection's rule has a numeric parameter 'tau'", 1, true))
    assert.truthy(err(function() unroll.mlp(net, {params = {[2] = {"tau"}}, batch = 2}) end)
                  :find("rule 'hebb' of W2 has no numeric parameter 'tau'", 1, true))
    assert.truthy(err(function() unroll.mlp(net, {params = {W9 = {"eta"}}, batch = 2}) end)
                  :find("params names no connection 'W9'", 1, true))
    assert.truthy(err(function() unroll.mlp(net, {params = {"eta"}}) end)
                  :find("unroll: mlp: batch must be a positive integer", 1, true))
    assert.truthy(err(function() unroll.mlp({}, {params = {"eta"}, batch = 2}) end)
                  :find("an nn.mlp network expected", 1, true))
    net:set_optimiser(require("nm.optim").sgd{lr = 0.1})
    assert.truthy(err(function() unroll.mlp(net, {params = {"eta"}, batch = 2}) end)
                  :find("the network has an optimiser", 1, true))
    net:set_optimiser(nil)
    local dyn = mc.new{sizes = {4, 5, 3}, gen = nm.generator(1), eta = {up = 0.1}}
    assert.truthy(err(function() unroll.microcircuit(dyn, {params = {"eta"}, batch = 2}) end)
                  :find("the full dynamics run in C without an adjoint", 1, true))
    local steady = mc.new{sizes = {4, 5, 3}, gen = nm.generator(1), eta = {up = 0.1}, mode = "steady"}
    assert.truthy(err(function() unroll.microcircuit(steady, {params = {"tau_w"}, batch = 2}) end)
                  :find("'tau_w' is not read in the steady state", 1, true))
    assert.truthy(err(function() unroll.microcircuit(net, {params = {"eta"}, batch = 2}) end)
                  :find("a network of nm.models.microcircuit expected", 1, true))
    local u = unroll.mlp(net, {params = {"eta"}, batch = 2})
    local X = nm.zeros(6, 4, "float64")
    assert.truthy(err(function() u:run(u:theta(), u:state(), X, nm.zeros(6, 2, "float64")) end)
                  :find("T must be [steps * 2 x 3]", 1, true))
    -- a diverging training is an error, not a NaN gradient
    local ones = function(r, c) return nm.zeros(r, c, "float64"):fill(1) end
    assert.truthy(err(function() u:gradient(ones(6, 4), ones(6, 3), ones(2, 4), ones(2, 3),
                                            {theta = nm.tensor({math.huge, 1}, "float64")}) end)
                  :find("unroll: gradient: W1 is not finite after 3 training steps (the training diverged", 1, true))
    assert.truthy(err(function() u:loss(u:theta(), u:state(), X, nm.zeros(6, 3, "float64"),
                                        nm.zeros(3, 4, "float64"), nm.zeros(2, 3, "float64")) end)
                  :find("Xq must be a [2 x 4] tensor", 1, true))
  end)
end)

-- BMVR (nm.models.bmvr): its circuit rules (rules/bmvr.lua,
-- rules/bmvr_backprop.lua) through net:train's per-sample pass, traced;
-- the reference trains with net:train (the rules' C kernel,
-- nm.kernels.bmvr.train / backprop, or their Lua steps for a rule without
-- one) and scores with net:evaluate (C) - code the unroll does not run.
local bmvr = require "nm.models.bmvr"

local function bmvr_data()
  local g = nm.generator(5)
  local function x(r, c) return nm.zeros(r, c, "float64"):normal(g, 0, 1) end
  return {X = x(STEPS * B, 6), T = x(STEPS * B, 3), Xq = x(B, 6), Tq = x(B, 3)}
end

local function bmvr_net(case)
  local o = {n = 6, m = 3, k = 4, dtype = "float64", seed = 1, eta_w1 = 0.05, eta_w2 = 0.04,
             eta_q = 0.03, t0 = 10}
  for k, v in pairs(case.o) do o[k] = v end
  return bmvr.new(o)
end

-- The network's query loss after net:train with rule parameters theta (in
-- u.names' order) and optionally an initial weight poked.
local function bmvr_reference(case, d, theta, names, poke)
  local net = bmvr_net(case)
  for i, name in ipairs(names) do
    local pw, k = name:match("^(.+)%.(.+)$")
    net.rules[pw].p[k] = theta[i]
  end
  if poke then poke(net) end
  net:train(d.X, d.T)
  return (net:evaluate(d.Xq, d.Tq)), net
end

-- A model's unroll u against its reference (m.reference(case, d, theta,
-- names, poke) -> query loss, trained network; m.weight(net, name) -> the
-- network's tensor of a state name): the loss and the trained state
-- equal, the gradients for every learned parameter and for entries of
-- every initial state tensor equal central finite differences. Returns
-- the largest relative difference, g, gS, a report.
local function model_check(m, case, u, d)
  local loss, g, gS = u:gradient(d.X, d.T, d.Xq, d.Tq, {state = true})
  local theta = {}
  for i = 1, #u.names do theta[i] = u:theta():get(i) end
  local ref_loss, trained = m.reference(case, d, theta, u.names)
  assert.is_true(math.abs(loss - ref_loss) <= 1e-12 * math.abs(ref_loss),
                 format("%s loss %.17g vs %.17g", case.name, loss, ref_loss))
  local ST = u:run(u:theta(), u:state(), d.X, d.T)
  for i = 1, #ST do
    local ref = m.weight(trained, u.state_names[i])
    local diff = (ST[i] - ref):abs():max() / math.max(1, ref:clone():abs():max())
    assert.is_true(diff < 1e-12, format("%s: %s after training differs by %g", case.name,
                                        u.state_names[i], diff))
  end
  local worst, report = 0, {}
  local function cmp(what, got, fd)
    local r = math.abs(got - fd) / math.max(math.abs(fd), 1e-3)
    worst = math.max(worst, r)
    report[#report + 1] = format("%s %.3g", what, r)
  end
  for i = 1, #u.names do
    local h = 1e-4 * math.max(math.abs(theta[i]), 1e-2)
    local tp, tm = {table.unpack(theta)}, {table.unpack(theta)}
    tp[i], tm[i] = theta[i] + h, theta[i] - h
    cmp(u.names[i], g:get(i), (m.reference(case, d, tp, u.names) -
                               m.reference(case, d, tm, u.names)) / (2 * h))
  end
  for _, pr in ipairs(probes(u)) do
    local i = pr[1]
    local function poke_by(h)
      return function(net)
        local t = m.weight(net, u.state_names[i])
        if #pr == 3 then t:set(pr[2], pr[3], t:get(pr[2], pr[3]) + h)
        else t:set(pr[2], t:get(pr[2]) + h) end
      end
    end
    local h = 1e-5
    local fd = (m.reference(case, d, theta, u.names, poke_by(h)) -
                m.reference(case, d, theta, u.names, poke_by(-h))) / (2 * h)
    cmp(u.state_names[i], #pr == 3 and gS[i]:get(pr[2], pr[3]) or gS[i]:get(pr[2]), fd)
  end
  return worst, g, gS, table.concat(report, ", ")
end

local function bmvr_check(case, mode)
  local u = unroll.bmvr(bmvr_net(case), {params = case.learn, batch = B, segment = 2, mode = mode})
  local worst, g, gS, report = model_check({reference = bmvr_reference,
                                            weight = function(net, name) return net[name] end},
                                           case, u, bmvr_data())
  return worst, g, gS, report, u
end

local BMVR_CASES = {
  {name = "bmvr: the paper's rules, linear (W1, W2T, Q), decaying rates", learn = {"eta"}, o = {}},
  {name = "bmvr: ReLU, running mean after, gate u, decoupled (W1, W2T, Q, R)", learn = {"eta"},
   o = {relu = true, decoupled = true, mean_eps = 0.1}},
  {name = "bmvr: ReLU, mean before, gate z, constant rates", learn = {"eta"},
   o = {relu = true, mean = "before", gate = "z", t0 = 0, mean_eps = 0.1}},
  {name = "bmvr_backprop: ReLU (W1, W2T; Q fixed)", learn = {"eta"},
   o = {relu = true, rules = "bmvr_backprop", mean_eps = 0.1}},
}

describe("nm.unroll: meta-gradients of BMVR's circuit rules", function()
  setup(kernels.use)
  teardown(kernels.restore)

  for _, case in ipairs(BMVR_CASES) do
    it(case.name .. ": gradients for every rate and the initial weights equal central finite " ..
       "differences of the network (net:train, net:evaluate); interpreted equal", function()
      local worst, g, gS, report, u = bmvr_check(case)
      assert.is_true(worst < 1e-6, case.name .. ": " .. report)
      if os.getenv("UNROLL_REPORT") then
        io.stderr:write(format("%s: max %.2g (%s)\n", case.name, worst, report))
      end
      local d = bmvr_data()
      local ui = unroll.bmvr(bmvr_net(case), {params = case.learn, batch = B, segment = 2,
                                              mode = "interpret"})
      assert.same(u.state_names, ui.state_names)
      interpreted_equal(case.name, ui, d, g, gS)
    end)
  end

  it("fails when the adjoint misses a path: W2T's step with z cut from the gradient (same " ..
     "numbers) is off by far more than the tolerance", function()
    local def = {}
    for k, v in pairs(rule.definition("bmvr")) do def[k] = v end
    def.name, def.kernel = "bmvr_cut", nil
    local step = def.step
    def.step = function(s, p)
      if s.pathway ~= "W2T" or nm.is_tensor(s.post) then return step(s, p) end
      local eta = p.t0 > 0 and p.eta * (1 / (1 + s.t / p.t0)) or p.eta
      s.W:mul(1 - eta):addr(eta, ag.value(compile.value_of(s.post)), s.pre)
    end
    -- (each sample's cut depends on the one before: graph.strip_detach left the inner ones
    -- in the forward C, an error before this test)
    local worst, _, _, report = bmvr_check({name = "bmvr_cut", learn = {"eta"},
                                            o = {rules = {W1 = def, W2T = def, Q = def}}})
    if os.getenv("UNROLL_REPORT") then io.stderr:write(format("bmvr_cut: max %.2g (%s)\n", worst, report)) end
    assert.is_true(worst > 1e-2, report)
  end)

  it("checks its arguments; t0 and gate key the kernel", function()
    local function err(f)
      local ok, e = pcall(f)
      assert.is_false(ok)
      return e
    end
    local net = bmvr_net({o = {}})
    assert.truthy(err(function() unroll.bmvr({}, {params = {"eta"}, batch = 2}) end)
                  :find("a network of nm.models.bmvr expected", 1, true))
    assert.truthy(err(function() unroll.bmvr(net, {params = {"t0"}, batch = 2}) end)
                  :find("'t0' is compared with 0", 1, true))
    assert.truthy(err(function() unroll.bmvr(net, {params = {zbar = {"eta"}}, batch = 2}) end)
                  :find("zbar is driven by no rule", 1, true))
    local u = unroll.bmvr(net, {params = {W1 = {"eta"}}, batch = B, mode = "interpret"})
    assert.same({"W1.eta"}, u.names)
    assert.same({"W1", "W2T", "Q", "zbar"}, u.state_names)
    local d = bmvr_data()
    local before = u:loss(u:theta(), u:state(), d.X, d.T, d.Xq, d.Tq)
    net.rules.W1.p.t0 = 0
    local after = u:loss(u:theta(), u:state(), d.X, d.T, d.Xq, d.Tq)
    local fresh = bmvr_net({o = {t0 = 0}})
    fresh.rules.W1.p.t0 = 0
    fresh.rules.W2T.p.t0, fresh.rules.Q.p.t0 = 10, 10
    fresh:train(d.X, d.T, {fused = false})
    assert.is_true(before ~= after)
    assert.is_true(math.abs(after - fresh:evaluate(d.Xq, d.Tq)) <= 1e-12 * after)
    assert.truthy(u:source():find("bmvr training step (bmvr, bmvr, bmvr) (nm.unroll)", 1, true))
  end)
end)

-- The folded autoencoder (nm.models.folded_ae): its circuit rule
-- (rules/folded_ae.lua, pathways W and G) after a settle truncated to a
-- fixed number of plain Euler steps (settle_steps), traced through the
-- model's Lua path; the reference trains with net:train_batch(X,
-- {settle_steps = n}) on the fused C kernels (nm.kernels.folded, the
-- rule's plastic_outer kernel) and scores with net:reconstruction_mse.
local fae = require "nm.models.folded_ae"
local FAE_STEPS = 4            -- Euler steps per settle

local function fae_data()
  local g = nm.generator(5)
  local function x(r) return nm.zeros(r, 5, "float64"):normal(g, 0, 1) end
  local X = x(STEPS * B)
  return {X = X, T = X, Xq = x(B), Tq = x(B)}
end

local function fae_net(case)
  local o = {sizes = {5, 4, 3}, gen = nm.generator(1), dtype = "float64", lambda = 0.3, dt = 0.2,
             eta_W = 0.05, eta_G = 0.04}
  for k, v in pairs(case.o) do o[k] = v end
  return fae.new(o)
end

local function fae_weight(net, name)
  local path, k = name:match("^(%a)(%d+)$")
  return net[path][tonumber(k)]
end

-- The network's query loss after training with rule parameters theta (in
-- u.names' order) and optionally an initial weight poked.
local function fae_reference(case, d, theta, names, poke)
  local net = fae_net(case)
  for i, name in ipairs(names) do
    local path, k = name:match("^(.+)%.(.+)$")
    net.rules[path].p[k] = theta[i]
  end
  if poke then poke(net) end
  for t = 1, STEPS do net:train_batch(d.X:narrow(1, (t - 1) * B + 1, B), {settle_steps = FAE_STEPS}) end
  return net:reconstruction_mse(d.Xq), net
end

local function fae_check(case, mode)
  local u = unroll.folded_ae(fae_net(case), {params = case.learn, batch = B, segment = 2, mode = mode,
                                             settle_steps = FAE_STEPS})
  local worst, g, gS, report = model_check({reference = fae_reference, weight = fae_weight},
                                           case, u, fae_data())
  return worst, g, gS, report, u
end

local FAE_CASES = {
  {name = "folded_ae: tanh, hard clamp, energy form (W.eta, G.eta)", learn = {"eta"}, o = {}},
  {name = "folded_ae: sigmoid, soft clamp, compartments, G.eta only", learn = {G = {"eta"}},
   o = {phi = "sigmoid", clamp = "soft", beta = 0.5, form = "compartments", dt = 0.1}},
}

describe("nm.unroll: meta-gradients of the folded autoencoder's circuit rule", function()
  setup(kernels.use)
  teardown(kernels.restore)

  it("settle_steps = n settles by n plain Euler steps: the adaptive settle's Euler path with " ..
     "that cap and no tolerance gives the same state", function()
    local d = fae_data()
    local x = d.X:narrow(1, 1, B)
    local a, b = fae_net({o = {}}), fae_net({o = {}})
    local ia = a:settle(x, {settle_steps = FAE_STEPS})
    b:settle(x, {solver = "euler", adapt = false, tol = 0, max_iter = FAE_STEPS})
    assert.equal(FAE_STEPS, ia.iterations)
    for i = 0, 2 do
      local ua, ub = a.cur.U[i], b.cur.U[i]
      assert.is_true((ua - ub):abs():max() <= 1e-12 * math.max(1, ub:clone():abs():max()))
    end
    assert.is_true(math.abs(ia.energy - b.info.energy) <= 1e-12 * math.abs(b.info.energy))
    assert.truthy(select(2, pcall(a.settle, a, x, {settle_steps = 1.5}))
                  :find("option 'settle_steps' must be false or an integer >= 0", 1, true))
  end)

  for _, case in ipairs(FAE_CASES) do
    it(case.name .. ": gradients for the rates and the initial weights equal central finite " ..
       "differences of the network (train_batch with settle_steps, reconstruction_mse); " ..
       "interpreted equal", function()
      local worst, g, gS, report, u = fae_check(case)
      assert.is_true(worst < 1e-6, case.name .. ": " .. report)
      if os.getenv("UNROLL_REPORT") then
        io.stderr:write(format("%s: max %.2g (%s)\n", case.name, worst, report))
      end
      local d = fae_data()
      local ui = unroll.folded_ae(fae_net(case), {params = case.learn, batch = B, segment = 2,
                                                  mode = "interpret", settle_steps = FAE_STEPS})
      assert.same(u.state_names, ui.state_names)
      interpreted_equal(case.name, ui, d, g, gS)
    end)
  end

  it("fails when the adjoint misses a path: the rule's step with r_pre cut from the gradient " ..
     "(same numbers) is off by far more than the tolerance", function()
    local def = {}
    for k, v in pairs(rule.definition("folded_ae")) do def[k] = v end
    def.name, def.kernel = "folded_ae_cut", nil
    def.step = function(s, p)
      local r = s.r
      if not nm.is_tensor(r) then r = ag.value(compile.value_of(r)) end
      s.dV:addmm(p.eta / s.batch, s.e_t, r, 0)
    end
    local worst, _, _, report = fae_check({name = "folded_ae_cut", learn = {"eta"},
                                           o = {rules = {W = def, G = def}}})
    if os.getenv("UNROLL_REPORT") then io.stderr:write(format("folded_ae_cut: max %.2g (%s)\n", worst, report)) end
    assert.is_true(worst > 1e-2, report)
  end)

  it("checks its arguments", function()
    local function err(f)
      local ok, e = pcall(f)
      assert.is_false(ok)
      return e
    end
    local net = fae_net({o = {}})
    assert.truthy(err(function() unroll.folded_ae({}, {params = {"eta"}, batch = 2, settle_steps = 2}) end)
                  :find("a network of nm.models.folded_ae expected", 1, true))
    assert.truthy(err(function() unroll.folded_ae(net, {params = {"eta"}, batch = 2}) end)
                  :find("settle_steps (the fixed number of Euler steps per settle)", 1, true))
    assert.truthy(err(function() unroll.folded_ae(net, {params = {"tau"}, batch = 2, settle_steps = 2}) end)
                  :find("no plastic connection's rule has a numeric parameter 'tau'", 1, true))
    local u = unroll.folded_ae(net, {params = {W = {"eta"}}, batch = B, mode = "interpret",
                                     settle_steps = 2})
    assert.same({"W.eta"}, u.names)
    assert.same({"W1", "W2", "G0", "G1"}, u.state_names)
  end)
end)
