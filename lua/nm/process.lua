-- nm/process.lua: running another program without a shell. The
-- arguments go to the program as they are (no quoting, no expansion), so
-- a path with spaces, quotes or `;` is just a path.
--
--   local process = require "nm.process"
--   local ok, why = process.run({"gnuplot", script}, log_path)

local nm = require "neuromic"

local process = {}

-- process.run(argv [, log]) -> true | false, reason. Starts argv[1]
-- (searched in PATH) with the other entries as its arguments, stdout and
-- stderr appended to the file `log` (inherited when nil), and waits for
-- it. When the wait is interrupted by an error (Ctrl-C in the REPL), the
-- program gets SIGTERM and the error goes on.
function process.run(argv, log)
  local ok, pid = pcall(nm.sys.spawn, argv, log)
  if not ok then return false, tostring(pid) end
  while true do
    local wok, done, status, signame = pcall(nm.sys.wait, pid)
    if not wok then
      nm.sys.kill(pid, "TERM")
      nm.sys.wait(pid)
      error(done, 0)
    end
    if done then
      if status == 0 then return true end
      return false, signame and ("killed by " .. signame) or ("exit status " .. status)
    end
    if status ~= "interrupted" then return false, tostring(status) end
  end
end

-- process.output(argv) -> text (stdout and stderr), nil | reason when
-- it failed: runs argv like process.run and returns what it printed.
function process.output(argv)
  local log = os.tmpname()
  local ok, why = process.run(argv, log)
  local f = io.open(log, "rb")
  local text = f and f:read("a") or ""
  if f then f:close() end
  os.remove(log)
  return text, (not ok) and why or nil
end

return process
