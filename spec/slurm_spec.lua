-- A real Slurm: tools/slurm-cluster.sh starts a private one-node cluster
-- (its own munged, slurmctld and slurmd on loopback ports, all under a
-- temp folder); doc/sweeps.md's own job script (experiments/nk-sweep.sbatch)
-- runs a sharded nan_nk sweep as a job array; one task is cancelled, the
-- doc's afterany merge names its shard, the task is resubmitted alone,
-- and the merge equals a local --jobs 1 sweep; then D3 (a resubmission
-- with other arguments), D5 (a torn last line) and D8 (two tasks on one
-- shard folder) inside Slurm tasks. Skipped (saying why)
-- without root or slurm-wlm and munge (make deps installs them).

local json = require "nm.json"
local sweep = require "nm.sweep"
local support = require "spec.support"

local root = support.root
local q, sh = support.q, support.sh

local function why_not()
  local _, _, rc = sh("test -x /usr/sbin/slurmctld && test -x /usr/sbin/slurmd && test -x /usr/sbin/munged"
                      .. " && command -v sbatch")
  if rc ~= 0 then return "slurm-wlm and munge are not installed (make deps installs them)" end
  local id = sh("id -u")
  if id:gsub("%s", "") ~= "0" then return "the private Slurm cluster needs root" end
  return nil
end

local reason = why_not()

describe("a sweep on a real Slurm cluster", function()
  if reason then
    io.stderr:write("spec/slurm_spec.lua skipped: " .. reason .. "\n")
    pending("skipped: " .. reason)
    return
  end

  local tmp, conf
  local cluster = root .. "/tools/slurm-cluster.sh"
  setup(function()
    tmp = (sh("mktemp -d /tmp/nm_slurm_XXXXXX")):gsub("%s+$", "")
    local out, err, rc = sh(q(cluster) .. " start " .. q(tmp .. "/cluster"))
    assert(rc == 0, "slurm-cluster.sh start failed: " .. err)
    conf = out:match("SLURM_CONF=(%S+)")
  end)
  teardown(function()
    if tmp then
      sh(q(cluster) .. " stop " .. q(tmp .. "/cluster"))
      if tmp:match("^/tmp/nm_slurm_") then os.execute("rm -rf " .. q(tmp)) end
    end
  end)

  -- A Slurm client command with the private cluster's configuration.
  local function slurm(cmd, env)
    return sh("cd " .. q(root) .. " && env SLURM_CONF=" .. q(conf) .. " " .. (env or "") .. " " .. cmd)
  end

  local function wait_job(job)
    for _ = 1, 1200 do
      local out = slurm("squeue -h -j " .. job .. " -o %i")
      if out:gsub("%s", "") == "" then return end
      os.execute("sleep 0.1")
    end
    error("job " .. job .. " did not end in 120 s")
  end

  -- final figures without the timings
  local function finals(dir)
    local t = {}
    for _, r in ipairs(sweep.read(dir)) do
      local f = {}
      for k, v in pairs(r.results.final) do if not k:match("_s$") then f[k] = v end end
      t[#t + 1] = {index = r.index, cell = r.cell, final = f}
    end
    table.sort(t, function(a, b) return a.index < b.index end)
    return t
  end

  -- sbatch of the doc's script for some tasks, with the sweep arguments
  -- args (default: the small grid) and sbatch options opts
  local logs = "logs/nk-%A_%a.out"
  local function submit(array, args, opts)
    return "sbatch --parsable --output=" .. q(tmp .. "/" .. logs) .. " --array=" .. array .. " "
           .. (opts or "") .. " experiments/nk-sweep.sbatch " .. (args or "--seeds 1 --quick")
  end
  local function log_of(job, task)
    return support.read_file(tmp .. "/logs/nk-" .. job .. "_" .. task .. ".out")
  end
  -- "STATE EXIT" of an ended array task, e.g. "FAILED 2:0"
  local function state(job, task)
    local out = slurm("scontrol -o show job " .. job .. "_" .. task)
    return (out:match("JobState=(%S+)") or "?") .. " " .. (out:match("ExitCode=(%S+)") or "?")
  end
  local grid_here
  local function local_grid()
    if grid_here then return grid_here end
    local here = tmp .. "/local"
    local _, err, rc = sh("cd " .. q(root) .. " && ./neuromic experiments/sweep.lua experiments/nan_nk.lua "
                          .. "--set n=10,20,50,100,200,500 --set k=1,2,3,5 --seeds 1 --quick --jobs 1 --out "
                          .. q(here) .. " -- --figure cell")
    assert.equal(0, rc, err)
    grid_here = finals(here)
    return grid_here
  end
  local results            -- the shards of the first test, used again by the second

  it("runs doc/sweeps.md's job array, survives a cancelled task and merges to the local result", function()
    results = tmp .. "/nk"
    local env = "SHARDS=4 RESULTS=" .. q(results)
    os.execute("mkdir -p " .. q(tmp .. "/logs"))
    local out, err, rc = slurm(submit("1-4"), env)
    assert.equal(0, rc, err)
    local job = out:match("^(%d+)")
    assert.is_string(job, out)
    -- task 4 waits while task 1 holds the node's 2 CPUs; cancel it
    _, err, rc = slurm("scancel " .. job .. "_4")
    assert.equal(0, rc, err)
    -- the doc's merge, after every task has ended however it ended
    local merge_cmd = "./neuromic experiments/sweep.lua merge " .. results .. "/shard-* --out " .. results .. "/all"
    local function merge_job(after)
      local o, e, r = slurm("sbatch --parsable --dependency=afterany:" .. after .. " --output="
                            .. q(tmp .. "/logs/merge-" .. after .. ".out") .. " --wrap " .. q(merge_cmd))
      assert.equal(0, r, e)
      return o:match("^(%d+)")
    end
    local m1 = merge_job(job)
    wait_job(job)
    wait_job(m1)
    local log = support.read_file(tmp .. "/logs/merge-" .. job .. ".out")
    assert.truthy(log:find("has no result; shard 4/4, not given to merge: run it with --shard 4/4", 1, true), log)
    assert.is_nil(io.open(results .. "/shard-4/sweep.json"))
    -- resubmit shard 4 alone: a submission of one task still runs shard 4/4
    out, err, rc = slurm(submit("4"), env)
    assert.equal(0, rc, err)
    local job2 = out:match("^(%d+)")
    local m2 = merge_job(job2)
    wait_job(job2)
    wait_job(m2)
    log = support.read_file(tmp .. "/logs/merge-" .. job2 .. ".out")
    assert.truthy(log:find("merged 24 cells from 4 directories", 1, true), log)
    assert.equal("4/4", json.read_file(results .. "/shard-4/sweep.json").shard)
    -- resubmitting a finished shard finds it done
    out, err, rc = slurm(submit("2"), env)
    assert.equal(0, rc, err)
    local job3 = out:match("^(%d+)")
    wait_job(job3)
    log = support.read_file(tmp .. "/logs/nk-" .. job3 .. "_2.out")
    assert.truthy(log:find("6 cells in shard 2/4, 6 already done, 0 to run", 1, true), log)
    -- the same grid in one local process
    local a, b = local_grid(), finals(results .. "/all")
    assert.equal(24, #a)
    assert.same(a, b)
  end)

  -- D3, D5 and D8 inside Slurm tasks: a resubmission with other arguments
  -- is refused (the task fails with exit status 2, the shard untouched); a
  -- torn last line is cut off and its cell run again; a second task on a
  -- shard folder in use stops at once.
  it("refuses other arguments, cuts a torn line and stops a second runner, in its tasks", function()
    assert.is_string(results, "needs the first test's shards")
    local env = "SHARDS=4 RESULTS=" .. q(results)
    -- D3: shard 1 again, with another seed list
    local before = support.read_file(results .. "/shard-1/sweep.jsonl")
    local out, err, rc = slurm(submit("1", "--seeds 1-2 --quick"), env)
    assert.equal(0, rc, err)
    local job = out:match("^(%d+)")
    wait_job(job)
    local log = log_of(job, 1)
    assert.truthy(log:find("was created for another sweep: seeds (saved [1], given [1,2])", 1, true), log)
    assert.equal("FAILED 2:0", state(job, 1))
    assert.equal(before, support.read_file(results .. "/shard-1/sweep.jsonl"))
    -- D5: shard 2's last line torn (as by a kill in the middle of a write)
    local path = results .. "/shard-2/sweep.jsonl"
    local text = support.read_file(path)
    support.write_file(path, text:sub(1, #text - 40))
    out, err, rc = slurm(submit("2"), env)
    assert.equal(0, rc, err)
    job = out:match("^(%d+)")
    wait_job(job)
    log = log_of(job, 2)
    assert.truthy(log:find("sweep: cutting off a torn last line of " .. path, 1, true), log)
    assert.truthy(log:find("6 cells in shard 2/4, 5 already done, 1 to run", 1, true), log)
    assert.equal("COMPLETED 0:0", state(job, 2))
    local _, e2, r2 = sh("cd " .. q(root) .. " && ./neuromic experiments/sweep.lua merge " .. q(results)
                         .. "/shard-1 " .. q(results) .. "/shard-2 " .. q(results) .. "/shard-3 "
                         .. q(results) .. "/shard-4 --out " .. q(results .. "/all2"))
    assert.equal(0, r2, e2)
    assert.same(local_grid(), finals(results .. "/all2"))
    -- D8: one shard folder, two tasks (1 CPU each, so both run at once)
    local d8 = tmp .. "/d8"
    local env8 = "SHARDS=1 RESULTS=" .. q(d8)
    out, err, rc = slurm(submit("1", "--seeds 1-3 --quick", "--cpus-per-task=1"), env8)
    assert.equal(0, rc, err)
    local first = out:match("^(%d+)")
    -- sweep.json is written under the lock: the first runner holds it
    for _ = 1, 300 do
      local f = io.open(d8 .. "/shard-1/sweep.json")
      if f then f:close() break end
      os.execute("sleep 0.1")
    end
    out, err, rc = slurm(submit("1", "--seeds 1-3 --quick", "--cpus-per-task=1"), env8)
    assert.equal(0, rc, err)
    local second = out:match("^(%d+)")
    wait_job(second)
    log = log_of(second, 1)
    assert.truthy(log:find(d8:gsub("%p", "%%%0") .. "/shard%-1 is in use by another runner %(pid %d+ on %S+ since ",
                           1), log)
    assert.equal("FAILED 2:0", state(second, 1))
    local running = state(first, 1)
    slurm("scancel " .. first)
    wait_job(first)
    assert.equal("RUNNING", running:match("^%S+"), "the first task ended before the second started")
  end)
end)
