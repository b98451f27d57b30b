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
    release()
    -- a runner killed with SIGKILL leaves its lock file, but not the lock
    local pid = nm.sys.spawn({exe, sweep_script, echo, "--set", "a=1,2", "--out", dir, "--resume",
                          "--", "--sleep=0.2", "--steps=4"}, tmp .. "/locked.log")
    local t0 = nm.sys.clock()
    while not read(dir .. "/sweep.lock") and nm.sys.clock() - t0 < 10 do nm.sys.sleep(0.02) end
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
    assert.truthy(err:find("merge: 1 problems; nothing written", 1, true), err)
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

describe("doc/sweeps.md", function()
  local doc = support.read_file(root .. "/doc/sweeps.md")

  it("shows experiments/nk-sweep.sbatch as it is", function()
    local shown = doc:match("with `experiments/nk%-sweep%.sbatch`:\n\n```sh\n(.-)```")
    assert.is_string(shown)
    assert.equal(support.read_file(root .. "/experiments/nk-sweep.sbatch"), shown)
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
