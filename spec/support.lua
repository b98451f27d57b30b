-- spec/support.lua: what several specs share: driving experiment scripts as
-- a user would (a child process of ./neuromic, exit codes, metrics), and
-- counting what a call allocates.
local json = require "nm.json"

local support = {}

support.root = NEUROMIC_ROOT or "."
-- `make sanitize` sets NEUROMIC_EXE to the sanitizer build.
support.exe = os.getenv("NEUROMIC_EXE") or (support.root .. "/neuromic")

-- A private cache folder for the rule compiler's kernels, so a spec builds
-- them afresh: c.dir; c.use() points nm.compile at it, c.restore() back.
function support.compile_cache()
  local nm = require "neuromic"
  local compile = require "nm.compile"
  local dir = os.tmpname()
  os.remove(dir)
  nm.sys.mkdir(dir)
  local real = compile.cache_dir
  return {
    dir = dir,
    use = function() compile.cache_dir = function() return dir end end,
    restore = function() compile.cache_dir = real end,
  }
end

-- Bytes allocated by n calls of f after a warm-up call (collector stopped;
-- it is restarted even when f fails). One call after the collection too: a
-- full collection shrinks the Lua stack, and the next deep call grows it
-- back, which is not the code's.
function support.allocated(f, n)
  f()
  collectgarbage("collect")
  collectgarbage("stop")
  local ok, grown = pcall(function()
    f()
    local before = collectgarbage("count")
    for _ = 1, n do f() end
    return (collectgarbage("count") - before) * 1024
  end)
  collectgarbage("restart")
  if not ok then error(grown, 0) end
  return grown
end

-- A runner for experiments/<script>: run(args) -> exit code (0, or e.g. 143
-- after SIGTERM); its output goes to a log file next to a fresh temp name.
function support.experiment(script)
  local tmp = os.tmpname()
  os.remove(tmp)
  local function run(args)
    local cmd = string.format("cd %q && %q experiments/%s %s >%q 2>&1", support.root,
                              support.exe, script, args, tmp .. ".log")
    local ok, _, code = os.execute(cmd)
    return ok and 0 or code
  end
  return run, tmp
end

-- The rows of DIR/metrics.jsonl without the wall-clock fields, which differ
-- between an interrupted and an uninterrupted run.
function support.metric_rows(dir, clock_fields)
  local out = {}
  for _, r in ipairs(json.read_lines(dir .. "/metrics.jsonl")) do
    for _, k in ipairs(clock_fields or {"time_s", "seconds"}) do r[k] = nil end
    out[#out + 1] = r
  end
  return out
end

-- The bytes of a file (an error when it cannot be read), and a file
-- written with bytes.
function support.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

function support.write_file(path, s)
  local f = assert(io.open(path, "wb"))
  assert(f:write(s))
  assert(f:close())
end

-- The fenced blocks of a Markdown page, in order: {lang =, text =}.
function support.doc_blocks(text)
  local out = {}
  for lang, body in text:gmatch("\n```(%w*)\n(.-)```") do out[#out + 1] = {lang = lang, text = body} end
  return out
end

-- support.doc_files(page, dir) -> {[name] = path}: writes every Lua block
-- of the page (a path under the repository root) whose first line is
-- "-- some/path.lua: ..." as dir/some/path.lua, as a reader saving them
-- would (doc/tutorial.md's rules).
function support.doc_files(page, dir)
  local out = {}
  for _, b in ipairs(support.doc_blocks(support.read_file(support.root .. "/" .. page))) do
    local file = b.lang == "lua" and b.text:match("^%-%- ([%w_%./%-]+%.lua):")
    if file then
      local path = dir .. "/" .. file
      os.execute(string.format("mkdir -p %q", path:match("^(.*)/")))
      support.write_file(path, b.text)
      out[file] = path
    end
  end
  return out
end

-- support.user_rule(dir, base, name) -> path: writes DIR/NAME.lua, a user's
-- rule file that is the built-in rule BASE without its C kernel (so its Lua
-- step runs), as a user would copy it.
function support.user_rule(dir, base, name)
  os.execute(string.format("mkdir -p %q", dir))
  local path = dir .. "/" .. name .. ".lua"
  support.write_file(path, string.format('local base = require("nm.rule").definition(%q)\n', base) ..
                           'local def = {}\nfor k, v in pairs(base) do def[k] = v end\n' ..
                           string.format('def.name, def.kernel = %q, nil\nreturn def\n', name))
  return path
end

-- A word quoted for sh, a shell command run -> stdout, stderr, exit
-- status, and ./neuromic run with a list of arguments the same way.
function support.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function support.sh(cmd)
  local errf = os.tmpname()
  local p = assert(io.popen("(" .. cmd .. ") 2>" .. support.q(errf)))
  local out = p:read("a")
  local _, _, rc = p:close()
  local f = assert(io.open(errf, "rb"))
  local err = f:read("a")
  f:close()
  os.remove(errf)
  return out, err, rc
end

function support.run_nm(args)
  local parts = {}
  for i, a in ipairs(args) do parts[i] = support.q(a) end
  return support.sh(support.q(support.exe) .. " " .. table.concat(parts, " "))
end

return support
