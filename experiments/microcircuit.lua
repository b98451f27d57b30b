-- experiments/microcircuit.lua: dendritic cortical microcircuits
-- (Sacramento, Costa, Bengio & Senn 2018, NeurIPS; doc/models/
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
--   ./neuromic experiments/microcircuit.lua --figure fig2 --out results/mc --resume
--   ./neuromic experiments/microcircuit.lua --figure fig2 --rules up=./my_rule.lua
--   ./neuromic experiments/microcircuit.lua --figure fig2 --fig2-models microcircuit,fa,fa:lr=30
--
-- --rules pathway=rule,... gives a plastic pathway (up, ip, pi, down) a
-- circuit rule of the microcircuit other than the paper's (a name from
-- rules/ or a path to a rule file); every figure then runs with it (the
-- same tables, plots and checkpoints).
--
-- Each figure writes OUT/<figure>/ (metrics.jsonl/.csv, results.json,
-- plots); OUT/results.json gathers the headline figures of the figures
-- asked for (final.summary, final.plots). Fig. S1, 2 and 3 checkpoint every
-- --checkpoint-every patterns (minibatches in Fig. 3) and on SIGINT/SIGTERM
-- (exit 130/143); --resume skips the figures that finished and continues
-- the others bit-identically (same weights, same metrics except timings).
-- Fig. 1 and the theory check take a second and start over.

local nm = require "neuromic"
local cli = require "nm.cli"
local json = require "nm.json"
local results = require "nm.results"
local progress = require "nm.progress"
local plot = require "nm.plot"
local data = require "nm.data"
local nn = require "nm.nn"
local measures = require "nm.measures"
local mc = require "nm.models.microcircuit"

local format = string.format

local FIGURES = {"fig1", "figS1", "fig2", "theory", "fig3"}
local VARIANTS = {microcircuit = true, bp = true, shallow = true, frozen = true, topdown = true,
                  bp_frozen = true}
local FIG2_MODELS = {microcircuit = true, shallow = true, bp = true, fa = true, fa_att = true}

local opts = cli.parse(arg, {
  name = "microcircuit",
  description = "Dendritic cortical microcircuits (Sacramento et al. 2018): Fig. 1, S1, 2, 3 " ..
                "and the small-lambda theory check.",
  options = {
    {"figure", "list", {"all"}, "figures: fig1, figS1, fig2, theory, fig3 or all", item = "string"},
    {"plot", "bool", true, "write plots (gnuplot)"},
    {"noise", "string", "dt", "noise form of the full dynamics (Fig. 1, S1, 2): dt (sigma dt xi " ..
     "per step, as the reimplementations) or sqrt_dt (Euler-Maruyama sigma sqrt(dt) xi)",
     choices = {"dt", "sqrt_dt"}},
    {"rate", "string", "scaled", "soft rectifier of Fig. 1 and S1: scaled (0.1 log(1 + " ..
     "exp(u - theta)), as the reimplementations) or paper (log(1 + exp(u - theta)), unscaled; " ..
     "then the initial weights are 10 times smaller, for the same potentials, and the learning " ..
     "rates the paper's unless given: at the same weights every update grows with the square " ..
     "of the scale)", choices = {"scaled", "paper"}},
    {"tau-trgt", "number", 3, "ms: low-pass time constant of the target potentials (Fig. 1, 2; " ..
     "0: the target as given, as in the paper's equations; 3: filtered like the inputs)", min = 0},
    {"checkpoint-every", "int", 2000, "patterns (Fig. S1, 2) or minibatches (Fig. 3) between " ..
     "checkpoints (0: only on SIGINT/SIGTERM)", quick = 0, min = 0},
    {"rules", "list", {}, "circuit rules per pathway, pathway=rule (a name from rules/ or a path " ..
     "to a rule file), e.g. up=./my_rule.lua,pi=apical_silencing; unnamed pathways keep the " ..
     "paper's (up, ip, down: dendritic_prediction; pi: apical_silencing)", item = "string"},
    {"compiled", "bool", true, "run every rule's step as the C kernel the rule compiler " ..
     "generates from it (doc/compiler.md); --no-compiled: the rules' Lua steps (the reference, " ..
     "slower)"},
    {"stop-after", "int", 0, "send SIGTERM to itself after N patterns or minibatches of each " ..
     "checkpointed figure (tests --resume)", min = 0},
    -- Fig. 1
    {"fig1-learn-ms", "number", 3000, "Fig. 1: ms with the target shown", min = 1},
    {"fig1-eta-scale", "number", 1000, "Fig. 1: W_up learning rates as Fig. 2's times this " ..
     "(W_ip, W_pi stay in the analytic self-predicting state)", min = 0},
    -- Fig. S1
    {"s1-patterns", "int", 3000, "Fig. S1: random input patterns of 100 ms", quick = 100, min = 1},
    {"s1-every", "int", 50, "Fig. S1: patterns between measurements", quick = 10, min = 1},
    {"s1-eta-scale", "number", 10, "Fig. S1: W_ip, W_pi rates as the paper's (0.0002375, " ..
     "0.0005 per ms) times this", min = 0},
    {"s1-theta", "number", 0, "Fig. S1: threshold theta of the soft rectifier (Fig. 2: 3)"},
    -- Fig. 2
    {"fig2-patterns", "int", 20000, "Fig. 2: training patterns of 100 ms", quick = 100, min = 1},
    {"fig2-every", "int", 500, "Fig. 2: patterns between evaluations", quick = 25, min = 1},
    {"fig2-test", "int", 500, "Fig. 2: unseen test inputs", quick = 100, min = 1},
    {"fig2-sigma", "number", 0.3, "Fig. 2: noise amplitude", min = 0},
    -- Per pathway: the paper's rates barely move the soft rectifier's small
    -- rates in 20,000 patterns, but the interneuron pathways must stay slow
    -- enough to track the teaching signal, not cancel it (sweep in
    -- doc/reports/microcircuit.md)
    {"fig2-scale-up", "number", 300, "Fig. 2: W_up learning rates as the paper's (0.0011875, " ..
     "0.0005 per ms) times this", min = 0},
    {"fig2-scale-ip", "number", 30, "Fig. 2: W_ip learning rate as the paper's (0.0011875) " ..
     "times this", min = 0},
    {"fig2-scale-pi", "number", 3, "Fig. 2: W_pi learning rate as the paper's (0.0059375) " ..
     "times this", min = 0},
    {"fig2-eta-down", "number", 0, "Fig. 2: W_down learning rate per ms (0: fixed random " ..
     "top-down weights, the feedback-alignment regime)", min = 0},
    {"fig2-decay", "number", 0, "Fig. 2: over the last fraction F of the patterns every learner's " ..
     "rates fall linearly to 0 (0: constant rates; an item of --fig2-models may set its own)", min = 0},
    {"fig2-pi-start", "string", "random", "Fig. 2: W_pi at the start: random (U(-1, 1)) or " ..
     "mirror (-W_down, the paper's 'top-down weights = - interneuron-to-pyramidal weights'; " ..
     "with --fig2-scale-pi 0 it stays so, and only W_ip has to learn the self-predicting state)",
     choices = {"random", "mirror"}},
    {"fig2-init-up", "list", {1, 1}, "Fig. 2: W_up[1], W_up[2] ~ U(-a, a), a per layer (BP and " ..
     "FA alike; W_down, FA's feedback U(-1, 1))", item = "number"},
    {"fig2-bp-lr", "number", 20, "Fig. 2: learning rate of BP and FA (online, per pattern)", min = 0},
    {"fig2-att-lr", "number", 100, "Fig. 2: learning rate of FA with the microcircuit's " ..
     "attenuation (fa_att; its gradients are smaller by the attenuation factors; 150 diverges)",
     min = 0},
    {"fig2-models", "list", {"microcircuit", "shallow", "bp", "fa", "fa_att"}, "Fig. 2: learners " ..
     "(microcircuit, shallow, bp, fa, fa_att: FA with the microcircuit's attenuation), each " ..
     "optionally with its own settings, MODEL:lr=X:decay=F (lr: bp, fa, fa_att; decay as " ..
     "--fig2-decay), e.g. fa,fa:lr=30,microcircuit:decay=0.5", item = "string"},
    -- theory
    {"theory-batch", "int", 200, "theory: inputs in the probe batch", quick = 50, min = 1},
    -- Fig. 3
    {"datasets", "list", {"mnist", "fashion"}, "Fig. 3: data sets (mnist: 60,000 / 10,000; " ..
     "mnist-subset: the 8,000 / 2,000 subset; fashion)", item = "string", quick = {"mnist-subset"}},
    {"variants", "list", {"microcircuit", "bp", "shallow", "frozen", "topdown"},
     "Fig. 3: learners (microcircuit, bp, shallow, frozen: W_up[2] fixed, topdown; also " ..
     "bp_frozen: backprop with the hidden-to-hidden weights fixed, frozen's reference)",
     item = "string"},
    {"frozen-ip", "string", "fixed", "Fig. 3 frozen: W_ip[1], the interneurons that predict the " ..
     "frozen layer 2, fixed with it (the self-predicting state stays exact) or plastic (as " ..
     "before: they learn the nudged layer-2 potentials, which W_up[2] never follows; the " ..
     "apical error they leave drove one seed of five to a collapse)", choices = {"fixed", "plastic"}},
    {"epochs", "int", 20, "Fig. 3: epochs on MNIST (or the subset)", quick = 2, min = 1},
    {"fashion-epochs", "int", 4, "Fig. 3: epochs on Fashion-MNIST", quick = 1, min = 1},
    {"train-subset", "int", 0, "Fig. 3: first N training images (0: all)", quick = 1000, min = 0},
    {"test-subset", "int", 0, "Fig. 3: first N test images (0: all)", quick = 500, min = 0},
    {"batch", "int", 10, "Fig. 3: minibatch size", min = 1},
    -- Layer 2 learns fastest: its apical error is attenuated by the
    -- nudging factors and W_down on its way from the output (5-epoch sweep
    -- in the README; 0.5, 0.12, 0.06 before gave 10.6% on the subset).
    {"eta-up", "list", {2.0, 4.0, 0.06}, "Fig. 3: W_up learning rates per layer (per image)",
     item = "number"},
    {"eta-ip", "list", {0.12, 0.06}, "Fig. 3: W_ip learning rates per hidden layer", item = "number"},
    {"init-up", "list", {1.0, 0.2, 0.2}, "Fig. 3: W_up ~ U(-a, a), a per layer (BP alike)",
     item = "number"},
    {"init-down", "number", 0.42, "Fig. 3: W_down ~ U(-a, a)", min = 0},
    {"eta-down", "number", 0.0005, "Fig. 3 topdown: W_down learning rate", min = 0},
    {"eta-pi", "number", 0.1, "Fig. 3 topdown: W_pi learning rate (keeps vA silent as W_down " ..
     "changes)", min = 0},
    {"bp-lr", "number", 0.5, "Fig. 3: BP learning rate (batch mean; 0.7 nearly " ..
     "diverges in the first epoch, 1.0 does)", min = 0},
    {"bp-loss", "string", "mse", "Fig. 3: BP's output and loss: mse (logistic outputs, squared " ..
     "error to the targets 0.1 / 0.8, the microcircuit's) or xent (softmax, cross-entropy to " ..
     "one-hot targets; --bp-lr 0.3 suits it)", choices = {"mse", "xent"}},
  },
})

-- The options each figure's run depends on (its results.json records
-- them; a checkpoint or a finished figure is reused only when they are
-- the same), besides the shared ones.
local SHARED_OPTIONS = {"seed", "quick", "plot", "checkpoint_every", "stop_after", "threads", "out",
                        "resume", "overwrite", "rules", "compiled"}
local FIGURE_OPTIONS = {
  fig1 = {"fig1_learn_ms", "fig1_eta_scale", "noise", "rate", "tau_trgt"},
  figS1 = {"s1_patterns", "s1_every", "s1_eta_scale", "s1_theta", "noise", "rate"},
  fig2 = {"fig2_patterns", "fig2_every", "fig2_test", "fig2_sigma", "fig2_scale_up", "fig2_scale_ip",
          "fig2_scale_pi", "fig2_eta_down", "fig2_bp_lr", "fig2_att_lr", "fig2_models",
          "fig2_init_up", "fig2_pi_start", "fig2_decay", "noise", "tau_trgt"},
  theory = {"theory_batch"},
  fig3 = {"datasets", "variants", "epochs", "fashion_epochs", "train_subset", "test_subset", "batch",
          "eta_up", "eta_ip", "init_up", "init_down", "eta_down", "eta_pi", "bp_lr", "bp_loss",
          "frozen_ip"},
}
do   -- every option belongs somewhere (a new option must be listed above)
  local known = {figure = true}
  for _, k in ipairs(SHARED_OPTIONS) do known[k] = true end
  for _, list in pairs(FIGURE_OPTIONS) do for _, k in ipairs(list) do known[k] = true end end
  for k in pairs(cli.plain(opts)) do
    assert(known[k], "microcircuit.lua: option '" .. k .. "' is in no figure's list")
  end
end

local function usage_error(msg)
  io.stderr:write("microcircuit: ", msg, "\n")
  os.exit(2)
end

local wanted = {}
for _, f in ipairs(opts.figure) do
  if f == "all" then
    for _, g in ipairs(FIGURES) do wanted[g] = true end
  else
    local ok = false
    for _, g in ipairs(FIGURES) do ok = ok or g == f end
    if not ok then usage_error(format("unknown figure '%s' (fig1, figS1, fig2, theory, fig3, all)", f)) end
    wanted[f] = true
  end
end
for _, v in ipairs(opts.variants) do
  if not VARIANTS[v] then usage_error(format("unknown variant '%s'", v)) end
end
-- With the paper's unscaled rate function the paper's own learning rates
-- (scale 1) are the defaults: the scales above make up for the 0.1 of
-- the scaled one, which slows every rule a hundredfold.
if opts.rate == "paper" then
  for _, k in ipairs{"fig1_eta_scale", "s1_eta_scale"} do
    if not opts._explicit[k] then opts[k] = 1 end
  end
end
if opts.fig2_decay > 1 then usage_error("--fig2-decay must be in [0, 1]") end
if #opts.fig2_init_up ~= 2 then
  usage_error(format("--fig2-init-up needs 2 values (W_up[1], W_up[2]), got %d", #opts.fig2_init_up))
end
for _, a in ipairs(opts.fig2_init_up) do
  if not (a >= 0) then usage_error("--fig2-init-up: every value must be >= 0") end
end
-- Fig. 2 learners: each item of --fig2-models is MODEL[:lr=X][:decay=F],
-- its own learner with its own rate (bp, fa, fa_att) or annealing, named
-- by the item as given (results, metrics and plots), so that one run
-- compares tuned learners on the same seed.
local FIG2 = {}
do
  local seen = {}
  for _, item in ipairs(opts.fig2_models) do
    local model, rest = item:match("^([%w_]+)(.*)$")
    if not FIG2_MODELS[model] then
      usage_error(format("unknown Fig. 2 model '%s' (microcircuit, shallow, bp, fa, fa_att, " ..
                         "each optionally :lr=X, :decay=F)", item))
    end
    if seen[item] then usage_error(format("--fig2-models: '%s' is given twice", item)) end
    seen[item] = true
    local spec = {id = item, model = model}
    for key, value in (rest .. ":"):gmatch(":([^:=]*)=([^:]*)") do
      local x = tonumber(value)
      if key ~= "lr" and key ~= "decay" then
        usage_error(format("--fig2-models '%s': unknown setting '%s' (lr, decay)", item, key))
      end
      if key == "lr" and (model == "microcircuit" or model == "shallow") then
        usage_error(format("--fig2-models '%s': lr is for bp, fa, fa_att (the microcircuit's " ..
                           "rates: --fig2-scale-up, -ip, -pi)", item))
      end
      if not x or x < 0 or x ~= x or (key == "decay" and x > 1) then
        usage_error(format("--fig2-models '%s': %s must be a number%s", item, key,
                           key == "decay" and " in [0, 1]" or " >= 0"))
      end
      if spec[key] then usage_error(format("--fig2-models '%s': %s given twice", item, key)) end
      spec[key] = x
    end
    -- everything after the model must have been key=value pairs
    if (rest .. ":"):gsub(":[^:=]*=[^:]*", "") ~= ":" then
      usage_error(format("--fig2-models '%s': settings are :lr=X or :decay=F", item))
    end
    spec.decay = spec.decay or opts.fig2_decay
    if model == "bp" or model == "fa" then spec.lr = spec.lr or opts.fig2_bp_lr
    elseif model == "fa_att" then spec.lr = spec.lr or opts.fig2_att_lr end
    FIG2[#FIG2 + 1] = spec
  end
end

-- The circuit rule of each pathway named with --rules (the others: the
-- paper's), each checked before any figure runs.
local RULES = {}
for _, item in ipairs(opts.rules) do
  local pathway, spec = item:match("^(%w+)=(.+)$")
  if not pathway then usage_error(format("--rules: '%s' is not pathway=rule (up, ip, pi, down)", item)) end
  if not mc.default_rules[pathway] then
    usage_error(format("--rules: no pathway '%s' (up, ip, pi, down)", pathway))
  end
  if RULES[pathway] then usage_error(format("--rules: pathway '%s' given twice", pathway)) end
  local ok, err = pcall(mc.circuit_rule, pathway, spec)
  if not ok then    -- the message's first line, without where it was raised
    usage_error("--rules: " .. tostring(err):match("^[^\n]*"):gsub("^[^ ]-%.lua:%d+: ", "")
                :gsub("^microcircuit: ", ""))
  end
  RULES[pathway] = spec
end


-- The run of the whole invocation: OUT/results.json with the headline
-- numbers of every figure asked for, written afresh each time (with
-- --resume, finished figures contribute the numbers they recorded).
local top
do
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.resume, o.overwrite = false, opts.overwrite or opts.resume   -- afresh on --resume too
  top = results.open(o, {name = "microcircuit", dataset = "see OUT/<figure>/results.json"})
end

-- The paper's Fig. 2 rates (1/ms) and the microcircuit softplus.
local FIG2_ETA = {up = {0.0011875, 0.0005}, ip = 0.0011875, pi = 0.0059375}

-- The soft rectifier of Fig. 1 and S1 (--rate): its output scale gamma,
-- and theta as given (Fig. 1: 3; Fig. S1: --s1-theta); the initial
-- weights' range from rates (all but W_up[1], whose inputs are given) goes
-- with 1/gamma, so that the potentials are the same (with the paper's
-- scale and weights U(-1, 1) the loop through the apical dendrites has a
-- gain of ~10: the potentials diverge without learning).
local GAMMA = {scaled = mc.rates.softplus.gamma, paper = 1}
local function softplus(theta)
  return {"softplus", gamma = GAMMA[opts.rate], theta = theta}
end
local a = mc.rates.softplus.gamma / GAMMA[opts.rate]
local INIT = {up = {1, a}, down = a}

-- open_run(fig, info) -> run, or nil and the final figures of a finished
-- run of this figure with the same options (--resume). The figure's run
-- directory is OUT/<fig>.
local function open_run(fig, info)
  local o = {_name = opts._name, _argv = opts._argv}
  for _, k in ipairs(SHARED_OPTIONS) do o[k] = opts[k] end
  for _, k in ipairs(FIGURE_OPTIONS[fig]) do o[k] = opts[k] end
  o.out = opts.out .. "/" .. fig
  if opts.resume then
    local ok, old = pcall(json.read_file, o.out .. "/results.json")
    if ok and type(old) == "table" and old.status == "finished" then
      local diff = results.options_diff(type(old.options) == "table" and old.options or {}, o)
      if diff then
        cli.error(format("%s/results.json holds a finished run with other options (%s); " ..
                         "use --overwrite to replace it", o.out, diff))
      end
      io.stderr:write(format("%s: finished before; kept\n", o.out))
      return nil, old.final or {}
    end
  end
  info = info or {}
  info.name = "microcircuit-" .. fig
  info.checkpoint_every = opts.checkpoint_every
  -- A stopped figure (SIGINT/SIGTERM, or --stop-after N: run:poll sends
  -- SIGTERM at step N) marks OUT/results.json stopped too.
  info.on_stop = function() top:write("stopped") end
  return results.open(o, info)
end

local function maybe_plot(plots, kind, rows, o)
  if not opts.plot then return end
  for _, p in ipairs(plot[kind](rows, o)) do plots[#plots + 1] = p end
end

-- CRC-32 of the bytes of a list of tensors: a fingerprint of final
-- weights (resumed runs must end with the same).
local function weights_crc(list)
  local crc = 0
  for _, W in ipairs(list) do crc = nm.crc32(W:tobytes(), crc) end
  return crc
end

local function mc_weights(net)
  local list = {}
  for _, kind in ipairs{"up", "down", "ip", "pi"} do
    for k = 1, #net[kind] do
      list[#list + 1] = net[kind][k].W
      if net[kind][k].b then list[#list + 1] = net[kind][k].b end
    end
  end
  return list
end

local function mlp_weights(net)
  local list = {}
  for l = 1, net.L do
    list[#list + 1] = net.conns[l].W
    if net.conns[l].b then list[#list + 1] = net.conns[l].b end
  end
  return list
end

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

local function fig1(run)
  run:resume()                                   -- (no checkpoints: starts over)
  local s = opts.fig1_eta_scale
  local net = mc.new{sizes = {30, 50, 10}, gen = nm.generator(opts.seed), sigma = 0.1,
                     rate = softplus(), init = INIT, tau_trgt = opts.tau_trgt,
                     noise = opts.noise, self_predicting = true, rules = RULES,
                     compiled = opts.compiled,
                     eta = {up = {FIG2_ETA.up[1] * s, FIG2_ETA.up[2] * s}, ip = FIG2_ETA.up[2] * s}}
  local g = nm.generator(opts.seed + 1)
  local x = nm.zeros(1, 30, "float64"):uniform(g, -1, 1)
  -- target potentials in the rising part of the soft rectifier (theta = 3),
  -- where rates and their slopes are large enough to see learning
  local ut = nm.zeros(1, 10, "float64"):uniform(g, 1, 5)
  local x1, ut1 = x:select(1, 1), ut:select(1, 1)
  local out = net.pyr[2]
  local t_ms, rows = 0, {}
  local function phase(name, ms, target)
    local steps = math.floor(ms / net.p.dt + 0.5)
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
    plots = {},
  }
  maybe_plot(final.plots, "curves", rows, {out = run:path("traces_output.png"), x = "t_ms",
    y = {"u_out1", "u_trgt1", "u_out2", "u_trgt2"}, title = "Fig. 1: output potentials and targets",
    xlabel = "time (ms)", ylabel = "potential"})
  maybe_plot(final.plots, "curves", rows, {out = run:path("traces_apical.png"), x = "t_ms",
    y = {"vA1", "vA2", "vA3"}, title = "Fig. 1: apical potentials of hidden cells",
    xlabel = "time (ms)", ylabel = "vA"})
  maybe_plot(final.plots, "curves", rows, {out = run:path("apical_energy.png"), x = "t_ms",
    y = {"apical_energy", "output_error"}, logy = true,
    title = "Fig. 1: ||vA||^2 and ||u_out - u_trgt||^2", xlabel = "time (ms)"})
  return final
end

-- ------------------------------------------------------------ Fig. S1

local function figS1(run)
  local rate = softplus(opts.s1_theta)
  local k = opts.s1_eta_scale
  local net = mc.new{sizes = {30, 50, 10}, gen = nm.generator(opts.seed), sigma = 0.1, rate = rate, init = INIT,
                     noise = opts.noise, rules = RULES, compiled = opts.compiled,
                     eta = {ip = 0.0002375 * k, pi = 0.0005 * k}}
  local g = nm.generator(opts.seed + 1)
  local x = nm.zeros(30, "float64")
  local p = net.p
  local c = p.g_B * (p.g_lk + p.g_D) / (p.g_D * (p.g_lk + p.g_B))
  local ip_target = net.up[2].W:clone():scale(c)
  local minus_down = net.down[1].W:clone():scale(-1)
  -- the checkpointed state: position, accumulators, weights and traces,
  -- the input and noise streams
  local s = run:resume()
  if s then
    net:load_state(s.net)
    net.noise_gen:set_state(s.noise)
    g:set_state(s.input)
  else
    s = {pattern = 0, va_acc = 0, mm_acc = 0, n_acc = 0}
  end
  local function state()
    s.net, s.noise, s.input = net:state(), net.noise_gen:state(), g:state()
    return s
  end
  local bar = progress.new{total = opts.s1_patterns, label = "Fig. S1"}
  for pat = s.pattern + 1, opts.s1_patterns do
    x:uniform(g, -1, 1)
    net:run(x, 500)
    for _ = 1, 10 do                               -- second half: sample every 5 ms
      net:run(x, 50)
      local va, mm = net:apical_energy(), net:interneuron_mismatch()
      s.va_acc, s.mm_acc, s.n_acc = s.va_acc + va, s.mm_acc + mm, s.n_acc + 1
    end
    if pat % opts.s1_every == 0 or pat == 1 then
      s.last = {pattern = pat, apical_energy = s.va_acc / s.n_acc,
                interneuron_mismatch = s.mm_acc / s.n_acc,
                angle_pi = measures.angle(net.pi[1].W, minus_down),
                angle_ip = measures.angle(net.ip[1].W, ip_target)}
      run:log(s.last)
      s.va_acc, s.mm_acc, s.n_acc = 0, 0, 0
    end
    s.pattern = pat
    bar:update(pat)
    run:poll(pat, state)
  end
  bar:finish()
  -- the same measures in the analytic state, for reference (same noise level)
  local ref = mc.new{sizes = {30, 50, 10}, gen = nm.generator(opts.seed), sigma = 0.1, rate = rate, init = INIT,
                     noise = opts.noise,
                     self_predicting = true}
  local va_ref, mm_ref = 0, 0
  for _ = 1, 20 do
    x:uniform(g, -1, 1)
    ref:run(x, 1000)
    va_ref, mm_ref = va_ref + ref:apical_energy() / 20, mm_ref + ref:interneuron_mismatch() / 20
  end
  local rows = run:metrics()
  local first, last = rows[1], s.last
  local final = {apical_first = first.apical_energy, apical_last = last.apical_energy,
                 mismatch_first = first.interneuron_mismatch, mismatch_last = last.interneuron_mismatch,
                 angle_pi_last = last.angle_pi, angle_ip_last = last.angle_ip,
                 apical_analytic_state = va_ref, mismatch_analytic_state = mm_ref,
                 weights_crc32 = weights_crc(mc_weights(net)), plots = {}}
  maybe_plot(final.plots, "curves", rows, {out = run:path("self_predicting.png"), x = "pattern",
    y = {"apical_energy", "interneuron_mismatch"}, logy = true,
    title = "Fig. S1: learning the self-predicting state", xlabel = "pattern (100 ms each)"})
  maybe_plot(final.plots, "curves", rows, {out = run:path("angles.png"), x = "pattern",
    y = {"angle_pi", "angle_ip"}, title = "Fig. S1: angle to the analytic weights (degrees)",
    xlabel = "pattern"})
  return final
end

-- ------------------------------------------------------------ Fig. 2

-- The microcircuit's soft rectifier as nn activations, so BP and FA run on
-- the same network function: without attenuation, and with the
-- microcircuit's (a pyramidal soma sits at c vB, c = g_B / (g_lk + g_B +
-- g_A) in a hidden layer, g_B / (g_lk + g_B) at the output), so that FA
-- learns the very function the microcircuit has, from the same weights.
do
  local net = mc.new{sizes = {1, 1, 1}, gen = nm.generator(1)}
  local f = net:factors()
  nn.activations.microcircuit_softplus = net:activation(1)
  nn.activations.microcircuit_softplus_hidden = net:activation(f.cB)
  nn.activations.microcircuit_softplus_output = net:activation(f.cB_out)
end

local function fig2(run)
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
  local P, every = opts.fig2_patterns, opts.fig2_every

  -- The training stream, the same inputs for every model: x ~ U(-1, 1)
  -- and the teacher's output potentials.
  local stream_gen = nm.generator(1)
  local x, u = nm.zeros(1, 30, "float64"), nm.zeros(1, 10, "float64")
  local function next_pattern()
    x:uniform(stream_gen, -1, 1)
    teacher.potential(u, x)
    return x, u
  end

  -- Each learner: train(x, u) on one pattern, evaluate(pattern) -> a
  -- logged row, state()/load(st) for checkpoints, weights() for the CRC.
  local function microcircuit(spec)
    local name, su = spec.id, opts.fig2_scale_up
    local eta = {up = {spec.model == "shallow" and 0 or FIG2_ETA.up[1] * su, FIG2_ETA.up[2] * su},
                 ip = FIG2_ETA.ip * opts.fig2_scale_ip, pi = FIG2_ETA.pi * opts.fig2_scale_pi,
                 down = opts.fig2_eta_down}
    local noise = nm.generator(opts.seed + 400)
    local net = mc.new{sizes = {30, 50, 10}, gen = nm.generator(opts.seed), sigma = opts.fig2_sigma,
                       noise = opts.noise, rules = RULES, eta = eta, noise_gen = noise,
                       compiled = opts.compiled,
                       tau_trgt = opts.tau_trgt, init = {up = opts.fig2_init_up, down = 1}}
    if opts.fig2_pi_start == "mirror" then net.pi[1].W:scale(net.down[1].W, -1) end
    -- the analytic self-predicting weights: W_pi = -W_down, W_ip = c W_up[2]
    local p = net.p
    local c_ip = p.g_B * (p.g_lk + p.g_D) / (p.g_D * (p.g_lk + p.g_B))
    local sp_pi, sp_ip = net.down[1].W:clone(), net.up[2].W:clone()
    return {
      train = function(xp, up) net:run(xp:select(1, 1), 1000, up:select(1, 1)) end,
      rules = function()
        local list = {}
        for _, kind in ipairs(mc.pathways) do
          for _, c in ipairs(net[kind]) do list[#list + 1] = c.rule end
        end
        return list
      end,
      evaluate = function(pat)
        local bs = net:steady_state(Xtest, nil, 30)   -- the noise-free fixed point, no target
        local row = {model = name, pattern = pat, test_error = test_error(bs.R[2]),
                     angle = measures.angle(net.up[2].W, net.down[1].W:t())}
        -- the self-predicting state: apical potential and interneuron
        -- mismatch without a target (means over the test inputs), angles
        -- to the analytic weights
        row.apical_free, row.mismatch_free = net:steady_measures()
        sp_pi:scale(net.down[1].W, -1)
        sp_ip:scale(net.up[2].W, c_ip)
        row.sp_angle_pi = measures.angle(net.pi[1].W, sp_pi)
        row.sp_angle_ip = measures.angle(net.ip[1].W, sp_ip)
        row.test_error_ff = test_error(net:forward(Xtest))   -- the feed-forward output
        return row
      end,
      state = function() return {net = net:state(), noise = noise:state()} end,
      load = function(st) net:load_state(st.net); noise:set_state(st.noise) end,
      weights = function() return mc_weights(net) end,
    }
  end

  -- BP's and FA's weights drawn as the microcircuit's W_up (layer l:
  -- U(-a_l, a_l), a = --fig2-init-up), FA's feedback as W_down: U(-1, 1).
  local function layer_uniform()
    local l = 0
    return function(W, _, g)
      l = l + 1
      local a = opts.fig2_init_up[l] or 1
      W:uniform(g, -a, a)
    end
  end

  local function backprop(spec)
    local name = spec.id
    local rulename = spec.model == "bp" and "backprop" or "fa"
    local att = spec.model == "fa_att"
    local net = nn.mlp{sizes = {30, 50, 10},
                       act = att and "microcircuit_softplus_hidden" or "microcircuit_softplus",
                       out = att and "microcircuit_softplus_output" or "microcircuit_softplus",
                       loss = "mse", rule = rulename, bias = false,
                       params = {eta = spec.lr},
                       gen = nm.generator(opts.seed), dtype = "float64", init = layer_uniform()}
    local R = nm.zeros(1, 10, "float64")
    return {
      train = function(xp, up)
        R:copy(up)
        probe:phi(R, R)
        net:train_batch(xp, R)
      end,
      rules = function()
        local list = {}
        for _, c in ipairs(net.conns) do list[#list + 1] = c.rule end
        return list
      end,
      evaluate = function(pat)
        local row = {model = name, pattern = pat, test_error = test_error(net:forward(Xtest))}
        if rulename == "fa" then row.angle = measures.feedback_angles(net, "fa")[1] end
        return row
      end,
      state = function() return {net = net:state()} end,
      load = function(st) net:load_state(st.net) end,
      weights = function() return mlp_weights(net) end,
    }
  end

  -- The checkpointed state: the model in progress and the pattern in it,
  -- its learner state, the stream, the last evaluation, the figures of the
  -- models done. s.step counts patterns over all models.
  local s = run:resume()
  local resumed = s ~= nil
  if not s then s = {model = 1, pattern = 0, step = 0, final = {}} end
  local final = s.final
  for mi = s.model, #FIG2 do
    local spec = FIG2[mi]
    local name = spec.id
    local learner = (spec.model == "microcircuit" or spec.model == "shallow") and microcircuit(spec)
                    or backprop(spec)
    -- --fig2-decay (or the item's decay): each rule's rate times a factor
    -- of the pattern number
    local rules, base = learner.rules(), {}
    for i, r in ipairs(rules) do base[i] = r.p.eta end
    local seconds = 0
    if resumed then
      learner.load(s.learner)
      stream_gen:set_state(s.stream)
      seconds = s.seconds
      resumed = false
    else
      stream_gen:set_state(nm.generator(opts.seed + 300):state())
      s.pattern, s.last = 0, learner.evaluate(0)
      run:log(s.last)
    end
    s.model = mi
    local function state()
      s.learner, s.stream, s.seconds = learner.state(), stream_gen:state(), seconds
      return s
    end
    local bar = progress.new{total = P, label = "Fig. 2 " .. name}
    local decay_from = P * (1 - spec.decay)
    for pat = s.pattern + 1, P do
      if spec.decay > 0 then
        local factor = math.min(1, (P - pat + 1) / (P - decay_from))
        for i, r in ipairs(rules) do r.p.eta = base[i] * factor end
      end
      local t0 = nm.sys.clock()
      learner.train(next_pattern())
      seconds = seconds + (nm.sys.clock() - t0)
      if pat % every == 0 or pat == P then
        s.last = learner.evaluate(pat)
        run:log(s.last)
      end
      s.pattern, s.step = pat, s.step + 1
      bar:update(pat)
      run:poll(s.step, state)
    end
    bar:finish()
    final[name] = {test_error = s.last.test_error, test_error_ff = s.last.test_error_ff,
                   angle = s.last.angle, seconds = seconds, lr = spec.lr, decay = spec.decay,
                   apical_free = s.last.apical_free, mismatch_free = s.last.mismatch_free,
                   sp_angle_pi = s.last.sp_angle_pi, sp_angle_ip = s.last.sp_angle_ip,
                   weights_crc32 = weights_crc(learner.weights())}
    s.learner, s.model, s.pattern = nil, mi + 1, 0
  end
  final.test_error_initial = run:metrics()[1] and run:metrics()[1].test_error
  final.patterns = P
  final.plots = {}
  local rows = run:metrics()
  maybe_plot(final.plots, "curves", rows, {out = run:path("test_error.png"), x = "pattern",
    y = "test_error", group = "model", logy = true,
    title = "Fig. 2: test error ||r_N - r_trgt||^2 (noise-free)", xlabel = "pattern (100 ms each)"})
  maybe_plot(final.plots, "curves", rows, {out = run:path("alignment.png"), x = "pattern", y = "angle",
    group = "model", title = "Fig. 2: angle between W_up[2]^T and W_down[1] (B for FA), degrees",
    xlabel = "pattern"})
  -- the self-predicting state of the first microcircuit learner
  local mrows, first_mc = {}, nil
  for _, spec in ipairs(FIG2) do
    if spec.model == "microcircuit" then first_mc = first_mc or spec.id end
  end
  for _, r in ipairs(rows) do if r.model == first_mc then mrows[#mrows + 1] = r end end
  if #mrows > 0 then
    maybe_plot(final.plots, "curves", mrows, {out = run:path("self_predicting.png"), x = "pattern",
      y = {"apical_free", "mismatch_free"}, logy = true,
      title = "Fig. 2: without target, ||vA||^2 and ||u_2 - uI||^2 (test inputs)",
      xlabel = "pattern (100 ms each)"})
    maybe_plot(final.plots, "curves", mrows, {out = run:path("self_predicting_angles.png"),
      x = "pattern", y = {"sp_angle_pi", "sp_angle_ip"},
      title = "Fig. 2: angles of W_pi, W_ip to the self-predicting weights (degrees)",
      xlabel = "pattern"})
  end
  return final
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

local THEORY_G = {0.8, 0.4, 0.2, 0.1, 0.05, 0.02, 0.01, 0.001}

local function theory(run)
  run:resume()                                   -- (no checkpoints: starts over)
  local sizes = {30, 50, 50, 10}
  local g = nm.generator(opts.seed + 1)
  local probe = mc.new{sizes = {30, 50, 10}, gen = nm.generator(1)}
  local teacher = teacher_of(opts.seed + 100, probe)
  local X = nm.zeros(opts.theory_batch, 30, "float64"):uniform(g, -1, 1)
  local UT = teacher.potential(nm.zeros(opts.theory_batch, 10, "float64"), X)
  for _, gval in ipairs(THEORY_G) do
    local function make()
      return mc.new{sizes = sizes, gen = nm.generator(opts.seed), mode = "steady", g_A = gval,
                    rules = RULES, compiled = opts.compiled,
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
    run:log{g = gval, lambda = f.lambda, lambda_out = f.lambda_out,
            cos_bp_1 = cb[1], cos_bp_2 = cb[2], cos_bp_3 = cb[3],
            cos_fa_1 = cf[1], cos_fa_2 = cf[2], cos_fa_vs_bp_1 = cfb[1], cos_fa_vs_bp_2 = cfb[2]}
  end
  local rows = run:metrics()
  local final = {rows = rows, plots = {}}
  for _, key in ipairs{"cos_bp_1", "cos_bp_2", "cos_fa_1", "cos_fa_2", "lambda"} do
    final[key] = rows[#rows][key]
  end
  -- the smallest g whose first-layer change still resolves above rounding
  for _, r in ipairs(rows) do
    if r.g == 0.01 then final.at_001 = {cos_bp_1 = r.cos_bp_1, cos_fa_1 = r.cos_fa_1, lambda = r.lambda} end
  end
  maybe_plot(final.plots, "curves", rows, {out = run:path("cosines.png"), x = "lambda", logx = true,
    y = {"cos_bp_1", "cos_bp_2", "cos_fa_1", "cos_fa_2"},
    title = "W_up change vs BP (symmetric W_down) and FA (random W_down)", xlabel = "lambda (hidden)"})
  return final
end

-- ------------------------------------------------------------ Fig. 3

local PAPER = {microcircuit = 1.96, bp = 1.53, shallow = 8.4, frozen = 2.11, topdown = 2.48}
local VARIANT_NAMES = {microcircuit = "784-500-500-10 microcircuit", bp = "784-500-500-10 backprop",
                       bp_frozen = "backprop, W_2 frozen",
                       shallow = "shallow (output only)", frozen = "hidden-to-hidden frozen",
                       topdown = "784-1000-10, learned W_down"}

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

-- A Fig. 3 learner: train(batch), errors(split) -> fraction wrong,
-- apical() (microcircuits), state()/load(st), weights().
local function fig3_learner(variant, ds)
  local gen = nm.generator(opts.seed)
  if variant == "bp" or variant == "bp_frozen" then
    local xent = opts.bp_loss == "xent"
    local net = nn.mlp{sizes = {784, 500, 500, 10}, act = "sigmoid", out = xent and "softmax" or
                       "sigmoid", loss = xent and "xent" or "mse", rule = "backprop",
                       params = {eta = opts.bp_lr}, gen = gen, init = layer_init()}
    if variant == "bp_frozen" then net.conns[2].plastic = false end
    local onehot = {}          -- per batch size: the one-hot targets of xent
    return {
      train = function(b)
        local T = b.Y
        if xent then
          T = onehot[b.n]
          if not T then T = nm.zeros(b.n, 10, b.Y:dtype()); onehot[b.n] = T end
          T:zero()
          for i = 1, b.n do T:set(i, b.labels[i], 1) end
        end
        net:train_batch(b.X, T)
      end,
      errors = function(split)
        local _, acc = net:evaluate(split.X, split.Y, 1000, split.labels)
        return 1 - acc
      end,
      state = function() return net:state() end,
      load = function(st) net:load_state(st) end,
      weights = function() return mlp_weights(net) end,
      plastic = function()
        local list = {}
        for l = 1, net.L do
          if net.conns[l].plastic ~= false then list[#list + 1] = format("W%d", l) end
        end
        return list
      end,
    }
  end
  local up, ip = opts.eta_up, opts.eta_ip
  local sizes, eta = {784, 500, 500, 10}, {up = {up[1], up[2], up[3]}, ip = {ip[1], ip[2]}}
  if variant == "shallow" then eta = {up = {0, 0, up[3]}, ip = {0, 0}}
  elseif variant == "frozen" then
    -- W_ip[1] stands for W_up[2] (the self-predicting state): frozen with it,
    -- unless asked otherwise (a plastic W_ip[1] learns the nudged layer-2
    -- potentials, drifts from W_up[2], and the apical potentials of layer 1
    -- carry that drift as an error without a target)
    eta.up[2] = 0
    if opts.frozen_ip == "fixed" then eta.ip[1] = 0 end
  elseif variant == "topdown" then
    sizes = {784, 1000, 10}
    eta = {up = {up[1], up[3]}, ip = {ip[2]}, down = opts.eta_down, pi = opts.eta_pi}
  end
  local init = {up = {opts.init_up[1], opts.init_up[2], opts.init_up[3]}, down = opts.init_down}
  if #sizes == 3 then init.up = {opts.init_up[1], opts.init_up[3]} end
  local net = mc.new{sizes = sizes, gen = gen, dtype = "float32", mode = "steady", rules = RULES,
                     compiled = opts.compiled,
                     rate = "logistic", bias = true, init = init, self_predicting = true, eta = eta}
  local UT = {}
  local probe_X = ds.test.X:narrow(1, 1, math.min(100, ds.test.n))
  return {
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
    state = function() return net:state() end,
    load = function(st) net:load_state(st) end,
    weights = function() return mc_weights(net) end,
    -- the plastic connections, W_up1 ... (results.json records them)
    plastic = function()
      local list = {}
      for _, kind in ipairs{"up", "ip", "pi", "down"} do
        for k = 1, #net[kind] do
          if net[kind][k].plastic ~= false then list[#list + 1] = format("W_%s%d", kind, k) end
        end
      end
      return list
    end,
  }
end

-- Stops the run (status failed, one line) when the learner's test error
-- has diverged after its last epoch (measures.diverged: above 50% and more
-- than twice its best so far; chance is 90%), with its apical energy
-- without a target before and after.
local function check_diverged(run, dname, variant)
  local sel = {}
  for _, r in ipairs(run:metrics()) do
    if r.dataset == dname and r.variant == variant then sel[#sel + 1] = r end
  end
  local errors = {}
  for i, r in ipairs(sel) do errors[i] = r.test_error end
  local at = measures.diverged(errors)
  if not at then return end
  local best = math.huge
  for i = 1, at - 1 do best = math.min(best, errors[i]) end
  local last, before, apical = sel[at], sel[at - 1], ""
  if last.apical_energy_free and before.apical_energy_free then
    apical = format("; ||vA||^2 without target %.3g after %.3g the epoch before (the " ..
                    "self-predicting state is lost)", last.apical_energy_free,
                    before.apical_energy_free)
  end
  run:fail(format("fig3: the %s learner diverged on %s in epoch %d: test error %.1f%% after a " ..
                  "best of %.1f%%%s; lower its learning rates", variant, dname, last.epoch,
                  100 * last.test_error, 100 * best, apical))
end

local function fig3(run)
  -- The checkpointed state: data set and variant in progress, the epoch
  -- and minibatch in it, the batch order's generator at the start of the
  -- epoch, the learner, the figures so far. s.step counts minibatches
  -- over all data sets and variants.
  local s = run:resume()
  local resumed = s ~= nil
  if not s then s = {dataset = 1, variant = 1, step = 0, final = {}} end
  local final = s.final
  for di = s.dataset, #opts.datasets do
    local dname = opts.datasets[di]
    local ds = cli.guard("--datasets " .. dname, data.load, dname, {on = 0.8, off = 0.1,
                                 subset = opts.train_subset > 0 and opts.train_subset or nil,
                                 test_subset = opts.test_subset > 0 and opts.test_subset or nil})
    local epochs = dname == "fashion" and opts.fashion_epochs or opts.epochs
    final[dname] = final[dname] or {}
    for vi = (di == s.dataset and s.variant or 1), #opts.variants do
      local variant = opts.variants[vi]
      local learner = fig3_learner(variant, ds)
      local order = nm.generator(opts.seed + 1)
      local batches = data.batches(ds.train, opts.batch, {generator = order})
      local nb = #batches
      local first_epoch, skip, seconds = 1, 0, 0
      if resumed then
        learner.load(s.learner)
        order:set_state(s.order)
        first_epoch, skip, seconds = s.epoch, s.batch, s.seconds
        resumed = false
      end
      s.dataset, s.variant = di, vi
      local epoch, done, order_state, t0
      local function state()
        s.epoch, s.batch, s.order, s.learner = epoch, done, order_state, learner.state()
        s.seconds = seconds + (nm.sys.clock() - t0)
        return s
      end
      local bar = progress.new{total = epochs * nb, label = dname .. " " .. variant}
      for e = first_epoch, epochs do
        epoch, order_state = e, order:state()
        done = e == first_epoch and skip or 0
        t0 = nm.sys.clock()
        for b in batches:epoch(done) do
          run:guard(learner.train, b)
          done = done + 1
          s.step = s.step + 1
          bar:update((e - 1) * nb + done)
          run:poll(s.step, state)
        end
        seconds = seconds + (nm.sys.clock() - t0)
        local row = {dataset = dname, variant = variant, epoch = e,
                     test_error = learner.errors(ds.test), seconds = seconds}
        if learner.apical then row.apical_energy_free = learner.apical() end
        run:log(row)
        check_diverged(run, dname, variant)
      end
      bar:finish()
      local last = run:metrics()[#run:metrics()]
      final[dname][variant] = {test_error = last.test_error, train_error = learner.errors(ds.train),
                               epochs = epochs, seconds = seconds, train_n = ds.train.n,
                               test_n = ds.test.n, weights_crc32 = weights_crc(learner.weights()),
                               plastic = learner.plastic and learner.plastic() or nil}
      s.learner = nil
    end
  end
  final.plots = {}
  local rows = run:metrics()
  for _, dname in ipairs(opts.datasets) do
    local sel = {}
    for _, r in ipairs(rows) do if r.dataset == dname then sel[#sel + 1] = r end end
    maybe_plot(final.plots, "curves", sel, {out = run:path("test_error_" .. dname .. ".png"),
      x = "epoch", y = "test_error", group = "variant", title = "Fig. 3: test error, " .. dname,
      xlabel = "epoch"})
  end
  return final
end

-- ------------------------------------------------------------ reports

-- Text for stdout and headline rows for OUT/results.json (final.summary:
-- {label, ours, paper, unit, note}), from a figure's final figures
-- (fresh, or read back from a finished run's results.json).
local REPORT = {}

local function num(v) return type(v) == "number" and v or 0 / 0 end

function REPORT.fig1(f)
  local text = format(
    "Fig. 1: ||vA||^2 before %.2e, target onset %.2e, end of learning %.2e, target removed %.2e; " ..
    "||u_N - u_trgt||^2 onset %.3f -> end %.3f", num(f.apical_before), num(f.apical_target_onset),
    num(f.apical_target_end), num(f.apical_after), num(f.output_error_onset), num(f.output_error_end))
  return text, {
    {label = "Fig. 1 ||u_N - u_trgt||^2, end of learning (one association)", ours = f.output_error_end,
     paper = "~0 (output reaches the target)", unit = "mse",
     note = format("%.3g at target onset, %g ms of learning", num(f.output_error_onset), opts.fig1_learn_ms)},
    {label = "Fig. 1 apical ||vA||^2 after the target is removed", ours = f.apical_after,
     paper = "~0 (silent again)", unit = "mV^2",
     note = format("%.2g at target onset, %.2g before (noise)", num(f.apical_target_onset),
                   num(f.apical_before))},
  }
end

function REPORT.figS1(f)
  local text = format(
    "Fig. S1: ||vA||^2 %.3g -> %.3g (analytic state with the same noise: %.3g); " ..
    "||u2 - uI||^2 %.3g -> %.3g (%.3g); angles to -W_down %.1f deg, to c W_up %.1f deg",
    num(f.apical_first), num(f.apical_last), num(f.apical_analytic_state), num(f.mismatch_first),
    num(f.mismatch_last), num(f.mismatch_analytic_state), num(f.angle_pi_last), num(f.angle_ip_last))
  return text, {
    {label = "Fig. S1 ||vA||^2 after learning the self-predicting state", ours = f.apical_last,
     paper = "-> 0 (noise floor)", unit = "mV^2",
     note = format("from %.3g; analytic state %.2g; %d patterns", num(f.apical_first),
                   num(f.apical_analytic_state), opts.s1_patterns)},
  }
end

function REPORT.fig2(f)
  local parts, rows = {}, {}
  local first_mc
  for _, spec in ipairs(FIG2) do
    local m, r = spec.id, f[spec.id]
    if type(r) == "table" then
      if spec.model == "microcircuit" then first_mc = first_mc or m end
      parts[#parts + 1] = format("%s %.4g%s", m, num(r.test_error),
                                 type(r.angle) == "number" and format(" (angle %.0f deg)", r.angle) or "")
      rows[#rows + 1] = {label = format("Fig. 2 test ||r_N - r_trgt||^2, 30-50-10, %s", m),
                         ours = r.test_error, unit = "mse",
                         paper = spec.model == "microcircuit" and "below shallow" or nil,
                         note = format("%d patterns, from %.3g", num(f.patterns), num(f.test_error_initial))}
    end
  end
  local text = "Fig. 2 test error after " .. tostring(f.patterns) .. " patterns: " .. table.concat(parts, ", ")
  local m = first_mc and f[first_mc]
  if type(m) == "table" then
    rows[#rows + 1] = {label = "Fig. 2 angle W_up[2]^T vs W_down[1], " .. first_mc, ours = m.angle,
                       paper = "< ~45 deg", unit = "deg", note = "from ~90 deg"}
    text = text .. format("\nFig. 2: %s trained for %.0f s (%s patterns x 1000 steps)",
                          first_mc, num(m.seconds), tostring(f.patterns))
    if type(m.apical_free) == "number" then
      text = text .. format("\nFig. 2 self-predicting state (no target): ||vA||^2 %.3g, " ..
                            "||u_2 - uI||^2 %.3g; angles to -W_down %.1f deg, to c W_up %.1f deg",
                            m.apical_free, num(m.mismatch_free), num(m.sp_angle_pi),
                            num(m.sp_angle_ip))
      rows[#rows + 1] = {label = "Fig. 2 apical ||vA||^2 without target, " .. first_mc,
                         ours = m.apical_free, paper = "-> 0 (self-predicting)", unit = "mV^2",
                         note = format("angle of W_pi to -W_down %.1f deg", num(m.sp_angle_pi))}
    end
  end
  -- exact FA's alignment on the same task: the floor the microcircuit's
  -- angle is to be read against
  for _, spec in ipairs(FIG2) do
    local r = f[spec.id]
    if (spec.model == "fa" or spec.model == "fa_att") and type(r) == "table" and type(r.angle) == "number" then
      rows[#rows + 1] = {label = format("Fig. 2 angle W_2^T vs B, %s (the FA floor on this task)", spec.id),
                         ours = r.angle, paper = "~45 deg (microcircuit)", unit = "deg"}
    end
  end
  return text, rows
end

function REPORT.theory(f)
  local lines = {"Theory check (30-50-50-10, g_A = g_som = g; cos of W_up changes, layers 1..3):",
                 "       g   lambda  lam_out |   BP: 1        2        3 |   FA: 1        2 | FA vs BP: 1   2"}
  for _, r in ipairs(type(f.rows) == "table" and f.rows or {}) do
    lines[#lines + 1] = format("  %6.3f %8.4f %8.4f | %8.5f %8.5f %8.5f | %8.5f %8.5f | %8.4f %8.4f",
      num(r.g), num(r.lambda), num(r.lambda_out), num(r.cos_bp_1), num(r.cos_bp_2), num(r.cos_bp_3),
      num(r.cos_fa_1), num(r.cos_fa_2), num(r.cos_fa_vs_bp_1), num(r.cos_fa_vs_bp_2))
  end
  local a = type(f.at_001) == "table" and f.at_001 or {}
  return table.concat(lines, "\n"), {
    {label = "Theory: cos(W_up change, BP update), layer 1, symmetric top-down", ours = a.cos_bp_1,
     paper = "-> 1 as lambda -> 0", unit = "cos", note = format("lambda %.3g", num(a.lambda))},
    {label = "Theory: cos(W_up change, FA update), layer 1, random top-down", ours = a.cos_fa_1,
     paper = "-> 1 as lambda -> 0", unit = "cos", note = format("lambda %.3g", num(a.lambda))},
  }
end

function REPORT.fig3(f)
  local head = {"Fig. 3 test error (%):  variant        paper (full MNIST)"}
  for _, d in ipairs(opts.datasets) do head[#head + 1] = format("  %12s", d) end
  local lines, rows = {table.concat(head)}, {}
  for _, v in ipairs(opts.variants) do
    local cells = {}
    for _, d in ipairs(opts.datasets) do
      local r = type(f[d]) == "table" and f[d][v]
      cells[#cells + 1] = format("  %12s", type(r) == "table" and format("%.2f", 100 * num(r.test_error)) or "-")
      if type(r) == "table" then
        rows[#rows + 1] = {label = format("Fig. 3 test error, %s, %s", VARIANT_NAMES[v],
                                          d == "mnist-subset" and "MNIST subset" or d),
                           ours = r.test_error, unit = "%",
                           paper = (d == "mnist" or d == "mnist-subset") and PAPER[v] and
                                   format("%.2f%% (full MNIST)", PAPER[v]) or nil,
                           note = format("%s epoch%s, %s training images", tostring(r.epochs),
                                         r.epochs == 1 and "" or "s", tostring(r.train_n))}
      end
    end
    lines[#lines + 1] = format("  %-30s %6s%s", VARIANT_NAMES[v],
                               PAPER[v] and format("%.2f", PAPER[v]) or "-", table.concat(cells))
  end
  lines[#lines + 1] = "  (mnist-subset = the 8,000/2,000 subset; epochs: mnist " .. opts.epochs ..
                      ", fashion " .. opts.fashion_epochs .. "; the paper trained on 60,000 MNIST digits)"
  return table.concat(lines, "\n"), rows
end

-- ------------------------------------------------------------ main

local RUNNERS = {fig1 = fig1, figS1 = figS1, fig2 = fig2, theory = theory, fig3 = fig3}
local INFO = {
  fig1 = {dataset = "one association: x ~ U(-1, 1), u_trgt ~ U(1, 5)", columns = {"t_ms", "phase"}},
  figS1 = {dataset = "random inputs U(-1, 1), no target", columns = {"pattern"}},
  fig2 = {dataset = "teacher 30-20-10 (Sacramento et al. Fig. 2)", columns = {"model", "pattern"}},
  theory = {dataset = "random inputs, teacher targets", columns = {"g"}},
  fig3 = {dataset = table.concat(opts.datasets, ", "), columns = {"dataset", "variant", "epoch"}},
}

local t_start = nm.sys.clock()
local texts, summary, plots, figures = {}, {}, {}, {}
for _, fig in ipairs(FIGURES) do
  if wanted[fig] then
    local run, final = open_run(fig, INFO[fig])
    if run then
      final = RUNNERS[fig](run)
      run:finish(final)
    end
    figures[fig] = final
    local text, rows = REPORT[fig](final)
    texts[#texts + 1] = text
    for _, r in ipairs(rows) do summary[#summary + 1] = r end
    for _, p in ipairs(type(final.plots) == "table" and final.plots or {}) do plots[#plots + 1] = p end
  end
end
print(table.concat(texts, "\n"))
print(format("results in %s/ (%.0f s)", opts.out, nm.sys.clock() - t_start))
top:finish{summary = summary, plots = plots, figures = figures}
