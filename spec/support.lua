-- spec/support.lua: what several specs share for driving experiment scripts
-- as a user would (a child process of ./neuromic, exit codes, metrics).
local json = require "nm.json"

local support = {}

support.root = NEUROMIC_ROOT or "."
-- `make sanitize` sets NEUROMIC_EXE to the sanitizer build.
support.exe = os.getenv("NEUROMIC_EXE") or (support.root .. "/neuromic")

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

return support
