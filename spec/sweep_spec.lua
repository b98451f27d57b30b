-- The sweep runner's fault paths (nm.sweep, experiments/sweep.lua): a
-- directory bound to its grid, shard and arguments; one runner per
-- directory; torn result lines; merges that refuse mixed or conflicting
-- shards and name the shard to rerun. spec/fixtures/echo_experiment.lua
-- is the experiment.

local nm = require "neuromic"
local json = require "nm.json"
local sweep = require "nm.sweep"

local support = require "spec.support"

local root = support.root
local exe = support.exe
local echo = root .. "/spec/fixtures/echo_experiment.lua"
local sweep_script = root .. "/experiments/sweep.lua"
local q, sh, run_nm = support.q, support.sh, support.run_nm

-- The bytes of a file, nil when there is none.
local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local write = support.write_file

local function lines_of(s)
  local n = 0
  for _ in s:gmatch("\n") do n = n + 1 end
  return n
end

local tmp
setup(function()
  tmp = (sh("mktemp -d /tmp/nm_sweep_XXXXXX")):gsub("%s+$", "")
end)
teardown(function()
  if tmp and tmp:match("^/tmp/nm_sweep_") then os.execute("rm -rf " .. q(tmp)) end
end)

describe("sweep directories", function()
  it("refuse a resume with another grid, shard, quick or extra arguments (D2, D3)", function()
    local dir = tmp .. "/bound"
    local base = {sweep_script, echo, "--set", "a=1,2", "--seeds", "1-2", "--shard", "1/2", "--out", dir}
    local _, err, rc = run_nm{table.unpack(base)}
    assert.equal(0, rc, err)
    local saved = read(dir .. "/sweep.json")
    local cases = {
      {{"--set", "a=1,2,3"}, "sets ("},
      {{"--seeds", "1-3"}, "seeds ("},
      {{"--shard", "1/3"}, 'shard (saved 1/2, given 1/3)'},
      {{"--quick"}, "quick (saved false, given true)"},
      {{"--", "--steps=3"}, 'args (saved [], given ["--steps=3"])'},
    }
    for _, case in ipairs(cases) do
      local args = {sweep_script, echo, "--set", "a=1,2", "--seeds", "1-2", "--shard", "1/2",
                    "--out", dir, "--resume"}
      -- later options replace earlier ones; "--" arguments go last
      for _, a in ipairs(case[1]) do args[#args + 1] = a end
      _, err, rc = run_nm(args)
      assert.equal(2, rc, err)
      assert.equal(1, lines_of(err), err)
      assert.truthy(err:find(dir .. " was created for another sweep: ", 1, true), err)
      assert.truthy(err:find(case[2], 1, true), err)
      assert.equal(saved, read(dir .. "/sweep.json"))   -- never overwritten
    end
    -- `--resume --out DIR` with another shard or arguments is refused too
    _, err, rc = run_nm{sweep_script, "--resume", "--out", dir, "--shard", "2/2"}
    assert.equal(2, rc, err)
    assert.truthy(err:find("shard (saved 1/2, given 2/2)", 1, true), err)
    _, err, rc = run_nm{sweep_script, "--resume", "--out", dir, "--", "--steps=3"}
    assert.equal(2, rc, err)
    -- the same sweep resumes, and a lone --resume keeps the saved shard
    _, err, rc = run_nm{sweep_script, "--resume", "--out", dir}
    assert.equal(0, rc, err)
    assert.truthy(err:find("2 cells in shard 1/2, 2 already done, 0 to run", 1, true), err)
  end)

  it("grow on resume when only values or seeds are added (unsharded), keeping finished cells", function()
    local dir = tmp .. "/grown"
    local _, err, rc = run_nm{sweep_script, echo, "--set", "a=1,2", "--seeds", "1-2", "--out", dir}
    assert.equal(0, rc, err)
    local first = read(dir .. "/sweep.jsonl")
    assert.equal(4, lines_of(first))
    -- a value that is not the saved grid's is another sweep, not a growth
    _, err, rc = run_nm{sweep_script, echo, "--set", "a=1,3", "--seeds", "1-2", "--out", dir, "--resume"}
    assert.equal(2, rc, err)
    assert.truthy(err:find("was created for another sweep: sets (", 1, true), err)
    _, err, rc = run_nm{sweep_script, echo, "--set", "a=1,2,3", "--seeds", "1-3", "--out", dir,
                        "--resume"}
    assert.equal(0, rc, err)
    assert.truthy(err:find("grid grown (a + 3; seeds + 3); its finished cells are kept", 1, true), err)
    assert.truthy(err:find("9 cells, 4 already done, 5 to run", 1, true), err)
    local all = read(dir .. "/sweep.jsonl")
    assert.equal(9, lines_of(all))
    assert.equal(first, all:sub(1, #first))              -- the first four records as they were
    local m = json.decode(read(dir .. "/sweep.json"))
    assert.same({"1", "2", "3"}, m.sets[1].values)
    assert.same({1, 2, 3}, m.seeds)
    -- a lone --resume now takes the grown grid
    _, err, rc = run_nm{sweep_script, "--resume", "--out", dir}
    assert.equal(0, rc, err)
    assert.truthy(err:find("9 cells, 9 already done, 0 to run", 1, true), err)
  end)

  it("say what a growth adds, and refuse one with shards or other arguments", function()
    local base = {experiment = "experiments/x.lua", sets = {{name = "a", values = {1, 2}}},
                  seeds = {1, 2}, args = {}, quick = false}
    local function with(changes)
      local g = json.decode(json.encode(base))
      for k, v in pairs(changes) do g[k] = v end
      return g
    end
    assert.equal("a + 3", sweep.grid_growth(base, with{sets = {{name = "a", values = {1, 2, 3}}}}))
    assert.equal("seeds + 4,5", sweep.grid_growth(base, with{seeds = {1, 2, 4, 5}}))
    assert.equal("", sweep.grid_growth(base, with{sets = {{name = "a", values = {2, 1}}}}))
    assert.equal("", sweep.grid_growth(base, with{experiment = "./experiments/x.lua"}))
    assert.is_nil(sweep.grid_growth(base, with{seeds = {1, 3}}))
    assert.is_nil(sweep.grid_growth(base, with{sets = {{name = "b", values = {1, 2}}}}))
    assert.is_nil(sweep.grid_growth(base, with{sets = {{name = "a", values = {1, 2}},
                                                       {name = "b", values = {1}}}}))
    assert.is_nil(sweep.grid_growth(base, with{args = {"--steps=3"}}))
    assert.is_nil(sweep.grid_growth(base, with{quick = true}))
    assert.is_nil(sweep.grid_growth(base, with{shard = "1/2"}))
    assert.is_nil(sweep.grid_growth(with{shard = "1/2"}, with{shard = "1/2", seeds = {1, 2, 3}}))
  end)

  it("refuse a second runner while the first is alive, and not after it died (D8)", function()
    local dir = tmp .. "/locked"
    nm.sys.mkdir(dir)
    local release = sweep.lock(dir)
    local ok, msg = pcall(sweep.lock, dir)
    assert.is_false(ok)
    assert.truthy(msg:find(dir .. " is in use by another runner (pid " .. nm.sys.getpid() .. " on ", 1, true), msg)
    local _, err, rc = run_nm{sweep_script, echo, "--set", "a=1,2", "--out", dir}
    assert.equal(2, rc, err)
    assert.equal(1, lines_of(err), err)
    assert.truthy(err:find("is in use by another runner (pid " .. nm.sys.getpid(), 1, true), err)
    assert.is_nil(read(dir .. "/sweep.jsonl"))
    -- a bare --resume while the holder has not written sweep.json yet names the
    -- holder, not a missing file (it read sweep.json before the lock: a race under load)
    _, err, rc = run_nm{sweep_script, "--resume", "--out", dir}
    assert.equal(2, rc, err)
    assert.equal(1, lines_of(err), err)
    assert.truthy(err:find("is in use by another runner (pid " .. nm.sys.getpid(), 1, true), err)
    release()
    _, err, rc = run_nm{sweep_script, "--resume", "--out", tmp .. "/empty-never-created"}
    assert.equal(2, rc, err)
    assert.truthy(err:find("holds no sweep (no sweep.json)", 1, true), err)
    -- a runner killed with SIGKILL leaves its lock file, but not the lock
    local pid = nm.sys.spawn({exe, sweep_script, echo, "--set", "a=1,2", "--out", dir, "--resume",
                          "--", "--sleep=0.2", "--steps=4"}, tmp .. "/locked.log")
    local t0 = nm.sys.clock()
    -- (sweep.json is written under the lock: once it is there, the lock is held)
    -- (generous: under a loaded machine the child can take seconds to start)
    while not read(dir .. "/sweep.json") and nm.sys.clock() - t0 < 60 do nm.sys.sleep(0.02) end
    _, err, rc = run_nm{sweep_script, "--resume", "--out", dir}
    assert.equal(2, rc, err)
    assert.truthy(err:find("is in use by another runner (pid " .. pid .. " on ", 1, true), err)
    nm.sys.kill(pid, "KILL")
    nm.sys.wait(pid)
    -- its worker runs on in its own process group, holding its cell's
    -- run lock; let it end (0.8 s)
    nm.sys.sleep(1.2)
    _, err, rc = run_nm{sweep_script, "--resume", "--out", dir}
    assert.equal(0, rc, err)
    assert.equal(2, #sweep.read(dir))
  end)

  it("cut a torn last line off before appending (D5)", function()
    local dir = tmp .. "/torn"
    local _, err, rc = run_nm{sweep_script, echo, "--set", "a=1,2,3", "--out", dir}
    assert.equal(0, rc, err)
    local s = read(dir .. "/sweep.jsonl")
    local first_two = s:match("^([^\n]*\n[^\n]*\n)")
    write(dir .. "/sweep.jsonl", first_two .. '{"index":2,"cell":"a=3,se')   -- killed mid-write
    _, err, rc = run_nm{sweep_script, "--resume", "--out", dir}
    assert.equal(0, rc, err)
    assert.truthy(err:find("cutting off a torn last line of " .. dir .. "/sweep.jsonl (25 bytes at offset "
                           .. #first_two .. ")", 1, true), err)
    local rows, warning = json.read_lines(dir .. "/sweep.jsonl")
    assert.is_nil(warning)
    assert.equal(3, #rows)
    assert.equal(2, rows[3].index)
  end)

  it("keep in failures.jsonl only the latest failure of cells not finished since", function()
    local dir = tmp .. "/fails"
    local _, err, rc = run_nm{sweep_script, echo, "--set", "a=1,2", "--out", dir, "--", "--fail"}
    assert.equal(1, rc, err)
    assert.equal(2, #json.read_lines(dir .. "/failures.jsonl"))
    -- the cells succeed when the failing flag is gone: simulate by recording them
    local full = tmp .. "/fails-ok"
    _, err, rc = run_nm{sweep_script, echo, "--set", "a=1,2", "--out", full}
    assert.equal(0, rc, err)
    write(dir .. "/sweep.jsonl", read(full .. "/sweep.jsonl"):match("^([^\n]*\n)"))
    _, err, rc = run_nm{sweep_script, "--resume", "--out", dir}
    assert.equal(1, rc, err)
    local fails = json.read_lines(dir .. "/failures.jsonl")
    assert.equal(1, #fails)
    assert.equal("a=2,seed=1", fails[1].cell)
  end)
end)

describe("sweep merge", function()
  local grid = {"--set", "a=1,2,3", "--seeds", "1-2"}

  local function shard(name, i, n, extra)
    local d = tmp .. "/" .. name
    local args = {sweep_script, echo, "--out", d, "--shard", i .. "/" .. n, table.unpack(grid)}
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local _, err, rc = run_nm(args)
    assert.equal(0, rc, err)
    return d
  end

  it("fails on shards run with different arguments, one line per problem, writing nothing (D4)", function()
    local a = shard("mix1", 1, 2)
    local b = shard("mix2", 2, 2, {"--", "--steps=3"})
    local out = tmp .. "/mix-all"
    local _, err, rc = run_nm{sweep_script, "merge", a, b, "--out", out}
    assert.equal(1, rc)
    assert.equal(2, lines_of(err), err)
    assert.truthy(err:find("merge: " .. b .. " is not a shard of the sweep in " .. a .. ": args ("
                           .. a .. " [], " .. b .. ' ["--steps=3"])\n', 1, true), err)
    assert.truthy(err:find("merge: 1 problem; nothing written", 1, true), err)
    assert.is_nil(read(out .. "/sweep.jsonl"))
    -- shards of different shard counts do not merge either
    local c = shard("mix3", 2, 3)
    _, err, rc = run_nm{sweep_script, "merge", a, c, "--out", out}
    assert.equal(1, rc)
    assert.truthy(err:find("shard (" .. a .. " 2, " .. c .. " 3)", 1, true), err)
  end)

  it("fails on a cell recorded twice with different results, accepts identical duplicates", function()
    local a = shard("dup1", 1, 2)
    local b = shard("dup2", 2, 2)
    local a2 = tmp .. "/dup1-copy"
    os.execute("cp -r " .. q(a) .. " " .. q(a2))
    local out = tmp .. "/dup-all"
    local _, err, rc = run_nm{sweep_script, "merge", a, b, a2, "--out", out}
    assert.equal(0, rc, err)
    assert.equal(6, #sweep.read(out))
    -- one result changed in the copy
    local s = read(a2 .. "/sweep.jsonl")
    local changed, n = s:gsub('"value":11', '"value":12', 1)
    assert.equal(1, n)
    write(a2 .. "/sweep.jsonl", changed)
    _, err, rc = run_nm{sweep_script, "merge", a, b, a2, "--out", tmp .. "/dup-bad"}
    assert.equal(1, rc)
    assert.truthy(err:find("merge: cell a=1,seed=1 has different results in " .. a .. " and " .. a2 .. "\n",
                           1, true), err)
    assert.is_nil(read(tmp .. "/dup-bad/sweep.jsonl"))
  end)

  it("names the shard to rerun and the command for each missing cell", function()
    local a = shard("miss1", 1, 2)
    local b = shard("miss2", 2, 2)
    -- shard 2 lost its last cell (index 5: a=3,seed=2)
    local s = read(b .. "/sweep.jsonl")
    write(b .. "/sweep.jsonl", s:match("^(.*\n)[^\n]*\n$"))
    local out = tmp .. "/miss-all"
    local _, err, rc = run_nm{sweep_script, "merge", a, b, "--out", out}
    assert.equal(1, rc)
    assert.truthy(err:find("merge: cell a=3,seed=2 (index 5) has no result; shard 2/2: rerun "
                           .. exe .. " experiments/sweep.lua --resume --out " .. b .. "\n",
                           1, true), err)
    assert.equal(5, #sweep.read(out))
    -- the rerun it names completes the merge
    _, err, rc = run_nm{sweep_script, "--resume", "--out", b}
    assert.equal(0, rc, err)
    _, err, rc = run_nm{sweep_script, "merge", a, b, "--out", out}
    assert.equal(0, rc, err)
    assert.equal(6, #sweep.read(out))
  end)
end)

-- An experiment's own grid (nm.sweep's sweep.grid): --shard I/N on the
-- experiment runs one shard's cells, --merge DIR... gathers them and
-- writes what one process writes.
describe("an experiment's grid, sharded and merged", function()
  local function strip(t, keys)
    local c = {}
    for k, v in pairs(t) do if not keys[k] then c[k] = v end end
    return c
  end
  -- the arguments of list a, then those of list b
  local function joined(a, b)
    local c = {table.unpack(a)}
    for _, x in ipairs(b) do c[#c + 1] = x end
    return c
  end

  it("names one script by one path however it is spelled", function()
    assert.equal("experiments/a.lua", sweep.path_key("./x/../experiments//a.lua"))
    assert.equal("/r/experiments/a.lua", sweep.path_key("/r/experiments/./b/../a.lua"))
    assert.equal("../a.lua", sweep.path_key("../a.lua"))
    assert.equal("a.lua", sweep.path_key("a.lua"))
  end)

  it("gives nan_nk's figure grid's findings as one process does", function()
    local nk = root .. "/experiments/nan_nk.lua"
    local base = {nk, "--quick", "--grid-n", "20", "--fig5-n", "20", "--fig7-n", "20", "--runs", "3"}
    local function with(...) return joined(base, {...}) end
    local d = tmp .. "/nkgrid"
    local out1, err, rc = run_nm(with("--jobs", "2", "--out", d .. "/one"))
    assert.equal(0, rc, err)
    for i = 1, 2 do
      _, err, rc = run_nm(with("--shard", i .. "/2", "--out", d .. "/s" .. i))
      assert.equal(0, rc, err)
      local res = json.read_file(d .. "/s" .. i .. "/results.json")
      assert.equal("finished", res.status)
      assert.same({i .. "/2", 9}, {res.final.shard, res.final.grid_cells})
      assert.is_nil(read(d .. "/s" .. i .. "/findings.md"))   -- the tables are the merge's
    end
    local out2
    out2, err, rc = run_nm(with("--merge", d .. "/s1", d .. "/s2", "--out", d .. "/m"))
    assert.equal(0, rc, err)
    assert.truthy(err:find("merged 18 cells from 2 shards", 1, true), err)
    local tables1, tables2 = out1:match("\n## Tables\n.*$"), out2:match("\n## Tables\n.*$")
    assert.is_string(tables1)
    assert.equal(tables1, tables2)
    assert.equal(read(d .. "/one/findings.md"):match("\n## Findings.*$"),
                 read(d .. "/m/findings.md"):match("\n## Findings.*$"))
    local r1, r2 = json.read_file(d .. "/one/results.json"), json.read_file(d .. "/m/results.json")
    assert.is_true(#r1.final.findings > 0)
    assert.same(r1.final.findings, r2.final.findings)
    -- the same cells, with the same figures (times aside)
    local clock = {cpu_s = true, train_s = true}
    local rows1, rows2 = sweep.read(d .. "/one/grid"), sweep.read(d .. "/m/grid")
    table.sort(rows1, function(x, y) return x.index < y.index end)   -- in finishing order
    assert.equal(18, #rows2)
    for i, r in ipairs(rows1) do
      assert.equal(r.key, rows2[i].key)
      assert.same(strip(r.results.final, clock), strip(rows2[i].results.final, clock))
    end
    -- a shard missing: exit 1, the shard named, no findings
    _, err, rc = run_nm(with("--merge", d .. "/s1", "--out", d .. "/m2"))
    assert.equal(1, rc, err)
    assert.truthy(err:find("shard 2/2, not given to merge: run it with --shard 2/2", 1, true), err)
    assert.is_nil(read(d .. "/m2/results.json"))
    -- a shard stopped before its last cell: the merge's message is the
    -- experiment's own command on the folder given to --merge, and that
    -- command finishes it (the state a stop leaves: status "stopped", the
    -- last cell not in the grid's sweep.jsonl)
    assert.equal(0, os.execute("cp -r '" .. d .. "/s2' '" .. d .. "/s2b'") and 0)
    local res2 = json.read_file(d .. "/s2b/results.json")
    res2.status = "stopped"
    local rf = assert(io.open(d .. "/s2b/results.json", "w"))
    rf:write(json.encode(res2))
    rf:close()
    local lines = {}
    for line in io.lines(d .. "/s2b/grid/sweep.jsonl") do lines[#lines + 1] = line end
    local f = assert(io.open(d .. "/s2b/grid/sweep.jsonl", "w"))
    f:write(table.concat(lines, "\n", 1, #lines - 1), "\n")
    f:close()
    _, err, rc = run_nm(with("--merge", d .. "/s1", d .. "/s2b", "--out", d .. "/m5"))
    assert.equal(1, rc, err)
    local interp, hint = err:match("shard 2/2: rerun (%S+) (%S+ %-%-shard 2/2 %-%-out %S+ %-%-resume) %(and the same options%)")
    assert.truthy(interp and interp:find("neuromic$"), err)
    assert.equal(nk .. " --shard 2/2 --out " .. d .. "/s2b --resume", hint, err)
    _, err, rc = run_nm(with("--shard", "2/2", "--out", d .. "/s2b", "--resume"))
    assert.equal(0, rc, err)
    -- merged under another spelling of the script's path: the same experiment
    local other = {root .. "/experiments/../experiments/./nan_nk.lua", table.unpack(base, 2)}
    out2, err, rc = run_nm(joined(other, {"--merge", d .. "/s1", d .. "/s2b", "--out", d .. "/m5"}))
    assert.equal(0, rc, err)
    assert.equal(tables1, out2:match("\n## Tables\n.*$"))
    -- shards of another grid (--runs 4 here): refused, nothing merged
    _, err, rc = run_nm{nk, "--quick", "--grid-n", "20", "--fig5-n", "20", "--fig7-n", "20",
                        "--runs", "4", "--merge", d .. "/s1", d .. "/s2", "--out", d .. "/m3"}
    assert.equal(1, rc, err)
    assert.truthy(err:find("holds the grid of other options: seeds (shards [1,2,3], this run [1,2,3,4])",
                           1, true), err)
    assert.truthy(err:find("nothing merged", 1, true), err)
    assert.is_nil(read(d .. "/m3/grid/sweep.jsonl"))
    -- misuse is one line, exit status 2
    for _, case in ipairs{
      {{"--merge", "--out", d .. "/m4"}, "--merge needs the shard folders"},
      {{d .. "/s1"}, "unexpected argument '" .. d .. "/s1' (shard folders go after --merge)"},
      {{"--merge", d .. "/s1", "--shard", "1/2"}, "--merge and --shard exclude each other"},
      {{"--figure", "cell", "--shard", "1/2"}, "--shard and --merge are for the grid"},
    } do
      _, err, rc = run_nm(with(table.unpack(case[1])))
      assert.equal(2, rc, err)
      assert.equal(1, lines_of(err), err)
      assert.truthy(err:find(case[2], 1, true), err)
    end
  end)

  -- Regression: a stopped grid said "continue with: ./neuromic
  -- experiments/nan_nk.lua --resume --out OUT/grid", which runs nan_nk
  -- into the grid folder.
  it("says how to continue an experiment's stopped grid: its own command with --resume", function()
    local d = tmp .. "/nkstop"
    local args = {exe, root .. "/experiments/nan_nk.lua", "--quick", "--out", d}
    local pid = nm.sys.spawn(args, tmp .. "/nkstop.log")
    local t0 = nm.sys.clock()
    while not read(d .. "/grid/sweep.jsonl") and nm.sys.clock() - t0 < 30 do nm.sys.sleep(0.02) end
    nm.sys.kill(pid, "TERM")
    local _, status = nm.sys.wait(pid)
    assert.equal(143, status)
    local log = read(tmp .. "/nkstop.log")
    assert.truthy(log:find("nan_nk: stopped; continue with the same command and --resume", 1, true), log)
    assert.falsy(log:find("--resume --out", 1, true), log)
    assert.equal("stopped", json.read_file(d .. "/results.json").status)
    local cmd = {}
    for i, a in ipairs(args) do cmd[i] = q(a) end
    local _, err, rc = sh(table.concat(cmd, " ") .. " --resume")
    assert.equal(0, rc, err)
    assert.equal(48, #sweep.read(d .. "/grid"))
  end)

  it("gives baselines' cells and metrics as one process does", function()
    local b = root .. "/experiments/baselines.lua"
    local base = {b, "--quick", "--dataset", "mnist-subset", "--arch", "8", "--rules", "bp,fa,dfa",
                  "--train-subset", "300", "--test-subset", "100", "--probe", "50", "--no-plot"}
    local function with(...) return joined(base, {...}) end
    local d = tmp .. "/bgrid"
    local out1, err, rc = run_nm(with("--out", d .. "/one"))
    assert.equal(0, rc, err)
    for i = 1, 2 do
      _, err, rc = run_nm(with("--shard", i .. "/2", "--out", d .. "/s" .. i))
      assert.equal(0, rc, err)
    end
    assert.equal(2, #sweep.read(d .. "/s1/grid"))          -- cells 0 and 2: bp and dfa
    local out2
    out2, err, rc = run_nm(with("--merge", d .. "/s1", d .. "/s2", "--out", d .. "/m"))
    assert.equal(0, rc, err)
    local results = require "nm.results"
    local clock = {time_s = true, seconds_per_epoch = true}
    local r1, rows1 = results.read(d .. "/one")
    local r2, rows2 = results.read(d .. "/m")
    assert.equal(3, #r2.final.cells)
    for i, c in ipairs(r1.final.cells) do
      assert.same(strip(c, clock), strip(r2.final.cells[i], clock))
    end
    assert.equal(#rows1, #rows2)
    for i, r in ipairs(rows1) do assert.same(strip(r, clock), strip(rows2[i], clock)) end
    -- the printed table, the s/epoch column aside
    local function untimed(text)
      return (text:gsub("\n(%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+)[%d.]+", "\n%1-"))
    end
    assert.truthy(untimed(out1):find("\nmnist%-subset%s+8%s+bp%s+0.%d+%s+0.%d+%s+%-"), out1)
    assert.equal(untimed(out1), untimed(out2))
  end)
end)

describe("doc/sweeps.md", function()
  local doc = support.read_file(root .. "/doc/sweeps.md")

  it("shows experiments/nk-sweep.sbatch and experiments/grid.sbatch as they are", function()
    for _, name in ipairs{"nk-sweep", "grid"} do
      local shown = doc:match("with `experiments/" .. name:gsub("%-", "%%-") .. "%.sbatch`:\n\n```sh\n(.-)```")
      assert.is_string(shown, name)
      assert.equal(support.read_file(root .. "/experiments/" .. name .. ".sbatch"), shown)
    end
  end)

  -- The "GNU parallel" section's blocks, run by sh as they are written, in
  -- a scratch folder holding ./neuromic, experiments/ and hosts.txt (this
  -- machine, 2 cores); the second block, which has no merge line, is
  -- followed by the first one's. Each merge is compared with one process;
  -- each block's parallel command run again finds nothing left to run.
  it("runs its GNU parallel recipes as written, each merge equal to one process", function()
    if select(3, sh("command -v parallel")) ~= 0 then
      pending("GNU parallel is not installed (make deps installs it)")
      return
    end
    local section = doc:match("\n### GNU parallel\n(.-)\n## ")
    local blocks = {}
    for b in section:gmatch("```sh\n(.-)```") do blocks[#blocks + 1] = b end
    assert.equal(3, #blocks)
    local function final_of(rows)
      local t = {}
      for _, r in ipairs(rows) do
        local f = {}
        for k, v in pairs(r.results.final) do if k ~= "cpu_s" and k ~= "train_s" then f[k] = v end end
        t[r.index + 1] = {key = r.key, final = f}
      end
      return t
    end
    for i, block in ipairs(blocks) do
      local dir = tmp .. "/parallel" .. i
      nm.sys.mkdir(dir)
      assert.equal(0, select(3, sh("cd " .. q(dir) .. " && ln -s " .. q(exe) .. " neuromic && ln -s " ..
                                   q(root .. "/experiments") .. " experiments && echo 2/: > hosts.txt")))
      local script = block
      if i == 2 then script = script .. blocks[1]:match("\n(%./neuromic [^\n]*merge [^\n]*\n)") end
      local _, err, rc = sh("cd " .. q(dir) .. " && sh -e -c " .. q(script))
      assert.equal(0, rc, err)
      -- the parallel command again: every shard is done, nothing runs
      local again = "export OPENBLAS_NUM_THREADS=1\n" .. block:match("(parallel .-:::[^\n]*\n)")
      local out2
      out2, err, rc = sh("cd " .. q(dir) .. " && sh -e -c " .. q(again))
      assert.equal(0, rc, err)
      assert.falsy((out2 .. err):find("done in", 1, true), out2 .. err)
      -- one process: the parallel command without its shard, --out and --resume
      local cmd = block:gsub("\\\n", " "):match("parallel .-(%./neuromic .-) :::")
      local words = {}
      for w in cmd:gmatch("%S+") do words[#words + 1] = w end
      local one, skip = {}, false
      for _, w in ipairs(words) do
        if skip then skip = false
        elseif w == "--shard" or w == "--out" then skip = true
        elseif w ~= "--resume" then
          if w == "--" then one[#one + 1] = "--out one" end
          one[#one + 1] = w
        end
      end
      if not cmd:find(" %-%- ") then one[#one + 1] = "--out one" end
      local out1
      out1, err, rc = sh("cd " .. q(dir) .. " && OPENBLAS_NUM_THREADS=1 " .. table.concat(one, " "))
      assert.equal(0, rc, err)
      if i < 3 then
        local merged, single = sweep.read(dir .. "/results/nk/all"), sweep.read(dir .. "/one")
        assert.equal(24, #merged)
        assert.same(final_of(single), final_of(merged))
      else
        local m = dir .. "/results/nk-quick/all"
        assert.equal(out1:match("\n## Tables\n.*$"), support.read_file(m .. "/findings.md"):match("\n## Tables\n.*$"))
        assert.same(json.read_file(dir .. "/one/results.json").final.findings,
                    json.read_file(m .. "/results.json").final.findings)
      end
    end
  end)

  it("runs its first recipe: one nan_nk network per cell (D1)", function()
    local recipe = doc:match("```sh\n(%./neuromic experiments/sweep%.lua experiments/nan_nk%.lua.-)\n```")
    assert.is_string(recipe)
    local args = {}
    for w in recipe:gsub("\\\n", " "):gmatch("%S+") do args[#args + 1] = w end
    assert.equal("./neuromic", table.remove(args, 1))
    args[1] = root .. "/" .. args[1]
    args[2] = root .. "/" .. args[2]
    local out = tmp .. "/doc-nk"
    local with = {}
    for i, a in ipairs(args) do
      if args[i - 1] == "--out" then a = out elseif args[i - 1] == "--seeds" then a = "1" end
      if a == "--" then with[#with + 1] = "--quick" end   -- a small grid: one seed, quick cells
      with[#with + 1] = a
    end
    local _, err, rc = run_nm(with)
    assert.equal(0, rc, err)
    local rows = sweep.read(out)
    assert.equal(12, #rows)
    local tests = {}
    for _, r in ipairs(rows) do
      -- one network trained: its own test error, not the whole grid's findings
      assert.is_number(r.results.final.test, r.cell)
      tests[#tests + 1] = r.results.final.test
    end
    local distinct = {}
    for _, t in ipairs(tests) do distinct[t] = true end
    local n = 0
    for _ in pairs(distinct) do n = n + 1 end
    assert.is_true(n > 1)
  end)
end)
