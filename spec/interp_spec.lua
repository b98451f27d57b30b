-- The bundled interpreter ./neuromic, driven as a subprocess: options,
-- script arguments, exit status, package paths from other working
-- directories, the REPL (piped, and through a pseudo-terminal made by
-- script(1) for readline, history and Ctrl-C). Also assert.tensor_near.

local root = NEUROMIC_ROOT or "."
local exe = os.getenv("NEUROMIC_EXE") or (root .. "/neuromic")   -- make sanitize sets it

-- Single-quotes s for sh.
local function q(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

-- Runs a shell command; returns stdout+stderr and the exit code.
local function run(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"@rc=$?\""))
  local out = p:read("a")
  p:close()
  local body, rc = out:match("^(.-)@rc=(%d+)%s*$")
  return body, tonumber(rc)
end

-- Runs ./neuromic with the given shell-quoted argument string.
local function nm(args, opts)
  opts = opts or {}
  local cmd = exe .. " " .. args
  if opts.stdin then cmd = "printf '%s' " .. q(opts.stdin) .. " | " .. cmd end
  if opts.env then cmd = opts.env .. " " .. cmd end
  if opts.cwd then cmd = "cd " .. q(opts.cwd) .. " && " .. cmd end
  return run(cmd)
end

local tmpdir
local function tmpfile(name, contents)
  local path = tmpdir .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(contents)
  f:close()
  return path
end

setup(function()
  local p = assert(io.popen("mktemp -d /tmp/nm_interp_XXXXXX"))
  tmpdir = p:read("l")
  p:close()
  assert.truthy(tmpdir and #tmpdir > 0)
end)

teardown(function()
  if tmpdir then os.execute("rm -rf " .. q(tmpdir)) end
end)

describe("neuromic command line", function()
  it("-e and scripts see the module as the global nm, as the REPL does", function()
    local out, rc = nm([[-e 'io.write(tostring(nm == require "neuromic"), " ", nm.zeros(2):numel())']])
    assert.equal(0, rc, out)
    assert.equal("true 2", out)
    local script = tmpfile("uses_nm.lua", "print(nm.ones(3):sum())\n")
    out, rc = nm(q(script))
    assert.equal(0, rc, out)
    assert.equal("3.0\n", out)
  end)

  it("runs a bundled experiment by name from any folder", function()
    local out, rc = nm("echo_experiment.lua --help", {cwd = tmpdir})
    assert.are_not.equal(0, rc)       -- no such experiment: loadfile's message
    assert.truthy(out:find("cannot open echo_experiment.lua", 1, true), out)
    for _, name in ipairs{"nan_nk.lua", "nan_nk", "experiments/nan_nk.lua"} do
      out, rc = nm(name .. " --help", {cwd = tmpdir})
      assert.equal(0, rc, out)
      assert.truthy(out:find("usage: ", 1, true), out)
      assert.truthy(out:find("NK-model", 1, true), out)
    end
    -- a file of that name in the working folder wins
    tmpfile("nan_nk.lua", "print('mine')\n")
    out, rc = nm("nan_nk.lua", {cwd = tmpdir})
    assert.equal("mine\n", out)
  end)

  it("-v prints the neuromic and Lua versions", function()
    local out, rc = nm("-v")
    local version = require("neuromic").version
    assert.equal(0, rc)
    assert.truthy(out:find("neuromic " .. version, 1, true))
    assert.truthy(out:find("Lua 5.4", 1, true))
  end)

  it("--help prints the usage and exits 0; a bad option fails", function()
    local out, rc = nm("--help")
    assert.equal(0, rc)
    assert.truthy(out:find("usage:", 1, true))
    assert.truthy(out:find("-e stat", 1, true))
    out, rc = nm("-Q")
    assert.not_equal(0, rc)
    assert.truthy(out:find("unrecognized option '-Q'", 1, true))
    out, rc = nm("-e")
    assert.not_equal(0, rc)
    assert.truthy(out:find("'-e' needs argument", 1, true))
  end)

  it("-e runs statements in order, with -l in between", function()
    local out, rc = nm([[-e 'x = 20' -l nm=neuromic -e 'print(x + 1, type(nm.zeros))']])
    assert.equal(0, rc)
    assert.equal("21\tfunction\n", out)
    out, rc = nm([[-l nm.cli -e 'print(type(cli), package.loaded["nm.cli"] == cli)']])
    assert.equal(0, rc)
    assert.equal("table\ttrue\n", out)
  end)

  it("gives a script its arguments in arg and ...", function()
    local script = tmpfile("args.lua", [[
      print(arg[0], #arg, arg[1], arg[2], select("#", ...), (...))
      print(arg[-1] ~= nil)
    ]])
    local out, rc = nm(q(script) .. " one 'two words'")
    assert.equal(0, rc)
    assert.equal(script .. "\t2\tone\ttwo words\t2\tone\ntrue\n", out)
  end)

  it("leaves script options such as --help to the script", function()
    local script = tmpfile("opt.lua", "print(arg[1])\n")
    local out, rc = nm(q(script) .. " --help")
    assert.equal(0, rc)
    assert.equal("--help\n", out)
  end)

  it("exits non-zero with a traceback when a script fails", function()
    local script = tmpfile("fail.lua", [[
      local function inner() error("boom at depth") end
      local function outer() inner() end
      outer()
    ]])
    local out, rc = nm(q(script))
    assert.equal(1, rc)
    assert.truthy(out:find("fail.lua:1: boom at depth", 1, true))
    assert.truthy(out:find("stack traceback:", 1, true))
    assert.truthy(out:find("in upvalue 'inner'", 1, true)
                  or out:find("in local 'inner'", 1, true)
                  or out:find("'inner'", 1, true))
  end)

  it("exits non-zero for -e errors, syntax errors and missing scripts", function()
    local out, rc = nm([[-e 'error({})']])
    assert.equal(1, rc)
    assert.truthy(out:find("error object is a table value", 1, true))
    out, rc = nm(q(tmpfile("syntax.lua", "x = = 1\n")))
    assert.equal(1, rc)
    assert.truthy(out:find("syntax.lua:1:", 1, true))
    out, rc = nm(q(tmpdir .. "/missing.lua"))
    assert.equal(1, rc)
    assert.truthy(out:find("cannot open", 1, true))
  end)

  it("runs stdin as a script with '-' and when stdin is not a terminal", function()
    local out, rc = nm("- a b", { stdin = "print(...)\n" })
    assert.equal(0, rc)
    assert.equal("a\tb\n", out)
    out, rc = nm("", { stdin = "print(6 * 7)\n" })
    assert.equal(0, rc)
    assert.equal("42\n", out)
  end)

  it("honours LUA_INIT unless -E is given", function()
    local out, rc = nm([[-e 'print(INIT_X)']], { env = "LUA_INIT='INIT_X = 7'" })
    assert.equal(0, rc)
    assert.equal("7\n", out)
    local init = tmpfile("init.lua", "INIT_Y = 'from file'\n")
    out = nm([[-e 'print(INIT_Y)']], { env = "LUA_INIT=" .. q("@" .. init) })
    assert.equal("from file\n", out)
    out = nm([[-E -e 'print(INIT_X)']], { env = "LUA_INIT='INIT_X = 7'" })
    assert.equal("nil\n", out)
  end)
end)

describe("neuromic interrupts", function()
  -- Regression: a Ctrl-C that stopped a C kernel inside pcall used to raise
  -- "interrupted!" a second time, outside the pcall, from the pending hook.
  it("one SIGINT gives one error, caught by the pcall around the kernel", function()
    local script = tmpfile("interrupt.lua", [[
      local nm = require "neuromic"
      local t = nm.zeros(3000, 3000)
      os.execute("(sleep 0.3; kill -INT " .. nm.sys.getpid() .. ") &")
      local ok, err = pcall(function()
        for _ = 1, 100000 do t:norm(3.7) end
      end)
      print("caught", ok, err)
      for _ = 1, 1000 do local _ = t:numel() end
      print("after")
    ]])
    local out, rc = nm(q(script))
    assert.equal(0, rc, out)
    assert.truthy(out:find("caught\tfalse\t[^\n]*interrupted!"), out)
    assert.truthy(out:find("after", 1, true), out)
  end)
end)

describe("neuromic package paths", function()
  it("requires the module and lua/ packages from another directory", function()
    local out, rc = nm([[-e 'local nm = require "neuromic"
      print(nm.zeros(2, 3):numel(), package.searchpath("nm.cli", package.path))']],
      { cwd = "/tmp" })
    assert.equal(0, rc)
    assert.equal("6\t" .. root .. "/lua/nm/cli.lua\n", out)
  end)

  it("sets NEUROMIC_ROOT and puts the project dirs before the defaults", function()
    local out, rc = nm([[-e 'print(NEUROMIC_ROOT); print(package.path)']],
                       { cwd = "/" })
    assert.equal(0, rc)
    local got_root, path = out:match("^([^\n]*)\n([^\n]*)\n$")
    assert.equal(root, got_root)
    local want = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;"
                 .. root .. "/rules/?.lua;" .. root .. "/experiments/?.lua;"
    assert.equal(want, path:sub(1, #want))
    assert.truthy(path:find("/usr/share/lua/5.4/?.lua", 1, true))
  end)

  it("finds the root through a symbolic link to the executable", function()
    assert.truthy(os.execute("ln -s " .. q(exe) .. " " .. q(tmpdir .. "/nmlink")))
    local out, rc = run("cd " .. q(tmpdir) .. " && ./nmlink -e 'print(NEUROMIC_ROOT)'")
    assert.equal(0, rc)
    assert.equal(root .. "\n", out)
  end)

  it("warns, one line, when a C source of its tree is newer than itself (run make)", function()
    -- a copy of the interpreter with a csrc/ of its own: a stale build
    -- would pair the old C module with the present Lua libraries
    local tree = tmpdir .. "/stale"
    assert.truthy(os.execute("mkdir -p " .. q(tree .. "/csrc/models") .. " && cp " .. q(exe) .. " " ..
                             q(tree .. "/neuromic") .. " && ln -s " .. q(root .. "/lua") .. " " ..
                             q(tree .. "/lua") .. " && touch -d '+1 hour' " ..
                             q(tree .. "/csrc/models/nm_new.c")))
    local out, rc = run(q(tree .. "/neuromic") .. " -e 'io.write(\"ok\")' 2>&1 >/dev/null")
    assert.equal(0, rc, out)
    assert.equal("neuromic: warning: csrc/models/nm_new.c changed after this interpreter was " ..
                 "built; run make\n", out)
    -- older sources, files that are not C, or no csrc/ at all: silent
    assert.truthy(os.execute("touch -d '-1 hour' " .. q(tree .. "/csrc/models/nm_new.c") ..
                             " && touch -d '+1 hour' " .. q(tree .. "/csrc/models/notes.txt")))
    out, rc = run(q(tree .. "/neuromic") .. " -e 'io.write(\"ok\")'")
    assert.equal(0, rc, out)
    assert.equal("ok", out)
    -- and the tree under test is no stale build
    out, rc = nm([[-e 'io.write("ok")']])
    assert.equal("ok", out)
  end)

  it("loads the C modules busted needs (lfs, system, term)", function()
    local out, rc = nm([[-e 'require "lfs"; require "system"; require "term"; print "ok"']],
                       { cwd = "/tmp" })
    assert.equal(0, rc)
    assert.equal("ok\n", out)
  end)
end)

-- The CPU's instruction-set extensions from /proc/cpuinfo, as a set.
local function cpu_flags()
  local f = io.open("/proc/cpuinfo")
  if not f then return nil end
  local flags = {}
  for line in f:lines() do
    local list = line:match("^flags%s*:%s*(.*)$")
    if list then
      for flag in list:gmatch("%S+") do flags[flag] = true end
      break
    end
  end
  f:close()
  return flags
end

describe("neuromic and OpenBLAS's kernels", function()
  -- the interpreter is started without OPENBLAS_CORETYPE, as a user's shell starts it
  local function core(env)
    local out, rc = nm([[-e 'io.write(nm.blas_core())']], { env = "env -u OPENBLAS_CORETYPE " .. (env or "") })
    assert.equal(0, rc, out)
    return out:lower()
  end

  -- the kernels the CPU's features allow: "avx512", "avx2" or nil
  local function best_isa()
    local flags = cpu_flags()
    if not flags then return nil, "no /proc/cpuinfo to read the CPU's features from" end
    if flags.avx512f and flags.avx512bw and flags.avx512dq and flags.avx512vl and flags.avx512cd then
      return "avx512"
    elseif flags.avx2 and flags.fma then
      return "avx2"
    end
    return nil, "this CPU has neither AVX-512 nor AVX2 with FMA: OpenBLAS's choice stands"
  end

  it("advises the kernels the CPU's features allow in place of lesser ones", function()
    local isa, why = best_isa()
    if not isa then pending(why) return end
    local advice = require("neuromic").blas_core_advice
    if isa == "avx512" then
      -- an SSE3 fallback (a virtual "Xeon Processor") and an AVX2 family's
      -- kernels alike give way to SkylakeX's; AVX-512 kernels stay
      for _, name in ipairs { "Prescott", "Core2", "Sandybridge", "Haswell", "Zen", "unknown" } do
        assert.equal("SKYLAKEX", advice(name), name)
      end
      for _, name in ipairs { "SkylakeX", "Cooperlake", "SapphireRapids" } do
        assert.is_nil(advice(name), name)
      end
    else
      for _, name in ipairs { "Prescott", "Core2", "Sandybridge", "unknown" } do
        assert.equal("HASWELL", advice(name), name)
      end
      for _, name in ipairs { "Haswell", "Zen" } do assert.is_nil(advice(name), name) end
    end
  end)

  it("runs AVX-512 kernels on a CPU with AVX-512, AVX2 ones with AVX2 and FMA", function()
    local isa, why = best_isa()
    if not isa then pending(why) return end
    local got = core()
    if isa == "avx512" then
      assert.truthy(got == "skylakex" or got == "cooperlake" or got == "sapphirerapids", got)
    else
      for _, weak in ipairs { "prescott", "core2", "penryn", "nehalem", "sandybridge", "unknown" } do
        assert.are_not.equal(weak, got)
      end
    end
  end)

  it("keeps the kernels the user names in OPENBLAS_CORETYPE", function()
    assert.equal("prescott", core("OPENBLAS_CORETYPE=Prescott"))
  end)
end)

describe("neuromic REPL on piped input", function()
  it("prints expression values without '=' and runs statements", function()
    local out, rc = nm("-i", { stdin = table.concat({
      "1 + 1", "x = 5", "x * 2, 'two'", "nil", "print('side effect')",
      "local y = 3", "y", "",
    }, "\n") })
    assert.equal(0, rc)
    local body = out:gsub("^neuromic [^\n]*\n", "")   -- the -i banner
    assert.equal("2\n10\ttwo\nnil\nside effect\nnil\n", body)
  end)

  it("has the module as the global nm, as the README's first session uses it", function()
    local out, rc = nm("-i", { stdin = table.concat({
      "W = nm.zeros(3, 4)", "g = nm.generator(42)", "x, y = nm.randn(g, 4), nm.randn(g, 3)",
      "W:addr(0.1, y, x) == W", "(W:t() * y):size(1)", "",
    }, "\n") })
    assert.equal(0, rc, out)
    local body = out:gsub("^neuromic [^\n]*\n", "")
    assert.equal("true\n4\n", body)
  end)

  it("reads multi-line chunks and keeps going after errors", function()
    local out, rc = nm("-i", { stdin = table.concat({
      "function f(a)", "  return a * 3", "end", "f(14)",
      "for i = 1, 2 do", "print(i)", "end",
      "error('oops')", "'still here'", "",
    }, "\n") })
    assert.equal(0, rc)
    assert.truthy(out:find("\n42\n1\n2\n", 1, true))
    assert.truthy(out:find("stdin:1: oops", 1, true))
    assert.truthy(out:find("still here\n", 1, true))
  end)

  it("prints tensors with their __tostring", function()
    local out, rc = nm("-i", { stdin = "require('neuromic').zeros(2, 3)\n" })
    assert.equal(0, rc)
    assert.truthy(out:find("of size 2x3]", 1, true))
  end)

  it("reports a chunk left unfinished at the end of input", function()
    local out, rc = nm("-i", { stdin = "if true then\nprint(1)\n" })
    assert.equal(0, rc)
    assert.truthy(out:find("'end' expected", 1, true))
    assert.falsy(out:find("\n1\n", 1, true))
  end)
end)

-- readline needs a terminal: script(1) (util-linux) runs the REPL on a
-- pseudo-terminal fed from a shell pipeline.
local have_script = os.execute("command -v script >/dev/null 2>&1")

describe("neuromic REPL on a terminal", function()
  -- Strips the terminal control sequences readline writes.
  local function clean(s)
    return (s:gsub("\27%[[%d;?]*[%a]", ""):gsub("\r", ""))
  end

  -- "exec": script(1) runs its command through $SHELL -c; a shell that
  -- stays as parent (dash, CI's /bin/sh) is killed by the Ctrl-C meant for
  -- the REPL and script then exits 130.
  local function repl(feed, histfile)
    local cmd = "(" .. feed .. ") | NEUROMIC_HISTORY=" .. q(histfile)
      .. " timeout 30 script -qec " .. q("exec " .. q(exe)) .. " /dev/null"
    local out, rc = run(cmd)
    return clean(out), rc
  end

  it("interrupts a running loop with Ctrl-C and returns to the prompt", function()
    if not have_script then pending("script(1) not installed") return end
    local started = tmpdir .. "/started"
    local feed = table.concat({
      "printf '%s\\n' " .. q("io.open('" .. started .. "', 'w'):close() while true do end"),
      "i=0; while [ ! -e " .. q(started) .. " ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done",
      "sleep 0.2", [[printf '\003']], "sleep 0.3",
      [[printf '"after " .. 1 + 1\n']], "sleep 0.3",
      [[printf 'do\n']], "sleep 0.2", [[printf '\003']], "sleep 0.2",
      [[printf '"fresh"\n']], "sleep 0.3", [[printf '\004']],
    }, "; ")
    local out, rc = repl(feed, tmpdir .. "/hist1")
    assert.equal(0, rc)
    assert.truthy(out:find("interrupted!", 1, true))
    assert.truthy(out:find("\nafter 2\n", 1, true))
    -- Ctrl-C at the continuation prompt dropped the unfinished 'do'.
    assert.truthy(out:find(">> ^C\n", 1, true))
    assert.truthy(out:find("\nfresh\n", 1, true))
  end)

  it("keeps history across sessions, bounded in length", function()
    if not have_script then pending("script(1) not installed") return end
    local hist = tmpdir .. "/hist2"
    local f = assert(io.open(hist, "w"))
    for i = 1, 1500 do f:write("old_line_", i, "\n") end
    f:close()
    local out, rc = repl([[printf 'answer = 40 + 2\n'; sleep 0.3; printf '\004']], hist)
    assert.equal(0, rc)
    -- entries are kept with a "#<time>" line before each new one
    local lines = {}
    for l in io.lines(hist) do
      if not l:match("^#%d+$") then lines[#lines + 1] = l end
    end
    assert.equal(1000, #lines)
    assert.equal("answer = 40 + 2", lines[#lines])
    -- A new session recalls the line with the Up arrow.
    out, rc = repl([[printf '\033[A\n'; sleep 0.3; printf 'answer\n'; sleep 0.3; printf '\004']], hist)
    assert.equal(0, rc)
    assert.truthy(out:find("\n42\n", 1, true))
  end)
end)

describe("neuromic REPL help and printing, on a terminal", function()
  local function clean(s)
    return (s:gsub("\27%[[%d;?]*[%a]", ""):gsub("\r", ""))
  end
  -- Types each line (a pause after each), then Ctrl-D; returns the screen.
  local function session(lines, histfile)
    local feed = {}
    for _, l in ipairs(lines) do
      feed[#feed + 1] = "printf '%s\\n' " .. q(l)
      feed[#feed + 1] = "sleep 0.15"
    end
    feed[#feed + 1] = [[printf '\004']]
    local cmd = "(" .. table.concat(feed, "; ") .. ") | NEUROMIC_HISTORY=" .. q(histfile or "")
      .. " timeout 60 script -qec " .. q("exec " .. q(exe)) .. " /dev/null"
    local out, rc = run(cmd)
    return clean(out), rc
  end

  it("help(x) and ?x print the signature and doc of functions, methods, rules and options", function()
    if not have_script then pending("script(1) not installed") return end
    local out, rc = session{"help(nm.zeros)", "?t:addmm", "?nn.mlp", "?backprop", "?bmvr --runs",
                            "?no_such_thing"}
    assert.equal(0, rc, out)
    assert.truthy(out:find("nm.zeros(d1, ..., [dtype])", 1, true), out)
    assert.truthy(out:find("(doc/tensor.md, Constructors", 1, true), out)
    assert.truthy(out:find("C:addmm([alpha,] A, B[, beta])", 1, true), out)
    assert.truthy(out:find("C = beta C + alpha A B", 1, true), out)
    assert.truthy(out:find("nn.mlp{sizes,", 1, true), out)
    assert.truthy(out:find("backprop (connection rule)", 1, true), out)
    assert.truthy(out:find("paper: Rumelhart", 1, true), out)
    assert.truthy(out:find("--runs N%s+Fig%. 3: runs per curve"), out)
    assert.truthy(out:find("no help for 'no_such_thing'", 1, true), out)
  end)

  it("prints sizes as [3 x 4], lists and tables readably, tensors aligned", function()
    if not have_script then pending("script(1) not installed") return end
    local out, rc = session{"x = nm.zeros(3, 4)", "x:size()", "require('nm.rule').list()",
                            "{eta = 0.1, sizes = {4, 3}, W = x}", "nm.tensor{-0.7681, -0.0004659}"}
    assert.equal(0, rc, out)
    assert.truthy(out:find("\n[3 x 4]\n", 1, true), out)
    assert.truthy(out:find('\n{"[%w_]+", "[%w_]+", '), out)   -- the rule names, one list
    assert.truthy(out:find('"backprop", ', 1, true), out)
    assert.falsy(out:find("table: 0x", 1, true), out)
    assert.truthy(out:find("{W = FloatTensor[3 x 4], eta = 0.1, sizes = {4, 3}}", 1, true), out)
    assert.truthy(out:find("\n -0.7681 -0.0005\n", 1, true), out)
  end)

  it("t[i] is a row, t[i][j] an element, t[i] = x assigns", function()
    if not have_script then pending("script(1) not installed") return end
    local out, rc = session{"A = nm.tensor{{1, 2}, {3, 4}}", "A[1]", "A[2][1]", "A[2] = 9", "A",
                            "A[3]"}
    assert.equal(0, rc, out)
    assert.truthy(out:find("\n 1 2\n[neuromic.FloatTensor of size 2]", 1, true), out)
    assert.truthy(out:find("\n3.0\n", 1, true), out)
    assert.truthy(out:find("\n 1 2\n 9 9\n[neuromic.FloatTensor of size 2x2]", 1, true), out)
    assert.truthy(out:find("index 3 out of range for dimension 1 of [2 x 2]", 1, true), out)
  end)

  it("stores a multi-line chunk as one history entry, recalled whole", function()
    if not have_script then pending("script(1) not installed") return end
    local hist = tmpdir .. "/hist_multi"
    local out, rc = session({"for i = 1, 2 do", "io.write('row', i, ' ')", "end"}, hist)
    assert.equal(0, rc, out)
    local text = assert(io.open(hist)):read("a")
    assert.truthy(text:find("for i = 1, 2 do\nio.write('row', i, ' ')\nend\n", 1, true), text)
    -- a new session: one Up arrow brings the whole loop back
    out, rc = run("(printf '\\033[A\\n'; sleep 0.4; printf '\\004') | NEUROMIC_HISTORY=" .. q(hist) ..
                  " timeout 30 script -qec " .. q("exec " .. q(exe)) .. " /dev/null")
    assert.equal(0, rc, out)
    assert.truthy(clean(out):find("row1 row2", 1, true), out)
  end)
end)

describe("assert.tensor_near", function()
  local nm = require "neuromic"

  it("accepts values within the tolerance, tensors or tables", function()
    local t = nm.tensor({{1, 2}, {3, 4}}, "float64")
    assert.tensor_near({{1, 2}, {3, 4.05}}, t, 0.1)
    assert.tensor_near(t, {{1.01, 2}, {3, 4}}, 0.02)
    assert.tensor_near(t, t:clone(), 0)
    assert.tensor_near({0 / 0, math.huge}, {0 / 0, math.huge}, 0)
    assert.is_not.tensor_near({{1, 2}, {3, 5}}, t, 0.1)
  end)

  it("names the first differing index and both values", function()
    local t = nm.tensor({{1, 2, 3}, {4, 5, 6}}, "float64")
    local ok, err = pcall(assert.tensor_near, {{1, 2, 3}, {4, 5.5, 7}}, t, 0.1)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("first difference at [2, 2]: expected 5.5, got 5", 1, true))
  end)

  it("reports shape mismatches and rejects a bad tolerance", function()
    local ok, err = pcall(assert.tensor_near, {1, 2, 3}, nm.zeros(2), 1)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("shape mismatch: expected [3], got [2]", 1, true))
    ok, err = pcall(assert.tensor_near, {{1, 2}, {3, 4}}, {{1, 2}, {3}}, 1)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("shape mismatch at [2]: expected [2], got [1]", 1, true))
    assert.is_false(pcall(assert.tensor_near, {1, 2}, {{1, 2}}, 1))
    ok, err = pcall(assert.tensor_near, {1}, {1})
    assert.is_false(ok)
    assert.truthy(tostring(err):find("tolerance", 1, true))
    assert.is_false(pcall(assert.tensor_near, {0 / 0}, {1}, 1))
  end)
end)
