-- experiments/rcn.lua: recurrent chemical networks (K.
-- McMillan's Cambridge IB report) against the motif baseline of
-- Shervani-Tabar & Rosenbaum (2023), meta-trained on the same few-shot
-- tasks with exact meta-gradients through the whole inner loop.
--
-- Each run meta-trains one rule on 5-way tasks (K training images per
-- class seen once each, online, by a fresh 784-170-130-100-70-10 softplus
-- network with FA feedback; Q query images per class score the adapted
-- network) with Adam. Runs (--runs), L = 1..16 chemicals:
--   motif        the baseline: W += sum_r theta_r F^r over the motifs of
--                --motifs (F_bio = 0, 2, 9 by default), rules/motifs.lua
--   rcnL         RCN, P, K, v shared by all layers, one bias per chemical
--                and layer (the report's default)
--   layerL       RCN with layer-specific P, K, v
--   neuronL      RCN with a bias per chemical and synapse
--   momentumL    momentum RCN: W += v.h (chemicals start at 0)
--   biasonlyL    per-synapse biases learned alone, P = 0 (the report's
--                check that the biases do not learn the data by themselves)
-- Every --eval-every episodes the current meta-parameters are scored on
-- fixed held-out episodes (test images, meta-parameters fixed); the best
-- are kept. At the end the final and best meta-parameters are scored on
-- --test-episodes fresh held-out episodes. Plots: query accuracy against
-- episode, held-out accuracy, and the learned P and K of every RCN run with
-- two or more chemicals as heat maps; a table of final accuracies. The
-- report gives curves, no numbers.
--
--   ./neuromic experiments/rcn.lua --quick                      # seconds
--   ./neuromic experiments/rcn.lua --out results/rcn --episodes 200
--   ./neuromic experiments/rcn.lua --runs motif,rcn1,rcn2,layer2,neuron2
--   ./neuromic experiments/rcn.lua --rules motifs,rcn,./my_rcn.lua --quick
--
-- --rules: the meta rules the runs are made with: the motif run with every
-- rule of model motif_net, the RCN runs with every rule of model rcn (a
-- user's rule takes the RCN parameters chemicals, share, bias, momentum,
-- motifs, exponent, tau_min, tau_max and gives timescales(L, p)); a run of
-- a rule other than motifs and rcn is named <run>-<rule>.

local nm = require "neuromic"
local cli = require "nm.cli"
local results = require "nm.results"
local progress = require "nm.progress"
local plot = require "nm.plot"
local data = require "nm.data"
local meta = require "nm.models.meta"
local motif_net = require "nm.models.motif_net"
local rcn = require "nm.models.rcn"
local fewshot = require "lib.fewshot"

local format = string.format

local DEFAULT_RUNS = {"motif", "rcn1", "rcn2", "rcn3", "rcn4", "rcn5", "layer1", "layer2", "layer3",
                      "neuron2", "momentum5"}

local opts = cli.parse(arg, {
  name = "rcn",
  description = "Recurrent chemical networks (meta-learned multi-timescale synapses) against " ..
                "the motif baseline: L = 1..5 chemicals, shared vs layer-specific parameters, " ..
                "per-synapse biases, momentum RCN; exact meta-gradients through the inner loop.",
  options = {
    data.cli_option("fashion"),
    {"runs", "list", DEFAULT_RUNS, "runs: motif, rcnL, layerL, neuronL, momentumL, biasonlyL " ..
     "(L = chemicals)", item = "string",
     quick = {"motif", "rcn1", "rcn2", "layer2", "neuron2", "momentum2"}},
    {"rules", "list", {"motifs", "rcn"}, "meta rules (models motif_net and rcn): names from " ..
     "rules/ or paths (./my_rule.lua)", item = "string"},
    {"episodes", "int", 600, "meta-training episodes per run", quick = 3, min = 1},
    {"M", "int", 5, "classes per task", min = 2},
    {"K", "int", 50, "training images per class (inner steps = M K)", quick = 6, min = 1},
    {"Q", "int", 10, "query images per class", quick = 4, min = 1},
    {"outputs", "int", 10, "output units (>= the data set's classes; EMNIST had 47)", min = 2},
    {"motifs", "list", {0, 2, 9}, "motifs (0-based) of the baseline and of every RCN", item = "int"},
    {"feedback", "string", "fa", "error pathway: fa, bp, dfa, sign_symmetry, or a connection " ..
     "rule defining one (name or path; without C form the rules' Lua steps run: slower)"},
    {"lr", "number", 3e-4, "Adam learning rate of the meta-parameters (1e-3, the paper's, " ..
     "collapses the baseline here within ~30 episodes)", min = 0},
    {"lr-scale", "list", {1, 0.1, 1, 0.01}, "RCN: factors of --lr for P, K, v, b (the bias and " ..
     "K push every synapse at once)", item = "number"},
    {"lambda", "number", 0, "L1 penalty on theta (baseline) and on P (RCN)", min = 0},
    {"P0", "number", 1e-3, "initial theta_0 and P[:,0]"},
    {"P0-momentum", "number", 5e-5, "initial P[:,0] of the momentum RCN (its slowest chemical " ..
     "integrates, and W integrates the chemicals: 1e-3 makes the first episodes explode)"},
    {"exponent", "string", "L-1", "timescale exponent c/(L-1) or c/L", choices = {"L-1", "L"}},
    {"tau-max", "number", 50, "slowest timescale (tau_min = 1)", min = 1},
    {"clip", "number", 0, "meta-gradient norm clip (0: off)", min = 0},
    {"guard", "string", "rollback", "non-finite meta-steps", choices = {"none", "skip", "rollback"}},
    {"eval-every", "int", 25, "episodes between held-out evaluations", quick = 3, min = 1},
    {"heldout", "int", 20, "held-out episodes per evaluation", quick = 2, min = 1},
    {"test-episodes", "int", 100, "held-out episodes scoring the final and best parameters",
     quick = 2, min = 1},
    {"smooth", "int", 25, "episodes in the running mean of the query accuracy", quick = 2, min = 1},
    {"dtype", "string", "float32", "network element type", choices = {"float32", "float64"}},
    {"threads", "int", 1, "OpenBLAS threads", min = 1},
    {"checkpoint-every", "int", 25, "episodes between checkpoints", quick = 0, min = 0},
    {"stop-after", "int", 0, "send SIGTERM to itself after N episodes in all (tests resume)", min = 0},
    {"replot", "bool", false, "redraw the plots, table and summary of the finished run in " ..
     "--out (no training)"},
  },
})

cli.guard("--threads " .. opts.threads, nm.blas_threads, opts.threads)

-- A run name to its configuration, or nil and a message.
local function parse_run(name)
  if name == "motif" then
    return {kind = "motif", title = format("motif baseline (theta %s)", table.concat(opts.motifs, ","))}
  end
  local kind, L = name:match("^(%a+)(%d+)$")
  L = tonumber(L)
  local kinds = {rcn = true, layer = true, neuron = true, momentum = true, biasonly = true}
  if not kind or not kinds[kind] or not L or L < 1 or L > 16 then
    return nil, format("unknown run '%s' (motif, rcnL, layerL, neuronL, momentumL, biasonlyL " ..
                       "with L = 1..16)", name)
  end
  local cfg = {kind = kind, chemicals = L, share = "shared", bias = "layer", momentum = false}
  if kind == "layer" then cfg.share = "layer" end
  if kind == "neuron" or kind == "biasonly" then cfg.bias = "neuron" end
  if kind == "momentum" then cfg.momentum = true end
  local titles = {rcn = "RCN", layer = "RCN, layer-specific P K v", neuron = "RCN, per-synapse bias",
                  momentum = "momentum RCN", biasonly = "per-synapse bias only (P = 0)"}
  cfg.title = format("%s, %d chemical%s", titles[kind], L, L > 1 and "s" or "")
  return cfg
end

fewshot.pathway(opts.feedback, "rcn", "--feedback")

-- The rules of each model, from --rules.
local RULES = {motif_net = {}, rcn = {}}
for _, def in ipairs(fewshot.rules(opts.rules, {"motif_net", "rcn"}, "rcn")) do
  local list = RULES[def.model]
  list[#list + 1] = def
end

-- Every (rule, run) pair of a fitting model is a run of its own; the
-- built-in rules keep the plain run names.
local CONFIGS = {}
local function expand_runs(names)
  local out = {}
  for _, name in ipairs(names) do
    local cfg, err = parse_run(name)
    if not cfg then
      io.stderr:write("rcn: ", err, "\n")
      os.exit(2)
    end
    for _, def in ipairs(RULES[cfg.kind == "motif" and "motif_net" or "rcn"]) do
      local c = {}
      for k, v in pairs(cfg) do c[k] = v end
      c.rule, c.name = def, name
      if def.name ~= "motifs" and def.name ~= "rcn" then
        c.name = name .. "-" .. def.name
        c.title = c.title .. " [" .. def.name .. "]"
      end
      CONFIGS[c.name] = c
      out[#out + 1] = c.name
    end
  end
  return out
end
opts.runs = expand_runs(opts.runs)
if #opts.lr_scale ~= 4 then
  io.stderr:write("rcn: --lr-scale takes four factors (P, K, v, b)\n")
  os.exit(2)
end
for _, r in ipairs(opts.motifs) do
  if r < 0 or r > 9 then
    io.stderr:write("rcn: --motifs are indices 0..9\n")
    os.exit(2)
  end
end

local setup, err = cli.guard("--data " .. opts.data, fewshot.setup, opts)
if not setup then
  io.stderr:write("rcn: ", err, "\n")
  os.exit(2)
end
local ds, sizes, steps = setup.ds, setup.sizes, setup.steps

local json = require "nm.json"

-- --replot: the finished run's figures and metrics, read back; a stand-in
-- for the run object that writes beside them.
local s, run, rows
if opts.replot then
  local res, rrows = results.finished(opts.out)
  if type(res.final) ~= "table" or not res.final.runs then
    cli.error(format("--replot: no finished run in %s (results.json has no runs)", opts.out))
  end
  s, rows = {finished = res.final.runs}, rrows
  opts.runs, opts.motifs, opts.episodes = res.options.runs, res.options.motifs, res.options.episodes
  opts.quick = res.options.quick
  run = {
    path = function(_, name) return opts.out .. "/" .. name end,
    finish = function(_, final)
      for k, v in pairs(final) do res.final[k] = v end
      nm.sys.atomic_write(opts.out .. "/results.json", json.encode(res, {indent = "  "}) .. "\n")
    end,
  }
  for _, name in ipairs(opts.runs) do
    local base = name:match("^(.-)%-") or name
    CONFIGS[name] = parse_run(base)
  end
end

if not opts.replot then
run = results.open(opts, {
  dataset = setup.dataset,
  columns = {"run", "episode"},
  checkpoint_every = opts.checkpoint_every,
  nonfinite = fewshot.nonfinite(10),
})
io.stderr:write(format("rcn: %s, network %s (%s), %s feedback, %d inner steps, motifs {%s}\n",
                       ds.name, table.concat(sizes, "-"), opts.dtype, opts.feedback, steps,
                       table.concat(opts.motifs, ",")))

local train_tasks, test_tasks = setup.train, setup.test

local function heldout_set(count, seed) return meta.heldout(test_tasks, count, seed) end
local heldout = heldout_set(opts.heldout, opts.seed + 7919)

local function make_learner(cfg)
  local guard = opts.guard
  local clip = opts.clip > 0 and opts.clip or nil
  if cfg.kind == "motif" then
    local net = motif_net.new{rule = cfg.rule, sizes = sizes, feedback = opts.feedback,
                              dtype = opts.dtype}
    return motif_net.learner{net = net, motifs = opts.motifs, theta0 = {[0] = opts.P0},
                             lr = opts.lr, lambda = opts.lambda, guard = guard, clip = clip}
  end
  local net = rcn.new{rule = cfg.rule, sizes = sizes, feedback = opts.feedback, dtype = opts.dtype,
                      chemicals = cfg.chemicals, share = cfg.share, bias = cfg.bias,
                      momentum = cfg.momentum, motifs = opts.motifs, exponent = opts.exponent,
                      tau_max = opts.tau_max}
  local f = opts.lr_scale
  local o = {net = net, lr = opts.lr, lambda = opts.lambda, guard = guard, clip = clip,
             lr_scale = {P = f[1], K = f[2], v = f[3], b = f[4]},
             P0 = cfg.momentum and opts.P0_momentum or opts.P0}
  if cfg.kind == "biasonly" then o.P0, o.learn = 0, {b = true} end
  return rcn.learner(o)
end

-- Scores fixed meta-parameters on a set of held-out episodes. The motif
-- learner takes theta; the RCN learner uses its own (saved and restored
-- around a call with other values).
local function evaluate(learner, set, params)
  local saved
  if params and not learner.phi then
    saved = {}
    for i, p in ipairs(learner.list) do saved[i] = p:clone(); p:copy(params[i]) end
  end
  local acc, loss = 0, 0
  for _, t in ipairs(set) do
    local a, l
    if learner.phi then a, l = learner:evaluate(t, nm.generator(t.seed), params)
    else a, l = learner:evaluate(t, nm.generator(t.seed)) end
    acc, loss = acc + a, loss + l
  end
  if saved then for i, p in ipairs(learner.list) do p:copy(saved[i]) end end
  return acc / #set, loss / #set
end

-- The learner's current meta-parameters (a copy).
local function current(learner)
  if learner.phi then return learner:theta() end
  local c = {}
  for i, p in ipairs(learner.list) do c[i] = p:clone() end
  return c
end

local function count_params(learner, cfg)
  if cfg.kind == "motif" then return #opts.motifs end
  if cfg.kind == "biasonly" then
    local n = 0
    for l = 1, learner.net.layers do n = n + cfg.chemicals * sizes[l] * sizes[l + 1] end
    return n
  end
  return rcn.count(learner.net)
end

-- State of the whole experiment (what a checkpoint holds).
s = run:resume()
if not s then s = {index = 1, finished = {}} end
local total = #opts.runs * opts.episodes
local bar = progress.new{total = total, label = "meta-training"}
local step_count = (s.index - 1) * opts.episodes + (s.current and s.current.episode or 0)

while s.index <= #opts.runs do
  local name = opts.runs[s.index]
  local cfg = CONFIGS[name]
  local learner = make_learner(cfg)
  local cur = s.current
  if not cur then
    cur = {name = name, episode = 0, g = nm.generator(opts.seed * 100 + 1), recent = {},
           best_acc = -1, best = current(learner), best_episode = 0, seconds = 0, cpu_s = 0}
    s.current = cur
  else
    learner:load_state(cur.learner)
  end
  local t_run, c_run = nm.sys.clock(), os.clock()
  cur.cpu_s = cur.cpu_s or 0
  for ep = cur.episode + 1, opts.episodes do
    -- every run sees the same tasks and initial weights (one seed)
    local task = train_tasks:sample(cur.g)
    local info = learner:meta_step(task, cur.g)
    local mean = fewshot.running_mean(cur.recent, info.accuracy, opts.smooth)
    local row = fewshot.step_row(name, ep, info, mean, learner)
    if ep % opts.eval_every == 0 or ep == opts.episodes then
      local acc, loss = evaluate(learner, heldout, learner.phi and learner:theta() or nil)
      row.heldout_accuracy, row.heldout_loss = acc, loss
      if acc > cur.best_acc then
        cur.best_acc, cur.best, cur.best_episode = acc, current(learner), ep
      end
    end
    run:log(row)
    cur.episode = ep
    step_count = step_count + 1
    bar:update(step_count, format("%s ep %d acc %.2f", name, ep, mean))
    run:poll(step_count, function()
      cur.learner = learner:state()
      cur.seconds = cur.seconds + (nm.sys.clock() - t_run)
      cur.cpu_s = cur.cpu_s + (os.clock() - c_run)
      t_run, c_run = nm.sys.clock(), os.clock()
      return s
    end)
  end
  cur.seconds = cur.seconds + (nm.sys.clock() - t_run)
  cur.cpu_s = cur.cpu_s + (os.clock() - c_run)
  -- Meta-test of the final and the best meta-parameters.
  local test_set = heldout_set(opts.test_episodes, opts.seed + 104729)
  local fa, fl = evaluate(learner, test_set, learner.phi and learner:theta() or nil)
  local ba, bl = evaluate(learner, test_set, cur.best)
  local f = {title = cfg.title, kind = cfg.kind, chemicals = cfg.chemicals,
             final_accuracy = fa, final_loss = fl, best_accuracy = ba, best_loss = bl,
             best_episode = cur.best_episode, train_accuracy = fewshot.mean(cur.recent),
             meta_parameters = count_params(learner, cfg), skipped = learner.skipped,
             rollbacks = learner.rollbacks, seconds = cur.seconds, cpu_s = cur.cpu_s,
             seconds_per_episode = cur.seconds / math.max(opts.episodes, 1)}
  if learner.phi then
    f.theta = learner:theta():totable()
  else
    f.params = learner:snapshot()
    f.share = learner.net.share
  end
  s.finished[name] = f
  io.stderr:write(format("\n%-12s meta-test accuracy: final %.1f%%, best %.1f%% (episode %d), " ..
                         "%.2f s/episode\n", name, 100 * fa, 100 * ba, cur.best_episode,
                         f.seconds_per_episode))
  s.index = s.index + 1
  s.current = nil
end
bar:finish()
rows = run:metrics()
end   -- not opts.replot

-- ---------------------------------------------------------------- heat maps

-- A labelled heat map of a matrix (rows of numbers) through gnuplot, with
-- a diverging palette symmetric about 0 and the values written in the
-- cells. Returns the path or nil.
local function heatmap(panels, path, title)
  if not plot.gnuplot() then return nil end
  local lines = {"set termoption noenhanced"}
  local n = #panels
  local width, rows = 0, 0
  for _, p in ipairs(panels) do
    width = width + 230 + 72 * #p.cols
    rows = math.max(rows, #p.rows)
  end
  lines[#lines + 1] = format("set multiplot layout 1,%d title '%s'", n, title:gsub("'", ""))
  lines[#lines + 1] = "set palette defined (-1 '#2166ac', 0 '#f7f7f7', 1 '#b2182b')"
  lines[#lines + 1] = "unset key"
  lines[#lines + 1] = "set rmargin 12"
  for _, p in ipairs(panels) do
    local mx = 0
    for _, row in ipairs(p.values) do
      for _, v in ipairs(row) do if v == v and math.abs(v) > mx then mx = math.abs(v) end end
    end
    if mx == 0 then mx = 1 end
    -- values written in the cells in units of a power of ten
    local unit = 10 ^ math.floor(math.log(mx, 10))
    lines[#lines + 1] = "$m << EOD"
    for i, row in ipairs(p.values) do
      for j, v in ipairs(row) do
        lines[#lines + 1] = format("%d %d %.17g %.2f", j - 1, i - 1, v, v / unit)
      end
      lines[#lines + 1] = ""
    end
    lines[#lines + 1] = "EOD"
    lines[#lines + 1] = format("set title '%s (cells in units of %g)'", p.title, unit)
    lines[#lines + 1] = format("set cbrange [%.6g:%.6g]", -mx, mx)
    local xt, yt = {}, {}
    for j, c in ipairs(p.cols) do xt[#xt + 1] = format("'%s' %d", c, j - 1) end
    for i, r in ipairs(p.rows) do yt[#yt + 1] = format("'%s' %d", r, i - 1) end
    lines[#lines + 1] = "set xtics (" .. table.concat(xt, ", ") .. ")"
    lines[#lines + 1] = "set ytics (" .. table.concat(yt, ", ") .. ")"
    lines[#lines + 1] = format("set xrange [-0.5:%d.5]", #p.cols - 1)
    lines[#lines + 1] = format("set yrange [%d.5:-0.5]", #p.rows - 1)
    lines[#lines + 1] = "plot $m using 1:2:3 with image, $m using 1:2:(sprintf('%.2f', $4)) " ..
                        "with labels font ',9'"
  end
  lines[#lines + 1] = "unset multiplot"
  return plot.script(table.concat(lines, "\n"), {
    out = path, size = {math.max(width, 500), math.max(150 + 30 * rows, 300)}, font = ",10",
    quiet = true})[1]
end

-- The P and K panels of one finished RCN run: P rows = (layer,) chemical,
-- columns = the motifs in use; K rows = (layer,) chemical, columns =
-- chemical.
local function rcn_panels(f)
  local L, P, K = f.chemicals, f.params.P, f.params.K
  local layered = f.share == "layer"
  local prow, pvals, krow, kvals = {}, {}, {}, {}
  local kcols, pcols = {}, {}
  for _, r in ipairs(opts.motifs) do pcols[#pcols + 1] = "F" .. r end
  for c = 1, L do kcols[c] = "h" .. (c - 1) end
  local layers = layered and #P or 1
  for l = 1, layers do
    local Pl = layered and P[l] or P
    local Kl = layered and K[l] or K
    for c = 1, L do
      local tag = (layered and format("l%d ", l) or "") .. "h" .. (c - 1)
      prow[#prow + 1], krow[#krow + 1] = tag, tag
      local pr = {}
      for _, r in ipairs(opts.motifs) do pr[#pr + 1] = Pl[c][r + 1] end
      pvals[#pvals + 1] = pr
      kvals[#kvals + 1] = Kl[c]
    end
  end
  return {{title = "P (motif weights)", rows = prow, cols = pcols, values = pvals},
          {title = "K (chemical mixing)", rows = krow, cols = kcols, values = kvals}}
end

-- ---------------------------------------------------------------- plots

local out_plots = {}
local function add(paths) for _, p in ipairs(paths or {}) do out_plots[#out_plots + 1] = p end end
add(plot.curves(rows, {out = run:path("query_accuracy.png"), x = "episode", y = "accuracy_smooth",
                       group = "run", ylabel = "query accuracy (running mean)",
                       title = format("Meta-training: query accuracy (%s, %d-way, K = %d)",
                                      ds.name, opts.M, opts.K)}))
add(plot.curves(rows, {out = run:path("heldout_accuracy.png"), x = "episode",
                       y = "heldout_accuracy", group = "run", ylabel = "held-out query accuracy",
                       title = "Meta-test on held-out episodes (meta-parameters fixed)"}))
add(plot.curves(rows, {out = run:path("query_loss.png"), x = "episode", y = "ce", group = "run",
                       ylabel = "query cross-entropy", title = "Meta-training: query loss"}))
for _, name in ipairs(opts.runs) do
  local f = s.finished[name]
  if f and f.params and f.chemicals >= 2 and f.kind ~= "biasonly" then
    local p = heatmap(rcn_panels(f), run:path("PK_" .. name .. ".png"),
                      "learned P and K: " .. f.title)
    if p then out_plots[#out_plots + 1] = p end
  end
end

-- ---------------------------------------------------------------- table

local summary = {}
local base = s.finished.motif
local width = 40                            -- the title column fits every title
for _, name in ipairs(opts.runs) do
  if s.finished[name] then width = math.max(width, #s.finished[name].title) end
end
print(format("\n%-" .. width .. "s %8s %9s %9s %9s %8s %9s", "run (" .. ds.name .. ")", "params",
             "final", "best", "train", "guards", "s/episode"))
for _, name in ipairs(opts.runs) do
  local f = s.finished[name]
  if f then
    print(format("%-" .. width .. "s %8d %8.1f%% %8.1f%% %8.1f%% %8s %9.2f", f.title,
                 f.meta_parameters,
                 100 * f.final_accuracy, 100 * f.best_accuracy, 100 * f.train_accuracy,
                 format("%d/%d", f.skipped, f.rollbacks), f.seconds_per_episode))
    local paper
    if f.kind == "motif" then paper = "baseline (below every RCN in the report's Fig. 1)"
    elseif f.kind == "rcn" then paper = "above the baseline; L barely matters"
    elseif f.kind == "layer" then paper = "above shared parameters (most for L = 2-3)"
    elseif f.kind == "neuron" then paper = "best of all variants"
    elseif f.kind == "momentum" then paper = "slightly above the baseline"
    elseif f.kind == "biasonly" then paper = "does not learn" end
    local note = opts.quick and "quick run" or
      format("%d episodes, %s; best %.1f%%%s", opts.episodes, ds.name, 100 * f.best_accuracy,
             base and name ~= "motif" and format("; baseline %.1f%%", 100 * base.final_accuracy)
               or "")
    summary[#summary + 1] = {label = f.title .. ": meta-test query accuracy", ours = f.final_accuracy,
                             paper = paper, unit = "%", note = note}
  end
end
print("(final/best: meta-test accuracy of the final meta-parameters and of those with the best " ..
      "held-out accuracy; train: running mean of the meta-training query accuracy; guards: " ..
      "skipped/rolled-back steps; the report (EMNIST) gives curves only)")
run:finish{runs = s.finished, summary = summary, plots = out_plots}
