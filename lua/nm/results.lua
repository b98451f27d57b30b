-- nm/results.lua: the run directory of an experiment.
--
--   DIR/metrics.jsonl  one JSON object per evaluation, appended and flushed
--   DIR/metrics.csv    the same rows; header = first row's keys (sorted,
--                      leading `columns` first) plus keys that appear later
--   DIR/results.json   options, seed, dataset, code version, start and end
--                      time, status and final figures; replaced atomically
--   DIR/checkpoint.nmc the state of an unfinished run (and .1, the previous)
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

-- Options that may differ between a run and its resumption.
local VOLATILE = {resume = true, jobs = true, out = true}

local function iso_now()
  return os.date("!%Y-%m-%dT%H:%M:%SZ")
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
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

-- Nil when the saved options `was` (a decoded table) equal those of
-- opts, else a description like "--seed 5 then, 6 now".
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

-- results.open(opts [, info]) -> run. opts: the table from cli.parse
-- (or any table with out, seed, ...). info: dataset, columns (leading
-- CSV columns), checkpoint_every (steps; default opts.checkpoint_every),
-- keep_checkpoint (keep the checkpoint after finish), name, quiet,
-- stop_after (default opts.stop_after: at that step run:poll sends the
-- process SIGTERM, after its handler is in place -- the tests' way to
-- interrupt a run at a known point), on_stop (called before a stopped
-- run exits, e.g. to mark an enclosing run stopped too).
-- Without --resume the directory starts afresh; with --resume and a
-- finished results.json the script has nothing to do and exits 0.
function results.open(opts, info)
  info = info or {}
  local dir = assert(opts.out, "results.open: opts.out (the run directory) is missing")
  nm.mkdir(dir)
  local self = setmetatable({
    dir = dir, opts = opts, config = info, rows = {}, columns = {}, column_set = {},
    final = {}, resumed = 0, elapsed_before = 0, clock0 = nm.clock(),
    checkpoint_every = info.checkpoint_every or opts.checkpoint_every,
    stop_after = info.stop_after or opts.stop_after,
    ckpt_path = dir .. "/checkpoint.nmc",
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
    lua = _VERSION,
    started = iso_now(),
    status = "running",
  }
  local old_path = dir .. "/results.json"
  if opts.resume and exists(old_path) then
    local ok, old = pcall(json.read_file, old_path)
    if ok and type(old) == "table" then
      if old.status == "finished" then
        local diff = options_diff(type(old.options) == "table" and old.options or {}, opts)
        if diff then
          error(format("%s holds a finished run with other options (%s); "
                       .. "start without --resume to replace it", old_path, diff), 0)
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
  if not opts.resume then
    os.remove(dir .. "/metrics.jsonl")
    os.remove(dir .. "/metrics.csv")
    checkpoint.remove(self.ckpt_path)
  end
  self:_open_metrics(not opts.resume)
  self:write()
  return self
end

function Run:path(name)
  return self.dir .. "/" .. name
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

-- Rewrites metrics.csv from the rows in memory (a new column appeared,
-- or the metrics were cut back on resume).
function Run:_rewrite_csv()
  local parts = {}
  if #self.columns > 0 then
    local head = {}
    for i, k in ipairs(self.columns) do head[i] = csv_cell(k) end
    parts[1] = concat(head, ",") .. "\n"
  end
  for _, row in ipairs(self.rows) do parts[#parts + 1] = self:_csv_line(row) end
  if self.csv then self.csv:close() end
  nm.atomic_write(self:path("metrics.csv"), concat(parts))
  self.csv = assert(io.open(self:path("metrics.csv"), "ab"))
end

-- Opens the metrics files; on resume, reads back the rows already there.
function Run:_open_metrics(fresh)
  local jpath = self:path("metrics.jsonl")
  if not fresh and exists(jpath) then
    local rows, warning = json.read_lines(jpath, {null = 0 / 0})
    if warning then io.stderr:write("warning: ", warning, "\n") end
    self.rows = rows
    for _, row in ipairs(rows) do
      for _, k in ipairs(sorted_keys(row)) do self:_add_column(k) end
    end
    -- rewrite both, dropping an incomplete last line
    local lines = {}
    for i, row in ipairs(rows) do lines[i] = json.encode(row) .. "\n" end
    nm.atomic_write(jpath, concat(lines))
  end
  self.jsonl = assert(io.open(jpath, "ab"))
  self:_rewrite_csv()
end

-- run:log(row): appends one evaluation (a flat table; nested tables and
-- tensors go to the CSV as JSON text). Copies the row.
function Run:log(row)
  local copy = {}
  for k, v in pairs(row) do copy[tostring(k)] = v end
  self.rows[#self.rows + 1] = copy
  self.jsonl:write(json.encode(copy), "\n")
  self.jsonl:flush()
  local grew = false
  for _, k in ipairs(sorted_keys(copy)) do
    if self:_add_column(k) then grew = true end
  end
  if grew then
    self:_rewrite_csv()
  else
    self.csv:write(self:_csv_line(copy))
    self.csv:flush()
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
  return self.elapsed_before + (nm.clock() - self.clock0)
end

-- run:write([status]): replaces results.json atomically.
function Run:write(status)
  if status then self.meta.status = status end
  self.meta.elapsed_s = self:elapsed()
  self.meta.resumed = self.resumed
  self.meta.final = json.object(self.final)
  self.meta.metrics_rows = #self.rows
  nm.atomic_write(self:path("results.json"), json.encode(self.meta, {indent = 2}) .. "\n")
end

-- run:checkpoint(state): saves state (tables, numbers, strings, booleans,
-- tensors, generators) with the run's bookkeeping, atomically, keeping
-- the previous checkpoint.
function Run:checkpoint(state)
  checkpoint.save(self.ckpt_path, {
    user = state,
    metrics_rows = #self.rows,
    final = self.final,
    options = json.encode(options_key(self.opts)),
    elapsed = self:elapsed(),
  })
  self.last_checkpoint = nm.clock()
end

-- run:resume() -> state | nil. With --resume and a checkpoint in the
-- directory: checks that it was written with the same options, cuts the
-- metrics back to the rows logged when it was written (a resumed run
-- then writes exactly the files an uninterrupted one would) and returns
-- the saved state. Otherwise nil (a fresh start).
function Run:resume()
  if not self.opts.resume then return nil end
  local saved, from = checkpoint.load(self.ckpt_path)
  if saved == nil then
    if not self.config.quiet then
      io.stderr:write(format("%s: no checkpoint, starting from the beginning\n", self.dir))
    end
    self.rows = {}
    self.columns, self.column_set = {}, {}
    for _, c in ipairs(self.config.columns or {}) do self:_add_column(c) end
    self.jsonl:close()
    nm.atomic_write(self:path("metrics.jsonl"), "")
    self.jsonl = assert(io.open(self:path("metrics.jsonl"), "ab"))
    self:_rewrite_csv()
    return nil
  end
  local ok, was = pcall(json.decode, saved.options or "{}")
  local diff = options_diff(ok and type(was) == "table" and was or {}, self.opts)
  if diff then
    error(format("%s was written with other options (%s); "
                 .. "use the same options or start without --resume", from, diff), 0)
  end
  local keep = saved.metrics_rows or 0
  if keep > #self.rows then
    error(format("%s expects %d metric rows but %s has %d", from, keep,
                 self:path("metrics.jsonl"), #self.rows), 0)
  end
  for i = #self.rows, keep + 1, -1 do self.rows[i] = nil end
  self.jsonl:close()
  local lines = {}
  for i, row in ipairs(self.rows) do lines[i] = json.encode(row) .. "\n" end
  nm.atomic_write(self:path("metrics.jsonl"), concat(lines))
  self.jsonl = assert(io.open(self:path("metrics.jsonl"), "ab"))
  self:_rewrite_csv()
  self.final = saved.final or {}
  self.resumed = self.resumed + 1
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
    nm.install_stop_handler()
    self.stop_installed = true
  end
  if step == self.stop_after then
    nm.kill(nm.getpid(), "TERM")
    -- Another thread (OpenBLAS's) may take the signal: wait for its flag.
    local t0 = nm.clock()
    while not nm.stop_requested() and nm.clock() - t0 < 10 do nm.sleep(0.001) end
  end
  local stop = nm.stop_requested()
  local every = self.checkpoint_every
  if stop or (every and every > 0 and step % every == 0) then
    self:checkpoint(get_state())
  end
  if stop then self:stop() end
end

-- run:stop(): records the stop in results.json and exits 128 + signal.
function Run:stop()
  local _, name, sig = nm.stop_requested()
  if self.config.on_stop then self.config.on_stop(self) end
  self:write("stopped")
  self:close()
  io.stderr:write(format("%s: stopped by %s; continue with --resume\n", self.dir, name or "request"))
  os.exit(128 + (sig or 15))
end

function Run:close()
  if self.jsonl then self.jsonl:close() self.jsonl = nil end
  if self.csv then self.csv:close() self.csv = nil end
end

-- run:finish([final]) -> path of results.json. Merges final figures,
-- marks the run finished, closes the files and deletes the checkpoint
-- (unless info.keep_checkpoint).
function Run:finish(final)
  for k, v in pairs(final or {}) do self.final[k] = v end
  self.meta.finished = iso_now()
  self:write("finished")
  self:close()
  if not self.config.keep_checkpoint then checkpoint.remove(self.ckpt_path) end
  if self.stop_installed then nm.remove_stop_handler() end
  return self:path("results.json")
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
