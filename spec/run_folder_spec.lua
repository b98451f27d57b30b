-- spec/run_folder_spec.lua: an experiment's output folder and command
-- line as a careless or hostile user meets them: user errors are one line
-- and exit status 2; a folder belongs to one run (lock, no silent
-- replacement, untouched until the inputs are checked); no path reaches
-- a shell or gnuplot; every write is checked (full disks on a small
-- tmpfs when the tests run as root); diverged training is a failure.
local nm = require "neuromic"
local json = require "nm.json"
local cli = require "nm.cli"
local results = require "nm.results"
local plot = require "nm.plot"
local rule = require "nm.rule"
local support = require "spec.support"

local root, exe = support.root, support.exe
local echo = root .. "/spec/fixtures/echo_experiment.lua"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- run(argv) -> exit status, everything printed (stdout and stderr). No shell.
local function run(argv)
  local log = os.tmpname()
  local full = {exe}
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local pid = nm.sys.spawn(full, log)
  local done, status
  repeat done, status = nm.sys.wait(pid) until done
  local text = read(log) or ""
  os.remove(log)
  return status, text
end

local function start(argv, log)
  local full = {exe}
  for _, a in ipairs(argv) do full[#full + 1] = a end
  return nm.sys.spawn(full, log)
end

local function wait(pid)
  local done, status
  repeat done, status = nm.sys.wait(pid) until done
  return status
end

local function wait_until(f, seconds)
  local t0 = nm.sys.clock()
  while nm.sys.clock() - t0 < seconds do
    if f() then return true end
    nm.sys.sleep(0.01)
  end
  return false
end

local function count_lines(path)
  local s = read(path)
  if not s then return 0 end
  local n = 0
  for _ in s:gmatch("\n") do n = n + 1 end
  return n
end

-- Names of the files in dir and their contents (what "untouched" means).
local function snapshot(dir)
  local t = {}
  for _, name in ipairs(nm.sys.listdir(dir) or {}) do t[name] = read(dir .. "/" .. name) end
  return t
end

local function lines_of(text)
  local out = {}
  for l in text:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function is_root()
  local p = io.popen("id -u")
  local id = p and p:read("l")
  if p then p:close() end
  return id == "0"
end

local tmp
setup(function()
  tmp = os.tmpname()
  os.remove(tmp)
  nm.sys.mkdir(tmp)
end)
teardown(function()
  os.execute("rm -rf " .. sh_quote(tmp))
end)

describe("user errors of experiment command lines", function()
  it("are one line on stderr and exit status 2, never a traceback (17 cases, 7 experiments)", function()
    local file = tmp .. "/a-file"
    write(file, "not a folder\n")
    local empty = tmp .. "/no-run"
    nm.sys.mkdir(empty)
    local E = function(name) return root .. "/experiments/" .. name .. ".lua" end
    local cases = {
      -- {argv, text the line must contain}
      {{E"baselines", "--quick", "--dataset", "nosuchset", "--out", tmp .. "/u1"}, "no IDX data set at 'nosuchset'"},
      {{E"baselines", "--quick", "--out", file}, "cannot use --out " .. file},
      {{E"baselines", "--quick", "--out", ""}, "--out needs a folder name"},
      {{E"baselines", "--quick", "--threads", "100000", "--out", tmp .. "/u2"}, "option '--threads' must be <= 256"},
      {{E"baselines", "--train-subset", "500", "--test-subset", "100", "--epochs", "1",
        "--dataset", "mnist-subset", "--arch", "8", "--rules", "bp", "--validation", "100000",
        "--out", tmp .. "/u3"}, "validation = 100000 leaves no training samples"},
      {{E"baselines", "--quick", "--arch", "99999999999", "--out", tmp .. "/u4"},
       "a hidden layer of 99999999999 units is too large"},
      {{E"baselines", "--quick", "--dataset", ""}, "option '--dataset' needs at least one item"},
      {{E"baselines", "--quick", "--arch", ""}, "option '--arch' needs at least one item"},
      {{E"baselines", "--quick", "--rules", ""}, "option '--rules' needs at least one item"},
      {{E"baselines", "--quick", "--lr", "1e999"}, "option '--lr' expects a finite number"},
      {{E"baselines", "--quick", "--epochs", "0x10"}, "option '--epochs' expects a decimal integer"},
      {{E"metaplasticity", "--quick", "--replot", "--out", empty}, "--replot: no finished run in " .. empty},
      {{E"folded_ae", "--quick", "--dataset", tmp .. "/missing/set", "--out", tmp .. "/u5"},
       "no IDX data set at '" .. tmp .. "/missing/set'"},
      {{E"bmvr", "--quick", "--threads", "100000", "--out", tmp .. "/u6"}, "option '--threads' must be <= 256"},
      {{E"microcircuit", "--quick", "--datasets", ""}, "option '--datasets' needs at least one item"},
      {{E"nan_nk", "--quick", "--cycles", "1e999"}, "option '--cycles' expects"},
      {{E"rcn", "--quick", "--data", "nosuchset", "--out", tmp .. "/u7"}, "no IDX data set at 'nosuchset'"},
    }
    assert.is_true(#cases >= 10)
    for _, c in ipairs(cases) do
      local status, text = run(c[1])
      local what = table.concat(c[1], " ", 2)
      assert.equal(2, status, what .. ": " .. text)
      assert.falsy(text:find("traceback", 1, true), what .. ": " .. text)
      local lines = lines_of(text)
      assert.equal(1, #lines, what .. ": " .. text)
      assert.truthy(lines[1]:find(c[2], 1, true), what .. ": " .. text)
      assert.truthy(lines[1]:match("^[%w_]+: "), what .. ": " .. text)   -- names the experiment
    end
    -- nothing was written for the runs refused
    for i = 1, 7 do assert.same({}, snapshot(tmp .. "/u" .. i)) end
    assert.equal("not a folder\n", read(file))
  end)

  it("show the traceback with --debug or NEUROMIC_DEBUG=1", function()
    local status, text = run{root .. "/experiments/baselines.lua", "--quick", "--dataset", "nosuchset",
                             "--out", tmp .. "/dbg", "--debug"}
    assert.equal(2, status)
    assert.truthy(text:find("no IDX data set", 1, true))
    assert.truthy(text:find("stack traceback", 1, true), text)
    local p = io.popen("NEUROMIC_DEBUG=1 " .. sh_quote(exe) ..
                       " -e 'require(\"nm.cli\").error(\"bad input\")' 2>&1; echo rc=$?")
    local out = p:read("a")
    p:close()
    assert.truthy(out:find("bad input", 1, true))
    assert.truthy(out:find("stack traceback", 1, true))
    assert.truthy(out:find("rc=2", 1, true))
  end)

  it("name an unknown rule in a sentence of its own", function()
    local ok, err = pcall(rule.definition, "nosuchrule")
    assert.is_false(ok)
    assert.truthy(err:find("no rule 'nosuchrule' (known rules: ", 1, true))
    assert.truthy(err:match("%)$") or err:find("); ", 1, true), err)   -- nothing runs into the list
    assert.falsy(err:find("\n", 1, true))
    assert.truthy(#rule.list() > 3)        -- listed without a shell
  end)

  it("cli.guard turns a library error into a user error with its context", function()
    local ok, e = pcall(cli.guard, "--arch 9", function() error("not enough memory") end)
    assert.is_false(ok)
    assert.is_true(cli.is_error(e))
    assert.equal(2, e.exit_status)
    assert.truthy(tostring(e):find("--arch 9: not enough memory", 1, true))
    assert.equal(6, cli.guard(function(a, b) return a * b end, 2, 3))
  end)
end)

describe("an output folder", function()
  local args = {"--steps", "6", "--seed", "3"}

  it("refuses --out '' (nm.sys.mkdir('') fails)", function()
    assert.has_error(function() nm.sys.mkdir("") end)
    local opts = cli.try_parse({"--out", ""}, {name = "inproc"})
    local ok, e = pcall(results.open, opts, {quiet = true})
    assert.is_false(ok)
    assert.is_true(cli.is_error(e))
    assert.truthy(tostring(e):find("--out needs a folder name", 1, true))
  end)

  it("is never replaced without --resume or --overwrite, nor touched before the inputs are checked", function()
    local dir = tmp .. "/kept"
    local status, text = run{echo, "--out", dir, table.unpack(args)}
    assert.equal(0, status, text)
    local before = snapshot(dir)
    assert.truthy(before["results.json"])
    -- a plain rerun is refused, with the way forward
    status, text = run{echo, "--out", dir, table.unpack(args)}
    assert.equal(2, status)
    assert.truthy(text:find("holds a finished run", 1, true), text)
    assert.truthy(text:find("--overwrite", 1, true))
    assert.same(before, snapshot(dir))
    -- --overwrite with bad inputs: refused before anything changes
    local bdir = tmp .. "/kept-baselines"
    status, text = run{root .. "/experiments/baselines.lua", "--quick", "--dataset", "mnist-subset",
                       "--arch", "8", "--rules", "bp", "--train-subset", "300", "--test-subset", "100",
                       "--probe", "50", "--out", bdir}
    assert.equal(0, status, text)
    local bbefore = snapshot(bdir)
    status, text = run{root .. "/experiments/baselines.lua", "--quick", "--dataset", "mnsit",
                       "--arch", "8", "--rules", "bp", "--out", bdir, "--overwrite"}
    assert.equal(2, status, text)
    assert.same(bbefore, snapshot(bdir))
    -- --overwrite replaces the run, and its plots
    local plots = json.read_file(bdir .. "/results.json").final.plots
    status, text = run{root .. "/experiments/baselines.lua", "--quick", "--dataset", "mnist-subset",
                       "--arch", "8", "--rules", "bp", "--train-subset", "300", "--test-subset", "100",
                       "--probe", "50", "--no-plot", "--out", bdir, "--overwrite"}
    assert.equal(0, status, text)
    for _, p in ipairs(plots) do assert.is_nil(read(p), p) end
    assert.equal("finished", json.read_file(bdir .. "/results.json").status)
    -- --resume and --overwrite together make no sense
    status, text = run{echo, "--out", dir, "--resume", "--overwrite"}
    assert.equal(2, status)
    assert.equal(1, #lines_of(text))
  end)

  it("belongs to one run: a second writer is refused with the first's pid; a dead one's lock is taken over", function()
    local dir = tmp .. "/locked"
    local pid = start({echo, "--out", dir, "--steps", "400", "--sleep", "0.01"}, tmp .. "/locked.log")
    assert.is_true(wait_until(function() return count_lines(dir .. "/metrics.jsonl") >= 2 end, 20))
    local status, text = run{echo, "--out", dir, "--resume", "--steps", "400", "--sleep", "0.01"}
    assert.equal(2, status)
    assert.truthy(text:find("is in use by another run (pid " .. pid .. ", started ", 1, true), text)
    nm.sys.kill(pid, "KILL")
    wait(pid)
    -- the lock file of the killed run is still there; its lock is not
    assert.truthy(read(dir .. "/run.lock"):find("pid " .. pid, 1, true))
    status, text = run{echo, "--out", dir, "--resume", "--steps", "400", "--sleep", "0.01"}
    assert.equal(0, status, text)
    assert.equal("finished", json.read_file(dir .. "/results.json").status)
    assert.is_nil(read(dir .. "/run.lock"))              -- released at the end
    -- nm.sys.lock itself
    local path = tmp .. "/x.lock"
    local fd = nm.sys.lock(path, "pid 1 started now\n")
    assert.is_number(fd)
    local none, why, holder = nm.sys.lock(path, "other")
    assert.is_nil(none)
    assert.equal("busy", why)
    assert.equal("pid 1 started now\n", holder)
    nm.sys.unlock(path, fd)
    assert.is_nil(read(path))
    assert.is_nil(select(1, nm.sys.lock(tmp .. "/no/such/dir/x.lock", "x")))
  end)

  it("may be resumed with other --threads, --no-plot, --checkpoint-every, --stop-after", function()
    local bargs = {root .. "/experiments/baselines.lua", "--quick", "--dataset", "mnist-subset", "--arch", "8",
                   "--rules", "bp", "--train-subset", "400", "--test-subset", "100", "--probe", "50",
                   "--epochs", "2"}
    local ref, dir = tmp .. "/vref", tmp .. "/vol"
    local function with(extra)
      local a = {table.unpack(bargs)}
      for _, x in ipairs(extra) do a[#a + 1] = x end
      return a
    end
    local status, text = run(with{"--out", ref, "--threads", "1"})
    assert.equal(0, status, text)
    status, text = run(with{"--out", dir, "--threads", "1", "--stop-after", "5", "--checkpoint-every", "2"})
    assert.equal(143, status, text)
    status, text = run(with{"--out", dir, "--threads", "1", "--resume", "--no-plot", "--checkpoint-every", "3"})
    assert.equal(0, status, text)
    assert.same(support.metric_rows(ref), support.metric_rows(dir))
    -- another thread count is accepted too (sums in another order: not bit for bit)
    status, text = run(with{"--out", dir .. "3", "--threads", "1", "--stop-after", "5"})
    assert.equal(143, status, text)
    status, text = run(with{"--out", dir .. "3", "--threads", "2", "--resume"})
    assert.equal(0, status, text)
    -- an option that changes results is still refused, in one line
    local d = {table.unpack(bargs)}
    for _, x in ipairs{"--out", dir .. "2", "--stop-after", "5"} do d[#d + 1] = x end
    assert.equal(143, (run(d)))
    local e = {table.unpack(bargs)}
    for _, x in ipairs{"--out", dir .. "2", "--resume", "--lr", "0.5"} do e[#e + 1] = x end
    status, text = run(e)
    assert.equal(2, status)
    assert.equal(1, #lines_of(text), text)
    assert.truthy(text:find("--lr 0.001 then, 0.5 now", 1, true), text)
  end)
end)

describe("no user string reaches a shell or gnuplot", function()
  it("takes --out with ; ` $ ' and spaces as a plain folder name, plots included", function()
    local marker = tmp .. "/INJECTED"
    local weird = tmp .. "/in j;touch " .. marker .. ";`touch " .. marker .. "2` $(touch " ..
                  marker .. "3) 'q'"
    local status, text = run{root .. "/experiments/baselines.lua", "--quick", "--dataset", "mnist-subset",
                             "--arch", "8", "--rules", "bp,fa", "--train-subset", "300",
                             "--test-subset", "100", "--probe", "50", "--out", weird}
    assert.equal(0, status, text)
    assert.is_nil(read(marker))
    assert.is_nil(read(marker .. "2"))
    assert.is_nil(read(marker .. "3"))
    local res = json.read_file(weird .. "/results.json")
    assert.equal("finished", res.status)
    if plot.gnuplot() then
      assert.truthy(#res.final.plots >= 2, "plots listed")
      for _, p in ipairs(res.final.plots) do
        assert.equal(weird, p:sub(1, #weird))
        assert.equal("\137PNG", read(p):sub(1, 4))
      end
    end
  end)

  it("plot titles with backquotes are drawn as text, not run", function()
    if not plot.gnuplot() then
      pending("gnuplot is not installed")
      return
    end
    local marker = tmp .. "/GNUPLOT_RAN"
    local out = tmp .. "/q t.png"
    local paths = plot.curves({{step = 1, y = 1}, {step = 2, y = 2}},
                              {out = out, y = "y", quiet = true,
                               title = "a `touch " .. marker .. "` 'b' \"c\" @x"})
    assert.same({out}, paths)
    assert.is_nil(read(marker))
    assert.equal("\137PNG", read(out):sub(1, 4))
  end)
end)

describe("a diverging run", function()
  it("stops as failed with the step, never reports NaN as a result", function()
    local dir = tmp .. "/nan"
    -- the issue's command line: BP's loss became null, its "accuracy" argmax of NaN rows
    local status, text = run{root .. "/experiments/baselines.lua", "--quick", "--dataset", "fashion",
                             "--rules", "bp", "--arch", "256", "--optim", "sgd", "--lr", "1e4",
                             "--out", dir}
    assert.equal(1, status, text)
    local lines = lines_of(text)
    local last = lines[#lines]
    -- stopped by the rule's check of the weights (nn) or by run:log's of the metrics
    assert.truthy(last:match("non%-finite at update %d+") or
                  last:find("is NaN at dataset fashion, arch 256, rule bp, epoch 1, step", 1, true), text)
    assert.truthy(last:find("status failed", 1, true), text)
    assert.falsy(text:find("traceback", 1, true))
    local res = json.read_file(dir .. "/results.json")
    assert.equal("failed", res.status)
    for _, row in ipairs(json.read_lines(dir .. "/metrics.jsonl")) do
      for k, v in pairs(row) do
        assert.is_true(type(v) ~= "number" or (v == v and math.abs(v) ~= math.huge), k)
      end
    end
  end)

  it("run:log refuses non-finite numbers unless info.nonfinite lists the key", function()
    local opts = cli.try_parse({"--out", tmp .. "/nf"}, {name = "inproc"})
    local r = results.open(opts, {quiet = true})
    r:log{step = 1, loss = 0.5}
    local ok, e = pcall(r.log, r, {step = 2, loss = math.huge})
    assert.is_false(ok)
    assert.equal(1, e.exit_status)
    assert.truthy(tostring(e):find("loss is inf at step 2", 1, true))
    assert.equal("failed", json.read_file(tmp .. "/nf/results.json").status)
    assert.equal(1, count_lines(tmp .. "/nf/metrics.jsonl"))
  end)

  it("run:poll_due names the next step run:poll acts on: a checkpoint or --stop-after", function()
    local opts = cli.try_parse({"--out", tmp .. "/due"}, {name = "inproc"})
    local r = results.open(opts, {quiet = true, checkpoint_every = 50, stop_after = 333})
    local want = {[0] = 50, [49] = 50, [50] = 100, [300] = 333, [332] = 333, [333] = 350,
                  [1000] = 1050}
    for step, due in pairs(want) do assert.equal(due, r:poll_due(step), step) end
    r.checkpoint_every = 0
    assert.equal(333, r:poll_due(10))
    assert.is_nil(r:poll_due(333))
    r.stop_after = nil
    assert.is_nil(r:poll_due(0))
    r:close()
  end)
end)

describe("writes", function()
  it("a torn last metrics line (a crash mid-write) is cut on resume", function()
    local eargs = {"--steps", "30", "--seed", "6", "--checkpoint-every", "2", "--sleep", "0.02"}
    local ref, dir = tmp .. "/torn-ref", tmp .. "/torn"
    local status, text = run{echo, "--out", ref, table.unpack(eargs)}
    assert.equal(0, status, text)
    local pid = start({echo, "--out", dir, table.unpack(eargs)}, tmp .. "/torn.log")
    assert.is_true(wait_until(function() return count_lines(dir .. "/metrics.jsonl") >= 5 end, 20))
    nm.sys.kill(pid, "TERM")
    assert.equal(143, wait(pid))
    nm.sys.append_file(dir .. "/metrics.jsonl", '{"step":6,"sum":')     -- half a row
    status, text = run{echo, "--out", dir, "--resume", table.unpack(eargs)}
    assert.equal(0, status, text)
    assert.truthy(text:find("incomplete last line", 1, true), text)
    assert.equal(read(ref .. "/metrics.jsonl"), read(dir .. "/metrics.jsonl"))
    assert.equal(read(ref .. "/metrics.csv"), read(dir .. "/metrics.csv"))
  end)

  it("nm.sys.append_file appends whole or not at all", function()
    local path = tmp .. "/append.txt"
    nm.sys.append_file(path, "one\n")
    nm.sys.append_file(path, "two\n")
    assert.equal("one\ntwo\n", read(path))
    local ok, err = pcall(nm.sys.append_file, "/dev/full", "x")
    assert.is_false(ok)
    assert.truthy(err:find("No space left on device", 1, true))
    assert.is_false((pcall(nm.sys.append_file, tmp .. "/no/such/dir", "x")))
  end)

  -- The full-disk cases need a small file system of their own.
  local disk
  local function mount_disk(options)
    if not is_root() then return nil, "not root: cannot mount a small tmpfs" end
    local d = tmp .. "/disk"
    nm.sys.mkdir(d)
    if os.execute("mount -t tmpfs -o " .. (options or "size=2m") .. " tmpfs " .. sh_quote(d) ..
                  " 2>/dev/null") ~= true then
      return nil, "mount -t tmpfs failed (no CAP_SYS_ADMIN?)"
    end
    return d
  end
  local function unmount_disk()
    if disk then
      os.execute("umount " .. sh_quote(disk) .. " 2>/dev/null || umount -l " .. sh_quote(disk))
      disk = nil
    end
  end
  after_each(unmount_disk)

  -- Fills the file system holding dir; returns the filler's path.
  local function fill(dir)
    local path = dir .. "/filler"
    for _, size in ipairs{65536, 4096, 512, 64, 8, 1} do
      local chunk = string.rep("f", size)
      while pcall(nm.sys.append_file, path, chunk) do end
    end
    return path
  end

  it("a read-only --out is one line and exit 2", function()
    local why
    disk, why = mount_disk("ro,size=1m")
    if not disk then
      pending("skipped: " .. why)
      return
    end
    for _, out in ipairs{disk, disk .. "/sub"} do
      local status, text = run{echo, "--out", out}
      assert.equal(2, status, text)
      assert.equal(1, #lines_of(text), text)
      assert.truthy(text:find("Read-only file system", 1, true), text)
      assert.falsy(text:find("traceback", 1, true))
    end
  end)

  it("a full disk stops the run as failed in one line; --resume continues once there is room", function()
    local why
    disk, why = mount_disk()
    if not disk then
      pending("skipped: " .. why)
      return
    end
    local eargs = {"--steps", "60", "--sleep", "0.02", "--checkpoint-every", "5", "--seed", "9"}
    local ref = tmp .. "/full-ref"
    local status, text = run{echo, "--out", ref, table.unpack(eargs)}
    assert.equal(0, status, text)
    local dir = disk .. "/run"
    local log = tmp .. "/full.log"
    local pid = start({echo, "--out", dir, table.unpack(eargs)}, log)
    assert.is_true(wait_until(function() return count_lines(dir .. "/metrics.jsonl") >= 12 end, 20))
    local filler = fill(disk)
    status = wait(pid)
    text = read(log)
    assert.equal(1, status, text)
    local lines = lines_of(text)
    assert.equal(1, #lines, text)
    assert.truthy(lines[1]:find("No space left on device", 1, true), text)
    assert.truthy(lines[1]:find(dir .. "/", 1, true), text)        -- names the file
    assert.truthy(lines[1]:find("status failed", 1, true), text)
    assert.truthy(lines[1]:find("continue with --resume", 1, true), text)
    local res = json.read_file(dir .. "/results.json")
    assert.equal("failed", res.status)
    -- every metrics line is whole
    for l in read(dir .. "/metrics.jsonl"):gmatch("[^\n]*\n") do assert.is_table(json.decode(l)) end
    os.remove(filler)
    status, text = run{echo, "--out", dir, "--resume", table.unpack(eargs)}
    assert.equal(0, status, text)
    assert.equal(read(ref .. "/metrics.jsonl"), read(dir .. "/metrics.jsonl"))
    assert.same(json.read_file(ref .. "/results.json").final, json.read_file(dir .. "/results.json").final)
  end)

  it("SIGTERM on a full disk keeps the last good checkpoint", function()
    local why
    disk, why = mount_disk()
    if not disk then
      pending("skipped: " .. why)
      return
    end
    local eargs = {"--steps", "40", "--sleep", "0.1", "--checkpoint-every", "5", "--seed", "4"}
    local ref = tmp .. "/term-ref"
    local status, text = run{echo, "--out", ref, "--steps", "40", "--checkpoint-every", "5",
                             "--seed", "4"}
    assert.equal(0, status, text)
    local dir = disk .. "/run"
    local log = tmp .. "/term.log"
    local pid = start({echo, "--out", dir, table.unpack(eargs)}, log)
    assert.is_true(wait_until(function() return count_lines(dir .. "/metrics.jsonl") >= 6 end, 20))
    local good = read(dir .. "/checkpoint.nmc")
    assert.truthy(good)
    local filler = fill(disk)
    nm.sys.kill(pid, "TERM")
    status = wait(pid)
    text = read(log)
    assert.are_not.equal(0, status)
    assert.falsy(text:find("traceback", 1, true), text)
    assert.truthy(read(dir .. "/checkpoint.nmc") or read(dir .. "/checkpoint.nmc.1"))
    assert.are_not.equal("finished", json.read_file(dir .. "/results.json").status)
    os.remove(filler)
    status, text = run{echo, "--out", dir, "--resume", table.unpack(eargs)}
    assert.equal(0, status, text)
    assert.truthy(text:find("resuming from", 1, true), text)
    assert.equal(read(ref .. "/metrics.jsonl"), read(dir .. "/metrics.jsonl"))
  end)
end)
