-- experiments/metaplasticity.lua: Figs. 3-4 of Shervani-Tabar & Rosenbaum,
-- "Meta-learning biologically plausible plasticity rules with random
-- feedback pathways", Nat. Commun. 14, 1805 (2023), on the data here.
--
-- Meta-trains the coefficients theta of W_l += sum_r theta_r F^r_l
-- (rules/motifs.lua) on 5-way few-shot tasks (K = 50 training images per
-- class seen once each, online, by a fresh 784-170-130-100-70-10 softplus
-- network; Q = 10 query images per class score the adapted network), with
-- exact meta-gradients through the 250 inner steps (nm.meta, nm.autograd)
-- and Adam. Runs (--runs):
--   fa_lr         FA feedback, theta_0 (the learning rate) only
--   bp_lr         BP feedback, theta_0 only
--   pool          all ten motifs, FA, exactly as specified (never guarded)
--   pool_guarded  all ten motifs, FA, guarded, with F5 scaled down
--                 (--scale5) and a smaller meta learning rate (--lr-guarded,
--                 1e-4: 3e-4 gave 44.7-67.5% after 300 episodes depending on
--                 the task stream, 1e-4 gave 63.9-67.0%)
--   bio           F_bio = theta_0 F0 + theta_2 F2 + theta_9 F9
--   ehebb, oja    theta_0 with the error-Hebbian F2, or with Oja's F9
-- Guards (--guards, default on; every run but pool): the meta-gradient is
-- clipped to norm --clip (unrolled inner loops have meta-gradients that
-- explode now and then, up to 1e20 here, and one of them freezes Adam for
-- the rest of the run); a non-finite step rolls theta (and Adam's state)
-- back to the best theta so far and halves the meta learning rate; so
-- does a held-out accuracy --revert-drop below the best. With --no-guards
-- non-finite steps are only skipped (pool: not even that).
-- Every --eval-every episodes each run's theta is scored on fixed held-out
-- episodes drawn from the test images (meta-test: theta fixed), with the
-- alignment angles of the rule's errors and updates to backprop's; the
-- best theta by held-out accuracy is kept. At the end the final and best
-- theta are scored on --test-episodes fresh held-out episodes.
-- The paper used EMNIST (47 classes); here tasks come from Fashion-MNIST
-- (--data fashion, default), MNIST (--data mnist) or its subset (--data
-- mnist-subset); labels are the data set's 10 classes and the network has
-- --outputs (10) outputs.
--
--   ./neuromic experiments/metaplasticity.lua --quick          # seconds
--   ./neuromic experiments/metaplasticity.lua --out results/metaplasticity
--   ./neuromic experiments/metaplasticity.lua --runs fa_lr,bp_lr,bio --episodes 300
--   ./neuromic experiments/metaplasticity.lua --rules motifs,./my_rule.lua --quick
--
-- --rules: the meta rules (of model motif_net: rules/motifs.lua, or a
-- user's file) every run is made with; a run of a rule other than motifs
-- is named <run>-<rule>. A run's coefficient indices are the rule's
-- (pool: all of them). --pathway: the error pathway of every run but bp_lr
-- (a pathway without C form runs the rule's Lua step: slower).

local nm = require "neuromic"
local cli = require "nm.cli"
local results = require "nm.results"
local progress = require "nm.progress"
local plot = require "nm.plot"
local data = require "nm.data"
local meta = require "nm.models.meta"
local motif_net = require "nm.models.motif_net"
local fewshot = require "lib.fewshot"

local format = string.format

local ALL = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

-- paper: what the paper reports on EMNIST (Figs. 3-4), as text.
local RUNS = {
  fa_lr = {title = "FA, learning rate only", feedback = "fa", motifs = {0},
           lambda = 0, paper = "~25%"},
  bp_lr = {title = "BP, learning rate only", feedback = "bp", motifs = {0},
           lambda = 0, paper = "~70%"},
  pool = {title = "10-motif pool, as specified", feedback = "fa", motifs = ALL, guard = "none",
          paper = "approaches BP (~70%) by ~300 episodes"},
  pool_guarded = {title = "10-motif pool, with guards", feedback = "fa", motifs = ALL,
                  always_guarded = true, scale5 = true,
                  paper = "approaches BP (~70%) by ~300 episodes"},
  bio = {title = "F_bio (theta 0, 2, 9)", feedback = "fa", motifs = {0, 2, 9},
         paper = "about as well as the pool"},
  ehebb = {title = "eHebb subset (theta 0, 2)", feedback = "fa", motifs = {0, 2}},
  oja = {title = "Oja subset (theta 0, 9)", feedback = "fa", motifs = {0, 9}},
}
local ORDER = {"fa_lr", "bp_lr", "pool", "pool_guarded", "bio", "ehebb", "oja"}

local opts = cli.parse(arg, {
  name = "metaplasticity",
  description = "Meta-learned plasticity rules from 10 motifs (Shervani-Tabar & Rosenbaum " ..
                "2023, Figs. 3-4): FA and BP with the learning rate only, the motif pool, " ..
                "F_bio, eHebb and Oja subsets, exact meta-gradients through the inner loop.",
  options = {
    data.cli_option("fashion"),
    {"runs", "list", ORDER, "runs: " .. table.concat(ORDER, ", "), item = "string"},
    {"rules", "list", {"motifs"}, "meta rules of model motif_net: names from rules/ or " ..
     "paths (./my_rule.lua)", item = "string"},
    {"pathway", "string", "fa", "error pathway of the runs with random feedback (all but " ..
     "bp_lr): fa, dfa, sign_symmetry, or a connection rule defining one (name or path)"},
    {"episodes", "int", 600, "meta-training episodes per run", quick = 4, min = 1},
    {"M", "int", 5, "classes per task", min = 2},
    {"K", "int", 50, "training images per class (inner steps = M K)", quick = 6, min = 1},
    {"Q", "int", 10, "query images per class", quick = 4, min = 1},
    {"outputs", "int", 10, "output units (>= the data set's classes; EMNIST had 47)", min = 2},
    {"lr", "number", 1e-3, "Adam learning rate of the meta-parameters", min = 0},
    {"lr-guarded", "number", 1e-4, "Adam learning rate of the guarded pool (3e-4 did worse " ..
     "on average over task streams; README)", min = 0},
    {"lambda", "number", 5e-4, "L1 penalty on theta (runs with several motifs)", min = 0},
    {"theta0", "number", 1e-3, "initial theta_0 (the others start at 0)"},
    {"guards", "bool", true, "guard every run but pool (clipping, rollback, revert)"},
    {"clip", "number", 1, "guarded runs: meta-gradient norm clip (0: no clipping)", min = 0},
    {"scale5", "number", 0.05, "guarded pool: scale of F5 (theta_5 = scale phi_5)", min = 0},
    {"revert-drop", "number", 0.15, "guarded runs: roll back to the best theta (and halve the " ..
     "meta learning rate) when the held-out accuracy falls this far below the best (1: never)",
     min = 0},
    {"eval-every", "int", 25, "episodes between held-out evaluations", quick = 2, min = 1},
    {"heldout", "int", 20, "held-out episodes per evaluation", quick = 2, min = 1},
    {"test-episodes", "int", 100, "held-out episodes scoring the final and best theta",
     quick = 2, min = 1},
    {"align", "int", 10, "query images for the alignment angles", quick = 3, min = 1},
    {"smooth", "int", 25, "episodes in the running mean of the query accuracy", quick = 2, min = 1},
    {"dtype", "string", "float32", "network element type", choices = {"float32", "float64"}},
    {"threads", "int", 1, "OpenBLAS threads", min = 1},
    {"checkpoint-every", "int", 50, "episodes between checkpoints", quick = 0, min = 0},
    {"stop-after", "int", 0, "send SIGTERM to itself after N episodes in all (tests resume)", min = 0},
    {"replot", "bool", false, "only redraw the plots and the table of the finished run in --out"},
  },
})

cli.guard("--threads " .. opts.threads, nm.blas_threads, opts.threads)
if not (opts.scale5 > 0) then
  io.stderr:write("metaplasticity: --scale5 must be > 0 (theta_5 = scale phi_5; a tiny scale " ..
                  "such as 1e-9 switches F5 off)\n")
  os.exit(2)
end
for _, name in ipairs(opts.runs) do
  if not RUNS[name] then
    io.stderr:write(format("metaplasticity: unknown run '%s' (choose from %s)\n", name,
                           table.concat(ORDER, ", ")))
    os.exit(2)
  end
end

-- Every (rule, run) pair is a run of its own: RUNS gets an entry per pair
-- (the motif rule keeps the plain run names) and opts.runs lists them.
fewshot.pathway(opts.pathway, "metaplasticity", "--pathway")

local function expand_runs()
  local names = {}
  for _, def in ipairs(fewshot.rules(opts.rules, {"motif_net"}, "metaplasticity")) do
    local n = def.coefficients.theta and def.coefficients.theta.size
    if math.type(n) ~= "integer" or n < 1 then
      io.stderr:write(format("metaplasticity: rule '%s': coefficients.theta.size (a positive " ..
                             "integer) is missing\n", def.name))
      os.exit(2)
    end
    for _, base in ipairs(opts.runs) do
      local cfg = {}
      for k, v in pairs(RUNS[base]) do cfg[k] = v end
      if #cfg.motifs == 10 and n ~= 10 then           -- the pool: every coefficient
        cfg.motifs = {}
        for r = 0, n - 1 do cfg.motifs[r + 1] = r end
      end
      for _, r in ipairs(cfg.motifs) do
        if r >= n then
          io.stderr:write(format("metaplasticity: run '%s' uses coefficient %d, rule '%s' has " ..
                                 "%d\n", base, r, def.name, n))
          os.exit(2)
        end
      end
      cfg.rule, cfg.count = def, n
      if cfg.feedback == "fa" and opts.pathway ~= "fa" then
        cfg.feedback = opts.pathway
        cfg.title = cfg.title .. " [" .. opts.pathway .. "]"
      end
      local name = base
      if def.name ~= "motifs" then
        name = base .. "-" .. def.name
        cfg.title = cfg.title .. " [" .. def.name .. "]"
      end
      RUNS[name] = cfg
      names[#names + 1] = name
    end
  end
  return names
end
opts.runs = expand_runs()

-- Plots, from the metric rows; paths made by outpath(name).
local function draw(rows, outpath, dsname)
  local out_plots = {}
  local function add(paths) for _, p in ipairs(paths or {}) do out_plots[#out_plots + 1] = p end end
  add(plot.curves(rows, {out = outpath("query_accuracy.png"), x = "episode", y = "accuracy_smooth",
                         group = "run", ylabel = "query accuracy (running mean)",
                         title = format("Meta-training: query accuracy (%s, %d-way, K = %d)",
                                        dsname, opts.M, opts.K)}))
  add(plot.curves(rows, {out = outpath("heldout_accuracy.png"), x = "episode",
                         y = "heldout_accuracy", group = "run", ylabel = "held-out query accuracy",
                         title = "Meta-test on held-out episodes (theta fixed)"}))
  for _, name in ipairs(opts.runs) do
    if #RUNS[name].motifs > 1 then
      local sub, ys = {}, {}
      for _, r in ipairs(rows) do if r.run == name then sub[#sub + 1] = r end end
      for _, m in ipairs(RUNS[name].motifs) do ys[#ys + 1] = "theta_" .. m end
      add(plot.curves(sub, {out = outpath("theta_" .. name .. ".png"), x = "episode", y = ys,
                            ylabel = "theta_r", title = "theta trajectories: " .. RUNS[name].title}))
    end
  end
  -- one plot per hidden layer, a line per run
  local layer = 1
  while true do
    local key, sub = "angle_e" .. layer, {}
    for _, r in ipairs(rows) do if r[key] then sub[#sub + 1] = r end end
    if #sub == 0 then break end
    add(plot.curves(sub, {out = outpath(format("alignment_e%d.png", layer)), x = "episode",
                          y = key, group = "run", ylabel = "degrees",
                          title = format("Angle between the rule's error e_%d and backprop's " ..
                                         "delta_%d (held-out episode)", layer, layer)}))
    layer = layer + 1
  end
  return out_plots
end

-- The table of results; returns the summary for results.json.
-- (values read back from results.json may be json.null)
local function finite_number(v) return type(v) == "number" and meta.finite(v) end

-- v as a percentage, or `missing` (default "-") when it is not a finite number.
local function percent(v, missing)
  return finite_number(v) and format("%.1f%%", 100 * v) or missing or "-"
end

local function table_of(finished, dsname)
  local summary = {}
  local width = 30                          -- the title column fits every title
  for _, name in ipairs(opts.runs) do
    if finished[name] then width = math.max(width, #finished[name].title) end
  end
  local row = "%-" .. width .. "s %10s %10s %10s %8s   %s"
  print(format("\n" .. row, "run (" .. dsname .. ")", "final", "best", "train", "guards",
               "paper (EMNIST)"))
  for _, name in ipairs(opts.runs) do
    local f = finished[name]
    if f then
      print(format(row, f.title,
                   finite_number(f.died) and format("died@%d", f.died) or percent(f.final_accuracy),
                   percent(f.best_accuracy), percent(f.train_accuracy),
                   f.guarded and format("on %d/%d", f.skipped, f.rollbacks) or
                     format("off %d/%d", f.skipped, f.rollbacks), f.paper or "-"))
      summary[#summary + 1] = {label = f.title .. ": meta-test query accuracy (best theta)",
                               ours = finite_number(f.best_accuracy) and f.best_accuracy or nil,
                               paper = f.paper, unit = "%",
                               note = (opts.quick and "quick run; " or
                                       format("%d episodes, %s; ", opts.episodes, dsname)) ..
                                 (finite_number(f.died)
                                    and format("theta diverged at episode %d", f.died)
                                    or "final theta " .. percent(f.final_accuracy))}
    end
  end
  print("(final/best: meta-test accuracy of the final theta and of the theta with the best " ..
        "held-out accuracy; died@k: theta became non-finite at episode k; train: running mean " ..
        "of the meta-training query accuracy; guards: on/off, skipped/rolled-back steps)")
  return summary
end

if opts.replot then
  local info, rows = results.finished(opts.out)
  local finished = info.final and info.final.runs or {}
  local plots = draw(rows, function(name) return opts.out .. "/" .. name end, opts.data)
  table_of(finished, opts.data)
  for _, p in ipairs(plots) do print("plot: " .. p) end
  if info.final then                      -- the plot list in results.json follows
    info.final.plots = plots
    nm.sys.atomic_write(opts.out .. "/results.json", require("nm.json").encode(info, {indent = 2}) .. "\n")
  end
  os.exit(0)
end

local setup, err = cli.guard("--data " .. opts.data, fewshot.setup, opts)
if not setup then
  io.stderr:write("metaplasticity: ", err, "\n")
  os.exit(2)
end
local ds, sizes, steps = setup.ds, setup.sizes, setup.steps

local coefficients = 0
for _, name in ipairs(opts.runs) do coefficients = math.max(coefficients, RUNS[name].count) end
local run = results.open(opts, {
  dataset = setup.dataset,
  columns = {"run", "episode"},
  checkpoint_every = opts.checkpoint_every,
  nonfinite = fewshot.nonfinite(coefficients),
})
io.stderr:write(format("metaplasticity: %s, network %s (%s), %d inner steps, %d outputs " ..
                       "(EMNIST in the paper: 47)\n", ds.name, table.concat(sizes, "-"),
                       opts.dtype, steps, opts.outputs))

local train_tasks, test_tasks = setup.train, setup.test

local function heldout_set(count, seed) return meta.heldout(test_tasks, count, seed) end
local heldout = heldout_set(opts.heldout, opts.seed + 7919)

local function evaluate(learner, set, theta)
  local acc, loss = 0, 0
  for _, t in ipairs(set) do
    local a, l = learner:evaluate(t, nm.generator(t.seed), theta)
    acc, loss = acc + a, loss + l
  end
  return acc / #set, loss / #set
end

-- Whether a run is guarded (see the header).
local function guarded(cfg)
  return cfg.always_guarded or (opts.guards and cfg.guard ~= "none")
end

local function make_learner(cfg)
  local net = motif_net.new{rule = cfg.rule, sizes = sizes, feedback = cfg.feedback,
                            dtype = opts.dtype}
  local o = {net = net, motifs = cfg.motifs, theta0 = {[0] = opts.theta0}, lr = opts.lr,
             lambda = cfg.lambda or opts.lambda, guard = cfg.guard or "skip"}
  if guarded(cfg) then o.guard, o.clip = "rollback", opts.clip > 0 and opts.clip or nil end
  if cfg.scale5 and cfg.count > 5 then o.lr, o.scale = opts.lr_guarded, {[5] = opts.scale5} end
  return motif_net.learner(o)
end

local function theta_row(row, theta)
  for r = 0, theta:numel() - 1 do row["theta_" .. r] = theta:get(r + 1) end
end

-- State of the whole experiment (what a checkpoint holds).
local s = run:resume()
if not s then
  s = {index = 1, finished = {}}
end
local total = #opts.runs * opts.episodes
local bar = progress.new{total = total, label = "meta-training"}
local step_count = (s.index - 1) * opts.episodes + (s.current and s.current.episode or 0)

while s.index <= #opts.runs do
  local name = opts.runs[s.index]
  local cfg = RUNS[name]
  local learner = make_learner(cfg)
  local cur = s.current
  if not cur then
    -- Every run sees the same task stream and is tested on the same
    -- episodes, whatever its place in --runs: a paired comparison, and
    -- `--runs X` alone reproduces X of the full list.
    cur = {name = name, episode = 0, g = nm.generator(opts.seed * 100 + 1), recent = {},
           best_acc = -1, best_theta = learner:theta(), best_episode = 0}
    s.current = cur
  else
    learner:load_state(cur.learner)
  end
  local t_run, c_run = nm.sys.clock(), os.clock()
  cur.seconds, cur.cpu_s = cur.seconds or 0, cur.cpu_s or 0
  for ep = cur.episode + 1, opts.episodes do
    local task = train_tasks:sample(cur.g)
    local info = learner:meta_step(task, cur.g)
    if not info.finite and not cur.died and not meta.finite(info.theta:sum()) then
      cur.died = ep                        -- theta itself is lost (guard "none")
    end
    local mean = fewshot.running_mean(cur.recent, info.accuracy, opts.smooth)
    local row = fewshot.step_row(name, ep, info, mean, learner)
    theta_row(row, info.theta)
    if ep % opts.eval_every == 0 or ep == opts.episodes then
      local theta = learner:theta()
      local acc, loss = evaluate(learner, heldout, theta)
      row.heldout_accuracy, row.heldout_loss = acc, loss
      if acc > cur.best_acc then
        cur.best_acc, cur.best_theta, cur.best_episode = acc, theta, ep
        learner:mark_good()
      elseif guarded(cfg) and not (acc >= cur.best_acc - opts.revert_drop) then
        learner:rollback()                 -- the network died or diverged: back to the best
        row.action = "revert"
        row.rollbacks = learner.rollbacks
      end
      -- alignment angles on the first held-out episode's adapted weights
      local t1 = heldout[1]
      local W, B
      if meta.finite(theta:sum()) then W, B = learner:episode(t1, nm.generator(t1.seed), theta) end
      if W and meta.finite(W[1]:sum()) then
        local al = motif_net.alignment(learner.net, W, B, theta, t1.Xq, t1.labels_q, opts.align)
        for l = 1, learner.net.layers do
          row["angle_e" .. l] = al.e[l]
          row["angle_dW" .. l] = al.dW[l]
        end
      end
    end
    run:log(row)
    -- Evaluations allocate in bursts that the incremental collector lets
    -- pile up (gigabytes over a run): collect after each.
    if row.heldout_accuracy then collectgarbage("collect") end
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
  -- Meta-test of the final and the best theta on fresh held-out episodes.
  local test_set = heldout_set(opts.test_episodes, opts.seed + 104729)
  local final_theta = learner:theta()
  local fa, fl = evaluate(learner, test_set, final_theta)
  local ba, bl = evaluate(learner, test_set, cur.best_theta)
  s.finished[name] = {
    title = cfg.title, final_accuracy = fa, final_loss = fl, best_accuracy = ba, best_loss = bl,
    best_episode = cur.best_episode, train_accuracy = fewshot.mean(cur.recent),
    final_theta = final_theta:totable(), best_theta = cur.best_theta:totable(),
    skipped = learner.skipped, rollbacks = learner.rollbacks,
    seconds = cur.seconds + (nm.sys.clock() - t_run), cpu_s = cur.cpu_s + (os.clock() - c_run),
    paper = cfg.paper, died = cur.died, guarded = guarded(cfg),
  }
  local lost = "none (theta not finite)"
  io.stderr:write(format("\n%-14s meta-test accuracy: final theta %s, best theta %s " ..
                         "(episode %d); theta %s\n", name, percent(fa, lost), percent(ba, lost),
                         cur.best_episode, motif_net.describe(final_theta)))
  s.index = s.index + 1
  s.current = nil
end
bar:finish()

local out_plots = draw(run:metrics(), function(name) return run:path(name) end, ds.name)
local summary = table_of(s.finished, ds.name)
run:finish{runs = s.finished, summary = summary, plots = out_plots}
