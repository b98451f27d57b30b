-- nm/results.lua: the run directory of an experiment.
--
--   DIR/metrics.jsonl  one JSON object per evaluation, appended and flushed
--   DIR/metrics.csv    the same rows; header = first row's keys (sorted,
--                      leading `columns` first) plus keys that appear later
--   DIR/results.json   options, seed, dataset, code version, start and end
--                      time, status and final figures; replaced atomically
--   DIR/checkpoint.nmc the state of an unfinished run (and .1, the previous)
--   DIR/run.lock       while a run is under way: its pid and start time
--
-- A folder belongs to one run: a second writer is refused (naming the
-- pid and start time of the first; a lock whose process died is taken
-- over), a folder holding a run is continued only with --resume and
-- replaced only with --overwrite, and nothing in it changes before the
-- run writes its first row, checkpoint or results.json (so a run that
-- fails on its inputs leaves the folder as it was). Every write is
-- checked: a failure stops the run with one line naming the file and
-- the cause, status "failed" and the last checkpoint kept. Metric rows
-- are appended whole or not at all; a row with a NaN or infinite number
-- stops the run as failed (info.nonfinite lists keys that may hold one).
--
--   local run = results.open(opts, {dataset = "fashion-mnist"})
--   local state = run:resume()            -- nil unless --resume found one
--   ... run:log{epoch = e, loss = l} ...
--   ... run:poll(step, function() return {W = W, g = g, step = step} end)
--   run:finish{test_accuracy = acc}

local nm = require "neuromic"
local json = require "nm.json"
local cli = require "nm.cli"
local checkpoint = require "nm.checkpoint"

local results = {}

local format, concat = string.format, table.concat

local Run = {}
Run.__index = Run

-- Options that may differ between a run and its resumption: they change
-- how a run is carried out or shown, never its results (threads and
-- compiled, generated kernels or the rules' Lua steps: at most rounding).
local VOLATILE = {resume = true, overwrite = true, debug = true, jobs = true, out = true,
                  threads = true, plot = true, checkpoint_every = true, stop_after = true,
                  replot = true, compiled = true}

local FILES = {"results.json", "metrics.jsonl", "metrics.csv", "checkpoint.nmc",
               "checkpoint.nmc.1"}

local function iso_now()
  return os.date("!%Y-%m-%dT%H:%M:%SZ")
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- An error message without the "function: " prefix of the nm calls.
local function cause(err)
  err = tostring(err)
  return err:match("^[%w_]+: (cannot .*)$") or err
end

local function shell_quote(s)
  if s:match("^[%w%./_=,:+%-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- CSV text of one value: numbers as in JSON (nan/inf spelled out),
-- tables as JSON, text quoted when it needs to be.
local function csv_cell(v)
  local tv = type(v)
  if v == nil or v == json.null then return "" end
  if tv == "number" then
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" end
    if v == -math.huge then return "-inf" end
    return json.number_text(v)
  end
  if tv == "boolean" then return tostring(v) end
  local s = tv == "string" and v or json.encode(v)
  if s:find('[,"\r\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  return keys
end

local function plain_options(opts)
  local t = cli.plain(opts)
  if t.shard then t.shard = format("%d/%d", t.shard.index, t.shard.count) end
  return t
end

local function options_key(opts)
  local t = plain_options(opts)
  for k in pairs(VOLATILE) do t[k] = nil end
  return t
end

local function finite(v)
  return v == v and v ~= math.huge and v ~= -math.huge
end

-- Nil when the saved options `was` (a decoded table) equal those of
-- opts, else a description like "--seed 5 then, 6 now". Options that
-- cannot change results (--threads, --no-plot, ...) may differ.
local function options_diff(was, opts)
  local now = options_key(opts)
  local keys, seen = {}, {}
  for _, t in ipairs{was, now} do
    for k in pairs(t) do
      if not seen[k] and not VOLATILE[k] then seen[k] = true; keys[#keys + 1] = k end
    end
  end
  table.sort(keys)
  local diffs = {}
  for _, k in ipairs(keys) do
    local a, b = json.encode(was[k]), json.encode(now[k])
    if a ~= b then
      diffs[#diffs + 1] = format("--%s %s then, %s now", k:gsub("_", "-"), a, b)
    end
  end
  if #diffs == 0 then return nil end
  return concat(diffs, "; ")
end

-- Describes a folder's run for messages: "a finished run (started ...)".
local function describe_run(dir)
  local ok, old = pcall(json.read_file, dir .. "/results.json")
  if ok and type(old) == "table" and type(old.status) == "string" then
    return format("%s run (%sstarted %s)",
                  old.status == "finished" and "a finished" or "an unfinished",
                  old.status == "finished" and "" or "status " .. old.status .. ", ",
                  tostring(old.started))
  end
  return "the files of a run"
end

-- The plots the finished run in dir listed (removed when it is replaced).
local function old_plots(dir)
  local ok, old = pcall(json.read_file, dir .. "/results.json")
  local list = {}
  if ok and type(old) == "table" and type(old.final) == "table" and type(old.final.plots) == "table" then
    for _, p in ipairs(old.final.plots) do
      if type(p) == "string" and p:sub(1, #dir + 1) == dir .. "/" and not p:find("/", #dir + 2, true) then
        list[#list + 1] = p
      end
    end
  end
  return list
end

-- The locks this process holds, each released when its run closes or,
-- at the latest, when the interpreter closes its state (an error ended
-- the script): a finalizer removes the lock file.
local held_locks = {}

local function release(lk)
  if lk.fd then
    nm.sys.unlock(lk.path, lk.fd)
    lk.fd = nil
  end
end

local Lock = {__gc = release}

-- Takes the folder's lock or raises a user error naming its holder.
local function lock(dir, started)
  local path = dir .. "/run.lock"
  local text = format("pid %d started %s\n", nm.sys.getpid(), started)
  local fd, why, holder = nm.sys.lock(path, text)
  if fd then
    local lk = setmetatable({fd = fd, path = path}, Lock)
    held_locks[lk] = true
    return lk
  end
  if why == "busy" then
    local pid, since = (holder or ""):match("^pid (%d+) started (%S+)")
    if tonumber(pid) == nm.sys.getpid() then return nil end   -- this process has it
    cli.error(format("%s is in use by another run (pid %s, started %s); wait for it to end " ..
                     "or choose another --out", dir, pid or "?", since or "?"))
  end
  cli.error(format("cannot write in --out %s (%s)", dir, why))
end

results.options_diff = options_diff

-- results.open(opts [, info]) -> run. opts: the table from cli.parse
-- (or any table with out, seed, ...). info: dataset, columns (leading
-- CSV columns), checkpoint_every (steps; default opts.checkpoint_every),
-- keep_checkpoint (keep the checkpoint after finish), name, quiet,
-- stop_after (default opts.stop_after: at that step run:poll sends the
-- process SIGTERM, after its handler is in place -- the tests' way to
-- interrupt a run at a known point), on_stop (called before a stopped
-- run exits, e.g. to mark an enclosing run stopped too), nonfinite (a
-- set of metric keys that may be NaN or infinite, or true for all).
-- A folder holding a run is refused unless opts.resume or opts.overwrite;
-- with --resume and a finished results.json the script has nothing to do
-- and exits 0. Bad or busy folders are user errors (nm.cli.error).
function results.open(opts, info)
  info = info or {}
  local dir = opts.out
  if type(dir) ~= "string" or dir == "" or dir:find("%z") then
    cli.error(format("--out needs a folder name, got %s", dir == "" and "''" or tostring(dir)))
  end
  local ok, err = pcall(nm.sys.mkdir, dir)
  if not ok then
    cli.error(format("cannot use --out %s (%s)", dir, tostring(err):match("%(([^()]*)%)$") or err))
  end
  local started = iso_now()
  local lk = lock(dir, started)
  local self = setmetatable({
    dir = dir, opts = opts, config = info, rows = {}, columns = {}, column_set = {},
    final = {}, resumed = 0, elapsed_before = 0, clock0 = nm.sys.clock(),
    checkpoint_every = info.checkpoint_every or opts.checkpoint_every,
    stop_after = info.stop_after or opts.stop_after,
    ckpt_path = dir .. "/checkpoint.nmc",
    lock = lk, fresh = not opts.resume, begun = false,
  }, Run)
  for _, c in ipairs(info.columns or {}) do self:_add_column(c) end
  local argv = {}
  for i, a in ipairs(opts._argv or {}) do argv[i] = shell_quote(tostring(a)) end
  local script = (arg and arg[0]) or (opts._name or "experiment")
  self.meta = {
    experiment = info.name or opts._name,
    command = concat({"./neuromic", shell_quote(script), table.unpack(argv)}, " "),
    options = plain_options(opts),
    seed = opts.seed,
    quick = opts.quick,
    dataset = info.dataset,
    version = nm.version,
    blas_core = nm.blas_core(),    -- OpenBLAS's kernels: their sums' last bits differ
    lua = _VERSION,
    started = started,
    status = "running",
  }
  local held = false
  for _, f in ipairs(FILES) do held = held or exists(self:path(f)) end
  if held and opts.overwrite then self.replaced_plots = old_plots(dir) end
  if held and not opts.resume and not opts.overwrite then
    local what = describe_run(dir)
    self:close()
    cli.error(format("%s holds %s; continue it with --resume, replace it with --overwrite, " ..
                     "or choose another --out", dir, what))
  end
  local old_path = dir .. "/results.json"
  if opts.resume and exists(old_path) then
    local okr, old = pcall(json.read_file, old_path)
    if okr and type(old) == "table" then
      if old.status == "finished" then
        local diff = options_diff(type(old.options) == "table" and old.options or {}, opts)
        self:close()
        if diff then
          cli.error(format("%s holds a finished run with other options (%s); "
                           .. "use --overwrite to replace it", old_path, diff))
        end
        if not info.quiet then
          io.stderr:write(format("%s: already finished (%s); nothing to do\n", dir, old_path))
        end
        os.exit(0)
      end
      self.meta.started = old.started or self.meta.started
      self.elapsed_before = tonumber(old.elapsed_s) or 0
      self.resumed = (tonumber(old.resumed) or 0)
    end
  end
  if opts.resume then self:_read_metrics() end
  return self
end

-- The first write of a run: clears the files of the run it replaces (or
-- cuts a resumed run's metrics back), then writes results.json.
function Run:_begin()
  if self.begun then return end
  self.begun = true
  if self.fresh then
    for _, f in ipairs(FILES) do os.remove(self:path(f)) end
    for _, p in ipairs(self.replaced_plots or {}) do os.remove(p) end
  end
  self:_rewrite_metrics()
  self:write()
end

-- Stops the run as failed: results.json says so (when it can still be
-- written) and the script ends with one line (status 1).
function Run:fail(msg, status)
  if not self.begun then pcall(self._begin, self) end   -- (a write failing here fails again)
  self.meta.status = "failed"
  self.meta.error = msg
  if self.begun then
    self.meta.elapsed_s = self:elapsed()
    self.meta.final = json.object(self.final)
    self.meta.metrics_rows = #self.rows
    local path = self:path("results.json")
    local text = json.encode(self.meta, {indent = 2}) .. "\n"
    if not pcall(nm.sys.atomic_write, path, text) then
      -- A full disk has no room for a new file; the old one's blocks
      -- still take a status line that is not longer (padded with spaces).
      self.meta.error = nil
      text = json.encode(self.meta, {indent = 2})
      local f = io.open(path, "r+b")
      local size = f and f:seek("end")
      if size and #text < size then
        f:seek("set", 0)
        f:write(text, string.rep(" ", size - #text - 1), "\n")
      end
      if f then f:close() end
    end
  end
  self:close()
  if self.stop_installed then nm.sys.remove_stop_handler() end
  local kept = exists(self.ckpt_path) or exists(self.ckpt_path .. ".1")
  cli.error(format("%s; the run in %s stopped (status failed)%s", msg, self.dir,
                   kept and "; its last checkpoint is kept: continue with --resume once " ..
                            "the cause is fixed" or ""), status or 1)
end

-- run:guard(fn, a, b, c, d) -> fn(a, b, c, d) (up to 4 arguments and 3
-- results; nothing allocated, for training steps): an error of fn -- a
-- rule that made the weights non-finite, say -- stops the run as failed,
-- in one line, its files and last checkpoint kept. User errors pass
-- through; with --debug every error keeps its traceback.
function Run:guard(fn, a, b, c, d)
  local ok, r1, r2, r3 = pcall(fn, a, b, c, d)
  if ok then return r1, r2, r3 end
  if cli.is_error(r1) or cli.debug then error(r1, 0) end
  self:fail(cli.message(r1))
end

-- Runs fn(...) for a write; a failure stops the run.
function Run:_checked(fn, ...)
  local ok, err = pcall(fn, ...)
  if not ok then self:fail(cause(err)) end
end

function Run:path(name)
  return self.dir .. "/" .. name
end

-- run:save(name, text) -> path: writes a file of the run's own (a
-- report, a table) into its folder atomically; a failure stops the run
-- like any other write.
function Run:save(name, text)
  local path = self:path(name)
  self:_checked(nm.sys.atomic_write, path, text)
  return path
end

-- run:files(pattern) -> sorted paths of the files in the run's folder
-- whose names match the Lua pattern (e.g. "%.png$": the plots written).
function Run:files(pattern)
  local list = {}
  for _, name in ipairs(nm.sys.listdir(self.dir) or {}) do
    if name:find(pattern) then list[#list + 1] = self:path(name) end
  end
  return list
end

function Run:_add_column(k)
  if not self.column_set[k] then
    self.column_set[k] = true
    self.columns[#self.columns + 1] = k
    return true
  end
  return false
end

function Run:_csv_line(row)
  local cells = {}
  for i, k in ipairs(self.columns) do cells[i] = csv_cell(row[k]) end
  return concat(cells, ",") .. "\n"
end

-- Rewrites metrics.jsonl and metrics.csv from the rows in memory (a
-- new column appeared, or the metrics were cut back on resume).
function Run:_rewrite_metrics(csv_only)
  local parts = {}
  if #self.columns > 0 then
    local head = {}
    for i, k in ipairs(self.columns) do head[i] = csv_cell(k) end
    parts[1] = concat(head, ",") .. "\n"
  end
  for _, row in ipairs(self.rows) do parts[#parts + 1] = self:_csv_line(row) end
  if not csv_only then
    local lines = {}
    for i, row in ipairs(self.rows) do lines[i] = json.encode(row) .. "\n" end
    self:_checked(nm.sys.atomic_write, self:path("metrics.jsonl"), concat(lines))
  end
  self:_checked(nm.sys.atomic_write, self:path("metrics.csv"), concat(parts))
end

-- Reads back the rows of the run being resumed (a torn last line, from a
-- crash in the middle of a write, is dropped with a warning).
function Run:_read_metrics()
  local jpath = self:path("metrics.jsonl")
  if not exists(jpath) then return end
  local ok, rows, warning = pcall(json.read_lines, jpath, {null = 0 / 0})
  if not ok then cli.error(format("cannot resume: %s", cause(rows))) end
  if warning then io.stderr:write("warning: ", warning, "\n") end
  self.rows = rows
  for _, row in ipairs(rows) do
    for _, k in ipairs(sorted_keys(row)) do self:_add_column(k) end
  end
end

-- Where a row stands, for messages: "step 12 (rule bp, epoch 3)".
function Run:_where(row)
  local parts = {}
  for _, k in ipairs(self.config.columns or {"step", "epoch", "episode", "iteration"}) do
    if row[k] ~= nil then parts[#parts + 1] = format("%s %s", k, tostring(row[k])) end
  end
  if #parts == 0 then return format("row %d", #self.rows + 1) end
  return concat(parts, ", ")
end

-- run:log(row): appends one evaluation (a flat table; nested tables and
-- tensors go to the CSV as JSON text). Copies the row. A NaN or infinite
-- number (outside info.nonfinite) stops the run as failed.
function Run:log(row)
  local copy = {}
  local allowed = self.config.nonfinite
  for k, v in pairs(row) do
    k = tostring(k)
    if type(v) == "number" and not finite(v) and allowed ~= true
       and not (type(allowed) == "table" and allowed[k]) then
      self:fail(format("%s is %s at %s: training diverged or a metric is undefined", k,
                       v ~= v and "NaN" or tostring(v), self:_where(row)))
    end
    copy[k] = v
  end
  self:_begin()
  self:_checked(nm.sys.append_file, self:path("metrics.jsonl"), json.encode(copy) .. "\n")
  self.rows[#self.rows + 1] = copy
  local grew = false
  for _, k in ipairs(sorted_keys(copy)) do
    if self:_add_column(k) then grew = true end
  end
  if grew then
    self:_rewrite_metrics(true)
  else
    self:_checked(nm.sys.append_file, self:path("metrics.csv"), self:_csv_line(copy))
  end
end

-- The rows logged so far (including those read back on resume).
function Run:metrics()
  return self.rows
end

-- run:set(key, value): a final figure (written to results.json "final").
function Run:set(key, value)
  self.final[key] = value
end

-- run:info(key, value): a top-level field of results.json (dataset, ...).
function Run:info(key, value)
  self.meta[key] = value
end

function Run:elapsed()
  return self.elapsed_before + (nm.sys.clock() - self.clock0)
end

-- run:write([status]): replaces results.json atomically.
function Run:write(status)
  if status then self.meta.status = status end
  if not self.begun then return self:_begin() end
  self.meta.elapsed_s = self:elapsed()
  self.meta.resumed = self.resumed
  self.meta.final = json.object(self.final)
  self.meta.metrics_rows = #self.rows
  self:_checked(nm.sys.atomic_write, self:path("results.json"),
                json.encode(self.meta, {indent = 2}) .. "\n")
end

-- run:checkpoint(state): saves state (tables, numbers, strings, booleans,
-- tensors, generators) with the run's bookkeeping, atomically, keeping
-- the previous checkpoint.
function Run:checkpoint(state)
  self:_begin()
  self:_checked(checkpoint.save, self.ckpt_path, {
    user = state,
    metrics_rows = #self.rows,
    final = self.final,
    options = json.encode(options_key(self.opts)),
    elapsed = self:elapsed(),
  })
  self.last_checkpoint = nm.sys.clock()
end

-- run:resume() -> state | nil. With --resume and a checkpoint in the
-- directory: checks that it was written with the same options, cuts the
-- metrics back to the rows logged when it was written (a resumed run
-- then writes exactly the files an uninterrupted one would) and returns
-- the saved state. Otherwise nil (a fresh start).
function Run:resume()
  if not self.opts.resume then return nil end
  local okl, saved, from = pcall(checkpoint.load, self.ckpt_path)
  if not okl then cli.error(format("cannot resume: %s", saved)) end
  if saved == nil then
    if not self.config.quiet then
      io.stderr:write(format("%s: no checkpoint, starting from the beginning\n", self.dir))
    end
    self.rows = {}
    self.columns, self.column_set = {}, {}
    for _, c in ipairs(self.config.columns or {}) do self:_add_column(c) end
    if self.begun then self:_rewrite_metrics() else self:_begin() end
    return nil
  end
  local ok, was = pcall(json.decode, saved.options or "{}")
  local diff = options_diff(ok and type(was) == "table" and was or {}, self.opts)
  if diff then
    cli.error(format("%s was written with other options (%s); "
                     .. "use the same options, or --overwrite to start afresh", from, diff))
  end
  local keep = saved.metrics_rows or 0
  if keep > #self.rows then
    cli.error(format("%s expects %d metric rows but %s has %d", from, keep,
                     self:path("metrics.jsonl"), #self.rows))
  end
  for i = #self.rows, keep + 1, -1 do self.rows[i] = nil end
  self.final = saved.final or {}
  self.resumed = self.resumed + 1
  if self.begun then self:_rewrite_metrics() else self:_begin() end
  if not self.config.quiet then
    io.stderr:write(format("%s: resuming from %s\n", self.dir, from))
  end
  self:write("running")
  return saved.user
end

-- run:poll(step, get_state): call once per step of a long loop. Saves a
-- checkpoint every `checkpoint_every` steps, and when SIGINT/SIGTERM
-- asked to stop, saves one and exits (status 128 + signal number). The
-- stop handler is installed on the first call.
function Run:poll(step, get_state)
  if not self.stop_installed then
    nm.sys.install_stop_handler()
    self.stop_installed = true
  end
  if step == self.stop_after then
    nm.sys.kill(nm.sys.getpid(), "TERM")
    -- Another thread (OpenBLAS's) may take the signal: wait for its flag.
    local t0 = nm.sys.clock()
    while not nm.sys.stop_requested() and nm.sys.clock() - t0 < 10 do nm.sys.sleep(0.001) end
  end
  local stop = nm.sys.stop_requested()
  local every = self.checkpoint_every
  if stop or (every and every > 0 and step % every == 0) then
    self:checkpoint(get_state())
  end
  if stop then self:stop() end
end

-- run:poll_due(step) -> the first step after `step` at which run:poll
-- acts whatever the signals (a checkpoint, or the stop_after step), or nil
-- when there is none: a loop that runs several steps between calls of
-- run:poll (online learning through net:train_online) ends its stretches
-- there, so checkpoints and stops fall on the steps they would with a call
-- per step.
function Run:poll_due(step)
  local due
  local every = self.checkpoint_every
  if every and every > 0 then due = (step // every + 1) * every end
  local stop = self.stop_after
  if stop and stop > step and (not due or stop < due) then due = stop end
  return due
end

-- run:stop(): records the stop in results.json and exits 128 + signal.
function Run:stop()
  local _, name, sig = nm.sys.stop_requested()
  if self.config.on_stop then self.config.on_stop(self) end
  self:_begin()
  self:write("stopped")
  self:close()
  io.stderr:write(format("%s: stopped by %s; continue with --resume\n", self.dir, name or "request"))
  os.exit(128 + (sig or 15))
end

-- run:close(): gives the folder free for another run.
function Run:close()
  if self.lock then
    release(self.lock)
    held_locks[self.lock] = nil
    self.lock = nil
  end
end

-- run:finish([final]) -> path of results.json. Merges final figures,
-- marks the run finished, closes the files and deletes the checkpoint
-- (unless info.keep_checkpoint).
function Run:finish(final)
  for k, v in pairs(final or {}) do self.final[k] = v end
  for k, v in pairs(self.final) do
    if type(v) == "number" and not finite(v) then
      self:fail(format("the final figure %s is %s", k, v ~= v and "NaN" or tostring(v)))
    end
  end
  self.meta.finished = iso_now()
  self:write("finished")
  self:close()
  if not self.config.keep_checkpoint then checkpoint.remove(self.ckpt_path) end
  if self.stop_installed then nm.sys.remove_stop_handler() end
  return self:path("results.json")
end

-- results.finished(dir) -> results.json table, metrics rows of the
-- finished run in dir (for --replot), or a user error saying why not.
function results.finished(dir)
  local ok, res, rows = pcall(results.read, dir)
  if not ok then cli.error(format("--replot: no finished run in %s (%s)", dir, res)) end
  if type(res) ~= "table" or res.status ~= "finished" then
    cli.error(format("--replot: no finished run in %s (status %s)", dir,
                     type(res) == "table" and tostring(res.status) or "unknown"))
  end
  return res, rows
end

-- results.read(dir) -> results.json table, metrics rows (nulls as NaN).
function results.read(dir)
  local res = json.read_file(dir .. "/results.json")
  local rows = {}
  if exists(dir .. "/metrics.jsonl") then
    rows = json.read_lines(dir .. "/metrics.jsonl", {null = 0 / 0})
  end
  return res, rows
end

return results
