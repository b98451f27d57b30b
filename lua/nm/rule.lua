-- nm/rule.lua: plasticity rules. A rule is a Lua file in rules/ that
-- returns a plain table: its name, its equation as text, the paper it
-- comes from, its parameters (defaults and docs), an optional state
-- initialiser, and a plain function of named quantities that writes the
-- weight change; optionally a fused form that calls a C kernel, and a
-- check(p) -> ok, message for parameter values.
--
--   -- rules/hebb.lua
--   return {
--     name = "hebb",
--     equation = "dW = eta <post pre^T>",
--     paper = "Hebb 1949, The Organization of Behavior",
--     params = {eta = {default = 0.01, doc = "learning rate"}},
--     update = function(q, p)            -- writes q.dW (q.db when bias = true)
--       q.dW:addmm(p.eta / q.batch, q.post_t, q.pre, 0)
--     end,
--     fused = function(q, p)             -- optional: changes q.W directly
--       q.W:plastic_outer(p.eta / q.batch, q.post, q.pre, nil, q.mask)
--     end,
--   }
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
-- the weights of a switched-off connection never change. After update,
-- dW is multiplied by the mask, so masked weights never change, then
-- added to W (and db to b), unless q.defer is set: then the caller takes
-- dW/db (an optimiser, or a measure comparing updates). When the rule
-- has a fused form and nothing is deferred, the fused form runs instead;
-- the two are tested equal (spec/rules_spec.lua).

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
-- rules/ at the repository root this file belongs to; NEUROMIC_RULES
-- (a path list) comes first when set.
local function default_path()
  local parts = {}
  local env = os.getenv("NEUROMIC_RULES")
  if env and env ~= "" then parts[#parts + 1] = env end
  parts[#parts + 1] = "./rules/?.lua"
  local src = debug.getinfo(1, "S").source
  local root = src:match("^@(.-)lua/nm/rule%.lua$")
  if root and root ~= "" and root ~= "./" then parts[#parts + 1] = root .. "rules/?.lua" end
  return concat(parts, ";")
end

rule.path = default_path()

local QUANTITIES = {
  pre = true, post = true, a = true, error = true, W = true, b = true, mask = true,
  mod = true, state = true, batch = true, ones = true, pre_t = true, post_t = true,
  error_t = true, dW = true, db = true,
}

local FEEDBACK = {bp = true, fa = true, dfa = true}

-- Checks a definition table; errors name the rule and the field.
function rule.validate(def, where)
  where = where or "rule"
  local function bad(msg)
    error(format("%s: %s", where, msg), 3)
  end
  if type(def) ~= "table" then bad("a rule file must return a table") end
  if type(def.name) ~= "string" or def.name == "" then bad("field 'name' (a string) is missing") end
  where = format("rule '%s'", def.name)
  if type(def.equation) ~= "string" or def.equation == "" then
    bad("field 'equation' (the rule as text) is missing")
  end
  if type(def.paper) ~= "string" or def.paper == "" then
    bad("field 'paper' (the citation) is missing")
  end
  if type(def.update) ~= "function" then bad("field 'update' (function(q, p)) is missing") end
  if def.fused ~= nil and type(def.fused) ~= "function" then bad("field 'fused' must be a function") end
  if def.init ~= nil and type(def.init) ~= "function" then bad("field 'init' must be a function") end
  if def.check ~= nil and type(def.check) ~= "function" then bad("field 'check' must be a function") end
  if def.feedback ~= nil and not FEEDBACK[def.feedback] then
    bad("field 'feedback' must be 'bp', 'fa' or 'dfa'")
  end
  if type(def.params) ~= "table" then bad("field 'params' (a table, may be empty) is missing") end
  for k, spec in pairs(def.params) do
    if type(k) ~= "string" then bad("parameter names must be strings") end
    if type(spec) ~= "table" or spec.default == nil then
      bad(format("parameter '%s' needs {default = ..., doc = ...}", k))
    end
    if type(spec.doc) ~= "string" then bad(format("parameter '%s' has no doc string", k)) end
  end
  for _, k in ipairs(def.needs or {}) do
    if not QUANTITIES[k] then bad(format("field 'needs' names an unknown quantity '%s'", k)) end
  end
  return def
end

local cache = {}

-- The definition of a rule: a name (searched on rule.path) or a table.
function rule.definition(name)
  if type(name) == "table" then return rule.validate(name) end
  if type(name) ~= "string" then
    error("rule.definition: rule name (string) or definition (table) expected", 2)
  end
  if cache[name] then return cache[name] end
  if not name:match("^[%w_%-]+$") then
    error(format("rule.definition: bad rule name '%s'", name), 2)
  end
  local file, err = package.searchpath(name, rule.path)
  if not file then
    error(format("rule.definition: no rule '%s' (known rules: %s); %s", name,
                 concat(rule.list(), ", "), err:gsub("^%s+", ""):gsub("\n%s*", "; ")), 2)
  end
  local chunk, lerr = loadfile(file)
  if not chunk then error("rule.definition: " .. lerr, 2) end
  local def = rule.validate(chunk(), file)
  if def.name ~= name then
    error(format("rule.definition: %s defines rule '%s', expected '%s'", file, def.name, name), 2)
  end
  cache[name] = def
  return def
end

-- Names of the rules found on rule.path, sorted.
function rule.list()
  local seen, out = {}, {}
  for pattern in rule.path:gmatch("[^;]+") do
    local dir = pattern:match("^(.*)/%?%.lua$")
    if dir then
      for _, f in ipairs(require("neuromic").listdir(dir) or {}) do   -- no shell
        local n = f:match("^([%w_%-]+)%.lua$")
        if n and not seen[n] then seen[n] = true; out[#out + 1] = n end
      end
    end
  end
  sort(out)
  return out
end

-- ---------------------------------------------------------------- instances

local Rule = {}
Rule.__index = Rule

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
  local lines = {def.name, "  " .. def.equation, "  paper: " .. def.paper}
  if def.feedback then lines[#lines + 1] = "  error pathway: " .. def.feedback end
  local names = {}
  for k in pairs(def.params) do names[#names + 1] = k end
  sort(names)
  for _, k in ipairs(names) do
    local s = def.params[k]
    lines[#lines + 1] = format("  %s = %s  %s", k, tostring(s.default), s.doc)
  end
  if def.fused then lines[#lines + 1] = "  (has a fused C kernel)" end
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

-- rule.apply(inst, conn, q) -> true when the weights (or, deferred, dW)
-- changed, false when learning is off globally or for conn.
function rule.apply(inst, conn, q)
  if not learning_on or conn.plastic == false then return false end
  local def, p = inst.def, inst.p
  if inst.needs_checked ~= q then check_needs(inst, q); inst.needs_checked = q end
  if def.fused and inst.use_fused and not q.defer then
    def.fused(q, p)
    return true
  end
  local db = def.bias and q.db or nil
  def.update(q, p)
  if q.mask then q.dW:mul(q.mask) end
  if not q.defer then
    q.W:add(q.dW)
    if db and q.b then q.b:add(db) end
  elseif q.db and not db then
    q.db:zero()            -- the caller reads db: this rule leaves biases alone
  end
  return true
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
    name = idef.name .. "+lowpass",
    equation = "dWbar <- (1 - 1/tau) dWbar + (1/tau) dW; W += dWbar, where " .. idef.equation,
    paper = "low-pass filtered plasticity (Sacramento, Costa, Bengio & Senn 2018, NeurIPS 31) " ..
            "applied to: " .. idef.paper,
    params = {tau = {default = 10, doc = "filter time constant in updates (>= 1)"}},
    bias = idef.bias, needs = idef.needs, feedback = idef.feedback,
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
