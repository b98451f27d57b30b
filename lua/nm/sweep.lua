-- nm/sweep.lua: runs any experiment over a grid of options x seeds as
-- parallel worker processes, one per cell:
--
--   ./neuromic <experiment> --<name>=<value>... --seed=S --out=DIR/cells/<id>
--
-- at most `jobs` at a time. Each finished cell is appended as one JSON
-- line (options, seed, the cell's results.json) to DIR/sweep.jsonl, so an
-- interrupted sweep resumes without redoing finished cells (unfinished
-- ones continue from their own checkpoints: workers get --resume). A
-- shard I/N runs the cells whose 0-based index % N == I-1; merge()
-- gathers the shards' files into one. See doc/sweeps.md.

local nm = require "neuromic"
local json = require "nm.json"
local cli = require "nm.cli"
local progress = require "nm.progress"

local sweep = {}

local format, concat = string.format, table.concat

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function plural(n, what)
  return format("%d %s%s", n, what, n == 1 and "" or "s")
end

local function say(msg)
  io.stderr:write(msg, "\n")
  io.stderr:flush()
end

-- "1-5" / "1,3,7" / "1-3,10" -> {1, 2, ...}
function sweep.parse_seeds(s)
  local seeds = {}
  for part in tostring(s):gmatch("[^,]+") do
    local a, b = part:match("^%s*(%-?%d+)%s*%-%s*(%-?%d+)%s*$")
    if a then
      a, b = math.tointeger(tonumber(a)), math.tointeger(tonumber(b))
      if b < a then error(format("bad seed range '%s'", part), 0) end
      for x = a, b do seeds[#seeds + 1] = x end
    else
      local x = math.tointeger(tonumber(part))
      if not x then error(format("bad seed '%s' (use 1-20 or 1,2,5)", part), 0) end
      seeds[#seeds + 1] = x
    end
  end
  if #seeds == 0 then error("no seeds", 0) end
  return seeds
end

-- "name=v1,v2" (or "name=v1;v2" when values hold commas) -> {name=, values=}
function sweep.parse_set(s)
  local name, rest = s:match("^%-*([%w_%-]+)=(.*)$")
  if not name then error(format("bad --set '%s' (use NAME=V1,V2,...)", s), 0) end
  local sep = rest:find(";", 1, true) and ";" or ","
  local values = {}
  for v in (rest .. sep):gmatch("([^" .. sep .. "]*)" .. sep) do
    if v ~= "" then values[#values + 1] = v end
  end
  if #values == 0 then error(format("--set '%s' has no values", s), 0) end
  return {name = name:gsub("_", "-"), values = values}
end

local function cell_id(options_list, seed)
  local parts = {}
  for i, kv in ipairs(options_list) do parts[i] = kv[1] .. "=" .. kv[2] end
  parts[#parts + 1] = "seed=" .. seed
  local id = concat(parts, ","):gsub("[^%w%.%+%-_=,]", "_")
  if #id > 96 then
    id = format("%s~%08x", id:sub(1, 80), nm.crc32(concat(parts, ",")))
  end
  return id
end

-- sweep.cells(grid) -> list of {index (0-based), id, key, options (list of
-- {name, value} in grid order), seed}. grid: {sets = {{name=, values=}},
-- seeds = {...}}. Options vary slowest first, seeds fastest.
function sweep.cells(grid)
  local cells = {}
  local sets = grid.sets or {}
  local function rec(i, acc)
    if i > #sets then
      for _, s in ipairs(grid.seeds) do
        local opts = {}
        for j, kv in ipairs(acc) do opts[j] = kv end
        local keyt = {seed = s, options = {}}
        for _, kv in ipairs(opts) do keyt.options[kv[1]] = kv[2] end
        cells[#cells + 1] = {index = #cells, id = cell_id(opts, s), key = json.encode(keyt),
                             options = opts, seed = s}
      end
      return
    end
    for _, v in ipairs(sets[i].values) do
      acc[#acc + 1] = {sets[i].name, v}
      rec(i + 1, acc)
      acc[#acc] = nil
    end
  end
  rec(1, {})
  return cells
end

-- The interpreter running this script (arg[-n]), for the workers.
function sweep.interpreter()
  local interp = os.getenv("NEUROMIC")
  if interp and interp ~= "" then return interp end
  if arg then
    local i = -1
    while arg[i - 1] ~= nil do i = i - 1 end
    if arg[i] ~= nil and i < 0 then return arg[i] end
  end
  return "./neuromic"
end

local function read_lines_tolerant(path)
  if not exists(path) then return {} end
  local rows, warning = json.read_lines(path)
  if warning then say("warning: " .. warning) end
  return rows
end

-- sweep.read(dir) -> rows of dir/sweep.jsonl
function sweep.read(dir)
  return read_lines_tolerant(dir .. "/sweep.jsonl")
end

local function options_table(cell)
  local t = json.object()
  for _, kv in ipairs(cell.options) do t[kv[1]] = kv[2] end
  return t
end

-- Writes dir/sweep.csv from rows, ordered by cell index: index, cell,
-- seed, the options and the scalar final figures of each results.json.
local function write_csv(dir, rows)
  local sorted = {}
  for i, r in ipairs(rows) do sorted[i] = r end
  table.sort(sorted, function(a, b) return (a.index or 0) < (b.index or 0) end)
  rows = sorted
  local cols, seen = {"index", "cell", "seed"}, {}
  local opt_cols, fin_cols = {}, {}
  for _, r in ipairs(rows) do
    for k in pairs(r.options or {}) do
      if not seen["o." .. k] then seen["o." .. k] = true; opt_cols[#opt_cols + 1] = k end
    end
    local final = r.results and r.results.final or {}
    for k, v in pairs(final) do
      if type(v) ~= "table" and not seen["f." .. k] then
        seen["f." .. k] = true
        fin_cols[#fin_cols + 1] = k
      end
    end
  end
  table.sort(opt_cols)
  table.sort(fin_cols)
  local taken = {index = true, cell = true, seed = true}
  for _, k in ipairs(opt_cols) do cols[#cols + 1] = k; taken[k] = true end
  for _, k in ipairs(fin_cols) do   -- a figure named like an option gets a prefix
    cols[#cols + 1] = taken[k] and ("final." .. k) or k
  end
  local function cell_text(v)
    if v == nil or v == json.null then return "" end
    if type(v) == "number" then return json.number_text(v) end
    local s = tostring(v)
    if s:find('[,"\r\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
    return s
  end
  local lines = {concat(cols, ",")}
  for _, r in ipairs(rows) do
    local vals = {cell_text(r.index), cell_text(r.cell), cell_text(r.seed)}
    for _, k in ipairs(opt_cols) do vals[#vals + 1] = cell_text((r.options or {})[k]) end
    local final = r.results and r.results.final or {}
    for _, k in ipairs(fin_cols) do vals[#vals + 1] = cell_text(final[k]) end
    lines[#lines + 1] = concat(vals, ",")
  end
  nm.sys.atomic_write(dir .. "/sweep.csv", concat(lines, "\n") .. "\n")
end
sweep.write_csv = write_csv

local function cell_command(cfg, cell, dir)
  local cmd = {cfg.interpreter or sweep.interpreter(), cfg.experiment}
  -- --name=value, so booleans and values starting with '-' pass as given
  for _, kv in ipairs(cell.options) do cmd[#cmd + 1] = "--" .. kv[1] .. "=" .. kv[2] end
  cmd[#cmd + 1] = "--seed=" .. cell.seed
  cmd[#cmd + 1] = "--out=" .. dir
  if cfg.resume then cmd[#cmd + 1] = "--resume" end
  if cfg.quick then cmd[#cmd + 1] = "--quick" end
  -- the runner's threads shared among the cells running at once (results
  -- do not depend on it; a --threads in cfg.args comes after and wins)
  local threads = cfg.threads or cli.cores()
  cmd[#cmd + 1] = "--threads=" .. math.max(1, threads // (cfg.jobs or 1))
  for _, a in ipairs(cfg.args or {}) do cmd[#cmd + 1] = a end
  -- arguments that may change between runs of one sweep (e.g. a worker's
  -- own --jobs): not part of sweep.json
  for _, a in ipairs(cfg.runtime_args or {}) do cmd[#cmd + 1] = a end
  return cmd
end

-- What a sweep directory is bound to: written once when it is created,
-- compared on every resume.
local function manifest_of(cfg)
  return {
    experiment = cfg.experiment, sets = cfg.sets or {}, seeds = cfg.seeds,
    args = cfg.args or {}, quick = cfg.quick or false,
    shard = cfg.shard and format("%d/%d", cfg.shard.index, cfg.shard.count) or nil,
  }
end

local function shown(v)
  if v == nil then return "none" end
  return type(v) == "table" and json.encode(v) or tostring(v)
end

-- A script path spelled one way: "./x/../experiments//a.lua" and
-- "experiments/a.lua" name the same experiment (lexically; links are not
-- followed, and a relative path stays relative to the folder run from).
local function path_key(p)
  if type(p) ~= "string" then return p end
  local absolute = p:sub(1, 1) == "/"
  local parts = {}
  for part in p:gmatch("[^/]+") do
    if part == ".." and #parts > 0 and parts[#parts] ~= ".." then parts[#parts] = nil
    elseif part ~= "." then parts[#parts + 1] = part end
  end
  return (absolute and "/" or "") .. concat(parts, "/")
end
sweep.path_key = path_key

-- The fields in which two manifests differ, as "name (saved X, given Y)".
local function manifest_differences(saved, given, saved_name, given_name)
  saved_name, given_name = saved_name or "saved", given_name or "given"
  local diffs = {}
  for _, k in ipairs{"experiment", "sets", "seeds", "args", "quick", "shard"} do
    local a, b = saved[k], given[k]
    if k == "quick" then a, b = a or false, b or false end
    if k == "experiment" and path_key(a) == path_key(b) then a = b end
    if shown(a) ~= shown(b) then
      diffs[#diffs + 1] = format("%s (%s %s, %s %s)", k, saved_name, shown(a), given_name, shown(b))
    end
  end
  return diffs
end
sweep.manifest_differences = manifest_differences

-- When GIVEN only grows SAVED's grid (more values of the same sets, more
-- seeds; the same experiment, arguments and quick; no shards, whose cells
-- are dealt by position), what it adds, as text ("" when only the order
-- differs); else nil. The finished cells keep their keys, so they stay done.
local function grid_growth(saved, given)
  if saved.shard ~= nil or given.shard ~= nil then return nil end
  if path_key(saved.experiment) ~= path_key(given.experiment) or shown(saved.args) ~= shown(given.args)
     or (saved.quick or false) ~= (given.quick or false) then
    return nil
  end
  local function added(old, new)
    local have, extra = {}, {}
    for _, v in ipairs(new or {}) do have[shown(v)] = true end
    for _, v in ipairs(old or {}) do
      if not have[shown(v)] then return nil end
    end
    local known = {}
    for _, v in ipairs(old or {}) do known[shown(v)] = true end
    for _, v in ipairs(new or {}) do
      if not known[shown(v)] then extra[#extra + 1] = tostring(v) end
    end
    return extra
  end
  local a, b = saved.sets or {}, given.sets or {}
  if #a ~= #b then return nil end
  local parts = {}
  for i = 1, #a do
    if a[i].name ~= b[i].name then return nil end
    local extra = added(a[i].values, b[i].values)
    if not extra then return nil end
    if #extra > 0 then parts[#parts + 1] = format("%s + %s", a[i].name, concat(extra, ",")) end
  end
  local seeds = added(saved.seeds, given.seeds)
  if not seeds then return nil end
  if #seeds > 0 then parts[#parts + 1] = "seeds + " .. concat(seeds, ",") end
  return concat(parts, "; ")
end
sweep.grid_growth = grid_growth

-- sweep.lock(dir) -> release function. DIR/sweep.lock is held with
-- nm.sys.lock (flock: the kernel frees it when its runner dies, however it
-- dies) and names its holder; a second runner on DIR fails naming it.
function sweep.lock(dir)
  local path = dir .. "/sweep.lock"
  local f = io.open("/proc/sys/kernel/hostname", "rb")
  local host = f and f:read("l") or os.getenv("HOSTNAME") or "?"
  if f then f:close() end
  local fd, why, holder = nm.sys.lock(path, format("pid %d on %s since %s\n", nm.sys.getpid(), host, os.date("!%Y-%m-%dT%H:%M:%SZ")))
  if fd then
    return function() nm.sys.unlock(path, fd) end
  end
  if why == "busy" then
    error(format("%s is in use by another runner (%s); wait for it to end or choose another --out",
                 dir, ((holder or ""):gsub("%s+$", ""))), 0)
  end
  error(format("cannot lock %s (%s)", path, tostring(why)), 0)
end

-- Cuts a torn last line (no newline: the runner was killed mid-write) off
-- DIR/sweep.jsonl, so that appending continues a readable file.
local function cut_torn_line(path)
  local f = io.open(path, "rb")
  if not f then return end
  local s = f:read("a")
  f:close()
  if s == "" or s:sub(-1) == "\n" then return end
  local keep = s:match("^(.*\n)") or ""
  say(format("sweep: cutting off a torn last line of %s (%d bytes at offset %d)", path, #s - #keep, #keep))
  nm.sys.atomic_write(path, keep)
end
sweep.cut_torn_line = cut_torn_line

-- sweep.run(cfg) -> summary {done =, ran =, failed =, stopped = signal
-- name or nil, total =}. cfg: experiment (script path), sets, seeds, args
-- (extra arguments for every cell), quick, out (directory), jobs, threads
-- (default the processors; each cell gets threads // jobs), shard
-- = {index =, count =}, resume, interpreter, quiet. The directory's grid
-- (sweep.json) is written when it is created; a resume with another grid,
-- shard or arguments is refused, and so is a second runner.
function sweep.run(cfg)
  local dir = assert(cfg.out, "sweep.run: cfg.out is required")
  if dir == "" then error("--out needs a folder name, got ''", 0) end
  local release = nil
  local ok, res = pcall(function()
    local manifest_path = dir .. "/sweep.json"
    if not cfg.resume and (exists(manifest_path) or exists(dir .. "/sweep.jsonl")) then
      error(format("%s already holds a sweep; continue it with --resume or choose another --out", dir), 0)
    end
    nm.sys.mkdir(dir .. "/cells")
    release = sweep.lock(dir)
    local given = manifest_of(cfg)
    if exists(manifest_path) then
      local saved = json.read_file(manifest_path)
      local diffs = manifest_differences(saved, given)
      local growth = #diffs > 0 and grid_growth(saved, given)
      if growth then
        nm.sys.atomic_write(manifest_path, json.encode(given, {indent = 2}) .. "\n")
        if not cfg.quiet then
          say(format("sweep %s: grid grown (%s); its finished cells are kept", dir,
                     growth ~= "" and growth or "values reordered"))
        end
      elseif #diffs > 0 then
        error(format("%s was created for another sweep: %s; resume it as it was, grow its grid " ..
                     "(more values or seeds, unsharded), or use another --out",
                     dir, concat(diffs, "; ")), 0)
      end
    else
      nm.sys.atomic_write(manifest_path, json.encode(given, {indent = 2}) .. "\n")
    end
    cut_torn_line(dir .. "/sweep.jsonl")
    return sweep.run_locked(cfg, dir)
  end)
  if release then release() end
  if not ok then error(res, 0) end
  return res
end

function sweep.run_locked(cfg, dir)
  local jobs = cfg.jobs or 1
  local shard_text = cfg.shard and format("%d/%d", cfg.shard.index, cfg.shard.count) or nil
  local all = sweep.cells(cfg)
  local mine = {}
  for _, c in ipairs(all) do
    if not cfg.shard or c.index % cfg.shard.count == cfg.shard.index - 1 then mine[#mine + 1] = c end
  end
  local done = {}
  for _, r in ipairs(sweep.read(dir)) do
    if type(r) == "table" and r.key then done[r.key] = true end
  end
  local pending = {}
  for _, c in ipairs(mine) do
    if not done[c.key] then pending[#pending + 1] = c end
  end
  local summary = {total = #mine, done = #mine - #pending, ran = 0, failed = 0}
  if not cfg.quiet then
    say(format("sweep %s: %d cells%s, %d already done, %d to run with %d jobs",
               dir, #mine, shard_text and (" in shard " .. shard_text) or "",
               summary.done, #pending, jobs))
  end

  nm.sys.install_stop_handler()
  local bar = progress.new{total = #mine, label = "sweep"}
  bar:update(summary.done)
  local running, nrunning = {}, 0
  local next_cell = 1
  local stopping = nil

  local function finish_cell(pid, status, signame, cpu)
    local r = running[pid]
    running[pid] = nil
    nrunning = nrunning - 1
    local c = r.cell
    local elapsed = nm.sys.clock() - r.start
    if status == 0 then
      local ok, res = pcall(json.read_file, r.dir .. "/results.json")
      if ok then
        local line = json.encode({
          index = c.index, cell = c.id, key = c.key, experiment = cfg.experiment,
          options = options_table(c), seed = c.seed, dir = r.dir, results = res,
          elapsed_s = elapsed, cpu_s = cpu,
        })
        nm.sys.append_file(dir .. "/sweep.jsonl", line .. "\n")   -- whole or not at all
        summary.done = summary.done + 1
        summary.ran = summary.ran + 1
        if not cfg.quiet and not bar.enabled then
          say(format("[%d/%d] %s done in %.1fs", summary.done, summary.total, c.id, elapsed))
        end
        bar:update(summary.done, c.id)
        return
      end
      status = -1
      signame = "unreadable results.json: " .. tostring(res)
    end
    if stopping then return end   -- interrupted on purpose; resumable
    summary.failed = summary.failed + 1
    nm.sys.append_file(dir .. "/failures.jsonl", json.encode({index = c.index, cell = c.id,
                   key = c.key, exit = status, signal = signame, log = r.dir .. "/log.txt"}) .. "\n")
    say(format("sweep: cell %s failed (%s); see %s/log.txt", c.id,
               signame or ("exit status " .. status), r.dir))
  end

  while true do
    local stop, signame = nm.sys.stop_requested()
    if stop and not stopping then
      stopping = signame
      say(format("sweep: %s, asking %d running cells to checkpoint and stop", signame, nrunning))
      for pid in pairs(running) do nm.sys.kill(pid, "TERM") end
    end
    while not stopping and nrunning < jobs and next_cell <= #pending do
      local c = pending[next_cell]
      next_cell = next_cell + 1
      local cdir = dir .. "/cells/" .. c.id
      nm.sys.mkdir(cdir)
      local cmd = cell_command(cfg, c, cdir)
      local ok, pid = pcall(nm.sys.spawn, cmd, cdir .. "/log.txt")
      if not ok then
        nm.sys.remove_stop_handler()
        error(pid, 0)
      end
      running[pid] = {cell = c, dir = cdir, start = nm.sys.clock()}
      nrunning = nrunning + 1
    end
    if nrunning == 0 then break end
    -- Poll our own workers only (never reap a child someone else owns);
    -- polling also notices a stop request within 20 ms.
    local reaped = false
    local pids = {}
    for pid in pairs(running) do pids[#pids + 1] = pid end
    table.sort(pids)
    for _, pid in ipairs(pids) do
      -- nm.sys.wait reaps this one worker, so the children's CPU time grows
      -- by exactly its own (and that of the processes it waited for)
      local cpu0 = nm.sys.children_cpu()
      local done, status, sig = nm.sys.wait(pid, true)
      if done then
        finish_cell(done, status, sig, nm.sys.children_cpu() - cpu0)
        reaped = true
      end
    end
    if not reaped then nm.sys.sleep(0.02) end
  end
  nm.sys.remove_stop_handler()
  bar:finish()
  local rows = sweep.read(dir)
  write_csv(dir, rows)
  -- failures.jsonl lists the cells that are still failed, not those a
  -- later run finished
  if exists(dir .. "/failures.jsonl") then
    local finished, last, order = {}, {}, {}
    for _, r in ipairs(rows) do if type(r) == "table" and r.key then finished[r.key] = true end end
    for _, r in ipairs(read_lines_tolerant(dir .. "/failures.jsonl")) do
      if type(r) == "table" and r.key and not finished[r.key] then
        if not last[r.key] then order[#order + 1] = r.key end
        last[r.key] = r                           -- the latest failure of each cell
      end
    end
    local kept = {}
    for i, k in ipairs(order) do kept[i] = json.encode(last[k]) .. "\n" end
    nm.sys.atomic_write(dir .. "/failures.jsonl", concat(kept))
  end
  summary.stopped = stopping
  if not cfg.quiet then
    if stopping then
      -- (an experiment's own grid: sweep.grid says how to continue it)
      say(format("sweep stopped by %s after %d of %d cells%s", stopping, summary.done, summary.total,
                 cfg.grid and "" or format("; continue with:\n  %s", cfg.resume_command or
                   format("%s %s --resume --out %s", sweep.interpreter(), (arg and arg[0]) or
                          "experiments/sweep.lua", dir))))
    else
      say(format("sweep %s: %d of %d cells done, %d failed; results in %s/sweep.jsonl",
                 dir, summary.done, summary.total, summary.failed, dir))
    end
  end
  return summary
end

-- sweep.merge(dirs, out) -> rows, problems, written. Gathers sweep.jsonl of each
-- shard directory, one line per cell, ordered by cell index, into
-- out/sweep.jsonl and out/sweep.csv. problems lists, one line each,
-- shards of another grid or with other arguments, cells recorded twice
-- with different results, and cells of the grid that no shard finished
-- (with the shard and the command that runs them). Nothing is written
-- when shards disagree; missing cells still leave the partial merge.
-- expect: the manifest (sweep.json less the shard) the shards must have;
-- rerun(shard, dir): the command that finishes a shard's missing cells
-- (default: sweep.lua --resume on the shard's folder).
function sweep.merge(dirs, out, expect, rerun)
  local by_key, rows, problems = {}, {}, {}
  local manifest, first, conflict = nil, nil, false
  local shard_dir = {}          -- "I/N" -> directory
  local interp = sweep.interpreter()
  for _, d in ipairs(dirs) do
    local mpath = d .. "/sweep.json"
    if not exists(mpath) then
      error(format("%s holds no sweep (no sweep.json)", d), 0)
    end
    local m = json.read_file(mpath)
    if m.shard then shard_dir[m.shard] = d end
    if manifest == nil then manifest, first = m, d
    else
      local a, b = {}, {}
      for k, v in pairs(manifest) do a[k] = v end
      for k, v in pairs(m) do b[k] = v end
      local sa, sb = a.shard and a.shard:match("/(%d+)$"), b.shard and b.shard:match("/(%d+)$")
      a.shard, b.shard = sa, sb       -- the shard count must agree, the index not
      local diffs = manifest_differences(a, b, first, d)
      if #diffs > 0 then
        conflict = true
        problems[#problems + 1] = format("%s is not a shard of the sweep in %s: %s", d, first,
                                         concat(diffs, "; "))
      end
    end
    for _, r in ipairs(sweep.read(d)) do
      if type(r) == "table" and r.key then
        local seen = by_key[r.key]
        if not seen then
          by_key[r.key] = {row = r, dir = d}
          rows[#rows + 1] = r
        elseif json.encode((r.results or {}).final) ~= json.encode((seen.row.results or {}).final) then
          conflict = true
          problems[#problems + 1] = format("cell %s has different results in %s and %s",
                                           r.cell, seen.dir, d)
        end
      end
    end
  end
  if expect and manifest then
    local a, b = {}, {}
    for k, v in pairs(manifest) do a[k] = v end
    for k, v in pairs(expect) do b[k] = v end
    a.shard, b.shard = nil, nil
    local diffs = manifest_differences(a, b, "shards", "this run")
    if #diffs > 0 then
      conflict = true
      problems[#problems + 1] = format("%s holds the grid of other options: %s", first,
                                       concat(diffs, "; "))
    end
  end
  if conflict then return rows, problems, false end
  table.sort(rows, function(a, b)
    if a.index ~= b.index then return (a.index or 0) < (b.index or 0) end
    return a.key < b.key
  end)
  nm.sys.mkdir(out)
  local lines = {}
  for i, r in ipairs(rows) do lines[i] = json.encode(r) .. "\n" end
  nm.sys.atomic_write(out .. "/sweep.jsonl", concat(lines))
  write_csv(out, rows)
  local m = {}
  for k, v in pairs(manifest) do m[k] = v end
  local count = m.shard and math.tointeger(tonumber(m.shard:match("/(%d+)$")))
  m.shard = nil
  nm.sys.atomic_write(out .. "/sweep.json", json.encode(m, {indent = 2}) .. "\n")
  for _, c in ipairs(sweep.cells(m)) do
    if not by_key[c.key] then
      local where
      if count then
        local s = format("%d/%d", c.index % count + 1, count)
        local d = shard_dir[s]
        where = d and format("shard %s: rerun %s", s, rerun and rerun(s, d) or
                             format("%s experiments/sweep.lua --resume --out %s", interp, d))
                  or format("shard %s, not given to merge: run it with --shard %s", s, s)
      else
        where = format("rerun %s experiments/sweep.lua --resume --out %s", interp, first)
      end
      problems[#problems + 1] = format("cell %s (index %d) has no result; %s", c.id, c.index, where)
    end
  end
  return rows, problems, true
end

-- The grid folder inside a shard folder given to --merge: DIR/grid
-- (where sweep.grid puts an experiment's grid) or DIR itself.
local function grid_folder(d)
  if not exists(d .. "/sweep.json") and exists(d .. "/grid/sweep.json") then return d .. "/grid" end
  return d
end

-- sweep.grid(run, opts, grid) -> rows of the whole grid (sweep.jsonl
-- lines, in cell order), summary. The one way an experiment runs its
-- own grid of cells -- worker processes of itself, one per cell -- so
-- that the grid shards and merges like any sweep. run: the experiment's
-- run (nm.results); opts: its options (cli spec grid = true: --jobs,
-- --shard, --merge DIR...); grid: experiment (the script, arg[0]), sets,
-- seeds, args (for every cell: what makes the script a worker), dir
-- (default run:path("grid")), quiet.
--   plain:           runs every cell not yet in dir, then returns the rows.
--   --shard I/N:     runs this shard's cells into dir, finishes the run as
--                    a shard (final: shard, grid_dir, cells) and exits 0:
--                    the experiment's tables and plots are the merge's.
--   --merge DIR...:  gathers the grids of the shard folders (DIR/grid, or
--                    DIR when it is a grid folder) into dir, refusing shards
--                    of another grid or options, and returns the rows.
-- A stop (SIGINT/SIGTERM), failed cells or a merge with problems end the
-- script (130/143; 1 with the run failed); the messages say how to go on.
function sweep.grid(run, opts, grid)
  local dir = grid.dir or run:path("grid")
  local name = opts._name or "experiment"
  local cfg = {experiment = grid.experiment, sets = grid.sets or {}, seeds = grid.seeds,
               args = grid.args or {}, out = dir, jobs = opts.jobs or 1, threads = opts.threads,
               shard = opts.shard,
               quiet = grid.quiet, grid = true}
  local merged_from, shard_of_grid = {}, {}
  for i, d in ipairs(opts.merge and opts._args or {}) do
    merged_from[i] = grid_folder(d)
    shard_of_grid[merged_from[i]] = d
  end
  -- A shard of an experiment's grid is finished by the experiment's own
  -- command on the folder the user gave, not by sweep.lua on its grid.
  local function rerun(s, d)
    return format("%s %s --shard %s --out %s --resume (and the same options)", sweep.interpreter(),
                  grid.experiment, s, shard_of_grid[d] or d)
  end
  local summary
  if opts.merge then
    -- A merge that cannot finish leaves the run unbegun: merging again
    -- into the same --out needs neither --resume nor --overwrite.
    local ok, rows, problems, written = pcall(sweep.merge, merged_from, dir, manifest_of(cfg), rerun)
    if not ok then
      run:close()
      cli.error(rows)
    end
    for _, p in ipairs(problems) do say(name .. ": merge: " .. p) end
    if #problems > 0 then
      run:close()
      cli.error(format("merge: %s; %s", plural(#problems, "problem"), written and
                       format("%s holds the %d cells found; merge again when the shards are complete",
                              dir, #rows) or "nothing merged"), 1)
    end
    summary = {total = #rows, done = #rows, ran = 0, failed = 0}
    if not cfg.quiet then
      say(format("%s: merged %d cells from %d shards into %s", name, #rows, #merged_from, dir))
    end
  else
    cfg.resume = exists(dir .. "/sweep.json")
    local ok, res = pcall(sweep.run, cfg)
    if not ok then run:fail(res, 2) end
    summary = res
    if summary.stopped then
      run:write("stopped")
      run:close()
      say(format("%s: stopped; continue with the same command and --resume", name))
      os.exit(summary.stopped == "SIGINT" and 130 or 143)
    end
    if summary.failed > 0 then
      run:fail(format("%s of the grid failed; see %s/failures.jsonl", plural(summary.failed, "cell"), dir))
    end
  end
  run:set("grid_dir", dir)
  run:set("grid_cells_run", summary.ran)
  if opts.shard then
    local shard = format("%d/%d", opts.shard.index, opts.shard.count)
    run:finish{shard = shard, grid_cells = summary.total}
    if not cfg.quiet then
      say(format("%s: shard %s done (%d cells in %s); when every shard is done, gather them with\n" ..
                 "  ./neuromic %s --merge SHARD_FOLDERS... --out DIR (and the same options)",
                 name, shard, summary.total, dir, grid.experiment))
    end
    os.exit(0)
  end
  local rows = {}
  for _, r in ipairs(sweep.read(dir)) do
    if type(r) == "table" and r.key then rows[#rows + 1] = r end
  end
  table.sort(rows, function(a, b) return (a.index or 0) < (b.index or 0) end)   -- finishing order aside
  return rows, summary
end

local SPEC = {
  name = "sweep",
  jobs = true, shard = true,
  script = "experiments/sweep.lua",
  description = [[
Runs EXPERIMENT over a grid of options x seeds, each cell a worker process
(./neuromic EXPERIMENT --NAME=VALUE... --seed=S --out=DIR/cells/ID), at most
--jobs at a time. Finished cells are appended to DIR/sweep.jsonl (summary
in DIR/sweep.csv); --resume continues an interrupted sweep without redoing
finished cells. --shard I/N runs the cells with index % N == I-1, and
  ./neuromic experiments/sweep.lua merge DIR1 DIR2 ... --out DIR
gathers the shards. --quick is passed on to every cell, and so is
everything after "--". Recipes for Slurm and GNU parallel: doc/sweeps.md.]],
  positional = "EXPERIMENT | merge DIR...",
  passthrough = "ARGS for every cell",
  options = {
    {name = "set", type = "string", multi = true, metavar = "NAME=V1,V2",
     help = "values of one experiment option (repeat for a grid; ';' separates values that hold commas)"},
    {name = "seeds", type = "string", metavar = "LIST",
     help = "seeds of every grid point, as 1-20 or 1,2,5 [default: --seed]"},
    {name = "list", type = "bool", default = false, help = "print the cells of this shard and exit"},
  },
}

local function experiment_name(path)
  return (tostring(path):match("([^/]+)%.lua$") or tostring(path):match("([^/]+)$") or "sweep")
end

-- sweep.main(argv) -> exit status: the command line of experiments/sweep.lua.
function sweep.main(argv)
  local spec = {}
  for k, v in pairs(SPEC) do spec[k] = v end
  local opts, msg, code = cli.try_parse(argv, spec)
  if not opts then
    if code == 0 then io.stdout:write(msg) else say(msg) end
    return code
  end
  local ok, result = pcall(function()
    local pos = opts._args
    if pos[1] == "merge" then
      if #pos < 2 then error("merge needs one or more sweep directories", 0) end
      if not opts._explicit.out then error("merge needs --out DIR", 0) end
      local dirs = {table.unpack(pos, 2)}
      local rows, problems, written = sweep.merge(dirs, opts.out)
      for _, p in ipairs(problems) do say("merge: " .. p) end
      if #problems > 0 then
        say(format("merge: %s; %s", plural(#problems, "problem"), written
                   and format("%s holds the %d cells found", opts.out, #rows) or "nothing written"))
        return 1
      end
      say(format("merged %d cells from %d directories into %s/sweep.jsonl", #rows, #dirs, opts.out))
      return 0
    end
    if #pos > 1 then error("one experiment at a time (got " .. concat(pos, " ") .. ")", 0) end
    local cfg = {
      experiment = pos[1], jobs = opts.jobs, shard = opts.shard, resume = opts.resume,
      quick = opts.quick, args = opts._rest, threads = opts.threads,
    }
    local out_default = cfg.experiment and ("results/sweep-" .. experiment_name(cfg.experiment))
    cfg.out = opts._explicit.out and opts.out or out_default
    -- `--resume --out DIR` alone continues the sweep described in DIR.
    if cfg.experiment == nil then
      if not (opts.resume and opts._explicit.out) then
        error("which experiment? (usage: sweep.lua EXPERIMENT --set NAME=V1,V2 ... or --resume --out DIR)", 0)
      end
      if not exists(cfg.out .. "/sweep.json") then
        -- A runner that has just taken the lock may not have written
        -- sweep.json yet: name it rather than a missing file.
        if exists(cfg.out .. "/sweep.lock") then sweep.lock(cfg.out)() end
        error(format("%s holds no sweep (no sweep.json); start one with sweep.lua EXPERIMENT --out %s",
                     cfg.out, cfg.out), 0)
      end
      local m = json.read_file(cfg.out .. "/sweep.json")
      cfg.experiment, cfg.sets, cfg.seeds = m.experiment, m.sets, m.seeds
      cfg.args = (#opts._rest > 0) and opts._rest or m.args
      cfg.quick = opts.quick or m.quick
      if not opts._explicit.shard and m.shard then
        local i, n = m.shard:match("^(%d+)/(%d+)$")
        cfg.shard = {index = tonumber(i), count = tonumber(n)}
      end
    else
      if not exists(cfg.experiment) then error("no such experiment script: " .. cfg.experiment, 0) end
      cfg.sets = {}
      for _, s in ipairs(opts.set) do cfg.sets[#cfg.sets + 1] = sweep.parse_set(s) end
      cfg.seeds = opts.seeds and sweep.parse_seeds(opts.seeds) or {opts.seed}
    end
    if opts.list then
      for _, c in ipairs(sweep.cells(cfg)) do
        if not cfg.shard or c.index % cfg.shard.count == cfg.shard.index - 1 then
          print(c.index, c.id, concat(cell_command(cfg, c, cfg.out .. "/cells/" .. c.id), " "))
        end
      end
      return 0
    end
    local summary = sweep.run(cfg)
    if summary.stopped then
      return summary.stopped == "SIGINT" and 130 or 143
    end
    return summary.failed > 0 and 1 or 0
  end)
  if not ok then
    say("sweep: " .. tostring(result))
    return 2
  end
  return result
end

return sweep
