-- nm/repl.lua: what the interpreter's REPL adds to Lua: help(x) (also
-- typed as ?x) and readable printing of results.
--
-- help reads its doc strings from the reference tables of doc/*.md (the
-- one place they are written): every row whose first cell holds calls
-- such as `nm.zeros(d1, ...)`, `t:add(b)` or `nn.mlp{...}` documents
-- those names, with the other cells as its text. spec/repl_spec.lua checks
-- that every function of the module and every tensor method has a row.
-- Rules are described by their own files (rule.describe), experiment
-- options by the experiment's option list (as --help prints it).
--
--   help(nm.zeros)   help "t:addmm"   ?nm.nn.mlp   ?backprop   ?bmvr --runs

local repl = {}

local format, concat, sort = string.format, table.concat, table.sort

-- ------------------------------------------------------------------ docs

-- The folder of the docs: doc/ of the checkout this file belongs to, or
-- nm/doc/ beside an installed copy (make install puts them there).
local function doc_dir()
  local src = debug.getinfo(1, "S").source
  local root = src:match("^@(.-)lua/nm/repl%.lua$")
  if root then
    local d = (root == "" and "." or root:gsub("/$", "")) .. "/doc"
    local f = io.open(d .. "/tensor.md")
    if f then f:close() return d end
  end
  local dir = src:match("^@(.-)repl%.lua$") or "./nm/"
  return (dir ~= "" and dir or "./") .. "doc"
end
repl.doc_dir = doc_dir()

-- The doc files: README.md is not one of them (it only points at them).
repl.doc_files = {"tensor.md", "tensor_math.md", "random_io.md", "nn.md", "autograd.md",
                  "harness.md", "data.md", "sweeps.md", "nk.md"}

-- Splits a table row into cells; a '|' inside `code` does not split.
local function cells(line)
  local out, cur, code = {}, {}, false
  for i = 2, #line do
    local c = line:sub(i, i)
    if c == "`" then code = not code end
    if c == "|" and not code then
      out[#out + 1] = (concat(cur):gsub("^%s+", ""):gsub("%s+$", ""))
      cur = {}
    else
      cur[#cur + 1] = c
    end
  end
  return out
end

-- The names a code span documents: "nm.zeros", "nn.mlp", ":add" (a method
-- of whatever receiver), or nothing.
local function names_of(span)
  local recv, sep, name = span:match("^([%a_][%w_%.]*)([%.:])([%a_][%w_]*)%s*[%(%{]")
  if not recv then                  -- a bare method: `m:lt`
    name = span:match("^[%a_][%w_]*:([%a_][%w_]*)$")
    return name and {":" .. name} or {}
  end
  if sep == ":" then return {":" .. name} end
  if recv:match("^nm%.") then return {recv .. "." .. name} end   -- nm.sys.spawn, nm.kernels.bmvr.train
  local last = recv:match("([%a_][%w_]*)$")
  return {last .. "." .. name}
end

-- Parses the doc files once: entries[name] = list of {sig, text, file, section}.
local entries
local function load_entries()
  if entries then return entries end
  entries = {}
  for _, f in ipairs(repl.doc_files) do
    local path = repl.doc_dir .. "/" .. f
    local fh = io.open(path)
    if fh then
      local section, header, prev = "", nil, nil
      local pending, para, fence = nil, {}, false   -- a heading's entry, its first paragraph
      local function add(e, spans)
        for _, span in ipairs(spans) do
          for _, n in ipairs(names_of(span)) do
            entries[n] = entries[n] or {}
            local list = entries[n]
            if list[#list] ~= e then list[#list + 1] = e end
          end
        end
      end
      local function close_heading()
        if pending then pending.e.text = concat(para, " ") add(pending.e, pending.spans) end
        pending, para = nil, {}
      end
      for line in fh:lines() do
        if line:match("^```") then fence = not fence end
        if line:match("^#") then
          close_heading()
          section = line:gsub("^#+%s*", "")
          local spans = {}
          for code in line:gmatch("`([^`]+)`") do
            if code:match("^[%a_][%w_%.]*[%.:][%a_][%w_]*%s*[%({]") then spans[#spans + 1] = code end
          end
          if #spans > 0 then
            pending = {spans = spans, e = {sig = concat(spans, ", "), file = "doc/" .. f, section = section}}
          end
        elseif pending then
          if fence or line:match("^|") or line:match("^```") or (line:match("^%s*$") and #para > 0) then
            close_heading()
          elseif not line:match("^%s*$") then
            para[#para + 1] = line:gsub("^%s+", "")
          end
        end
        if line:match("^|[%s%-:|]+$") then
          header = prev and cells(prev) or nil     -- the line above is the header
        elseif line:match("^|") and header then
          local row = cells(line)
          local spans = {}
          for code in (row[1] or ""):gmatch("`([^`]+)`") do spans[#spans + 1] = code end
          local text = {}
          for i = 2, #row do
            if row[i] ~= "" then
              text[#text + 1] = (header[i] and header[i] ~= "" and (header[i] .. ": ") or "") .. row[i]
            end
          end
          add({sig = concat(spans, ", "), text = concat(text, "; "), file = "doc/" .. f,
               section = section}, spans)
        elseif not line:match("^|") then
          header = nil
        end
        prev = line
      end
      close_heading()
      fh:close()
    end
  end
  return entries
end

-- The doc entries of a name ("nm.zeros", ":add", "nn.mlp"), or nil.
function repl.entries(name)
  return load_entries()[name]
end

-- Every documented name.
function repl.names()
  local out = {}
  for k in pairs(load_entries()) do out[#out + 1] = k end
  sort(out)
  return out
end

local function show_entries(list)
  local lines = {}
  for _, e in ipairs(list) do
    lines[#lines + 1] = e.sig
    if e.text ~= "" then lines[#lines + 1] = "  " .. e.text end
    lines[#lines + 1] = format("  (%s, %s)", e.file, e.section)
  end
  return concat(lines, "\n")
end

-- ------------------------------------------------------- names of values

-- The module's namespaces, besides its top (the tensor library).
repl.namespaces = {"sys", "kernels"}

-- function -> its documented name, for the module and its namespaces, the
-- tensor and generator methods and the loaded nm.* libraries.
local function name_of(v)
  local nm = package.loaded.neuromic
  if nm then
    for k, f in pairs(nm) do if f == v then return "nm." .. k end end
    for _, ns in ipairs(repl.namespaces) do
      for k, f in pairs(nm[ns] or {}) do if f == v then return "nm." .. ns .. "." .. k end end
    end
    for _, cls in ipairs{"Tensor", "Generator"} do
      if type(nm[cls]) == "table" then
        for k, f in pairs(nm[cls]) do if f == v then return ":" .. k, cls .. ":" .. k end end
      end
    end
  end
  local found
  for mod, t in pairs(package.loaded) do
    if type(mod) == "string" and mod:match("^nm%.") and type(t) == "table" then
      local last = mod:match("([%w_]+)$")
      for k, f in pairs(t) do
        if f == v then
          local n = last .. "." .. k
          if load_entries()[n] then return n end   -- a documented name first
          found = found or n
        end
      end
    end
  end
  return found
end

-- ------------------------------------------------------ experiments

-- The option spec of an experiment, read by running the script until it
-- calls cli.parse (which is stubbed meanwhile, so nothing runs).
local function experiment_spec(name)
  local base = name:gsub("^experiments/", ""):gsub("%.lua$", "")
  if not base:match("^[%w_]+$") then return nil end
  local path = package.searchpath(base, (NEUROMIC_ROOT and (NEUROMIC_ROOT .. "/experiments/?.lua;") or "") ..
                                  package.path:gsub("%?", "nm/experiments/?"))
  if not path then return nil end
  local chunk = loadfile(path)
  if not chunk then return nil end
  local cli = require "nm.cli"
  local parse, try_parse = cli.parse, cli.try_parse
  local caught = {}
  local function stop(_, spec) caught.spec = spec; error(caught) end
  cli.parse, cli.try_parse = stop, stop
  local saved_arg = arg
  arg = {[0] = path}
  local ok, err = pcall(chunk)
  arg = saved_arg
  cli.parse, cli.try_parse = parse, try_parse
  if not ok and err == caught then return caught.spec, path end
  return nil
end

local function experiment_help(name, option)
  local spec = experiment_spec(name)
  if not spec then return nil end
  local usage = require("nm.cli").usage(spec, spec.name)
  if not option then return usage end
  local flag = "--" .. option:gsub("^%-%-", ""):gsub("_", "-")
  local out = {}
  for line in usage:gmatch("[^\n]+") do
    if line:find("^%s+" .. flag:gsub("%-", "%%-") .. "[%s]") or
       line:find("^%s+%-%-%[no%-%]" .. flag:sub(3):gsub("%-", "%%-") .. "[%s]") then
      out[#out + 1] = line
    end
  end
  if #out == 0 then return format("%s has no option %s (?%s lists them)", name, flag, name) end
  return concat(out, "\n")
end

-- --------------------------------------------------------------- help

local GENERAL = [[
help(x) or ?x describes x: a function (help(nm.zeros), ?nm.zeros), a tensor
method (?t:addmm, ?addmm), a library function (?nn.mlp, ?rule.new), a rule
(?backprop), an experiment and its options (?bmvr, ?bmvr --runs).
help(nm) lists the module's functions (the tensor library), help(nm.sys) the
OS functions, help(nm.kernels) the model kernels; help(t) a tensor's methods.
The reference is doc/*.md; rules are in rules/, experiments in experiments/.]]

-- One-line summaries of the names of a table that have docs.
local function listing(title, t, prefix)
  local names = {}
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" then names[#names + 1] = k end
  end
  sort(names)
  local lines = {title}
  local line = " "
  for _, k in ipairs(names) do
    if #line + #k + 1 > 96 then lines[#lines + 1] = line; line = " " end
    line = line .. " " .. k
  end
  lines[#lines + 1] = line
  lines[#lines + 1] = format("help(%sNAME) for one of them", prefix)
  return concat(lines, "\n")
end

-- The help text of x, or nil and why none was found.
function repl.help_text(x)
  local nm = package.loaded.neuromic
  if x == nil then return GENERAL end
  if nm and nm.is_tensor and nm.is_tensor(x) then
    return listing("tensor methods (doc/tensor.md, doc/tensor_math.md):", nm.Tensor, "t:")
  end
  if type(x) == "function" then
    local n, full = name_of(x)
    local list = n and repl.entries(n)
    if list then return show_entries(list) end
    return nil, format("no doc for %s", full or n or "this function")
  end
  if type(x) == "table" then
    if x == nm then return listing("nm (the module: the tensor library; nm.sys, nm.kernels):", x, "nm.") end
    for _, ns in ipairs(repl.namespaces) do
      if nm and x == nm[ns] then return listing("nm." .. ns .. ":", x, "nm." .. ns .. ".") end
    end
    for mod, t in pairs(package.loaded) do
      if t == x and type(mod) == "string" then return listing(mod .. ":", x, mod:match("([%w_]+)$") .. ".") end
    end
    if getmetatable(x) and getmetatable(x).__index and type(x.describe) == "function" then
      local ok, s = pcall(x.describe, x)
      if ok and type(s) == "string" then return s end
    end
    return nil, "no doc for this table"
  end
  if type(x) ~= "string" then return nil, "no doc for a " .. type(x) end
  -- "?addr  -- a comment": the comment is no part of the topic ("--runs" is)
  local s = x:gsub("%s+%-%-%s.*$", ""):gsub("^%s+", ""):gsub("%s+$", "")
  if s == "" then return GENERAL end
  -- an experiment option: "bmvr --runs"
  local exp, opt = s:match("^([%w_%./]+)%s+(%-%-[%w%-_]+)$")
  if exp then
    local h = experiment_help(exp, opt)
    if h then return h end
    return nil, format("no experiment '%s'", exp)
  end
  -- a documented name, as written in the docs
  local key = s:gsub("%(.*$", "")
  local list = repl.entries(key)
  if not list then
    local meth = key:match("^[%a_][%w_]*:([%a_][%w_]*)$") or key:match("^:([%a_][%w_]*)$")
    if meth then list = repl.entries(":" .. meth) end
  end
  if not list and key:match("^[%a_][%w_]*$") and nm and nm.Tensor and nm.Tensor[key] then
    list = repl.entries(":" .. key)
  end
  if not list and key:match("^nm%.[%a_][%w_]*%.") then   -- nm.nn.mlp -> nn.mlp
    list = repl.entries(key:gsub("^nm%.", ""))
  end
  if list then return show_entries(list) end
  -- a Lua expression naming a value
  if key:match("^[%a_][%w_%.:]*$") then
    local chunk = load("return " .. key:gsub(":", "."), "=help", "t", _G)
    local ok, v = pcall(chunk or error)
    if ok and v ~= nil then return repl.help_text(v) end
  end
  -- a rule, an experiment, or both (bmvr is a rule and an experiment)
  local found = {}
  if key:match("^[%w_]+$") then
    local ok, d = pcall(require("nm.rule").describe, key)
    if ok then found[#found + 1] = d end
  end
  local h = experiment_help(key)
  if h then found[#found + 1] = "experiment " .. h end
  if #found > 0 then return concat(found, "\n\n") end
  return nil, format("no help for '%s' (help() says what there is)", s)
end

function repl.help(x)
  local text, why = repl.help_text(x)
  print(text or why)
end

-- ------------------------------------------------------------ printing

local MAX_ITEMS, MAX_WIDTH = 40, 96

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function short(v, depth, seen)
  local t = type(v)
  if t == "string" then return format("%q", v) end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  local nm = package.loaded.neuromic
  if nm and nm.is_tensor and nm.is_tensor(v) then
    if v:is_closed() then return "tensor(closed)" end
    local dims = concat(v:size(), " x ")
    return format("%s[%s]", v:dtype() == "float64" and "DoubleTensor" or "FloatTensor",
                  dims ~= "" and dims or "scalar")
  end
  local mt = getmetatable(v)
  if type(mt) == "table" and mt.__tostring then return tostring(v) end
  if t == "function" then
    local n, full = name_of(v)
    return n and ("function " .. (full or n):gsub("^:", "")) or "function"
  end
  if t ~= "table" then return tostring(v) end
  if seen[v] then return "{...}" end
  if depth > 2 then return "{...}" end
  seen[v] = true
  local parts, n = {}, #v
  for i = 1, math.min(n, MAX_ITEMS) do parts[#parts + 1] = short(v[i], depth + 1, seen) end
  if n > MAX_ITEMS then parts[#parts + 1] = format("... (%d items)", n) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  for i, k in ipairs(keys) do
    if i > MAX_ITEMS then parts[#parts + 1] = format("... (%d keys)", #keys) break end
    local ks = is_identifier(k) and k or ("[" .. short(k, depth + 1, seen) .. "]")
    parts[#parts + 1] = ks .. " = " .. short(v[k], depth + 1, seen)
  end
  seen[v] = nil
  return "{" .. concat(parts, ", ") .. "}"
end

-- A table one item a line when it does not fit on one.
local function long(v)
  local one = short(v, 1, {})
  if #one <= MAX_WIDTH or type(v) ~= "table" or getmetatable(v) then return one end
  local n = #v
  if next(v, n > 0 and n or nil) == nil and n <= MAX_ITEMS then   -- a list: filled lines
    local lines, line = {}, "{"
    for i = 1, n do
      local item = short(v[i], 2, {[v] = true}) .. (i < n and "," or "}")
      if #line + #item + 1 > MAX_WIDTH and line ~= "{" then
        lines[#lines + 1] = line
        line = " "
      end
      line = line .. (line == "{" and "" or " ") .. item
    end
    lines[#lines + 1] = line
    return concat(lines, "\n")
  end
  local lines = {"{"}
  for i = 1, math.min(n, MAX_ITEMS) do lines[#lines + 1] = "  " .. short(v[i], 2, {[v] = true}) .. "," end
  if n > MAX_ITEMS then lines[#lines + 1] = format("  ... (%d items)", n) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for i, k in ipairs(keys) do
    if i > MAX_ITEMS then lines[#lines + 1] = format("  ... (%d keys)", #keys) break end
    local ks = is_identifier(k) and k or ("[" .. short(k, 2, {}) .. "]")
    lines[#lines + 1] = "  " .. ks .. " = " .. short(v[k], 2, {[v] = true}) .. ","
  end
  lines[#lines + 1] = "}"
  return concat(lines, "\n")
end

-- How the REPL shows a result: strings as they are, tensors and objects
-- with their own tostring, tables as Lua-like literals (nested tables to
-- depth 2, at most 40 items each), functions with their documented names.
function repl.show(v)
  if type(v) == "string" then return v end
  local nm = package.loaded.neuromic
  if nm and nm.is_tensor and nm.is_tensor(v) then return tostring(v) end
  if type(v) == "table" then return long(v) end
  return short(v, 1, {})
end

return repl
