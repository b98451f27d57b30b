-- nm/rule.lua: plasticity rules. A rule is a Lua file in rules/ (or any
-- path) that returns one plain table: its kind, its name (the file's base
-- name), its equation as text, the paper it comes from, its parameters
-- (defaults and docs), an optional check(p) -> ok, message, and the
-- fields of its kind:
--
--   kind = "connection"  a per-connection rule (pre, post, error, W, ...):
--     update(q, p)   writes q.dW (q.db when bias = true); apply zeroes both
--                    first, so a rule writes its change, never accumulates
--     fused(q, p)    optional C fast path that changes q.W directly
--     init(conn, p)  optional rule state; needs = {...} quantities it reads;
--     bias = true    it changes biases too
--     feedback = "fa"  the error pathway a network computes for it: the name
--                    of a pathway or of a connection rule that defines one;
--     pathway = {...}  or the pathway it defines itself (see "Error pathways")
--   kind = "circuit"     one plasticity step over a model's named state:
--     model = "microcircuit" | "bmvr" | "folded_ae" | "nk" | ...
--     pathway = "up" (the plastic pathway it drives) or pathways = {...}
--     step(s, p)     the Lua reference; init(s, p), kernel optional
--   kind = "meta"        a parametrised family learned in an outer loop:
--     model = "motif_net" | "rcn" | ...; coefficients = {...};
--     step(...)      the Lua reference; kernel optional
--
--   -- rules/hebb.lua
--   return {
--     kind = "connection", name = "hebb",
--     equation = "dW = eta <post pre^T>",
--     paper = "Hebb 1949, The Organization of Behavior",
--     params = {eta = {default = 0.01, doc = "learning rate"}},
--     update = function(q, p)            -- writes q.dW (q.db when bias = true)
--       q.dW:addmm(p.eta / q.batch, q.post_t, q.pre, 0)
--     end,
--     fused = function(q, p)             -- optional: changes q.W directly
--       nm.kernels.plastic_outer(q.W, p.eta / q.batch, q.post, q.pre, nil, q.mask)
--     end,
--   }
--
-- Loading: rule.definition(name_or_path) is the one loader. A string with
-- a '/' or ending in ".lua" is a file path; any other is a name searched
-- on rule.path (NEUROMIC_RULES, ./rules, the repository's rules/, then
-- rules/<name>.lua on package.path). Definitions are cached by file path;
-- rule.validate reports every problem of a definition at once, one line
-- each, naming the file, the kind and the field. Library and model code
-- never require rules.*: they receive definitions or instances.
--
-- The quantities table q (built once per connection and batch size by
-- whoever owns the connection, nn.lua for networks; see rule.quantities):
--   pre [B x n_pre], post [B x n_post], a (post's input) [B x n_post],
--   error [B x n_post] (dLoss/da, or a dendritic mismatch), and their
--   transposes pre_t, post_t, error_t (views made once, so rules
--   allocate nothing); W [n_post x n_pre], b [n_post] or nil, mask or nil,
--   mod (modulator: number, tensor or table, set by the model), state
--   (what the rule's init returned), batch (B), ones [B], dW, db (the
--   buffers update writes). Rows are samples; updates use batch means.
--
-- Applying a rule (rule.apply) respects the global switch
-- (rule.set_learning) and the connection's own (conn.plastic = false):
-- the weights of a switched-off connection never change. dW and db are
-- zeroed, update writes them, dW is multiplied by the mask (masked
-- weights never change), then added to W (and db to b), unless q.defer is
-- set: then the caller takes dW/db (an optimiser, or a measure comparing
-- updates). When the rule has a fused form and nothing is deferred, the
-- fused form runs instead; the two are tested equal (spec/rules_spec.lua).
-- With inst.use_compiled = true, update and the application run as one
-- kernel the rule compiler generates from update (rule.compiled_update;
-- doc/compiler.md), whether or not the rule has a fused form.
--
-- Error pathways. How errors travel back to hidden layer l, written once,
-- in the connection rule that defines the pathway (rules/backprop.lua:
-- W^T, rules/fa.lua: fixed random B, rules/dfa.lua: direct D,
-- rules/sign_symmetry.lua: sign(W)):
--
--   pathway = {
--     name = "fa",          -- what networks and results call it
--     doc = "...",
--     source = "next",      -- e_l comes from e_{l+1} ("next") or from the
--                           -- output error e_L ("output")
--     init = function(rows, cols, dtype, draw) return state end,
--         -- optional, once per hidden layer; rows x cols is the matrix's
--         -- shape: n_{l+1} x n_l ("next", like W_{l+1}) or n_L x n_l
--         -- ("output"); draw(T) fills a tensor from the network's
--         -- generator like its weights
--     matrix = function(W, state) return M end,
--         -- M [rows x cols]: e_l = (M^T e_src) .* f'(a_l), in rows
--         -- E_l = E_src M; W is W_{l+1} ("next") or W_L ("output"), a
--         -- plain tensor; called every backward pass, allocates nothing
--   }
--
-- rule.pathway(x) resolves a pathway name, a rule name, path, definition
-- or instance to its pathway table; rule.pathways() lists the built-in
-- ones in the order networks draw their state (PATHWAY_RULES below).
-- nn.mlp and the motif network (nm.models.meta) both use them.

local nm = require "neuromic"

local rule = {}

local format, concat, sort = string.format, table.concat, table.sort

-- Global plasticity switch (test phases).
local learning_on = true

function rule.set_learning(on)
  learning_on = not not on
end

function rule.learning()
  return learning_on
end

-- ---------------------------------------------------------------- loading

-- Where rule files are searched, in package.path syntax: ./rules, then
-- rules/ beside the modules this file was loaded with: at the repository
-- root (lua/nm/rule.lua in a checkout) or in the Lua directory of an
-- installed rock (<luadir>/nm/rule.lua, rules in <luadir>/rules);
-- NEUROMIC_RULES (a path list) comes first when set.
local function default_path()
  local parts = {}
  local env = os.getenv("NEUROMIC_RULES")
  if env and env ~= "" then parts[#parts + 1] = env end
  parts[#parts + 1] = "./rules/?.lua"
  local src = debug.getinfo(1, "S").source
  local root = src:match("^@(.-)lua/nm/rule%.lua$") or src:match("^@(.-)nm/rule%.lua$")
  if root and root ~= "" and root ~= "./" then parts[#parts + 1] = root .. "rules/?.lua" end
  return concat(parts, ";")
end

rule.path = default_path()

-- The rule files that define the built-in error pathways, in the order
-- networks draw their random state (so one seed gives the same B and D
-- whichever of them a network uses).
local PATHWAY_RULES = {"backprop", "fa", "dfa", "sign_symmetry"}

local QUANTITIES = {
  pre = true, post = true, a = true, error = true, W = true, b = true, mask = true,
  mod = true, state = true, batch = true, ones = true, pre_t = true, post_t = true,
  error_t = true, dW = true, db = true,
}

local KINDS = {connection = true, circuit = true, meta = true}
local SOURCES = {next = true, output = true}

local function nonempty(s) return type(s) == "string" and s ~= "" end

-- The fields each kind requires or allows beyond the common ones:
-- {field, type, required, what (for the message)}.
local KIND_FIELDS = {
  connection = {
    {"update", "function", true, "function(q, p)"},
    {"fused", "function", false, "function(q, p)"},
    {"init", "function", false, "function(conn, p)"},
    {"bias", "boolean", false, "true or false"},
    {"needs", "table", false, "a list of quantity names"},
    {"feedback", "string", false, "the name of an error pathway"},
    {"pathway", "table", false, "{name, doc, source, init, matrix}"},
  },
  circuit = {
    {"model", "string", true, "the model whose state it reads"},
    {"step", "function", true, "function(s, p)"},
    {"init", "function", false, "function(s, p)"},
    {"kernel", "function", false, "the C fast path over the same s, p"},
  },
  meta = {
    {"model", "string", true, "the model it meta-learns on"},
    {"coefficients", "table", true, "the meta-parameters' names, shapes, initial values"},
    {"step", "function", true, "the Lua reference of one step"},
    {"kernel", "function", false, "the fused C forward and adjoint"},
  },
}

local loading, cache, validated = {}, {}, setmetatable({}, {__mode = "k"})

local Rule = {}          -- the metatable of rule instances (below)
Rule.__index = Rule

local pathway_problems   -- defined below

local COMMON = {kind = true, name = true, equation = true, paper = true, params = true, check = true}

-- Edit distance of two short strings (for "did you mean").
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = {[0] = i}
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

-- rule.problems(def [, file]) -> a list of one-line problems (empty when
-- def is a valid rule), each naming the file, the kind and the field.
function rule.problems(def, file)
  local out = {}
  local where = file and (file .. ": ") or ""
  if type(def) ~= "table" then
    out[1] = format("%sa rule file must return one rule definition table, got %s", where, type(def))
    return out
  end
  local kind = def.kind
  local label
  if KINDS[kind] then
    label = format("%s%s rule '%s'", where, kind, tostring(def.name))
  else
    label = format("%srule '%s'", where, tostring(def.name))
  end
  local function bad(fmt, ...) out[#out + 1] = label .. ": " .. format(fmt, ...) end
  if kind == nil then
    bad("field 'kind' (\"connection\", \"circuit\" or \"meta\") is missing")
  elseif not KINDS[kind] then
    bad("field 'kind' must be \"connection\", \"circuit\" or \"meta\", got %s", tostring(kind))
  end
  if not nonempty(def.name) then bad("field 'name' (a string, the file's base name) is missing")
  elseif file then
    local base = file:match("([^/]+)%.lua$")
    if base and base ~= def.name then bad("field 'name' must be the file's base name '%s'", base) end
  end
  if not nonempty(def.equation) then bad("field 'equation' (the rule as text) is missing") end
  if not nonempty(def.paper) then bad("field 'paper' (the citation) is missing") end
  if def.check ~= nil and type(def.check) ~= "function" then
    bad("field 'check' must be a function(p) returning ok, message")
  end
  if type(def.params) ~= "table" then
    bad("field 'params' (a table, may be empty) is missing")
  else
    local names = {}
    for k in pairs(def.params) do names[#names + 1] = tostring(k) end
    sort(names)
    for _, k in ipairs(names) do
      local spec = def.params[k]
      if type(spec) ~= "table" or spec.default == nil then
        bad("parameter '%s' needs {default = ..., doc = ...}", k)
      elseif not nonempty(spec.doc) then
        bad("parameter '%s' has no doc string", k)
      end
    end
    for k in pairs(def.params) do
      if type(k) ~= "string" then bad("parameter names must be strings, got %s", tostring(k)) end
    end
  end
  for _, f in ipairs(KIND_FIELDS[kind] or {}) do
    local name, ty, required, what = f[1], f[2], f[3], f[4]
    local v = def[name]
    if v == nil then
      if required then bad("field '%s' (%s) is missing", name, what) end
    elseif type(v) ~= ty then
      bad("field '%s' must be %s, got %s", name, what, type(v))
    end
  end
  if kind == "connection" then
    -- A misspelt field would otherwise pass silently (or show up as a
    -- missing one): name it, with the field it probably meant.
    local known = {}
    for k in pairs(COMMON) do known[#known + 1] = k end
    for _, f in ipairs(KIND_FIELDS.connection) do known[#known + 1] = f[1] end
    sort(known)
    local extra = {}
    for k in pairs(def) do
      if type(k) ~= "string" then extra[#extra + 1] = tostring(k)
      elseif not COMMON[k] then
        local ok = false
        for _, f in ipairs(KIND_FIELDS.connection) do ok = ok or f[1] == k end
        if not ok then extra[#extra + 1] = k end
      end
    end
    sort(extra)
    for _, k in ipairs(extra) do
      local best, bd = nil, 3
      for _, n in ipairs(known) do
        local d = distance(k, n)
        if d < bd then best, bd = n, d end
      end
      bad("field '%s' is not a field of connection rules%s", k,
          best and format(" (did you mean '%s'?)", best) or "")
    end
    if type(def.needs) == "table" then
      for _, k in ipairs(def.needs) do
        if not QUANTITIES[k] then bad("field 'needs' names an unknown quantity '%s'", tostring(k)) end
      end
    end
    if def.feedback ~= nil and def.pathway ~= nil then
      bad("give either field 'feedback' (a pathway defined elsewhere) or 'pathway', not both")
    elseif type(def.pathway) == "table" then
      for _, msg in ipairs(pathway_problems(def.pathway)) do bad("field 'pathway': %s", msg) end
    elseif type(def.feedback) == "string" then
      local ok, err = pcall(rule.pathway, def.feedback)
      if not ok then bad("field 'feedback': %s", tostring(err):gsub("\n.*", "")) end
    end
  elseif kind == "circuit" then
    local one, many = def.pathway, def.pathways
    if (one == nil) == (many == nil) then
      bad("give exactly one of field 'pathway' (the plastic pathway it drives, a string) " ..
          "or 'pathways' (a list of them)")
    elseif one ~= nil and not nonempty(one) then
      bad("field 'pathway' must be a non-empty string, got %s", type(one))
    elseif many ~= nil then
      local ok = type(many) == "table" and #many > 0
      for _, n in ipairs(type(many) == "table" and many or {}) do ok = ok and nonempty(n) end
      if not ok then bad("field 'pathways' must be a non-empty list of strings") end
    end
  end
  return out
end

-- rule.validate(def [, file]) -> def, or an error listing every problem,
-- one line each.
function rule.validate(def, file)
  if type(def) == "table" and validated[def] then return def end
  local problems = rule.problems(def, file)
  if #problems > 0 then error(concat(problems, "\n"), 0) end
  validated[def] = true
  return def
end

-- "a/./b//c.lua" -> "a/b/c.lua" (the cache key of a file).
local function normalise(path)
  path = path:gsub("/%./", "/"):gsub("//+", "/")
  while path:sub(1, 2) == "./" and #path > 2 do path = path:sub(3) end
  return path
end

-- The file of a rule name on rule.path, then rules/<name>.lua on
-- package.path; nil and the places tried.
local function find(name)
  local file, err = package.searchpath(name, rule.path)
  if file then return file end
  local file2, err2 = package.searchpath("rules." .. name, package.path)
  if file2 then return file2 end
  return nil, (err or "") .. (err2 or "")
end

local function is_path(s)
  return s:find("/", 1, true) ~= nil or s:sub(-4) == ".lua"
end

-- rule.definition(name | path | definition) -> the validated definition.
-- Errors name the file and every problem, one line each.
function rule.definition(x)
  if type(x) == "table" then
    if getmetatable(x) == Rule then return x.def end         -- an instance
    return rule.validate(x)
  end
  if type(x) ~= "string" or x == "" then
    error("rule.definition: rule name, file path or definition table expected", 2)
  end
  local file
  if is_path(x) then
    file = x
  else
    if not x:match("^[%w_%-]+$") then
      error(format("rule.definition: bad rule name '%s' (a name from rules/ or a file path " ..
                   "such as ./%s.lua)", x, x), 2)
    end
    local err
    file, err = find(x)
    if not file then
      error(format("rule.definition: no rule '%s' (known rules: %s)", x, concat(rule.list(), ", ")), 2)
    end
  end
  local key = normalise(file)
  local def = cache[key]
  if def then return def end
  if loading[key] then error(format("%s: rule files refer to each other in a circle", key), 0) end
  local chunk, lerr = loadfile(file)
  if not chunk then
    local f = io.open(file, "r")
    if not f then error(format("%s: no such rule file", file), 0) end
    f:close()
    error(lerr, 0)
  end
  loading[key] = true
  local ok, got = pcall(chunk)
  if not ok then loading[key] = nil; error(format("%s: %s", file, tostring(got)), 0) end
  local okv, verr = pcall(rule.validate, got, file)
  loading[key] = nil
  if not okv then error(verr, 0) end
  cache[key] = got
  return got
end

-- Directories named by a package.path-style list whose entries end in
-- "/?.lua", with `sub` appended (package.path: sub = "rules/").
local function dirs_of(path, sub, out)
  for pattern in path:gmatch("[^;]+") do
    local dir = pattern:match("^(.*)/%?%.lua$")
    if dir then out[#out + 1] = dir .. sub end
  end
  return out
end

-- rule.list([kind]) -> the names of the rules found on rule.path (and
-- rules/ on package.path), sorted; with kind, only the rules of that kind
-- (which loads and validates each).
function rule.list(kind)
  if kind ~= nil and not KINDS[kind] then
    error(format("rule.list: unknown kind '%s' (connection, circuit, meta)", tostring(kind)), 2)
  end
  local dirs = dirs_of(rule.path, "", {})
  dirs_of(package.path, "/rules", dirs)
  local seen, out = {}, {}
  for _, dir in ipairs(dirs) do
    for _, f in ipairs(require("neuromic").sys.listdir(dir) or {}) do   -- no shell
      local n = f:match("^([%w_%-]+)%.lua$")
      if n and not seen[n] then seen[n] = true; out[#out + 1] = n end
    end
  end
  sort(out)
  if kind then
    local keep = {}
    for _, n in ipairs(out) do
      if rule.definition(n).kind == kind then keep[#keep + 1] = n end
    end
    out = keep
  end
  return out
end

-- ---------------------------------------------------------------- error pathways

function pathway_problems(pw)
  local out = {}
  if not nonempty(pw.name) then out[#out + 1] = "'name' (a string) is missing" end
  if not nonempty(pw.doc) then out[#out + 1] = "'doc' (what the errors travel through) is missing" end
  if not SOURCES[pw.source] then
    out[#out + 1] = "'source' must be \"next\" (from e_{l+1}) or \"output\" (from e_L)"
  end
  if pw.init ~= nil and type(pw.init) ~= "function" then
    out[#out + 1] = "'init' must be a function(rows, cols, dtype, draw)"
  end
  if type(pw.matrix) ~= "function" then
    out[#out + 1] = "'matrix' (function(W, state) returning M) is missing"
  end
  return out
end

-- The built-in pathways (tables), in PATHWAY_RULES order.
function rule.pathways()
  local out = {}
  for i, n in ipairs(PATHWAY_RULES) do out[i] = rule.definition(n).pathway end
  return out
end

-- rule.pathway(x) -> a pathway table. x: a pathway table, a pathway's
-- name ("bp", "fa", ...), a connection rule's name or path, definition
-- or instance (its own pathway, or the one its feedback names).
function rule.pathway(x)
  if type(x) == "table" and type(x.matrix) == "function" and x.source then return x end
  if type(x) == "string" and not is_path(x) then
    for _, n in ipairs(PATHWAY_RULES) do
      local ok, def = pcall(rule.definition, n)
      if ok and def.pathway and def.pathway.name == x then return def.pathway end
    end
  end
  local ok, def = pcall(rule.definition, x)
  if not ok then
    local names = {}
    for i, n in ipairs(PATHWAY_RULES) do
      local okn, d = pcall(rule.definition, n)
      names[i] = okn and d.pathway.name or n
    end
    error(format("no error pathway '%s' (%s, or a connection rule defining one)", tostring(x),
                 concat(names, ", ")), 2)
  end
  if def.pathway then return def.pathway end
  if def.feedback then return rule.pathway(def.feedback) end
  error(format("rule '%s' defines no error pathway", def.name), 2)
end
-- ---------------------------------------------------------------- instances

-- rule.new(name | definition [, params]) -> a rule instance with its
-- parameters: defaults overridden by params; unknown names are errors.
function rule.new(name, params)
  local def = rule.definition(name)
  local p = {}
  for k, spec in pairs(def.params) do p[k] = spec.default end
  for k, v in pairs(params or {}) do
    local spec = def.params[k]
    if spec == nil then
      local names = {}
      for n in pairs(def.params) do names[#names + 1] = n end
      sort(names)
      error(format("rule '%s' has no parameter '%s' (parameters: %s)", def.name, tostring(k),
                   #names > 0 and concat(names, ", ") or "none"), 2)
    end
    if type(v) ~= type(spec.default) then
      error(format("rule '%s': parameter '%s' must be a %s, got %s", def.name, k,
                   type(spec.default), type(v)), 2)
    end
    p[k] = v
  end
  if def.check then
    local ok, msg = def.check(p)
    if not ok then error(format("rule '%s': %s", def.name, tostring(msg)), 2) end
  end
  return setmetatable({def = def, name = def.name, p = p, use_fused = true}, Rule)
end

function rule.is_rule(x)
  return getmetatable(x) == Rule
end

-- Text documentation of a rule: equation, paper, parameters.
function rule.describe(name)
  local def = rule.is_rule(name) and name.def or rule.definition(name)
  local lines = {format("%s (%s rule%s)", def.name, def.kind,
                        def.model and (" of model " .. def.model) or ""),
                 "  " .. def.equation, "  paper: " .. def.paper}
  if def.pathway and type(def.pathway) == "table" then
    lines[#lines + 1] = format("  error pathway '%s': %s", def.pathway.name, def.pathway.doc)
  elseif def.feedback then
    lines[#lines + 1] = "  error pathway: " .. def.feedback
  elseif def.pathway or def.pathways then
    lines[#lines + 1] = "  drives: " .. (def.pathway or concat(def.pathways, ", "))
  end
  local names = {}
  for k in pairs(def.params) do names[#names + 1] = k end
  sort(names)
  for _, k in ipairs(names) do
    local s = def.params[k]
    lines[#lines + 1] = format("  %s = %s  %s", k, tostring(s.default), s.doc)
  end
  if def.fused or def.kernel then lines[#lines + 1] = "  (has a fused C kernel)" end
  return concat(lines, "\n")
end

function Rule:describe() return rule.describe(self) end
function Rule:__tostring() return format("rule '%s'", self.name) end

-- The rule's initial state for a connection (nil when it declares none).
function Rule:init_state(conn)
  if self.def.init then return self.def.init(conn, self.p) end
  return nil
end

-- ---------------------------------------------------------------- applying

-- Fills the static part of a quantities table for connection conn:
-- W, b, mask, dW/db buffers (allocated here, once). The caller sets the
-- activity fields (pre, post, error, ... and their transposes) and batch.
function rule.quantities(conn, q)
  q = q or {}
  q.W, q.b, q.mask = conn.W, conn.b, conn.mask
  if not conn.dW then
    conn.dW = conn.W:clone():zero()
    if conn.b then conn.db = conn.b:clone():zero() end
  end
  q.dW, q.db = conn.dW, conn.db
  q.state = conn.state
  return q
end

local function check_needs(inst, q)
  for _, k in ipairs(inst.def.needs or {}) do
    if q[k] == nil then
      error(format("rule '%s' needs quantity '%s', which this connection does not provide",
                   inst.name, k), 3)
    end
  end
end

-- rule.is_tensor(x): x is a tensor, or stands for one in a step the rule
-- compiler traces (a rule that branches on what a quantity is asks this,
-- not type(x) == "userdata").
function rule.is_tensor(x)
  if nm.is_tensor(x) then return true end
  local mt = getmetatable(x)
  return type(mt) == "table" and mt.__name == "nm.compile.Ref"
end

-- The compiled form of a connection rule (inst.use_compiled): its update
-- traced by nm.compile with q's tensors, then W += dW (.* mask), b += db,
-- in one kernel that changes W (b, and the rule state it keeps) in place.
-- One per quantities table; traced again when a parameter becomes or stops
-- being 0 or a quantity changes shape.
local compiled = setmetatable({}, {__mode = "k"})

-- The parameters of the instances a rule wraps (rule.lowpass's inner
-- rule) are numbers its update reads from a closure, fixed in the kernel:
-- a snapshot of them is kept with the kernel, and a change traces again.
-- (Compared without allocating: rule.apply runs it at every update.)
local function wrapped_snapshot(inst)
  local snap, x = {}, inst.inner
  while x do
    local p = {}
    for k, v in pairs(x.p) do p[k] = v end
    snap[#snap + 1] = {p = x.p, values = p}
    x = x.inner
  end
  return snap
end

local function wrapped_same(inst, snap)
  local x, i = inst.inner, 0
  while x do
    i = i + 1
    local s = snap[i]
    if not s or s.p ~= x.p then return false end
    for k, v in pairs(x.p) do if s.values[k] ~= v then return false end end
    for k in pairs(s.values) do if x.p[k] == nil then return false end end
    x = x.inner
  end
  return i == #snap
end

local function compiled_update(inst, q)
  local per = compiled[inst]
  if not per then per = setmetatable({}, {__mode = "k"}); compiled[inst] = per end
  local st = per[q]
  if st and st:valid(inst.p) and (not st.wrapped or wrapped_same(inst, st.wrapped)) then
    return st
  end
  local compile = require "nm.compile"
  local def = inst.def
  st = compile.state_step{
    step = def.update, s = q, p = inst.p, name = def.name,
    source = debug.getinfo(def.update, "S").short_src, equation = def.equation,
    views = {pre_t = "pre", post_t = "post", error_t = "error"}, zero = {"dW", "db"},
    scalars = {"mod"}, dtype = q.W:dtype(),
    finish = function(s)
      local ag = require "nm.autograd"
      local value = compile.value_of
      local dW = value(s.dW)
      if s.mask then dW = ag.mul(dW, value(s.mask)) end
      local out = {W = ag.add(value(s.W), dW)}
      if def.bias and s.b and s.db then out.b = ag.add(value(s.b), value(s.db)) end
      return out
    end,
  }
  st.wrapped = inst.inner and wrapped_snapshot(inst) or nil
  per[q] = st
  return st
end
rule.compiled_update = compiled_update

-- rule.apply(inst, conn, q) -> true when the weights (or, deferred, dW)
-- changed, false when learning is off globally or for conn.
function rule.apply(inst, conn, q)
  if not learning_on or conn.plastic == false then return false end
  local def, p = inst.def, inst.p
  if inst.needs_checked ~= q then
    rule.require_kind(inst, "connection", nil, 3)
    check_needs(inst, q)
    inst.needs_checked = q
  end
  if inst.use_compiled and not q.defer then
    compiled_update(inst, q):run(p)
    return true
  end
  if def.fused and inst.use_fused and not q.defer then
    def.fused(q, p)
    return true
  end
  local db = q.db
  q.dW:zero()              -- a rule writes its change: nothing carries over
  if db then db:zero() end
  def.update(q, p)
  if q.mask then q.dW:mul(q.mask) end
  if not q.defer then
    q.W:add(q.dW)
    if db and def.bias and q.b then q.b:add(db) end
  elseif db and not def.bias then
    db:zero()              -- the caller reads db: this rule leaves biases alone
  end
  return true
end

-- rule.emit(def) prints the C of a connection rule's compiled update
-- (rule.compiled_update) for a connection of 5 presynaptic and 4
-- postsynaptic cells (with a bias when the rule changes biases) and a batch
-- of 8: `neuromic --emit rules/x.lua`.
function rule.emit(def)
  local inst = rule.new(def)
  local B, n, m = 8, 5, 4
  local function z(...) return nm.zeros(...) end
  local conn = {W = z(m, n, "float64"), b = def.bias and z(m, "float64") or nil}
  conn.state = def.init and def.init(conn, inst.p) or nil
  local q = rule.quantities(conn)
  q.pre, q.post, q.a, q.error = z(B, n, "float64"), z(B, m, "float64"), z(B, m, "float64"),
                                z(B, m, "float64")
  q.pre_t, q.post_t, q.error_t = q.pre:t(), q.post:t(), q.error:t()
  q.batch, q.ones = B, nm.ones(B, "float64")
  io.stdout:write(compiled_update(inst, q):source())
end

-- rule.require_kind(inst, kind [, model [, level]]) -> inst, or an error
-- saying which kind (and model) the rule is for: models call it on the
-- rules they are given.
function rule.require_kind(inst, kind, model, level)
  local def = inst.def or inst
  if def.kind ~= kind then
    error(format("rule '%s' is a %s rule%s, not a %s rule", def.name, tostring(def.kind),
                 def.model and (" of model " .. def.model) or "", kind), (level or 1) + 1)
  end
  if model and def.model ~= model then
    error(format("rule '%s' is a %s rule of model '%s', not of model '%s'", def.name, kind,
                 tostring(def.model), model), (level or 1) + 1)
  end
  return inst
end

-- ---------------------------------------------------------------- shared pieces

-- rule.lowpass(inner [, {tau = 10}]) -> a rule instance whose change is
-- the low-pass filtered change of `inner` (a name or an instance), as the
-- slow synaptic traces of dendritic-prediction learning use:
--   dWbar <- (1 - 1/tau) dWbar + (1/tau) dW_inner;   W += dWbar
-- (biases likewise when inner changes them). The filter state lives in
-- the connection's rule state (checkpointed with it).
function rule.lowpass(inner, params)
  if not rule.is_rule(inner) then inner = rule.new(inner) end
  local idef = inner.def
  local def = {
    kind = "connection",
    name = idef.name .. "+lowpass",
    equation = "dWbar <- (1 - 1/tau) dWbar + (1/tau) dW; W += dWbar, where " .. idef.equation,
    paper = "low-pass filtered plasticity (Sacramento, Costa, Bengio & Senn 2018, NeurIPS 31) " ..
            "applied to: " .. idef.paper,
    params = {tau = {default = 10, doc = "filter time constant in updates (>= 1)"}},
    bias = idef.bias, needs = idef.needs, feedback = idef.feedback, pathway = idef.pathway,
    init = function(conn)
      return {inner = inner:init_state(conn), dWbar = conn.W:clone():zero(),
              dbbar = conn.b and conn.b:clone():zero() or nil}
    end,
    update = function(q, p)
      local st = q.state
      q.state = st.inner
      idef.update(q, inner.p)
      q.state = st
      local k = 1 / p.tau
      st.dWbar:scale(1 - k)
      st.dWbar:axpy(k, q.dW)
      q.dW:copy(st.dWbar)
      if idef.bias and q.db and st.dbbar then
        st.dbbar:scale(1 - k)
        st.dbbar:axpy(k, q.db)
        q.db:copy(st.dbbar)
      end
    end,
  }
  local inst = rule.new(def, params)
  if inst.p.tau < 1 then error("rule.lowpass: tau must be >= 1", 2) end
  inst.inner = inner
  return inst
end

Rule.apply = rule.apply

return rule
