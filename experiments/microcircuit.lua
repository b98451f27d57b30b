-- experiments/microcircuit.lua: dendritic cortical microcircuits
-- (Sacramento, Costa, Bengio & Senn 2018, NeurIPS; ../shared/models/
-- microcircuit.md), figure by figure:
--
--   fig1    one association: voltage traces of output, target and apical
--           potentials; the apical error appears when the target is shown
--           and returns to ~0 as W_up learns (full dynamics)
--   figS1   the self-predicting state learned from random W_ip, W_pi
--           (no target, random inputs): ||vA||^2 and ||u_{k+1} - uI_k||^2
--   fig2    30-50-10 regression against the 30-20-10 teacher: the
--           microcircuit (full dynamics, noise) vs a shallow learner (only
--           output weights), and BP and FA on the same network; the angle
--           between forward and feedback weights
--   theory  small lambda: cosine between the W_up change and the BP update
--           (symmetric top-down) or the FA update (random top-down)
--   fig3    784-500-500-10, steady-state dynamics, on the MNIST subset and
--           Fashion-MNIST: microcircuit, BP, shallow, hidden-to-hidden
--           frozen, and 784-1000-10 with learned top-down weights; a table
--           beside the paper's numbers (full MNIST)
--
--   ./neuromic experiments/microcircuit.lua --help
--   ./neuromic experiments/microcircuit.lua --quick                 # all, seconds
--   ./neuromic experiments/microcircuit.lua --figure fig2 --out results/mc
--
-- Each figure writes OUT/<figure>/ (metrics.jsonl/.csv, results.json,
-- plots). Runs are not resumable (no checkpoints); Ctrl-C stops a run.

local nm = require "neuromic"
local cli = require "nm.cli"
local results = require "nm.results"
local progress = require "nm.progress"
local plot = require "nm.plot"
local data = require "nm.data"
local nn = require "nm.nn"
local measures = require "nm.measures"
local mc = require "nm.microcircuit"

local format = string.format

local FIGURES = {"fig1", "figS1", "fig2", "theory", "fig3"}
local VARIANTS = {microcircuit = true, bp = true, shallow = true, frozen = true, topdown = true}

local opts = cli.parse(arg, {
  name = "microcircuit",
  description = "Dendritic cortical microcircuits (Sacramento et al. 2018): Fig. 1, S1, 2, 3 " ..
                "and the small-lambda theory check.",
  options = {
    {"figure", "list", {"all"}, "figures: fig1, figS1, fig2, theory, fig3 or all", item = "string"},
    {"plot", "bool", true, "write plots (gnuplot)"},
    -- Fig. 1
    {"fig1-learn-ms", "number", 3000, "Fig. 1: ms with the target shown", quick = 500, min = 1},
    {"fig1-eta-scale", "number", 1000, "Fig. 1: W_up learning rates as Fig. 2's times this " ..
     "(W_ip, W_pi stay in the analytic self-predicting state)", min = 0},
    -- Fig. S1
    {"s1-patterns", "int", 3000, "Fig. S1: random input patterns of 100 ms", quick = 100, min = 1},
    {"s1-every", "int", 50, "Fig. S1: patterns between measurements", quick = 10, min = 1},
    {"s1-eta-scale", "number", 10, "Fig. S1: W_ip, W_pi rates as the paper's (0.0002375, " ..
     "0.0005 per ms) times this", min = 0},
    {"s1-theta", "number", 0, "Fig. S1: threshold theta of the soft rectifier (Fig. 2: 3)"},
    -- Fig. 2
    {"fig2-patterns", "int", 20000, "Fig. 2: training patterns of 100 ms", quick = 200, min = 1},
    {"fig2-every", "int", 500, "Fig. 2: patterns between evaluations", quick = 50, min = 1},
    {"fig2-test", "int", 500, "Fig. 2: unseen test inputs", quick = 100, min = 1},
    {"fig2-sigma", "number", 0.3, "Fig. 2: noise amplitude", min = 0},
    {"fig2-eta-scale", "number", 300, "Fig. 2: learning rates as the paper's times this (the " ..
     "paper's own rates barely move the soft rectifier's small rates in 20,000 patterns)", min = 0},
    {"fig2-bp-lr", "number", 20, "Fig. 2: learning rate of BP and FA (online, per pattern)", min = 0},
    {"fig2-models", "list", {"microcircuit", "shallow", "bp", "fa"}, "Fig. 2: models", item = "string"},
    -- theory
    {"theory-batch", "int", 200, "theory: inputs in the probe batch", quick = 50, min = 1},
    -- Fig. 3
    {"datasets", "list", {"mnist", "fashion"}, "Fig. 3: data sets (mnist = the 10,000-digit subset)",
     item = "string"},
    {"variants", "list", {"microcircuit", "bp", "shallow", "frozen", "topdown"},
     "Fig. 3: learners (microcircuit, bp, shallow, frozen, topdown)", item = "string"},
    {"epochs", "int", 20, "Fig. 3: epochs on the MNIST subset", quick = 1, min = 1},
    {"fashion-epochs", "int", 4, "Fig. 3: epochs on Fashion-MNIST", quick = 1, min = 1},
    {"train-subset", "int", 0, "Fig. 3: first N training images (0: all)", quick = 1000, min = 0},
    {"test-subset", "int", 0, "Fig. 3: first N test images (0: all)", quick = 500, min = 0},
    {"batch", "int", 10, "Fig. 3: minibatch size", min = 1},
    {"eta-up", "list", {0.5, 0.12, 0.06}, "Fig. 3: W_up learning rates per layer (per image)",
     item = "number"},
    {"eta-ip", "list", {0.12, 0.06}, "Fig. 3: W_ip learning rates per hidden layer", item = "number"},
    {"init-up", "list", {1.0, 0.2, 0.2}, "Fig. 3: W_up ~ U(-a, a), a per layer (BP alike)",
     item = "number"},
    {"init-down", "number", 0.42, "Fig. 3: W_down ~ U(-a, a)", min = 0},
    {"eta-down", "number", 0.0005, "Fig. 3 topdown: W_down learning rate", min = 0},
    {"eta-pi", "number", 0.1, "Fig. 3 topdown: W_pi learning rate (keeps vA silent as W_down " ..
     "changes)", min = 0},
    {"bp-lr", "number", 0.3, "Fig. 3: BP learning rate (batch mean)", min = 0},
  },
})

local wanted = {}
for _, f in ipairs(opts.figure) do
  if f == "all" then
    for _, g in ipairs(FIGURES) do wanted[g] = true end
  else
    local ok = false
    for _, g in ipairs(FIGURES) do ok = ok or g == f end
    if not ok then
      io.stderr:write(format("microcircuit: unknown figure '%s' (fig1, figS1, fig2, theory, fig3, all)\n", f))
      os.exit(2)
    end
    wanted[f] = true
  end
end
for _, v in ipairs(opts.variants) do
  if not VARIANTS[v] then
    io.stderr:write(format("microcircuit: unknown variant '%s'\n", v))
    os.exit(2)
  end
end

-- The paper's Fig. 2 rates (1/ms) and the microcircuit softplus.
local FIG2_ETA = {up = {0.0011875, 0.0005}, ip = 0.0011875, pi = 0.0059375}

-- A run directory per figure, under --out.
local function open_run(fig, info)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.out = opts.out .. "/" .. fig
  info = info or {}
  info.name = "microcircuit-" .. fig
  return results.open(o, info)
end

local function maybe_plot(kind, rows, o)
  if not opts.plot then return {} end
  return plot[kind](rows, o)
end

local summary = {}     -- lines printed at the end

-- ------------------------------------------------------------ the teacher

-- The Fig. 2 teacher 30-20-10: r = phi(10 W2 phi(2 W1 x)); we need its
-- output potential u = 10 W2 phi(2 W1 x) to nudge the student.
local function teacher_of(seed, phi_net)
  local T = data.teacher{dtype = "float64", seed = seed}
  local self = {T = T, bufs = {}}
  function self.potential(U, X)                   -- U [B x 10], X [B x 30]
    local B = X:size(1)
    local H = self.bufs[B]
    if not H then H = nm.zeros(B, T.sizes[2], "float64"); self.bufs[B] = H end
    H:addmm(T.gains[1], X, T.W[1]:t(), 0)
    phi_net:phi(H, H)
    U:addmm(T.gains[2], H, T.W[2]:t(), 0)
    return U
  end
  return self
end

-- ------------------------------------------------------------ Fig. 1

local function fig1()
  local run = open_run("fig1", {dataset = "one association: x ~ U(-1, 1), u_trgt ~ U(1, 5)",
                                columns = {"t_ms", "phase"}})
  local s = opts.fig1_eta_scale
  local net = mc.new{sizes = {30, 50, 10}, gen = nm.generator(opts.seed), sigma = 0.1,
                     self_predicting = true,
                     eta = {up = {FIG2_ETA.up[1] * s, FIG2_ETA.up[2] * s}, ip = FIG2_ETA.up[2] * s}}
  local g = nm.generator(opts.seed + 1)
  local x = nm.zeros(1, 30, "float64"):uniform(g, -1, 1)
  -- target potentials in the rising part of the soft rectifier (theta = 3),
  -- where rates and their slopes are large enough to see learning
  local ut = nm.zeros(1, 10, "float64"):uniform(g, 1, 5)
  local x1, ut1 = x:select(1, 1), ut:select(1, 1)
  local out = net.pyr[2]
  local t_ms, rows = 0, {}
  local marks = {}
  local function phase(name, ms, target)
    local steps = math.floor(ms / net.p.dt + 0.5)
    marks[#marks + 1] = {name = name, from = t_ms}
    for _ = 1, steps // 10 do
      net:run(x1, 10, target)
      t_ms = t_ms + 10 * net.p.dt
      local va = net:apical_energy()
      local d = out.u:clone():sub(ut1)
      local row = {t_ms = t_ms, phase = name, apical_energy = va,
                   interneuron_mismatch = (net:interneuron_mismatch()),
                   output_error = d:dot(d),
                   u_out1 = out.u:get(1), u_out2 = out.u:get(2), u_trgt1 = ut1:get(1),
                   u_trgt2 = ut1:get(2), vA1 = net.pyr[1].vA:get(1), vA2 = net.pyr[1].vA:get(2),
                   vA3 = net.pyr[1].vA:get(3)}
      rows[#rows + 1] = row
      run:log(row)
    end
  end
  phase("before", 200, nil)
  phase("target", opts.fig1_learn_ms, ut1)
  phase("after", 300, nil)
  -- apical energy: mean over a window
  local function mean_of(key, from, to)
    local s_, n = 0, 0
    for _, r in ipairs(rows) do
      if r.t_ms > from and r.t_ms <= to then s_, n = s_ + r[key], n + 1 end
    end
    return n > 0 and s_ / n or 0 / 0
  end
  local T = opts.fig1_learn_ms
  local final = {
    apical_before = mean_of("apical_energy", 100, 200),
    apical_target_onset = mean_of("apical_energy", 200, 250),
    apical_target_end = mean_of("apical_energy", 150 + T, 200 + T),
    apical_after = mean_of("apical_energy", 300 + T, 500 + T),
    output_error_onset = mean_of("output_error", 200, 250),
    output_error_end = mean_of("output_error", 150 + T, 200 + T),
    output_error_after = mean_of("output_error", 300 + T, 500 + T),
  }
  maybe_plot("curves", rows, {out = run:path("traces_output.png"), x = "t_ms",
    y = {"u_out1", "u_trgt1", "u_out2", "u_trgt2"}, title = "Fig. 1: output potentials and targets",
    xlabel = "time (ms)", ylabel = "potential"})
  maybe_plot("curves", rows, {out = run:path("traces_apical.png"), x = "t_ms",
    y = {"vA1", "vA2", "vA3"}, title = "Fig. 1: apical potentials of hidden cells",
    xlabel = "time (ms)", ylabel = "vA"})
  maybe_plot("curves", rows, {out = run:path("apical_energy.png"), x = "t_ms",
    y = {"apical_energy", "output_error"}, logy = true,
    title = "Fig. 1: ||vA||^2 and ||u_out - u_trgt||^2", xlabel = "time (ms)"})
  run:finish(final)
  summary[#summary + 1] = format(
    "Fig. 1: ||vA||^2 before %.2e, target onset %.2e, end of learning %.2e, target removed %.2e; " ..
    "||u_N - u_trgt||^2 onset %.3f -> end %.3f", final.apical_before, final.apical_target_onset,
    final.apical_target_end, final.apical_after, final.output_error_onset, final.output_error_end)
end

-- ------------------------------------------------------------ Fig. S1

local function figS1()
  local run = open_run("figS1", {dataset = "random inputs U(-1, 1), no target",
                                 columns = {"pattern"}})
  local rate = {"softplus", theta = opts.s1_theta}
  local k = opts.s1_eta_scale
  local net = mc.new{sizes = {30, 50, 10}, gen = nm.generator(opts.seed), sigma = 0.1, rate = rate,
                     eta = {ip = 0.0002375 * k, pi = 0.0005 * k}}
  local g = nm.generator(opts.seed + 1)
  local x = nm.zeros(30, "float64")
  local p = net.p
  local c = p.g_B * (p.g_lk + p.g_D) / (p.g_D * (p.g_lk + p.g_B))
  local ip_target = net.up[2].W:clone():scale(c)
  local minus_down = net.down[1].W:clone():scale(-1)
  local bar = progress.new{total = opts.s1_patterns, label = "Fig. S1"}
  local va_acc, mm_acc, n_acc = 0, 0, 0
  local last
  for pat = 1, opts.s1_patterns do
    x:uniform(g, -1, 1)
    net:run(x, 500)
    for _ = 1, 10 do                               -- second half: sample every 5 ms
      net:run(x, 50)
      local va, mm = net:apical_energy(), net:interneuron_mismatch()
      va_acc, mm_acc, n_acc = va_acc + va, mm_acc + mm, n_acc + 1
    end
    if pat % opts.s1_every == 0 or pat == 1 then
      last = {pattern = pat, apical_energy = va_acc / n_acc, interneuron_mismatch = mm_acc / n_acc,
              angle_pi = measures.angle(net.pi[1].W, minus_down),
              angle_ip = measures.angle(net.ip[1].W, ip_target)}
      run:log(last)
      va_acc, mm_acc, n_acc = 0, 0, 0
    end
    bar:update(pat)
  end
  bar:finish()
  -- the same measures in the analytic state, for reference (same noise level)
  local ref = mc.new{sizes = {30, 50, 10}, gen = nm.generator(opts.seed), sigma = 0.1, rate = rate,
                     self_predicting = true}
  local va_ref, mm_ref = 0, 0
  for _ = 1, 20 do
    x:uniform(g, -1, 1)
    ref:run(x, 1000)
    va_ref, mm_ref = va_ref + ref:apical_energy() / 20, mm_ref + ref:interneuron_mismatch() / 20
  end
  local rows = run:metrics()
  local first = rows[1]
  maybe_plot("curves", rows, {out = run:path("self_predicting.png"), x = "pattern",
    y = {"apical_energy", "interneuron_mismatch"}, logy = true,
    title = "Fig. S1: learning the self-predicting state", xlabel = "pattern (100 ms each)"})
  maybe_plot("curves", rows, {out = run:path("angles.png"), x = "pattern",
    y = {"angle_pi", "angle_ip"}, title = "Fig. S1: angle to the analytic weights (degrees)",
    xlabel = "pattern"})
  local final = {apical_first = first.apical_energy, apical_last = last.apical_energy,
                 mismatch_first = first.interneuron_mismatch, mismatch_last = last.interneuron_mismatch,
                 angle_pi_last = last.angle_pi, angle_ip_last = last.angle_ip,
                 apical_analytic_state = va_ref, mismatch_analytic_state = mm_ref}
  run:finish(final)
  summary[#summary + 1] = format(
    "Fig. S1: ||vA||^2 %.3g -> %.3g (analytic state with the same noise: %.3g); " ..
    "||u2 - uI||^2 %.3g -> %.3g (%.3g); angles to -W_down %.1f deg, to c W_up %.1f deg",
    final.apical_first, final.apical_last, va_ref, final.mismatch_first, final.mismatch_last, mm_ref,
    final.angle_pi_last, final.angle_ip_last)
end

-- ------------------------------------------------------------ Fig. 2

-- The microcircuit's soft rectifier as an nn activation, so BP and FA run
-- on the same network function.
nn.activations.microcircuit_softplus = {
  f = function(y, a) y:sub(a, 3):softplus():scale(0.1) end,
  df = function(d, a) d:sub(a, 3):sigmoid():scale(0.1) end,
}

local function fig2()
  local run = open_run("fig2", {dataset = "teacher 30-20-10 (Sacramento et al. Fig. 2)",
                                columns = {"model", "pattern"}})
  local models = {}
  for _, m in ipairs(opts.fig2_models) do models[m] = true end
  local probe = mc.new{sizes = {30, 50, 10}, gen = nm.generator(1)}
  local teacher = teacher_of(opts.seed + 100, probe)
  -- a fixed test set and its target rates
  local tg = nm.generator(opts.seed + 200)
  local Xtest = nm.zeros(opts.fig2_test, 30, "float64"):uniform(tg, -1, 1)
  local Rtest = teacher.potential(nm.zeros(opts.fig2_test, 10, "float64"), Xtest)
  probe:phi(Rtest, Rtest)
  local D = Rtest:clone()
  local function test_error(R)                     -- mean over inputs of ||r - r_trgt||^2
    D:sub(R, Rtest)
    return D:dot(D) / opts.fig2_test
  end
  local final = {}
  local P, every = opts.fig2_patterns, opts.fig2_every

  -- the training stream: the same inputs for every model
  local function stream()
    local g = nm.generator(opts.seed + 300)
    local x = nm.zeros(1, 30, "float64")
    local u = nm.zeros(1, 10, "float64")
    return function()
      x:uniform(g, -1, 1)
      teacher.potential(u, x)
      return x, u
    end
  end

  local function microcircuit(name, shallow)
    local k = opts.fig2_eta_scale
    local eta = {up = {shallow and 0 or FIG2_ETA.up[1] * k, FIG2_ETA.up[2] * k}, ip = FIG2_ETA.ip * k,
                 pi = FIG2_ETA.pi * k}
    local net = mc.new{sizes = {30, 50, 10}, gen = nm.generator(opts.seed), sigma = opts.fig2_sigma,
                       eta = eta, noise_gen = nm.generator(opts.seed + 400)}
    local next_pattern = stream()
    local function evaluate(pat)
      local bs = net:steady_state(Xtest, nil, 30)   -- the noise-free fixed point, no target
      local e_fix = test_error(bs.R[2])
      local e_ff = test_error(net:forward(Xtest))    -- the feed-forward (self-predicting) output
      local row = {model = name, pattern = pat, test_error = e_fix, test_error_ff = e_ff,
                   angle = measures.angle(net.up[2].W, net.down[1].W:t())}
      run:log(row)
      return row
    end
    evaluate(0)
    local bar = progress.new{total = P, label = "Fig. 2 " .. name}
    local t0 = nm.clock()
    local last
    for pat = 1, P do
      local x, u = next_pattern()
      net:run(x:select(1, 1), 1000, u:select(1, 1))
      if pat % every == 0 or pat == P then last = evaluate(pat) end
      bar:update(pat)
    end
    bar:finish()
    final[name] = {test_error = last.test_error, test_error_ff = last.test_error_ff,
                   angle = last.angle, seconds = nm.clock() - t0}
  end

  local function backprop(name, rulename)
    local net = nn.mlp{sizes = {30, 50, 10}, act = "microcircuit_softplus", out = "microcircuit_softplus",
                       loss = "mse", rule = rulename, params = {eta = opts.fig2_bp_lr}, bias = false,
                       gen = nm.generator(opts.seed), dtype = "float64",
                       init = function(W, _, g) W:uniform(g, -1, 1) end}
    local next_pattern = stream()
    local R = nm.zeros(1, 10, "float64")
    local function evaluate(pat)
      local row = {model = name, pattern = pat, test_error = test_error(net:forward(Xtest))}
      if rulename == "fa" then row.angle = measures.feedback_angles(net, "fa")[1] end
      run:log(row)
      return row
    end
    evaluate(0)
    local last
    for pat = 1, P do
      local x, u = next_pattern()
      R:copy(u)
      probe:phi(R, R)
      net:train_batch(x, R)
      if pat % every == 0 or pat == P then last = evaluate(pat) end
    end
    final[name] = {test_error = last.test_error, angle = last.angle}
  end

  if models.microcircuit then microcircuit("microcircuit", false) end
  if models.shallow then microcircuit("shallow", true) end
  if models.bp then backprop("bp", "backprop") end
  if models.fa then backprop("fa", "fa") end
  local rows = run:metrics()
  maybe_plot("curves", rows, {out = run:path("test_error.png"), x = "pattern", y = "test_error",
    group = "model", logy = true, title = "Fig. 2: test error ||r_N - r_trgt||^2 (noise-free)",
    xlabel = "pattern (100 ms each)"})
  maybe_plot("curves", rows, {out = run:path("alignment.png"), x = "pattern", y = "angle",
    group = "model", title = "Fig. 2: angle between W_up[2]^T and W_down[1] (B for FA), degrees",
    xlabel = "pattern"})
  run:finish(final)
  local parts = {}
  for _, m in ipairs{"microcircuit", "shallow", "bp", "fa"} do
    local f = final[m]
    if f then
      parts[#parts + 1] = format("%s %.4g%s", m, f.test_error,
                                 f.angle and format(" (angle %.0f deg)", f.angle) or "")
    end
  end
  summary[#summary + 1] = "Fig. 2 test error after " .. P .. " patterns: " .. table.concat(parts, ", ")
  if final.microcircuit then
    summary[#summary + 1] = format("Fig. 2: the microcircuit run took %.0f s (%d patterns x 1000 steps)",
                                   final.microcircuit.seconds, P)
  end
end

-- ------------------------------------------------------------ theory

-- cos between the steady-state W_up[k] change and the update of the
-- error e_N = phi'(uhat_N) (u_trgt - uhat_N) sent down through W_up^T
-- (BP) or W_down (FA), for every layer.
local function update_cosines(net, X, UT, feedback)
  local bs = net:steady_state(X, UT)
  local f, N, n, B = net:factors(), net.N, net.sizes, X:size(1)
  local W0, dW = {}, {}
  for k = 1, N do W0[k] = net.up[k].W:clone() end
  net:steady_update()
  for k = 1, N do dW[k] = net.up[k].W:clone():sub(W0[k]); net.up[k].W:copy(W0[k]) end
  local Uh, E, out = {}, {}, {}
  for k = 1, N do Uh[k] = nm.zeros(B, n[k], "float64"):scale(bs.VB[k], k < N and f.cB or f.cB_out) end
  E[N] = nm.zeros(B, n[N], "float64"):sub(UT, Uh[N]):mul(net:dphi(Uh[N]:clone(), Uh[N]))
  for k = N - 1, 1, -1 do
    E[k] = nm.zeros(B, n[k], "float64")
    if feedback == "bp" then E[k]:mm(E[k + 1], net.up[k + 1].W)
    else E[k]:mm(E[k + 1], net.down[k].W:t()) end
    E[k]:mul(net:dphi(Uh[k]:clone(), Uh[k]))
  end
  for k = 1, N do
    local G = nm.zeros(n[k], n[k - 1], "float64"):mm(E[k]:t(), k == 1 and X or bs.R[k - 1])
    out[k] = dW[k]:dot(G) / (dW[k]:norm() * G:norm())
  end
  return out
end

local function theory()
  local run = open_run("theory", {dataset = "random inputs, teacher targets", columns = {"g"}})
  local sizes = {30, 50, 50, 10}
  local g = nm.generator(opts.seed + 1)
  local probe = mc.new{sizes = {30, 50, 10}, gen = nm.generator(1)}
  local teacher = teacher_of(opts.seed + 100, probe)
  local X = nm.zeros(opts.theory_batch, 30, "float64"):uniform(g, -1, 1)
  local UT = teacher.potential(nm.zeros(opts.theory_batch, 10, "float64"), X)
  local lines = {}
  for _, gval in ipairs{0.8, 0.4, 0.2, 0.1, 0.05, 0.02, 0.01, 0.001} do
    local function make()
      return mc.new{sizes = sizes, gen = nm.generator(opts.seed), mode = "steady", g_A = gval,
                    g_som = gval, eta = {up = 1}}
    end
    local sym = make()
    for k = 1, sym.N - 1 do sym.down[k].W:copy(sym.up[k + 1].W:t()) end
    sym:self_predicting()
    local cb = update_cosines(sym, X, UT, "bp")
    local rnd = make():self_predicting()
    local cf = update_cosines(rnd, X, UT, "fa")
    local cfb = update_cosines(rnd, X, UT, "bp")
    local f = sym:factors()
    local row = {g = gval, lambda = f.lambda, lambda_out = f.lambda_out,
                 cos_bp_1 = cb[1], cos_bp_2 = cb[2], cos_bp_3 = cb[3],
                 cos_fa_1 = cf[1], cos_fa_2 = cf[2], cos_fa_vs_bp_1 = cfb[1], cos_fa_vs_bp_2 = cfb[2]}
    run:log(row)
    lines[#lines + 1] = format("  %6.3f %8.4f %8.4f | %8.5f %8.5f %8.5f | %8.5f %8.5f | %8.4f %8.4f",
      gval, f.lambda, f.lambda_out, cb[1], cb[2], cb[3], cf[1], cf[2], cfb[1], cfb[2])
  end
  maybe_plot("curves", run:metrics(), {out = run:path("cosines.png"), x = "lambda", logx = true,
    y = {"cos_bp_1", "cos_bp_2", "cos_fa_1", "cos_fa_2"},
    title = "W_up change vs BP (symmetric W_down) and FA (random W_down)", xlabel = "lambda (hidden)"})
  local last = run:metrics()[#run:metrics()]
  run:finish{cos_bp_1 = last.cos_bp_1, cos_bp_2 = last.cos_bp_2, cos_fa_1 = last.cos_fa_1,
             cos_fa_2 = last.cos_fa_2, lambda = last.lambda}
  summary[#summary + 1] = "Theory check (30-50-50-10, g_A = g_som = g; cos of W_up changes, layers 1..3):\n" ..
    "       g   lambda  lam_out |   BP: 1        2        3 |   FA: 1        2 | FA vs BP: 1   2\n" ..
    table.concat(lines, "\n")
end

-- ------------------------------------------------------------ Fig. 3

local PAPER = {microcircuit = 1.96, bp = 1.53, shallow = 8.4, frozen = 2.11, topdown = 2.48}

-- BP's weights drawn as the microcircuit's W_up: U(-a_l, a_l).
local function layer_init()
  local l = 0
  return function(W, b, g)
    l = l + 1
    local a = opts.init_up[l] or opts.init_up[#opts.init_up]   -- (then FA matrices, unused by BP)
    W:uniform(g, -a, a)
    if b then b:zero() end
  end
end

local function fig3()
  local run = open_run("fig3", {dataset = table.concat(opts.datasets, ", "),
                                columns = {"dataset", "variant", "epoch"}})
  local final = {}
  for _, dname in ipairs(opts.datasets) do
    local ds = data.load(dname, {on = 0.8, off = 0.1,
                                 subset = opts.train_subset > 0 and opts.train_subset or nil,
                                 test_subset = opts.test_subset > 0 and opts.test_subset or nil})
    local epochs = dname == "fashion" and opts.fashion_epochs or opts.epochs
    final[dname] = {}
    for _, variant in ipairs(opts.variants) do
      local gen = nm.generator(opts.seed)
      local learner
      if variant == "bp" then
        local net = nn.mlp{sizes = {784, 500, 500, 10}, act = "sigmoid", out = "sigmoid", loss = "mse",
                           rule = "backprop", params = {eta = opts.bp_lr}, gen = gen, init = layer_init()}
        learner = {
          train = function(b) net:train_batch(b.X, b.Y) end,
          errors = function(split)
            local _, acc = net:evaluate(split.X, split.Y, 1000, split.labels)
            return 1 - acc
          end,
        }
      else
        local up, ip = opts.eta_up, opts.eta_ip
        local sizes, eta = {784, 500, 500, 10}, {up = {up[1], up[2], up[3]}, ip = {ip[1], ip[2]}}
        if variant == "shallow" then eta = {up = {0, 0, up[3]}, ip = {0, 0}}
        elseif variant == "frozen" then eta.up[2] = 0
        elseif variant == "topdown" then
          sizes = {784, 1000, 10}
          eta = {up = {up[1], up[3]}, ip = {ip[2]}, down = opts.eta_down, pi = opts.eta_pi}
        end
        local init = {up = {opts.init_up[1], opts.init_up[2], opts.init_up[3]}, down = opts.init_down}
        if #sizes == 3 then init.up = {opts.init_up[1], opts.init_up[3]} end
        local net = mc.new{sizes = sizes, gen = gen, dtype = "float32", mode = "steady",
                           rate = "logistic", bias = true, init = init, self_predicting = true, eta = eta}
        local UT = {}
        local probe_X = ds.test.X:narrow(1, 1, math.min(100, ds.test.n))
        learner = {
          net = net,
          train = function(b)
            local U = UT[b.n]
            if not U then U = nm.zeros(b.n, 10); UT[b.n] = U end
            net:phi_inverse(U, b.Y)
            net:train_batch(b.X, U)
          end,
          errors = function(split) return 1 - net:correct(split.X, split.labels) / split.n end,
          -- the self-predicting state without nudging: mean ||vA||^2 on test images
          apical = function()
            net:steady_state(probe_X)
            return (net:steady_measures())
          end,
        }
      end
      local batches = data.batches(ds.train, opts.batch, {generator = nm.generator(opts.seed + 1)})
      local bar = progress.new{total = epochs * #batches, label = dname .. " " .. variant}
      local t0, done = nm.clock(), 0
      local last
      for epoch = 1, epochs do
        for b in batches:epoch() do
          learner.train(b)
          done = done + 1
          bar:update(done)
        end
        last = {dataset = dname, variant = variant, epoch = epoch,
                test_error = learner.errors(ds.test), seconds = nm.clock() - t0}
        if learner.apical then last.apical_energy_free = learner.apical() end
        run:log(last)
      end
      bar:finish()
      final[dname][variant] = {test_error = last.test_error, train_error = learner.errors(ds.train),
                               epochs = epochs, seconds = nm.clock() - t0}
    end
  end
  local rows = run:metrics()
  for _, dname in ipairs(opts.datasets) do
    local sel = {}
    for _, r in ipairs(rows) do if r.dataset == dname then sel[#sel + 1] = r end end
    maybe_plot("curves", sel, {out = run:path("test_error_" .. dname .. ".png"), x = "epoch",
      y = "test_error", group = "variant", title = "Fig. 3: test error, " .. dname, xlabel = "epoch"})
  end
  run:finish(final)
  local lines = {"Fig. 3 test error (%):  variant        paper (full MNIST)" ..
                 table.concat((function()
                   local h = {}
                   for _, d in ipairs(opts.datasets) do h[#h + 1] = format("  %12s", d) end
                   return h
                 end)())}
  local names = {microcircuit = "784-500-500-10 microcircuit", bp = "784-500-500-10 backprop",
                 shallow = "shallow (output only)", frozen = "hidden-to-hidden frozen",
                 topdown = "784-1000-10, learned W_down"}
  for _, v in ipairs(opts.variants) do
    local cells = {}
    for _, d in ipairs(opts.datasets) do
      local f = final[d][v]
      cells[#cells + 1] = format("  %12s", f and format("%.2f", 100 * f.test_error) or "-")
    end
    lines[#lines + 1] = format("  %-30s %6.2f%s", names[v], PAPER[v], table.concat(cells))
  end
  lines[#lines + 1] = "  (mnist = the 8,000/2,000 subset; epochs: mnist " .. opts.epochs ..
                      ", fashion " .. opts.fashion_epochs .. "; the paper trained on 60,000 MNIST digits)"
  summary[#summary + 1] = table.concat(lines, "\n")
end

-- ------------------------------------------------------------ main

local t_start = nm.clock()
if wanted.fig1 then fig1() end
if wanted.figS1 then figS1() end
if wanted.fig2 then fig2() end
if wanted.theory then theory() end
if wanted.fig3 then fig3() end
print(table.concat(summary, "\n"))
print(format("results in %s/ (%.0f s)", opts.out, nm.clock() - t_start))
