-- nm/reproduce.lua: runs every paper result of a registry through the
-- sweep runner (nm.sweep: resume, --jobs, shards) and writes, from the
-- runs, one report per family: paper vs ours, mean +- 95% confidence
-- interval over seeds (Student t), the test deciding each claim, plots,
-- wall and CPU time, the exact commands. experiments/reproduce.lua is its
-- command line; the registry is experiments/reproduce/<family>.lua (one
-- file per family; doc/reproduce.md describes the format).
--
--   local reproduce = require "nm.reproduce"
--   local families = reproduce.load("experiments/reproduce")
--   reproduce.main(arg)
--
-- A result is one sweep: an experiment, its arguments, an optional grid
-- and the seeds. Its measures pick numbers out of each cell's
-- results.json; its claims compare measures with a t-test over seeds
-- (paired when both come from the same cells, Welch otherwise, or
-- one-sample against a constant), one-sided at ALPHA, or an equivalence
-- test (two one-sided tests) for "within".

local nm = require "neuromic"
local json = require "nm.json"
local cli = require "nm.cli"
local sweep = require "nm.sweep"
local stats = require "nm.stats"
local plot = require "nm.plot"

local reproduce = {}

local format, concat = string.format, table.concat

reproduce.ALPHA = 0.05
reproduce.LEVEL = 0.95
reproduce.CORES = 2           -- the estimates are for this many cores

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function say(msg)
  io.stderr:write(msg, "\n")
  io.stderr:flush()
end

-- ------------------------------------------------------------ registry

local RELATIONS = {[">"] = true, ["<"] = true, within = true}

local function fail_in(file, msg)
  error(format("%s: %s", file, msg), 0)
end

local function check_strings(file, what, list)
  if list == nil then return end
  if type(list) ~= "table" then fail_in(file, what .. " must be a list of strings") end
  for i, a in ipairs(list) do
    if type(a) ~= "string" then fail_in(file, format("%s[%d] must be a string", what, i)) end
  end
end

-- Seeds as a list of integers, from a list or a "1-5" / "1,3" string.
local function seed_list(file, what, s)
  if type(s) == "table" then
    for i, x in ipairs(s) do
      if math.type(x) ~= "integer" then fail_in(file, format("%s[%d] must be an integer", what, i)) end
    end
    if #s == 0 then fail_in(file, what .. " is empty") end
    return s
  end
  local ok, res = pcall(sweep.parse_seeds, s)
  if not ok then fail_in(file, format("%s: %s", what, res)) end
  return res
end

-- Grid axes {{name, {v1, v2}}, ...} -> sweep sets {{name =, values = strings}}.
local function sets_of(file, what, t)
  local sets = {}
  for i, axis in ipairs(t or {}) do
    if type(axis) ~= "table" or type(axis[1]) ~= "string" or type(axis[2]) ~= "table" or #axis[2] == 0 then
      fail_in(file, format("%s[%d] must be {NAME, {VALUES...}}", what, i))
    end
    local values = {}
    for j, v in ipairs(axis[2]) do values[j] = tostring(v) end
    sets[i] = {name = axis[1]:gsub("_", "-"), values = values}
  end
  return sets
end

-- "{name}" in s replaced by vars[name] (a form's variables, such as the
-- data set: mnist at full scale, mnist-subset in the quick form).
local function subst(s, vars, file, where)
  return (s:gsub("{([%w_]+)}", function(k)
    local v = vars[k]
    if v == nil then fail_in(file, format("%s: no variable {%s} in this form (vars = {...})", where, k)) end
    return tostring(v)
  end))
end

local function subst_all(list, vars, file, where)
  local out = {}
  for i, a in ipairs(list) do out[i] = subst(a, vars, file, where) end
  return out
end

-- Validates one family table (from `file`) and fills in the defaults:
-- result.full and result.quick_form, each {args, seeds, sets, vars}.
local function check_family(fam, file)
  if type(fam) ~= "table" then fail_in(file, "must return a table") end
  for _, k in ipairs{"family", "title", "paper"} do
    if type(fam[k]) ~= "string" or fam[k] == "" then fail_in(file, format("needs %s = \"...\"", k)) end
  end
  if not fam.family:match("^[%w_%-]+$") then fail_in(file, "family must be a plain name") end
  if type(fam.results) ~= "table" or #fam.results == 0 then fail_in(file, "needs results = {...}") end
  local names = {}
  for i, r in ipairs(fam.results) do
    local where = format("results[%d]", i)
    if type(r) ~= "table" then fail_in(file, where .. " must be a table") end
    if type(r.name) ~= "string" or not r.name:match("^[%w_%-]+$") then
      fail_in(file, where .. ": name must be a plain name (letters, digits, - and _)")
    end
    where = format("result '%s'", r.name)
    if names[r.name] then fail_in(file, where .. " is given twice") end
    names[r.name] = true
    for _, k in ipairs{"figure", "experiment"} do
      if type(r[k]) ~= "string" or r[k] == "" then fail_in(file, format("%s needs %s = \"...\"", where, k)) end
    end
    check_strings(file, where .. ".args", r.args)
    local vars = r.vars or {}
    r.full = {args = subst_all(r.args or {}, vars, file, where .. ".args"),
              seeds = seed_list(file, where .. ".seeds", r.seeds or {1}),
              sets = sets_of(file, where .. ".sets", r.sets), vars = vars}
    local q = r.quick
    if type(q) ~= "table" then
      fail_in(file, where .. " needs quick = {args = {...}, seeds = ...}: the form the spec runs")
    end
    check_strings(file, where .. ".quick.args", q.args)
    local qvars = {}
    for k, v in pairs(vars) do qvars[k] = v end
    for k, v in pairs(q.vars or {}) do qvars[k] = v end
    r.quick_form = {args = subst_all(q.args or r.args or {}, qvars, file, where .. ".quick.args"),
                    seeds = seed_list(file, where .. ".quick.seeds", q.seeds or {1, 2}),
                    sets = q.sets and sets_of(file, where .. ".quick.sets", q.sets) or r.full.sets,
                    vars = qvars}
    check_strings(file, where .. ".jobs_arg", r.jobs_arg and {r.jobs_arg} or nil)
    if r.estimate_s ~= nil and (type(r.estimate_s) ~= "number" or r.estimate_s <= 0) then
      fail_in(file, where .. ".estimate_s must be the CPU seconds of one cell (> 0)")
    end
    r.measures = r.measures or {}
    if #r.measures == 0 and not r.findings then
      fail_in(file, where .. " needs measures = {...} or findings = PATH")
    end
    local mnames = {}
    for j, m in ipairs(r.measures) do
      if type(m) ~= "table" or type(m.name) ~= "string" or not m.name:match("^[%w_%-]+$") then
        fail_in(file, format("%s.measures[%d] needs name = \"plain_name\"", where, j))
      end
      if mnames[m.name] then fail_in(file, format("%s: measure '%s' is given twice", where, m.name)) end
      mnames[m.name] = true
      if type(m.label) ~= "string" then fail_in(file, format("%s: measure '%s' needs label", where, m.name)) end
      if type(m.path) ~= "string" and type(m.get) ~= "function" then
        fail_in(file, format("%s: measure '%s' needs path = \"final....\" or get = function(results, row)",
                             where, m.name))
      end
      if m.paper ~= nil and type(m.paper) ~= "number" and type(m.paper) ~= "string" then
        fail_in(file, format("%s: measure '%s': paper must be a number or a text", where, m.name))
      end
    end
    for j, c in ipairs(r.claims or {}) do
      local cw = format("%s.claims[%d]", where, j)
      if type(c) ~= "table" or type(c.text) ~= "string" then fail_in(file, cw .. " needs text") end
      if not RELATIONS[c.relation] then fail_in(file, cw .. ": relation must be '>', '<' or 'within'") end
      if not mnames[c.a] then fail_in(file, format("%s: a = '%s' is not a measure of this result", cw, tostring(c.a))) end
      if c.b ~= nil and not mnames[c.b] then
        fail_in(file, format("%s: b = '%s' is not a measure of this result", cw, tostring(c.b)))
      end
      if c.b == nil and type(c.value) ~= "number" then fail_in(file, cw .. " needs b = MEASURE or value = NUMBER") end
      if c.relation == "within" and not (type(c.delta) == "number" and c.delta > 0) then
        fail_in(file, cw .. ": 'within' needs delta > 0 (the margin)")
      end
      if c.delta ~= nil and type(c.delta) ~= "number" then fail_in(file, cw .. ": delta must be a number") end
      if c.test ~= nil and c.test ~= "fisher" then fail_in(file, cw .. ": test must be \"fisher\" or absent (a t-test)") end
      if c.test == "fisher" and (c.b == nil or c.relation == "within") then
        fail_in(file, cw .. ": test = \"fisher\" compares the counts of two 0/1 measures: b = MEASURE, relation '<' or '>'")
      end
    end
    if r.findings ~= nil and type(r.findings) ~= "string" then
      fail_in(file, where .. ".findings must be a path to a list of {claim, verdict, detail}")
    end
  end
  return fam
end
reproduce.check_family = check_family

-- reproduce.load(dir) -> families, sorted by `order` then name. Each file
-- dir/*.lua returns one family table.
function reproduce.load(dir)
  local files = {}
  local names, why = nm.sys.listdir(dir)
  if not names then error(format("cannot read the registry %s: %s", dir, tostring(why)), 0) end
  for _, name in ipairs(names) do
    if name:match("^[%w_%-]+%.lua$") then files[#files + 1] = name end
  end
  if #files == 0 then error(format("no family files (*.lua) in %s", dir), 0) end
  local families, seen = {}, {}
  for _, f in ipairs(files) do
    local path = dir .. "/" .. f
    local chunk, err = loadfile(path)
    if not chunk then error(err, 0) end
    local ok, fam = pcall(chunk)
    if not ok then error(format("%s: %s", path, tostring(fam)), 0) end
    check_family(fam, path)
    if fam.family .. ".lua" ~= f then fail_in(path, format("family '%s' must live in %s.lua", fam.family, fam.family)) end
    if seen[fam.family] then fail_in(path, "family given twice") end
    seen[fam.family] = true
    fam.file = path
    families[#families + 1] = fam
  end
  table.sort(families, function(a, b)
    local oa, ob = a.order or 1000, b.order or 1000
    if oa ~= ob then return oa < ob end
    return a.family < b.family
  end)
  return families
end

-- ------------------------------------------------------------ measures

-- Splits "final.a.b[k=v,k2=v2].c" into {{key, selector}, ...}.
local function parse_path(path)
  local segs, pos = {}, 1
  while pos <= #path do
    local key, sel, nxt = path:match("^([^%.%[]+)%[([^%]]*)%]()", pos)
    if not key then key, nxt = path:match("^([^%.%[]+)()", pos) end
    if not key then error(format("bad path '%s' at character %d", path, pos), 0) end
    local selector
    if sel then
      selector = {}
      for kv in sel:gmatch("[^,]+") do
        local k, v = kv:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
        if not k then error(format("bad selector '[%s]' in '%s' (use [key=value,...])", sel, path), 0) end
        selector[#selector + 1] = {k, v}
      end
    end
    segs[#segs + 1] = {key, selector}
    pos = nxt
    if path:sub(pos, pos) == "." then pos = pos + 1 elseif pos <= #path then
      error(format("bad path '%s' at character %d", path, pos), 0)
    end
  end
  return segs
end

-- The value at `path` in t, or nil and the reason.
function reproduce.lookup(t, path)
  local cur = t
  for _, seg in ipairs(parse_path(path)) do
    if type(cur) ~= "table" then return nil, format("no '%s' in %s", seg[1], path) end
    cur = cur[seg[1]]
    if seg[2] then
      if type(cur) ~= "table" then return nil, format("'%s' is not a list in %s", seg[1], path) end
      local found
      for _, item in ipairs(cur) do
        local match = type(item) == "table"
        for _, kv in ipairs(seg[2]) do
          match = match and tostring(item[kv[1]]) == kv[2]
        end
        if match then
          if found then return nil, format("several items of '%s' match in %s", seg[1], path) end
          found = item
        end
      end
      cur = found
    end
    if cur == nil then return nil, format("nothing at %s", path) end
  end
  return cur
end

local function row_matches(row, where)
  for k, v in pairs(where or {}) do
    if tostring((row.options or {})[k:gsub("_", "-")]) ~= tostring(v) then return false end
  end
  return true
end

-- Values of measure m over rows: {seed -> number}, list of problems.
-- vars: the form's variables, substituted into m.path and m.where.
local function measure_values(m, rows, vars)
  local by_seed, problems = {}, {}
  local path = m.path and m.path:gsub("{([%w_]+)}", function(k) return tostring(vars[k] or ("{" .. k .. "}")) end)
  local where = {}
  for k, v in pairs(m.where or {}) do
    where[k] = tostring(v):gsub("{([%w_]+)}", function(x) return tostring(vars[x] or ("{" .. x .. "}")) end)
  end
  for _, row in ipairs(rows) do
    if row_matches(row, where) then
      local v, why
      if m.get then
        local ok, res = pcall(m.get, row.results, row)
        if ok then v = res else why = tostring(res) end
      else
        v, why = reproduce.lookup(row.results, path)
      end
      if type(v) ~= "number" or v ~= v then
        problems[#problems + 1] = format("%s, seed %s: %s", m.name, tostring(row.seed),
                                         why or ("not a number: " .. tostring(v)))
      else
        if by_seed[row.seed] ~= nil then
          problems[#problems + 1] = format("%s: seed %s matches several cells (add where = {...})",
                                           m.name, tostring(row.seed))
        end
        by_seed[row.seed] = v * (m.scale or 1)
      end
    end
  end
  return by_seed, problems
end

local function sorted_seeds(by_seed)
  local seeds = {}
  for s in pairs(by_seed) do seeds[#seeds + 1] = s end
  table.sort(seeds)
  return seeds
end

-- {n, mean, half, low, high, sd, values (by seed order), seeds}
local function summarize(by_seed)
  local seeds = sorted_seeds(by_seed)
  local xs = {}
  for i, s in ipairs(seeds) do xs[i] = by_seed[s] end
  local out = {n = #xs, values = xs, seeds = seeds}
  if #xs >= 2 then
    local c = stats.mean_ci(xs, reproduce.LEVEL)
    out.mean, out.half, out.low, out.high, out.sd = c.mean, c.half, c.lo, c.hi, c.sd
  elseif #xs == 1 then
    out.mean = xs[1]
  end
  return out
end
reproduce.summarize = summarize

-- ------------------------------------------------------------ claims

local function fmt_p(p)
  if p == nil then return "-" end
  if p < 1e-4 then return "< 1e-4" end
  return format("%.3g", p)
end

local function fmt_num(x, digits)
  if x == nil then return "-" end
  if x ~= x then return "NaN" end
  local a = math.abs(x)
  if a ~= 0 and (a < 1e-3 or a >= 1e6) then return format("%.3e", x) end
  return format("%." .. (digits or 4) .. "g", x)
end

-- reproduce.decide(claim, a_by_seed, b_by_seed, paired) -> {test, statistic,
-- p, verdict, diff, n}. verdict: "holds", "does not hold" (the opposite
-- is significant) or "not shown" (neither), or "too few seeds". A claim
-- with test = "fisher" compares how often two 0/1 measures are 1 (such as
-- failed runs) with Fisher's exact test instead of a t-test.
function reproduce.decide(c, a, b, paired)
  local alpha = reproduce.ALPHA
  local delta = c.delta or 0
  local xs, ys, seeds = {}, {}, {}
  local constant = b == nil
  if constant or paired then
    for _, s in ipairs(sorted_seeds(a)) do
      local y = constant and c.value or b[s]
      if y ~= nil then xs[#xs + 1], ys[#ys + 1], seeds[#seeds + 1] = a[s], y, s end
    end
  else
    for _, s in ipairs(sorted_seeds(a)) do xs[#xs + 1] = a[s] end
    for _, s in ipairs(sorted_seeds(b)) do ys[#ys + 1] = b[s] end
  end
  local kind = constant and format("one-sample t-test over %d seeds against %s", #xs, fmt_num(c.value))
               or paired and format("paired t-test over %d seeds", #xs)
               or format("Welch t-test (%d and %d seeds)", #xs, #ys)
  local out = {test = kind, n = #xs}
  if #xs < 2 or #ys < 2 then
    out.verdict = "too few seeds"
    return out
  end
  if c.test == "fisher" then
    -- counts of the event (a measure of 1 per seed) in a and in b:
    -- Fisher's exact test, two-sided, of the 2 x 2 table
    local ka, kb = 0, 0
    for _, x in ipairs(xs) do ka = ka + (x ~= 0 and 1 or 0) end
    for _, y in ipairs(ys) do kb = kb + (y ~= 0 and 1 or 0) end
    out.test = format("Fisher's exact test (two-sided): %d of %d runs (%s) against %d of %d (%s)",
                      ka, #xs, c.a, kb, #ys, c.b)
    out.statistic = format("%d/%d vs %d/%d", ka, #xs, kb, #ys)
    out.p = stats.fisher_exact(ka, #xs - ka, kb, #ys - kb)
    out.diff = ka / #xs - kb / #ys
    local fewer = ka / #xs < kb / #ys
    local want_fewer = c.relation == "<"
    if out.p < alpha and fewer == want_fewer and out.diff ~= 0 then out.verdict = "holds"
    elseif out.p < alpha and out.diff ~= 0 then out.verdict = "does not hold"
    else out.verdict = "not shown" end
    return out
  end
  local function test(d)
    if paired or constant then return stats.paired_t_test(xs, ys, d) end
    return stats.welch_test(xs, ys, d)
  end
  local b_name = constant and fmt_num(c.value) or c.b
  if c.relation == "within" then
    local lo, hi = test(-delta), test(delta)
    out.diff = lo.mean or (lo.mean_x - lo.mean_y)
    out.p = math.max(lo.p_greater, hi.p_less)
    out.test = kind .. format(", equivalence (two one-sided tests): %s - %s within ±%s", c.a, b_name, fmt_num(delta))
    out.statistic = format("t = %s, %s (df %s)", fmt_num(lo.t, 3), fmt_num(hi.t, 3), fmt_num(lo.df, 3))
    if out.p < alpha then out.verdict = "holds"
    elseif lo.p_less < alpha or hi.p_greater < alpha then out.verdict = "does not hold"
    else out.verdict = "not shown" end
  else
    local r = test(delta)
    out.diff = r.mean or (r.mean_x - r.mean_y)
    local holds_p = c.relation == ">" and r.p_greater or r.p_less
    local opposite_p = c.relation == ">" and r.p_less or r.p_greater
    out.p = holds_p
    out.test = kind .. format(", one-sided: %s - %s %s %s", c.a, b_name, c.relation, fmt_num(delta))
    out.statistic = format("t = %s (df %s)", fmt_num(r.t, 3), fmt_num(r.df, 3))
    if holds_p < alpha then out.verdict = "holds"
    elseif opposite_p < alpha then out.verdict = "does not hold"
    else out.verdict = "not shown" end
    out.p_opposite = opposite_p
  end
  return out
end

-- ------------------------------------------------------------ running

local function form_of(r, quick)
  return quick and r.quick_form or r.full
end

local function result_dir(o, fam, r)
  return format("%s/%s/%s", o.out, fam.family, r.name)
end

-- The sweep configuration of result r.
local function sweep_cfg(o, fam, r, dir)
  local form = form_of(r, o.quick)
  local runtime = {}
  if r.jobs_arg then runtime[1] = format("--%s=%d", r.jobs_arg, o.jobs) end
  return {
    experiment = r.experiment, sets = form.sets, seeds = form.seeds, args = form.args,
    quick = o.quick or false, out = dir, jobs = r.jobs_arg and 1 or o.jobs, shard = o.shard,
    resume = exists(dir .. "/sweep.json"), interpreter = o.interpreter, runtime_args = runtime,
    resume_command = "the same reproduce command again",
  }
end

-- The command of one cell, as a user would type it.
local function cell_command_text(o, r, form)
  local parts = {"./neuromic", r.experiment}
  for _, a in ipairs(form.args) do parts[#parts + 1] = a end
  if o.quick then parts[#parts + 1] = "--quick" end
  for _, s in ipairs(form.sets) do parts[#parts + 1] = format("--%s=<%s>", s.name, concat(s.values, "|")) end
  parts[#parts + 1] = "--seed=<S>"
  if r.jobs_arg then parts[#parts + 1] = format("--%s=<JOBS>", r.jobs_arg) end
  parts[#parts + 1] = "--out=DIR"
  return concat(parts, " ")
end

local function seeds_text(seeds)
  local a, b = seeds[1], seeds[#seeds]
  local contiguous = true
  for i = 2, #seeds do if seeds[i] ~= seeds[i - 1] + 1 then contiguous = false end end
  if contiguous and #seeds > 2 then return format("%d-%d", a, b) end
  local t = {}
  for i, s in ipairs(seeds) do t[i] = tostring(s) end
  return concat(t, ",")
end

local function cell_count(form)
  local n = #form.seeds
  for _, s in ipairs(form.sets) do n = n * #s.values end
  return n
end

-- The rows of result r: its own directory, or the merge of its shards.
local function result_rows(o, fam, r)
  local dir = result_dir(o, fam, r)
  local rows, problems = {}, {}
  local shards = {}
  for _, name in ipairs(nm.sys.listdir(dir) or {}) do
    if name:match("^shard%-%d+$") then shards[#shards + 1] = dir .. "/" .. name end
  end
  if #shards > 0 then
    local ok, res, probs, written = pcall(sweep.merge, shards, dir .. "/merged")
    if not ok then return {}, {tostring(res)} end
    rows, problems = res, probs
    if not written then return {}, problems end
  elseif exists(dir .. "/sweep.jsonl") then
    rows = sweep.read(dir)
  end
  return rows, problems
end

-- ------------------------------------------------------------ reports

-- Per-result figures: measures, claims, times. Saved as JSON beside the
-- report, so the README table and --list need no results folder.
local function analyse(o, fam, r)
  local form = form_of(r, o.quick)
  local rows, problems = result_rows(o, fam, r)
  local out = {name = r.name, figure = r.figure, cells = cell_count(form), done = #rows,
               seeds = form.seeds, measures = {}, claims = {}, problems = problems,
               command = cell_command_text(o, r, form)}
  local wall, cpu, ncpu = 0, 0, 0
  local versions, vseen = {}, {}
  for _, row in ipairs(rows) do
    local v = type(row.results) == "table" and row.results.version
    if type(v) == "string" and not vseen[v] then vseen[v] = true; versions[#versions + 1] = v end
    wall = wall + (tonumber(row.elapsed_s) or 0)
    if tonumber(row.cpu_s) then cpu, ncpu = cpu + row.cpu_s, ncpu + 1 end
  end
  table.sort(versions)
  out.versions = versions
  out.wall_s, out.cpu_s = wall, ncpu > 0 and cpu or nil
  out.cell_cpu_s = ncpu > 0 and cpu / ncpu or nil
  out.cell_wall_s = #rows > 0 and wall / #rows or nil
  local by_name = {}
  for _, m in ipairs(r.measures) do
    local vals, probs = measure_values(m, rows, form.vars)
    for _, p in ipairs(probs) do problems[#problems + 1] = p end
    by_name[m.name] = vals
    local s = summarize(vals)
    s.name, s.label, s.paper, s.unit = m.name, m.label, m.paper, m.unit
    s.headline = m.headline
    out.measures[#out.measures + 1] = s
  end
  for _, c in ipairs(r.claims or {}) do
    local paired = c.paired
    if paired == nil then paired = true end   -- measures of one result come from the same cells
    local d = reproduce.decide(c, by_name[c.a], c.b and by_name[c.b], paired)
    d.text = c.text
    d.paper = c.paper
    out.claims[#out.claims + 1] = d
  end
  if r.findings then
    out.findings = {}
    for _, row in ipairs(rows) do
      local list = reproduce.lookup(row.results, r.findings)
      for _, f in ipairs(type(list) == "table" and list or {}) do
        out.findings[#out.findings + 1] = {claim = f.claim, verdict = f.verdict, detail = f.detail,
                                           seed = row.seed}
      end
    end
    out.findings_test = r.findings_test
  end
  -- the plots of the first seed's cell, for the report to link
  out.cell_dirs = {}
  for _, row in ipairs(rows) do out.cell_dirs[#out.cell_dirs + 1] = row.dir end
  return out
end

local function value_text(s, unit)
  if s.n == 0 then return "not run" end
  local u = unit and unit ~= "" and (" " .. unit) or ""
  if s.n == 1 then return format("%s%s (one seed)", fmt_num(s.mean), u) end
  return format("%s ± %s%s", fmt_num(s.mean), fmt_num(s.half, 2), u)
end
reproduce.value_text = value_text

local function paper_text(p)
  if p == nil then return "-" end
  if type(p) == "number" then return fmt_num(p) end
  return p
end

local function inside(s)
  if type(s.paper) ~= "number" or s.n < 2 then return "-" end
  return (s.paper >= s.low and s.paper <= s.high) and "yes" or "no"
end

local function hms(s)
  if s == nil then return "-" end
  if s < 120 then return format("%.0f s", s) end
  if s < 7200 then return format("%.1f min", s / 60) end
  return format("%.1f h", s / 3600)
end
reproduce.hms = hms

-- Comparison plot of one result: ours (mean, 95% CI) and the paper, per
-- measure. Returns the file name written (beside the report) or nil.
local function result_plot(o, fam, res)
  local rows = {}
  for _, s in ipairs(res.measures) do
    if s.n >= 1 then rows[#rows + 1] = s end
  end
  if #rows == 0 or o.no_plot then return nil end
  -- labels and titles as given: enhanced text would print W_pi as W with a
  -- subscript p followed by i
  local lines = {"set termoption noenhanced", "$d << EOD"}
  for i, s in ipairs(rows) do
    local paper = type(s.paper) == "number" and format("%.17g", s.paper) or "NaN"
    lines[#lines + 1] = format("%d %.17g %.17g %.17g %s", i, s.mean, s.low or s.mean, s.high or s.mean, paper)
  end
  lines[#lines + 1] = "EOD"
  local tics = {}
  for i, s in ipairs(rows) do tics[#tics + 1] = format("%s %d", plot.quote(s.label), i) end
  lines[#lines + 1] = format("set title %s", plot.quote(format("%s: %s (mean and %d%% CI over seeds)",
                                                               fam.title, res.figure, 100 * reproduce.LEVEL)))
  lines[#lines + 1] = "set xtics (" .. concat(tics, ", ") .. ") rotate by -25 font ',8'"
  lines[#lines + 1] = format("set xrange [0.5:%.1f]", #rows + 0.5)
  lines[#lines + 1] = "set key outside top center horizontal"
  lines[#lines + 1] = "set grid ytics"
  lines[#lines + 1] = "set bmargin 8"
  lines[#lines + 1] = "plot $d using 1:2:3:4 with yerrorbars pt 7 lc rgb '#1f77b4' title 'ours', " ..
                      "$d using 1:5 with points pt 2 ps 2 lc rgb '#d62728' title 'paper'"
  local name = format("%s-%s.svg", fam.family, res.name)
  local paths = plot.script(concat(lines, "\n"), {out = o.doc_dir .. "/" .. name, size = {900, 480}, quiet = true})
  if #paths == 0 then return nil end
  return name
end

-- A Markdown table of `items` (nothing when there are none), one row per
-- item from cells(item), then a blank line.
local function md_table(add, head, items, cells)
  if #items == 0 then return end
  add("| " .. concat(head, " | ") .. " |")
  add("|" .. string.rep("---|", #head))
  for _, item in ipairs(items) do
    local row = {}
    for i, v in ipairs(cells(item)) do row[i] = tostring(v) end
    add("| " .. concat(row, " | ") .. " |")
  end
  add()
end

local GENERATED = "<!-- Written by ./neuromic experiments/reproduce.lua from %s: do not edit by hand;\n" ..
                  "     rerun `make reproduce ARGS=\"--only %s\"` (doc/reproduce.md). -->"

local function family_markdown(o, fam, summary)
  local md = {}
  local function add(s) md[#md + 1] = s or "" end
  add(format(GENERATED, fam.file, fam.family))
  add()
  add(format("# %s: paper vs ours", fam.title))
  add()
  add(format("%s.", fam.paper))
  if fam.report then
    add(format("Setup, deviations and investigations: [%s](%s).", fam.report:match("[^/]+$"), fam.report))
  end
  add()
  add(format("Generated %s%s. Intervals: mean ± half-width of the %d%% " ..
             "Student t confidence interval over seeds; claims decided at p < %.2g.",
             summary.generated, o.quick and ", **quick form** (not the papers' scale)" or "",
             100 * reproduce.LEVEL, reproduce.ALPHA))
  add(format("Reproduce: `make reproduce ARGS=\"--only %s%s\"` (`--jobs N`, `--shard I/N`: doc/reproduce.md).",
             fam.family, o.quick and " --quick" or ""))
  add()
  for _, res in ipairs(summary.results) do
    add(format("## %s", res.figure))
    add()
    if res.done == 0 then
      add(format("Not run yet (%d cell%s; estimated %s on %d cores: `make reproduce ARGS=\"--only %s/%s\"`).",
                 res.cells, res.cells == 1 and "" or "s", hms(res.estimate_s), reproduce.CORES, fam.family, res.name))
      add()
    else
      if res.done < res.cells then
        add(format("**Incomplete: %d of %d cells finished** (the figures below are over those).",
                   res.done, res.cells))
        add()
      end
      md_table(add, {"measure", "paper", "ours", "seeds", "sd", "paper in the CI"}, res.measures, function(s)
        return {s.label, paper_text(s.paper), value_text(s, s.unit), s.n, fmt_num(s.sd, 3), inside(s)}
      end)
      md_table(add, {"claim", "test", "statistic", "p", "verdict"}, res.claims, function(c)
        return {c.text, c.test, c.statistic or "-", fmt_p(c.p), "**" .. c.verdict .. "**"}
      end)
      if res.findings and #res.findings > 0 then
        add(format("Findings, each decided inside the experiment (%s):", res.findings_test or "see the experiment"))
        add()
        md_table(add, {"finding", "verdict", "detail"}, res.findings, function(f)
          return {f.claim, f.verdict, f.detail or ""}
        end)
      end
      if res.plot then add(format("![%s](%s)", res.figure, res.plot)); add() end
    end
    add(format("Command (one cell per seed%s): `%s`; seeds %s.", #form_of(fam.results_by_name[res.name], o.quick).sets > 0
               and " and grid point" or "", res.command, seeds_text(res.seeds)))
    if res.done > 0 then
      add(format("Time: %d cell%s, wall %s in all (%s per cell), CPU %s (%s per cell)%s.",
                 res.done, res.done == 1 and "" or "s", hms(res.wall_s), hms(res.cell_wall_s), hms(res.cpu_s), hms(res.cell_cpu_s),
                 res.cpu_s and format("; about %s on %d cores", hms(res.cpu_s / reproduce.CORES), reproduce.CORES) or ""))
      add(format("Code version of the runs: %s.", #res.versions > 0 and concat(res.versions, ", ") or "not recorded"))
    end
    for _, p in ipairs(res.problems or {}) do add("- problem: " .. p) end
    add()
  end
  return concat(md, "\n")
end

-- ------------------------------------------------------------ README table

local BEGIN, END = "<!-- reproduce:begin -->", "<!-- reproduce:end -->"
reproduce.README_MARKERS = {BEGIN, END}

-- The README's results table from the saved summaries of every family:
-- one row per headline measure (or per result without one).
function reproduce.readme_table(families, doc_dir)
  local out = {"| family | result | measure | paper | ours (95% CI, seeds) | claims held |",
               "|---|---|---|---|---|---|"}
  local total_cpu, todo = 0, 0
  for _, fam in ipairs(families) do
    local path = format("%s/%s.json", doc_dir, fam.family)
    local summary = exists(path) and json.read_file(path) or nil
    local link = format("[%s](%s/%s.md)", fam.family, doc_dir, fam.family)
    for _, res in ipairs(summary and summary.results or {}) do
      local ran = (res.done or 0) > 0
      total_cpu = total_cpu + (tonumber(res.cpu_s) or 0)
      if not ran then todo = todo + (tonumber(res.estimate_s) or 0) end
      local held, total = 0, 0
      for _, c in ipairs(res.claims or {}) do
        total = total + 1
        if c.verdict == "holds" then held = held + 1 end
      end
      for _, f in ipairs(res.findings or {}) do
        total = total + 1
        if tostring(f.verdict):match("^holds") then held = held + 1 end
      end
      local claims = (ran and total > 0) and format("%d of %d", held, total) or "-"
      local shown = false
      for _, s in ipairs(res.measures or {}) do
        if s.headline then
          shown = true
          out[#out + 1] = format("| %s | %s | %s | %s | %s | %s |", link, res.figure, s.label,
                                 paper_text(s.paper), ran and (value_text(s, s.unit) .. format(", %d", s.n))
                                 or "not run yet", claims)
        end
      end
      if not shown then
        out[#out + 1] = format("| %s | %s | - | - | %s | %s |", link, res.figure,
                               ran and format("%d cell%s", res.done, res.done == 1 and "" or "s") or "not run yet",
                               claims)
      end
    end
    if not summary then out[#out + 1] = format("| %s | - | - | - | not run yet | - |", link) end
  end
  out[#out + 1] = ""
  local rest = todo > 0 and format("not run yet: an estimated %s on %d cores", hms(todo), reproduce.CORES)
               or "every result has run"
  out[#out + 1] = format("CPU time of the runs behind this table: %s (about %s on %d cores); " ..
                         "%s (`make reproduce ARGS=\"--list\"`).",
                         hms(total_cpu), hms(total_cpu / reproduce.CORES), reproduce.CORES, rest)
  return concat(out, "\n")
end

-- Replaces the text between the markers of `path`; an error when they are missing.
function reproduce.update_readme(path, text)
  local f = io.open(path, "rb")
  if not f then error("cannot read " .. path, 0) end
  local s = f:read("a")
  f:close()
  local a = s:find(BEGIN, 1, true)
  local b = s:find(END, 1, true)
  if not a or not b or b < a then
    error(format("%s has no %s ... %s markers for the results table", path, BEGIN, END), 0)
  end
  local new = s:sub(1, a + #BEGIN - 1) .. "\n" .. text .. "\n" .. s:sub(b)
  if new ~= s then nm.sys.atomic_write(path, new) end
end

-- ------------------------------------------------------------ estimates

-- The CPU seconds of one cell of r: measured in the saved summary of the
-- full run when there is one, else the registry's estimate_s.
local function cell_estimate(o, fam, r)
  local path = format("%s/%s.json", o.saved_dir, fam.family)
  if not o.quick and exists(path) then
    local ok, summary = pcall(json.read_file, path)
    if ok then
      for _, res in ipairs(summary.results or {}) do
        if res.name == r.name and tonumber(res.cell_cpu_s) then return res.cell_cpu_s, "measured" end
      end
    end
  end
  if o.quick then return r.quick_estimate_s or 10, "estimated" end
  return r.estimate_s, r.estimate_s and "estimated" or nil
end

-- Seconds on CORES cores for `cells` cells of `cpu` seconds each.
local function on_cores(cells, cpu, inner_jobs)
  if not cpu then return nil end
  if inner_jobs then return cells * cpu / reproduce.CORES end
  local rounds = math.ceil(cells / reproduce.CORES)
  return math.max(rounds * cpu, cells * cpu / reproduce.CORES)
end

-- ------------------------------------------------------------ main

local SPEC = {
  name = "reproduce",
  jobs = true, shard = true,
  script = "experiments/reproduce.lua",
  description = [[
Runs every paper result of the registry (experiments/reproduce/<family>.lua)
through the sweep runner and writes doc/results/<family>.md from the runs:
paper vs ours with 95% confidence intervals over seeds, the test deciding
each claim, plots, wall and CPU time, the exact commands; and the README's
results table. Interrupted runs resume (rerun the same command). --quick
runs the small form into results/reproduce-quick and writes its reports
there. --shard I/N runs only shard I of every sweep (Slurm, GNU parallel);
--report then merges the shards and writes the reports. See doc/reproduce.md.]],
  options = {
    {name = "only", type = "string", metavar = "FAMILY[/RESULT],...",
     help = "run only these families or results (comma-separated)"},
    {name = "list", type = "bool", default = false,
     help = "print every result with its cells, seeds and estimated time, and exit"},
    {name = "report", type = "bool", default = false,
     help = "write the reports from the runs so far, running nothing"},
    {name = "doc", type = "string", metavar = "DIR",
     help = "where the reports go [default: doc/results, or OUT/doc with --quick]"},
    {name = "readme", type = "string", metavar = "FILE",
     help = "README whose results table is rewritten [default: README.md; none with --quick]"},
    {name = "registry", type = "string", metavar = "DIR",
     help = "folder of the family files [default: experiments/reproduce]"},
    {name = "plot", type = "bool", default = true, help = "write the comparison plots (gnuplot)"},
  },
}

local function selected(families, only)
  if not only then return families, nil end
  local want, picked = {}, {}
  for item in only:gmatch("[^,]+") do
    local f, r = item:match("^%s*([^/%s]+)/?([^%s]*)%s*$")
    if not f then error(format("bad --only item '%s' (FAMILY or FAMILY/RESULT)", item), 0) end
    want[f] = want[f] or {}
    if r ~= "" then want[f][r] = true else want[f].all = true end
  end
  local known = {}
  for _, fam in ipairs(families) do
    known[fam.family] = fam
    if want[fam.family] then picked[#picked + 1] = fam end
  end
  for f, rs in pairs(want) do
    if not known[f] then
      local names = {}
      for _, fam in ipairs(families) do names[#names + 1] = fam.family end
      error(format("--only: no family '%s' (families: %s)", f, concat(names, ", ")), 0)
    end
    for r in pairs(rs) do
      if r ~= "all" and not known[f].results_by_name[r] then
        error(format("--only: family %s has no result '%s'", f, r), 0)
      end
    end
  end
  return picked, want
end

local function wanted(want, fam, r)
  if not want then return true end
  local w = want[fam.family]
  return w and (w.all or w[r.name]) or false
end

-- reproduce.main(argv [, defaults]) -> exit status. defaults.registry:
-- the folder of the family files when --registry is not given.
function reproduce.main(argv, defaults)
  local spec = {}
  for k, v in pairs(SPEC) do spec[k] = v end
  local opts, msg, code = cli.try_parse(argv, spec)
  if not opts then
    if code == 0 then io.stdout:write(msg) else say(msg) end
    return code
  end
  local t_start = nm.sys.clock()
  local cpu_start = nm.sys.children_cpu()
  local ok, result = pcall(function()
    local registry = opts.registry or (defaults and defaults.registry) or "experiments/reproduce"
    local families = reproduce.load(registry)
    for _, fam in ipairs(families) do
      fam.results_by_name = {}
      for _, r in ipairs(fam.results) do fam.results_by_name[r.name] = r end
    end
    local fams, want = selected(families, opts.only)
    local o = {
      quick = opts.quick, jobs = opts.jobs or 1, shard = opts.shard, no_plot = not opts.plot,
      out = opts._explicit.out and opts.out or (opts.quick and "results/reproduce-quick" or "results/reproduce"),
      interpreter = sweep.interpreter(),
    }
    o.doc_dir = opts.doc or (opts.quick and (o.out .. "/doc") or "doc/results")
    o.saved_dir = opts.doc or "doc/results"
    local readme = opts.readme or (not opts.quick and not opts.doc and "README.md" or nil)

    if opts.list then
      local total_cpu, total_wall = 0, 0
      print(format("%-36s %6s %6s %10s %12s  %s", "result", "cells", "seeds", "CPU/cell",
                   format("on %d cores", reproduce.CORES), "source"))
      for _, fam in ipairs(fams) do
        for _, r in ipairs(fam.results) do
          if wanted(want, fam, r) then
            local form = form_of(r, o.quick)
            local cells = cell_count(form)
            local cpu, source = cell_estimate(o, fam, r)
            local wall = on_cores(cells, cpu, r.jobs_arg ~= nil)
            total_cpu = total_cpu + (cpu and cpu * cells or 0)
            total_wall = total_wall + (wall or 0)
            print(format("%-36s %6d %6d %10s %12s  %s", fam.family .. "/" .. r.name, cells, #form.seeds,
                         hms(cpu), hms(wall), source or "no estimate"))
          end
        end
      end
      print(format("total: CPU %s, about %s on %d cores (one after the other, --jobs %d)",
                   hms(total_cpu), hms(total_wall), reproduce.CORES, reproduce.CORES))
      return 0
    end

    -- run
    local failed, stopped = 0, nil
    if not opts.report then
      for _, fam in ipairs(fams) do
        for _, r in ipairs(fam.results) do
          if wanted(want, fam, r) and not stopped then
            local dir = result_dir(o, fam, r)
            if o.shard then dir = format("%s/shard-%d", dir, o.shard.index) end
            say(format("reproduce: %s/%s (%s)", fam.family, r.name, r.figure))
            local cfg = sweep_cfg(o, fam, r, dir)
            local s = sweep.run(cfg)
            failed = failed + s.failed
            stopped = s.stopped
          end
        end
      end
    end
    if stopped then
      say(format("reproduce: stopped by %s; rerun the same command to continue", stopped))
      return stopped == "SIGINT" and 130 or 143
    end
    if o.shard and not opts.report then
      say(format("reproduce: shard %d/%d done%s; when every shard has run: %s experiments/reproduce.lua --report%s",
                 o.shard.index, o.shard.count, failed > 0 and format(" (%d cells failed)", failed) or "",
                 o.interpreter, opts.only and (" --only " .. opts.only) or ""))
      return failed > 0 and 1 or 0
    end

    -- reports
    nm.sys.mkdir(o.doc_dir)
    for _, fam in ipairs(fams) do
      local summary = {family = fam.family, title = fam.title, generated = os.date("!%Y-%m-%d"),
                       version = nm.version, quick = o.quick or false, results = {}}
      -- a family run in part keeps the saved figures of its other results
      local saved_path = format("%s/%s.json", o.doc_dir, fam.family)
      local saved = {}
      if exists(saved_path) then
        local okr, old = pcall(json.read_file, saved_path)
        if okr then for _, res in ipairs(old.results or {}) do saved[res.name] = res end end
      end
      for _, r in ipairs(fam.results) do
        local res
        if wanted(want, fam, r) or not saved[r.name] then
          res = analyse(o, fam, r)
          if res.done == 0 and saved[r.name] and (saved[r.name].done or 0) > 0 then res = saved[r.name] end
          res.cell_dirs = nil
          local cpu = cell_estimate(o, fam, r)
          res.estimate_s = on_cores(res.cells, cpu, r.jobs_arg ~= nil)
          if res.done > 0 then res.plot = result_plot(o, fam, res) end
        else
          res = saved[r.name]
        end
        summary.results[#summary.results + 1] = res
      end
      nm.sys.atomic_write(saved_path, json.encode(summary, {indent = 1}) .. "\n")
      local md_path = format("%s/%s.md", o.doc_dir, fam.family)
      nm.sys.atomic_write(md_path, family_markdown(o, fam, summary) .. "\n")
      say("reproduce: wrote " .. md_path)
    end
    if readme then
      reproduce.update_readme(readme, reproduce.readme_table(families, o.doc_dir))
      say("reproduce: updated the results table of " .. readme)
    end
    say(format("reproduce: %s wall, %s CPU in the cells this run", hms(nm.sys.clock() - t_start),
               hms(nm.sys.children_cpu() - cpu_start)))
    return failed > 0 and 1 or 0
  end)
  if not ok then
    say("reproduce: " .. tostring(result))
    return 2
  end
  return result
end

return reproduce
