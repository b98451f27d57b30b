-- nm/cli.lua: command-line options of experiment scripts, from a
-- declarative spec. Every experiment gets the common options --help,
-- --seed, --quick, --out, --resume; --jobs and --shard only when the spec
-- says it honours them (jobs = true, shard = true), so that no script
-- offers an option it ignores; grid = true (a script whose grid of cells
-- runs through nm.sweep's sweep.grid) gives --jobs, --shard and --merge
-- DIR... (the shard folders as arguments). Bad input is a clear message
-- on stderr and exit status 2.
--
--   local opts = cli.parse(arg, {
--     name = "baselines", description = "BP, FA and DFA on Fashion-MNIST",
--     options = {
--       {"epochs", "int", 10, "training epochs", quick = 1},
--       {"lr", "number", 0.05, "learning rate", min = 0},
--       {"rule", "string", "bp", "learning rule", choices = {"bp", "fa", "dfa"}},
--       {"hidden", "list", {256}, "hidden layer sizes", item = "int"},
--       {"plot", "bool", true, "write plots"},
--     }})
--
-- An option is {name, type, default, help, quick = value for --quick,
-- choices = {...}, min =, max =, item = type of list items, multi = true
-- to collect repeated uses in a list, empty = true for a list that may
-- be empty (default: only when the default list is), metavar = "DIR"},
-- or the same with named fields (name =, type =, default =, help =).
-- Names may use '-' or '_'; opts keys use '_'. Types: number (decimal,
-- finite), int (decimal), string, bool, list (comma-separated, no empty
-- items). Extra fields in opts: _name (experiment name), _argv (the
-- arguments), _explicit (set of options given on the command line),
-- _args (positional arguments, when spec.positional allows them; the
-- shard folders after --merge for spec.grid) and
-- _rest (everything after "--", when spec.passthrough is set).

local cli = {}

local format, concat = string.format, table.concat

local TYPES = {number = true, int = true, string = true, bool = true, list = true}

---------------------------------------------------------------------------
-- User errors

-- The experiment whose command line cli.parse read last (message prefix).
cli.program = nil

-- Tracebacks for user errors too: --debug or NEUROMIC_DEBUG=1.
local function debug_env()
  local d = os.getenv("NEUROMIC_DEBUG")
  return d ~= nil and d ~= "" and d ~= "0"
end
cli.debug = debug_env()

local UserError = {__name = "nm.cli.error"}
UserError.__index = UserError
UserError.__tostring = function(e) return e.message end

-- One line: newlines and tabs of a message become spaces.
local function one_line(msg)
  return (tostring(msg):gsub("%s*\n%s*", " "):gsub("\t", " "))
end

-- Drops the "file.lua:123: " that error() puts before a message, and
-- the "bad argument #1 to 'f'" around a C function's complaint.
local function without_position(msg)
  msg = tostring(msg)
  msg = msg:match("^[^\n:]+%.lua:%d+: (.*)$") or msg:match("^%[[^\n]*%]:%d+: (.*)$") or msg
  return msg:match("^bad argument #%d+ to '[^']*' %((.*)%)$") or msg
end

-- cli.message(e) -> e as one line without "file.lua:12: " in front.
function cli.message(e)
  return one_line(without_position(e))
end

-- cli.is_error(e) -> true when e is an error object from cli.error.
function cli.is_error(e)
  return getmetatable(e) == UserError
end

-- cli.error(msg [, status [, traceback]]): raises a user error: one
-- line "program: msg" and exit status `status` (default 2) when it ends
-- the script. With --debug the message carries the traceback (the one
-- given, or where cli.error was called).
function cli.error(msg, status, traceback)
  msg = one_line(msg)
  local prog = cli.program
  if prog and msg:sub(1, #prog + 2) ~= prog .. ": " then msg = prog .. ": " .. msg end
  if cli.debug then
    msg = msg .. "\n" .. (traceback or debug.traceback("", 2):gsub("^\n", ""))
  end
  error(setmetatable({message = msg, exit_status = status or 2}, UserError), 0)
end

-- Runs fn(...); an error that is not a user error becomes one, after
-- `context` when given.
local function guarded(context, fn, ...)
  local trace
  local r = table.pack(xpcall(fn, function(e)
    if cli.debug then trace = debug.traceback("", 2):gsub("^\n", "") end
    return e
  end, ...))
  if r[1] then return table.unpack(r, 2, r.n) end
  if cli.is_error(r[2]) then error(r[2], 0) end
  local msg = without_position(r[2])   -- (no handler runs for "not enough memory")
  cli.error(context and (context .. ": " .. msg) or msg, 2, trace)
end

-- cli.guard([context,] fn, ...) -> fn(...): any error of fn is a user
-- error (for calls whose failures come from the command line: loading a
-- --data set, building a network of the --arch asked for), its message
-- after `context` (e.g. "--arch 4096-4096") when given. Errors that
-- already are user errors pass through unchanged.
function cli.guard(fn, ...)
  if type(fn) == "string" then return guarded(fn, ...) end
  return guarded(nil, fn, ...)
end

local function key_of(name)
  return (name:gsub("%-", "_"))
end

local function flag_of(name)
  return (name:gsub("_", "-"))
end

-- Spec entries to a uniform form; errors here are the script's bugs.
local function normalise(o)
  local n = {
    name = o.name or o[1], type = o.type or o[2], default = o.default,
    help = o.help or o[4] or "", quick = o.quick, choices = o.choices,
    min = o.min, max = o.max, item = o.item, metavar = o.metavar, multi = o.multi,
    empty = o.empty,
  }
  if n.default == nil then n.default = o[3] end
  if type(n.name) ~= "string" or not n.name:match("^[%a][%w_%-]*$") then
    error("cli: option without a valid name: " .. tostring(n.name), 3)
  end
  if not TYPES[n.type] then
    error(format("cli: option '%s' has unknown type '%s' (number, int, string, bool, list)",
                 n.name, tostring(n.type)), 3)
  end
  if n.multi and n.default == nil then n.default = {} end
  if n.type == "list" and n.empty == nil then
    n.empty = type(n.default) == "table" and #n.default == 0
  end
  if n.type == "list" and n.item == nil then
    local first = type(n.default) == "table" and n.default[1]
    n.item = (math.type(first) == "integer" and "int") or
             (type(first) == "number" and "number") or "string"
  end
  n.key = key_of(n.name)
  return n
end

local function builtin_options(spec, name)
  local list = {
    normalise{"seed", "int", spec.seed or 1, "seed of every random generator"},
    normalise{"quick", "bool", false, "small version that finishes in seconds"},
    normalise{"out", "string", "results/" .. name, "output directory", metavar = "DIR"},
    normalise{"resume", "bool", false, "continue from the checkpoint in --out, if there is one"},
    normalise{"overwrite", "bool", false, "replace the run already in --out"},
    normalise{"debug", "bool", false, "show the traceback of errors (or NEUROMIC_DEBUG=1)"},
  }
  if spec.jobs or spec.grid then
    list[#list + 1] = normalise{"jobs", "int", 1, "parallel worker processes", min = 1}
  end
  if spec.shard or spec.grid then
    list[#list + 1] = normalise{"shard", "string", nil,
                                "run only slice I of N (cells with index % N == I-1)",
                                metavar = "I/N"}
  end
  if spec.grid then
    list[#list + 1] = normalise{"merge", "bool", false, "gather the grids of the shard folders " ..
                                "given as arguments (--merge DIR1 DIR2 ...) and finish the run " ..
                                "in --out (doc/sweeps.md)"}
  end
  return list
end

local function value_text(v)
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = tostring(x) end
    return concat(parts, ",")
  end
  if v == "" then return '""' end
  return tostring(v)
end

-- The value of decimal text ("12", "-0.5", "1e-3"), or nil.
local function decimal(s)
  if not (s:match("^[+-]?%d+%.?%d*$") or s:match("^[+-]?%.%d+$") or
          s:match("^[+-]?%d+%.?%d*[eE][+-]?%d+$") or s:match("^[+-]?%.%d+[eE][+-]?%d+$")) then
    return nil
  end
  return tonumber(s)
end

-- Converts the text s for option o; returns value or nil, message.
local function convert(o, s, typ)
  typ = typ or o.type
  if typ == "string" then return s end
  if typ == "number" or typ == "int" then
    -- decimal only: no hexadecimal, no inf or nan
    local v = decimal(s)
    if v == nil then
      local what = typ == "int" and "an integer" or "a number"
      if tonumber(s) then what = "a decimal " .. what:match("%S+$") .. " (no hexadecimal, inf or nan)" end
      return nil, "expects " .. what
    end
    if v ~= v or v == math.huge or v == -math.huge then
      return nil, "expects a finite number"
    end
    if typ == "number" then return v + 0.0 end
    local i = math.tointeger(v)
    if i == nil then
      if math.abs(v) >= 2^63 then return nil, "expects an integer of at most 19 digits" end
      return nil, "expects an integer"
    end
    return i
  end
  if typ == "bool" then
    local b = ({["true"] = true, ["1"] = true, yes = true, on = true,
                ["false"] = false, ["0"] = false, no = false, off = false})[s:lower()]
    if b == nil then return nil, "expects true or false" end
    return b
  end
  -- list
  local items = {}
  if s == "" then
    if o.empty then return items end
    return nil, "needs at least one item"
  end
  for part in (s .. ","):gmatch("([^,]*),") do
    if part == "" then return nil, "has an empty item" end
    local v, err = convert(o, part, o.item)
    if v == nil then return nil, format("item '%s' %s", part, err) end
    items[#items + 1] = v
  end
  return items
end

local function check_value(o, v)
  local function check1(x)
    if o.choices then
      local ok = false
      for _, c in ipairs(o.choices) do if c == x then ok = true end end
      if not ok then return format("must be one of %s", value_text(o.choices)) end
    end
    if o.min and type(x) == "number" and x < o.min then return format("must be >= %s", o.min) end
    if o.max and type(x) == "number" and x > o.max then return format("must be <= %s", o.max) end
  end
  if o.type == "list" then
    for _, x in ipairs(v) do
      local err = check1(x)
      if err then return err end
    end
    return nil
  end
  return check1(v)
end

local function metavar(o)
  if o.metavar then return o.metavar end
  return ({number = "X", int = "N", string = "S", list = "A,B,..."})[o.type]
end

local function option_lines(list)
  local lines, width = {}, 0
  local heads = {}
  for i, o in ipairs(list) do
    local head
    if o.type == "bool" and o.default == true then head = "--[no-]" .. flag_of(o.name)
    elseif o.type == "bool" then head = "--" .. flag_of(o.name)
    else head = "--" .. flag_of(o.name) .. " " .. metavar(o) end
    heads[i] = head
    if #head > width then width = #head end
  end
  for i, o in ipairs(list) do
    local help = o.help
    if o.choices then help = help .. format(" (one of %s)", value_text(o.choices)) end
    local extra = {}
    if o.default ~= nil and not (o.type == "bool" and o.default == false) then
      extra[#extra + 1] = "default " .. value_text(o.default)
    end
    if o.quick ~= nil then extra[#extra + 1] = "--quick: " .. value_text(o.quick) end
    if #extra > 0 then help = help .. " [" .. concat(extra, "; ") .. "]" end
    lines[#lines + 1] = format("  %-" .. width .. "s  %s", heads[i], help)
  end
  return lines
end

-- The usage text built from the spec.
function cli.usage(spec, name)
  name = name or spec.name or "experiment"
  local script = spec.script or (arg and arg[0]) or (name .. ".lua")
  local lines = {}
  local pos = spec.positional and (" " .. spec.positional) or
              (spec.grid and " [--merge SHARD_DIR...]" or "")
  local pass = spec.passthrough and (" [-- " .. spec.passthrough .. "]") or ""
  lines[#lines + 1] = format("usage: ./neuromic %s [options]%s%s", script, pos, pass)
  if spec.description then
    lines[#lines + 1] = ""
    lines[#lines + 1] = spec.description
  end
  local own = {}
  for i, o in ipairs(spec.options or {}) do own[i] = normalise(o) end
  if #own > 0 then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "options:"
    for _, l in ipairs(option_lines(own)) do lines[#lines + 1] = l end
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "common options:"
  local common = builtin_options(spec, name)
  common[#common + 1] = normalise{"help", "bool", false, "print this help and exit"}
  for _, l in ipairs(option_lines(common)) do lines[#lines + 1] = l end
  if spec.epilog then
    lines[#lines + 1] = ""
    lines[#lines + 1] = spec.epilog
  end
  return concat(lines, "\n") .. "\n"
end

local function script_name(spec)
  if spec.name then return spec.name end
  local a0 = arg and arg[0]
  if type(a0) == "string" then
    return (a0:match("([^/]+)%.lua$") or a0:match("([^/]+)$"))
  end
  return "experiment"
end

-- cli.try_parse(args, spec) -> opts | nil, message, exit code (0 after
-- --help with the usage as message, 2 for errors). Never exits.
function cli.try_parse(args, spec)
  spec = spec or {}
  local name = script_name(spec)
  local list, by_key = {}, {}
  for _, o in ipairs(builtin_options(spec, name)) do list[#list + 1] = o end
  for _, raw in ipairs(spec.options or {}) do
    local o = normalise(raw)
    if by_key[o.key] then error("cli: option '" .. o.name .. "' declared twice", 2) end
    for _, b in ipairs(list) do
      if b.key == o.key then error("cli: option '" .. o.name .. "' is a common option", 2) end
    end
    list[#list + 1] = o
  end
  for _, o in ipairs(list) do by_key[o.key] = o end

  local opts, explicit, positional, rest = {}, {}, {}, nil
  local argv = {}
  for i = 1, #args do argv[i] = args[i] end
  local function fail(msg)
    return nil, format("%s: %s (try --help)", name, msg), 2
  end

  local i = 1
  while i <= #argv do
    local a = argv[i]
    if type(a) ~= "string" then a = tostring(a) end
    if a == "--" then
      if not spec.passthrough then return fail("unexpected '--'") end
      rest = {}
      for j = i + 1, #argv do rest[#rest + 1] = argv[j] end
      break
    elseif a == "-h" or a == "--help" then
      return nil, cli.usage(spec, name), 0
    elseif a:sub(1, 2) == "--" then
      local flag, value = a:match("^%-%-([^=]+)=(.*)$")
      if not flag then flag = a:sub(3) end
      local key, o = key_of(flag), nil
      o = by_key[key]
      local negated = false
      if not o and key:sub(1, 3) == "no_" and by_key[key:sub(4)] and by_key[key:sub(4)].type == "bool" then
        o, negated = by_key[key:sub(4)], true
        if value ~= nil then return fail(format("option '--%s' takes no value", flag)) end
      end
      if not o then return fail(format("unknown option '--%s'", flag)) end
      local v, err
      if o.type == "bool" then
        if negated then v = false
        elseif value == nil then v = true
        else v, err = convert(o, value) end
      else
        if value == nil then
          value = argv[i + 1]
          if value == nil then return fail(format("option '--%s' needs a value", flag)) end
          i = i + 1
        end
        v, err = convert(o, value)
      end
      if v == nil then return fail(format("option '--%s' %s, got '%s'", flag, err, value)) end
      err = check_value(o, v)
      if err then return fail(format("option '--%s' %s, got '%s'", flag, err, value or value_text(v))) end
      if o.key == "shard" then
        local si, sn = v:match("^(%d+)/(%d+)$")
        si, sn = math.tointeger(tonumber(si)), math.tointeger(tonumber(sn))
        if not si or sn < 1 or si < 1 or si > sn then
          return fail(format("option '--shard' expects I/N with 1 <= I <= N, got '%s'", v))
        end
        v = {index = si, count = sn}
      end
      if o.multi then
        opts[o.key] = opts[o.key] or {}
        table.insert(opts[o.key], v)
      else
        opts[o.key] = v
      end
      explicit[o.key] = true
    elseif a:sub(1, 1) == "-" and #a > 1 and not tonumber(a) then
      return fail(format("unknown option '%s'", a))
    else
      if not (spec.positional or spec.grid) then
        return fail(format("unexpected argument '%s'", a))
      end
      positional[#positional + 1] = a
    end
    i = i + 1
  end

  for _, o in ipairs(list) do
    if not explicit[o.key] then
      local v = o.default
      if opts.quick and o.quick ~= nil then v = o.quick end
      if type(v) == "table" then   -- a copy, so scripts may modify it
        local c = {}
        for j, x in ipairs(v) do c[j] = x end
        v = c
      end
      opts[o.key] = v
    end
  end
  opts._name = name
  opts._argv = argv
  opts._explicit = explicit
  if spec.grid and not spec.positional then
    if opts.merge and opts.shard then return fail("--merge and --shard exclude each other") end
    if opts.merge and #positional == 0 then
      return fail("--merge needs the shard folders (--merge DIR1 DIR2 ... --out DIR)")
    end
    if not opts.merge and #positional > 0 then
      return fail(format("unexpected argument '%s' (shard folders go after --merge)", positional[1]))
    end
  end
  if spec.positional or spec.grid then opts._args = positional end
  if spec.passthrough then opts._rest = rest or {} end
  return opts
end

-- cli.parse(args, spec) -> opts. Prints usage and exits 0 for --help;
-- prints the error and exits 2 for bad input.
function cli.parse(args, spec)
  local opts, msg, code = cli.try_parse(args or {}, spec)
  if opts then
    cli.program = opts._name
    if opts.debug then cli.debug = true end
    if opts.resume and opts.overwrite then
      io.stderr:write(opts._name, ": --resume and --overwrite exclude each other (try --help)\n")
      os.exit(2)
    end
    return opts
  end
  if code == 0 then
    io.stdout:write(msg)
    io.stdout:flush()
  else
    io.stderr:write(msg, "\n")
    io.stderr:flush()
  end
  os.exit(code)
end

-- The options of opts as a plain table for results files: every declared
-- and common option but --overwrite and --debug (how a run was started,
-- not what it is), without the bookkeeping fields starting with '_'.
local NOT_RECORDED = {overwrite = true, debug = true}
function cli.plain(opts)
  local t = {}
  for k, v in pairs(opts) do
    if type(k) == "string" and k:sub(1, 1) ~= "_" and not NOT_RECORDED[k] then t[k] = v end
  end
  return t
end

-- Option text that reads back to v exactly (numbers as in JSON).
local function arg_text(v)
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = arg_text(x) end
    return concat(parts, ",")
  end
  if type(v) == "number" then return require("nm.json").number_text(v) end
  return tostring(v)
end

-- cli.argv(opts, spec [, except]) -> {"--name=value", ...}: the arguments
-- that give the script of `spec` the values opts holds for its own
-- options (every one, given or default; not the common ones), but those
-- named in the set `except` (keys with '_'). How an experiment starts
-- itself as the worker of one cell of its grid (nm.sweep's sweep.grid).
function cli.argv(opts, spec, except)
  local list = {}
  for _, raw in ipairs(spec.options or {}) do
    local o = normalise(raw)
    local v = opts[o.key]
    if not (except and except[o.key]) and v ~= nil then
      for _, x in ipairs(o.multi and v or {v}) do
        list[#list + 1] = "--" .. flag_of(o.name) .. "=" .. arg_text(x)
      end
    end
  end
  return list
end

-- cli.rules(program, list, kind [, model]) -> the definitions of the
-- rules a --rules list names (names from rules/ or paths), in order. A
-- rule that does not load, is invalid, or is not of `kind` (and `model`)
-- ends the program with exit status 2 and one line per problem on stderr,
-- each naming the program and the file.
function cli.rules(program, list, kind, model)
  local rule = require "nm.rule"
  local defs = {}
  for i, r in ipairs(list) do
    local ok, def = pcall(rule.definition, r)
    if ok then ok, def = pcall(rule.require_kind, def, kind, model) end
    if not ok then
      for line in tostring(def):gmatch("[^\n]+") do
        io.stderr:write(program, ": ", line:find(r, 1, true) == 1 and "" or (r .. ": "), line, "\n")
      end
      os.exit(2)
    end
    defs[i] = def
  end
  return defs
end

return cli
