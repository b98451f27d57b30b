-- nm/folded_ae.lua: the energy-based folded autoencoder (Dold, Sacramento,
-- Kungl, Senn & Petrovici, poster; doc/models/folded_ae.md).
--
-- Areas i = 0..N; area 0 holds the data. Every area's neurons carry both
-- paths ("folded"): basal dendrites get the discriminative prediction
-- W_i r_{i-1} (i >= 1), apical dendrites the generative prediction
-- G_i r_{i+1} (i <= N-1); r_i = phi(u_i). The energy (poster, section 3)
--
--   E(u) = lambda/2 sum_{i=1..N} ||u_i - W_i r_{i-1}||^2
--        + (1-lambda)/2 sum_{i=0..N-1} ||u_i - G_i r_{i+1}||^2 + beta C,
--   C = ||u_0 - x||^2,
--
-- drives the potentials, tau du_i/dt = -dE/du_i, with e^W_i = u_i - W_i r_{i-1}
-- and e^G_i = u_i - G_i r_{i+1}:
--
--   -dE/du_i = -lambda e^W_i - (1-lambda) e^G_i
--              + phi'(u_i) .* (lambda W_{i+1}^T e^W_{i+1} + (1-lambda) G_{i-1}^T e^G_{i-1})
--              [- 2 beta (u_0 - x) at area 0]
--
-- Once the state has settled to a fixed point, the weights learn by one
-- circuit rule of model "folded_ae" per pathway, "W" (basal) and "G"
-- (apical): by default rules/folded_ae.lua, dW_i = eta_W e^W_i r_{i-1}^T,
-- dG_i = eta_G e^G_i r_{i+1}^T; option rules = {W = r, G = r} takes any
-- other (a name from rules/, a path, a definition or an nm.rule instance;
-- a name or definition with a parameter eta gets eta_W or eta_G). The
-- rule's state of dendrite V (W_i or G_i) at a batch of B rows: e (the
-- mismatch [B x n_post]), e_t (its transpose), r (presynaptic rates), u
-- (postsynaptic potentials), V, dV (the change step writes), batch.
--
--   local fae = require "nm.models.folded_ae"
--   local net = fae.new{sizes = {784, 256, 64}, lambda = 0.1, gen = nm.generator(1)}
--   local info = net:train_batch(X)        -- X [B x 784]: settle, then learn
--   local Z = net:encode(X)                -- W path (lambda = 1): top code [B x 64]
--   local Xr = net:decode(Z)               -- G path (lambda = 0): [B x 784]
--
-- Minibatches are rows; the samples of a batch settle together (the
-- dynamics of one sample do not depend on the others) and the rules use
-- batch means. Buffers are made once per batch size: settle, learn,
-- encode and decode allocate nothing after the first call with a given
-- batch size.
--
-- Which parts are the poster's and which are ours (see README):
--   poster: the energy, the gradient dynamics, lambda, beta, C, the two
--     plasticity rules, the five-compartment form (form = "compartments")
--     and its constants g_l, g_e, gamma = 1 + g_e/g_l, the test (encode with
--     W at lambda = 1, decode with G at lambda = 0).
--   ours: which areas carry which terms at the ends of the hierarchy (area 0
--     has no W term, the top area no G term: E above); in the compartment
--     form a dendrite without input is a compartment at potential 0, which
--     adds a leak of the top code, (1-lambda)/2 ||u_N||^2, to E, and the
--     nudging enters as a conductance 2 beta (g_l + g_e) towards x; the
--     linear input area (phi_input = "identity"), the hard clamp u_0 = x as
--     the beta -> infinity limit (clamp = "hard", default), the initial
--     state (the W-path sweep), the numerical solvers (Euler steps of the
--     dynamics, or the same gradient with heavy-ball momentum and restarts,
--     which reaches the same fixed points faster; dt halved when the energy
--     rises), the tolerance and iteration cap, minibatches, the weight
--     initialisation, the optional optimiser on the rules' changes, the
--     measures (reconstruction_grad, g_alignment, forward_mismatch,
--     curvature_bound).

local nm = require "neuromic"
local rule = require "nm.rule"
local nn = require "nm.nn"

local folded = nm.kernels.folded             -- fused kernels (csrc/models/nm_folded.c)
-- Rate functions the fused kernel (nm.kernels.folded.rates) knows.
local FUSED_PHI = {identity = true, tanh = true, sigmoid = true, softplus = true, relu = true}

local fae = {}

local format, huge, sqrt, max, abs = string.format, math.huge, math.sqrt, math.max, math.abs

local Net = {}
Net.__index = Net
fae.Net = Net

-- Options and their defaults (fae.new, and per call for settle).
fae.defaults = {
  sizes = {784, 256, 64},
  phi = "tanh",            -- rate function of areas 1..N (an nm.nn activation)
  phi_input = "identity",  -- of area 0 (ours: the data area is linear)
  lambda = 0.1,            -- gating: forward (W) terms vs backward (G) terms
  beta = 1,                -- weight of C = ||u_0 - x||^2 with clamp = "soft"
  clamp = "hard",          -- "hard": u_0 = x; "soft": beta C; "none": area 0 free
  form = "energy",         -- "energy" (explicit errors) | "compartments" (poster)
  g_l = 1, g_e = 0.1,      -- leak and error-compartment conductances (compartments)
  tau = 1,                 -- membrane time constant
  solver = "momentum",     -- "euler" (the dynamics as they are) | "momentum"
  dt = 0.2,                -- step, in the units of tau
  momentum = 0.9,          -- heavy-ball coefficient of solver = "momentum"
  adapt = true,            -- halve dt when the energy rises (restart the momentum)
  tol = 1e-3,              -- converged when max |dE/du| <= tol
  max_iter = 400,          -- iteration cap per settle (then: counted as not converged)
  settle_steps = false,    -- n: settle by exactly n plain Euler steps (fae.fixed_settle)
  start = "forward",       -- initial state: "forward" (W path), "zero", "keep"
  schedule = "fixed_point",-- plasticity after settling, or "continuous" (every step)
  eta_W = 0.01, eta_G = 0.01,
  init = "pytorch", init_scale = 1,
  dtype = "float32",
  fused = true,            -- C kernels (nm.kernels.folded) for rates, mismatches, velocities, steps
}

local CHOICES = {
  clamp = {hard = true, soft = true, none = true},
  form = {energy = true, compartments = true},
  solver = {euler = true, momentum = true},
  start = {forward = true, zero = true, keep = true},
  schedule = {fixed_point = true, continuous = true},
}

local function check_choice(o, k)
  if not CHOICES[k][o[k]] then
    local names = {}
    for n in pairs(CHOICES[k]) do names[#names + 1] = n end
    table.sort(names)
    error(format("folded_ae: option '%s' must be one of %s, got '%s'", k,
                 table.concat(names, ", "), tostring(o[k])), 4)
  end
end

local function check_number(o, k, lo, hi, open_lo)
  local v = o[k]
  if type(v) ~= "number" or v ~= v or v < lo or (open_lo and v == lo) or (hi and v > hi) then
    error(format("folded_ae: option '%s' must be a number %s %s%s, got %s", k,
                 open_lo and ">" or ">=", tostring(lo), hi and (" and <= " .. tostring(hi)) or "",
                 tostring(v)), 4)
  end
end

-- Validates a settings table (all keys present).
local function check_settings(o)
  check_number(o, "lambda", 0, 1)
  check_number(o, "beta", 0)
  check_number(o, "g_l", 0, nil, true)
  check_number(o, "g_e", 0, nil, true)
  check_number(o, "tau", 0, nil, true)
  check_number(o, "dt", 0, nil, true)
  check_number(o, "momentum", 0, 0.999)
  check_number(o, "tol", 0)
  if math.type(o.max_iter) ~= "integer" or o.max_iter < 0 then
    error(format("folded_ae: option 'max_iter' must be an integer >= 0, got %s",
                 tostring(o.max_iter)), 3)
  end
  for k in pairs(CHOICES) do check_choice(o, k) end
  local n = o.settle_steps
  if n ~= false and (math.type(n) ~= "integer" or n < 0) then
    error(format("folded_ae: option 'settle_steps' must be false or an integer >= 0, got %s",
                 tostring(n)), 3)
  end
  if n and o.schedule == "continuous" then
    error("folded_ae: settle_steps needs schedule 'fixed_point'", 3)
  end
  if o.schedule == "continuous" and o.solver ~= "euler" then
    error("folded_ae: schedule 'continuous' needs solver 'euler' (plasticity runs along the dynamics)", 3)
  end
end

local SETTINGS = {"lambda", "beta", "clamp", "form", "g_l", "g_e", "tau", "solver", "dt",
                  "momentum", "adapt", "tol", "max_iter", "settle_steps", "start", "schedule"}

-- ---------------------------------------------------------------- construction

-- The rule instance of pathway `path` ("W" or "G") from option value r.
local function pathway_rule(r, path, eta)
  if rule.is_rule(r) then return r end
  local ok, def = pcall(rule.definition, r or "folded_ae")
  if ok then ok, def = pcall(rule.require_kind, def, "circuit", "folded_ae") end
  if not ok then error("folded_ae.new: " .. tostring(def), 3) end
  local drives = def.pathway == path
  for _, n in ipairs(def.pathways or {}) do drives = drives or n == path end
  if not drives then
    error(format("folded_ae.new: rule '%s' does not drive pathway %s", def.name, path), 3)
  end
  local okp, inst = pcall(rule.new, def, def.params.eta and {eta = eta} or nil)
  if not okp then error("folded_ae.new: " .. tostring(inst), 3) end
  return inst
end

-- fae.new{sizes = {n_0, ..., n_N}, gen = generator, ...options above}.
-- Fields: N, sizes[0..N], W[1..N] ([n_i x n_{i-1}]), G[0..N-1]
-- ([n_i x n_{i+1}]), o (the settings), stats (settling counts).
function fae.new(o)
  if type(o) ~= "table" then error("folded_ae.new: options table expected", 2) end
  local s = {}
  for k, v in pairs(fae.defaults) do s[k] = v end
  for k, v in pairs(o) do
    if fae.defaults[k] == nil and k ~= "gen" and k ~= "optim" and k ~= "rules" then
      local names = {}
      for n in pairs(fae.defaults) do names[#names + 1] = n end
      table.sort(names)
      error(format("folded_ae.new: unknown option '%s' (options: gen, optim, rules, %s)", tostring(k),
                   table.concat(names, ", ")), 2)
    end
    s[k] = v
  end
  local sizes = s.sizes
  if type(sizes) ~= "table" or #sizes < 2 then
    error("folded_ae.new: sizes = {n_0, n_1, ...} with at least two areas expected", 2)
  end
  for i, n in ipairs(sizes) do
    if math.type(n) ~= "integer" or n < 1 then
      error(format("folded_ae.new: sizes[%d] must be a positive integer", i), 2)
    end
  end
  check_settings(s)
  check_number(s, "eta_W", 0)
  check_number(s, "eta_G", 0)
  if s.dtype ~= "float32" and s.dtype ~= "float64" then
    error("folded_ae.new: dtype must be 'float32' or 'float64'", 2)
  end
  if s.init ~= "zeros" and not o.gen then
    error("folded_ae.new: gen (nm.generator) is needed to draw the weights", 2)
  end
  local act = nn.activation(s.phi, "rate")
  local act0 = nn.activation(s.phi_input, "input rate")
  if not act.elementwise or not act0.elementwise then
    error("folded_ae.new: rate functions must be elementwise (not softmax)", 2)
  end
  local N = #sizes - 1
  local net = setmetatable({N = N, sizes = {}, o = s, dtype = s.dtype, acts = {}, W = {}, G = {},
                            fused = s.fused and FUSED_PHI[act.name] and FUSED_PHI[act0.name] or false,
                            Wt = {}, Gt = {}, cW = {}, cG = {}, bufs = {}, optim = o.optim,
                            info = {}, params = {}, deltas = {}, active = {}}, Net)
  for i = 0, N do net.sizes[i] = sizes[i + 1] end
  net.acts[0] = act0
  for i = 1, N do net.acts[i] = act end
  local dt = s.dtype
  for i = 1, N do                         -- W_i: area i-1 -> basal dendrites of area i
    net.W[i] = nm.zeros(net.sizes[i], net.sizes[i - 1], dt)
    nn.init_weights(net.W[i], nil, s.init, o.gen, {scale = s.init_scale})
  end
  for i = 0, N - 1 do                     -- G_i: area i+1 -> apical dendrites of area i
    net.G[i] = nm.zeros(net.sizes[i], net.sizes[i + 1], dt)
    nn.init_weights(net.G[i], nil, s.init, o.gen, {scale = s.init_scale})
  end
  local rules = o.rules or {}
  if type(rules) ~= "table" or rule.is_rule(rules) then
    error("folded_ae.new: option rules must be a table {W = rule, G = rule}", 2)
  end
  for k in pairs(rules) do
    if k ~= "W" and k ~= "G" then
      error(format("folded_ae.new: rules has no pathway '%s' (W, G)", tostring(k)), 2)
    end
  end
  net.rules = {W = pathway_rule(rules.W, "W", s.eta_W), G = pathway_rule(rules.G, "G", s.eta_G)}
  for i = 1, N do
    net.Wt[i] = net.W[i]:t()
    net.cW[i] = {V = net.W[i], name = "W" .. i, plastic = true, dV = net.W[i]:clone():zero()}
    net.params[#net.params + 1] = net.W[i]
  end
  for i = 0, N - 1 do
    net.Gt[i] = net.G[i]:t()
    net.cG[i] = {V = net.G[i], name = "G" .. i, plastic = true, dV = net.G[i]:clone():zero()}
    net.params[#net.params + 1] = net.G[i]
  end
  net:reset_stats()
  return net
end

-- Settling counts since the last reset: settles, samples, not converged
-- (samples whose max |dE/du| was still above tol at the cap), iterations
-- (summed over settles), dt halvings.
function Net:reset_stats()
  self.stats = {settles = 0, samples = 0, nonconverged = 0, iterations = 0, halvings = 0}
end

function Net:set_optimiser(opt)
  self.optim = opt
  return self
end

-- Switches the plasticity of both paths (or of "W" / "G" only).
function Net:set_plastic(on, path)
  if path ~= "G" then for _, c in pairs(self.cW) do c.plastic = not not on end end
  if path ~= "W" then for _, c in pairs(self.cG) do c.plastic = not not on end end
end

-- ---------------------------------------------------------------- buffers

-- Buffers for batch size B: target X, potentials U, rates R, rate
-- derivatives D, predictions PW (W_i r_{i-1}) and PG (G_i r_{i+1}),
-- mismatches EW and EG, velocities V (du/dt), scratch T, momentum M,
-- per-row residuals, and the rules' states (qW[i], qG[i]). The [B x n]
-- ones are made by self.zeros(B, n) when set (nm.unroll traces a settle
-- and the rules' steps on traced tensors), else nm.zeros.
function Net:buffers(B)
  local bs = self.bufs[B]
  if bs then return bs end
  local N, n, dt = self.N, self.sizes, self.dtype
  local zeros = self.zeros
  local function z(m) return zeros and zeros(B, m) or nm.zeros(B, m, dt) end
  bs = {B = B, U = {}, R = {}, D = {}, PW = {}, PG = {}, EW = {}, EWt = {}, EG = {}, EGt = {},
        V = {}, T = {}, M = {}, Rt = {}, rowmax = {}, qW = {}, qG = {}}
  bs.X = z(n[0])
  bs.NX = z(n[0])                       -- u_0 - x (soft clamp)
  for i = 0, N do
    bs.U[i] = z(n[i])
    local lin = self.acts[i].name == "identity"
    bs.R[i] = lin and bs.U[i] or z(n[i])
    bs.D[i] = z(n[i])
    if lin then bs.D[i]:fill(1) end
    bs.Rt[i] = bs.R[i]:t()
    bs.V[i] = z(n[i])
    bs.T[i] = z(n[i])
    bs.M[i] = z(n[i])
    bs.rowmax[i] = nm.zeros(B, dt)
    if i >= 1 then
      bs.PW[i], bs.EW[i] = z(n[i]), z(n[i])
      bs.EWt[i] = bs.EW[i]:t()
    end
    if i <= N - 1 then
      bs.PG[i], bs.EG[i] = z(n[i]), z(n[i])
      bs.EGt[i] = bs.EG[i]:t()
    end
  end
  bs.rowres, bs.rowmask = nm.zeros(B, dt), nm.zeros(B, dt)
  bs.ones = nm.ones(B, dt)
  local function state(conn, r, e, e_t, u, inst)
    local st = {V = conn.V, dV = conn.dV, e = e, e_t = e_t, r = r, u = u, batch = B}
    if inst.def.init then inst.def.init(st, inst.p) end
    return st
  end
  for i = 1, N do
    bs.qW[i] = state(self.cW[i], bs.R[i - 1], bs.EW[i], bs.EWt[i], bs.U[i], self.rules.W)
  end
  for i = 0, N - 1 do
    bs.qG[i] = state(self.cG[i], bs.R[i + 1], bs.EG[i], bs.EGt[i], bs.U[i], self.rules.G)
  end
  self.bufs[B] = bs
  return bs
end

local function check_rows(self, X, n, what, fname)
  if not rule.is_tensor(X) or X:dim() ~= 2 or X:size(2) ~= n then
    local shape = rule.is_tensor(X) and ("[" .. table.concat(X:size(), " x ") .. "]")
                  or type(X)
    error(format("bad argument #1 to '%s' (%s must be a [B x %d] tensor, got %s)", fname, what,
                 n, shape), 3)
  end
  if X:size(1) < 1 then error(format("bad argument #1 to '%s' (empty batch)", fname), 3) end
  local _ = self
end

-- Rates and their derivatives of area i from its potentials.
local function rates(self, bs, i, deriv)
  local act = self.acts[i]
  if act.name == "identity" then return end          -- R, D set at allocation
  if self.fused then
    folded.rates(bs.R[i], deriv and bs.D[i] or nil, bs.U[i], act.name, act.beta or 1)
    return
  end
  act.f(bs.R[i], bs.U[i], act.beta)
  if deriv then act.df(bs.D[i], bs.U[i], bs.R[i], act.beta) end
end

-- ---------------------------------------------------------------- energy and dynamics

-- e = u - p; returns ||e||^2 (0 on traced tensors: self.traced).
local function mismatch(self, E, U, P)
  if self.fused then return folded.mismatch(E, U, P) end
  E:sub(U, P)
  if self.traced then return 0 end
  return E:dot(E)
end

-- max |V| (NaN when V holds one); 0 on traced tensors (self.traced).
local function vnorm(self, V)
  if self.traced then return 0 end
  return V:norm(huge)
end

-- One evaluation at the current potentials U: rates, predictions,
-- mismatches, the energy (summed over the batch) and the velocities
-- V_i = du_i/dt of the free areas. c: resolved settings; c.free[i] says
-- whether area i moves. Returns E and max |V| over the free areas.
-- Allocates nothing.
local function evaluate(self, bs, c)
  local N, U, R, D, V, T = self.N, bs.U, bs.R, bs.D, bs.V, bs.T
  local PW, PG, EW, EG, NX = bs.PW, bs.PG, bs.EW, bs.EG, bs.NX
  local lam, free = c.lambda, c.free
  for i = 0, N do rates(self, bs, i, free[i]) end
  local E = 0
  for i = 1, N do
    if i > 1 or free[0] or not c.input_fixed then  -- W_1 x is constant under a hard clamp
      PW[i]:addmm(1, R[i - 1], self.Wt[i], 0)        -- basal prediction W_i r_{i-1}
    end
    E = E + 0.5 * lam * mismatch(self, EW[i], U[i], PW[i])
  end
  for i = 0, N - 1 do
    PG[i]:addmm(1, R[i + 1], self.Gt[i], 0)          -- apical prediction G_i r_{i+1}
    E = E + 0.5 * (1 - lam) * mismatch(self, EG[i], U[i], PG[i])
  end
  local soft = c.clamp == "soft"
  if soft then                                       -- beta C, C = ||u_0 - x||^2
    E = E + c.beta * mismatch(self, NX, U[0], bs.X)
  end
  local comp = c.form == "compartments"
  if comp and not self.traced then
    -- Missing dendritic inputs are potentials of 0 that still conduct: the
    -- top apical dendrite adds (1-lambda)/2 ||u_N||^2, area 0's basal one
    -- lambda/2 ||u_0||^2 (when area 0 is not clamped).
    E = E + 0.5 * (1 - lam) * U[N]:dot(U[N])
    if c.clamp ~= "hard" then E = E + 0.5 * lam * U[0]:dot(U[0]) end
  end
  local inv_tau = 1 / c.tau
  local vmax = 0
  for i = 0, N do
    if free[i] then
      local Vi, Ti = V[i], T[i]
      if not comp then
        -- -dE/du_i = -lambda e^W_i - (1-lambda) e^G_i + phi'(u_i) .* (lambda W_{i+1}^T e^W_{i+1}
        --            + (1-lambda) G_{i-1}^T e^G_{i-1})   [- 2 beta (u_0 - x)]
        local back = false
        if i <= N - 1 then Ti:addmm(lam, EW[i + 1], self.W[i + 1], 0); back = true end
        if i >= 1 then Ti:addmm(1 - lam, EG[i - 1], self.G[i - 1], back and 1 or 0); back = true end
        local nudge = (i == 0 and soft) and NX or nil
        if self.fused then
          local m = folded.velocity(Vi, i >= 1 and EW[i] or nil, -lam, i <= N - 1 and EG[i] or nil,
                                    lam - 1, nudge, -2 * c.beta, back and D[i] or nil,
                                    back and Ti or nil, inv_tau)
          if m > vmax or m ~= m then vmax = m end
        else
          if i >= 1 then Vi:scale(EW[i], -lam) else Vi:zero() end
          if i <= N - 1 then Vi:axpy(lam - 1, EG[i]) end
          if nudge then Vi:axpy(-2 * c.beta, nudge) end
          if back then
            Ti:mul(D[i])
            Vi:add(Ti)
          end
          if inv_tau ~= 1 then Vi:scale(inv_tau) end
          local m = vnorm(self, Vi)
          if m > vmax or m ~= m then vmax = m end
        end
      else
        -- Poster's five compartments: soma u, basal v_B = W_i r_{i-1}, apical
        -- v_A = G_i r_{i+1}, and the error compartments
        --   e^W_i = (g_l/g_e) r'_i .* W_{i+1}^T (u_{i+1} - W_{i+1} r_i),
        --   e^G_i = (g_l/g_e) r'_i .* G_{i-1}^T (u_{i-1} - G_{i-1} r_i);
        -- tau du/dt = lambda g_l (gamma v_B - u) + lambda g_e (gamma e^W - u)
        --           + (1-lambda) g_l (gamma v_A - u) + (1-lambda) g_e (gamma e^G - u),
        -- gamma = 1 + g_e/g_l; a compartment without input has potential 0.
        local gl, ge = c.g_l, c.g_e
        local gamma = 1 + ge / gl
        Vi:scale(U[i], -(gl + ge))                   -- the four leaks towards 0 together
        if i == 0 and soft then                      -- nudging towards the data (ours)
          Vi:axpy(-2 * c.beta * (gl + ge), NX)
        end
        if i >= 1 then Vi:axpy(lam * gl * gamma, PW[i]) end
        if i <= N - 1 then Vi:axpy((1 - lam) * gl * gamma, PG[i]) end
        if i <= N - 1 then                           -- e^W_i
          Ti:addmm(gl / ge, EW[i + 1], self.W[i + 1], 0)
          Ti:mul(D[i])
          Vi:axpy(lam * ge * gamma, Ti)
        end
        if i >= 1 then                               -- e^G_i
          Ti:addmm(gl / ge, EG[i - 1], self.G[i - 1], 0)
          Ti:mul(D[i])
          Vi:axpy((1 - lam) * ge * gamma, Ti)
        end
        Vi:scale(inv_tau)
        local m = vnorm(self, Vi)
        if m > vmax or m ~= m then vmax = m end
      end
    end
  end
  return E, vmax
end

-- The speed factor between velocity and -dE/du: du/dt = -(k / tau) dE/du.
local function speed(c)
  if c.form == "compartments" then return c.g_l + c.g_e end
  return 1
end

-- Number of samples whose own max |dE/du| exceeds tol.
local function count_unconverged(self, bs, c, tol)
  local rowres, scale = bs.rowres, c.tau / speed(c)
  rowres:zero()
  for i = 0, self.N do
    if c.free[i] then
      bs.T[i]:abs(bs.V[i])
      bs.rowmax[i]:max(bs.T[i], 2)
      bs.rowmask:lt(rowres, bs.rowmax[i])
      rowres:maskedcopy(bs.rowmask, bs.rowmax[i])
    end
  end
  local bad = 0
  for b = 1, bs.B do
    if rowres:get(b) * scale > tol then bad = bad + 1 end
  end
  return bad
end

-- Resolves the settings of one call: net defaults overridden by o.
local function resolve(self, o)
  local c = self.cur_settings or {}
  self.cur_settings = c
  local base = self.o
  for _, k in ipairs(SETTINGS) do
    local v = o and o[k]
    if v == nil then v = base[k] end
    c[k] = v
  end
  if o then check_settings(c) end
  c.free = c.free or {}
  for i = 0, self.N do c.free[i] = true end
  if c.clamp == "hard" then c.free[0] = false end
  c.top = o and o.top or nil
  if c.top then c.free[self.N] = false end
  c.input_fixed = false                                 -- W_1 x to be computed
  return c
end

-- Sets the initial state of a settle.
local function start_state(self, bs, c)
  local N, U = self.N, bs.U
  if c.start == "forward" then
    U[0]:copy(bs.X)
    for i = 1, N do
      rates(self, bs, i - 1, false)
      U[i]:addmm(1, bs.R[i - 1], self.Wt[i], 0)
    end
  elseif c.start == "zero" then
    for i = 1, N do U[i]:zero() end
    U[0]:copy(bs.X)
  end
  if c.clamp == "hard" then U[0]:copy(bs.X) end
  if c.top then U[N]:copy(c.top) end
end

-- fae.fixed_settle(net, bs, c) -> E, vmax: the truncated settle of
-- settle_steps = n: from the initial state (start), exactly n plain Euler
-- steps u_i += dt du_i/dt of the free areas (no convergence test, no
-- change of dt, no momentum), then one evaluation at the final state (the
-- mismatches the rules read); E and vmax as evaluate's. Net:settle runs it
-- when settle_steps is set; nm.unroll traces it (net.traced: no value
-- tests), so its gradient is exact for this settle, not the adaptive one.
function fae.fixed_settle(net, bs, c)
  start_state(net, bs, c)
  local U, V = bs.U, bs.V
  for _ = 1, c.settle_steps do
    evaluate(net, bs, c)
    c.input_fixed = true
    for i = 0, net.N do
      if c.free[i] then
        if net.fused then folded.step(U[i], nil, V[i], c.dt, 0) else U[i]:axpy(c.dt, V[i]) end
      end
    end
  end
  local E, vmax = evaluate(net, bs, c)
  net.cur = bs
  return E, vmax
end

-- settle's info after fae.fixed_settle.
local function fixed_settle_info(self, bs, c)
  local E, vmax = fae.fixed_settle(self, bs, c)
  local info = self.info
  if self.traced then return info end
  local res = vmax * c.tau / speed(c)
  info.iterations, info.energy, info.residual, info.dt = c.settle_steps, E / bs.B, res, c.dt
  info.converged = res <= c.tol
  info.nonconverged = info.converged and 0 or count_unconverged(self, bs, c, c.tol)
  info.halvings = 0
  local st = self.stats
  st.settles, st.samples = st.settles + 1, st.samples + bs.B
  st.nonconverged = st.nonconverged + info.nonconverged
  st.iterations = st.iterations + c.settle_steps
  return info
end

-- net:settle(X [, o]) -> info. Presents the batch X [B x n_0] and lets the
-- potentials follow tau du/dt = -dE/du (or the compartment dynamics) until
-- max |dE/du| <= tol or max_iter steps. o overrides any setting for this
-- call (lambda, beta, clamp, form, solver, dt, tol, max_iter, start, ...;
-- settle_steps = n: exactly n plain Euler steps instead, fae.fixed_settle)
-- and may give top = Z [B x n_N] to clamp the top area, trace = {} to
-- collect the mean energy per sample after every evaluation, and
-- on_eval = function(net, bs, c) called after every evaluation.
-- info (a table reused by the next call): iterations, energy (mean per
-- sample, at the final state), residual (max |dE/du|), converged (bool),
-- nonconverged (samples above tol), dt (final step). The state stays in
-- the buffers: net:learn() uses it. Allocates nothing after the first call.
function Net:settle(X, o)
  check_rows(self, X, self.sizes[0], "X", "settle")
  local c = resolve(self, o)
  local B = X:size(1)
  local bs = self:buffers(B)
  if c.top then check_rows(self, c.top, self.sizes[self.N], "top", "settle") end
  if c.top and c.top:size(1) ~= B then
    error(format("bad argument #2 to 'settle' (top has %d rows, X has %d)", c.top:size(1), B), 2)
  end
  if X ~= bs.X then bs.X:copy(X) end
  if c.settle_steps then return fixed_settle_info(self, bs, c) end
  start_state(self, bs, c)
  local N, U, V, M = self.N, bs.U, bs.V, bs.M
  local trace, on_eval = o and o.trace, o and o.on_eval
  local heavy = c.solver == "momentum"
  if heavy then for i = 0, N do M[i]:zero() end end
  local dt, m, tol = c.dt, c.momentum, c.tol
  local slack = self.dtype == "float32" and 1e-6 or 1e-12
  local E_prev, last_rise, halvings = huge, -huge, 0
  local iters, E, res, vmax = 0, 0, 0, 0
  local fixed = c.schedule ~= "continuous"            -- W changes along the way otherwise
  local to_grad = c.tau / speed(c)                     -- |du/dt| -> |dE/du|
  local fused = self.fused
  while true do
    E, vmax = evaluate(self, bs, c)
    c.input_fixed = fixed
    if trace then trace[#trace + 1] = E / B end
    if on_eval then c.step = dt; on_eval(self, bs, c) end
    res = vmax * to_grad
    if res <= tol or iters >= c.max_iter then break end
    if c.adapt and E > E_prev + slack * abs(E_prev) then
      -- The energy rose: the step is too long for the current curvature
      -- (Euler), or the momentum overshot: restart it, and halve dt when
      -- the previous restart was less than 10 steps ago.
      if heavy then for i = 0, N do M[i]:zero() end end
      if not heavy or iters - last_rise <= 10 then dt = dt * 0.5; halvings = halvings + 1 end
      last_rise = iters
    end
    E_prev = E
    if heavy then
      -- Gradient restart (O'Donoghue & Candes 2015): drop the momentum when
      -- it points uphill.
      local d = 0
      for i = 0, N do if c.free[i] then d = d + M[i]:dot(V[i]) end end
      if d < 0 then for i = 0, N do M[i]:zero() end end
    end
    for i = 0, N do
      if c.free[i] then
        if fused then
          folded.step(U[i], heavy and M[i] or nil, V[i], dt, m)
        elseif heavy then
          M[i]:scale(m)
          M[i]:axpy(dt, V[i])
          U[i]:add(M[i])
        else
          U[i]:axpy(dt, V[i])
        end
      end
    end
    iters = iters + 1
  end
  local info = self.info
  info.iterations, info.energy, info.residual, info.dt = iters, E / B, res, dt
  info.converged = res <= tol
  info.nonconverged = info.converged and 0 or count_unconverged(self, bs, c, tol)
  info.halvings = halvings
  local st = self.stats
  st.settles, st.samples = st.settles + 1, st.samples + B
  st.nonconverged = st.nonconverged + info.nonconverged
  st.iterations = st.iterations + iters
  st.halvings = st.halvings + halvings
  self.cur = bs
  return info
end

-- net:evaluate(U, X [, o]) -> E, V: the energy (summed over the batch) and
-- the velocities du_i/dt (a table 0..N of the net's buffers; zero where an
-- area is clamped) at potentials U (a table 0..N of [B x n_i] tensors) for
-- data X. For tests and measures: -dE/du_i = tau V_i in the energy form.
function Net:evaluate(U, X, o)
  check_rows(self, X, self.sizes[0], "X", "evaluate")
  local c = resolve(self, o)
  local bs = self:buffers(X:size(1))
  bs.X:copy(X)
  for i = 0, self.N do
    if not nm.is_tensor(U[i]) or not U[i]:same_shape(bs.U[i]) then
      error(format("bad argument #1 to 'evaluate' (U[%d] must be a [%d x %d] tensor)", i, bs.B,
                   self.sizes[i]), 2)
    end
    bs.U[i]:copy(U[i])
  end
  if c.top then bs.U[self.N]:copy(c.top) end
  if c.clamp == "hard" then bs.U[0]:copy(bs.X) end
  for i = 0, self.N do bs.V[i]:zero() end
  local E = evaluate(self, bs, c)
  self.cur = bs
  return E, bs.V
end

-- ---------------------------------------------------------------- plasticity

-- The change of rule inst at state st into st.dV (zeroed first).
local function change(inst, st)
  st.dV:zero()
  inst.def.step(st, inst.p)
  return st.dV
end

-- Applies the two pathways' rules at the current state (after settle): for
-- every W_i and G_i (by default dV = eta <e r_pre^T>). With an optimiser
-- the rules' changes (step) go to the optimiser; without one a rule's
-- kernel applies its change when it has one (and net.use_kernel is not
-- false), else step's change is added. Respects rule.set_learning and
-- net:set_plastic. Allocates nothing.
function Net:learn()
  local bs = self.cur
  if not bs then error("folded_ae: learn before settle", 2) end
  if not rule.learning() then return end
  local opt = self.optim
  local k, active, deltas = 0, self.active, self.deltas
  -- In the order of self.params: W_1..W_N, then G_0..G_{N-1}.
  for j = 1, 2 * self.N do
    local conn, st, inst
    if j <= self.N then conn, st, inst = self.cW[j], bs.qW[j], self.rules.W
    else conn, st, inst = self.cG[j - self.N - 1], bs.qG[j - self.N - 1], self.rules.G end
    if conn.plastic then
      if opt or not inst.def.kernel or self.use_kernel == false then
        change(inst, st)
        if not opt then conn.V:add(st.dV) end
      else
        inst.def.kernel(st, inst.p)
      end
    end
    if opt then k = k + 1; active[k], deltas[k] = conn.plastic, conn.dV end
  end
  if opt then opt:apply(self.params, deltas, active) end
end

-- The rules' changes at the current state into each connection's dV
-- without applying them (measures): returns {W = {[i] = dW_i}, G = {[i] = dG_i}}.
function Net:rule_changes()
  local bs = self.cur
  if not bs then error("folded_ae: rule_changes before settle", 2) end
  local out = self.changes or {W = {}, G = {}}
  self.changes = out
  for i = 1, self.N do out.W[i] = change(self.rules.W, bs.qW[i]) end
  for i = 0, self.N - 1 do out.G[i] = change(self.rules.G, bs.qG[i]) end
  return out
end

-- Sets the rate eta of both pathways' rules (those that have one).
local function set_rates(net, eta_W, eta_G)
  if net.rules.W.p.eta ~= nil then net.rules.W.p.eta = eta_W end
  if net.rules.G.p.eta ~= nil then net.rules.G.p.eta = eta_G end
end

-- The continuous schedule's plasticity, run after every evaluation of a
-- settle: the rules with eta dt / tau.
local function continuous_step(net, bs, c)
  net.cur = bs
  local f = c.step / c.tau
  set_rates(net, net.o.eta_W * f, net.o.eta_G * f)
  net:learn()
end

-- Settle on X, then learn: the default schedule (plasticity at the fixed
-- point). With schedule = "continuous" the rules act at every Euler step,
-- with eta dt / tau, while the state settles. Returns settle's info.
function Net:train_batch(X, o)
  local c = resolve(self, o)
  if c.schedule ~= "continuous" then
    local info = self:settle(X, o)
    self:learn()
    return info
  end
  local so = self.train_opts or {}                    -- o plus the plasticity hook
  self.train_opts = so
  for k in pairs(so) do so[k] = nil end
  if o then for k, v in pairs(o) do so[k] = v end end
  so.on_eval = continuous_step
  local ok, info = pcall(self.settle, self, X, so)
  set_rates(self, self.o.eta_W, self.o.eta_G)
  if not ok then error(info, 2) end
  return info
end

-- ---------------------------------------------------------------- the two paths

-- Encodes X [B x n_0] with the discriminative path (the fixed point of the
-- dynamics at lambda = 1 with u_0 = x): u_i = W_i r_{i-1}. Returns the top
-- potentials [B x n_N] (a buffer, valid until the next call with this batch
-- size; copied into out when given). Allocates nothing.
function Net:encode(X, out)
  check_rows(self, X, self.sizes[0], "X", "encode")
  local bs = self:buffers(X:size(1))
  local U = bs.U
  U[0]:copy(X)
  for i = 1, self.N do
    rates(self, bs, i - 1, false)
    U[i]:addmm(1, bs.R[i - 1], self.Wt[i], 0)
  end
  self.cur = nil
  if out then return out:copy(U[self.N]) end
  return U[self.N]
end

-- Decodes top potentials Z [B x n_N] with the generative path (the fixed
-- point at lambda = 0 with u_N = z and no data term): u_i = G_i r_{i+1}.
-- Returns u_0 [B x n_0] (a buffer, or out). Allocates nothing.
function Net:decode(Z, out)
  check_rows(self, Z, self.sizes[self.N], "Z", "decode")
  local bs = self:buffers(Z:size(1))
  local U = bs.U
  if Z ~= U[self.N] then U[self.N]:copy(Z) end
  for i = self.N - 1, 0, -1 do
    rates(self, bs, i + 1, false)
    U[i]:addmm(1, bs.R[i + 1], self.Gt[i], 0)
  end
  self.cur = nil
  if out then return out:copy(U[0]) end
  return U[0]
end

-- decode(encode(X)): the poster's test. Returns [B x n_0] (buffer or out).
function Net:reconstruct(X, out)
  return self:decode(self:encode(X), out)
end

-- Mean squared reconstruction error per element over X [N x n_0], in
-- batches of `batch` rows (default 500). Learning untouched.
function Net:reconstruction_mse(X, batch)
  batch = batch or 500
  local n, se, first = X:size(1), 0, 1
  while first <= n do
    local rows = math.min(batch, n - first + 1)
    local xb = rows == n and X or X:narrow(1, first, rows)
    local bs = self:buffers(rows)
    local Xr = self:reconstruct(xb)
    bs.T[0]:sub(Xr, xb)
    se = se + bs.T[0]:dot(bs.T[0])
    first = first + rows
  end
  return se / (n * self.sizes[0])
end

-- ---------------------------------------------------------------- measures

local function cosine(a, b)
  local na, nb = sqrt(a:dot(a)), sqrt(b:dot(b))
  if na == 0 or nb == 0 then return 0 / 0 end
  return a:dot(b) / (na * nb)
end
fae.cosine = cosine

-- Backprop gradient of the reconstruction cost C = ||x - xhat||^2 (summed
-- over the batch, divided by B) with respect to every G_i, where xhat is
-- the generative path's decoding of the top rates held fixed at the
-- current top potentials U_N (after settle). Returns {[i] = dC/dG_i}
-- (buffers of the net). Allocates on the first call per batch size.
function Net:reconstruction_grad()
  local bs = self.cur
  if not bs then error("folded_ae: reconstruction_grad before settle", 2) end
  local N, B = self.N, bs.B
  local g = bs.grad
  if not g then
    g = {A = {}, Ra = {}, Da = {}, delta = {}, dG = {}}
    for i = 0, N do
      g.A[i] = nm.zeros(B, self.sizes[i], self.dtype)
      g.Ra[i] = nm.zeros(B, self.sizes[i], self.dtype)
      g.Da[i] = nm.zeros(B, self.sizes[i], self.dtype)
      g.delta[i] = nm.zeros(B, self.sizes[i], self.dtype)
    end
    for i = 0, N - 1 do g.dG[i] = self.G[i]:clone():zero() end
    bs.grad = g
  end
  local A, Ra, Da, delta = g.A, g.Ra, g.Da, g.delta
  A[N]:copy(bs.U[N])
  for i = N, 0, -1 do                                 -- forward through the G path
    local act = self.acts[i]
    act.f(Ra[i], A[i], act.beta)
    act.df(Da[i], A[i], Ra[i], act.beta)
    if i > 0 then A[i - 1]:addmm(1, Ra[i], self.Gt[i - 1], 0) end
  end
  delta[0]:sub(A[0], bs.X)                            -- dC/du_0 = 2 (xhat - x)
  delta[0]:scale(2)
  for i = 0, N - 1 do
    g.dG[i]:addmm(1 / B, delta[i]:t(), Ra[i + 1], 0)  -- dC/dG_i = delta_i r_{i+1}^T
    if i + 1 < N then
      delta[i + 1]:addmm(1, delta[i], self.G[i], 0)
      delta[i + 1]:mul(Da[i + 1])
    end
  end
  return g.dG
end

-- The edge-case claim of the poster (section 4): at the fixed point with
-- 0 < lambda << 1 the G updates follow the backprop gradient of C,
-- dG_i ∝ -(1-lambda)^2 grad_{G_i} C. Settles X with settings o and
-- returns per-layer cosines between the rule's dG_i and -dC/dG_i
-- ({[i] = cos}), and the settle info.
function Net:g_alignment(X, o)
  local info = self:settle(X, o)
  local changes = self:rule_changes()
  local grads = self:reconstruction_grad()
  local cos = {}
  for i = 0, self.N - 1 do cos[i] = -cosine(changes.G[i], grads[i]) end
  return cos, info
end

-- How far the forward path is from the settled state ("W learns to match
-- the generative input"): after settle, sum_i ||u_i - W_i r_{i-1}||^2 /
-- sum_i ||u_i||^2 over areas 1..N.
function Net:forward_mismatch()
  local bs = self.cur
  if not bs then error("folded_ae: forward_mismatch before settle", 2) end
  local num, den = 0, 0
  for i = 1, self.N do
    num = num + bs.EW[i]:dot(bs.EW[i])
    den = den + bs.U[i]:dot(bs.U[i])
  end
  return den > 0 and num / den or 0 / 0
end

-- Largest singular value of a matrix (float64, exact: the largest
-- eigenvalue of the smaller Gram matrix, LAPACK).
local function spectral_norm(V)
  local A = nm.zeros(V:size(1), V:size(2), "float64"):copy(V)
  local gram = A:size(1) <= A:size(2) and nm.mm(A, A:t()) or nm.mm(A:t(), A)
  local w = nm.symeig(gram)
  return sqrt(max(0, w:get(w:size(1))))
end
fae.spectral_norm = spectral_norm

-- Largest |phi'| of the rate functions.
local DPHI_MAX = {identity = 1, tanh = 1, sigmoid = 0.25, relu = 1}

-- An upper bound L on the curvature of the settling dynamics: the largest
-- eigenvalue of the Gauss-Newton part of the Hessian of E (of E_c for the
-- compartments, times (g_l + g_e)), divided by tau, from
-- ||J||^2 <= sum over the squared-error terms of ||J_term||^2. Euler steps
-- with dt < 2 / L lower the energy near a fixed point (where the
-- phi'' e terms vanish); fae's experiment uses dt = 1 / L for the plain
-- dynamics. o overrides lambda, beta, clamp, form, g_l, g_e, tau.
function Net:curvature_bound(o)
  local c = resolve(self, o)
  local lam = c.lambda
  local function dmax(i)
    local a = self.acts[i]
    if a.name == "softplus" then return 1 end
    return DPHI_MAX[a.name] or 1
  end
  local L = 0
  for i = 1, self.N do L = L + lam * (1 + dmax(i - 1) * spectral_norm(self.W[i])) ^ 2 end
  for i = 0, self.N - 1 do L = L + (1 - lam) * (1 + dmax(i + 1) * spectral_norm(self.G[i])) ^ 2 end
  if c.clamp == "soft" then L = L + 2 * c.beta end
  if c.form == "compartments" then L = (L + 1) * (c.g_l + c.g_e) end
  return L / c.tau
end

-- ---------------------------------------------------------------- state

function Net:state()
  local st = {W = {}, G = {}}
  for i = 1, self.N do st.W[i] = self.W[i] end
  for i = 0, self.N - 1 do st.G[i + 1] = self.G[i] end   -- 1-based for checkpoints
  if self.optim then st.optim = self.optim:state() end
  return st
end

function Net:load_state(st)
  if type(st) ~= "table" or type(st.W) ~= "table" or #st.W ~= self.N or #st.G ~= self.N then
    error("folded_ae: state does not belong to a network with " .. self.N .. " weight layers", 2)
  end
  for i = 1, self.N do
    if not st.W[i]:same_shape(self.W[i]) or not st.G[i]:same_shape(self.G[i - 1]) then
      error(format("folded_ae: state layer %d has weights of another shape", i), 2)
    end
    self.W[i]:copy(st.W[i])
    self.G[i - 1]:copy(st.G[i])
  end
  if st.optim and self.optim then self.optim:load_state(st.optim) end
end

function Net:describe()
  local s = {}
  for i = 0, self.N do s[#s + 1] = tostring(self.sizes[i]) end
  return format("%s %s, lambda %g, %s form, %s clamp", table.concat(s, "-"), self.acts[1].name,
                self.o.lambda, self.o.form, self.o.clamp)
end

-- ---------------------------------------------------------------- PCA

local symeig = nm.symeig

-- fae.pca(X, k [, block]) -> {mean [d] float64, components [k x d] float64
-- (orthonormal rows, largest variance first), eigenvalues (Lua list, all d,
-- descending), k}. The covariance (1/n) Xc^T Xc is accumulated in float64 in
-- blocks of rows and diagonalised by LAPACK dsyevd (nm.symeig). PCA of
-- size k is the optimal linear autoencoder with a k-dimensional code.
function fae.pca(X, k, block)
  if not nm.is_tensor(X) or X:dim() ~= 2 then error("bad argument #1 to 'pca' (a 2-D tensor expected)", 2) end
  local n, d = X:size(1), X:size(2)
  if math.type(k) ~= "integer" or k < 1 or k > d then
    error(format("bad argument #2 to 'pca' (k must be an integer in [1, %d])", d), 2)
  end
  if n < 1 then error("bad argument #1 to 'pca' (no rows)", 2) end
  block = block or 1000
  local mean = nm.zeros(d, "float64")
  local buf = nm.zeros(math.min(block, n), d, "float64")
  local ones = nm.ones(math.min(block, n), "float64")
  local first = 1
  while first <= n do                                 -- mean
    local rows = math.min(block, n - first + 1)
    local b = buf:narrow(1, 1, rows)
    b:copy(X:narrow(1, first, rows))
    mean:addmv(1, b:t(), ones:narrow(1, 1, rows), 1)
    first = first + rows
  end
  mean:scale(1 / n)
  local cov = nm.zeros(d, d, "float64")
  first = 1
  while first <= n do                                 -- (1/n) sum (x - m)(x - m)^T
    local rows = math.min(block, n - first + 1)
    local b = buf:narrow(1, 1, rows)
    b:copy(X:narrow(1, first, rows))
    b:addr(-1, ones:narrow(1, 1, rows), mean)
    cov:addmm(1 / n, b:t(), b, 1)
    first = first + rows
  end
  local w, V = symeig(cov, true)                      -- ascending
  local comps = nm.zeros(k, d, "float64")
  local ev = {}
  for j = 1, d do ev[j] = w:get(d - j + 1) end
  for j = 1, k do comps:row(j):copy(V:col(d - j + 1)) end
  return {mean = mean, components = comps, eigenvalues = ev, k = k}
end

-- Reconstruction by PCA: xhat = m + P^T P (x - m); returns the mean squared
-- error per element over X (in float64, blocks of rows).
function fae.pca_mse(p, X, block)
  block = block or 1000
  local n, d = X:size(1), X:size(2)
  local buf = nm.zeros(math.min(block, n), d, "float64")
  local code = nm.zeros(math.min(block, n), p.k, "float64")
  local rec = nm.zeros(math.min(block, n), d, "float64")
  local ones = nm.ones(math.min(block, n), "float64")
  local se, first = 0, 1
  while first <= n do
    local rows = math.min(block, n - first + 1)
    local b, z, r = buf:narrow(1, 1, rows), code:narrow(1, 1, rows), rec:narrow(1, 1, rows)
    b:copy(X:narrow(1, first, rows))
    b:addr(-1, ones:narrow(1, 1, rows), p.mean)
    z:mm(b, p.components:t())
    r:mm(z, p.components)
    r:sub(b)
    se = se + r:dot(r)
    first = first + rows
  end
  return se / (n * d)
end

-- PCA reconstructions of the rows of X (float64 [n x d], allocates).
function fae.pca_reconstruct(p, X)
  local n = X:size(1)
  local b = nm.zeros(n, X:size(2), "float64"):copy(X)
  local ones = nm.ones(n, "float64")
  b:addr(-1, ones, p.mean)
  local r = nm.mm(nm.mm(b, p.components:t()), p.components)
  r:addr(1, ones, p.mean)
  return r
end

-- Orthonormal basis (float64 [d x k], allocates) of the columns of A by
-- modified Gram-Schmidt, twice for accuracy.
local function orthonormal_columns(A)
  local Q = nm.zeros(A:size(1), A:size(2), "float64"):copy(A)
  for _ = 1, 2 do
    for j = 1, Q:size(2) do
      local v = Q:col(j)
      for l = 1, j - 1 do
        local ql = Q:col(l)
        v:axpy(-ql:dot(v), ql)
      end
      local nv = sqrt(v:dot(v))
      if nv == 0 then error("principal_angles: the columns are linearly dependent", 3) end
      v:scale(1 / nv)
    end
  end
  return Q
end

-- Principal angles in degrees (Lua list, ascending) between the column
-- spans of A [d x k] and B [d x k'] (k <= k'): arccos of the singular values
-- of Qa^T Qb.
function fae.principal_angles(A, B)
  if not nm.is_tensor(A) or not nm.is_tensor(B) or A:dim() ~= 2 or B:dim() ~= 2
     or A:size(1) ~= B:size(1) or A:size(2) > B:size(2) then
    error("principal_angles: A [d x k] and B [d x k'] with k <= k' expected", 2)
  end
  local Qa, Qb = orthonormal_columns(A), orthonormal_columns(B)
  local Mx = nm.mm(Qa:t(), Qb)                        -- [k x k']
  local w = symeig(nm.mm(Mx, Mx:t()))                 -- squared cosines, ascending
  local out = {}
  for j = w:size(1), 1, -1 do
    local s = sqrt(math.min(1, max(0, w:get(j))))
    out[#out + 1] = math.deg(math.acos(s))
  end
  return out
end

-- The linear maps of the two paths (float64, allocate): the encoder's
-- W_N ... W_1 [n_N x n_0] and the decoder's G_0 ... G_{N-1} [n_0 x n_N]
-- (meaningful as maps in the linear case, phi = identity).
function Net:linear_maps()
  local E = nm.zeros(self.sizes[1], self.sizes[0], "float64"):copy(self.W[1])
  for i = 2, self.N do
    E = nm.mm(nm.zeros(self.sizes[i], self.sizes[i - 1], "float64"):copy(self.W[i]), E)
  end
  local D = nm.zeros(self.sizes[0], self.sizes[1], "float64"):copy(self.G[0])
  for i = 1, self.N - 1 do
    D = nm.mm(D, nm.zeros(self.sizes[i], self.sizes[i + 1], "float64"):copy(self.G[i]))
  end
  return E, D
end

return fae
