-- nm/microcircuit.lua: dendritic cortical microcircuits (Sacramento, Costa,
-- Bengio & Senn 2018, NeurIPS 31; the model in doc/models/
-- microcircuit.md). Layers of pyramidal cells with a basal and an apical
-- dendrite and a soma, and SST interneurons that learn to predict the
-- layer above, so that apical potentials carry the error that the output
-- nudging sends down. Two ways to run a network:
--
--   * the full dynamics: forward Euler steps of every membrane potential
--     with noise and the four low-pass plasticity rules, in C, one call per
--     pattern (net:run); float64 only;
--   * the steady-state ("simplified") dynamics: each pattern's fixed point
--     in one forward and one backward sweep, then the rules once per
--     pattern, averaged over a minibatch (net:train_batch); float32 or
--     float64, every product one GEMM.
--
--   local mc = require "nm.models.microcircuit"
--   local net = mc.new{sizes = {30, 50, 10}, gen = nm.generator(1), sigma = 0.3,
--                      eta = {up = {0.0011875, 0.0005}, ip = 0.0011875, pi = 0.0059375}}
--   net:run(x, 1000, u_target)          -- 100 ms of one pattern, target shown
--   net:apical_energy(), net:interneuron_mismatch()
--
-- Connections are nn connections (nm.nn): net.up[k] (W_up, layer k-1 ->
-- k, k = 1..N), net.down[k], net.ip[k], net.pi[k] (k = 1..N-1), each with
-- a circuit rule (conn.rule, one instance per connection) for its pathway;
-- conn.plastic = false or rule.set_learning(false) stop learning in both
-- modes.
--
-- Circuit rules (kind = "circuit", model = "microcircuit", pathway or
-- pathways from up, ip, pi, down; see lua/nm/rule.lua). The paper's are
-- rules/dendritic_prediction.lua (up, ip, down) and
-- rules/apical_silencing.lua (pi), the defaults; mc.new{rules = {up =
-- "name" | "./path.lua" | definition | instance, ...}} takes others. A
-- rule declares the parameter eta (the model sets it per layer from
-- mc.new's eta, and dt, tau_w when declared). rule.step(s, p) makes one
-- plasticity step of one connection from the state s of the network:
--   s.W [n x n_pre], s.b [n] or nil, s.state (the connection's state:
--     D, Db the low-pass traces, and what the rule's init(s, p) adds;
--     checkpointed), s.pathway, s.layer (k), s.batch (B), s.ones [B];
--   s.pre [B x n_pre] presynaptic rates: r_{k-1} (up), r_k (ip), rI_k
--     (pi), r_{k+1} (down);
--   s.post [B x n] postsynaptic somatic rates and s.u their potentials:
--     r_k, u_k (up, pi, down), rI_k, uI_k (ip);
--   s.v [B x n] the potential of the compartment the synapses end on:
--     vB_k (up), vI_k (ip), vA_k (pi), vD_k = W_down r_{k+1} (down), and
--     s.c its attenuation (cB_k, cD; 1 for pi and down);
--   s.e [B x n], s.e_t = s.e:t() scratch; s.phi(Y, U) the rate function.
-- Rows are samples: B = 1 in the full dynamics (every Euler step), the
-- minibatch in the steady state (once per minibatch; tau_w = 0 there).
-- mc.lowpass(s, p) applies the induction term the rule wrote into s.e as
-- the paper does. Every rule's step runs as the C kernel nm.compile
-- generates from it (compiled = true, the default): in the full dynamics
-- the C loop (nm_mc_run) calls the kernels at every Euler step, a pattern
-- in one call. With compiled = false, or without a C compiler
-- (NEUROMIC_CC=none; the interpreted graph would run ~20x slower than
-- them), the rules' Lua steps run (the reference): each Euler step then
-- runs in C up to the rules, the rules in Lua, then the potentials in C
-- (the same numbers to rounding).

local nm = require "neuromic"
local nn = require "nm.nn"
local rule = require "nm.rule"

local mc = {}

local format = string.format

-- Constants of the paper (ms, capacitance 1, rest 0) and the reimplementations.
-- tau_in low-pass filters the input rates (the paper's r_0); tau_trgt the
-- target potentials the output is nudged towards (0: applied as given,
-- as the paper's equations have it; the default filters them like the
-- inputs, so that a new target ramps in over a few ms).
mc.defaults = {
  dt = 0.1, g_lk = 0.1, g_B = 1, g_A = 0.8, g_D = 1, g_som = 0.8,
  sigma = 0.1, noise = "sqrt_dt", tau_in = 3, tau_trgt = 3, tau_w = 30,
}

-- Rate functions: softplus gamma log(1 + exp(beta (u - theta))) (Fig. 2)
-- and logistic gamma / (1 + exp(-beta (u - theta))) (MNIST; its learnable
-- threshold is the basal bias, option bias = true).
mc.rates = {
  softplus = {gamma = 0.1, beta = 1, theta = 3},
  logistic = {gamma = 1, beta = 1, theta = 0},
}

local KINDS = {"up", "down", "ip", "pi"}

-- The plastic pathways and the paper's rule for each (rule files).
mc.pathways = {"up", "ip", "pi", "down"}
mc.default_rules = {up = "dendritic_prediction", ip = "dendritic_prediction",
                    pi = "apical_silencing", down = "dendritic_prediction"}

local Net = {}
Net.__index = Net
mc.Net = Net

local function fail(msg, level) error("microcircuit: " .. msg, (level or 1) + 1) end

-- A per-layer list from a number or a list of `count` numbers.
local function per_layer(v, count, what)
  local out = {}
  if type(v) == "number" then
    for k = 1, count do out[k] = v end
  elseif type(v) == "table" then
    if #v ~= count then fail(format("%s needs %d value(s), got %d", what, count, #v), 3) end
    for k = 1, count do
      if type(v[k]) ~= "number" then fail(format("%s[%d] must be a number", what, k), 3) end
      out[k] = v[k]
    end
  else
    fail(format("%s must be a number or a list of %d numbers", what, count), 3)
  end
  return out
end

local function rate_spec(r)
  local name, o = r or "softplus", {}
  if type(r) == "table" then name, o = r[1] or r.name, r end
  local base = mc.rates[name]
  if not base then fail(format("unknown rate function '%s' (softplus, logistic)", tostring(name)), 3) end
  local spec = {rate = name}
  for k, v in pairs(base) do spec[k] = o[k] or v end
  if not (spec.beta > 0) then fail("rate: beta must be > 0", 3) end
  return spec
end

-- mc.circuit_rule(pathway, spec) -> the definition and the parameters
-- given with it (an instance's) of a rule for one pathway: spec a name, a
-- path, a definition or an instance (nil: the paper's rule). Errors name
-- the rule and what does not fit.
function mc.circuit_rule(pathway, spec)
  local given = {}
  if spec == nil then spec = mc.default_rules[pathway] end
  if rule.is_rule(spec) then
    for k, v in pairs(spec.p) do given[k] = v end
    spec = spec.def
  end
  local def = rule.definition(spec)
  if def.kind ~= "circuit" then
    fail(format("rule '%s' is a %s rule; the microcircuit takes circuit rules", def.name,
                tostring(def.kind)), 2)
  elseif def.model ~= "microcircuit" then
    fail(format("rule '%s' is a circuit rule of the model '%s', not of the microcircuit", def.name,
                tostring(def.model)), 2)
  end
  local list = def.pathways or {def.pathway}
  local ok = false
  for _, name in ipairs(list) do ok = ok or name == pathway end
  if not ok then
    fail(format("rule '%s' drives pathway%s %s, not '%s'", def.name, #list == 1 and "" or "s",
                table.concat(list, ", "), pathway), 2)
  end
  if not def.params.eta then
    fail(format("rule '%s' must declare the parameter eta (the learning rate the model sets)",
                def.name), 2)
  end
  return def, given
end

-- mc.new(opts) -> network. Options:
--   sizes = {n0, n1, ..., nN} (N >= 1; N = 1 has no hidden layer)
--   dtype = "float64" ("float32" for the steady state only)
--   rate = "softplus" | "logistic" | {"softplus", gamma =, beta =, theta =}
--   dt, g_lk, g_B, g_A, g_D, g_som, sigma, noise ("sqrt_dt" | "dt"),
--     tau_in, tau_trgt, tau_w: see mc.defaults
--   mode = "dynamics" (rules low-pass filtered, eta per ms) | "steady"
--     (tau_w = 0: W += eta <term> once per pattern, eta per pattern)
--   eta = {up = {N values} | x, ip = {N-1} | x, pi = ..., down = ...}
--     (absent: 0); down > 0 makes the top-down weights plastic
--   init = a (all weights U(-a, a)) or {up =, down =, ip =, pi =}, each a
--     number, a list per layer, or "fan_in" (a = 1/sqrt(presynaptic cells));
--     default 1 for up and down, and ip, pi as up, down unless given
--   bias = false: basal biases b_up (pyramidal) and b_ip (interneurons),
--     learnt with the same rules (a presynaptic rate of 1)
--   self_predicting = false: start in the analytic self-predicting state
--   gen = generator (draws the weights; required), noise_gen = generator
--     for the noise (default: gen)
--   rules = {up =, ip =, pi =, down =}: a circuit rule per pathway (a
--     name, a path, a definition or an instance; default mc.default_rules)
--   check_every = 64: samples of the steady state between checks of the
--     plastic weights for NaN/inf (Net:check_finite)
--   compiled = true: every rule's step runs as the kernel nm.compile
--     generates from it (traced from rule.step; in the full dynamics the C
--     loop calls them at every Euler step); false (or no C compiler): the
--     Lua steps (the reference, slower); net.compiled may be changed
function mc.new(o)
  if type(o) ~= "table" or type(o.sizes) ~= "table" or #o.sizes < 2 then
    fail("mc.new{sizes = {n0, n1, ..., nN}, gen = generator, ...} expected", 2)
  end
  if #o.sizes > 9 then fail("at most 8 weight layers", 2) end
  local sizes, N = {}, #o.sizes - 1
  for i, n in ipairs(o.sizes) do
    if math.type(n) ~= "integer" or n < 1 then fail(format("sizes[%d] must be a positive integer", i), 2) end
    sizes[i - 1] = n
  end
  if not o.gen then fail("gen (nm.generator) is required to draw the weights", 2) end
  local dtype = o.dtype or "float64"
  if dtype ~= "float64" and dtype ~= "float32" then fail("dtype must be 'float32' or 'float64'", 2) end
  local mode = o.mode or "dynamics"
  if o.check_every ~= nil and (math.type(o.check_every) ~= "integer" or o.check_every < 1) then
    fail("check_every must be a positive integer (samples between checks for NaN/inf)", 2)
  end
  if mode ~= "dynamics" and mode ~= "steady" then fail("mode must be 'dynamics' or 'steady'", 2) end

  local p = {}
  for k, v in pairs(mc.defaults) do
    p[k] = o[k] == nil and v or o[k]
    if k ~= "noise" and type(p[k]) ~= "number" then fail(format("%s must be a number", k), 2) end
  end
  if p.noise ~= "sqrt_dt" and p.noise ~= "dt" then fail("noise must be 'sqrt_dt' or 'dt'", 2) end
  for k, v in pairs(rate_spec(o.rate)) do p[k] = v end

  local eta = {}
  local e = o.eta or {}
  if type(e) ~= "table" then fail("eta must be a table {up =, ip =, pi =, down =}", 2) end
  for name in pairs(e) do
    if name ~= "up" and name ~= "ip" and name ~= "pi" and name ~= "down" then
      fail(format("eta has no pathway '%s' (up, ip, pi, down)", tostring(name)), 2)
    end
  end
  eta.up = per_layer(e.up or 0, N, "eta.up")
  for _, kind in ipairs{"ip", "pi", "down"} do eta[kind] = per_layer(e[kind] or 0, N - 1, "eta." .. kind) end

  local rules = o.rules or {}
  if type(rules) ~= "table" then fail("rules must be a table {up =, ip =, pi =, down =}", 2) end
  local defs, given = {}, {}
  for name in pairs(rules) do
    if not eta[name] then fail(format("rules has no pathway '%s' (up, ip, pi, down)", tostring(name)), 2) end
  end
  for _, kind in ipairs(mc.pathways) do
    local ok, def, g = pcall(mc.circuit_rule, kind, rules[kind])
    if not ok then error(def, 2) end
    defs[kind], given[kind] = def, g
  end

  local init = o.init or 1
  if type(init) ~= "table" then init = {up = init, down = init} end
  init = {up = init.up or 1, down = init.down or 1, ip = init.ip, pi = init.pi}
  if init.ip == nil and type(init.up) == "table" then   -- W_ip[k] stands for W_up[k+1]
    init.ip = {}
    for k = 2, #init.up do init.ip[k - 1] = init.up[k] end
  end
  init.ip, init.pi = init.ip or init.up, init.pi or init.down
  for kind, a in pairs(init) do
    if type(a) == "table" then
      init[kind] = per_layer(a, kind == "up" and N or N - 1, "init." .. kind)
    elseif type(a) ~= "number" and a ~= "fan_in" then
      fail(format("init.%s must be a number, a list per layer or 'fan_in'", kind), 2)
    end
  end

  local net = setmetatable({N = N, sizes = sizes, dtype = dtype, mode = mode, p = p, eta = eta,
                            bias = not not o.bias, gen = o.gen, noise_gen = o.noise_gen or o.gen,
                            up = {}, down = {}, ip = {}, pi = {}, pyr = {}, int = {},
                            bufs = {}, rule_states = {}, compiled = o.compiled ~= false,
                            cgen = 1, updates = 0, checked = 0, unchecked = 0,
                            check_every = o.check_every or 64}, Net)
  net.phi_fn = function(Y, U) return net:phi(Y, U) end

  local function connection(kind, k, pre, post, bias)
    local a = init[kind]
    if type(a) == "table" then a = a[k] elseif a == "fan_in" then a = 1 / math.sqrt(pre) end
    local c = nn.connection{
      pre = pre, post = post, bias = bias, dtype = dtype, gen = o.gen, name = format("W_%s%d", kind, k),
      init = function(W, b, gen)
        W:uniform(gen, -a, a)
        if b then b:zero() end
      end,
      plastic = eta[kind][k] ~= 0,
    }
    -- the rule's parameters: an instance's, then what the model sets
    local def, params = defs[kind], {}
    for name, v in pairs(given[kind]) do params[name] = v end
    params.eta = eta[kind][k]
    if def.params.tau_w then params.tau_w = mode == "steady" and 0 or p.tau_w end
    if def.params.dt then params.dt = p.dt end
    c.rule = rule.new(def, params)
    -- the state the rule keeps: the low-pass traces, and its own (init)
    c.state = {D = c.W:clone():zero(), Db = c.b and c.b:clone():zero() or nil}
    if def.init then
      def.init({W = c.W, b = c.b, state = c.state, pathway = kind, layer = k, net = net}, c.rule.p)
    end
    return c
  end
  -- Draw order: all W_up, then per hidden layer W_down, W_ip, W_pi.
  for k = 1, N do net.up[k] = connection("up", k, sizes[k - 1], sizes[k], net.bias) end
  for k = 1, N - 1 do
    net.down[k] = connection("down", k, sizes[k + 1], sizes[k], false)
    net.ip[k] = connection("ip", k, sizes[k], sizes[k + 1], net.bias)
    net.pi[k] = connection("pi", k, sizes[k + 1], sizes[k], false)
  end

  -- The state of the full dynamics (1-D, float64, whatever dtype).
  net.r0, net.ut = nm.zeros(sizes[0], "float64"), nm.zeros(sizes[N], "float64")
  net.xbuf, net.tbuf = nm.zeros(sizes[0], "float64"), nm.zeros(sizes[N], "float64")
  for k = 1, N do
    local n = sizes[k]
    net.pyr[k] = {n = n, u = nm.zeros(n, "float64"), r = nm.zeros(n, "float64"),
                  vB = nm.zeros(n, "float64")}
    if k < N then
      local m = sizes[k + 1]
      net.pyr[k].vA, net.pyr[k].vD = nm.zeros(n, "float64"), nm.zeros(n, "float64")
      net.int[k] = {n = m, u = nm.zeros(m, "float64"), r = nm.zeros(m, "float64"),
                    v = nm.zeros(m, "float64")}
    end
  end
  if o.self_predicting then net:self_predicting() end
  return net
end

-- Attenuation factors and nudging strengths of the steady state (a table
-- kept until the constants change).
function Net:factors()
  if self.f then return self.f end
  local p = self.p
  self.f = {
    cB = p.g_B / (p.g_lk + p.g_B + p.g_A),          -- hidden basal
    cB_out = p.g_B / (p.g_lk + p.g_B),              -- output basal
    cD = p.g_D / (p.g_lk + p.g_D),                  -- interneuron dendrite
    lambda = p.g_A / (p.g_lk + p.g_B + p.g_A),      -- hidden apical
    lambda_out = p.g_som / (p.g_lk + p.g_B + p.g_som),
    lambda_I = p.g_som / (p.g_lk + p.g_D + p.g_som),
  }
  return self.f
end

-- The analytic self-predicting state: W_pi[k] = -W_down[k] and
-- W_ip[k] = g_B (g_lk + g_D) / (g_D (g_lk + g_B + g_A')) W_up[k+1], g_A' = 0
-- when k+1 = N (likewise b_ip from b_up[k+1]). Without a target and noise,
-- interneurons then equal the layer above and apical potentials vanish.
function Net:self_predicting()
  local p = self.p
  for k = 1, self.N - 1 do
    local gA = (k + 1 == self.N) and 0 or p.g_A
    local c = p.g_B * (p.g_lk + p.g_D) / (p.g_D * (p.g_lk + p.g_B + gA))
    self.pi[k].W:scale(self.down[k].W, -1)
    self.ip[k].W:scale(self.up[k + 1].W, c)
    if self.ip[k].b then self.ip[k].b:scale(self.up[k + 1].b, c) end
  end
  return self
end

-- ---------------------------------------------------------------- rule states

-- The attenuation of the compartment a pathway's synapses end on.
local function attenuation(self, kind, k)
  local f = self:factors()
  if kind == "up" then return k < self.N and f.cB or f.cB_out end
  if kind == "ip" then return f.cD end
  return 1
end

-- The state s a rule step of connection (kind, k) reads (see the header):
-- the rows of `t` (pre, post, u, v, e: tensors [B x n]) and the rest.
local function rule_state(self, kind, k, t)
  local c = self[kind][k]
  local s = {W = c.W, b = c.b, state = c.state, pathway = kind, layer = k, net = self,
             pre = t.pre, post = t.post, u = t.u, v = t.v, e = t.e, e_t = t.e:t(),
             batch = t.e:size(1), ones = t.ones,
             c = attenuation(self, kind, k), phi = self.phi_fn}
  self.rule_states[#self.rule_states + 1] = s
  return s
end

-- mc.lowpass(s, p): the plasticity of the paper's rules, from the
-- induction term e = s.e (rows: samples) a rule wrote, T = <e pre^T> the
-- batch mean: with tau_w > 0 one forward Euler step of the low-pass trace,
--   W += dt eta D;   D += (dt / tau_w) (T - D)
-- and with tau_w = 0 (the steady state) W += eta T. Biases (a presynaptic
-- rate of 1) likewise. Needs s.state.T (and Tb) of the weights' shapes
-- (the paper's rules make them in init). Allocates nothing.
function mc.lowpass(s, p)
  local st, B = s.state, s.batch
  if p.tau_w == 0 then
    st.T:addmm(p.eta / B, s.e_t, s.pre, 0)                   -- eta <e r_pre^T>
    s.W:add(st.T)
    if s.b then
      st.Tb:addmv(p.eta / B, s.e_t, s.ones, 0)
      s.b:add(st.Tb)
    end
    return
  end
  local a, c = p.dt / p.tau_w, p.dt * p.eta
  st.T:addmm(1 / B, s.e_t, s.pre, 0)                         -- T = <e r_pre^T>
  s.W:axpy(c, st.D)                                           -- W += dt eta D
  st.T:sub(st.D)
  st.D:axpy(a, st.T)                                          -- D += a (T - D)
  if s.b then
    st.Tb:addmv(1 / B, s.e_t, s.ones, 0)
    s.b:axpy(c, st.Db)
    st.Tb:sub(st.Db)
    st.Db:axpy(a, st.Tb)
  end
end

-- mc.lowpass_params(eta) -> the parameters mc.lowpass reads (eta with
-- this default, tau_w, dt), for a rule's params.
function mc.lowpass_params(eta)
  return {
    eta = {default = eta, doc = "learning rate (per ms with tau_w > 0, per pattern with " ..
                                "tau_w = 0); set per layer by the model"},
    tau_w = {default = mc.defaults.tau_w, doc = "low-pass time constant of the induction term " ..
                                                "in ms; 0: none (set by the model)"},
    dt = {default = mc.defaults.dt, doc = "Euler step in ms (set by the model)"},
  }
end

-- mc.lowpass_check(p): the parameters mc.lowpass reads are sound (a
-- rule's check).
function mc.lowpass_check(p)
  if p.tau_w < 0 then return false, "parameter 'tau_w' must be >= 0" end
  if p.tau_w > 0 and not (p.dt > 0 and p.dt <= p.tau_w) then
    return false, "parameter 'dt' must be in (0, tau_w]"
  end
  return true
end

-- mc.lowpass_init(s, p): the scratch mc.lowpass needs (T, Tb).
function mc.lowpass_init(s)
  s.state.T = s.W:clone():zero()
  if s.b then s.state.Tb = s.b:clone():zero() end
end

-- ---------------------------------------------------------------- full dynamics

-- The compiled step of d's rule (d = {conn, s}: a connection and the
-- state its rule reads, of the dynamics or of a batch size), traced on
-- first use, and again after the network's constants changed (Net:set) or
-- when a rule parameter became or stopped being 0.
local compile
local function compiled_step(self, d)
  local inst = d.conn.rule
  local st = d.cstep
  if st and d.cgen == self.cgen and st:valid(inst.p) then return st end
  compile = compile or require "nm.compile"
  local def = inst.def
  st = compile.state_step{step = def.step, s = d.s, p = inst.p, name = def.name,
                          source = debug.getinfo(def.step, "S").short_src,
                          equation = def.equation, views = {e_t = "e"}, scratch = {"e"},
                          dtype = self.dtype}
  d.cstep, d.cgen, d.call = st, self.cgen, nil
  return st
end
mc.compiled_step = compiled_step

-- mc.emit(def) prints the C that nm.compile generates from a circuit rule
-- of this model: its step on each pathway it drives (layer 1 of the
-- 30-50-10 network of Fig. 2, full dynamics), then on the first pathway
-- in the steady state (a batch of 10): `neuromic --emit rules/x.lua`.
function mc.emit(def)
  local rules, eta = {}, {}
  for _, kind in ipairs(def.pathways or {def.pathway}) do rules[kind] = def; eta[kind] = 0.001 end
  local parts = {}
  local function add(d, net, what)
    local st = compiled_step(net, d)
    local src = st:source()
    if #parts > 0 then                       -- the element functions once
      src = src:match("^(.-\n)#include") .. src:match("(int nm_rule_kernel%(.*)$")
    end
    parts[#parts + 1] = format("/* ---- %s: %s, layer %d */\n%s", def.name, what, d.s.layer, src)
  end
  local net = mc.new{sizes = {30, 50, 10}, gen = nm.generator(1), eta = eta, rules = rules}
  net:handle()
  for _, d in ipairs(net.dyn) do
    if d.s.layer == 1 and rules[d.s.pathway] then add(d, net, d.s.pathway .. ", full dynamics") end
  end
  local steady = mc.new{sizes = {30, 50, 10}, gen = nm.generator(1), eta = eta, rules = rules,
                        mode = "steady"}
  local bs = steady:buffers(10)
  for _, d in ipairs(bs.s) do
    if d.s.layer == 1 and rules[d.s.pathway] then
      add(d, steady, d.s.pathway .. ", steady state, batch of 10")
      break
    end
  end
  io.stdout:write(table.concat(parts, "\n"))
end

local function effective_eta(conn)
  if conn.plastic == false then return 0 end
  return conn.rule.p.eta
end

-- The C object bound to this network's tensors (made on first use).
function Net:handle()
  if self.mc then return self.mc end
  if self.dtype ~= "float64" then
    fail("the full dynamics need dtype = 'float64' (float32 networks run the steady state only)", 3)
  end
  local p = self.p
  local spec = {sizes = {}, r0 = self.r0, ut = self.ut, layers = {}}
  for k = 0, self.N do spec.sizes[k + 1] = self.sizes[k] end
  for k, v in pairs(p) do spec[k] = v end
  self.etas = {}
  for k = 1, self.N do
    local up, py = self.up[k], self.pyr[k]
    local L = {u = py.u, r = py.r, vB = py.vB, W_up = up.W, D_up = up.state.D,
               b_up = up.b, Db_up = up.state.Db, eta_up = effective_eta(up)}
    self.etas[#self.etas + 1] = {k, "up", up, L.eta_up}
    if k < self.N then
      local dn, ip, pi, it = self.down[k], self.ip[k], self.pi[k], self.int[k]
      L.vA, L.vD, L.uI, L.rI, L.vI = py.vA, py.vD, it.u, it.r, it.v
      L.W_down, L.D_down, L.eta_down = dn.W, dn.state.D, effective_eta(dn)
      L.W_pi, L.D_pi, L.eta_pi = pi.W, pi.state.D, effective_eta(pi)
      L.W_ip, L.D_ip, L.eta_ip = ip.W, ip.state.D, effective_eta(ip)
      L.b_ip, L.Db_ip = ip.b, ip.state.Db
      self.etas[#self.etas + 1] = {k, "down", dn, L.eta_down}
      self.etas[#self.etas + 1] = {k, "pi", pi, L.eta_pi}
      self.etas[#self.etas + 1] = {k, "ip", ip, L.eta_ip}
    end
    spec.layers[k] = L
  end
  self.mc = nm.kernels.microcircuit(spec)
  -- the rule states of the full dynamics: rows of one sample, views of the
  -- vectors the C object works on
  local function row(v) return v:view(1, v:size(1)) end
  local ones = nm.ones(1, "float64")
  self.dyn = {}
  for k = 1, self.N do
    local py, below = self.pyr[k], k == 1 and self.r0 or self.pyr[k - 1].r
    local function st(kind, t)
      t.ones, t.e = ones, nm.zeros(1, t.post:size(2), "float64")
      self.dyn[#self.dyn + 1] = {conn = self[kind][k], s = rule_state(self, kind, k, t)}
    end
    st("up", {pre = row(below), post = row(py.r), u = row(py.u), v = row(py.vB)})
    if k < self.N then
      local it, above = self.int[k], self.pyr[k + 1]
      st("ip", {pre = row(py.r), post = row(it.r), u = row(it.u), v = row(it.v)})
      st("pi", {pre = row(it.r), post = row(py.r), u = row(py.u), v = row(py.vA)})
      st("down", {pre = row(above.r), post = row(py.r), u = row(py.u), v = row(py.vD)})
    end
  end
  self.active = {}
  return self.mc
end

-- Hands changed learning rates and plastic switches to the C object.
local function sync_etas(self, h)
  for _, e in ipairs(self.etas) do
    local eta = effective_eta(e[3])
    if eta ~= e[4] then
      h:set_eta(e[1], e[2], eta)
      e[4] = eta
    end
  end
end

-- Changes constants (dt, conductances, sigma, noise, tau_in, tau_trgt, tau_w; rate
-- function parameters gamma, beta, theta) for both modes.
function Net:set(o)
  for k, v in pairs(o) do
    if self.p[k] == nil or k == "rate" then fail(format("set: unknown constant '%s'", tostring(k)), 2) end
    if type(v) ~= type(self.p[k]) then fail(format("set: '%s' must be a %s", k, type(self.p[k])), 2) end
  end
  if self.mc then self.mc:set(o) end
  for k, v in pairs(o) do self.p[k] = v end
  self.f = nil
  for _, kind in ipairs(KINDS) do
    for _, c in pairs(self[kind]) do
      if c.rule.def.params.dt then c.rule.p.dt = self.p.dt end
      if self.mode == "dynamics" and c.rule.def.params.tau_w then c.rule.p.tau_w = self.p.tau_w end
    end
  end
  for _, st in ipairs(self.rule_states) do st.c = attenuation(self, st.pathway, st.layer) end
  self.cgen = self.cgen + 1            -- compiled steps traced with the old constants
  return self
end

-- net:run(x, steps [, target [, opts]]): `steps` Euler steps of the full
-- dynamics with input rates x [n0] and target potentials [nN] (nil: the
-- output is not nudged). opts.learn = false switches plasticity off (as
-- does rule.set_learning(false)); opts.gen replaces the noise generator.
-- Allocates nothing.
function Net:run(x, steps, target, opts)
  local h = self:handle()
  sync_etas(self, h)
  local learn = rule.learning() and not (opts and opts.learn == false)
  if x ~= self.xbuf then self.xbuf:copy(x) end
  local t = nil
  if target then
    if target ~= self.tbuf then self.tbuf:copy(target) end
    t = self.tbuf
  end
  local g = opts and opts.gen or self.noise_gen
  -- the connections that learn, and whether the C loop runs all of them
  -- (their compiled steps bound to it)
  local active, fused = self.active, true
  for i = #active, 1, -1 do active[i] = nil end
  for _, d in ipairs(self.dyn) do
    local on = learn and effective_eta(d.conn) ~= 0
    if on and self.compiled then
      local inst = d.conn.rule
      local st = compiled_step(self, d)
      if d.call then
        d.call:set_scalars(st:scalar_values(inst.p))
      else
        d.call = st:bind(inst.p)
        h:set_rule(d.s.layer, d.s.pathway, d.call)
      end
      fused = fused and d.call ~= nil
    elseif d.call then                         -- off, or compiled off: unbound
      h:set_rule(d.s.layer, d.s.pathway, nil)
      d.call = nil
    end
    if on then
      active[#active + 1] = d
      fused = fused and self.compiled
    end
  end
  if fused then
    h:run(steps, self.xbuf, t, g, learn)
    return self
  end
  for _ = 1, steps do
    h:begin_step(self.xbuf, t)
    for i = 1, #active do
      local d = active[i]
      local inst = d.conn.rule
      if self.compiled and d.cstep:compiled() then d.cstep:run(inst.p)
      else inst.def.step(d.s, inst.p) end
    end
    h:end_step(t ~= nil, g)
  end
  h:finish()
  return self
end

-- Rates and dendritic potentials from the present state (after a change
-- of weights or potentials by hand).
function Net:refresh()
  self:handle():refresh()
  return self
end

-- Potentials, low-pass state and traces to zero (weights kept).
function Net:reset_state()
  self.r0:zero(); self.ut:zero()
  for k = 1, self.N do
    local py = self.pyr[k]
    py.u:zero()
    if self.int[k] then self.int[k].u:zero() end
  end
  for _, kind in ipairs(KINDS) do
    for _, c in pairs(self[kind]) do
      c.state.D:zero()
      if c.state.Db then c.state.Db:zero() end
    end
  end
  if self.mc then self.mc:refresh() end
  return self
end

-- Per hidden layer ||vA_k||^2 of the full dynamics state, and their sum.
function Net:apical_energy()
  local out, sum = {}, 0
  for k = 1, self.N - 1 do
    local v = self.pyr[k].vA
    out[k] = v:dot(v)
    sum = sum + out[k]
  end
  return sum, out
end

-- Per hidden layer ||u_{k+1} - uI_k||^2 of the full dynamics state, and
-- their sum.
function Net:interneuron_mismatch()
  local out, sum = {}, 0
  for k = 1, self.N - 1 do
    local it = self.int[k]
    it.diff = it.diff or it.u:clone()
    it.diff:sub(self.pyr[k + 1].u, it.u)
    out[k] = it.diff:dot(it.diff)
    sum = sum + out[k]
  end
  return sum, out
end

-- ---------------------------------------------------------------- rate function

-- Y = phi(U) elementwise for tensors of either dtype. Allocates nothing.
function Net:phi(Y, U)
  local p = self.p
  Y:sub(U, p.theta)
  if p.beta ~= 1 then Y:scale(p.beta) end
  if p.rate == "softplus" then Y:softplus() else Y:sigmoid() end
  if p.gamma ~= 1 then Y:scale(p.gamma) end
  return Y
end

-- D = phi'(U). Allocates nothing.
function Net:dphi(D, U)
  local p = self.p
  D:sub(U, p.theta)
  if p.beta ~= 1 then D:scale(p.beta) end
  if p.rate == "softplus" then D:sigmoid() else D:dsigmoid() end
  D:scale(p.gamma * p.beta)
  return D
end

-- The rate function of a soma at c times its input, phi(c a), as an nn
-- activation {f, df} (nm.nn), so that a network trained by BP or FA
-- computes the function of this microcircuit's feed-forward pass (c = cB,
-- cB_out of net:factors(); 1: none). Allocates nothing.
function Net:activation(c)
  c = c or 1
  local net = self
  return {
    f = function(y, a) net:phi(y:scale(a, c), y) end,
    df = function(d, a)
      net:dphi(d:scale(a, c), d)
      if c ~= 1 then d:scale(c) end
    end,
  }
end

-- U = phi^-1(Y): the potentials whose rates are Y (0 < Y/gamma, and < 1
-- for the logistic). Allocates nothing.
function Net:phi_inverse(U, Y)
  local p = self.p
  U:scale(Y, 1 / p.gamma)
  if p.rate == "softplus" then
    U:exp():sub(1):log()                          -- log(e^y - 1)
  else
    U:div(1, U):sub(1):log():neg()                -- logit(y) = -log(1/y - 1)
  end
  U:scale(1 / p.beta):add(p.theta)
  return U
end

-- ---------------------------------------------------------------- steady state

-- Batch buffers (rows are samples) for batch size B, and the rule
-- states of every connection (bs.s). Made once per batch size, by
-- self.zeros(B, m) when set (nm.unroll traces the steady state on traced
-- tensors), else nm.zeros.
function Net:buffers(B)
  local bs = self.bufs[B]
  if bs then return bs end
  local dt, N, n = self.dtype, self.N, self.sizes
  local zeros = self.zeros
  local function z(m) return zeros and zeros(B, m) or nm.zeros(B, m, dt) end
  bs = {B = B, ones = nm.ones(B, dt), R = {}, VB = {}, U = {}, E = {},
        VI = {}, UI = {}, RI = {}, EI = {}, VA = {}, VD = {}, ED = {}, EA = {}, s = {}}
  bs.R[0] = z(n[0])
  bs.UT = z(n[N])
  for k = 1, N do
    bs.VB[k], bs.U[k], bs.R[k], bs.E[k] = z(n[k]), z(n[k]), z(n[k]), z(n[k])
    if k < N then
      local m = n[k + 1]
      bs.VI[k], bs.UI[k], bs.RI[k], bs.EI[k] = z(m), z(m), z(m), z(m)
      bs.VA[k], bs.VD[k], bs.ED[k], bs.EA[k] = z(n[k]), z(n[k]), z(n[k]), z(n[k])
    end
  end
  for k = 1, N do
    local function st(kind, t)
      t.ones = bs.ones
      bs.s[#bs.s + 1] = {conn = self[kind][k], s = rule_state(self, kind, k, t)}
    end
    st("up", {pre = bs.R[k - 1], post = bs.R[k], u = bs.U[k], v = bs.VB[k], e = bs.E[k]})
    if k < N then
      st("ip", {pre = bs.R[k], post = bs.RI[k], u = bs.UI[k], v = bs.VI[k], e = bs.EI[k]})
      st("pi", {pre = bs.RI[k], post = bs.R[k], u = bs.U[k], v = bs.VA[k], e = bs.EA[k]})
      st("down", {pre = bs.R[k + 1], post = bs.R[k], u = bs.U[k], v = bs.VD[k], e = bs.ED[k]})
    end
  end
  self.bufs[B] = bs
  return bs
end

local function check_batch(self, X, what, n)
  if not rule.is_tensor(X) or X:dim() ~= 2 or X:size(2) ~= n then
    local got = nm.is_tensor(X) and "[" .. table.concat(X:size(), " x ") .. "]" or type(X)
    fail(format("%s must be a [B x %d] tensor, got %s", what, n, got), 3)
  end
end

-- Basal (and interneuron dendritic) input of layer k from the rates below.
local function basal(self, bs, k)
  local c = self.up[k]
  bs.VB[k]:addmm(1, bs.R[k - 1], c.Wt, 0)
  if c.b then bs.VB[k]:addr(1, bs.ones, c.b) end
end

local function dendrite(self, bs, k)
  local c = self.ip[k]
  bs.VI[k]:addmm(1, bs.R[k], c.Wt, 0)
  if c.b then bs.VI[k]:addr(1, bs.ones, c.b) end
end

-- The feed-forward pass of the self-predicting network: u_k = cB_k W_up[k]
-- r_{k-1} (+ b), r_k = phi(u_k), output u_N = cB_N vB_N. Returns the output
-- rates [B x nN] (a buffer). Allocates nothing after the first call per
-- batch size.
function Net:forward(X)
  check_batch(self, X, "input", self.sizes[0])
  local bs = self:buffers(X:size(1))
  local f, N = self:factors(), self.N
  bs.R[0]:copy(X)
  for k = 1, N do
    basal(self, bs, k)
    bs.U[k]:scale(bs.VB[k], k < N and f.cB or f.cB_out)
    self:phi(bs.R[k], bs.U[k])
    if k < N then
      dendrite(self, bs, k)
      bs.UI[k]:scale(bs.VI[k], f.cD)
    end
  end
  self.cur = bs
  return bs.R[N]
end

-- net:steady_state(X [, UT [, sweeps]]): the fixed point of every
-- compartment for the inputs X [B x n0] and target potentials UT [B x nN]
-- (nil: no target). One sweep is the paper's simplified dynamics:
--   forward, k = 1..N-1: u_k = cB vB_k, uI_k = cD vI_k;
--   output: u_N = (1 - lambda_N) cB_N vB_N + lambda_N u_trgt;
--   backward, k = N-1..1: uI_k = (1 - lambda_I) cD vI_k + lambda_I u_{k+1},
--     vA_k = W_down[k] phi(u_{k+1}) + W_pi[k] phi(uI_k), u_k = cB vB_k + lambda_k vA_k.
-- Further sweeps recompute vB and vI from the rates of the last sweep and
-- repeat output and backward: a fixed-point iteration that converges to
-- the steady state of the full dynamics. Buffers (bs.U, bs.R, bs.VA, ...)
-- hold the result. Allocates nothing after the first call per batch size.
function Net:steady_state(X, UT, sweeps)
  check_batch(self, X, "input", self.sizes[0])
  local B, N = X:size(1), self.N
  if UT then check_batch(self, UT, "target", self.sizes[N]) end
  if UT and UT:size(1) ~= B then fail("target and input have different batch sizes", 2) end
  local bs = self:buffers(B)
  local f = self:factors()
  sweeps = sweeps or 1
  bs.R[0]:copy(X)
  if UT then bs.UT:copy(UT) end
  for s = 1, sweeps do
    for k = 1, N do
      basal(self, bs, k)
      if s == 1 and k < N then
        bs.U[k]:scale(bs.VB[k], f.cB)
        self:phi(bs.R[k], bs.U[k])
      end
      if k < N then
        dendrite(self, bs, k)
        if s == 1 then bs.UI[k]:scale(bs.VI[k], f.cD) end
      end
    end
    local UN = bs.U[N]
    if UT then
      UN:scale(bs.VB[N], (1 - f.lambda_out) * f.cB_out)
      UN:axpy(f.lambda_out, bs.UT)
    else
      UN:scale(bs.VB[N], f.cB_out)
    end
    self:phi(bs.R[N], UN)
    for k = N - 1, 1, -1 do
      bs.UI[k]:scale(bs.VI[k], (1 - f.lambda_I) * f.cD)
      bs.UI[k]:axpy(f.lambda_I, bs.U[k + 1])
      self:phi(bs.RI[k], bs.UI[k])
      bs.VD[k]:addmm(1, bs.R[k + 1], self.down[k].Wt, 0)
      bs.VA[k]:copy(bs.VD[k])
      bs.VA[k]:addmm(1, bs.RI[k], self.pi[k].Wt, 1)
      bs.U[k]:scale(bs.VB[k], f.cB)
      bs.U[k]:axpy(f.lambda, bs.VA[k])
      self:phi(bs.R[k], bs.U[k])
    end
  end
  self.cur = bs
  return bs
end

-- Stops training (an error, one line) when a plastic weight or bias of
-- the steady state became NaN or infinite, naming the connection, its rule
-- and the minibatch updates since the last check. Net:steady_update calls
-- it once at least check_every samples were trained on since the last
-- check (a pass over every plastic weight). Allocates nothing.
function Net:check_finite()
  local from = self.checked + 1
  self.checked, self.unchecked = self.updates, 0
  for _, kind in ipairs(KINDS) do
    for k, c in pairs(self[kind]) do
      if c.plastic ~= false then
        local what = not c.W:all_finite() and "weights" or
                     (c.b and not c.b:all_finite() and "biases") or nil
        if what then
          local at = from >= self.updates and format("at minibatch update %d", self.updates) or
                     format("between minibatch updates %d and %d", from, self.updates)
          fail(format("steady_update: rule '%s' made the %s of W_%s%d non-finite %s (a NaN or " ..
                      "infinite input or target, or learning rates too large)", c.rule.name, what,
                      kind, k, at), 3)
        end
      end
    end
  end
end

-- Applies every connection's rule once (its step) to the state of the
-- last steady_state call, every change the batch mean. Respects plastic
-- switches. Then checks the weights are finite (Net:check_finite), every
-- check_every samples. Allocates nothing.
function Net:steady_update()
  local bs = self.cur
  if not bs then fail("steady_update before steady_state", 2) end
  if not rule.learning() then return end
  for _, d in ipairs(bs.s) do
    local inst = d.conn.rule
    if d.conn.plastic ~= false then
      local st = self.compiled and compiled_step(self, d)
      if st and st:compiled() then st:run(inst.p) else inst.def.step(d.s, inst.p) end
    end
  end
  self.updates = self.updates + 1
  self.unchecked = self.unchecked + bs.B
  if self.unchecked >= self.check_every then self:check_finite() end
end

-- steady_state + steady_update on one minibatch.
function Net:train_batch(X, UT, sweeps)
  self:steady_state(X, UT, sweeps)
  self:steady_update()
end

-- Batch means of ||vA_k||^2 (per hidden layer) and of ||u_{k+1} - uI_k||^2
-- for the last steady_state call; sums over layers first.
function Net:steady_measures()
  local bs = self.cur
  if not bs then fail("steady_measures before steady_state", 2) end
  local va, mm, sa, sm = {}, {}, 0, 0
  for k = 1, self.N - 1 do
    va[k] = bs.VA[k]:dot(bs.VA[k]) / bs.B
    bs.EI[k]:sub(bs.U[k + 1], bs.UI[k])
    mm[k] = bs.EI[k]:dot(bs.EI[k]) / bs.B
    sa, sm = sa + va[k], sm + mm[k]
  end
  return sa, sm, va, mm
end

-- Number of rows of X whose feed-forward output argmax equals the label
-- (labels: a Lua list of 1-based classes), over batches of `batch` rows.
function Net:correct(X, labels, batch)
  batch = batch or 1000
  local n, first, N = 0, 1, X:size(1)
  while first <= N do
    local rows = math.min(batch, N - first + 1)
    local Y = self:forward(X:narrow(1, first, rows))
    local pred = self.cur.pred
    if not pred or pred:size(1) ~= rows then pred = nm.zeros(rows, "float64"); self.cur.pred = pred end
    pred:argmax(Y, 2)
    for i = 1, rows do if pred:get(i) == labels[first + i - 1] then n = n + 1 end end
    first = first + rows
  end
  return n
end

-- ---------------------------------------------------------------- state

-- Everything a checkpoint needs: weights, biases, traces, potentials.
function Net:state()
  local st = {conns = {}, r0 = self.r0, ut = self.ut, pyr = {}, int = {}}
  for _, kind in ipairs(KINDS) do
    st.conns[kind] = {}
    for k, c in pairs(self[kind]) do st.conns[kind][k] = c:state_table() end
  end
  for k = 1, self.N do
    st.pyr[k] = {u = self.pyr[k].u}
    if self.int[k] then st.int[k] = {u = self.int[k].u} end
  end
  return st
end

function Net:load_state(st)
  for _, kind in ipairs(KINDS) do
    for k, c in pairs(self[kind]) do
      local s = st.conns and st.conns[kind] and st.conns[kind][k]
      if not s or not s.W:same_shape(c.W) then
        fail(format("load_state: no matching weights for W_%s%d", kind, k), 2)
      end
      c:load_state_table(s)
    end
  end
  self.r0:copy(st.r0); self.ut:copy(st.ut)
  for k = 1, self.N do
    self.pyr[k].u:copy(st.pyr[k].u)
    if self.int[k] then self.int[k].u:copy(st.int[k].u) end
  end
  if self.mc then self.mc:refresh() end
end

-- "30-50-10 microcircuit (softplus, dynamics)".
function Net:describe()
  local s = {}
  for k = 0, self.N do s[#s + 1] = tostring(self.sizes[k]) end
  return format("%s microcircuit (%s, %s, %s)", table.concat(s, "-"), self.p.rate, self.mode, self.dtype)
end

return mc
