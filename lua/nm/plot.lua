-- nm/plot.lua: learning curves and weight images through gnuplot
-- (Debian gnuplot-nox). The output format follows the file extension
-- (.png through pngcairo, or png when cairo is missing; .svg). Every
-- function returns the list of paths written; when gnuplot is missing or
-- fails it returns an empty list and a warning (also printed on stderr)
-- instead of raising, so an experiment never dies for want of a plot.
--
-- gnuplot runs without a shell (nm.sys.spawn) and never sees the paths it
-- writes: it draws into temporary files of its own, which are then moved
-- into place atomically; text from users (titles, labels) reaches it in
-- single-quoted strings, which it does not expand (no `command`, no @).
--
--   plot.curves(run:metrics(), {out = dir .. "/accuracy.png", x = "epoch",
--               y = {"train_accuracy", "test_accuracy"}, group = "rule"})
--   plot.images(W, {out = dir .. "/fields.png", shape = {28, 28}})

local nm = require "neuromic"
local json = require "nm.json"
local process = require "nm.process"

local plot = {}

local format, concat = string.format, table.concat

local available, terminal_png   -- probed once per process

local function as_list(x)
  if x == nil then return {} end
  if type(x) == "table" then return x end
  return {x}
end

local quiet = false   -- o.quiet of the call in progress

local function warn(msg)
  if not quiet then io.stderr:write("warning: ", msg, "\n") end
  return {}, msg
end

-- plot.gnuplot() -> true | false: whether gnuplot can be run.
function plot.gnuplot()
  if available == nil then
    available = process.run({"gnuplot", "-e", "print 1"}, "/dev/null")
    if available then
      terminal_png = process.run({"gnuplot", "-e", "set terminal pngcairo"}, "/dev/null")
        and "pngcairo" or "png"
    end
  end
  return available
end

-- Text as a gnuplot string that gnuplot takes literally: single quotes
-- (no backquote or macro expansion), a quote doubled, one line.
local function quote(s)
  return "'" .. tostring(s):gsub("[\r\n]", " "):gsub("'", "''") .. "'"
end
plot.quote = quote

local function num(x)
  if x ~= x then return "NaN" end
  if x == math.huge then return "Inf" end
  if x == -math.huge then return "-Inf" end
  return format("%.17g", x)
end

local function terminal_for(path, size, font)
  local ext = path:match("%.(%w+)$")
  ext = ext and ext:lower()
  local w, h = size[1], size[2]
  font = font and (" font " .. quote(font)) or ""
  if ext == "svg" then
    return format("set terminal svg size %d,%d dynamic enhanced background rgb 'white'%s", w, h, font)
  elseif ext == "png" then
    return format("set terminal %s size %d,%d%s", terminal_png, w, h, font)
  end
  return nil
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local t = f:read("a") or ""
  f:close()
  return t
end

-- Runs a script whose first lines are `set terminal/set output` for
-- each path; returns paths, or {}, warning. gnuplot writes temporary
-- files, moved to the paths once it succeeded.
local function run_script(body, paths, size, keep_script, font)
  if not plot.gnuplot() then
    return warn(format("gnuplot not found (apt install gnuplot-nox); skipped %s", concat(paths, ", ")))
  end
  local parts, temps = {}, {}
  for i, p in ipairs(paths) do
    local term = terminal_for(p, size, font)
    if not term then return warn(format("plot: %s: use a .png or .svg file name", p)) end
    temps[i] = os.tmpname()          -- /tmp/lua_XXXXXX: nothing to expand
    parts[#parts + 1] = term
    parts[#parts + 1] = "set output " .. quote(temps[i])
    parts[#parts + 1] = body
    parts[#parts + 1] = "unset output"
  end
  local text = concat(parts, "\n") .. "\n"
  local script, errfile = os.tmpname(), os.tmpname()
  local function cleanup()
    os.remove(script)
    os.remove(errfile)
    for _, t in ipairs(temps) do os.remove(t) end
  end
  local ok, why = pcall(nm.sys.atomic_write, script, text)
  if ok and keep_script then
    ok, why = pcall(nm.sys.atomic_write, keep_script, text)
  end
  if not ok then
    cleanup()
    return warn(format("plot: %s", why))
  end
  local ran, reason = process.run({"gnuplot", script}, errfile)
  local err = slurp(errfile)
  -- "matrix contains missing or undefined values" is how padding is drawn
  err = err:gsub("[^\n]*matrix contains missing or undefined values[^\n]*\n?", "")
  if not ran then
    cleanup()
    return warn(format("gnuplot failed for %s (%s): %s", concat(paths, ", "), reason, err))
  end
  if err:find("%S") then io.stderr:write("gnuplot: ", err) end
  for i, p in ipairs(paths) do
    local moved, werr = pcall(nm.sys.atomic_write, p, slurp(temps[i]))
    if not moved then
      cleanup()
      return warn(format("plot: %s", werr))
    end
  end
  cleanup()
  return paths
end

-- plot.script(body, o) -> paths | {}, warning: runs a gnuplot script of
-- the caller's (everything after `set terminal` and `set output`) for
-- o.out (a .png or .svg path or a list), o.size = {w, h} (default
-- 800 x 500), o.font (e.g. ",10"), o.keep_script, o.quiet. The body must not name files:
-- inline data as datablocks ($d << EOD ... EOD).
function plot.script(body, o)
  local paths = as_list(o.out)
  assert(#paths > 0, "plot.script: o.out (a .png or .svg path) is required")
  quiet = o.quiet or false
  local r, w = run_script(body, paths, o.size or {800, 500}, o.keep_script, o.font)
  quiet = false
  return r, w
end

-- Nil when every path ends in .png or .svg, else the offending path.
local function bad_extension(paths)
  for _, p in ipairs(paths) do
    local ext = (p:match("%.(%w+)$") or ""):lower()
    if ext ~= "png" and ext ~= "svg" then return p end
  end
end


local function read_rows(rows)
  if type(rows) == "string" then   -- a run directory or a .jsonl file
    local path = rows:match("%.jsonl$") and rows or (rows .. "/metrics.jsonl")
    return (json.read_lines(path, {null = 0 / 0}))
  end
  return rows
end

-- plot.curves(rows, o) -> paths | {}, warning. rows: metric rows (or a
-- run directory / .jsonl path). o: out (path or list of paths), x (key;
-- default "step"), y (key or list of keys), group (key whose values split
-- the rows into series), logy, logx, title, xlabel, ylabel, size = {w, h},
-- keep_script (path to keep the gnuplot script at), quiet (no warning on
-- stderr, only the return value).
-- Rows lacking x or y (or non-finite, or <= 0 on a log axis) are skipped.
local function curves(rows, o)
  rows = read_rows(rows)
  local paths = as_list(o.out)
  assert(#paths > 0, "plot.curves: o.out (a .png or .svg path) is required")
  local bad = bad_extension(paths)
  if bad then return warn(format("plot.curves: %s: use a .png or .svg file name", bad)) end
  local x = o.x or "step"
  local ys = as_list(o.y)
  assert(#ys > 0, "plot.curves: o.y (a key or list of keys) is required")
  local series, order = {}, {}
  for _, row in ipairs(rows) do
    local xv = tonumber(row[x])
    local g = o.group and row[o.group]
    for _, y in ipairs(ys) do
      local yv = tonumber(row[y])
      local ok = xv and yv and xv == xv and yv == yv and math.abs(xv) ~= math.huge
                 and math.abs(yv) ~= math.huge
      if ok and o.logy and yv <= 0 then ok = false end
      if ok and o.logx and xv <= 0 then ok = false end
      if ok then
        local name = y
        if o.group then name = format("%s=%s %s", o.group, tostring(g), y) end
        if #ys == 1 and o.group then name = format("%s=%s", o.group, tostring(g)) end
        if not series[name] then
          series[name] = {}
          order[#order + 1] = name
        end
        local s = series[name]
        s[#s + 1] = num(xv) .. " " .. num(yv)
      end
    end
  end
  if #order == 0 then
    return warn(format("plot.curves: no finite values of %s against %s for %s",
                       concat(ys, ","), x, concat(paths, ", ")))
  end
  local lines = {}
  for i, name in ipairs(order) do
    lines[#lines + 1] = format("$s%d << EOD", i)
    lines[#lines + 1] = concat(series[name], "\n")
    lines[#lines + 1] = "EOD"
  end
  lines[#lines + 1] = "set termoption noenhanced"
  lines[#lines + 1] = "set grid"
  lines[#lines + 1] = "set key outside right top"
  if o.title then lines[#lines + 1] = "set title " .. quote(o.title) end
  lines[#lines + 1] = "set xlabel " .. quote(o.xlabel or x)
  lines[#lines + 1] = "set ylabel " .. quote(o.ylabel or (#ys == 1 and ys[1] or ""))
  if o.logy then lines[#lines + 1] = "set logscale y" end
  if o.logx then lines[#lines + 1] = "set logscale x" end
  local cmds = {}
  for i, name in ipairs(order) do
    local style = #series[name] <= 40 and "linespoints pt 7 ps 0.6" or "lines"
    cmds[i] = format("$s%d using 1:2 with %s lw 1.5 title %s", i, style, quote(name))
  end
  lines[#lines + 1] = "plot " .. concat(cmds, ", \\\n     ")
  return run_script(concat(lines, "\n"), paths, o.size or {800, 500}, o.keep_script)
end

-- Values of a 2-D tensor or table-of-rows as a Lua array of rows.
local function matrix_rows(m)
  if type(m) == "table" then return m end
  assert(nm.is_tensor(m) and m:dim() == 2, "plot.images: patches must be 2-D tensors or tables")
  local r, c = m:size(1), m:size(2)
  local fmt = m:dtype() == "float32" and "=f" or "=d"
  local bytes, pos = m:tobytes(), 1
  local out = {}
  for i = 1, r do
    local row = {}
    for j = 1, c do row[j], pos = string.unpack(fmt, bytes, pos) end
    out[i] = row
  end
  return out
end

-- plot.images(patches, o) -> paths | {}, warning. patches: a 2-D tensor
-- whose rows are patches of o.shape = {h, w} (one receptive field per
-- unit), or a list of 2-D tensors / tables. o: out, shape, cols (default
-- about square), normalize ("each": every patch scaled by its largest
-- |value| to [-1, 1], the default; "all": one scale; false: as they are,
-- with o.range = {lo, hi}), title, pixel (screen pixels per value; 4),
-- keep_script.
local function images(patches, o)
  local paths = as_list(o.out)
  assert(#paths > 0, "plot.images: o.out (a .png or .svg path) is required")
  local bad = bad_extension(paths)
  if bad then return warn(format("plot.images: %s: use a .png or .svg file name", bad)) end
  local list = {}
  if nm.is_tensor(patches) then
    assert(patches:dim() == 2, "plot.images: a tensor of patches must be 2-D (one patch per row)")
    local h, w = table.unpack(o.shape or {})
    assert(h and w and h * w == patches:size(2),
           format("plot.images: o.shape = {h, w} with h*w = %d is required", patches:size(2)))
    local rows = matrix_rows(patches)
    for p, row in ipairs(rows) do
      local m = {}
      for i = 1, h do
        local r = {}
        for j = 1, w do r[j] = row[(i - 1) * w + j] end
        m[i] = r
      end
      list[p] = m
    end
  else
    for p, m in ipairs(patches) do list[p] = matrix_rows(m) end
  end
  local n = #list
  assert(n > 0, "plot.images: no patches")
  local h, w = #list[1], #list[1][1]
  for p = 2, n do
    assert(#list[p] == h and #list[p][1] == w, "plot.images: patches differ in shape")
  end
  local normalize = o.normalize
  if normalize == nil then normalize = "each" end
  local function maxabs(m)
    local s = 0
    for _, r in ipairs(m) do for _, v in ipairs(r) do
      if v == v and math.abs(v) > s then s = math.abs(v) end
    end end
    return s
  end
  local scale_all = 0
  if normalize == "all" then
    for _, m in ipairs(list) do scale_all = math.max(scale_all, maxabs(m)) end
  end
  if scale_all == 0 then scale_all = 1 end
  local cols = o.cols or math.ceil(math.sqrt(n))
  local grid_rows = math.ceil(n / cols)
  local H, W = grid_rows * (h + 1) + 1, cols * (w + 1) + 1
  local grid = {}
  for i = 1, H do
    local r = {}
    for j = 1, W do r[j] = "NaN" end
    grid[i] = r
  end
  for p, m in ipairs(list) do
    local s = 1
    if normalize == "each" then s = maxabs(m); if s == 0 then s = 1 end
    elseif normalize == "all" then s = scale_all end
    local gi, gj = (p - 1) // cols, (p - 1) % cols
    for i = 1, h do
      for j = 1, w do
        grid[gi * (h + 1) + 1 + i][gj * (w + 1) + 1 + j] = num(m[i][j] / s)
      end
    end
  end
  local lines = {"$g << EOD"}
  for i = 1, H do lines[#lines + 1] = concat(grid[i], " ") end
  lines[#lines + 1] = "EOD"
  local lo, hi = -1, 1
  if normalize == false and o.range then lo, hi = o.range[1], o.range[2] end
  lines[#lines + 1] = "set termoption noenhanced"
  lines[#lines + 1] = "set palette gray"
  if normalize ~= false or o.range then
    lines[#lines + 1] = format("set cbrange [%s:%s]", num(lo), num(hi))
  end
  lines[#lines + 1] = "unset colorbox"
  lines[#lines + 1] = "unset key"
  lines[#lines + 1] = "unset tics"
  lines[#lines + 1] = "unset border"
  lines[#lines + 1] = "set margins 0,0,0," .. (o.title and "2" or "0")
  lines[#lines + 1] = "set object 1 rectangle from screen 0,0 to screen 1,1 behind fillcolor rgb '#3070b0' fillstyle solid noborder"
  lines[#lines + 1] = format("set xrange [-0.5:%d.5]", W - 1)
  lines[#lines + 1] = format("set yrange [%d.5:-0.5]", H - 1)
  if o.title then lines[#lines + 1] = "set title textcolor rgb 'white' " .. quote(o.title) end
  lines[#lines + 1] = "plot $g matrix with image"
  local px = o.pixel or 4
  local size = {math.max(W * px, 64), math.max(H * px + (o.title and 24 or 0), 64)}
  return run_script(concat(lines, "\n"), paths, size, o.keep_script)
end

-- Runs f(x, o) with warnings silenced when o.quiet.
local function with_quiet(f)
  return function(x, o)
    quiet = o and o.quiet or false
    local r = table.pack(pcall(f, x, o))
    quiet = false
    if not r[1] then error(r[2], 2) end
    return table.unpack(r, 2, r.n)
  end
end
plot.curves = with_quiet(curves)
plot.images = with_quiet(images)

return plot
