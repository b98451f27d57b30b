-- The experiment harness: nm.json, nm.cli, nm.results, nm.checkpoint,
-- nm.progress, nm.plot, nm.sweep and the OS functions under them
-- (nm.sys.atomic_write, nm.crc32, nm.sys.spawn, ...). Experiments run as
-- subprocesses of ./neuromic, with spec/fixtures/echo_experiment.lua as
-- the experiment.

local nm = require "neuromic"
local json = require "nm.json"
local cli = require "nm.cli"
local results = require "nm.results"
local checkpoint = require "nm.checkpoint"
local progress = require "nm.progress"
local plot = require "nm.plot"
local sweep = require "nm.sweep"

local root = NEUROMIC_ROOT or "."
local exe = os.getenv("NEUROMIC_EXE") or (root .. "/neuromic")   -- make sanitize sets it
local echo = root .. "/spec/fixtures/echo_experiment.lua"
local sweep_script = root .. "/experiments/sweep.lua"

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns stdout, stderr, exit status.
local function sh(cmd)
  local errf = os.tmpname()
  local p = assert(io.popen("(" .. cmd .. ") 2>" .. q(errf)))
  local out = p:read("a")
  local _, _, rc = p:close()
  local f = io.open(errf, "rb")
  local err = f:read("a")
  f:close()
  os.remove(errf)
  return out, err, rc
end

local function run_nm(args)
  local parts = {}
  for i, a in ipairs(args) do parts[i] = q(a) end
  return sh(q(exe) .. " " .. table.concat(parts, " "))
end

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

local function listdir(dir)
  local out = sh("ls -A " .. q(dir))
  local names = {}
  for name in out:gmatch("[^\n]+") do names[#names + 1] = name end
  table.sort(names)
  return names
end

local function count_lines(path)
  local s = read(path)
  if not s then return 0 end
  local n = 0
  for _ in s:gmatch("\n") do n = n + 1 end
  return n
end

local tmp
setup(function()
  tmp = (sh("mktemp -d /tmp/nm_harness_XXXXXX")):gsub("%s+$", "")
end)
teardown(function()
  if tmp and tmp:match("^/tmp/nm_harness_") then os.execute("rm -rf " .. q(tmp)) end
end)

-- Waits (up to `limit` seconds) until pred() is true.
local function wait_until(pred, limit)
  local t0 = nm.sys.clock()
  while not pred() do
    if nm.sys.clock() - t0 > limit then return false end
    nm.sys.sleep(0.01)
  end
  return true
end

describe("nm system functions", function()
  it("crc32 matches the standard check value and continues across pieces", function()
    assert.equal(0xCBF43926, nm.crc32("123456789"))
    assert.equal(0, nm.crc32(""))
    assert.equal(nm.crc32("hello world"), nm.crc32(" world", nm.crc32("hello")))
    assert.has_error(function() nm.crc32("x", -1) end)
  end)

  it("clock is monotonic and sleep sleeps", function()
    local t0 = nm.sys.clock()
    assert.equal(0, nm.sys.sleep(0.02))
    assert.is_true(nm.sys.clock() - t0 >= 0.019)
    assert.is_boolean(nm.sys.isatty(2))
    assert.is_true(nm.sys.getpid() > 0)
  end)

  it("atomic_write replaces a file, keeps a backup on request, leaves no temporaries", function()
    local d = tmp .. "/atomic"
    nm.sys.mkdir(d .. "/x/y")           -- parents created
    nm.sys.mkdir(d .. "/x/y")           -- existing: fine
    nm.sys.atomic_write(d .. "/f", "one")
    nm.sys.atomic_write(d .. "/f", "two", d .. "/f.bak")
    assert.equal("two", read(d .. "/f"))
    assert.equal("one", read(d .. "/f.bak"))
    -- failing rename to a backup in a missing directory: an error naming
    -- the file, the old contents kept, and no temporary file left
    local ok, err = pcall(nm.sys.atomic_write, d .. "/f", "three", d .. "/missing/f.bak")
    assert.is_false(ok)
    assert.truthy(err:find(d .. "/f", 1, true))
    assert.equal("two", read(d .. "/f"))
    assert.same({"f", "f.bak", "x"}, listdir(d))
    ok, err = pcall(nm.sys.atomic_write, d .. "/nodir/f", "x")
    assert.is_false(ok)
    assert.truthy(err:find("cannot write '" .. d .. "/nodir/f'", 1, true))
    assert.has_error(function() nm.sys.mkdir(d .. "/f/sub") end)
  end)

  it("spawn and wait report exit status and signals", function()
    local pid = nm.sys.spawn({"sh", "-c", "exit 7"})
    local done, status, sig = nm.sys.wait(pid)
    assert.equal(pid, done)
    assert.equal(7, status)
    assert.is_nil(sig)
    pid = nm.sys.spawn({"sleep", "5"})
    assert.is_nil((nm.sys.wait(pid, true)))           -- still running
    assert.is_true(nm.sys.kill(pid, "KILL"))
    done, status, sig = nm.sys.wait(pid)
    assert.equal(128 + 9, status)
    assert.equal("SIGKILL", sig)
    local log = tmp .. "/spawn.log"
    pid = nm.sys.spawn({"sh", "-c", "echo out; echo err >&2"}, log)
    nm.sys.wait(pid)
    assert.equal("out\nerr\n", read(log))
    assert.has_error(function() nm.sys.spawn({"/nonexistent/program"}) end,
                     "spawn: cannot start '/nonexistent/program' (No such file or directory)")
    assert.has_error(function() nm.sys.spawn({}) end)
  end)

  it("the stop handler records SIGTERM instead of dying", function()
    nm.sys.install_stop_handler()
    assert.is_false(nm.sys.stop_requested())
    nm.sys.kill(nm.sys.getpid(), "TERM")
    local stop, name, sig = nm.sys.stop_requested()
    nm.sys.clear_stop()
    nm.sys.remove_stop_handler()
    assert.is_true(stop)
    assert.equal("SIGTERM", name)
    assert.equal(15, sig)
    assert.is_false(nm.sys.stop_requested())
  end)
end)

describe("nm.json", function()
  it("encodes known values with sorted keys", function()
    assert.equal('{"a":1,"b":[1,2,3],"c":"x","d":true,"e":null}',
                 json.encode({c = "x", a = 1, b = {1, 2, 3}, d = true, e = json.null}))
    assert.equal("0.1", json.encode(0.1))
    assert.equal("3.0", json.encode(3.0))
    assert.equal("3", json.encode(3))
    assert.equal("-0.0", json.encode(-0.0))
    assert.equal("0.3333333333333333", json.encode(1 / 3))      -- 16 digits suffice
    assert.equal("0.30000000000000004", json.encode(0.1 + 0.2))  -- 17 needed
    assert.equal("1e+300", json.encode(1e300))
    assert.equal("[null,null,null]", json.encode({0 / 0, math.huge, -math.huge}))
    assert.equal('"a\\"b\\\\c\\n\\t\\u0001"', json.encode('a"b\\c\n\t\1'))
    assert.equal("[]", json.encode({}))
    assert.equal("{}", json.encode(json.object()))
    assert.equal('{"1":"a","3":"c"}', json.encode({[1] = "a", [3] = "c"}))
    assert.equal('{\n  "a": [\n    1\n  ]\n}', json.encode({a = {1}}, {indent = 2}))
    assert.equal("[[1.0,2.0],[3.0,4.0]]", json.encode(nm.tensor({{1, 2}, {3, 4}})))
  end)

  it("rejects what JSON cannot hold", function()
    local t = {}
    t.self = t
    assert.has_error(function() json.encode(t) end, "json.encode: cycle at $.self")
    assert.has_error(function() json.encode({f = print}) end, "json.encode: cannot encode a function at $.f")
    assert.has_error(function() json.encode({[1] = 1, x = {[true] = 1, [{}] = 2}}) end)
  end)

  it("round-trips doubles bit-exactly and keeps integer/float subtypes", function()
    local g = nm.generator(11)
    for i = 1, 300 do
      local x = g:normal() * 10.0 ^ g:integer(-300, 300)
      local y = json.decode(json.encode(x))
      assert.equal(string.pack("<d", x), string.pack("<d", y), "value " .. i)
    end
    for _, x in ipairs{0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 2 ^ 53, 0.1 + 0.2} do
      assert.equal(string.pack("<d", x), string.pack("<d", json.decode(json.encode(x))))
    end
    assert.equal("integer", math.type(json.decode("42")))
    assert.equal("float", math.type(json.decode("42.0")))
    assert.equal(math.mininteger, json.decode(json.encode(math.mininteger)))
    assert.equal("float", math.type(json.decode("123456789012345678901234")))
    local v = {a = {1, 2.5, "x", {b = false}}, c = "é\0", d = {}}
    assert.same(v, json.decode(json.encode(v)))
  end)

  it("decodes escapes, unicode and surrogate pairs", function()
    assert.equal("é😀/\n", json.decode('"\\u00e9\\ud83d\\ude00\\/\\n"'))
    assert.equal(json.null, json.decode("null"))
    assert.is_true(json.decode("null", {null = 0 / 0}) ~= json.decode("null", {null = 0 / 0}))
    assert.same({1, 2}, json.decode(" [ 1 ,\n 2 ] "))
  end)

  it("names the byte offset and line of malformed input", function()
    local cases = {
      {'{"a":}', "json.decode: unexpected character at byte 5 (line 1)"},
      {"[1,2", "json.decode: expected ',' or ']' at byte 4 (line 1)"},
      {"01", "json.decode: malformed number (leading zero) at byte 0 (line 1)"},
      {"1.", "json.decode: malformed number (no digits after '.') at byte 1 (line 1)"},
      {'"abc', "json.decode: unterminated string at byte 0 (line 1)"},
      {"[1]\n x", "json.decode: trailing characters after the value at byte 5 (line 2)"},
      {'"\\ud800"', "json.decode: unpaired surrogate in \\u escape at byte 1 (line 1)"},
      {"", "json.decode: unexpected end of input at byte 0 (line 1)"},
    }
    for _, c in ipairs(cases) do
      assert.has_error(function() json.decode(c[1]) end, c[2])
    end
  end)

  it("reads JSON lines, skipping only a cut-off last line", function()
    local p = tmp .. "/lines.jsonl"
    write(p, '{"a":1}\n\n{"a":2}\n{"a":')
    local rows, warning = json.read_lines(p)
    assert.same({{a = 1}, {a = 2}}, rows)
    assert.equal(p .. ": ignoring an incomplete last line 4 at byte 17 "
                 .. "(" .. p .. ": unexpected end of input at byte 22 (line 4))", warning)
    write(p, '{"a":1}\n{"a" 2}\n{"a":3}\n')
    assert.has_error(function() json.read_lines(p) end, p .. ": expected ':' at byte 13 (line 2)")
  end)
end)

describe("nm.cli", function()
  local spec = {
    name = "demo",
    description = "A demo.",
    jobs = true, shard = true,
    options = {
      {"epochs", "int", 10, "training epochs", quick = 1},
      {"lr", "number", 0.05, "learning rate", min = 0},
      {"rule", "string", "bp", "learning rule", choices = {"bp", "fa", "dfa"}},
      {"hidden", "list", {256}, "hidden sizes"},
      {"plot", "bool", true, "write plots"},
      {name = "batch_size", type = "int", default = 100, help = "minibatch size"},
    },
  }

  it("fills defaults and the common options", function()
    local o = cli.try_parse({}, spec)
    assert.same({batch_size = 100, epochs = 10, hidden = {256}, jobs = 1, lr = 0.05,
                 out = "results/demo", plot = true, quick = false, resume = false,
                 rule = "bp", seed = 1, threads = cli.cores()}, cli.plain(o))
    assert.is_true(cli.cores() >= 1)
    -- a spec may give --threads and --jobs other defaults
    local other = {name = "other", jobs = 3, threads = 1, options = {}}
    local o2 = cli.try_parse({}, other)
    assert.equal(1, o2.threads)
    assert.equal(3, o2.jobs)
    assert.equal("float", math.type(o.lr))
    assert.equal("demo", o._name)
  end)

  it("parses every form; --quick values yield to explicit ones", function()
    local o = cli.try_parse({"--quick", "--lr=0.1", "--hidden", "10,20", "--no-plot",
                             "--batch-size", "5", "--seed", "7", "--shard", "2/3",
                             "--out", "x/y", "--resume", "--jobs=2", "--rule", "fa",
                             "--threads", "3"}, spec)
    assert.same({batch_size = 5, epochs = 1, hidden = {10, 20}, jobs = 2, lr = 0.1,
                 out = "x/y", plot = false, quick = true, resume = true, rule = "fa",
                 seed = 7, shard = {index = 2, count = 3}, threads = 3}, cli.plain(o))
    assert.is_true(o._explicit.lr)
    assert.is_nil(o._explicit.epochs)
    o = cli.try_parse({"--quick", "--epochs", "4", "--plot=false", "--lr", "-0"}, spec)
    assert.equal(4, o.epochs)
    assert.is_false(o.plot)
  end)

  it("rejects bad input with exit code 2 and a clear message", function()
    local cases = {
      {{"--epochs", "x"}, "demo: option '--epochs' expects an integer, got 'x' (try --help)"},
      {{"--epochs", "2.5"}, "demo: option '--epochs' expects an integer, got '2.5' (try --help)"},
      {{"--foo"}, "demo: unknown option '--foo' (try --help)"},
      {{"-x"}, "demo: unknown option '-x' (try --help)"},
      {{"--rule", "zz"}, "demo: option '--rule' must be one of bp,fa,dfa, got 'zz' (try --help)"},
      {{"--lr", "-1"}, "demo: option '--lr' must be >= 0, got '-1' (try --help)"},
      {{"--lr", "nan"}, "demo: option '--lr' expects a number, got 'nan' (try --help)"},
      {{"--shard", "4/3"}, "demo: option '--shard' expects I/N with 1 <= I <= N, got '4/3' (try --help)"},
      {{"--epochs"}, "demo: option '--epochs' needs a value (try --help)"},
      {{"stray"}, "demo: unexpected argument 'stray' (try --help)"},
      {{"--no-lr"}, "demo: unknown option '--no-lr' (try --help)"},
      {{"--plot=maybe"}, "demo: option '--plot' expects true or false, got 'maybe' (try --help)"},
      {{"--hidden", "1,a"}, "demo: option '--hidden' item 'a' expects an integer, got '1,a' (try --help)"},
      {{"--jobs", "0"}, "demo: option '--jobs' must be >= 1, got '0' (try --help)"},
    }
    for _, c in ipairs(cases) do
      local o, msg, code = cli.try_parse(c[1], spec)
      assert.is_nil(o)
      assert.equal(c[2], msg)
      assert.equal(2, code)
    end
  end)

  -- Regression: every script used to accept --jobs and --shard, and most
  -- ignored them.
  it("offers --jobs and --shard only to scripts that declare them", function()
    local plain = {name = "plain", options = {{"epochs", "int", 10, "training epochs"}}}
    local o = cli.try_parse({}, plain)
    assert.same({epochs = 10, out = "results/plain", quick = false, resume = false, seed = 1,
                 threads = cli.cores()}, cli.plain(o))
    for _, args in ipairs{{"--jobs", "2"}, {"--shard", "1/2"}} do
      local none, msg, code = cli.try_parse(args, plain)
      assert.is_nil(none)
      assert.equal("plain: unknown option '" .. args[1] .. "' (try --help)", msg)
      assert.equal(2, code)
    end
    local _, usage = cli.try_parse({"--help"}, plain)
    assert.falsy(usage:find("--jobs", 1, true))
    assert.falsy(usage:find("--shard", 1, true))
    o = cli.try_parse({"--jobs", "3"}, {name = "j", jobs = true})
    assert.equal(3, o.jobs)
    assert.is_nil(cli.try_parse({"--shard", "1/2"}, {name = "j", jobs = true}))
  end)

  it("gives a grid script --jobs, --shard and --merge DIR..., and its own options back as arguments", function()
    local g = {name = "g", grid = true, options = {
      {"lr", "number", 0.1, "rate"}, {"n", "int", 3, "count", quick = 1}, {"act", "string", "relu", "act"},
      {"plot", "bool", true, "plots"}, {"sizes", "list", {256, 128}, "sizes", item = "int"},
      {"tag", "string", nil, "tags", multi = true}}}
    local o = cli.try_parse({"--merge", "a", "b/c", "--out", "m", "--jobs", "2"}, g)
    assert.same({"a", "b/c"}, o._args)
    assert.is_true(o.merge)
    assert.equal(2, o.jobs)
    assert.same({index = 1, count = 3}, cli.try_parse({"--shard", "1/3"}, g).shard)
    for _, case in ipairs{
      {{"--merge"}, "g: --merge needs the shard folders (--merge DIR1 DIR2 ... --out DIR) (try --help)"},
      {{"x"}, "g: unexpected argument 'x' (shard folders go after --merge) (try --help)"},
      {{"--merge", "x", "--shard", "1/2"}, "g: --merge and --shard exclude each other (try --help)"},
    } do
      local none, msg, code = cli.try_parse(case[1], g)
      assert.is_nil(none)
      assert.same({case[2], 2}, {msg, code})
    end
    -- cli.argv: the values of opts, read back by the script, are the same values
    o = cli.try_parse({"--quick", "--lr", "0.30000000000000004", "--no-plot", "--sizes", "7,8",
                       "--tag", "x", "--tag", "y,z", "--act", "a b"}, g)
    local argv = cli.argv(o, g, {act = true})
    assert.same({"--lr=0.30000000000000004", "--n=1", "--plot=false", "--sizes=7,8", "--tag=x", "--tag=y,z"},
                argv)
    local back = cli.try_parse(argv, g)
    for _, k in ipairs{"lr", "n", "plot", "sizes", "tag"} do assert.same(o[k], back[k], k) end
    assert.equal("relu", back.act)
  end)

  it("builds --help from the spec", function()
    local o, usage, code = cli.try_parse({"--help"}, spec)
    assert.is_nil(o)
    assert.equal(0, code)
    assert.truthy(usage:find("  --epochs N        training epochs [default 10; --quick: 1]", 1, true))
    assert.truthy(usage:find("  --[no-]plot       write plots [default true]", 1, true))
    assert.truthy(usage:find("  --batch-size N    minibatch size [default 100]", 1, true))
    assert.truthy(usage:find("(one of bp,fa,dfa)", 1, true))
    assert.truthy(usage:find("--out DIR    output directory [default results/demo]", 1, true))
    assert.truthy(usage:find("--shard I/N", 1, true))
  end)

  it("refuses broken specs", function()
    assert.has_error(function() cli.try_parse({}, {options = {{"x", "float", 1, ""}}}) end)
    assert.has_error(function() cli.try_parse({}, {options = {{"seed", "int", 1, ""}}}) end)
  end)

  it("exits 0 for --help and 2 for bad options in a real experiment", function()
    local out, err, rc = run_nm{echo, "--help"}
    assert.equal(0, rc)
    assert.truthy(out:find("^usage: ./neuromic "))
    assert.truthy(out:find("--steps N", 1, true))
    assert.equal("", err)
    out, err, rc = run_nm{echo, "--bogus"}
    assert.equal(2, rc)
    assert.equal("", out)
    assert.equal("echo: unknown option '--bogus' (try --help)\n", err)
    _, err, rc = run_nm{echo, "--steps", "abc"}
    assert.equal(2, rc)
    assert.equal("echo: option '--steps' expects an integer, got 'abc' (try --help)\n", err)
  end)
end)

describe("nm.results", function()
  it("writes metrics.jsonl, metrics.csv and results.json for a run", function()
    local dir = tmp .. "/run1"
    local _, err, rc = run_nm{echo, "--out", dir, "--a", "3", "--seed", "2", "--quick"}
    assert.equal(0, rc, err)
    local res, rows = results.read(dir)
    assert.equal("finished", res.status)
    assert.equal("echo", res.experiment)
    assert.equal(nm.version, res.version)
    assert.equal(nm.blas_core(), res.blas_core)        -- the same environment's kernels
    assert.equal("none", res.dataset)
    assert.equal(2, res.seed)
    assert.is_true(res.quick)
    assert.same({label = "x", sum = 9, value = 32}, res.final)
    assert.equal(2, res.options.steps)                 -- the --quick value
    assert.truthy(res.started:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$"))
    assert.truthy(res.finished:match("Z$"))
    assert.equal(2, #rows)
    assert.same({1, 3}, {rows[1].step, rows[1].sum})
    local g = nm.generator(2)
    assert.equal(g:uniform(), rows[1].u)
    assert.equal(g:uniform(), rows[2].u)
    local csv = read(dir .. "/metrics.csv")
    assert.equal(string.format("step,sum,u\n1,3,%s\n2,9,%s\n", json.number_text(rows[1].u),
                               json.number_text(rows[2].u)), csv)
    assert.same({"metrics.csv", "metrics.jsonl", "results.json"}, listdir(dir))   -- checkpoint removed
  end)

  it("run:info sets a top-level field of results.json (was hidden by a field)", function()
    local dir = tmp .. "/run_info"
    local opts = cli.try_parse({"--out", dir}, {name = "inproc"})
    local run = results.open(opts, {quiet = true, dataset = "before"})
    run:info("dataset", "after")
    run:finish()
    assert.equal("after", json.read_file(dir .. "/results.json").dataset)
  end)

  it("grows the CSV header when a later row brings a new key", function()
    local dir = tmp .. "/run2"
    local opts = cli.try_parse({"--out", dir}, {name = "inproc"})
    local run = results.open(opts, {quiet = true, nonfinite = {loss = true}})
    run:log{epoch = 1, loss = 0.5}
    run:log{epoch = 2, loss = 0 / 0, acc = 0.75, note = 'a,"b"'}
    run:set("best", 0.75)
    run:finish()
    -- header: the first row's keys, then the later ones as they appear
    assert.equal('epoch,loss,acc,note\n1,0.5,,\n2,nan,0.75,"a,""b"""\n', read(dir .. "/metrics.csv"))
    assert.equal('{"epoch":1,"loss":0.5}\n{"acc":0.75,"epoch":2,"loss":null,"note":"a,\\"b\\""}\n',
                 read(dir .. "/metrics.jsonl"))
    local res = json.read_file(dir .. "/results.json")
    assert.equal(0.75, res.final.best)
    assert.equal(2, res.metrics_rows)
  end)

  it("stops on SIGTERM with a checkpoint and resumes to identical files", function()
    local args = {"--steps", "8", "--sleep", "0.05", "--seed", "5"}
    local ref = tmp .. "/ref"
    local _, err, rc = run_nm{echo, "--out", ref, table.unpack(args)}
    assert.equal(0, rc, err)

    local dir = tmp .. "/stopped"
    local cmd = {exe, echo, "--out", dir, table.unpack(args)}
    local pid = nm.sys.spawn(cmd, tmp .. "/stopped.log")
    assert.is_true(wait_until(function() return count_lines(dir .. "/metrics.jsonl") >= 3 end, 10))
    nm.sys.kill(pid, "TERM")
    local _, status = nm.sys.wait(pid)
    assert.equal(128 + 15, status)
    local res = json.read_file(dir .. "/results.json")
    assert.equal("stopped", res.status)
    assert.truthy(read(tmp .. "/stopped.log"):find("stopped by SIGTERM; continue with --resume", 1, true))
    local rows_at_stop = res.metrics_rows
    assert.is_true(rows_at_stop >= 3 and rows_at_stop < 8)

    _, err, rc = run_nm{echo, "--out", dir, "--resume", table.unpack(args)}
    assert.equal(0, rc, err)
    assert.truthy(err:find("resuming from " .. dir .. "/checkpoint.nmc", 1, true))
    assert.equal(read(ref .. "/metrics.jsonl"), read(dir .. "/metrics.jsonl"))
    assert.equal(read(ref .. "/metrics.csv"), read(dir .. "/metrics.csv"))
    local a, b = json.read_file(ref .. "/results.json"), json.read_file(dir .. "/results.json")
    assert.same(a.final, b.final)
    assert.equal(1, b.resumed)

    -- a finished run with --resume has nothing to do; other options are refused
    _, err, rc = run_nm{echo, "--out", dir, "--resume", table.unpack(args)}
    assert.equal(0, rc)
    assert.truthy(err:find("already finished", 1, true))
    _, err, rc = run_nm{echo, "--out", dir, "--resume", "--steps", "9", "--sleep", "0.05", "--seed", "5"}
    assert.are_not.equal(0, rc)
    assert.truthy(err:find("--steps 8 then, 9 now", 1, true))
  end)

  it("refuses to resume from a checkpoint written with other options", function()
    local dir = tmp .. "/other"
    local pid = nm.sys.spawn({exe, echo, "--out", dir, "--steps", "50", "--sleep", "0.02"}, tmp .. "/other.log")
    assert.is_true(wait_until(function() return count_lines(dir .. "/metrics.jsonl") >= 2 end, 10))
    nm.sys.kill(pid, "INT")
    local _, status = nm.sys.wait(pid)
    assert.equal(128 + 2, status)
    local _, err, rc = run_nm{echo, "--out", dir, "--resume", "--steps", "50", "--sleep", "0.02", "--a", "2"}
    assert.are_not.equal(0, rc)
    assert.truthy(err:find(dir .. "/checkpoint.nmc was written with other options (--a 1 then, 2 now)", 1, true))
    -- --resume without a checkpoint starts afresh
    local fresh = tmp .. "/fresh"
    _, err, rc = run_nm{echo, "--out", fresh, "--resume", "--steps", "2"}
    assert.equal(0, rc)
    assert.truthy(err:find("no checkpoint, starting from the beginning", 1, true))
    assert.equal(2, count_lines(fresh .. "/metrics.jsonl"))
  end)
end)

describe("nm.checkpoint", function()
  local function bits(t)
    local sizes = {}
    for d = 1, t:dim() do sizes[d] = t:size(d) end
    return t:dtype() .. ":" .. table.concat(sizes, "x") .. ":" .. t:tobytes()
  end

  local function sample_state()
    local g = nm.generator(42)
    local a = nm.zeros(3, 5)                         -- float32
    a:normal(g, 0, 1)
    a:set(1, 1, 0 / 0)
    a:set(1, 2, -0.0)
    a:set(2, 3, math.huge)
    a:set(3, 4, 1e-40)                               -- float32 subnormal
    local b = nm.zeros(4, 3, 2, "float64")
    b:uniform(g, -1, 1)
    b:set(1, 1, 1, 5e-324)
    local c = nm.zeros(2, 2, 2, 2, "float64")
    c:normal(g, 0, 1)
    g:normal()                                       -- leave a cached normal deviate
    return {
      step = 1234, lr = 0.1, tiny = 5e-324, neg0 = -0.0, nan = 0 / 0, big = math.maxinteger,
      name = "run\0with\255bytes", flags = {true, false, true},
      weights = {a, b:transpose(1, 3), c}, rng = g, rngs = {nm.generator(1), nm.generator(2)},
      [7] = "seven", [0.5] = "half", [true] = "yes",
      nested = {deeper = {deepest = {1, 2.5, "three"}}},
    }
  end

  it("round-trips numbers, strings, tensors of both dtypes and generators bit-exactly", function()
    local s = sample_state()
    local bytes = checkpoint.encode(s)
    local r = checkpoint.decode(bytes, "mem")
    assert.equal(1234, r.step)
    assert.equal("integer", math.type(r.step))
    assert.equal(math.maxinteger, r.big)
    for _, k in ipairs{"lr", "tiny", "neg0", "nan"} do
      assert.equal(string.pack("<d", s[k]), string.pack("<d", r[k]), k)
      assert.equal("float", math.type(r[k]))
    end
    assert.equal(s.name, r.name)
    assert.same(s.flags, r.flags)
    assert.same(s.nested, r.nested)
    assert.equal("seven", r[7])
    assert.equal("half", r[0.5])
    assert.equal("yes", r[true])
    for i = 1, 3 do assert.equal(bits(s.weights[i]), bits(r.weights[i])) end
    assert.equal("float32", r.weights[1]:dtype())
    assert.equal("float64", r.weights[2]:dtype())
    assert.same({2, 3, 4}, {r.weights[2]:size(1), r.weights[2]:size(2), r.weights[2]:size(3)})
    -- generators continue exactly where the saved ones were
    for _ = 1, 5 do assert.equal(s.rng:normal(), r.rng:normal()) end
    assert.equal(s.rngs[2]:uniform(), r.rngs[2]:uniform())
    -- the same state always encodes to the same bytes
    assert.equal(bytes, checkpoint.encode(checkpoint.decode(bytes)))
  end)

  it("refuses values it cannot store", function()
    assert.has_error(function() checkpoint.encode({f = print}) end,
                     "checkpoint.save: cannot store a function at state.f")
    local t = {}
    t.loop = {t}
    assert.has_error(function() checkpoint.encode(t) end, "checkpoint.save: cycle at state.loop.1")
  end)

  it("keeps the previous checkpoint and falls back to it when the latest is damaged", function()
    local d = tmp .. "/ckpt"
    nm.sys.mkdir(d)
    local path = d .. "/state.nmc"
    local big = nm.zeros(100, 100, "float64")       -- 80,000 bytes: many CRC blocks
    big:normal(nm.generator(3), 0, 1)
    checkpoint.save(path, {step = 1, w = big})
    checkpoint.save(path, {step = 2, w = big})
    assert.same({"state.nmc", "state.nmc.1"}, listdir(d))   -- no temporaries left
    assert.equal(2, checkpoint.load(path).step)

    local good = read(path)
    -- corrupt one byte deep inside the payload
    local at = 50000
    write(path, good:sub(1, at) .. string.char((good:byte(at + 1) + 1) % 256) .. good:sub(at + 2))
    local ok, err = pcall(checkpoint.decode, read(path), path)
    assert.is_false(ok)
    local lo, hi = err:match("checksum mismatch in bytes (%d+)%-(%d+)$")
    assert.truthy(lo, err)
    assert.is_true(tonumber(lo) <= at and at <= tonumber(hi))
    assert.equal(path .. ": ", err:sub(1, #path + 2))
    local warnings = {}
    local st, from = checkpoint.load(path, {warn = function(m) warnings[#warnings + 1] = m end})
    assert.equal(1, st.step)
    assert.equal(path .. ".1", from)
    assert.equal(bits(big), bits(st.w))
    assert.equal(1, #warnings)
    assert.truthy(warnings[1]:find(path .. ": checksum mismatch in bytes", 1, true))
    assert.truthy(warnings[1]:find("using the previous checkpoint " .. path .. ".1", 1, true))

    -- truncation is named with the byte where the file ends
    write(path, good:sub(1, 1000))
    ok, err = pcall(checkpoint.decode, read(path), path)
    assert.is_false(ok)
    assert.equal(string.format("%s: truncated at byte 1000 (expected %d bytes)", path, #good), err)
    warnings = {}
    st = checkpoint.load(path, {warn = function(m) warnings[#warnings + 1] = m end})
    assert.equal(1, st.step)
    assert.truthy(warnings[1]:find("truncated at byte 1000", 1, true))

    -- other framing damage
    ok, err = pcall(checkpoint.decode, "NOTACKPT" .. good:sub(9), path)
    assert.equal(path .. ": not a neuromic checkpoint (bad magic at byte 0)", err)
    ok, err = pcall(checkpoint.decode, good:sub(1, 20), path)
    assert.equal(path .. ": truncated at byte 20 (header needs 32 bytes)", err)
    ok, err = pcall(checkpoint.decode, good .. "x", path)
    assert.equal(string.format("%s: 1 unexpected bytes after byte %d", path, #good), err)

    -- both damaged: an error naming both files
    write(path .. ".1", "garbage")
    ok, err = pcall(checkpoint.load, path)
    assert.is_false(ok)
    assert.truthy(err:find(path .. ": truncated at byte 1000", 1, true))
    assert.truthy(err:find(path .. ".1: truncated at byte 7", 1, true))

    -- only the backup left (a crash between the two renames)
    os.remove(path)
    checkpoint.save(path .. ".1", {step = 9}, {keep = false})
    warnings = {}
    assert.equal(9, checkpoint.load(path, {warn = function(m) warnings[#warnings + 1] = m end}).step)
    assert.truthy(warnings[1]:find("is missing", 1, true))
    assert.is_nil(checkpoint.load(d .. "/none.nmc"))
  end)
end)

describe("nm.progress", function()
  local function fake_stream()
    return {text = "", write = function(self, ...) self.text = self.text .. table.concat({...}) end,
            flush = function() end}
  end

  it("renders percent, count, rate and ETA", function()
    local bar = progress.new{total = 100, label = "train", width = 60, enabled = false}
    local line = bar:render(50, 10)
    assert.equal("train [############............]  50% 50/100 5.0/s ETA 0:10", line)
    assert.equal(59, #line)
    assert.equal(59, #bar:render(50, 10, string.rep("x", 100)))   -- fits the width
    local open = progress.new{label = "steps", width = 60, enabled = false}
    assert.equal("steps 300 30.0/s 0:10", open:render(300, 10))
    assert.equal("steps 3 3.3s/it 0:10", open:render(3, 10))
    assert.equal("1:01:01", progress.clock_text(3661))
  end)

  it("draws only when enabled, throttled", function()
    local s = fake_stream()
    local quiet = progress.new{total = 10, stream = s, enabled = false}
    for i = 1, 10 do quiet:update(i) end
    quiet:finish()
    assert.equal("", s.text)
    local bar = progress.new{total = 1000, stream = s, enabled = true, interval = 3600}
    for i = 1, 999 do bar:update(i) end
    local _, draws = s.text:gsub("\r", "")
    assert.equal(1, draws)                  -- the first update only
    bar:update(1000)                        -- the last one always draws
    bar:finish()
    assert.truthy(s.text:find("100%% 1000/1000"))
    assert.equal("\n", s.text:sub(-1))
  end)
end)

describe("nm.plot", function()
  local rows = {}
  for e = 1, 10 do
    rows[#rows + 1] = {epoch = e, rule = "bp", loss = 1 / e, acc = 1 - 1 / (e + 1)}
    rows[#rows + 1] = {epoch = e, rule = "fa", loss = 2 / e, acc = 0 / 0}
  end

  local has_gnuplot = plot.gnuplot()

  it("draws learning curves as PNG and SVG", function()
    if not has_gnuplot then pending("gnuplot is not installed") return end
    local png, svg = tmp .. "/curve.png", tmp .. "/curve.svg"
    local paths = plot.curves(rows, {out = {png, svg}, x = "epoch", y = "loss", group = "rule",
                                     logy = true, title = "loss"})
    assert.same({png, svg}, paths)
    assert.equal("\137PNG\r\n\26\n", read(png):sub(1, 8))
    local text = read(svg)
    assert.truthy(text:find("<svg", 1, true))
    assert.truthy(text:find("rule=fa", 1, true))
  end)

  it("draws an image grid of receptive fields", function()
    if not has_gnuplot then pending("gnuplot is not installed") return end
    local W = nm.zeros(10, 12, "float64")
    W:normal(nm.generator(1), 0, 1)
    local p = tmp .. "/fields.png"
    assert.same({p}, plot.images(W, {out = p, shape = {3, 4}, title = "fields"}))
    assert.equal("\137PNG\r\n\26\n", read(p):sub(1, 8))
    local p2 = tmp .. "/list.svg"
    assert.same({p2}, plot.images({nm.zeros(2, 2), {{1, 0}, {0, -1}}}, {out = p2, normalize = "all"}))
    assert.has_error(function() plot.images(W, {out = p, shape = {5, 5}}) end)
  end)

  it("warns instead of failing", function()
    local paths, warning = plot.curves(rows, {out = tmp .. "/c.pdf", x = "epoch", y = "loss", quiet = true})
    assert.same({}, paths)
    assert.truthy(warning:find("use a .png or .svg file name", 1, true))
    paths, warning = plot.curves(rows, {out = tmp .. "/none.png", x = "epoch", y = "nokey", quiet = true})
    assert.same({}, paths)
    assert.truthy(warning:find("no finite values of nokey against epoch", 1, true))
    -- no gnuplot on PATH: an empty list and a warning naming the fix
    local out, err, rc = sh("PATH=/nonexistent " .. q(exe) .. [[ -e '
      local plot = require "nm.plot"
      local paths, w = plot.curves({{step = 1, y = 1}}, {out = "/tmp/never.png", y = "y"})
      print(#paths, w)']])
    assert.equal(0, rc, err)
    assert.truthy(out:find("^0\tgnuplot not found %(apt install gnuplot%-nox%); skipped /tmp/never.png"))
  end)
end)

describe("nm.sweep", function()
  it("parses grids and enumerates cells in a fixed order", function()
    assert.same({1, 2, 3, 7, 9, 10}, sweep.parse_seeds("1-3,7,9-10"))
    assert.has_error(function() sweep.parse_seeds("3-1") end, "bad seed range '3-1'")
    assert.has_error(function() sweep.parse_seeds("x") end, "bad seed 'x' (use 1-20 or 1,2,5)")
    assert.same({name = "lr", values = {"0.1", "0.2"}}, sweep.parse_set("lr=0.1,0.2"))
    assert.same({name = "hidden", values = {"256", "256,256"}}, sweep.parse_set("hidden=256;256,256"))
    assert.same({name = "batch-size", values = {"1"}}, sweep.parse_set("batch_size=1"))
    assert.has_error(function() sweep.parse_set("novalue") end)
    local cells = sweep.cells{sets = {{name = "a", values = {"1", "2"}}, {name = "b", values = {"x/y", "z"}}},
                              seeds = {5, 6}}
    assert.equal(8, #cells)
    assert.equal(0, cells[1].index)
    assert.equal("a=1,b=x_y,seed=5", cells[1].id)
    assert.equal("a=1,b=x_y,seed=6", cells[2].id)
    assert.equal("a=2,b=z,seed=6", cells[8].id)
    assert.equal('{"options":{"a":"1","b":"x/y"},"seed":5}', cells[1].key)
    local long = sweep.cells{sets = {{name = "p", values = {string.rep("v", 200)}}}, seeds = {1}}
    assert.is_true(#long[1].id <= 96)
  end)

  local function sweep_rows(dir)
    local by = {}
    for _, r in ipairs(sweep.read(dir)) do by[r.key] = r end
    return by
  end

  it("runs a grid with 2 jobs and records every cell", function()
    local dir = tmp .. "/sw"
    local _, err, rc = run_nm{sweep_script, echo, "--set", "a=1,2", "--set", "b=p,q", "--seeds", "1-2",
                              "--jobs", "2", "--out", dir, "--", "--steps", "2"}
    assert.equal(0, rc, err)
    local rows = sweep.read(dir)
    assert.equal(8, #rows)
    for _, r in ipairs(rows) do
      assert.equal(tonumber(r.options.a) * 10 + r.seed, r.results.final.value)
      assert.equal(r.options.b, r.results.final.label)
      assert.equal("finished", r.results.status)
      assert.equal(dir .. "/cells/" .. r.cell, r.dir)
    end
    local csv = read(dir .. "/sweep.csv")
    assert.truthy(csv:find("^index,cell,seed,a,b,label,sum,value\n0,\"a=1,b=p,seed=1\",1,1,p,p,3,11\n"))
    -- the same directory without --resume is refused
    _, err, rc = run_nm{sweep_script, echo, "--seeds", "1", "--out", dir}
    assert.equal(2, rc)
    assert.truthy(err:find("already holds a sweep; continue it with --resume", 1, true))
  end)

  it("resumes an interrupted sweep without redoing finished cells", function()
    local dir = tmp .. "/swi"
    local starts = tmp .. "/starts.txt"
    local pid = nm.sys.spawn({exe, sweep_script, echo, "--set", "a=1,2", "--seeds", "1-4", "--jobs", "2",
                          "--out", dir, "--", "--steps", "4", "--sleep", "0.05", "--starts", starts},
                         tmp .. "/swi.log")
    assert.is_true(wait_until(function() return count_lines(dir .. "/sweep.jsonl") >= 2 end, 20))
    nm.sys.kill(pid, "TERM")
    local _, status = nm.sys.wait(pid)
    assert.equal(128 + 15, status)
    assert.truthy(read(tmp .. "/swi.log"):find("sweep stopped by SIGTERM", 1, true))
    local before = sweep_rows(dir)
    local nbefore = 0
    for _ in pairs(before) do nbefore = nbefore + 1 end
    assert.is_true(nbefore >= 2 and nbefore < 8)

    local _, err, rc = run_nm{sweep_script, "--resume", "--out", dir}
    assert.equal(0, rc, err)
    local after = sweep.read(dir)
    assert.equal(8, #after)
    local keys = {}
    for _, r in ipairs(after) do
      assert.is_nil(keys[r.key])                          -- each cell once
      keys[r.key] = true
      assert.equal(tonumber(r.options.a) * 10 + r.seed, r.results.final.value)
      assert.equal(10 * tonumber(r.options.a), r.results.final.sum)   -- a * (1+2+3+4)
    end
    -- cells finished before the interruption were started exactly once
    local text = read(starts)
    for _, r in pairs(before) do
      local line = string.format("a=%s b=x seed=%d ", r.options.a, r.seed)
      local _, n = text:gsub(line:gsub("%p", "%%%0"), "")
      assert.equal(1, n, line)
    end
  end)

  it("splits into shards whose merge equals the unsharded sweep", function()
    local grid = {"--set", "a=1,2,3", "--seeds", "1-3"}
    local full = tmp .. "/full"
    local _, err, rc = run_nm{sweep_script, echo, "--out", full, "--jobs", "2", table.unpack(grid)}
    assert.equal(0, rc, err)
    local shard_dirs = {}
    local seen = {}
    for i = 1, 4 do
      local d = tmp .. "/shard" .. i
      shard_dirs[i] = d
      local args = {sweep_script, echo, "--out", d, "--shard", i .. "/4", table.unpack(grid)}
      _, err, rc = run_nm(args)
      assert.equal(0, rc, err)
      for _, r in ipairs(sweep.read(d)) do
        assert.equal(i - 1, r.index % 4)
        assert.is_nil(seen[r.key])
        seen[r.key] = true
      end
    end
    local merged = tmp .. "/merged"
    _, err, rc = run_nm{sweep_script, "merge", shard_dirs[1], shard_dirs[2], shard_dirs[3], shard_dirs[4],
                        "--out", merged}
    assert.equal(0, rc, err)
    local a, b = sweep_rows(full), sweep_rows(merged)
    local n = 0
    for key, r in pairs(a) do
      n = n + 1
      assert.is_table(b[key], key)
      assert.same(r.options, b[key].options)
      assert.equal(r.seed, b[key].seed)
      assert.same(r.results.final, b[key].results.final)
      assert.equal(r.index, b[key].index)
    end
    assert.equal(9, n)
    assert.equal(9, #sweep.read(merged))
    local prev = -1
    for _, r in ipairs(sweep.read(merged)) do
      assert.is_true(r.index > prev)             -- ordered by cell index
      prev = r.index
    end
    -- a missing shard is reported and the merge exits 1
    _, err, rc = run_nm{sweep_script, "merge", shard_dirs[1], shard_dirs[2], "--out", tmp .. "/partial"}
    assert.equal(1, rc)
    assert.truthy(err:find("merge: cell a=1,seed=3 (index 2) has no result; shard 3/4, not given to merge: "
                           .. "run it with --shard 3/4\n", 1, true), err)
    assert.truthy(err:find("merge: 4 problems; " .. tmp .. "/partial holds the 5 cells found", 1, true), err)
  end)

  it("records failing cells, exits 1, and retries them on resume", function()
    local dir = tmp .. "/swf"
    local _, err, rc = run_nm{sweep_script, echo, "--set", "fail=false,true", "--out", dir}
    assert.equal(1, rc)
    assert.truthy(err:find("cell fail=true,seed=1 failed (exit status 3)", 1, true))
    assert.equal(1, #sweep.read(dir))
    local fails = json.read_lines(dir .. "/failures.jsonl")
    assert.equal(1, #fails)
    assert.equal(3, fails[1].exit)
    assert.truthy(read(fails[1].log):find("failing on purpose", 1, true))
    _, err, rc = run_nm{sweep_script, "--resume", "--out", dir}
    assert.equal(1, rc)
    assert.truthy(err:find("1 already done, 1 to run", 1, true))
    local out
    out, err, rc = run_nm{sweep_script, echo, "--list", "--set", "x=1,2", "--shard", "2/2", "--out", "o"}
    assert.equal(0, rc, err)
    assert.equal("1\tx=2,seed=1\t" .. exe .. " " .. echo .. " --x=2 --seed=1 --out=o/cells/x=2,seed=1"
                 .. " --threads=" .. cli.cores() .. "\n", out)
    -- each cell gets the runner's threads shared among the cells running at once
    out, err, rc = run_nm{sweep_script, echo, "--list", "--set", "x=1", "--jobs", "2", "--threads",
                          "5", "--out", "o"}
    assert.equal(0, rc, err)
    assert.truthy(out:find(" --threads=2\n", 1, true), out)
  end)
end)
