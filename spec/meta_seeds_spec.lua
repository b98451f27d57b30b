-- experiments/meta_seeds.lua: the seed statistics of meta-learning sweeps,
-- on hand-made sweep folders whose answers are known in closed form.
local json = require "nm.json"
local support = require "spec.support"

local format = string.format

-- A sweep folder: sweep.json, and per cell a line of sweep.jsonl and a
-- metrics.jsonl. cells: {seed, options, runs = {name = final entry},
-- rows = metric rows}.
local function make_sweep(dir, sets, args, cells)
  os.execute(format("mkdir -p %q", dir .. "/cells"))
  local f = assert(io.open(dir .. "/sweep.json", "w"))
  local seeds = {}
  for _, c in ipairs(cells) do seeds[c.seed] = true end
  local list = {}
  for s in pairs(seeds) do list[#list + 1] = s end
  table.sort(list)
  f:write(json.encode{experiment = "experiments/metaplasticity.lua", sets = sets, seeds = list,
                      args = args, quick = false})
  f:close()
  local lines = {}
  for i, c in ipairs(cells) do
    local cdir = format("%s/cells/c%d", dir, i)
    os.execute(format("mkdir -p %q", cdir))
    local m = assert(io.open(cdir .. "/metrics.jsonl", "w"))
    for _, r in ipairs(c.rows or {}) do m:write(json.encode(r), "\n") end
    m:close()
    lines[#lines + 1] = json.encode{index = i - 1, cell = "c" .. i, seed = c.seed,
                                    options = c.options, dir = cdir, elapsed_s = 10,
                                    results = {status = "finished", version = "test",
                                               final = {runs = c.runs}}}
  end
  f = assert(io.open(dir .. "/sweep.jsonl", "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
end

-- Metric rows of one run: grad norms per episode, held-out accuracies at
-- some episodes ({[episode] = accuracy}).
local function rows(run, norms, heldout)
  local out = {}
  for ep, g in ipairs(norms) do
    out[ep] = {run = run, episode = ep, grad_norm = g, heldout_accuracy = heldout[ep],
               action = "update"}
  end
  return out
end

describe("experiments/meta_seeds.lua", function()
  local run, tmp = support.experiment("meta_seeds.lua")

  it("guards: per-seed norms, spikes, collapses; paired t-test and Fisher's test", function()
    local dir = tmp .. "-guards"
    local cells = {}
    local on = {0.6, 0.7, 0.8}
    for seed = 1, 3 do
      -- guarded: norms 1, 1, 1, 100 (a spike at episode 4), no collapse
      cells[#cells + 1] = {seed = seed, options = {runs = "bio", guards = "true"},
        runs = {bio = {title = "F_bio", final_accuracy = on[seed], best_accuracy = 0.6,
                       skipped = 0, rollbacks = 1, cpu_s = 2}},
        rows = rows("bio", {1, 1, 1, 100}, {[2] = 0.6, [4] = 0.55})}
      -- unguarded: a non-finite norm at episode 3, collapsed at 40 (seed 3:
      -- never learned), final theta at 25%: failed
      local r = rows("bio", {2, 2, 0 / 0, 2}, {[2] = seed == 3 and 0.2 or 0.6})
      r[#r + 1] = {run = "bio", episode = 40, grad_norm = 2, heldout_accuracy = 0.1}
      cells[#cells + 1] = {seed = seed, options = {runs = "bio", guards = "false"},
        runs = {bio = {title = "F_bio", final_accuracy = 0.25, best_accuracy = 0.6 - 0.01 * seed,
                       skipped = 1, rollbacks = 0, cpu_s = 2}},
        rows = r}
    end
    -- seeds 1-2 in one sweep, seed 3 in another of the same grid: joined
    local first, second = {}, {}
    for _, c in ipairs(cells) do table.insert(c.seed < 3 and first or second, c) end
    local grid = {{name = "runs", values = {"bio"}}, {name = "guards", values = {"true", "false"}}}
    make_sweep(dir, grid, {"--episodes", "40"}, first)
    make_sweep(dir .. "b", grid, {"--episodes", "40"}, second)
    -- the ablation: guards on with revert-drop=1, final 0.3, 0.5, 0.4
    local adir = tmp .. "-ablation"
    local acells = {}
    for seed = 1, 3 do
      acells[seed] = {seed = seed, options = {runs = "bio", ["revert-drop"] = "1"},
        runs = {bio = {title = "F_bio", final_accuracy = ({0.3, 0.5, 0.4})[seed],
                       best_accuracy = 0.6, skipped = 0, rollbacks = 0}},
        rows = rows("bio", {1, 1, 1, 1}, {[2] = 0.6})}
    end
    make_sweep(adir, {{name = "runs", values = {"bio"}}, {name = "revert-drop", values = {"1"}}},
               {"--episodes", "40", "--clip", "2"}, acells)
    local doc = tmp .. "-guards.md"
    assert.equal(0, run(format("--guards %s,%sb --ablation %s --doc %s", dir, dir, adir, doc)))
    local text = support.read_file(doc)
    -- the command rebuilt from sweep.json
    assert.truthy(text:find("experiments/sweep.lua experiments/metaplasticity.lua --set runs=bio " ..
                            "--set guards=true,false --seeds 1-2 --jobs 2 --out " .. dir ..
                            " -- --episodes 40\n", 1, true))
    assert.truthy(text:find("--set guards=true,false --seeds 3 --jobs 2 --out " .. dir ..
                            "b -- --episodes 40\n", 1, true))
    -- seed 1: median norm of {1, 1, 1, 100} is 1; the spike at 4 (10 times the median before it)
    assert.truthy(text:find("| 1 | on | 60.0 | 60.0 | 1 | 1e+02 (4) | 1 (4) | no | 55.0 | 0 / 1 |",
                            1, true))
    -- the non-finite norm is a spike; the collapse at 40 (0.1 < 0.3)
    assert.truthy(text:find("| 1 | off | 25.0 | 59.0 | 2 | 2 (1) | 1 (3) | 40 | 10.0 | 1 / 0 |",
                            1, true))
    assert.truthy(text:find("| 3 | off | 25.0 | 57.0 | 2 | 2 (1) | 1 (3) | never 50% | - | 1 / 0 |",
                            1, true))
    -- on - off: d = 0.35, 0.45, 0.55: mean 0.45, sd 0.1, t = 4.5 sqrt(3), df 2:
    -- p = 1 - t / sqrt(2 + t^2); interval 0.45 +- t(0.975, 2) 0.1 / sqrt(3)
    local t = 4.5 * math.sqrt(3)
    local q = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
    local half = q * 0.1 / math.sqrt(3)
    assert.truthy(text:find(format("final theta: +45.0 points, 95%% interval [%+.1f, %+.1f], " ..
                                   "t = %.2f, df = 2, p = %.4f", 100 * (0.45 - half),
                                   100 * (0.45 + half), t, 1 - t / math.sqrt(2 + t * t)), 1, true))
    -- 0 of 3 failed against 3 of 3: Fisher p = 2 / C(6, 3) = 0.1
    assert.truthy(text:find("0 of 3 with guards, 3 of 3 without, p = 0.1000", 1, true))
    assert.truthy(text:find("**the guards are needed**", 1, true))       -- p = 0.016 < 0.05
    -- the means with their t intervals: on = 0.6, 0.7, 0.8 (sd 0.1)
    assert.truthy(text:find(format("| on | 3 | 70.0 ± %.1f | 60.0 ± 0.0 | 0 of 3 |", 100 * half),
                            1, true))
    assert.truthy(text:find("6 cells, 60 s of worker wall time, 12 CPU s", 1, true))
    -- the ablation's rows, its summary and its paired tests: against off
    -- d = 0.05, 0.25, 0.15 (mean 0.15, sd 0.1); against on d = -0.3, -0.2, -0.4
    assert.truthy(text:find("| 2 | on, revert-drop=1 clip=2 | 50.0 | 60.0 |", 1, true))
    assert.truthy(text:find(format("| on, revert-drop=1 clip=2 | 3 | 40.0 ± %.1f | 60.0 ± 0.0 | 0 of 3 |",
                                   100 * half), 1, true))
    assert.truthy(text:find(format("(on, revert-drop=1 clip=2) - (off), final theta: +15.0 points " ..
                                   "[%+.1f, %+.1f]", 100 * (0.15 - half), 100 * (0.15 + half)), 1, true))
    assert.truthy(text:find("(on, revert-drop=1 clip=2) - (on), final theta: -30.0 points", 1, true))
    os.execute(format("rm -rf %q %q %q %q %q", dir, dir .. "b", adir, doc, tmp .. ".log"))
  end)

  it("methods: mean +- interval per run and the paired test against the baseline", function()
    local dir = tmp .. "-methods"
    local cells = {}
    local bp, fa = {0.70, 0.72, 0.68}, {0.30, 0.35, 0.28}
    for seed = 1, 3 do
      cells[#cells + 1] = {seed = seed, options = {runs = "bp_lr"},
        runs = {bp_lr = {title = "BP, learning rate only", final_accuracy = bp[seed],
                         best_accuracy = bp[seed], paper = "~70%"}}}
      cells[#cells + 1] = {seed = seed, options = {runs = "fa_lr"},
        runs = {fa_lr = {title = "FA, learning rate only", final_accuracy = fa[seed],
                         best_accuracy = fa[seed], paper = "~25%"}}}
    end
    make_sweep(dir, {{name = "runs", values = {"bp_lr", "fa_lr"}}}, {}, cells)
    local run_ok = run("--methods " .. dir)
    assert.equal(0, run_ok)
    local text = support.read_file(tmp .. ".log")
    -- fa - bp: -0.40, -0.37, -0.40: mean -0.39, sd sqrt(0.0003)
    local d = {-0.40, -0.37, -0.40}
    local m = (d[1] + d[2] + d[3]) / 3
    local sd = math.sqrt(((d[1] - m) ^ 2 + (d[2] - m) ^ 2 + (d[3] - m) ^ 2) / 2)
    local q = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
    local t = m / (sd / math.sqrt(3))
    assert.truthy(text:find(format("| FA, learning rate only | 1,2,3 | 31.0 ± %.1f | 31.0 ± %.1f | " ..
                                   "%+.1f [%+.1f, %+.1f] (n = 3) | %.4f | ~25%% |",
                                   100 * q * 0.036055512754639 / math.sqrt(3),
                                   100 * q * 0.036055512754639 / math.sqrt(3), 100 * m,
                                   100 * (m - q * sd / math.sqrt(3)), 100 * (m + q * sd / math.sqrt(3)),
                                   1 - math.abs(t) / math.sqrt(2 + t * t)), 1, true), text)
    assert.truthy(text:find("| BP, learning rate only | 1,2,3 | 70.0 ± ", 1, true))
    os.execute(format("rm -rf %q %q", dir, tmp .. ".log"))
  end)

  it("a user's mistake is one line and exit status 2", function()
    assert.equal(2, run(""))
    assert.truthy(support.read_file(tmp .. ".log"):find("give at least one of --guards", 1, true))
    assert.equal(2, run("--guards " .. tmp .. "-none"))
    assert.truthy(support.read_file(tmp .. ".log"):find("is not a sweep folder (no sweep.json)", 1, true))
    os.execute(format("rm -f %q", tmp .. ".log"))
  end)
end)
