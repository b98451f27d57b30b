-- experiments/nan_nk.lua: neuron autoencoders on NK-model regression
-- (Bull 2024, "Toward neuromic computing: neurons as autoencoders",
-- arXiv 2403.02331; doc/models/nk.md). Reproduces
--   Fig. 5  training errors over time (task and reconstruction), NAN vs ANN;
--   Fig. 6  test error of the best solution after the last cycle over the
--           N x K grid, mean with min/max bars over the runs, NAN vs ANN;
--   Fig. 7  test error during learning, NAN vs NN, one K, several N;
-- with Shapiro-Wilk tests of every group, Student and Welch t-tests, and
-- a table of which of the paper's findings hold here (findings.md).
--
-- The grid runs as a sweep (nm.sweep's sweep.grid): one worker process
-- per network, N, K and seed (`--figure cell`, which trains one network
-- and logs its errors), at most --jobs at a time, every parameter of a
-- run part of the cell's key. The grid folder (--grid-dir, default
-- OUT/grid) is continued: an interrupted run goes on with the same
-- command and --resume, without running finished cells again. The grid
-- shards over machines: --shard I/N runs one shard's cells (no tables),
-- --merge gathers the shard folders and writes the findings
-- (doc/sweeps.md).
--
--   ./neuromic experiments/nan_nk.lua --quick --jobs 2        # seconds
--   ./neuromic experiments/nan_nk.lua --jobs 2                # the paper's grid
--   ./neuromic experiments/nan_nk.lua --figure cell --net NAN --n 100 --k 5
--   ./neuromic experiments/nan_nk.lua --quick --rules hillclimb,./my_rule.lua
--   ./neuromic experiments/nan_nk.lua --quick --shard 1/2 --out results/nk-1   # and 2/2
--   ./neuromic experiments/nan_nk.lua --quick --merge results/nk-1 results/nk-2 --out results/nk
--
-- --rules: the learning rules (circuit rules of model nk: proposal and
-- acceptance), names from rules/ or paths; every network of the grid runs
-- with each. rules/hillclimb.lua's networks are NAN, ANN, NN as in the
-- paper; another rule's are NAN+<name>, ... with the same tables (each
-- against the hill climber on the same network, and NAN vs ANN, NAN vs NN
-- among its own), Fig. 5 and Fig. 7 curves.
local nm = require "neuromic"
local cli = require "nm.cli"
local results = require "nm.results"
local progress = require "nm.progress"
local plot = require "nm.plot"
local sweep = require "nm.sweep"
local stats = require "nm.stats"
local nk = require "nm.models.nk"

local format, concat = string.format, table.concat

local opts = cli.parse(arg, {
  name = "nan_nk",
  grid = true,
  jobs = cli.cores(),         -- one cell per processor at a time
  description = "Neuron autoencoders (NAN), layer autoencoders (ANN) and plain MLPs (NN) " ..
                "trained by random hill climbing on NK-model regression (Bull 2024, " ..
                "Figs. 5-7 with significance tests).",
  options = {
    {"figure", "string", "all", "all: the grid, Figs. 5-7 and the findings; cell: one " ..
     "network on one N, K, seed (the sweep's worker)", choices = {"all", "cell"}},
    {"net", "string", "NAN", "cell: the network", choices = {"NN", "NAN", "ANN"}},
    {"rule", "string", "hillclimb", "cell: the learning rule (a name from rules/ or a path)"},
    {"rules", "list", {"hillclimb"}, "learning rules of the grid: circuit rules of model nk " ..
     "(names from rules/ or paths, e.g. ./my_rule.lua)", item = "string"},
    {"n", "int", 20, "cell: genome length N", min = 2, max = 16383},
    {"k", "int", 5, "cell: partners per gene K", min = 0, max = 31},
    {"nets", "list", {"NAN", "ANN", "NN"}, "networks of the grid", item = "string"},
    {"grid-n", "list", {20, 50, 100, 200, 500, 1000}, "N values of the grid", item = "int",
     quick = {20, 100}},
    {"grid-k", "list", {1, 5, 10, 15}, "K values of the grid", item = "int", quick = {1, 5}},
    {"runs", "int", 20, "runs (seeds --seed .. --seed + runs - 1) per grid point", min = 2,
     quick = 4},
    {"cycles", "int", 10000, "learning cycles per run", min = 1, quick = 400},
    {"eval-every", "int", 250, "cycles between evaluations", min = 1, quick = 100},
    {"early", "int", 1000, "cycle at which learning speed is compared", min = 1, quick = 200},
    {"samples", "int", 1000, "size of the training set and of the test set", min = 2,
     quick = 200},
    {"h", "int", 10, "hidden neurons H", min = 1, max = 4096},
    {"range", "number", 1.0, "mutations are U[-R, R]", min = 1e-9},
    {"partners", "string", "random", "NK partners", choices = {"random", "adjacent"}},
    {"target", "string", "input", "reconstruction targets: +-1 inputs or 0/1",
     choices = {"input", "binary"}},
    {"fig5-n", "int", 100, "Fig. 5: N (one of --grid-n)", quick = 100},
    {"fig5-k", "int", 5, "Fig. 5: K (one of --grid-k)"},
    {"fig7-n", "list", {20, 100, 1000}, "Fig. 7: N values (of --grid-n)", item = "int",
     quick = {20, 100}},
    {"fig7-k", "int", 5, "Fig. 7: K (one of --grid-k)"},
    {"small-n", "int", 50, "N up to this is 'small' in the findings"},
    {"large-n", "int", 500, "N from this is 'large' in the findings"},
    {"alpha", "number", 0.05, "significance level", min = 0, max = 1},
    {"grid-dir", "string", "", "sweep directory of the grid (default OUT/grid)"},
    {"checkpoint-every", "int", 2000, "cell: cycles between checkpoints", min = 0},
  },
})

if opts.early % opts.eval_every ~= 0 or opts.early > opts.cycles then
  io.stderr:write(format("nan_nk: --early (%d) must be a multiple of --eval-every (%d) "
                         .. "and at most --cycles (%d)\n", opts.early, opts.eval_every,
                         opts.cycles))
  os.exit(2)
end

-- The rules: each one's name by what --rules calls it; a non-default
-- rule's networks are labelled <net>+<name>.
local RULE_NAME = {}
local listed = opts.figure == "cell" and {opts.rule} or opts.rules
for i, def in ipairs(cli.rules("nan_nk", listed, "circuit", "nk")) do
  RULE_NAME[listed[i]] = def.name
end
local function label_of(net, r)
  local name = RULE_NAME[r or "hillclimb"]
  return name == "hillclimb" and net or net .. "+" .. name
end

-- The parameters that change a run: part of every cell's key.
local function run_params()
  return {
    {"cycles", opts.cycles}, {"eval-every", opts.eval_every}, {"early", opts.early},
    {"samples", opts.samples}, {"h", opts.h}, {"range", opts.range},
    {"partners", opts.partners}, {"target", opts.target},
  }
end

-- The seed of the model, the data and the weights of a grid point: the
-- same for every network, so NAN, ANN and NN see the same data.
local function point_seed(seed, n, k)
  return (seed * 1000003 + n) * 1009 + k
end

-- The model and the training and test sets of a grid point.
local function point_data(seed, n, k)
  local gm = nm.generator(point_seed(seed, n, k))
  local model = nm.kernels.nk.model{n = n, k = k, generator = gm, partners = opts.partners}
  local Xtr, Ftr = model:dataset(opts.samples, gm)
  local Xte, Fte = model:dataset(opts.samples, gm)
  return Xtr, Ftr, Xte, Fte
end

-- Test MSE of the constant predictor mean(F_train): what a network that
-- learnt nothing but the mean would score.
local function mean_predictor_mse(Ftr, Fte)
  local mean = Ftr:mean()
  local se = 0
  for i = 1, Fte:size(1) do se = se + (Fte:get(i) - mean) ^ 2 end
  return se / Fte:size(1)
end

-- ------------------------------------------------------------- one cell

local function run_cell()
  local run = results.open(opts, {dataset = format("NK model N=%d K=%d (%s partners)",
                                                  opts.n, opts.k, opts.partners),
                                  columns = {"cycle", "net"}})
  local base = point_seed(opts.seed, opts.n, opts.k)
  local Xtr, Ftr, Xte, Fte = point_data(opts.seed, opts.n, opts.k)
  local g = nm.generator(base + 1)
  local net = nk.new{kind = opts.net, x = Xtr, f = Ftr, generator = g, h = opts.h,
                     range = opts.range, target = opts.target, rule = opts.rule,
                     test_x = Xte, test_f = Fte}   -- test errors kept up to date in O(S H)
  local s = run:resume()
  local done, elapsed0, cpu0 = 0, 0, 0
  if s then
    net:set_state(s.net)
    g = s.g
    done, elapsed0, cpu0 = s.cycle, s.elapsed, s.cpu
  end
  local t0 = nm.sys.clock()
  local function log(cycle)
    local task, rec = net:errors()
    local test = net:test_error()
    run:log{cycle = cycle, net = opts.net, train = task, rec = rec, test = test}
    if cycle == opts.early then run:set("early_test", test) end
    return task, rec, test
  end
  if done == 0 then log(0) end
  local bar = progress.new{total = opts.cycles, label = format("%s N=%d K=%d", opts.net,
                                                              opts.n, opts.k)}
  while done < opts.cycles do
    local chunk = math.min(opts.eval_every - done % opts.eval_every, opts.cycles - done)
    net:run(g, chunk)
    done = done + chunk
    if done % opts.eval_every == 0 or done == opts.cycles then log(done) end
    bar:update(done)
    run:poll(done, function()
      return {net = net:state(), g = g, cycle = done, elapsed = elapsed0 + nm.sys.clock() - t0,
              cpu = cpu0 + os.clock()}
    end)
  end
  bar:finish()
  local task, rec, test = log(done)
  local cycles, kept = net:counts()
  run:finish{test = test, train = task, rec = rec, kept = kept, cycles = cycles,
             train_s = elapsed0 + nm.sys.clock() - t0, cpu_s = cpu0 + os.clock(),
             mean_mse = mean_predictor_mse(Ftr, Fte)}
end

if opts.figure == "cell" then
  if opts.shard or opts.merge then
    io.stderr:write("nan_nk: --shard and --merge are for the grid (--figure all), not one cell\n")
    os.exit(2)
  end
  run_cell()
  return
end

-- --------------------------------------------------------------- the grid

local function member(list, v)
  for _, x in ipairs(list) do if x == v then return true end end
  return false
end

for _, c in ipairs{{"fig5-n", opts.fig5_n, opts.grid_n}, {"fig5-k", opts.fig5_k, opts.grid_k},
                   {"fig7-k", opts.fig7_k, opts.grid_k}} do
  if not member(c[3], c[2]) then
    io.stderr:write(format("nan_nk: --%s %d is not in the grid\n", c[1], c[2]))
    os.exit(2)
  end
end
for _, n in ipairs(opts.fig7_n) do
  if not member(opts.grid_n, n) then
    io.stderr:write(format("nan_nk: --fig7-n %d is not in --grid-n\n", n))
    os.exit(2)
  end
end
for _, net in ipairs(opts.nets) do
  if net ~= "NN" and net ~= "NAN" and net ~= "ANN" then
    io.stderr:write(format("nan_nk: --nets: unknown network '%s' (NN, NAN, ANN)\n", net))
    os.exit(2)
  end
end
for _, k in ipairs(opts.grid_k) do
  for _, n in ipairs(opts.grid_n) do
    if k > n - 1 then
      io.stderr:write(format("nan_nk: K = %d needs N > %d (grid has N = %d)\n", k, k, n))
      os.exit(2)
    end
  end
end

local run = results.open(opts, {dataset = "NK models", name = "nan_nk"})
local grid_dir = opts.grid_dir ~= "" and opts.grid_dir or run:path("grid")
local seeds = {}
for i = 1, opts.runs do seeds[i] = opts.seed + i - 1 end

local function strings(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = tostring(v) end
  return out
end

local sets = {{name = "n", values = strings(opts.grid_n)},
              {name = "k", values = strings(opts.grid_k)},
              {name = "net", values = strings(opts.nets)}}
for _, kv in ipairs(run_params()) do sets[#sets + 1] = {name = kv[1], values = {tostring(kv[2])}} end
local default_rules = #opts.rules == 1 and opts.rules[1] == "hillclimb"
if not default_rules then sets[#sets + 1] = {name = "rule", values = opts.rules} end
-- The network labels of the grid, rule by rule.
local labels = {}
for _, r in ipairs(opts.rules) do
  for _, net in ipairs(opts.nets) do labels[#labels + 1] = label_of(net, r) end
end

local t_grid = nm.sys.clock()
local rows, summary = sweep.grid(run, opts, {experiment = arg[0], sets = sets, seeds = seeds,
                                             args = {"--figure=cell"}, dir = grid_dir})
local grid_s = nm.sys.clock() - t_grid
run:set("grid_wall_s", grid_s)

-- Final and early test errors: final[net][n][k] = {values over seeds}.
local wanted = {}
for _, s in ipairs(seeds) do wanted[s] = true end
local params = {}
for _, kv in ipairs(run_params()) do params[kv[1]] = tostring(kv[2]) end
local final, early, dirs, cell_seconds, mean_mse = {}, {}, {}, {}, {}
for _, row in ipairs(rows) do
  local o = row.options or {}
  local same = wanted[row.seed] and member(opts.nets, o.net) and
               member(opts.rules, o.rule or "hillclimb")
  for name, v in pairs(params) do same = same and o[name] == v end
  local n, k = tonumber(o.n), tonumber(o.k)
  same = same and member(opts.grid_n, n) and member(opts.grid_k, k)
  if same then
    local f = row.results.final
    local net = label_of(o.net, o.rule)
    for _, t in ipairs{final, early} do
      t[net] = t[net] or {}
      t[net][n] = t[net][n] or {}
      t[net][n][k] = t[net][n][k] or {}
    end
    local list = final[net][n][k]
    list[#list + 1] = f.test
    list = early[net][n][k]
    list[#list + 1] = f.early_test
    dirs[concat({net, n, k, row.seed}, "/")] = row.dir
    mean_mse[concat({n, k, row.seed}, "/")] = f.mean_mse
    cell_seconds[net] = (cell_seconds[net] or 0) + (f.cpu_s or 0)
  end
end
local cpu_total = 0
for net, secs in pairs(cell_seconds) do
  run:set("cpu_s_" .. net, secs)
  cpu_total = cpu_total + secs
end

-- The mean predictor's test MSE per grid point, averaged over the seeds:
-- as the cells recorded it (every network's cell of a point and seed sees
-- the same data), else from the data made again (cells of older runs).
local baseline = {}
for _, n in ipairs(opts.grid_n) do
  for _, k in ipairs(opts.grid_k) do
    local sum = 0
    for _, seed in ipairs(seeds) do
      local v = mean_mse[concat({n, k, seed}, "/")]
      if v == nil then
        local _, Ftr, _, Fte = point_data(seed, n, k)
        v = mean_predictor_mse(Ftr, Fte)
      end
      sum = sum + v
    end
    baseline[n .. "/" .. k] = sum / #seeds
  end
end

local function group(t, net, n, k)
  local v = t[net] and t[net][n] and t[net][n][k]
  if not v or #v ~= opts.runs then
    error(format("nan_nk: %s N=%d K=%d has %d of %d runs in %s", net, n, k, v and #v or 0,
                 opts.runs, grid_dir), 0)
  end
  return v
end

-- Two groups compared: summaries, normality, both t-tests.
local function compare(a, b)
  local sa, sb = stats.summary(a), stats.summary(b)
  local function sw(x)
    local ok, r = pcall(stats.shapiro_wilk, x)
    return ok and r.p or 0 / 0
  end
  local student, welch = stats.t_test(a, b), stats.welch_test(a, b)
  return {a = sa, b = sb, sw_a = sw(a), sw_b = sw(b), student = student.p, welch = welch.p,
          t = student.t}
end

local has = {}
for _, net in ipairs(labels) do has[net] = true end

-- ----------------------------------------------------------------- Fig. 6

local lines, fig6 = {}, {}
local function out(s) lines[#lines + 1] = s end
local function g4(x) return x ~= x and "n/a" or format("%.4g", x) end
local function pfmt(x) return x ~= x and "n/a" or (x < 1e-4 and format("%.1e", x) or format("%.4f", x)) end

local pairs_to_test = {}
for _, r in ipairs(opts.rules) do
  local NAN, ANN, NN = label_of("NAN", r), label_of("ANN", r), label_of("NN", r)
  if has[NAN] and has[ANN] then pairs_to_test[#pairs_to_test + 1] = {NAN, ANN} end
  if has[NAN] and has[NN] then pairs_to_test[#pairs_to_test + 1] = {NAN, NN} end
end
for _, r in ipairs(opts.rules) do                 -- each other rule against the hill climber
  for _, net in ipairs(opts.nets) do
    local a = label_of(net, r)
    if a ~= net and has[net] then pairs_to_test[#pairs_to_test + 1] = {a, net} end
  end
end

for _, pr in ipairs(pairs_to_test) do
  local a, b = pr[1], pr[2]
  out(format("\n### %s vs %s: test MSE after %d cycles (%d runs; mean [min, max])\n",
             a, b, opts.cycles, opts.runs))
  out(format("| N | K | %s | %s | mean predictor | SW p %s | SW p %s | Student p | Welch p | " ..
             "better (p < %g) |", a, b, a, b, opts.alpha))
  out("|---|---|---|---|---|---|---|---|---|---|")
  for _, n in ipairs(opts.grid_n) do
    for _, k in ipairs(opts.grid_k) do
      local c = compare(group(final, a, n, k), group(final, b, n, k))
      fig6[concat({a, b, n, k}, "/")] = c
      local better = "-"
      if c.student < opts.alpha then better = c.a.mean < c.b.mean and a or b end
      out(format("| %d | %d | %s [%s, %s] | %s [%s, %s] | %s | %s | %s | %s | %s | %s |", n, k,
                 g4(c.a.mean), g4(c.a.min), g4(c.a.max), g4(c.b.mean), g4(c.b.min),
                 g4(c.b.max), g4(baseline[n .. "/" .. k]), pfmt(c.sw_a), pfmt(c.sw_b),
                 pfmt(c.student), pfmt(c.welch), better))
    end
  end
end

-- Early test errors (learning speed), NN vs NAN.
local speed = {}
if has.NAN and has.NN then
  out(format("\n### NN vs NAN: test MSE at cycle %d (learning speed)\n", opts.early))
  out("| N | K | NN | NAN | Student p | Welch p | faster (p < " .. opts.alpha .. ") |")
  out("|---|---|---|---|---|---|---|")
  for _, n in ipairs(opts.grid_n) do
    for _, k in ipairs(opts.grid_k) do
      local c = compare(group(early, "NN", n, k), group(early, "NAN", n, k))
      speed[n .. "/" .. k] = c
      local faster = "-"
      if c.student < opts.alpha then faster = c.a.mean < c.b.mean and "NN" or "NAN" end
      out(format("| %d | %d | %s | %s | %s | %s | %s |", n, k, g4(c.a.mean), g4(c.b.mean),
                 pfmt(c.student), pfmt(c.welch), faster))
    end
  end
end

-- ----------------------------------------------------------- findings table

local findings = {}
local function finding(claim, tested, ok, total, detail)
  local verdict = total == 0 and "not tested (no such N or K in the grid)" or
                  ok == total and format("holds (%d of %d)", ok, total) or
                  (ok == 0 and format("does not hold (0 of %d)", total) or
                   format("partly (%d of %d)", ok, total))
  findings[#findings + 1] = {claim = claim, tested = tested, verdict = verdict,
                             ok = ok, total = total, detail = detail}
end

local function ns(pred)
  local r = {}
  for _, n in ipairs(opts.grid_n) do if pred(n) then r[#r + 1] = n end end
  return r
end
local small = ns(function(n) return n <= opts.small_n end)
local large = ns(function(n) return n >= opts.large_n end)

local function count(list_n, f)
  local ok, total, misses = 0, 0, {}
  for _, n in ipairs(list_n) do
    for _, k in ipairs(opts.grid_k) do
      local good = f(n, k)
      if good ~= nil then
        total = total + 1
        if good then ok = ok + 1 else misses[#misses + 1] = format("N=%d K=%d", n, k) end
      end
    end
  end
  return ok, total, #misses > 0 and ("not at " .. concat(misses, ", ")) or ""
end

if has.NAN and has.ANN then
  local ok, total, miss = count(small, function(n, k)
    local c = fig6["NAN/ANN/" .. n .. "/" .. k]
    return c.student < opts.alpha and c.welch < opts.alpha and c.a.mean < c.b.mean
  end)
  finding("Small N: NAN beats ANN for all K (t-test p < 0.05)",
          format("N <= %d, every K: NAN mean lower, Student and Welch p < %g",
                 opts.small_n, opts.alpha), ok, total, miss)
  ok, total, miss = count(large, function(n, k)
    local c = fig6["NAN/ANN/" .. n .. "/" .. k]
    return c.student >= opts.alpha and c.welch >= opts.alpha
  end)
  finding("Large N: no significant difference between NAN and ANN",
          format("N >= %d, every K: Student and Welch p >= %g", opts.large_n, opts.alpha),
          ok, total, miss)
end
if has.NAN and has.NN then
  local ok, total, miss = count(small, function(n, k)
    local c = speed[n .. "/" .. k]
    return c.student < opts.alpha and c.a.mean < c.b.mean
  end)
  finding("NN learns faster than NAN for small N",
          format("N <= %d, every K: NN test MSE at cycle %d lower, p < %g", opts.small_n,
                 opts.early, opts.alpha), ok, total, miss)
  ok, total, miss = count(small, function(n, k)
    if k <= 10 then return nil end
    local c = fig6["NAN/NN/" .. n .. "/" .. k]
    return c.student >= opts.alpha and c.welch >= opts.alpha
  end)
  finding("After the last cycle NN is not significantly different from NAN for small N when K > 10",
          format("N <= %d, K > 10: Student and Welch p >= %g", opts.small_n, opts.alpha),
          ok, total, miss)
  ok, total, miss = count(large, function(n, k)
    local c = fig6["NAN/NN/" .. n .. "/" .. k]
    return c.student < opts.alpha and c.welch < opts.alpha and c.a.mean < c.b.mean
  end)
  finding("Larger N: NAN significantly better than NN for all K",
          format("N >= %d, every K: NAN mean lower, Student and Welch p < %g",
                 opts.large_n, opts.alpha), ok, total, miss)
  ok, total, miss = count(large, function(n, k)
    local c = speed[n .. "/" .. k]
    return not (c.student < opts.alpha and c.a.mean < c.b.mean)
  end)
  finding("Larger N: the learning-speed benefit of NN is lost",
          format("N >= %d, every K: NN not significantly lower at cycle %d", opts.large_n,
                 opts.early), ok, total, miss)
end
do
  local ok, total, miss = 0, 0, {}
  for _, net in ipairs(labels) do
    for _, n in ipairs(opts.grid_n) do
      for _, k in ipairs(opts.grid_k) do
        local r = stats.shapiro_wilk(group(final, net, n, k))
        total = total + 1
        if r.p >= opts.alpha then ok = ok + 1 else miss[#miss + 1] = format("%s N=%d K=%d", net, n, k) end
      end
    end
  end
  finding("Shapiro-Wilk confirms normally distributed results",
          format("every network, N, K: Shapiro-Wilk p >= %g on the final test errors", opts.alpha),
          ok, total, #miss > 0 and ("rejected at " .. concat(miss, ", ")) or "")
end

local head = {format("# NAN vs ANN vs NN on NK regression (%s)", opts.quick and "--quick" or "full grid"),
              "",
              format("%d runs per point, %d cycles, H = %d, R = %g, S = %d, %s partners, " ..
                     "%s reconstruction targets; seeds %d-%d. Grid wall time %.0f s with --jobs %d " ..
                     "(%d cells run now); %.0f CPU seconds in all the cells' processes.",
                     opts.runs, opts.cycles, opts.h, opts.range,
                     opts.samples, opts.partners, opts.target, seeds[1], seeds[#seeds],
                     grid_s, opts.jobs or 1, summary.ran, cpu_total),
              "", "## Findings of the paper", "",
              "| finding | tested as | here | detail |", "|---|---|---|---|"}
for _, f in ipairs(findings) do
  head[#head + 1] = format("| %s | %s | %s | %s |", f.claim, f.tested, f.verdict, f.detail)
end
if not default_rules then
  local names = {}
  for i, r in ipairs(opts.rules) do names[i] = RULE_NAME[r] end
  head[#head + 1] = format("\nLearning rules: %s (networks of a rule other than hillclimb: " ..
                           "<net>+<rule>).", concat(names, ", "))
end
head[#head + 1] = "\n## Tables"
local report = concat(head, "\n") .. "\n" .. concat(lines, "\n") .. "\n"
run:save("findings.md", report)
io.write(report)

-- ------------------------------------------------------------------ plots

local function read_metrics(net, n, k, seed)
  local dir = dirs[concat({net, n, k, seed}, "/")]
  local _, rows = results.read(dir)
  return rows
end

-- Fig. 5: one run's training errors, NAN vs ANN.
local fig5 = {}
for _, net in ipairs(labels) do
  local base = net:match("^[^+]*")
  if base == "NAN" or base == "ANN" then
    for _, r in ipairs(read_metrics(net, opts.fig5_n, opts.fig5_k, seeds[1])) do
      fig5[#fig5 + 1] = {cycle = r.cycle, net = net, train = r.train, rec = r.rec}
    end
  end
end
local written = {}
local function add(paths) for _, p in ipairs(paths or {}) do written[#written + 1] = p end end
if #fig5 > 0 then
  add(plot.curves(fig5, {out = run:path("fig5_task.png"), x = "cycle", y = "train", group = "net",
                         logy = true, title = format("Fig. 5: training task MSE, N=%d K=%d",
                                                      opts.fig5_n, opts.fig5_k)}))
  add(plot.curves(fig5, {out = run:path("fig5_reconstruction.png"), x = "cycle", y = "rec",
                         group = "net", title = format("Fig. 5: training reconstruction MSE " ..
                         "(NAN: mean of the H neurons), N=%d K=%d", opts.fig5_n, opts.fig5_k)}))
end

-- Fig. 7: mean test error during learning, NAN vs NN.
local fig7 = {}
for _, net in ipairs(labels) do
  local base = net:match("^[^+]*")
  if base == "NAN" or base == "NN" then
    for _, n in ipairs(opts.fig7_n) do
      local sum, cnt = {}, {}
      for _, seed in ipairs(seeds) do
        for _, r in ipairs(read_metrics(net, n, opts.fig7_k, seed)) do
          sum[r.cycle] = (sum[r.cycle] or 0) + r.test
          cnt[r.cycle] = (cnt[r.cycle] or 0) + 1
        end
      end
      local cycles = {}
      for c in pairs(sum) do cycles[#cycles + 1] = c end
      table.sort(cycles)
      for _, c in ipairs(cycles) do
        fig7[#fig7 + 1] = {cycle = c, series = format("%s N=%d", net, n), test = sum[c] / cnt[c]}
      end
    end
  end
end
if #fig7 > 0 then
  add(plot.curves(fig7, {out = run:path("fig7.png"), x = "cycle", y = "test", group = "series",
                         logy = true, title = format("Fig. 7: mean test MSE during learning, K=%d",
                                                      opts.fig7_k)}))
end

-- Fig. 6: mean test error with min/max bars against K, one panel per N.
if has.NAN and has.ANN and plot.gnuplot() then
  local dat = {}
  for _, n in ipairs(opts.grid_n) do
    dat[#dat + 1] = format("# N=%d: K mean_NAN min max mean_ANN min max", n)
    for _, k in ipairs(opts.grid_k) do
      local c = fig6["NAN/ANN/" .. n .. "/" .. k]
      dat[#dat + 1] = format("%d %.17g %.17g %.17g %.17g %.17g %.17g", k, c.a.mean, c.a.min,
                             c.a.max, c.b.mean, c.b.min, c.b.max)
    end
    dat[#dat + 1] = "\n"
  end
  dat = concat(dat, "\n")
  nm.sys.atomic_write(run:path("fig6.dat"), dat)
  local cols = math.min(3, #opts.grid_n)
  local rows = math.ceil(#opts.grid_n / cols)
  local gp = {"$fig6 << EOD", dat, "EOD",
              format("set multiplot layout %d,%d title 'Fig. 6: test MSE after %d cycles " ..
                     "(mean, min/max over %d runs)'", rows, cols, opts.cycles, opts.runs),
              "set key top left", "set xlabel 'K'", "set ylabel 'test MSE'", "set offsets 0.5,0.5,0,0"}
  for i, n in ipairs(opts.grid_n) do
    gp[#gp + 1] = format("set title 'N = %d'", n)
    gp[#gp + 1] = format("plot $fig6 index %d using ($1-0.15):2:3:4 with yerrorlines title 'NAN', " ..
                         "$fig6 index %d using ($1+0.15):5:6:7 with yerrorlines title 'ANN'",
                         i - 1, i - 1)
  end
  gp[#gp + 1] = "unset multiplot"
  add(plot.script(concat(gp, "\n"), {out = run:path("fig6.png"), size = {420 * cols, 320 * rows},
                                     keep_script = run:path("fig6.gp")}))
end

local final_fig = {}
for _, f in ipairs(findings) do final_fig[#final_fig + 1] = {claim = f.claim, verdict = f.verdict,
                                                           detail = f.detail} end
run:set("findings", final_fig)
run:set("plots", written)
run:finish()
io.stderr:write(format("nan_nk: %s (findings.md, %d plots)\n", run.dir, #written))
