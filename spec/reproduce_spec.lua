-- The reproduction command (experiments/reproduce.lua, nm.reproduce): its
-- measures and claims against nm.stats and hand computations, the registry
-- checks, and the quick form of every result run end to end (about 100 s of
-- CPU with 2 workers): every family's report and every table is produced,
-- a second run resumes without running a cell, shards merge to the same
-- figures, and the README table is rewritten between its markers.
local reproduce = require "nm.reproduce"
local stats = require "nm.stats"
local json = require "nm.json"
local support = require "spec.support"
local plot = require "nm.plot"

local q = support.q

describe("nm.reproduce measures and claims", function()
  it("lookup follows keys and picks list items by key=value", function()
    local t = {final = {cells = {{arch = "256", rule = "bp", acc = 0.9}, {arch = "256", rule = "fa", acc = 0.8},
                                 {arch = "256-256", rule = "fa", acc = 0.7}},
                        ["fig3_mnist-subset_k1"] = 3, runs = {bio = {x = 2}}}}
    assert.equal(0.8, reproduce.lookup(t, "final.cells[arch=256,rule=fa].acc"))
    assert.equal(0.7, reproduce.lookup(t, "final.cells[rule=fa,arch=256-256].acc"))
    assert.equal(3, reproduce.lookup(t, "final.fig3_mnist-subset_k1"))
    assert.equal(2, reproduce.lookup(t, "final.runs.bio.x"))
    local v, why = reproduce.lookup(t, "final.cells[rule=fa].acc")
    assert.is_nil(v)
    assert.truthy(why:find("several", 1, true))
    v, why = reproduce.lookup(t, "final.runs.oja.x")
    assert.is_nil(v)
    assert.truthy(why:find("final.runs.oja.x", 1, true))
    assert.has_error(function() reproduce.lookup(t, "final.cells[rule].acc") end)
  end)

  it("summarize gives the t interval of nm.stats", function()
    local s = reproduce.summarize{[1] = 90.5, [2] = 91.0, [3] = 89.75, [4] = 90.25, [5] = 91.5}
    local c = stats.mean_ci{90.5, 91.0, 89.75, 90.25, 91.5}
    assert.equal(5, s.n)
    assert.is_near(c.mean, s.mean, 1e-12)
    assert.is_near(c.half, s.half, 1e-12)
    -- t(0.975, 4) sd / sqrt(5), by hand
    assert.is_near(2.7764451051977987 * stats.sd{90.5, 91.0, 89.75, 90.25, 91.5} / math.sqrt(5), s.half, 1e-9)
    assert.equal(1, reproduce.summarize{[3] = 7}.n)
  end)

  it("decide: one-sided and equivalence verdicts from the paired and Welch tests", function()
    local a = {[1] = 93.1, [2] = 93.4, [3] = 92.9, [4] = 93.3, [5] = 93.0}
    local b = {[1] = 93.5, [2] = 93.9, [3] = 93.2, [4] = 93.6, [5] = 93.6}
    local xs, ys = {93.1, 93.4, 92.9, 93.3, 93.0}, {93.5, 93.9, 93.2, 93.6, 93.6}
    -- a < b: the paired differences are all negative
    local d = reproduce.decide({a = "a", b = "b", relation = "<"}, a, b, true)
    assert.equal("holds", d.verdict)
    assert.is_near(stats.paired_t_test(xs, ys).p_less, d.p, 1e-15)
    d = reproduce.decide({a = "a", b = "b", relation = ">"}, a, b, true)
    assert.equal("does not hold", d.verdict)
    -- within 1 point: both one-sided tests against -1 and +1
    d = reproduce.decide({a = "a", b = "b", relation = "within", delta = 1}, a, b, true)
    assert.equal("holds", d.verdict)
    assert.is_near(math.max(stats.paired_t_test(xs, ys, -1).p_greater, stats.paired_t_test(xs, ys, 1).p_less),
                   d.p, 1e-15)
    -- within 0.1: the mean difference (-0.42) is significantly beyond -0.1
    d = reproduce.decide({a = "a", b = "b", relation = "within", delta = 0.1}, a, b, true)
    assert.equal("does not hold", d.verdict)
    -- Welch: the unpaired test of nm.stats
    d = reproduce.decide({a = "a", b = "b", relation = "<"}, a, b, false)
    assert.is_near(stats.welch_test(xs, ys).p_less, d.p, 1e-15)
    assert.truthy(d.test:find("Welch", 1, true))
    -- against a constant: the one-sample test of a - value
    d = reproduce.decide({a = "a", value = 93.6, relation = "<"}, a, nil, false)
    assert.is_near(stats.paired_t_test(xs, {93.6, 93.6, 93.6, 93.6, 93.6}).p_less, d.p, 1e-15)
    assert.equal("holds", d.verdict)
    -- noise around the same mean: neither direction is shown
    d = reproduce.decide({a = "a", b = "b", relation = ">"}, {[1] = 1, [2] = 3, [3] = 2},
                         {[1] = 2, [2] = 2, [3] = 2.1}, true)
    assert.equal("not shown", d.verdict)
    d = reproduce.decide({a = "a", b = "b", relation = ">"}, {[1] = 1}, {[1] = 0}, true)
    assert.equal("too few seeds", d.verdict)
  end)

  it("decide: Fisher's exact test on the counts of two 0/1 measures", function()
    -- 0 of 10 failed with, 6 of 10 without: two-sided p = 0.01084 (the
    -- hypergeometric sum by hand: (C(10,0) C(10,6) + C(10,6) C(10,0)) / C(20,6))
    local on, off = {}, {}
    for s = 1, 10 do on[s], off[s] = 0, s <= 6 and 1 or 0 end
    local p = 2 * 210 / 38760
    local d = reproduce.decide({a = "on", b = "off", relation = "<", test = "fisher"}, on, off, true)
    assert.equal("holds", d.verdict)
    assert.is_near(p, d.p, 1e-12)
    assert.equal("0/10 vs 6/10", d.statistic)
    d = reproduce.decide({a = "on", b = "off", relation = ">", test = "fisher"}, on, off, true)
    assert.equal("does not hold", d.verdict)
    -- 1 of 5 against 2 of 5: p = 1, nothing shown
    d = reproduce.decide({a = "a", b = "b", relation = "<", test = "fisher"},
                         {0, 0, 1, 0, 0}, {1, 0, 1, 0, 0}, true)
    assert.equal("not shown", d.verdict)
    assert.is_near(1, d.p, 1e-12)
  end)

  it("check_family names the file and what is wrong", function()
    local function family(patch)
      local r = {name = "r", figure = "F", experiment = "experiments/bmvr.lua", seeds = "1-5",
                 quick = {seeds = "1-2"}, measures = {{name = "m", label = "M", path = "final.x"}}}
      for k, v in pairs(patch) do r[k] = v end
      return {family = "f", title = "T", paper = "P", results = {r}}
    end
    assert.has_no_error(function() reproduce.check_family(family{}, "f.lua") end)
    local cases = {
      {{quick = false}, "needs quick"},
      {{claims = {{text = "c", a = "m", b = "z", relation = ">"}}}, "b = 'z' is not a measure"},
      {{claims = {{text = "c", a = "m", b = "m", relation = "~"}}}, "relation must be"},
      {{claims = {{text = "c", a = "m", b = "m", relation = "within"}}}, "needs delta > 0"},
      {{measures = {{name = "m", label = "M"}}}, "needs path"},
      {{seeds = "1-x"}, "seeds"},
      {{args = {"--x={nope}"}}, "no variable {nope}"},
      {{claims = {{text = "c", a = "m", b = "m", relation = ">", test = "chi2"}}}, "test must be"},
      {{claims = {{text = "c", a = "m", value = 1, relation = ">", test = "fisher"}}}, "two 0/1 measures"},
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(reproduce.check_family, family(c[1]), "f.lua")
      assert.is_false(ok)
      assert.truthy(err:find("^f%.lua: "), err)
      assert.truthy(err:find(c[2], 1, true), err)
    end
  end)
end)

describe("experiments/reproduce.lua", function()
  local tmp = os.tmpname()
  os.remove(tmp)
  local out, readme = tmp .. "/runs", tmp .. "/README.md"
  local registry = reproduce.load(support.root .. "/experiments/reproduce")

  local function run(args)
    return support.sh(string.format("cd %q && %s experiments/reproduce.lua %s", support.root,
                                    q(support.exe), args))
  end

  setup(function()
    os.execute("mkdir -p " .. q(tmp))
    support.write_file(readme, "# x\n\nbefore\n" .. reproduce.README_MARKERS[1] .. "\nold table\n" ..
                               reproduce.README_MARKERS[2] .. "\nafter\n")
  end)

  teardown(function()
    os.execute("rm -rf " .. q(tmp))
  end)

  it("--quick runs every result and writes every family's tables and the README table", function()
    local _, err, rc = run(string.format("--quick --jobs 2 --no-plot --out %s --readme %s", q(out), q(readme)))
    assert.equal(0, rc, err)
    assert.truthy(#registry >= 7)
    for _, fam in ipairs(registry) do
      local md = support.read_file(out .. "/doc/" .. fam.family .. ".md")
      assert.truthy(md:find("^<!%-%- Written by ./neuromic experiments/reproduce.lua"), fam.family)
      assert.truthy(md:find("**quick form**", 1, true), fam.family)
      local summary = json.read_file(out .. "/doc/" .. fam.family .. ".json")
      assert.equal(#fam.results, #summary.results)
      for i, r in ipairs(fam.results) do
        local res = summary.results[i]
        assert.equal(r.name, res.name)
        assert.equal(res.cells, res.done, fam.family .. "/" .. r.name)
        assert.same({}, res.problems, fam.family .. "/" .. r.name)
        assert.truthy(md:find("## " .. r.figure, 1, true), r.figure)
        -- every measure has a value from every seed, every claim a verdict
        for _, s in ipairs(res.measures) do
          assert.equal(#r.quick_form.seeds, s.n, fam.family .. "/" .. r.name .. " " .. s.name)
          assert.truthy(md:find("| " .. s.label .. " |", 1, true), s.label)
        end
        assert.equal(#(r.claims or {}), #res.claims)
        for _, c in ipairs(res.claims) do
          assert.truthy(({holds = 1, ["does not hold"] = 1, ["not shown"] = 1})[c.verdict], c.verdict)
          assert.truthy(md:find(c.text, 1, true), c.text)
        end
        if r.findings then assert.truthy(#res.findings > 0, r.name) end
        assert.is_number(res.cpu_s)
        assert.truthy(md:find("Command (one cell", 1, true))
      end
    end
    -- the README table: between the markers, one link per family, the rest kept
    local text = support.read_file(readme)
    assert.truthy(text:find("^# x\n\nbefore\n<!%-%- reproduce:begin %-%->\n| family |"), text)
    assert.truthy(text:find("\n<!%-%- reproduce:end %-%->\nafter\n$"), text)
    assert.falsy(text:find("old table", 1, true))
    -- with every result run, the line under the table says so (not "an estimated 0 s")
    assert.truthy(text:find("); every result has run (`make reproduce", 1, true), text)
    for _, fam in ipairs(registry) do
      assert.truthy(text:find("(" .. out .. "/doc/" .. fam.family .. ".md)", 1, true), fam.family)
    end
  end)

  it("resumes: the same command again runs no cell and writes the same figures", function()
    local before = json.read_file(out .. "/doc/bmvr.json")
    local _, err, rc = run(string.format("--quick --only bmvr --no-plot --out %s --readme %s", q(out), q(readme)))
    assert.equal(0, rc, err)
    assert.truthy(err:find("2 cells, 2 already done, 0 to run", 1, true), err)
    local after = json.read_file(out .. "/doc/bmvr.json")
    assert.same(before.results, after.results)
  end)

  it("the comparison plot prints labels as given (no gnuplot enhanced text: W_pi stays W_pi)", function()
    if not plot.gnuplot() then
      pending("gnuplot not found: the plot is not written")
      return
    end
    -- the cells ran above: this only rewrites the microcircuit family's report and plots
    local _, err, rc = run(string.format("--quick --only microcircuit --out %s --readme %s", q(out), q(readme)))
    assert.equal(0, rc, err)
    local svg = support.read_file(out .. "/doc/microcircuit-fig2-pifixed.svg")
    assert.truthy(svg:find("microcircuit, W_pi = -W_down fixed, W_ip 300x, test error", 1, true))
    assert.truthy(svg:find("Fig. 2 with W_pi fixed at -W_down and W_ip at 300x", 1, true))
  end)

  it("shards, merged by --report, give the figures of one run", function()
    local sharded = tmp .. "/sharded"
    for i = 1, 2 do
      local _, err, rc = run(string.format("--quick --only bmvr/fig3 --shard %d/2 --out %s", i, q(sharded)))
      assert.equal(0, rc, err)
      assert.truthy(err:find("shard " .. i .. "/2 done", 1, true), err)
    end
    assert.is_nil(io.open(sharded .. "/doc/bmvr.json", "rb"))   -- a shard writes no report
    local _, err, rc = run(string.format("--quick --only bmvr/fig3 --report --no-plot --out %s", q(sharded)))
    assert.equal(0, rc, err)
    local one = json.read_file(out .. "/doc/bmvr.json").results[1]
    local merged = json.read_file(sharded .. "/doc/bmvr.json").results[1]
    assert.equal("fig3", merged.name)
    assert.equal(2, merged.done)
    for i, s in ipairs(one.measures) do
      assert.same(s.values, merged.measures[i].values)
    end
  end)

  it("--list gives every result's cells and time on 2 cores", function()
    local text, err, rc = run("--list")
    assert.equal(0, rc, err)
    for _, fam in ipairs(registry) do
      for _, r in ipairs(fam.results) do
        local line = text:match("\n(" .. (fam.family .. "/" .. r.name):gsub("%p", "%%%0") .. " [^\n]*)")
        assert.truthy(line, fam.family .. "/" .. r.name .. " in\n" .. text)
        assert.truthy(line:find("measured") or line:find("estimated"), line)
      end
    end
    assert.truthy(text:find("\ntotal: CPU ", 1, true), text)
  end)

  it("refuses an unknown family or a broken registry in one line, status 2", function()
    local _, err, rc = run("--list --only nope")
    assert.equal(2, rc)
    assert.equal("reproduce: --only: no family 'nope' (families: ", err:match("^(.-)baselines"))
    local bad = tmp .. "/registry"
    os.execute("mkdir -p " .. q(bad))
    support.write_file(bad .. "/x.lua", 'return {family = "x", title = "T", paper = "P", results = {' ..
                       '{name = "r", figure = "F", experiment = "e.lua", measures = {{name = "m", label = "M", ' ..
                       'path = "final.m"}}}}}')
    _, err, rc = run("--list --registry " .. q(bad))
    assert.equal(2, rc)
    assert.equal(1, select(2, err:gsub("\n", "")))
    assert.truthy(err:find(bad .. "/x.lua: result 'r' needs quick", 1, true), err)
  end)
end)
