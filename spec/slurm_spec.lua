-- A real Slurm: tools/slurm-cluster.sh starts a private one-node cluster
-- (its own munged, slurmctld and slurmd on loopback ports, all under a
-- temp folder); doc/sweeps.md's own job script (experiments/nk-sweep.sbatch)
-- runs a sharded nan_nk sweep as a job array; one task is cancelled, the
-- doc's afterany merge names its shard, the task is resubmitted alone,
-- and the merge equals a local --jobs 1 sweep. Skipped (saying why)
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

  it("runs doc/sweeps.md's job array, survives a cancelled task and merges to the local result", function()
    local results = tmp .. "/nk"
    local env = "SHARDS=4 RESULTS=" .. q(results)
    local logs = q(tmp .. "/logs/nk-%A_%a.out")
    os.execute("mkdir -p " .. q(tmp .. "/logs"))
    local function submit(array)
      return "sbatch --parsable --output=" .. logs .. " --array=" .. array
             .. " experiments/nk-sweep.sbatch --seeds 1 --quick"
    end
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
    local here = tmp .. "/local"
    out, err, rc = sh("cd " .. q(root) .. " && ./neuromic experiments/sweep.lua experiments/nan_nk.lua "
                      .. "--set n=10,20,50,100,200,500 --set k=1,2,3,5 --seeds 1 --quick --jobs 1 --out "
                      .. q(here) .. " -- --figure cell")
    assert.equal(0, rc, err)
    local a, b = finals(here), finals(results .. "/all")
    assert.equal(24, #a)
    assert.same(a, b)
  end)
end)
