-- experiments/bmvr.lua: Golkar et al. 2020 (BMVR) reproduced.
--
-- Fig. 3: the linear objective (1/T) sum ||y - W2 W1 x||^2 against training
-- steps for BMVR and backprop, --runs runs (mean and standard deviation),
-- with the exact reduced-rank-regression optimum as a dashed line:
-- Fashion-MNIST with k = 2 on its 10,000 test images and MNIST with k = 1
-- (--fig3-mnist: mnist, the 10,000 test images as in the paper, or
-- mnist-subset, its 8,000 training images); labels one-hot minus their mean;
-- the paper's Table 2 rates with eta / (1 + t/1000).
--
-- Table 1: ReLU networks (mean-subtracted ReLU, running mean eps = 1e-4),
-- k in --ks, train and test accuracy of BMVR and backprop on MNIST and
-- Fashion-MNIST, each trained on its 10,000 test images and tested on its
-- 60,000 training images (the paper's protocol), or on the MNIST subset as
-- split (mnist-subset: 8,000 / 2,000); constant rates, raw
-- [0, 1] pixels, one-hot labels. Rates: the table RATES below, chosen by
-- the validation search that --search reruns (hold out --validation
-- training images, --search-epochs passes, grid GRID, best validation
-- accuracy). With --variants, extra MNIST k = 64 rows: the paper's Table 3
-- rates on unit-norm inputs, the other gate, centred labels, the
-- decoupled interneurons, twice the epochs.
--
--   ./neuromic experiments/bmvr.lua --quick               # seconds
--   ./neuromic experiments/bmvr.lua                       # everything (minutes)
--   ./neuromic experiments/bmvr.lua --parts table1 --search
--   ./neuromic experiments/bmvr.lua --quick --rules bmvr,bmvr_backprop,./my_rule.lua
--   ./neuromic experiments/bmvr.lua --quick --rules bmvr,W1=./my_w1_rule.lua
--
-- --rules: what is compared, each a method of its own: circuit rules of
-- model "bmvr" (names from rules/ or paths), each driving the pathways it
-- lists; and pathway=rule items (W1, W2T, Q, R), together one more method,
-- BMVR with those pathways' rules replaced (labelled "bmvr+W1=name...").
-- rules/bmvr_backprop.lua is labelled "backprop" and takes the backprop
-- rates, every other method the BMVR rates (eta_w1 for W1, eta_w2 for W2T,
-- eta_q for Q and R).
--
-- Writes to --out: metrics.jsonl/csv (one row per evaluation), results.json,
-- table1.md (beside the paper's numbers), fig3_fashion.png, fig3_mnist.png.

local nm = require "neuromic"
local cli = require "nm.cli"
local results = require "nm.results"
local progress = require "nm.progress"
local plot = require "nm.plot"
local data = require "nm.data"
local bmvr = require "nm.models.bmvr"

local format, concat = string.format, table.concat

local opts = cli.parse(arg, {
  name = "bmvr",
  description = "BMVR (Golkar et al. 2020): Fig. 3 (linear objective vs steps) and " ..
                "Table 1 (ReLU accuracy) against backprop.",
  options = {
    {"parts", "list", {"fig3", "table1"}, "parts to run: fig3, table1", item = "string"},
    {"rules", "list", {"bmvr", "bmvr_backprop"}, "circuit rules of model bmvr compared " ..
     "(names from rules/ or paths, e.g. ./my_rule.lua), or pathway=rule items (W1, W2T, Q, R) " ..
     "replacing BMVR's rule of that pathway", item = "string"},
    {"runs", "int", 5, "Fig. 3: runs per curve (seeds seed..seed+runs-1)", quick = 2, min = 1},
    {"fig3-epochs", "int", 10, "Fig. 3: passes over the data", quick = 1, min = 1},
    {"fig3-points", "int", 40, "Fig. 3: evaluations per run, log-spaced in steps", quick = 8, min = 2},
    {"datasets", "list", {"mnist", "fashion"}, "Table 1: data sets (mnist, mnist-subset, fashion)",
     item = "string", quick = {"mnist-subset"}},
    {"fig3-mnist", "string", "mnist", "Fig. 3: the MNIST panel's data (mnist: its 10,000 test " ..
     "images; mnist-subset: its 8,000 training images)", quick = "mnist-subset"},
    {"ks", "list", {16, 64, 256}, "Table 1: hidden units", item = "int", quick = {16}},
    {"epochs", "int", 20, "Table 1: training passes", quick = 1, min = 1},
    {"table1-t0", "number", 0, "Table 1: rates decay as eta/(1 + t/t0) over samples t (0: constant, " ..
     "as in the paper)", min = 0},
    {"search", "bool", false, "Table 1: choose rates by the validation search (else RATES)"},
    {"search-epochs", "int", 8, "search: passes per candidate", quick = 1, min = 1},
    {"validation", "int", 1000, "search: training images held out", min = 1},
    {"search-w1", "list", {3e-3, 1e-2, 3e-2, 1e-1}, "search: BMVR grid of eta_w1", item = "number"},
    {"search-w2", "list", {1e-4, 3e-4, 1e-3, 3e-3}, "search: BMVR grid of eta_w2", item = "number"},
    {"search-q", "list", {1e-3, 1e-2}, "search: BMVR grid of eta_q", item = "number"},
    {"variants", "bool", true, "Table 1: extra MNIST k = 64 rows (see the header)", quick = false},
    {"plot", "bool", true, "write plots (gnuplot)"},
    {"checkpoint-every", "int", 1, "jobs between checkpoints", min = 1},
  },
})


-- ------------------------------------------------------------ settings

-- Table 2 of the paper (linear, Fig. 3): BMVR eta_w1 / eta_w2 / eta_q,
-- backprop eta (both layers), t0 = 1000.
local FIG3 = {
  fashion = {k = 2, bmvr = {0.013, 0.013, 0.005}, backprop = 0.018, t0 = 1000},
  mnist = {k = 1, bmvr = {0.01, 0.01, 0.003}, backprop = 0.02, t0 = 1000},
}
-- The data set behind each Fig. 3 panel.
local FIG3_DATA = {fashion = "fashion", mnist = opts.fig3_mnist}
-- Initialisation of the Bio-RRR demo (the paper gives none).
local FIG3_INIT = {w1_std = 0.01, w2_std = 0.1, q_scale = 1 / 3}

-- Table 3 of the paper (ReLU, MNIST): BMVR eta_w1 / eta_w2 / eta_q and
-- backprop eta_w1 / eta_w2, fixed.
local PAPER_RATES = {
  [64] = {bmvr = {0.001, 0.0002, 0.001}, backprop = {0.4, 0.4}},
  [256] = {bmvr = {0.2, 0.04, 0.04}, backprop = {0.2, 0.2}},
}
local PAPER_TABLE1 = {           -- train / test accuracy (%), MNIST
  [64] = {backprop = {99.8, 94.0}, bmvr = {99.3, 93.6}},
  [256] = {backprop = {100, 95.5}, bmvr = {100, 95.2}},
  [16] = {backprop = {100, 95.5}, bmvr = {100, 95.2}},   -- the text's label for column 2
}

-- The search grid (raw [0, 1] pixels, so eta_w1 |x|^2 stays below ~1).
local GRID = {
  bmvr = {eta_w1 = opts.search_w1, eta_w2 = opts.search_w2, eta_q = opts.search_q},
  backprop = {eta_w1 = {3e-3, 1e-2, 3e-2, 1e-1}, eta_w2 = {3e-3, 1e-2, 3e-2, 1e-1}},
}

-- Rates chosen by --search (seed 1, 1,000 validation images, 8 passes,
-- the grid above; results/bmvr-search/table1.md of that run), per data set
-- and k: BMVR eta_w1 / eta_w2 / eta_q, backprop eta_w1 / eta_w2.
local RATES = {
  mnist = {
    [16] = {bmvr = {1e-2, 1e-4, 1e-3}, backprop = {3e-3, 1e-2}},
    [64] = {bmvr = {3e-2, 3e-4, 1e-3}, backprop = {1e-2, 3e-2}},
    [256] = {bmvr = {3e-2, 1e-4, 1e-3}, backprop = {3e-2, 3e-2}},
  },
  fashion = {
    [16] = {bmvr = {1e-2, 3e-4, 1e-2}, backprop = {3e-3, 1e-2}},
    [64] = {bmvr = {1e-2, 1e-4, 1e-3}, backprop = {1e-2, 3e-3}},
    [256] = {bmvr = {3e-2, 1e-4, 1e-3}, backprop = {1e-2, 1e-2}},
  },
}

for _, p in ipairs(opts.parts) do
  if p ~= "fig3" and p ~= "table1" then
    io.stderr:write(format("bmvr: unknown part '%s' (fig3, table1)\n", p))
    os.exit(2)
  end
end
-- The subset uses the rates searched on it (they serve full MNIST too).
RATES["mnist-subset"] = RATES.mnist
local function is_mnist(d) return d == "mnist" or d == "mnist-subset" end
for _, d in ipairs(opts.datasets) do
  if not is_mnist(d) and d ~= "fashion" then
    io.stderr:write(format("bmvr: unknown data set '%s' (mnist, mnist-subset, fashion)\n", d))
    os.exit(2)
  end
end
if not is_mnist(opts.fig3_mnist) then
  io.stderr:write(format("bmvr: --fig3-mnist must be mnist or mnist-subset, got '%s'\n", opts.fig3_mnist))
  os.exit(2)
end
-- The methods: METHODS their labels in order, RULE_OF[label] the rules
-- option of bmvr.new (a name or path, or a table by pathway).
local METHODS, RULE_OF = {}, {}
local function add_method(label, rules)
  if RULE_OF[label] then
    io.stderr:write(format("bmvr: --rules names rule '%s' twice\n", label))
    os.exit(2)
  end
  METHODS[#METHODS + 1], RULE_OF[label] = label, rules
end
-- pathway=rule items first checked one by one, then the rules in one go
local whole, variant, parts, variant_at = {}, nil, {}, nil
for _, item in ipairs(opts.rules) do
  local pathway, spec = item:match("^(%w+)=(.+)$")
  if pathway then
    local ok, inst = pcall(bmvr.circuit_rule, pathway, cli.rules("bmvr", {spec}, "circuit", "bmvr")[1])
    if not ok then
      io.stderr:write("bmvr: --rules: ", (tostring(inst):match("^[^\n]*"):gsub("^bmvr%.new: ", "")), "\n")
      os.exit(2)
    end
    variant = variant or {}
    if variant[pathway] then
      io.stderr:write(format("bmvr: --rules: pathway '%s' given twice\n", pathway))
      os.exit(2)
    end
    variant[pathway], parts[#parts + 1] = spec, pathway .. "=" .. inst.name
    variant_at = variant_at or #whole + 1
  else
    whole[#whole + 1] = item
  end
end
local defs = cli.rules("bmvr", whole, "circuit", "bmvr")
for i = 1, #whole + 1 do         -- in the order given, the variant where it began
  if i == variant_at then add_method("bmvr+" .. concat(parts, "+"), variant) end
  if defs[i] then add_method(defs[i].name == "bmvr_backprop" and "backprop" or defs[i].name, whole[i]) end
end
local function has_method(m) return RULE_OF[m] ~= nil end
-- The rates table of a method from one holding "bmvr" and "backprop" entries.
local function rates_of(t, method)
  return t[method == "backprop" and "backprop" or "bmvr"]
end

local function has_part(p)
  for _, q in ipairs(opts.parts) do if q == p then return true end end
  return false
end

-- ------------------------------------------------------------ data

local cache = {}
-- Fashion-MNIST and MNIST: train on the 10,000 test images, test on the
-- 60,000 training images (swap); the MNIST subset as split (8,000 / 2,000).
local function load(name, o)
  o = o or {}
  local key = format("%s/%s/%d", name, o.normalize or "none", o.validation or 0)
  if not cache[key] then
    cache[key] = cli.guard("--data " .. name, data.load, name, {swap = name ~= "mnist-subset", normalize = o.normalize,
                                  validation = o.validation, seed = opts.seed})
  end
  return cache[key]
end

-- Y minus its column means (a copy).
local function centred(Y)
  local T = Y:size(1)
  local mean = Y:sum(1):mul(1 / T)
  local out = Y:clone()
  out:addr(-1, nm.ones(T, Y:dtype()), mean)
  return out
end

-- ------------------------------------------------------------ jobs

-- A diverged Table 1 run (a search candidate at too high a rate, the gate
-- on z) is an outcome, logged with diverged = true and its accuracies as
-- null; it must not stop the run.
local run = results.open(opts, {name = "bmvr", dataset = "fashion-mnist, " .. concat(opts.datasets, ", "),
                                columns = {"part", "data", "k", "method", "setting"},
                                nonfinite = {train = true, test = true, validation = true}})
local state = run:resume() or {done = 0, fig3 = {}, table1 = {}, chosen = {}}

local jobs = {}
local function job(name, fn) jobs[#jobs + 1] = {name = name, fn = fn} end

-- Log-spaced evaluation steps in [1, total], distinct, ascending.
local function eval_steps(total, points)
  local steps, seen = {}, {}
  for i = 0, points - 1 do
    local s = math.floor(math.exp(math.log(total) * i / (points - 1)) + 0.5)
    if s >= 1 and not seen[s] then seen[s] = true; steps[#steps + 1] = s end
  end
  return steps
end

-- Trains net until it has seen `target` samples, epoch after epoch in
-- orders drawn from g (kept in st between calls).
local function advance(net, X, Y, g, st, target)
  local T = X:size(1)
  while net.t < target do
    if st.pos == nil or st.pos > T then st.order, st.pos = g:permutation(T), 1 end
    local len = math.min(T - st.pos + 1, target - net.t)
    net:train(X, Y, {order = st.order:narrow(1, st.pos, len)})
    st.pos = st.pos + len
  end
end

if has_part("fig3") then
  for _, name in ipairs{"fashion", "mnist"} do
    local cfg = FIG3[name]
    job("fig3 optimum " .. name, function()
      local ds = load(FIG3_DATA[name])
      local opt = nm.rrr(ds.train.X, centred(ds.train.Y), cfg.k)
      state.fig3[name] = state.fig3[name] or {}
      state.fig3[name].optimum = opt.objective
      state.fig3[name].rank = opt.rank
      run:log{part = "fig3", data = name, k = cfg.k, method = "rrr", setting = "optimum",
              objective = opt.objective, ols_objective = opt.ols_objective, rank = opt.rank}
    end)
    for _, method in ipairs(METHODS) do
      for r = 1, opts.runs do
        job(format("fig3 %s %s run %d", name, method, r), function()
          local ds = load(FIG3_DATA[name])
          local X, Y = ds.train.X, centred(ds.train.Y)
          local T = X:size(1)
          local eta = method ~= "backprop" and cfg.bmvr or {cfg.backprop, cfg.backprop, 0}
          local seed = opts.seed + r - 1
          local net = bmvr.new{n = X:size(2), m = Y:size(2), k = cfg.k, rules = RULE_OF[method],
                               eta_w1 = eta[1], eta_w2 = eta[2], eta_q = eta[3], t0 = cfg.t0,
                               w1_std = FIG3_INIT.w1_std, w2_std = FIG3_INIT.w2_std,
                               q_scale = FIG3_INIT.q_scale, seed = seed}
          local g = nm.generator(seed + 1000)
          local st = {}
          local curve = {}
          for _, step in ipairs(eval_steps(opts.fig3_epochs * T, opts.fig3_points)) do
            advance(net, X, Y, g, st, step)
            local f = net:objective(X, Y)
            curve[#curve + 1] = {step, f}
            run:log{part = "fig3", data = name, k = cfg.k, method = method, setting = "table2",
                    run = r, step = step, objective = f}
          end
          local row = {part = "fig3-final", data = name, k = cfg.k, method = method,
                       setting = "table2", run = r, step = net.t, objective = curve[#curve][2]}
          if method ~= "backprop" then
            row.top_eigenvalue = net:constraint(X)[1]
            row.mean_cos, row.update_cos = net:alignment(X, Y)
          end
          run:log(row)
          state.fig3[name] = state.fig3[name] or {}
          state.fig3[name][method] = state.fig3[name][method] or {}
          state.fig3[name][method][r] = curve
        end)
      end
    end
  end
end

-- One Table 1 training run; returns train and test accuracy (%) and
-- extra measures.
local function table1_run(name, k, method, rates, o)
  o = o or {}
  local ds = load(name, {normalize = o.normalize, validation = o.validation})
  local X, Ytrain = ds.train.X, ds.train.Y
  local Y = o.centre_labels and centred(Ytrain) or Ytrain
  local eval_set = o.validation and ds.val or ds.test
  local seed = o.seed or opts.seed
  local net = bmvr.new{n = X:size(2), m = Y:size(2), k = k, rules = RULE_OF[method], relu = true,
                       gate = o.gate, decoupled = o.decoupled, eta_w1 = rates[1],
                       eta_w2 = rates[2], eta_q = rates[3] or 0, t0 = opts.table1_t0, seed = seed}
  local g = nm.generator(seed + 2000)
  local epochs = o.epochs or opts.epochs
  local ok, err = pcall(function()
    for _ = 1, epochs do net:train(X, Y, {order = g:permutation(X:size(1))}) end
  end)
  if not ok then
    return {train = 0 / 0, test = 0 / 0, diverged = true, error = tostring(err)}
  end
  local _, tr = net:evaluate(X, Ytrain)
  local _, te = net:evaluate(eval_set.X, eval_set.Y)
  local out = {train = 100 * tr, test = 100 * te, samples = net.t}
  if method ~= "backprop" then
    out.top_eigenvalue = net:constraint(X)[1]
    out.mean_cos, out.update_cos = net:alignment(X, Y)
  end
  return out
end

local function rate_text(r)
  local parts = {}
  for i, v in ipairs(r) do parts[i] = format("%g", v) end
  return concat(parts, " / ")
end

-- All combinations of the grid of one method, in a fixed order.
local function grid_points(method)
  local gr, out = rates_of(GRID, method), {}
  for _, a in ipairs(gr.eta_w1) do
    for _, b in ipairs(gr.eta_w2) do
      if method ~= "backprop" then
        for _, c in ipairs(gr.eta_q) do out[#out + 1] = {a, b, c} end
      else
        out[#out + 1] = {a, b}
      end
    end
  end
  return out
end

local function table1_entry(name, k, method, setting, rates, o)
  job(format("table1 %s k=%d %s %s", name, k, method, setting), function()
    local r = rates
    if type(rates) == "function" then r = rates() end
    local res = table1_run(name, k, method, r, o)
    res.data, res.k, res.method, res.setting, res.rates = name, k, method, setting, rate_text(r)
    res.epochs = (o and o.epochs) or opts.epochs
    state.table1[#state.table1 + 1] = res
    local row = {part = "table1"}
    for key, v in pairs(res) do row[key] = v end
    run:log(row)
  end)
end

if has_part("table1") then
  for _, name in ipairs(opts.datasets) do
    for _, k in ipairs(opts.ks) do
      for _, method in ipairs(METHODS) do
        local key = format("%s/%d/%s", name, k, method)
        if opts.search then
          for i, r in ipairs(grid_points(method)) do
            job(format("search %s %d/%d", key, i, #grid_points(method)), function()
              local res = table1_run(name, k, method, r,
                                     {validation = opts.validation, epochs = opts.search_epochs})
              run:log{part = "search", data = name, k = k, method = method, setting = "grid",
                      rates = rate_text(r), train = res.train, validation = res.test,
                      diverged = res.diverged or false}
              local best = state.chosen[key]
              if res.test == res.test and (best == nil or res.test > best.validation) then
                state.chosen[key] = {rates = r, validation = res.test}
              end
            end)
          end
        end
        local stored = RATES[name] and RATES[name][k] and rates_of(RATES[name][k], method)
        table1_entry(name, k, method, opts.search and "searched" or "stored", function()
          local c = state.chosen[key]
          if opts.search and c then return c.rates end
          if stored then return stored end
          error(format("no stored rates for %s; run with --search", key))
        end)
      end
    end
    if opts.variants and is_mnist(name) then
      local k = 64
      local base = (RATES.mnist[k] or {}).bmvr
      local function entry(method, ...)
        if has_method(method) then table1_entry(name, k, method, ...) end
      end
      entry("bmvr", "paper rates, unit-norm x", PAPER_RATES[k].bmvr, {normalize = "l2"})
      entry("backprop", "paper rates, unit-norm x", PAPER_RATES[k].backprop, {normalize = "l2"})
      entry("bmvr", "paper rates, raw x", PAPER_RATES[k].bmvr)
      entry("bmvr", "gate z", base, {gate = "z"})
      entry("bmvr", "centred labels", base, {centre_labels = true})
      entry("bmvr", "decoupled R", base, {decoupled = true})
      entry("bmvr", "2x epochs", base, {epochs = 2 * opts.epochs})
      entry("backprop", "2x epochs", (RATES.mnist[k] or {}).backprop, {epochs = 2 * opts.epochs})
    end
  end
end

-- ------------------------------------------------------------ run

local bar = progress.new{total = #jobs, label = "bmvr"}
for i = state.done + 1, #jobs do
  local t0 = nm.sys.clock()
  jobs[i].fn()
  state.done = i
  bar:update(i, format("%s (%.1fs)", jobs[i].name, nm.sys.clock() - t0))
  run:poll(i, function() return state end)
  if i % opts.checkpoint_every == 0 and i < #jobs then run:checkpoint(state) end
end
bar:finish()

-- ------------------------------------------------------------ outputs

local function mean_sd(values)
  local n, s, s2 = 0, 0, 0
  for _, v in ipairs(values) do n = n + 1; s = s + v; s2 = s2 + v * v end
  local m = n > 0 and s / n or 0 / 0
  local var = n > 1 and (s2 - n * m * m) / (n - 1) or 0
  return m, math.sqrt(math.max(var, 0))
end

-- Fig. 3 plot: mean +- sd bands of both methods, the optimum dashed.
local function fig3_plot(name, fig)
  if not (opts.plot and plot.gnuplot()) then return nil end
  local path = run:path("fig3_" .. name .. ".png")
  local lines = {}
  local curves = {}
  for mi, method in ipairs(METHODS) do
    local runs = fig[method] or {}
    if #runs > 0 then
      lines[#lines + 1] = format("$m%d << EOD", mi)
      for p = 1, #runs[1] do
        local vals = {}
        for _, c in ipairs(runs) do vals[#vals + 1] = c[p][2] end
        local m, sd = mean_sd(vals)
        lines[#lines + 1] = format("%d %.10g %.10g %.10g", runs[1][p][1], m, m - sd, m + sd)
      end
      lines[#lines + 1] = "EOD"
      curves[#curves + 1] = {mi, method, #runs}
    end
  end
  if #curves == 0 then return nil end
  local colors = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}
  local cmds = {}
  for _, c in ipairs(curves) do
    cmds[#cmds + 1] = format("$m%d using 1:3:4 with filledcurves fs transparent solid 0.25 " ..
                             "lc rgb '%s' notitle", c[1], colors[(c[1] - 1) % #colors + 1])
    cmds[#cmds + 1] = format("$m%d using 1:2 with lines lw 2 lc rgb '%s' title '%s (mean of %d, " ..
                             "band: sd)'", c[1], colors[(c[1] - 1) % #colors + 1], c[2], c[3])
  end
  cmds[#cmds + 1] = format("%.10g with lines dt 2 lw 2 lc rgb 'black' title 'RRR optimum %.4f'",
                           fig.optimum, fig.optimum)
  local body = concat(lines, "\n") .. "\n" .. concat({
    "set termoption noenhanced",
    format("set title 'Fig. 3, %s, k = %d: linear objective (1/T) sum |y - W2 W1 x|^2'",
           name == "fashion" and "Fashion-MNIST (10k test images)" or "MNIST subset (8k)",
           FIG3[name].k),
    "set logscale x", "set grid", "set key top right",
    "set xlabel 'samples seen'", "set ylabel 'objective'",
    format("set yrange [%.6g:*]", fig.optimum - 0.01),
    "plot " .. concat(cmds, ", \\\n     "),
  }, "\n")
  local written = plot.script(body, {out = path, size = {800, 520}, quiet = true})
  return written[1]
end

local final = {}
local md = {"# BMVR (Golkar et al. 2020) reproduced", ""}

if has_part("fig3") then
  md[#md + 1] = "## Fig. 3: linear objective after training (mean +- sd over runs)"
  md[#md + 1] = ""
  local heads = {}
  for i, method in ipairs(METHODS) do heads[i] = method == "bmvr" and "BMVR" or method end
  md[#md + 1] = "| data | k | samples | " .. concat(heads, " | ") .. " | RRR optimum | paper |"
  md[#md + 1] = "|---|---|---|" .. string.rep("---|", #METHODS) .. "---|---|"
  for _, name in ipairs{"fashion", "mnist"} do
    local fig = state.fig3[name]
    local complete = fig ~= nil
    for _, method in ipairs(METHODS) do complete = complete and fig[method] ~= nil end
    if complete then
      local cells = {}
      for _, method in ipairs(METHODS) do
        local vals = {}
        for _, c in ipairs(fig[method]) do vals[#vals + 1] = c[#c][2] end
        local m, sd = mean_sd(vals)
        cells[method] = format("%.4f +- %.4f", m, sd)
        final[format("fig3_%s_%s", name, method)] = m
      end
      final["fig3_" .. name .. "_optimum"] = fig.optimum
      local last = fig[METHODS[1]][1]
      local row = {}
      for i, method in ipairs(METHODS) do row[i] = cells[method] end
      md[#md + 1] = format("| %s | %d | %d | %s | %.4f | %s |", FIG3_DATA[name], FIG3[name].k,
                           last[#last][1], concat(row, " | "), fig.optimum,
                           name == "fashion" and "both reach ~0.72 (the optimum)" or
                           "both reach the optimum")
      fig3_plot(name, fig)
    end
  end
  md[#md + 1] = ""
  md[#md + 1] = "Plots: fig3_fashion.png, fig3_mnist.png. Init W1 ~ N(0, 0.01^2), " ..
                "W2T ~ N(0, 0.1^2), Q = I/3 (the Bio-RRR demo); rates from Table 2 with " ..
                "eta / (1 + t/1000); pixels x/255; labels one-hot minus their column means."
  md[#md + 1] = ""
end

if has_part("table1") then
  md[#md + 1] = "## Table 1: ReLU networks, accuracy (%) train / test"
  md[#md + 1] = ""
  md[#md + 1] = "| data | k | method | setting | rates (w1 / w2 / q) | epochs | train | test | " ..
                "top eig. of Czz | paper train / test (MNIST) |"
  md[#md + 1] = "|---|---|---|---|---|---|---|---|---|---|"
  for _, r in ipairs(state.table1) do
    local paper = PAPER_TABLE1[r.k] and PAPER_TABLE1[r.k][r.method]
    local paper_text = (is_mnist(r.data) and paper) and format("%.1f / %.1f", paper[1], paper[2])
                       or "-"
    md[#md + 1] = format("| %s | %d | %s | %s | %s | %d | %s | %s | %s | %s |", r.data, r.k,
                         r.method, r.setting, r.rates, r.epochs,
                         r.diverged and "diverged" or format("%.2f", r.train),
                         r.diverged and "-" or format("%.2f", r.test),
                         r.top_eigenvalue and format("%.2f", r.top_eigenvalue) or "-", paper_text)
    if r.setting == "stored" or r.setting == "searched" then
      final[format("table1_%s_k%d_%s_test", r.data, r.k, r.method)] = r.test
      final[format("table1_%s_k%d_%s_train", r.data, r.k, r.method)] = r.train
    end
  end
  md[#md + 1] = ""
  md[#md + 1] = "Paper (MNIST, trained on the 10,000 test images, tested on 50,000 training " ..
                "images): k = 64 backprop 99.8 / 94.0, BMVR 99.3 / 93.6; the second column " ..
                "(k = 16 in the text, 256 in the hyperparameter table) backprop 100 / 95.5, " ..
                "BMVR 100 / 95.2."
  if next(state.chosen) then
    md[#md + 1] = ""
    md[#md + 1] = "Rates chosen by the search (best validation accuracy):"
    md[#md + 1] = ""
    local keys = {}
    for key in pairs(state.chosen) do keys[#keys + 1] = key end
    table.sort(keys)
    for _, key in ipairs(keys) do
      md[#md + 1] = format("- %s: %s (validation %.2f%%)", key, rate_text(state.chosen[key].rates),
                           state.chosen[key].validation)
    end
  end
end

local mdpath = run:save("table1.md", concat(md, "\n") .. "\n")
print(concat(md, "\n"))
-- Headline figures for `make demo`, beside the paper's where it gives one.
local paper_test = {  -- Table 1, MNIST (full); the second column is k = 16 or 256
  [64] = {backprop = "94.0%", bmvr = "93.6%"},
  [256] = {backprop = "95.5% (k 16 or 256)", bmvr = "95.2% (k 16 or 256)"},
  [16] = {backprop = "95.5% (k 16 or 256)", bmvr = "95.2% (k 16 or 256)"},
}
local summary = {}
for _, d in ipairs({"fashion", "mnist"}) do
  local opt = final[format("fig3_%s_optimum", d)]
  for _, m in ipairs(METHODS) do
    local v = final[format("fig3_%s_%s", d, m)]
    if v then
      summary[#summary + 1] = {label = format("Fig. 3 linear objective, %s, %s", d, m), ours = v,
                               paper = d == "fashion" and "~0.72 (reaches the optimum)" or
                                       "reaches the optimum",
                               note = opt and format("exact RRR optimum %.4f", opt) or nil}
    end
  end
end
for _, d in ipairs({"mnist", "mnist-subset", "fashion"}) do
  for _, k in ipairs({16, 64, 256}) do
    for _, m in ipairs(METHODS) do
      local v = final[format("table1_%s_k%d_%s_test", d, k, m)]
      if v then
        summary[#summary + 1] = {
          label = format("Table 1 test accuracy, %s, k = %d, %s", d, k, m), ours = v, unit = "%",
          paper = is_mnist(d) and paper_test[k][m] or nil,
          note = format("train %.1f%%%s", final[format("table1_%s_k%d_%s_train", d, k, m)] or 0,
                        opts.quick and "; quick run" or ""),
        }
      end
    end
  end
end
final.summary = summary
final.plots = run:files("%.png$")
final.elapsed_s = run:elapsed()
local path = run:finish(final)
print(format("\nwrote %s, %s (%.1f s)", path, mdpath, final.elapsed_s))
