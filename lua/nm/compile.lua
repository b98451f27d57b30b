-- nm/compile.lua: the rule compiler. A rule's step written with
-- nm.autograd operations is traced once into an expression graph
-- (nm.compile.trace), its adjoint derived on the same graph by reverse
-- mode (nm.compile.adjoint), both turned into C (nm.compile.emit),
-- compiled with the compiler that built neuromic into a shared object,
-- cached, and loaded. Without a compiler the same graph runs through the
-- tensor operations (nm.compile.interp), with a one-line notice.
--
--   local compile = require "nm.compile"
--   local step = compile.fn(function(W, theta, x, label) ... end, {
--     {name = "W", list = {{5, 4}, {3, 5}}}, {name = "theta", shape = {3}},
--     {name = "x", shape = {4}}, {name = "label", scalar = true},
--   }, {dtype = "float64", name = "my rule", source = "rules/my_rule.lua"})
--   local W2 = step:call(W, theta, x, 2)       -- fresh outputs
--   step:call_into(out, W, theta, x, 2)        -- into preallocated outputs
--   -- on autograd variables, step:call records one node whose backward is
--   -- the generated adjoint (ag.scan unrolls it with checkpointing)
--
-- The cache (NEUROMIC_CACHE, default $XDG_CACHE_HOME/neuromic or
-- ~/.cache/neuromic) holds <key>.so and <key>.c, key = a 64-bit hash of
-- the generated source, the compiler and its flags. Concurrent compiles
-- of one key (a sweep, several cluster tasks on a shared folder) each
-- write a temporary file and rename it; the object exports its key, so a
-- corrupt or foreign file is detected when loaded and rebuilt.
-- NEUROMIC_CC names another compiler; NEUROMIC_CC=none forces the
-- interpreted path.

local nm = require "neuromic"
local ag = require "nm.autograd"
local trace = require "nm.compile.trace"
local adjoint = require "nm.compile.adjoint"
local emit = require "nm.compile.emit"
local interp = require "nm.compile.interp"
local graph = require "nm.compile.graph"
local json = require "nm.json"
local process = require "nm.process"

local compile = {}

local format, concat = string.format, table.concat

-- ---------------------------------------------------------------- toolchain

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function search_path(prog)
  if prog:find("/", 1, true) then return exists(prog) and prog or nil end
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    local p = dir .. "/" .. prog
    if exists(p) then return p end
  end
  return nil
end

local toolchain
-- compile.toolchain() -> {cc =, flags = {...}, libs = {...}} or nil when
-- there is no compiler.
function compile.toolchain()
  if toolchain ~= nil then return toolchain or nil end
  local want = os.getenv("NEUROMIC_CC")
  local cc
  if want == "none" then cc = nil
  else cc = search_path(want and want ~= "" and want or nm.build.cc) end
  if not cc then toolchain = false return nil end
  -- -fopenmp-simd: the generated loops say which sums may be vectorised
  -- (only their order of summation changes) with OpenMP simd directives;
  -- no -fassociative-math (it would undo the rounding steps of nm_vmath.h's
  -- element functions), no contraction into FMA, NaN and infinities kept.
  local flags = {"-O3", "-march=native", "-ffp-contract=off", "-fopenmp-simd",
                 "-fno-trapping-math", "-fno-math-errno", "-fPIC", "-shared", "-std=c11", "-w"}
  for f in nm.build.blas_cflags:gmatch("%S+") do flags[#flags + 1] = f end
  local libs = {}
  for f in nm.build.blas_libs:gmatch("%S+") do libs[#libs + 1] = f end
  libs[#libs + 1] = "-lm"
  toolchain = {cc = cc, flags = flags, libs = libs}
  return toolchain
end

-- Resets the toolchain choice (tests change NEUROMIC_CC through a child
-- process; this is for the REPL).
function compile.reset_toolchain() toolchain = nil end

function compile.cache_dir()
  local dir = os.getenv("NEUROMIC_CACHE")
  if dir and dir ~= "" then return dir end
  local base = os.getenv("XDG_CACHE_HOME")
  if not base or base == "" then base = (os.getenv("HOME") or "/tmp") .. "/.cache" end
  return base .. "/neuromic"
end

-- FNV-1a, 64 bits, over the string s: the cache key (16 hex digits).
local hash64 = nm.hash64
compile.hash = hash64

local notice_given = false
local function notice(msg)
  if notice_given then return end
  notice_given = true
  io.stderr:write("neuromic: ", msg, "\n")
end

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a") or ""
  f:close()
  return s
end

compile.stats = {compiled = 0, loaded = 0, interpreted = 0, compile_seconds = 0, load_seconds = 0}

-- Compiles `source` (exporting `key`) into dir/<key>.so, atomically.
local function build(tc, source, key, label)
  local dir = compile.cache_dir()
  local so = dir .. "/" .. key .. ".so"
  nm.sys.mkdir(dir)
  local full = source .. format('const char nm_kernel_key[] = "%s";\n', key)
  local src = dir .. "/" .. key .. ".c"
  nm.sys.atomic_write(src, full)
  local tag = format("%d.%d", nm.sys.getpid(), math.random(1 << 30))
  local tmp = format("%s.tmp.%s", so, tag)
  local log = format("%s/%s.log.%s", dir, key, tag)
  local argv = {tc.cc}
  for _, f in ipairs(tc.flags) do argv[#argv + 1] = f end
  argv[#argv + 1] = "-o"
  argv[#argv + 1] = tmp
  argv[#argv + 1] = src
  for _, f in ipairs(tc.libs) do argv[#argv + 1] = f end
  local ok_cc, why = process.run(argv, log)
  if not ok_cc then
    local out = read_all(log)
    os.remove(log)
    os.remove(tmp)
    error(format("rule compiler: %s failed on the generated kernel of %s (%s); this is a " ..
                 "neuromic bug, please report it with %s:\n%s", tc.cc, label, why, src, out), 0)
  end
  os.remove(log)
  local ok, err = os.rename(tmp, so)
  if not ok then
    os.remove(tmp)
    error("rule compiler: cannot store the kernel in the cache: " .. tostring(err), 0)
  end
  return so
end

-- The version of the code generator: neuromic's version and checksums of
-- the element functions it includes and of the compiler's own files, so a
-- changed generator never reuses old objects.
local generator_version
local function code_version()
  if generator_version then return generator_version end
  local parts = {nm.version, format("%08x", nm.crc32(nm.build.vmath))}
  for _, m in ipairs{"nm.compile", "nm.compile.graph", "nm.compile.trace", "nm.compile.adjoint",
                     "nm.compile.emit", "nm.compile.interp"} do
    local path = package.searchpath(m, package.path)
    parts[#parts + 1] = path and format("%08x", nm.crc32(read_all(path))) or "?"
  end
  generator_version = concat(parts, " ")
  return generator_version
end

-- ---------------------------------------------------------------- kernels

local Kernel = {}
Kernel.__index = Kernel

local function numel(shape)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  return n
end

local function shapes_of(nodes)
  local out = {}
  for i, n in ipairs(nodes) do out[i] = #n.shape > 0 and {table.unpack(n.shape)} or {1} end
  return out
end

-- make_kernel(k) -> a runnable form of a graph's outputs: compiled, or
-- interpreted. k: g, key (a string naming the graph's structure and which
-- kernel of it: a cache hit needs no generation at all), label, comment,
-- mode, and make() -> outputs, inputs (input nodes in call order), extra
-- (a table of shape lists the caller needs, stored with the object).
local function make_kernel(k)
  local self = setmetatable({g = k.g, label = k.label, comment = k.comment, make = k.make,
                             targs = {}, inplace = k.inplace}, Kernel)
  local tc = k.mode ~= "interpret" and compile.toolchain() or nil
  if k.mode ~= "interpret" and not tc then
    if k.mode == "compile" then error("rule compiler: no C compiler", 0) end
    notice("no C compiler found (" .. (os.getenv("NEUROMIC_CC") or nm.build.cc) ..
           "): rules run interpreted through the tensor operations")
  end
  if tc then
    local key = hash64(concat({k.key, code_version(), k.g.dtype, tc.cc, concat(tc.flags, " "),
                               concat(tc.libs, " ")}, "\0"))
    self.key = key
    local dir = compile.cache_dir()
    local so, meta = dir .. "/" .. key .. ".so", dir .. "/" .. key .. ".json"
    local t0 = nm.sys.clock()
    if exists(so) and exists(meta) then
      local okm, m = pcall(json.decode, read_all(meta))
      if okm and type(m) == "table" and type(m.layout) == "table" then
        local kern = nm.kernels.load(so, "nm_rule_kernel", key, m.layout)
        if kern then
          self.kernel, self.output_shapes, self.extra = kern, m.output_shapes, m.extra or {}
          if m.layout.scratch > 0 then self.scratch = nm.zeros(m.layout.scratch, k.g.dtype) end
          compile.stats.loaded = compile.stats.loaded + 1
          compile.stats.load_seconds = compile.stats.load_seconds + (nm.sys.clock() - t0)
          return self
        end
      end
      os.remove(so)                        -- corrupt or stale: rebuilt below
    end
    self:generate()
    local lay = {dtype = k.g.dtype, inputs = {}, outputs = {}, scalars = self.layout.scalars,
                 scratch = self.layout.scratch}
    for _, n in ipairs(self.inputs) do
      if n.kind == "tensor" then lay.inputs[#lay.inputs + 1] = numel(n.shape) end
    end
    for _, n in ipairs(k.g.captured) do lay.inputs[#lay.inputs + 1] = numel(n.shape) end
    if self.inplace then
      -- outputs written over inputs: no output tensors
      local slot_of, n = {}, 0
      for _, x in ipairs(self.inputs) do
        if x.kind == "tensor" then n = n + 1; slot_of[x] = n end
      end
      lay.written = {}
      for i, x in ipairs(self.inplace) do lay.written[i] = slot_of[x] end
    else
      for i, o in ipairs(self.outputs) do lay.outputs[i] = numel(o.shape) end
    end
    build(tc, self.source, key, self.label)
    nm.sys.atomic_write(meta, json.encode({layout = lay, output_shapes = self.output_shapes,
                                       extra = self.extra}) .. "\n")
    local kern, lerr = nm.kernels.load(so, "nm_rule_kernel", key, lay)
    if not kern then error("rule compiler: cannot load the kernel just built: " .. tostring(lerr), 0) end
    self.kernel = kern
    if lay.scratch > 0 then self.scratch = nm.zeros(lay.scratch, k.g.dtype) end
    compile.stats.compiled = compile.stats.compiled + 1
    compile.stats.compile_seconds = compile.stats.compile_seconds + (nm.sys.clock() - t0)
    return self
  end
  self:generate()
  compile.stats.interpreted = compile.stats.interpreted + 1
  return self
end

-- Builds the graph of this kernel and its C (lazily: a cache hit has none).
function Kernel:generate()
  if self.source then return end
  local outputs, inputs, extra = self.make()
  self.outputs, self.inputs, self.extra = outputs, inputs, extra or {}
  self.output_shapes = shapes_of(outputs)
  self.source, self.layout = emit.c(self.g, outputs, {name = "nm_rule_kernel",
                                                      comment = self.comment, inputs = inputs,
                                                      inplace = self.inplace,
                                                      combine = not self.inplace})
end

function Kernel:compiled() return self.kernel ~= nil end

function Kernel:get_source()
  self:generate()
  return self.source
end

-- Runs with flat inputs: tensors (in call order), scalars, into the
-- output tensors outs.
function Kernel:run(tensors, scalars, outs)
  if self.kernel then
    local a, n = self.targs, 0
    for i = 1, #tensors do n = n + 1; a[n] = tensors[i] end
    for _, c in ipairs(self.g.captured) do n = n + 1; a[n] = c.value end
    for i = 1, #outs do n = n + 1; a[n] = outs[i] end
    if self.scratch then n = n + 1; a[n] = self.scratch end
    for i = n + 1, #a do a[i] = nil end
    self.kernel:call(a, scalars)
    return outs
  end
  local env, ti, si = {}, 0, 0
  for _, node in ipairs(self.inputs) do
    if node.kind == "tensor" then ti = ti + 1; env[node] = tensors[ti]
    else si = si + 1; env[node] = scalars[si] end
  end
  local vals = interp.run(self.g, self.outputs, env)
  if self.inplace then
    -- every value first, then the stores (a value may be a view of an input)
    for i, v in ipairs(vals) do if nm.is_tensor(v) then vals[i] = v:clone() end end
    for i, v in ipairs(vals) do
      local t = env[self.inplace[i]]
      if type(v) == "number" then t:fill(v) else t:copy(v) end
    end
    vals = nil
  else
    for i, v in ipairs(vals) do
      if type(v) == "number" then outs[i]:fill(v) else outs[i]:copy(v) end
    end
  end
  -- The intermediates are tensors whose storage Lua's collector does not
  -- see: collect every 64 MB of them, or an unroll of a large network
  -- grows by gigabytes before the collector runs.
  if not self.interp_bytes then
    local n = 0
    for _, node in ipairs(self.g.nodes) do n = n + numel(node.shape) end
    self.interp_bytes = n * (self.g.dtype == "float64" and 8 or 4)
  end
  self.garbage = (self.garbage or 0) + self.interp_bytes
  if self.garbage > 64 * 2 ^ 20 then
    self.garbage = 0
    collectgarbage("collect")
  end
  return outs
end

-- ---------------------------------------------------------------- compiled functions

local Fn = {}
Fn.__index = Fn

-- compile.fn(f, spec, opts) -> a compiled function (see the header).
-- opts: dtype ("float64"), name and source (for messages and the
-- generated comment), equation (its text, put in the C as a comment),
-- mode ("auto": compile when a compiler exists; "compile": fail without
-- one; "interpret").
function compile.fn(f, spec, opts)
  opts = opts or {}
  local dtype = opts.dtype or "float64"
  local g, outputs, args = trace.run(dtype, spec, f)
  local self = setmetatable({g = g, outputs = outputs, spec = spec, args = args,
                             name = opts.name or "rule", source_file = opts.source,
                             equation = opts.equation, mode = opts.mode or "auto",
                             adjoints = {}, dtype = dtype}, Fn)
  self.label = self.name .. (opts.source and (" (" .. opts.source .. ")") or "")
  self.tensor_inputs = {}
  for _, n in ipairs(g.inputs) do
    if n.kind == "tensor" then self.tensor_inputs[#self.tensor_inputs + 1] = n end
  end
  self.inputs = {table.unpack(g.inputs)}
  self.nforward = #g.nodes
  self.signature = graph.signature(g)
  self.output_shapes = shapes_of(outputs)
  self.forward = self:kernel("step", function() return outputs, self.inputs end)
  self.tin, self.sin = {}, {}
  return self
end

-- One of this function's kernels (what: "step", "adjoint", ...; which:
-- the gradients' flags, part of its key).
function Fn:kernel(what, make, which)
  return make_kernel{g = self.g, key = self.signature .. "|" .. what .. "|" .. (which or ""),
                     label = self.label, comment = self:comment(what), mode = self.mode,
                     make = make}
end

function Fn:comment(what)
  local lines = {format("%s of %s", what, self.label)}
  if self.equation then lines[#lines + 1] = self.equation end
  local shapes = {}
  for _, n in ipairs(self.g.inputs) do
    shapes[#shapes + 1] = n.name .. (#n.shape > 0 and ("[" .. concat(n.shape, "x") .. "]") or "")
  end
  lines[#lines + 1] = "inputs: " .. concat(shapes, ", ")
  return concat(lines, "\n")
end

function Fn:compiled() return self.forward:compiled() end

-- Fn:scratch_bytes() -> bytes of the scratch buffers (the intermediates a
-- generated kernel keeps between calls) of this function's kernels built
-- so far.
function Fn:scratch_bytes()
  local n, esize = 0, self.dtype == "float64" and 8 or 4
  local function add(k) if k and k.scratch then n = n + k.scratch:numel() * esize end end
  add(self.forward)
  for _, a in pairs(self.adjoints) do add(a) end
  for _, p in pairs(self.pairs or {}) do add(p[1]); add(p[2]); add(p[3]) end
  return n
end

-- The C source of the step (and, with wrt, of its adjoint).
function Fn:source(adj)
  if adj then return self:adjoint_kernel(adj):get_source() end
  return self.forward:get_source()
end

-- Kernels read contiguous arrays: a strided view is copied (allocates).
local function dense(t)
  if nm.is_tensor(t) and not t:is_contiguous() then return t:contiguous() end
  return t
end

-- Flattens call arguments (in spec order) into tensors and scalars.
function Fn:flatten(tensors, scalars, ...)
  local nt, ns = 0, 0
  for i, s in ipairs(self.spec) do
    local v = select(i, ...)
    if s.value ~= nil then -- passed through
    elseif s.list then
      if type(v) ~= "table" or #v ~= #s.list then
        error(format("%s: argument '%s' must be a list of %d tensors", self.label, s.name, #s.list), 3)
      end
      for k = 1, #s.list do nt = nt + 1; tensors[nt] = dense(ag.value(v[k])) end
    elseif s.scalar then ns = ns + 1; scalars[ns] = ag.value(v)
    else nt = nt + 1; tensors[nt] = dense(ag.value(v)) end
  end
  for i = nt + 1, #tensors do tensors[i] = nil end
  for i = ns + 1, #scalars do scalars[i] = nil end
  return tensors, scalars
end

local function new_outputs(shapes, dtype)
  local outs = {}
  for i, sh in ipairs(shapes) do outs[i] = nm.zeros(sh, dtype) end
  return outs
end

-- Fn:call_into(outs, ...) writes the step's outputs into outs (a list of
-- tensors shaped like the outputs; must not overlap the inputs).
function Fn:call_into(outs, ...)
  local t, s = self:flatten(self.tin, self.sin, ...)
  return self.forward:run(t, s, outs)
end

-- The adjoint kernel for the tensor inputs flagged in wrt (a list of
-- booleans in flat tensor-input order): inputs = the step's inputs, then
-- one seed per output; outputs = one gradient per flagged input.
local function mask_of(wrt)
  local k = {}
  for i, w in ipairs(wrt) do k[i] = w and "1" or "0" end
  return concat(k)
end

-- The gradient nodes for the flagged tensor inputs (seeds: one input per
-- output), built once per set of flags.
function Fn:grads(wrt)
  local key = mask_of(wrt)
  self.grad_nodes = self.grad_nodes or {}
  if self.grad_nodes[key] then return self.grad_nodes[key] end
  local g = self.g
  if not self.seeds then
    -- a scalar output's seed is a tensor of one element (as it is passed)
    self.seeds, self.seed_values = {}, {}
    for i, o in ipairs(self.outputs) do
      self.seeds[i] = g:input("seed" .. i, #o.shape > 0 and o.shape or {1})
      self.seed_values[i] = #o.shape > 0 and self.seeds[i] or g:index(self.seeds[i], 1)
    end
  end
  local targets = {}
  for i, n in ipairs(self.tensor_inputs) do
    if wrt[i] then targets[#targets + 1] = n end
  end
  local grads = adjoint.grad(g, self.outputs, self.seed_values, targets)
  for i = 1, #targets do          -- (grads has holes: an input no output depends on)
    if grads[i] == nil then grads[i] = g:bcast(g:const(0), targets[i].shape) end
    if #targets[i].shape > 0 and #grads[i].shape == 0 then
      grads[i] = g:bcast(grads[i], targets[i].shape)
    end
  end
  self.grad_nodes[key] = grads
  return grads
end

function Fn:adjoint_kernel(wrt)
  local key = mask_of(wrt)
  local a = self.adjoints[key]
  if a then return a end
  a = self:kernel("adjoint", function()
    local grads = self:grads(wrt)
    local ins = {table.unpack(self.inputs)}
    for _, sd in ipairs(self.seeds) do ins[#ins + 1] = sd end
    return grads, ins
  end, key)
  self.adjoints[key] = a
  return a
end

-- The trace of the kernels below: the forward vectors and scalars that
-- the gradients and the outputs read, replaced in them by inputs (the
-- adjoint's and the replay's).
function Fn:trace_plan(wrt)
  local key = mask_of(wrt)
  self.plans = self.plans or {}
  if self.plans[key] then return self.plans[key] end
  local g = self.g
  local grads = graph.strip_detach(g, self:grads(wrt))
  local outs = graph.strip_detach(g, self.outputs)
  local trace, seen = {}, {}
  local TRIVIAL = {const = true, input = true, captured = true, index = true, onehot = true,
                   unit = true, bcast = true, detach = true}
  local function walk(n)
    if seen[n] then return end
    seen[n] = true
    if n.id <= self.nforward and #n.shape <= 1 and not TRIVIAL[n.op] then
      trace[#trace + 1] = n
      return
    end
    for _, a in ipairs(n.args) do walk(a) end
  end
  for _, gr in ipairs(grads) do walk(gr) end
  for _, o in ipairs(outs) do walk(o) end
  table.sort(trace, function(a, b) return a.id < b.id end)
  local map, tin = {}, {}
  for k, n in ipairs(trace) do
    map[n] = g:input("trace" .. k, #n.shape > 0 and n.shape or {1})
    tin[k] = map[n]
    if #n.shape == 0 then map[n] = g:index(map[n], 1) end
  end
  local plan = {trace = trace, tin = tin, adj_out = graph.substitute(g, grads, map),
                replay_out = graph.substitute(g, outs, map)}
  self.plans[key] = plan
  return plan
end

-- Fn:traced_pair(wrt) -> forward, adjoint, replay: the step writing,
-- besides its outputs, the vectors and scalars its adjoint and its
-- outputs read (a trace: shapes in forward.extra.trace_shapes); the
-- adjoint reading that trace instead of recomputing the forward pass (the
-- products with the weights); and the step's outputs from its inputs and
-- the trace (for a rule, the weight update alone: one pass over each
-- matrix). For a checkpointed unroll, whose backward needs every state of
-- a segment again.
function Fn:traced_pair(wrt)
  local key = mask_of(wrt)
  self.pairs = self.pairs or {}
  local p = self.pairs[key]
  if p then return p[1], p[2], p[3] end
  local fwd = self:kernel("step with its trace", function()
    local plan = self:trace_plan(wrt)
    local fouts = {table.unpack(self.outputs)}
    for _, n in ipairs(plan.trace) do fouts[#fouts + 1] = n end
    return fouts, self.inputs, {trace_shapes = shapes_of(plan.trace)}
  end, key)
  local adj = self:kernel("adjoint from the trace", function()
    local plan = self:trace_plan(wrt)
    local ins = {table.unpack(self.inputs)}
    for _, sd in ipairs(self.seeds) do ins[#ins + 1] = sd end
    for _, t in ipairs(plan.tin) do ins[#ins + 1] = t end
    return plan.adj_out, ins
  end, key)
  local rep = self:kernel("step from the trace", function()
    local plan = self:trace_plan(wrt)
    local ins = {table.unpack(self.inputs)}
    for _, t in ipairs(plan.tin) do ins[#ins + 1] = t end
    return plan.replay_out, ins
  end, key)
  self.pairs[key] = {fwd, adj, rep}
  return fwd, adj, rep
end

-- Fn:call(...) -> outputs (a list when the step returns several values).
-- On autograd variables it records one node on their tape, whose
-- backward runs the generated adjoint.
function Fn:call(...)
  local n = select("#", ...)
  local tracked = false
  for i = 1, n do
    local v = select(i, ...)
    if ag.is_var(v) then tracked = true break end
    if type(v) == "table" and not nm.is_tensor(v) and not ag.is_var(v) then
      for _, x in ipairs(v) do if ag.is_var(x) then tracked = true break end end
    end
  end
  if not tracked then
    local outs = new_outputs(self.output_shapes, self.dtype)
    self:call_into(outs, ...)
    return self:shape_result(outs)
  end
  return self:record(...)
end

function Fn:shape_result(outs)
  if #self.outputs == 1 then return outs[1] end
  return outs
end

-- Records the step on a tape as one node over its flat tensor arguments;
-- backward runs the adjoint kernel for the arguments that are variables.
function Fn:record(...)
  local flat, scal, nt, ns = {}, {}, 0, 0
  for i, s in ipairs(self.spec) do
    local v = select(i, ...)
    if s.value ~= nil then -- passed through
    elseif s.list then for k = 1, #s.list do nt = nt + 1; flat[nt] = v[k] end
    elseif s.scalar then ns = ns + 1; scal[ns] = ag.value(v)
    else nt = nt + 1; flat[nt] = v end
  end
  local wrt = {}
  for i = 1, nt do wrt[i] = ag.is_var(flat[i]) end
  local me = self
  self.op = self.op or ag.def("compiled:" .. self.name, function(ctx, flags, sc, ...)
    ctx.wrt, ctx.sc, ctx.t = flags, sc, {...}
    for i, x in ipairs(ctx.t) do ctx.t[i] = dense(x) end
    local outs = new_outputs(me.output_shapes, me.dtype)
    me.forward:run(ctx.t, sc, outs)
    if #outs == 1 then return outs[1] end
    return outs
  end, function(ctx, gout)
    if #me.outputs == 1 then gout = {gout} end
    local a = me:adjoint_kernel(ctx.wrt)
    local ins = {}
    for i, x in ipairs(ctx.t) do ins[i] = x end
    for i, o in ipairs(me.outputs) do
      local gi = gout[i]
      if gi == nil then gi = nm.zeros(#o.shape > 0 and o.shape or {1}, me.dtype)
      elseif type(gi) == "number" then gi = nm.tensor({gi}, me.dtype) end
      ins[#ins + 1] = dense(gi)
    end
    local outs = new_outputs(a.output_shapes, me.dtype)
    a:run(ins, ctx.sc, outs)
    local res, k = {}, 0
    for i = 1, #ctx.t do
      if ctx.wrt[i] then k = k + 1; res[i + 2] = outs[k] end
    end
    return table.unpack(res, 1, #ctx.t + 2)
  end, #self.outputs)
  return self.op(wrt, scal, table.unpack(flat, 1, nt))
end

-- Fn:scan_kernel(o) -> a fused kernel for ag.scan (see there) that runs
-- this compiled step and its generated adjoint, for a step whose first
-- argument is the state (a list of tensors) and whose next o.params
-- (default 1) flat tensor inputs are the parameters (e.g. a meta rule's
-- theta; any dtype: converted to the step's dtype once per pass, their
-- gradients accumulated in the caller's). o.state() -> a fresh state
-- list; o.args(src, theta, t) -> the step's arguments for step t (in spec
-- order; theta: the parameter, or the list of them with o.params > 1);
-- o.steps (optional): the argument
-- positions that change with t, as sequences ({[3] = X, [4] = labels}:
-- step t reads row t of the tensor X and element t of the list labels),
-- so the others are flattened once per pass (o.args is then called once,
-- with t = 1) and a step costs no Lua work beyond its kernel call;
-- o.cache: where ag.scan keeps the buffers (and the adjoint its own, in
-- o.cache.adjoints: a state's and the parameters' gradients); o.state_bytes
-- for its statistics (the kernel's trace_bytes: one step's trace).
function Fn:scan_kernel(o)
  local me = self
  local ns, np = #self.spec[1].list, o.params or 1
  local wrt = {}
  for i = 1, ns + np do wrt[i] = true end           -- the state and the parameters
  local fwd, adj, rep = self:traced_pair(wrt)
  local tb = 0
  for _, sh in ipairs(fwd.extra.trace_shapes) do tb = tb + numel(sh) end
  local sk = {cache = o.cache, state = o.state, state_bytes = o.state_bytes,
              trace_bytes = tb * (self.dtype == "float64" and 8 or 4)}
  -- the adjoints arrive as the loss's gradients (maybe strided views)
  function sk.view(list)
    for i = 1, #list do list[i] = dense(list[i]) end
    return list
  end
  function sk.trace()
    local t = {}
    for i, sh in ipairs(fwd.extra.trace_shapes) do t[i] = nm.zeros(sh, me.dtype) end
    return t
  end
  -- Where each spec argument lands in the flat tensor and scalar lists.
  local tslot, sslot, nt, nsc = {}, {}, 0, 0
  for i, sp in ipairs(self.spec) do
    if sp.value ~= nil then -- passed through
    elseif sp.list then tslot[i] = nt + 1; nt = nt + #sp.list
    elseif sp.scalar then nsc = nsc + 1; sslot[i] = nsc
    else nt = nt + 1; tslot[i] = nt end
  end
  local steps = o.steps
  local function params(p) if np == 1 then return p[1] end return p end
  -- Rows of the stepped tensors, made once per tensor (views, no copy).
  local rows = setmetatable({}, {__mode = "k"})
  local function row(X, t)
    local r = rows[X]
    if not r then r = {}; rows[X] = r end
    local v = r[t]
    if not v then v = X:row(t); r[t] = v end
    return v
  end
  local tin, sin, pass = {}, {}, nil
  -- The flat inputs of step t into tin, sin (state src, parameters p).
  local function inputs(src, p, t)
    if not steps then
      tin, sin = me:flatten(tin, sin, o.args(src, params(p), t))
      return
    end
    if pass ~= p then                      -- a new pass: the fixed arguments
      pass = p
      tin, sin = me:flatten(tin, sin, o.args(src, params(p), 1))
    end
    for i = 1, ns do tin[i] = src[i] end
    for pos, seq in pairs(steps) do
      if sslot[pos] then sin[sslot[pos]] = seq[t]
      elseif nm.is_tensor(seq) then tin[tslot[pos]] = row(seq, t)
      else tin[tslot[pos]] = dense(seq[t]) end
    end
  end
  local gconv, fouts = {}, {}
  -- The adjoint writes the gradients of a step's source into buffers of
  -- its own (mine, kept in o.cache), then they become the adjoint list and
  -- the list's former tensors (the caller's, orig) the next step's
  -- outputs: no copy. After step 1 the caller's tensors hold the result
  -- again.
  local mine, orig, gouts = nil, {}, {}
  -- p: the parameters in the step's dtype, p.orig the caller's list
  function sk.prepare(list)
    local p = {orig = list}
    for i = 1, np do
      local th = list[i]
      if th:dtype() ~= me.dtype then th = nm.zeros(th:size(), me.dtype):copy(th) end
      p[i] = th
    end
    return p
  end
  function sk.forward(dst, src, p, t, trace)
    inputs(src, p, t)
    for i = #tin, nt + 1, -1 do tin[i] = nil end
    if not trace then return me.forward:run(tin, sin, dst) end
    local n = #dst
    for i = 1, n do fouts[i] = dst[i] end
    for i, x in ipairs(trace) do fouts[n + i] = x end
    fwd:run(tin, sin, fouts)
  end
  function sk.replay(dst, src, p, t, trace)
    inputs(src, p, t)
    for i, x in ipairs(trace) do tin[nt + i] = x end
    for i = #tin, nt + #trace + 1, -1 do tin[i] = nil end
    rep:run(tin, sin, dst)
    for i = #tin, nt + 1, -1 do tin[i] = nil end
  end
  function sk.backward(adjoint, src, _, p, gp, t, trace)
    local a = adj
    inputs(src, p, t)
    for i = 1, ns do tin[nt + i] = adjoint[i] end
    for i, x in ipairs(trace) do tin[nt + ns + i] = x end
    if not mine then
      -- kept between unrolls in o.cache.adjoints, as ag.scan's buffers
      local kept = o.cache and o.cache.adjoints
      mine = kept and kept[a]
      if not mine then
        mine = {}
        for i, sh in ipairs(a.output_shapes) do mine[i] = nm.zeros(sh, me.dtype) end
        if o.cache then
          o.cache.adjoints = kept or {}
          o.cache.adjoints[a] = mine
        end
      end
      for i = 1, np do gouts[ns + i] = mine[ns + i] end
    end
    for i = 1, ns do
      local x = adjoint[i]
      if x ~= mine[i] then orig[i] = x; gouts[i] = mine[i] else gouts[i] = orig[i] end
    end
    a:run(tin, sin, gouts)
    for i = #tin, nt + 1, -1 do tin[i] = nil end
    for i = 1, ns do adjoint[i] = gouts[i] end
    if t == 1 then
      for i = 1, ns do
        if adjoint[i] == mine[i] then orig[i]:copy(mine[i]); adjoint[i] = orig[i] end
      end
    end
    for i = 1, np do
      local g, into = mine[ns + i], gp.orig[i]
      if into:dtype() ~= me.dtype then
        gconv[i] = gconv[i] or nm.zeros(g:size(), into:dtype())
        into:add(gconv[i]:copy(g))
      else
        into:add(g)
      end
    end
  end
  return sk
end

-- ---------------------------------------------------------------- connection and circuit rules

-- A connection or circuit rule's step writes its change with in-place
-- tensor methods over a table of named quantities (a circuit rule's state
-- s, a connection's q). compile.state_step traces that step once, on
-- traced tensors (nm.compile.trace's Refs) standing for the table's
-- tensors, into one kernel that updates the same tensors in place: the
-- weights and the rule state the step changes. What the table holds
-- besides tensors is fixed in the kernel (numbers, such as a batch size or
-- an attenuation, and functions, such as the model's rate function, are
-- traced through), but for the rule's numeric parameters and the fields
-- named in o.scalars, which are read at every call (a learning rate may
-- change; a parameter that is 0 when traced is the constant 0, so a
-- branch on it traces as it runs: a kernel per set of zero parameters).
--
--   local st = compile.state_step{step = def.step, s = s, p = inst.p, ...}
--   st:run()          -- one step on s's tensors, with p's present values
--
-- o: step(s, p), s, p; name, source, equation (for messages and the C's
-- comment); views = {field = other} (s[field] is other's transpose, a
-- view); scratch = {field, ...} (tensors the step may overwrite whose
-- values nobody reads afterwards: not written back); scalars = {field,
-- ...} (numbers of s read at each call); zero = {field, ...} (tensors
-- that start at 0 whatever they hold, e.g. a connection's dW); finish(s,
-- p) optional: after the step, returns {field = value}, the values the
-- kernel writes (a connection rule's W + dW); only those are written.
-- dtype, mode as compile.fn's.
--
-- Written: every tensor of s (and of s.state) the step left holding
-- another value, but the scratch fields, and tensors of s.state that the
-- step overwrote before reading them (a rule's scratch, e.g. the batch
-- mean T of mc.lowpass): the compiled step leaves those as they were.
local StateStep = {}
StateStep.__index = StateStep

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

local function set_of(list)
  local t = {}
  for _, k in ipairs(list or {}) do t[k] = true end
  return t
end

-- The tensor at a path of the table ("W", "state.D"): its field names.
local function fields_of(path)
  local sub = path:match("^state%.(.*)$")
  if sub then return {"state", sub} end
  return {path}
end

function compile.state_step(o)
  local s, p = o.s, o.p
  local dtype = o.dtype or "float64"
  local tensors, paths, index_of = {}, {}, {}
  local views, zero, scalar_fields, scratch = o.views or {}, set_of(o.zero), set_of(o.scalars),
                                              set_of(o.scratch)
  -- the tensors, in a fixed order (fields sorted; s.state's after s's)
  local function collect(tab, prefix)
    for _, k in ipairs(sorted_keys(tab)) do
      local v = tab[k]
      local path = prefix .. tostring(k)
      if nm.is_tensor(v) and not views[path] and not index_of[v] then
        if v:dtype() ~= dtype then
          error(format("rule compiler: %s: %s is %s, the step is compiled for %s", o.name or "rule",
                       path, v:dtype(), dtype), 0)
        end
        tensors[#tensors + 1] = {name = path, shape = v:size(), zero = zero[path], value = v}
        paths[#tensors] = path
        index_of[v] = #tensors
      end
    end
  end
  collect(s, "")
  if type(s.state) == "table" then collect(s.state, "state.") end
  for _, k in ipairs(sorted_keys(views)) do
    if s[k] ~= nil or s[views[k]] ~= nil then
      local base = index_of[s[views[k]]]
      if not base then error("rule compiler: view '" .. k .. "' of a field that is no tensor", 0) end
      tensors[#tensors + 1] = {name = k, view = base}
      paths[#tensors] = k
    end
  end
  -- the scalars: the rule's numeric parameters (not 0), the named fields
  local scalars, sread = {}, {}
  for _, k in ipairs(sorted_keys(p)) do
    if type(p[k]) == "number" and p[k] ~= 0 then
      scalars[#scalars + 1] = "p_" .. k; sread[#scalars] = {"p", k}
    end
  end
  for _, k in ipairs(sorted_keys(scalar_fields)) do
    if type(s[k]) == "number" then scalars[#scalars + 1] = k; sread[#scalars] = {"s", k} end
  end
  local zero_params = {}
  for _, k in ipairs(sorted_keys(p)) do
    if p[k] == 0 then zero_params[#zero_params + 1] = k end
  end
  local finals = {}
  local g, refs = trace.run_refs(dtype, tensors, scalars, function(refs, sc)
    local sp, pp, byname = {}, {}, {}
    for i, r in ipairs(refs) do byname[paths[i]] = r end
    for k, v in pairs(s) do
      if k == "state" and type(v) == "table" then
        local st = {}
        for k2, v2 in pairs(v) do st[k2] = byname["state." .. tostring(k2)] or v2 end
        sp.state = st
      else
        sp[k] = byname[k] or v
      end
    end
    for k, v in pairs(p) do pp[k] = v end
    for i, src in ipairs(sread) do
      if src[1] == "p" then pp[src[2]] = sc[i] else sp[src[2]] = sc[i] end
    end
    o.step(sp, pp)
    if o.finish then
      for path, v in pairs(o.finish(sp, pp)) do finals[path] = trace.value_of(v) end
    end
  end)
  -- what changed and is not scratch
  local cand = {}
  for i, r in ipairs(refs) do
    local path = paths[i]
    if not tensors[i].view and r.input then
      local f = finals[path] or r.sym
      if f ~= r.input and not scratch[path] then cand[#cand + 1] = {i = i, final = f} end
    end
  end
  -- tensors of s.state overwritten before being read are the rule's scratch
  local finals_list = {}
  for k, c in ipairs(cand) do finals_list[k] = c.final end
  local need = graph.reachable(finals_list)
  local outputs, inplace, written = {}, {}, {}
  for _, c in ipairs(cand) do
    local path = paths[c.i]
    if not (path:find("^state%.") and not need[refs[c.i].input]) then
      outputs[#outputs + 1] = c.final
      inplace[#inplace + 1] = refs[c.i].input
      written[#written + 1] = path
    end
  end
  local name = o.name or "rule"
  if #outputs == 0 then
    error(format("rule compiler: %s: the step changes no weight or state", name), 0)
  end
  local self = setmetatable({g = g, tensors = {}, paths = {}, sread = sread, sin = {},
                             written = written, name = name, zero_params = zero_params, p = p,
                             s = s}, StateStep)
  local inputs = {}
  for _, n in ipairs(g.inputs) do inputs[#inputs + 1] = n end
  for _, t in ipairs(tensors) do
    if not t.view and not t.zero then
      local i = #self.tensors + 1
      self.tensors[i], self.paths[i] = t.value, fields_of(t.name)
    end
  end
  local label = name .. (o.source and (" (" .. o.source .. ")") or "")
  local lines = {format("in-place step of %s", label)}
  if o.equation then lines[#lines + 1] = o.equation end
  local shapes = {}
  for _, n in ipairs(g.inputs) do
    shapes[#shapes + 1] = n.name .. (#n.shape > 0 and ("[" .. concat(n.shape, "x") .. "]") or "")
  end
  lines[#lines + 1] = "inputs: " .. concat(shapes, ", ")
  lines[#lines + 1] = "written in place: " .. concat(written, ", ")
  self.kernel = make_kernel{g = g, key = graph.signature(g) .. "|in place|" .. concat(written, ","),
                            label = label, comment = concat(lines, "\n"), mode = o.mode,
                            inplace = inplace, make = function() return outputs, inputs end}
  return self
end

-- st:valid(p) -> whether the kernel still fits: the parameters 0 when
-- traced are 0, the others are not, and the table holds tensors of the
-- traced shapes (another tensor of the same shape, e.g. the next batch's
-- input, is taken as it is; else trace again).
function StateStep:valid(p)
  for _, k in ipairs(self.zero_params) do if p[k] ~= 0 then return false end end
  for _, src in ipairs(self.sread) do
    if src[1] == "p" and p[src[2]] == 0 then return false end
  end
  local ts, s = self.tensors, self.s
  for i, f in ipairs(self.paths) do
    local t = s[f[1]]
    if f[2] then t = t and t[f[2]] end
    if not rawequal(t, ts[i]) then
      if not nm.is_tensor(t) or not t:same_shape(ts[i]) then return false end
      ts[i] = t:is_contiguous() and t or t:contiguous()
    end
  end
  return true
end

-- The scalars of a call (p: the parameters, default those traced with).
function StateStep:scalar_values(p)
  p = p or self.p
  local v = self.sin
  for i, src in ipairs(self.sread) do
    if src[1] == "p" then v[i] = p[src[2]] else v[i] = self.s[src[2]] end
  end
  return v
end

-- st:run([p]): one step on the traced table's tensors, with the present
-- values of p (default: the table traced with) and of the scalar fields.
-- Allocates nothing (compiled).
local no_outputs = {}
function StateStep:run(p)
  self.kernel:run(self.tensors, self:scalar_values(p), no_outputs)
end

-- st:bind([p]) -> a neuromic.KernelCall of this step on the traced
-- table's tensors (for C code that runs it itself: call:set_scalars(
-- st:scalar_values(p)) before a run when p changes), or nil when the step
-- runs interpreted.
function StateStep:bind(p)
  local k = self.kernel
  if not k.kernel then return nil end
  local a = {}
  for i, t in ipairs(self.tensors) do a[i] = t end
  for _, c in ipairs(k.g.captured) do a[#a + 1] = c.value end
  if k.scratch then a[#a + 1] = k.scratch end
  return k.kernel:bind(a, self:scalar_values(p))
end

function StateStep:source() return self.kernel:get_source() end

-- compile.value_of(x): the present value (a symbol) of a traced tensor,
-- or x (for a state_step's finish).
compile.value_of = trace.value_of
function StateStep:compiled() return self.kernel:compiled() end

return compile
