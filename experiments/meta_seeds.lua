-- experiments/meta_seeds.lua: the seed statistics of the meta-learning
-- experiments (experiments/metaplasticity.lua, experiments/rcn.lua) from
-- their sweeps (experiments/sweep.lua), written as a Markdown report:
--   --guards DIR   a metaplasticity sweep over --set guards=true,false
--                  (and seeds): are the guards needed? Per seed the
--                  meta-test accuracy of the final and of the best theta,
--                  the meta-gradient norms (median, largest, spikes), the
--                  first collapse; over seeds mean +- 95% t interval, the
--                  paired t-test (guards on - off, paired by seed: the same
--                  task stream and test episodes) and Fisher's exact test
--                  on the number of failed runs (final theta below
--                  --collapse: collapsed or never learned).
--   --methods DIR  a metaplasticity sweep over --set runs=...: each run's
--                  mean +- 95% interval over seeds and the paired t-test
--                  against BP with the learning rate only (bp_lr); the
--                  guarded F_bio cells of --guards join the table.
--   --rcn DIR      an rcn sweep over --set runs=...: the same, against the
--                  motif baseline (motif).
-- Only finished cells count; a sweep still running gives a partial
-- report (n says how many seeds). The exact sweep commands are rebuilt
-- from each DIR/sweep.json.
--
--   ./neuromic experiments/meta_seeds.lua --guards results/h15/meta_guards \
--       --methods results/h15/meta_methods --rcn results/h15/rcn \
--       --doc doc/reports/meta_seeds.md

local cli = require "nm.cli"
local json = require "nm.json"
local stats = require "nm.stats"
local sweep = require "nm.sweep"
local nm = require "neuromic"

local format = string.format

local opts = cli.parse(arg, {
  name = "meta_seeds",
  description = "Seed statistics (mean +- 95% CI, paired t-tests, collapses, meta-gradient " ..
                "norms) of the metaplasticity and RCN sweeps, as a Markdown report.",
  options = {
    {"guards", "string", "", "metaplasticity sweep over guards=true,false (empty: none); a " ..
     "comma-separated list joins sweeps of the same grid over other seeds", metavar = "DIR"},
    {"methods", "string", "", "metaplasticity sweep over runs=... (empty: none)", metavar = "DIR"},
    {"rcn", "string", "", "rcn sweep over runs=... (empty: none)", metavar = "DIR"},
    {"ablation", "string", "", "with --guards: a metaplasticity sweep of the same run with the " ..
     "guards on and one part of them switched off (e.g. --set revert-drop=1: clipping " ..
     "alone), shown beside on and off", metavar = "DIR"},
    {"doc", "string", "", "write the report to this file as well as to stdout", metavar = "FILE"},
    {"collapse", "number", 0.3, "a run has collapsed when a held-out evaluation scores below " ..
     "this accuracy after one scored at least --learned, and has failed when its final theta " ..
     "scores below it (5-way chance: 0.2)", min = 0},
    {"learned", "number", 0.5, "held-out accuracy from which a run counts as having learned",
     min = 0},
    {"spike", "number", 10, "a meta-gradient spike: a norm above this many times the median " ..
     "of the 10 before it (or not finite)", min = 1},
  },
})

if opts.guards == "" and opts.methods == "" and opts.rcn == "" then
  cli.error("give at least one of --guards, --methods, --rcn")
end

-- ------------------------------------------------------------ reading

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

-- The finished cells of one sweep folder: {seed, options, runs
-- (results.final.runs), dir, elapsed_s, version}, and its grid
-- (sweep.json).
local function read_one(dir)
  if not exists(dir .. "/sweep.json") then
    cli.error(format("%s is not a sweep folder (no sweep.json)", dir))
  end
  local grid = json.read_file(dir .. "/sweep.json")
  local out = {}
  for _, row in ipairs(sweep.read(dir)) do
    local res = row.results
    if type(res) == "table" and res.status == "finished" and type(res.final) == "table" then
      out[#out + 1] = {seed = row.seed, options = row.options or {}, runs = res.final.runs or {},
                       dir = row.dir, elapsed_s = row.elapsed_s, version = res.version}
    end
  end
  return out, grid
end

-- The command that ran (or resumes) a sweep, from its sweep.json.
local function command_of(dir, grid)
  local parts = {"./neuromic experiments/sweep.lua", grid.experiment}
  for _, set in ipairs(grid.sets or {}) do
    parts[#parts + 1] = format("--set %s=%s", set.name, table.concat(set.values, ","))
  end
  local seeds = grid.seeds or {}
  local contiguous = #seeds > 1
  for i = 2, #seeds do if seeds[i] ~= seeds[i - 1] + 1 then contiguous = false end end
  parts[#parts + 1] = "--seeds " .. (contiguous and format("%d-%d", seeds[1], seeds[#seeds])
                                     or table.concat(seeds, ","))
  parts[#parts + 1] = "--jobs 2 --out " .. dir
  if grid.quick then parts[#parts + 1] = "--quick" end
  if grid.args and #grid.args > 0 then parts[#parts + 1] = "-- " .. table.concat(grid.args, " ") end
  return table.concat(parts, " ")
end

-- The finished cells of the sweep folders of a comma-separated list (the
-- same grid over more seeds, say), ordered by seed; the first folder's
-- grid; the commands of all, indented as a Markdown code block.
local function read_sweep(list)
  local cells, grid, cmds = {}, nil, {}
  for dir in list:gmatch("[^,]+") do
    local c, g = read_one(dir)
    for _, cell in ipairs(c) do cells[#cells + 1] = cell end
    grid = grid or g
    cmds[#cmds + 1] = "    " .. command_of(dir, g)
  end
  table.sort(cells, function(a, b) return a.seed < b.seed end)
  return cells, grid, table.concat(cmds, "\n")
end

-- The metric rows of a cell (metrics.jsonl), or nil when its folder is gone.
local function metric_rows(cell)
  if not cell.dir or not exists(cell.dir .. "/metrics.jsonl") then return nil end
  return json.read_lines(cell.dir .. "/metrics.jsonl")
end

local function finite(x) return type(x) == "number" and x == x and x ~= math.huge and x ~= -math.huge end

local function median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local n = #s
  if n == 0 then return 0 / 0 end
  return n % 2 == 1 and s[(n + 1) / 2] or 0.5 * (s[n / 2] + s[n / 2 + 1])
end

-- What the metric rows of one run say: meta-gradient norms (median,
-- largest and its episode, spikes and the first one), the first collapse
-- (a held-out evaluation below --collapse after one at or above
-- --learned), the lowest held-out accuracy from the first evaluation at or
-- above --learned on, the guards' reverts.
local function trace(rows, run)
  local t = {norms = {}, spikes = 0, nonfinite = 0, reverts = 0}
  local sub = {}
  for _, r in ipairs(rows) do if r.run == run then sub[#sub + 1] = r end end
  for _, r in ipairs(sub) do
    if finite(r.grad_norm) then t.norms[#t.norms + 1] = r.grad_norm
    else t.nonfinite = t.nonfinite + 1 end
  end
  t.median = median(t.norms)
  t.max, t.max_episode = -1, nil
  local recent, learned = {}, false
  for _, r in ipairs(sub) do
    local g = r.grad_norm
    if finite(g) and g > t.max then t.max, t.max_episode = g, r.episode end
    -- a spike: not finite, or above --spike times the median of the
    -- (up to) 10 finite norms before it (at least 3 of them)
    if not finite(g) or (#recent >= 3 and g > opts.spike * median(recent)) then
      t.spikes = t.spikes + 1
      t.first_spike = t.first_spike or r.episode
    end
    if finite(g) then
      recent[#recent + 1] = g
      if #recent > 10 then table.remove(recent, 1) end
    end
    if r.action == "revert" then t.reverts = t.reverts + 1 end
    local h = r.heldout_accuracy
    if h ~= nil then
      local v = finite(h) and h or 0
      if learned then
        t.low = math.min(t.low or 1, v)
        if v < opts.collapse and not t.collapse then t.collapse = r.episode end
      end
      if v >= opts.learned then
        learned = true
        t.low = math.min(t.low or 1, v)
      end
    end
  end
  return t
end

-- ------------------------------------------------------------ formatting

local function pct(x) return finite(x) and format("%.1f", 100 * x) or "-" end

-- "mean ± half" in percent over a list of accuracies (n in brackets).
local function ci_text(xs)
  local clean = {}
  for _, x in ipairs(xs) do clean[#clean + 1] = finite(x) and x or 0 end
  if #clean == 0 then return "-" end
  local ci = stats.mean_ci(clean)
  if #clean < 2 then return format("%s (n = 1)", pct(ci.mean)) end
  return format("%s ± %s", pct(ci.mean), format("%.1f", 100 * ci.half))
end

local function p_text(p)
  if not finite(p) then return "-" end
  if p < 1e-4 then return "< 0.0001" end
  return format("%.4f", p)
end

local function sci(x)
  if not finite(x) then return "-" end
  return format("%.2g", x)
end

local lines = {}
local function say(s) lines[#lines + 1] = s or "" end

local function sum_seconds(cells)
  local wall, cpu, have_cpu = 0, 0, true
  for _, c in ipairs(cells) do
    wall = wall + (c.elapsed_s or 0)
    for _, f in pairs(c.runs) do
      if finite(f.cpu_s) then cpu = cpu + f.cpu_s else have_cpu = false end
    end
  end
  return wall, have_cpu and cpu or nil
end

local function time_text(cells)
  if #cells == 0 then return "no finished cell yet" end
  local wall, cpu = sum_seconds(cells)
  return format("%d cells, %.0f s of worker wall time%s", #cells, wall,
                cpu and format(", %.0f CPU s", cpu) or " (CPU time not recorded by this code version)")
end

local function versions(cells)
  local seen, list = {}, {}
  for _, c in ipairs(cells) do
    if c.version and not seen[c.version] then seen[c.version] = true; list[#list + 1] = c.version end
  end
  return table.concat(list, ", ")
end

say("# Meta-learning over seeds (written by experiments/meta_seeds.lua; do not edit)")
say()
say("Fashion-MNIST 5-way tasks (K = 50, Q = 10), 784-170-130-100-70-10 softplus network, " ..
    "exact meta-gradients through the 250 inner steps (`doc/reports/metaplasticity.md`, " ..
    "`doc/reports/rcn.md`). Each cell of a sweep is one run on one seed; the seed sets the " ..
    "task stream, the initial weights, the held-out episodes and the 100 test episodes, so " ..
    "runs with the same seed are paired. Accuracies: meta-test query accuracy in percent of " ..
    "the final theta and of the theta with the best held-out accuracy, mean ± half-width of " ..
    "the 95% Student t interval over seeds. A run whose theta is not finite scores 0.")
say()
local argv = {"./neuromic experiments/meta_seeds.lua"}
for _, k in ipairs{"guards", "ablation", "methods", "rcn"} do
  if opts[k] ~= "" then argv[#argv + 1] = format("--%s %s", k, opts[k]) end
end
if opts.doc ~= "" then argv[#argv + 1] = "--doc " .. opts.doc end
say("    " .. table.concat(argv, " "))
say()

-- ------------------------------------------------------------ guards

local guard_bio = {}          -- seed -> final runs entry of the guarded bio cell (joins --methods)

if opts.guards ~= "" then
  local cells, _, cmds = read_sweep(opts.guards)
  say("## Are the guards needed? F_bio with and without them")
  say()
  say(cmds)
  say()
  say(format("Guards (`--guards`, the default): the meta-gradient clipped to norm 1, a " ..
             "non-finite step rolled back to the best theta so far with the meta learning " ..
             "rate halved, and the same when a held-out evaluation falls 15 points below the " ..
             "best. `--no-guards`: non-finite steps skipped, nothing else. Norms are those of " ..
             "the meta-gradient before clipping. Collapse: a held-out evaluation below %.0f%% " ..
             "(5-way chance: 20%%) after one at or above %.0f%%; lowest: the lowest held-out " ..
             "accuracy from the first evaluation at or above %.0f%% on; spike: a norm above %g " ..
             "times the median of the 10 before it, or not finite. %s; code %s.",
             100 * opts.collapse, 100 * opts.learned, 100 * opts.learned, opts.spike,
             time_text(cells), versions(cells)))
  say()
  local by, conds = {}, {{key = "true", label = "on"}, {key = "false", label = "off"}}
  local function add(list, fixed_key)
    for _, c in ipairs(list) do
      local name = c.options.runs or "bio"
      local f = c.runs[name]
      if f then
        local key = fixed_key or tostring(c.options.guards)
        by[c.seed] = by[c.seed] or {}
        local rows = metric_rows(c)
        by[c.seed][key] = {f = f, t = rows and trace(rows, name) or nil}
        if key == "true" then guard_bio[c.seed] = f end
      end
    end
  end
  add(cells)
  if opts.ablation ~= "" then
    local acells, agrid, acmds = read_sweep(opts.ablation)
    local parts = {}
    for _, set in ipairs(agrid.sets or {}) do
      if set.name ~= "runs" then parts[#parts + 1] = set.name .. "=" .. table.concat(set.values, ",") end
    end
    for i = 1, #(agrid.args or {}) - 1 do
      if agrid.args[i]:match("^%-%-") and agrid.args[i] ~= "--episodes" and
         not agrid.args[i]:match("^%-%-eval") and agrid.args[i] ~= "--heldout" and
         agrid.args[i] ~= "--test-episodes" then
        parts[#parts + 1] = agrid.args[i]:sub(3) .. "=" .. agrid.args[i + 1]
      end
    end
    local label = "on, " .. table.concat(parts, " ")
    conds[3] = {key = "ablation", label = label}
    add(acells, "ablation")
    say(format("Ablation (`%s`): the guards on with %s. %s; code %s.", label, table.concat(parts, " "),
               time_text(acells), versions(acells)))
    say()
    say(acmds)
    say()
  end
  say("| seed | guards | final | best | median norm | largest norm (episode) | spikes (first) | " ..
      "collapse at | lowest held-out | skipped / rolled back |")
  say("|---|---|---|---|---|---|---|---|---|---|")
  local seeds = {}
  for seed in pairs(by) do seeds[#seeds + 1] = seed end
  table.sort(seeds)
  local sets = {}
  for _, c in ipairs(conds) do sets[c.key] = {final = {}, best = {}, collapsed = 0, n = 0} end
  local paired = {final = {{}, {}}, best = {{}, {}}}
  for _, seed in ipairs(seeds) do
    for _, cond in ipairs(conds) do
      local key = cond.key
      local e = by[seed][key]
      if e then
        local f, t = e.f, e.t
        local s = sets[key]
        s.n = s.n + 1
        s.final[#s.final + 1] = finite(f.final_accuracy) and f.final_accuracy or 0
        s.best[#s.best + 1] = finite(f.best_accuracy) and f.best_accuracy or 0
        if not (finite(f.final_accuracy) and f.final_accuracy >= opts.collapse) then
          s.collapsed = s.collapsed + 1
        end
        say(format("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |", seed,
                   cond.label, pct(f.final_accuracy), pct(f.best_accuracy),
                   t and sci(t.median) or "-",
                   t and format("%s (%s)", sci(t.max), tostring(t.max_episode)) or "-",
                   t and format("%d (%s)", t.spikes, t.first_spike and tostring(t.first_spike) or "-")
                     or "-",
                   t and (t.collapse and tostring(t.collapse) or
                          (t.low and "no" or format("never %.0f%%", 100 * opts.learned))) or "-",
                   t and pct(t.low) or "-",
                   format("%d / %d", f.skipped or 0, f.rollbacks or 0)))
      end
    end
    if by[seed]["true"] and by[seed]["false"] then
      for _, k in ipairs{"final", "best"} do
        local a, b = by[seed]["true"].f[k .. "_accuracy"], by[seed]["false"].f[k .. "_accuracy"]
        table.insert(paired[k][1], finite(a) and a or 0)
        table.insert(paired[k][2], finite(b) and b or 0)
      end
    end
  end
  say()
  say(format("| guards | seeds | final | best | failed runs (final theta below %.0f%%) |",
             100 * opts.collapse))
  say("|---|---|---|---|---|")
  for _, cond in ipairs(conds) do
    local s = sets[cond.key]
    say(format("| %s | %d | %s | %s | %d of %d |", cond.label, s.n,
               ci_text(s.final), ci_text(s.best), s.collapsed, s.n))
  end
  say()
  -- the ablation against off and against on, paired by seed (final theta)
  if conds[3] then
    for _, other in ipairs{conds[2], conds[1]} do
      local xs, ys = {}, {}
      for _, seed in ipairs(seeds) do
        local a, b = by[seed].ablation, by[seed][other.key]
        if a and b then
          xs[#xs + 1] = finite(a.f.final_accuracy) and a.f.final_accuracy or 0
          ys[#ys + 1] = finite(b.f.final_accuracy) and b.f.final_accuracy or 0
        end
      end
      if #xs >= 2 then
        local t = stats.paired_t_test(xs, ys)
        say(format("Paired t-test over %d seeds (%s) - (%s), final theta: %+.1f points [%+.1f, " ..
                   "%+.1f], p = %s.", #xs, conds[3].label, other.label, 100 * t.mean, 100 * t.lo,
                   100 * t.hi, p_text(t.p)))
        say()
      end
    end
  end
  local n = #paired.final[1]
  if n >= 2 then
    local tf = stats.paired_t_test(paired.final[1], paired.final[2])
    local tb = stats.paired_t_test(paired.best[1], paired.best[2])
    local on, off = sets["true"], sets["false"]
    local pf = stats.fisher_exact(on.collapsed, on.n - on.collapsed, off.collapsed,
                                  off.n - off.collapsed)
    say(format("Paired t-test over %d seeds (on - off), final theta: %+.1f points, 95%% " ..
               "interval [%+.1f, %+.1f], t = %.2f, df = %d, p = %s; best theta: %+.1f points " ..
               "[%+.1f, %+.1f], p = %s. Failed runs, Fisher's exact test (two-sided): %d of " ..
               "%d with guards, %d of %d without, p = %s.", n, 100 * tf.mean, 100 * tf.lo,
               100 * tf.hi, tf.t, tf.df, p_text(tf.p), 100 * tb.mean, 100 * tb.lo, 100 * tb.hi,
               p_text(tb.p), on.collapsed, on.n, off.collapsed, off.n, p_text(pf)))
    say()
    local needed = (tf.p < 0.05 and tf.mean > 0) or (pf < 0.05 and off.collapsed > on.collapsed)
    say(format("Decision (stated before the runs: the guards are needed when the paired t-test " ..
               "on the final theta's accuracy favours them at p < 0.05, or when runs without " ..
               "them fail significantly more often, Fisher p < 0.05): **%s**.",
               needed and "the guards are needed" or
                 format("not shown at n = %d (neither test below 0.05)", n)))
    say()
  end
end

-- ------------------------------------------------------------ methods

-- A table of runs over seeds, paired against the cells of `base`.
local function method_table(cells, extra, base, claims, order)
  local by = {}                     -- run -> seed -> finished entry
  local first_title = {}
  for _, c in ipairs(cells) do
    for name, f in pairs(c.runs) do
      by[name] = by[name] or {}
      by[name][c.seed] = f
      first_title[name] = first_title[name] or f.title
    end
  end
  for name, list in pairs(extra or {}) do
    by[name] = by[name] or {}
    for seed, f in pairs(list) do
      if not by[name][seed] then by[name][seed] = f; first_title[name] = first_title[name] or f.title end
    end
  end
  local names = {}
  for _, name in ipairs(order) do if by[name] then names[#names + 1] = name end end
  for name in pairs(by) do
    local listed = false
    for _, n in ipairs(names) do if n == name then listed = true end end
    if not listed then names[#names + 1] = name end
  end
  say(format("| run | seeds | final | best | best - %s (paired, 95%% interval) | p | paper / report |",
             base))
  say("|---|---|---|---|---|---|---|")
  for _, name in ipairs(names) do
    local fin, best, seeds = {}, {}, {}
    for seed in pairs(by[name]) do seeds[#seeds + 1] = seed end
    table.sort(seeds)
    local xs, ys = {}, {}
    for _, seed in ipairs(seeds) do
      local f = by[name][seed]
      fin[#fin + 1] = finite(f.final_accuracy) and f.final_accuracy or 0
      best[#best + 1] = finite(f.best_accuracy) and f.best_accuracy or 0
      local b = by[base] and by[base][seed]
      if b and name ~= base then
        xs[#xs + 1] = best[#best]
        ys[#ys + 1] = finite(b.best_accuracy) and b.best_accuracy or 0
      end
    end
    local diff, p = "-", "-"
    if #xs >= 2 then
      local t = stats.paired_t_test(xs, ys)
      diff = format("%+.1f [%+.1f, %+.1f] (n = %d)", 100 * t.mean, 100 * t.lo, 100 * t.hi, #xs)
      p = p_text(t.p)
    end
    local f1 = by[name][seeds[1]]
    say(format("| %s | %s | %s | %s | %s | %s | %s |", first_title[name] or name,
               table.concat(seeds, ","), ci_text(fin), ci_text(best), diff, p,
               f1.paper or claims and claims[f1.kind] or "-"))
  end
  say()
end

if opts.methods ~= "" then
  local cells, _, cmds = read_sweep(opts.methods)
  say("## Meta-learned rules against BP with the learning rate only")
  say()
  say(cmds)
  say()
  say(format("%s; code %s. F_bio's row is the guarded cells of the guards sweep above (the " ..
             "same options). Paired t-test of the best theta's accuracy against BP, learning " ..
             "rate only, on the same seeds.", time_text(cells), versions(cells)))
  say()
  local extra = next(guard_bio) and {bio = guard_bio} or nil
  method_table(cells, extra, "bp_lr", nil, {"fa_lr", "bp_lr", "pool", "pool_guarded", "bio",
                                            "ehebb", "oja"})
end

if opts.rcn ~= "" then
  local cells, _, cmds = read_sweep(opts.rcn)
  say("## Recurrent chemical networks against the motif baseline")
  say()
  say(cmds)
  say()
  say(format("%s; code %s. Paired t-test of the best meta-parameters' accuracy against the " ..
             "motif baseline (F_bio at the RCN experiment's meta learning rate 3e-4, no L1) on " ..
             "the same seeds.", time_text(cells), versions(cells)))
  say()
  -- what the report (curves only, EMNIST) says of each kind of run
  local claims = {motif = "the baseline", rcn = "above the baseline; L barely matters",
                  layer = "above shared parameters (most for L = 2-3)",
                  neuron = "best of all variants", momentum = "slightly above the baseline",
                  biasonly = "does not learn"}
  method_table(cells, nil, "motif", claims, {"motif", "rcn1", "rcn2", "rcn3", "layer1", "layer2",
                                             "neuron2", "momentum2"})
end

local text = table.concat(lines, "\n") .. "\n"
io.write(text)
if opts.doc ~= "" then
  local ok, err = pcall(nm.sys.atomic_write, opts.doc, text)
  if not ok then cli.error(format("cannot write --doc %s (%s)", opts.doc, tostring(err))) end
end
