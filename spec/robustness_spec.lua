-- spec/robustness_spec.lua: "errors, never crashes" over the whole C API
-- of the neuromic module (issue 2). Every function reachable from
-- require "neuromic" (module functions, nm.sys, nm.kernels and its tables bmvr/folded/nk, the Tensor
-- and Generator methods, the methods and metamethods of every object type
-- the module creates) is called from a valid base call with one argument
-- (or one field of a table argument) replaced by a battery of bad values:
-- nothing, nil, booleans, wrong types, closed / 0-size / 0-D / 1-D / 4-D /
-- float64 / transposed / narrowed tensors, huge, negative and non-finite
-- numbers, math.mininteger, strings, tables, functions, foreign userdata.
-- Each call runs in pcall; the spec asserts that the process survives and
-- that every failure is a string message. Run it under the sanitizer build
-- (make sanitize, or NEUROMIC_EXE=./neuromic-asan) to turn silent memory
-- errors into failures. Functions with effects on files or processes are
-- tested by hand below with temporary paths and harmless arguments.
--
-- NM_ROBUST_TRACE=1 prints every call to stderr before making it (to find
-- the one that crashed the process).

local nm = require "neuromic"

local SEED = 20240611
local TRACE = os.getenv("NM_ROBUST_TRACE") ~= nil

-- A huge size that passes the size checks reaches the allocator, which
-- fails cleanly ("not enough memory") in a normal build; AddressSanitizer
-- aborts on it unless allocator_may_return_null=1, so only then is it in
-- the battery.
local asan_opts = os.getenv("ASAN_OPTIONS")
local HUGE_ALLOC_OK = asan_opts == nil or asan_opts:find("allocator_may_return_null=1", 1, true)

-- ---------------------------------------------------------------- fixtures

local function gen() return nm.generator(SEED) end

-- A tensor of the given sizes (and trailing dtype) with seeded values in [-1, 1).
local function T(...)
  local t = nm.zeros(...)
  return t:uniform(gen(), -1, 1)
end
local function D(...)
  local dims = {...}
  dims[#dims + 1] = "float64"
  return T(table.unpack(dims))
end

local function closed() local t = T(2, 3); t:close(); return t end

local mc_module = require "nm.models.microcircuit"
local function mc_handle()
  return mc_module.new{sizes = {3, 4, 2}, gen = gen()}:handle()
end

-- A small MLP after one one-sample step (its .fused[1].step: an MLPStep),
-- or (batch) after one step on a batch of 3 rows (its .fused[3].step).
local function mlp_net(batch)
  local net = require("nm.nn").mlp{sizes = {4, 3, 2}, gen = gen(), rule = "fa"}
  if batch then net:train_batch(T(3, 4), T(3, 2)) else net:train_batch(T(4), T(2)) end
  return net
end

local function nk_model() return nm.kernels.nk.model{n = 6, k = 2, generator = gen()} end
local function nk_data()
  return nm.tensor({{1, -1, 1}, {-1, -1, 1}, {1, 1, -1}, {-1, 1, 1}}, "float64"),
         nm.tensor({0.2, 0.7, 0.5, 0.9}, "float64")
end
local function nk_net(kind)
  local X, F = nk_data()
  return nm.kernels.nk.network{kind = kind or "NAN", x = X, f = F, h = 2, generator = gen()}
end

local SIZES = {4, 3, 2}
local function motif() return nm.kernels.motif_net{sizes = SIZES} end
local function wlist(chem)                  -- one weight-shaped tensor per layer
  local out = {}
  for l = 1, #SIZES - 1 do
    out[l] = chem and T(chem, SIZES[l + 1], SIZES[l]) or T(SIZES[l + 1], SIZES[l])
  end
  return out
end

local function bmvr_net()
  -- k = 3 hidden, n = 4 inputs, m = 2 outputs
  return {W1 = T(3, 4), W2T = T(3, 2), Q = nm.eye(3), R = nm.eye(3), zbar = nm.zeros(3),
          eta_w1 = 0.01, eta_w2 = 0.01, eta_q = 0.01}
end

-- ---------------------------------------------------------------- bad values

-- Each entry: a label and a maker (fresh value per call, so a call that
-- closes or changes its argument cannot affect the next one).
local BAD = {
  {"nothing", nil}, {"false", function() return false end}, {"true", function() return true end},
  {"0", function() return 0 end}, {"-1", function() return -1 end}, {"1", function() return 1 end},
  {"0.5", function() return 0.5 end}, {"-0.5", function() return -0.5 end},
  {"maxinteger", function() return math.maxinteger end},
  {"mininteger", function() return math.mininteger end},
  {"2^62", function() return 2.0 ^ 62 end}, {"-2^63", function() return -(2.0 ^ 63) end},
  {"1e308", function() return 1e308 end}, {"-1e308", function() return -1e308 end},
  {"inf", function() return math.huge end}, {"-inf", function() return -math.huge end},
  {"nan", function() return 0 / 0 end},
  {"''", function() return "" end}, {"'x'", function() return "x" end},
  {"'float64'", function() return "float64" end}, {"'-3'", function() return "-3" end},
  {"{}", function() return {} end}, {"{1,2}", function() return {1, 2} end},
  {"{{1}}", function() return {{1}} end},
  {"{t,t}", function() return {T(2, 3), T(2, 3)} end},
  {"function", function() return function() end end},
  {"coroutine", function() return coroutine.create(function() end) end},
  {"io.stdout", function() return io.stdout end},
  {"closed tensor", closed},
  {"0x3 tensor", function() return nm.zeros(0, 3) end},
  {"0-size 1-D", function() return nm.zeros(0) end},
  {"0-D tensor", function() return nm.zeros() end},
  {"1-D tensor", function() return T(3) end},
  {"2x3 float32", function() return T(2, 3) end},
  {"2x3 float64", function() return D(2, 3) end},
  {"3x2 transposed", function() return T(2, 3):t() end},
  {"narrowed view", function() return T(4, 5):narrow(2, 2, 3) end},
  {"4-D tensor", function() return T(2, 1, 3, 2) end},
  {"generator", gen},
  {"NKModel", nk_model}, {"NKNet", nk_net},
  {"MotifNet", motif}, {"Microcircuit", mc_handle},
}
if HUGE_ALLOC_OK then
  BAD[#BAD + 1] = {"2^53", function() return 2 ^ 53 end}
end

-- ---------------------------------------------------------------- the API

-- name -> function, for every function reachable from the module.
local API = {}
local function collect(prefix, tab)
  for k, v in pairs(tab) do
    if type(v) == "function" then API[prefix .. k] = v end
  end
end
collect("nm.", nm)
collect("nm.sys.", nm.sys)
collect("nm.kernels.", nm.kernels)
collect("bmvr.", nm.kernels.bmvr)
collect("folded.", nm.kernels.folded)
collect("nk.", nm.kernels.nk)
collect("Tensor.", nm.Tensor)
collect("Generator.", nm.Generator)
local OBJECTS = {
  Tensor = T(2, 3), Generator = gen(), NKModel = nk_model(), NKNet = nk_net(),
  MotifNet = motif(), Microcircuit = mc_handle(), MLPStep = mlp_net().fused[1].step,
  Gather = nm.gather(4),
}
for kind, obj in pairs(OBJECTS) do
  local mt = getmetatable(obj)
  assert(type(mt) == "table", kind .. " has no metatable")
  if type(mt.__index) == "table" then collect(kind .. ".", mt.__index) end
  for k, v in pairs(mt) do
    if type(v) == "function" then API[kind .. "." .. k] = v end
  end
end

-- Base calls: a list of argument-list makers per function (valid calls;
-- the spec checks that they succeed, so the battery reaches the checks of
-- the later arguments). A function without an entry gets one default base:
-- its object for methods, no arguments for module functions.
local function t23() return T(2, 3) end
local BASES = {}
local function base(name, ...) BASES[name] = {...} end

-- Tensor constructors and access
base("nm.zeros", function() return {2, 3} end, function() return {{2, 3}, "float64"} end)
base("nm.ones", function() return {2, 3} end, function() return {2, 3, {dtype = "float64"}} end)
base("nm.empty", function() return {2, 3} end)
base("nm.full", function() return {1.5, 2, 3} end)
base("nm.eye", function() return {3} end, function() return {2, 3, "float64"} end)
base("nm.range", function() return {1, 5, 2} end, function() return {1, 5, "float64"} end)
base("nm.tensor", function() return {{{1, 2}, {3, 4}}, "float64"} end)
base("nm.frombytes", function() return {string.rep("\0", 24), "float32", 2, 3} end)
base("nm.is_tensor", function() return {t23()} end)
for _, m in ipairs{"size", "stride"} do base("Tensor." .. m, function() return {t23(), 1} end) end
base("Tensor.size", function() return {t23(), 2} end, function() return {t23()} end)
base("Tensor.same_shape", function() return {t23(), t23()} end)
base("Tensor.get", function() return {t23(), 1, 2} end)
base("Tensor.__index", function() return {t23(), 2} end, function() return {t23(), "dim"} end)
base("Tensor.__newindex", function() return {t23(), 2, 0.5} end, function() return {t23(), 1, T(3)} end)
base("Tensor.set", function() return {t23(), 1, 2, 0.5} end)
base("Tensor.narrow", function() return {t23(), 2, 1, 2} end)
base("Tensor.select", function() return {t23(), 1, 2} end)
base("Tensor.row", function() return {t23(), 2} end)
base("Tensor.col", function() return {t23(), 3} end)
base("Tensor.transpose", function() return {t23(), 1, 2} end)
base("Tensor.view", function() return {t23(), 3, 2} end, function() return {t23(), {6}} end)
base("Tensor.reshape", function() return {t23():t(), 6} end)
base("Tensor.cast", function() return {t23(), "float64"} end)
base("Tensor.copy", function() return {t23(), D(3, 2)} end)
base("Tensor.fill", function() return {t23(), 2} end)
-- Math
for _, m in ipairs{"add", "sub", "mul", "div"} do
  base("Tensor." .. m, function() return {t23(), t23()} end, function() return {t23(), t23(), 2} end,
       function() return {t23(), 2, t23()} end)
end
for _, m in ipairs{"neg", "abs", "sign", "exp", "log", "sqrt", "tanh", "sigmoid", "relu",
                   "dtanh", "dsigmoid", "drelu"} do
  base("Tensor." .. m, function() return {t23()} end, function() return {t23(), t23()} end)
end
for _, m in ipairs{"softplus", "dsoftplus"} do
  base("Tensor." .. m, function() return {t23(), 2} end, function() return {t23(), t23(), 0.5} end)
end
base("Tensor.pow", function() return {t23(), 2} end, function() return {t23(), t23(), 3} end)
base("Tensor.scale", function() return {t23(), 2} end, function() return {t23(), t23(), 3} end)
base("Tensor.clamp", function() return {t23(), -0.5, 0.5} end,
     function() return {t23(), t23(), -0.5, 0.5} end)
base("Tensor.axpy", function() return {t23(), 0.5, t23()} end)
for _, m in ipairs{"gt", "lt", "ge", "le", "eq", "ne"} do
  base("Tensor." .. m, function() return {t23(), 0} end, function() return {t23(), t23(), t23()} end,
       function() return {t23(), 0, t23()} end)
end
base("Tensor.maskedfill", function() return {t23(), t23():gt(0), 1} end)
base("Tensor.maskedcopy", function() return {t23(), t23():gt(0), t23()} end)
for _, m in ipairs{"sum", "mean"} do
  base("Tensor." .. m, function() return {t23()} end, function() return {t23(), 2} end,
       function() return {T(3), t23(), 1} end)
end
for _, m in ipairs{"max", "min"} do
  base("Tensor." .. m, function() return {t23()} end, function() return {t23(), 2} end,
       function() return {T(2), D(2), t23(), 2} end, function() return {T(3), t23(), 1} end)
end
for _, m in ipairs{"argmax", "argmin"} do
  base("Tensor." .. m, function() return {t23()} end, function() return {t23(), 1} end,
       function() return {D(2), t23(), 2} end)
end
base("Tensor.norm", function() return {t23()} end, function() return {t23(), 1, 2} end,
     function() return {T(2), t23(), math.huge, 2} end)
for _, m in ipairs{"softmax", "logsoftmax"} do
  base("Tensor." .. m, function() return {t23()} end, function() return {t23(), t23()} end)
end
base("Tensor.mm", function() return {T(2, 2), T(2, 3), T(3, 2)} end)
base("Tensor.addmm", function() return {T(2, 2), 0.5, T(2, 3), T(3, 2), 2} end,
     function() return {T(2, 2), T(2, 3), T(3, 2)} end)
base("Tensor.mv", function() return {T(2), T(2, 3), T(3)} end)
base("Tensor.addmv", function() return {T(2), 0.5, T(2, 3), T(3), 2} end)
base("Tensor.addr", function() return {T(2, 3), 0.5, T(2), T(3)} end,
     function() return {T(2, 3), T(2), T(3)} end)
base("Tensor.addr_masked", function() return {T(2, 3), 0.5, T(2), T(3), t23():gt(0)} end)
base("Tensor.dot", function() return {t23(), t23()} end)
base("nm.dot", function() return {t23(), t23()} end)
base("nm.mm", function() return {T(2, 3), T(3, 2)} end)
base("nm.mv", function() return {T(2, 3), T(3)} end)
base("nm.outer", function() return {T(2), T(3)} end)
-- Operators
for _, m in ipairs{"__add", "__sub"} do
  base("Tensor." .. m, function() return {t23(), t23()} end, function() return {2, t23()} end)
end
base("Tensor.__div", function() return {t23(), 2} end)
base("Tensor.__mul", function() return {T(2, 3), T(3, 2)} end, function() return {T(2, 3), T(3)} end,
     function() return {T(3), T(3)} end, function() return {2, t23()} end)
base("Tensor.__unm", function() return {t23()} end)
-- Random
base("nm.generator", function() return {SEED} end)
base("nm.rand", function() return {gen(), 2, 3} end)
base("nm.randn", function() return {gen(), 2, 3, "float64"} end)
base("Tensor.uniform", function() return {t23(), gen(), -1, 1} end)
base("Tensor.normal", function() return {t23(), gen(), 0, 2} end)
base("Tensor.bernoulli", function() return {t23(), gen(), 0.3} end)
base("Generator.seed", function() return {gen(), 5} end)
base("Generator.uniform", function() return {gen(), -1, 1} end)
base("Generator.normal", function() return {gen(), 0, 1} end)
base("Generator.integer", function() return {gen(), 1, 6} end)
base("Generator.bernoulli", function() return {gen(), 0.3} end)
base("Generator.permutation", function() return {gen(), 5} end)
base("Generator.shuffle", function() return {gen(), {1, 2, 3, "x", {}}} end)
base("Generator.sample", function() return {gen(), 10, 3} end)
base("Generator.set_state", function() return {gen(), gen():state()} end)
-- IO (readers only here; writers below)
-- A scratch directory for the files the spec writes.
local TMP = os.tmpname()
os.remove(TMP)
nm.sys.mkdir(TMP)
local function tmp(name) return TMP .. "/" .. name end
nm.save_npy(tmp("a.npy"), D(2, 3))
nm.save_idx(tmp("a.idx"), nm.tensor{{1, 2, 3}, {4, 5, 6}}, "ubyte")
base("nm.load_npy", function() return {tmp("a.npy"), "float32"} end)
base("nm.load_idx", function() return {tmp("a.idx")} end)
-- System (harmless ones)
base("nm.crc32", function() return {"abc", 7} end)
base("nm.hash64", function() return {"abc"} end)
base("nm.sys.isatty", function() return {2} end)
base("nm.sys.wait", function() return {-1, true} end)
base("nm.threads", function() return {(nm.threads())} end)
base("nm.blas_core", function() return {} end)
base("nm.blas_core_advice", function() return {"Haswell"} end, function() return {} end)
-- Synthetic data and gather
base("nm.synth_teacher", function()
  return {gen(), T(5, 3), T(5, 2), {T(4, 3), T(2, 4)}, {phi = "tanh", gains = {1, 2}, hidden = {T(5, 4)}}}
end)
base("nm.synth_lowrank", function() return {gen(), T(4, 3), 2, {sv = {1, 2}, U = T(4, 2), V = T(3, 2)}} end)
base("nm.synth_lowrank_sample", function()
  return {gen(), T(2, 3), T(5, 3), T(5, 2), {noise = 0.1, input = "normal", a = 0, b = 1}}
end)
base("Tensor.index_rows", function() return {T(2, 3), T(4, 3), {1, 3, 4}, 2} end,
     function() return {T(2, 3), T(4, 3), nm.tensor{4, 1}} end)
-- Plasticity kernels, Adam's step and the activation derivative
base("nm.kernels.plastic_outer", function() return {T(3, 2), 0.1, T(3), T(2), T(3), T(3, 2), T(3)} end,
     function() return {T(3, 2), 0.1, T(4, 3), T(4, 2), T(4, 3), T(3, 2)} end)
base("nm.kernels.plastic_oja", function() return {T(3, 2), 0.1, T(3), T(2), T(3, 2)} end,
     function() return {T(3, 2), 0.1, T(4, 3), T(4, 2)} end)
base("Tensor.adam_update", function()
  return {t23(), t23(), t23(), t23():abs(), 1, 0.9, 0.999, 1e-8, 0.01, 1}
end)
base("Tensor.mul_dact", function() return {t23(), t23(), t23(), "softplus", 2} end)
base("nm.kernels.mc_phi", function() return {D(4), D(4), {rate = "softplus", gamma = 1, beta = 1, theta = 0}} end)
-- Folded autoencoder kernels
base("folded.rates", function() return {T(2, 3), T(2, 3), T(2, 3), "softplus", 2} end)
base("folded.mismatch", function() return {T(2, 3), T(2, 3), T(2, 3)} end)
base("folded.velocity", function()
  return {T(2, 3), T(2, 3), 0.5, T(2, 3), 0.5, T(2, 3), 0.1, T(2, 3), T(2, 3), 1}
end)
base("folded.step", function() return {T(2, 3), T(2, 3), T(2, 3), 0.1, 0.9} end)
-- BMVR
for _, f in ipairs{"train", "backprop"} do
  base("bmvr." .. f, function() return {bmvr_net(), T(5, 4), T(5, 2), nil, nm.tensor{2, 1, 5}, 2} end,
       function()
         local net = bmvr_net()
         return {net, T(5, 4), T(5, 2), {relu = true, gate = "z", mean = "before", decoupled = true,
                                          eta_w1 = 0.01, eta_w2 = 0.01, eta_q = 0.01, t0 = 10, t = 3}}
       end)
end
base("bmvr.forward", function() return {bmvr_net(), T(5, 4), {relu = true}} end)
base("bmvr.evaluate", function() return {bmvr_net(), T(5, 4), T(5, 2)} end)
base("bmvr.hidden_cov", function() return {bmvr_net(), T(5, 4)} end)
base("bmvr.alignment", function() return {bmvr_net(), T(5, 4), T(5, 2), {decoupled = true}} end)
base("nm.symeig", function() return {nm.tensor{{2, 1}, {1, 3}}, true} end)
base("Tensor.symeig", function() return {nm.tensor{{2, 1}, {1, 3}}, true} end)
base("nm.rrr", function() return {T(6, 3), T(6, 2), 1, 1e-12} end)
-- NK
base("nk.model", function() return {{n = 6, k = 2, generator = gen(), partners = "adjacent", table = true}} end)
base("nk.network", function()
  local X, F = nk_data()
  return {{kind = "ANN", x = X, f = F, h = 2, generator = gen(), range = 1, target = "binary"}}
end)
base("nk.sigmoid", function() return {0.5} end)
base("NKModel.partners", function() return {nk_model(), 2} end)
base("NKModel.entry", function() return {nk_model(), 2, 3} end)
base("NKModel.hash_entry", function() return {nk_model(), 2, 3} end)
base("NKModel.fitness", function() return {nk_model(), {1, 0, 1, 1, 0, 0}} end,
     function() return {nk_model(), T(6)} end)
base("NKModel.dataset", function() return {nk_model(), 3, gen(), "float32"} end)
base("NKNet.step", function() return {nk_net(), 3, gen()} end)
base("NKNet.step_naive", function() return {nk_net(), 3, gen()} end)
base("NKNet.test_error", function() return {nk_net(), nk_data()} end)
base("NKNet.get", function() return {nk_net(), "hidden", 1, 2} end)
base("NKNet.set", function() return {nk_net(), "decoder", 1, 2, 0.5} end)
base("NKNet.perturb", function() return {nk_net(), "output", 1, 2, 0.25} end)
base("NKNet.shape", function() return {nk_net(), "hidden"} end)
base("NKNet.set_weights", function() local n = nk_net(); return {n, n:weights()} end)
base("NKNet.set_counts", function() return {nk_net(), 5, 2, 1} end)
base("NKNet.set_state", function() local n = nk_net(); return {n, n:state()} end)
-- Meta-learning kernels
base("MotifNet.query", function() return {motif(), wlist(), T(5, 4), {1, 2, 2, 1, 1}, wlist()} end)
base("nm.kernels.motif_net", function() return {{sizes = {4, 3, 2}, beta = 5, feedback = "bp", dtype = "float64"}} end)
-- Microcircuit
base("Microcircuit.run", function() return {mc_handle(), 3, D(3), D(2), gen(), true} end)
base("Microcircuit.set", function() return {mc_handle(), {dt = 0.05, sigma = 0}} end)
base("Microcircuit.set_eta", function() return {mc_handle(), 1, "pi", 0.5} end)
base("Microcircuit.set_rule", function() return {mc_handle(), 1, "pi", nil} end)
base("Microcircuit.begin_step", function() return {mc_handle(), D(3), D(2)} end)
base("Microcircuit.end_step", function() return {mc_handle(), true, gen()} end)
base("Microcircuit.finish", function() return {mc_handle()} end)
-- The spec table nm.kernels.microcircuit gets from the Lua layer, captured.
local function mc_spec()
  local real, captured = nm.kernels.microcircuit, nil
  nm.kernels.microcircuit = function(s) captured = s; return real(s) end
  local ok, err = pcall(function() mc_module.new{sizes = {3, 4, 2}, gen = gen()}:handle() end)
  nm.kernels.microcircuit = real
  assert(ok, err)
  return captured
end
base("nm.kernels.microcircuit", function() return {mc_spec()} end)
-- The one-sample MLP step: the spec table nn.lua builds, captured, and
-- the step object it made (mlp_net, above).
local function mlp_spec(batch)
  local real, captured = nm.kernels.mlp_step, nil
  nm.kernels.mlp_step = function(s) captured = s; return real(s) end
  local ok, err = pcall(mlp_net, batch)
  nm.kernels.mlp_step = real
  assert(ok, err)
  return captured
end
base("nm.kernels.mlp_step", function() return {mlp_spec()} end,
     function() return {mlp_spec(true)} end)
base("MLPStep.run", function() return {mlp_net().fused[1].step, T(4), T(1, 2), 0.1, false} end,
     function() return {mlp_net(true).fused[3].step, T(3, 4), D(3, 2), 0.1, false} end)
base("MLPStep.run_rows", function() return {mlp_net().fused[1].step, T(3, 4), T(3, 2), 1, 3, 0.1, false} end)
base("MLPStep.run_order", function() return {mlp_net().fused[1].step, T(3, 4), T(3, 2), {3, 1, 2}, 1, 3, 0.1, false} end)
base("nm.gather", function() return {4} end)
base("Gather.start", function() return {nm.gather(4), {3, 1, 2}, 1, T(2, 3), T(3, 3)} end,
     function() return {nm.gather(4), nm.tensor({3, 1, 2}, "float64"), 2, T(2, 3), T(3, 3), D(2, 1), D(3, 1)} end)

-- Functions left out of the battery (effects on processes, files, the
-- signal handlers, or running time), each tested by hand below.
local SKIP = {
  ["nm.sys.spawn"] = "starts processes", ["nm.sys.kill"] = "sends signals",
  ["nm.sys.sleep"] = "sleeps", ["nm.sys.mkdir"] = "creates directories",
  ["nm.sys.atomic_write"] = "writes files", ["nm.save_idx"] = "writes files",
  ["nm.save_npy"] = "writes files", ["nm.sys.install_stop_handler"] = "signal handlers",
  ["nm.sys.remove_stop_handler"] = "signal handlers", ["nm.bench_direct_gemm"] = "long gemm loops",
  ["nm.ulp_scan"] = "long scans (its arguments: spec/vmath_spec.lua)",
  ["nm.sys.append_file"] = "writes files", ["nm.sys.lock"] = "creates files",
  ["nm.sys.unlock"] = "closes descriptors", ["nm.sys.listdir"] = "reads directories",
  ["nm.kernels.load"] = "loads shared objects (spec/compile_spec.lua tests it)",
}

-- Arguments that are repeat counts: a huge valid value would run for hours
-- (interruptible with Ctrl-C), so the battery gives them no huge numbers.
local COUNT_ARG = {
  ["NKNet.step"] = 2, ["NKNet.step_naive"] = 2, ["Microcircuit.run"] = 2,
}
local HUGE_LABELS = {maxinteger = true, ["2^62"] = true, ["2^53"] = true, ["1e308"] = true,
                     inf = true}

-- ---------------------------------------------------------------- the battery

local function describe_args(args, n)
  local parts = {}
  for i = 1, n do
    local v = args[i]
    local s = type(v)
    if type(v) == "number" or type(v) == "string" or type(v) == "boolean" then
      s = string.format("%q", v)
    elseif type(v) == "userdata" then
      local mt = getmetatable(v)
      s = type(mt) == "table" and tostring(mt.__name) or "userdata"
    end
    parts[#parts + 1] = s
  end
  return table.concat(parts, ", ")
end

-- Calls fn with args[1..n]; returns nil when fine, else a description of
-- the problem (a non-string error object).
local calls = 0
local function try(name, fn, args, n, what)
  calls = calls + 1
  if TRACE then io.stderr:write(name, "(", what, ")\n"); io.stderr:flush() end
  local ok, err = pcall(fn, table.unpack(args, 1, n))
  if not ok and type(err) ~= "string" then
    return string.format("%s(%s): %s error object %s", name, describe_args(args, n), type(err),
                         tostring(err))
  end
  if not ok and err == "" then
    return string.format("%s(%s): empty error message", name, describe_args(args, n))
  end
  return nil
end

-- The paths (lists of keys) of the fields of t, up to depth levels deep.
local function table_paths(t, depth, prefix, out)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local path = {table.unpack(prefix)}
    path[#path + 1] = k
    out[#out + 1] = path
    local v = t[k]
    if depth > 1 and type(v) == "table" and getmetatable(v) == nil then
      table_paths(v, depth - 1, path, out)
    end
  end
  return out
end
local function with_field(t, path, v)
  local copy = {}
  for k, x in pairs(t) do copy[k] = x end
  if #path == 1 then
    copy[path[1]] = v
  else
    copy[path[1]] = with_field(t[path[1]], {table.unpack(path, 2)}, v)
  end
  return copy
end

local function bases_of(name)
  if BASES[name] then return BASES[name] end
  local kind = name:match("^(%u%w*)%.")
  if kind == "Tensor" then return {function() return {t23()} end} end
  if kind == "Generator" then return {function() return {gen()} end} end
  if kind == "NKModel" then return {function() return {nk_model()} end} end
  if kind == "NKNet" then return {function() return {nk_net()} end} end
  if kind == "MotifNet" then return {function() return {motif()} end} end
  if kind == "Microcircuit" then return {function() return {mc_handle()} end} end
  if kind == "MLPStep" then return {function() return {mlp_net().fused[1].step} end} end
  if kind == "Gather" then return {function() return {nm.gather(4)} end} end
  return {function() return {} end}
end

local function count_args(args)
  local n = 0
  for k in pairs(args) do if type(k) == "number" and k > n then n = k end end
  return n
end

-- Runs the whole battery for one function; returns the problems found and
-- the bases that did not run (which would leave later checks untested).
local function battery(name, fn)
  local problems, broken = {}, {}
  local function note(p) if p then problems[#problems + 1] = p end end
  note(try(name, fn, {}, 0, "no arguments"))
  for bi, make in ipairs(bases_of(name)) do
    local args = make()
    local n = count_args(args)
    local ok, err = pcall(fn, table.unpack(args, 1, n))
    if not ok then broken[#broken + 1] = string.format("%s base %d: %s", name, bi, tostring(err)) end
    for pos = 1, n + 1 do
      for _, bad in ipairs(BAD) do
        if not (COUNT_ARG[name] == pos and HUGE_LABELS[bad[1]]) then
          local a = make()
          a[pos] = bad[2] and bad[2]() or nil
          note(try(name, fn, a, math.max(n, pos), string.format("base %d, #%d = %s", bi, pos, bad[1])))
        end
      end
      -- One field of a table argument (up to three levels deep) replaced.
      local arg = args[pos]
      if type(arg) == "table" and getmetatable(arg) == nil then
        for _, path in ipairs(table_paths(arg, 3, {}, {})) do
          for _, bad in ipairs(BAD) do
            local a = make()
            if type(a[pos]) == "table" then
              a[pos] = with_field(a[pos], path, bad[2] and bad[2]() or nil)
              note(try(name, fn, a, n, string.format("base %d, #%d.%s = %s", bi, pos,
                                                     table.concat(path, "."), bad[1])))
            end
          end
        end
      end
    end
  end
  return problems, broken
end

-- ---------------------------------------------------------------- specs

describe("robustness: every function of the module", function()
  it("is reached by the battery (the list of functions is complete)", function()
    local count = 0
    for name in pairs(API) do count = count + 1 end
    -- The module has well over a hundred functions; a much smaller count
    -- means the enumeration broke.
    assert.is_true(count > 150, "only " .. count .. " functions found")
    for name in pairs(SKIP) do assert.is_function(API[name], name .. " is skipped but absent") end
    for name in pairs(BASES) do
      assert.is_function(API[name], "a base is given for " .. name .. ", which does not exist")
    end
  end)

  local names = {}
  for name in pairs(API) do if not SKIP[name] then names[#names + 1] = name end end
  table.sort(names)
  -- One test per group of functions keeps the output readable.
  local groups = {}
  for _, name in ipairs(names) do
    local g = name:match("^(.-)%.")
    groups[g] = groups[g] or {}
    table.insert(groups[g], name)
  end
  local gnames = {}
  for g in pairs(groups) do gnames[#gnames + 1] = g end
  table.sort(gnames)
  for _, g in ipairs(gnames) do
    it("raises string errors, never crashes: " .. g .. ".*", function()
      local problems, broken = {}, {}
      local saved_threads = nm.threads()
      for _, name in ipairs(groups[g]) do
        local p, b = battery(name, API[name])
        for _, x in ipairs(p) do problems[#problems + 1] = x end
        for _, x in ipairs(b) do broken[#broken + 1] = x end
        collectgarbage()
      end
      nm.threads(saved_threads)
      assert.are.same({}, problems)
      assert.are.same({}, broken)
    end)
  end
end)

-- Checks that f raises a string error containing `text` (plain).
local function raises(text, f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "no error (expected '" .. text .. "')")
  assert.is_string(err)
  assert.truthy(err:find(text, 1, true), "error '" .. err .. "' lacks '" .. text .. "'")
end

-- Each case below crashed, tripped the sanitizers or gave wrong values
-- before it was fixed.
describe("robustness: regressions", function()
  -- issue 18, item 8: the strides of an empty tensor overflowed, and
  -- totable of [2^40 x 0] made 2^40 empty tables (a hang)
  it("empty tensors with huge other sizes: no stride overflow, no endless totable", function()
    raises("tensor too large", nm.zeros, 0, 2 ^ 32 - 1, 2 ^ 32 - 1)
    raises("tensor too large", nm.zeros, 2 ^ 62, 0)
    raises("tensor too large", T(0).view, T(0), 0, 2 ^ 40, 2 ^ 40)
    local e = nm.zeros(2 ^ 40, 0)
    assert.same({2 ^ 40, 0}, e:size())
    assert.same({1, 1}, {e:stride(1), e:stride(2)})
    raises("would become 1099511627776 nested empty tables", e.totable, e)
    assert.same({{}, {}, {}}, nm.zeros(3, 0, 5):totable())
    assert.same({}, nm.zeros(0, 2 ^ 40):totable())
    assert.equal(0, e:sum())
  end)

  -- issue 18, item 13: with its storage replaced or removed through the
  -- debug library a tensor pointed into freed memory (ASan: use after free)
  it("a tensor whose storage was taken away by debug.setuservalue is closed", function()
    local t = nm.zeros(1000):fill(3)
    local v = t:narrow(1, 1, 10)
    debug.setuservalue(t, nil, 1)
    collectgarbage()
    collectgarbage()
    local filler = {}
    for i = 1, 50 do filler[i] = nm.zeros(1000):fill(i) end
    raises("closed tensor", t.sum, t)
    assert.is_true(t:is_closed())
    assert.truthy(tostring(t):find("closed", 1, true))
    assert.equal(30, v:sum())                 -- the view keeps its own reference
    -- another tensor's storage in its place is no substitute
    local a, b = nm.zeros(4):fill(1), nm.zeros(100000):fill(2)
    debug.setuservalue(a, debug.getuservalue(b, 1), 1)
    raises("closed tensor", a.sum, a)
    raises("closed tensor", nm.zeros(4).add, nm.zeros(4), a)
    -- its own storage back: still the same bytes, so it is still open
    local c = nm.zeros(3):fill(5)
    local keep = debug.getuservalue(c, 1)
    debug.setuservalue(c, keep, 1)
    assert.equal(15, c:sum())
  end)

  -- issue 18, item 11: the C library saw "a\0b" as "a"
  it("paths and command arguments with a NUL byte are refused, not cut short", function()
    local dir = os.tmpname()
    os.remove(dir)
    raises("path contains a NUL byte (at byte " .. (#dir + 2) .. ")", nm.sys.mkdir, dir .. "/\0x")
    raises("path contains a NUL byte", nm.sys.atomic_write, dir .. "\0x", "data")
    raises("path contains a NUL byte", nm.sys.atomic_write, dir, "data", dir .. ".bak\0")
    raises("path contains a NUL byte", nm.sys.spawn, {"true"}, dir .. "\0.log")
    raises("argument 2 of the command contains a NUL byte", nm.sys.spawn, {"touch", dir .. "\0x"})
    raises("path contains a NUL byte", nm.kernels.load, dir .. "\0.so", "f", "k")
    raises("path contains a NUL byte", nm.sys.append_file, dir .. "\0x", "data")
    raises("path contains a NUL byte", nm.sys.lock, dir .. "\0x", "text")
    raises("path contains a NUL byte", nm.sys.listdir, dir .. "\0x")
    local f = io.open(dir, "r")
    assert.is_nil(f)                       -- nothing was created under the short name
  end)

  it("a microcircuit whose storages were taken away by the debug library refuses to run", function()
    for _, how in ipairs{"replace", "empty"} do
      local h = mc_handle()
      assert.truthy(pcall(h.run, h, 1, D(3), D(2), gen(), true))
      if how == "replace" then
        debug.setuservalue(h, {}, 1)
      else
        local keep = debug.getuservalue(h, 1)
        for i = #keep, 1, -1 do keep[i] = nil end
      end
      collectgarbage()
      collectgarbage()
      raises("the storage of the network's tensors was replaced", h.run, h, 1, D(3), D(2), gen(), true)
      raises("the storage of the network's tensors was replaced", h.set, h, {dt = 0.05})
    end
  end)

  it("sizes whose product overflows are errors, not signed overflow", function()
    raises("tensor too large", T(2, 3).view, T(2, 3), 2 ^ 62, 4)
    raises("tensor too large", nm.frombytes, "", "float32", 2 ^ 62, 4)
    raises("out of bounds", T(2, 3).narrow, T(2, 3), 1, math.maxinteger, math.maxinteger)
    raises("out of bounds", T(2, 3).narrow, T(2, 3), 2, 5, 0)
    assert.are.equal(0, T(2, 3):narrow(2, 4, 0):size(2))    -- an empty slice at the end
    raises("need more than", T(2, 3).index_rows, T(2, 3), T(4, 3), {1, 2, 3}, math.maxinteger)
  end)

  it("messages show out-of-range integers as given, not cut to 32 bits", function()
    raises("index 4294967297 out of range", T(2, 3).get, T(2, 3), 2 ^ 32 + 1, 1)
    raises("index 4294967297 out of range", T(2, 3).select, T(2, 3), 1, 2 ^ 32 + 1)
    raises("index 4294967297 out of range", T(2, 3).row, T(2, 3), 2 ^ 32 + 1)
    raises("rank 4294967297 out of range", nm.synth_lowrank, gen(), T(4, 3), 2 ^ 32 + 1)
  end)

  it("nm.range takes finite bounds and a countable length", function()
    raises("finite number expected", nm.range, 0, math.huge)
    raises("finite number expected", nm.range, 0 / 0, 1)
    raises("too many elements", nm.range, 0, 1e300)
    raises("too many elements", nm.range, -1e308, 1e308)
    assert.are.equal(0, nm.range(1, 0):numel())
  end)

  it("process ids and signals are range-checked before the cast to pid_t / int", function()
    -- 2^32 + pid would have been pid itself; 2^32 - 1 would have been -1
    -- (every process). Signal 0 only tests for existence.
    raises("must be a process id", nm.sys.kill, 2 ^ 32 + nm.sys.getpid(), 0)
    raises("must be a process id", nm.sys.kill, 2 ^ 32 - 1, 0)
    raises("not a signal number", nm.sys.kill, nm.sys.getpid(), 2 ^ 32)
    raises("not a signal number", nm.sys.kill, nm.sys.getpid(), -1)
    raises("not a process id", nm.sys.wait, 2 ^ 32 - 1, true)
    assert.is_true(nm.sys.kill(nm.sys.getpid(), 0))
  end)

  it("a 0-sample plastic_outer with a mask changes nothing (was a NULL write in BLAS)", function()
    local W = T(3, 2)
    local W0 = W:clone()
    nm.kernels.plastic_outer(W, 0.1, nm.zeros(0, 3), nm.zeros(0, 2), nil, T(3, 2))
    nm.kernels.plastic_outer(W, 0.1, nm.zeros(0, 3), nm.zeros(0, 2), nm.zeros(0, 3), T(3, 2), T(3))
    assert.are.same(W0:totable(), W:totable())
  end)

  it("an empty tensor is contiguous whatever its strides", function()
    assert.is_true(nm.zeros(5, 0):is_contiguous())
    assert.are.same({0, 5}, nm.zeros(5, 0):view(0, 5):size())
    local X, Y = nm.zeros(5, 0), nm.zeros(5, 2)
    nm.synth_teacher(nil, X, Y, {nm.zeros(4, 0), T(2, 4)}, {phi = "identity"})
    assert.are.equal(0, Y:norm())                     -- no input: W2 0 = 0
  end)

  it("copy between overlapping views reads the source before it is overwritten", function()
    local t = nm.range(1, 6)
    t:narrow(1, 2, 5):copy(t:narrow(1, 1, 5))
    assert.are.same({1, 1, 2, 3, 4, 5}, t:totable())
    local m = nm.tensor{{1, 2}, {3, 4}}
    m:copy(m:t())
    assert.are.same({{1, 3}, {2, 4}}, m:totable())
    m:copy(m)
    assert.are.same({{1, 3}, {2, 4}}, m:totable())
  end)

  it("outputs that share memory with other operands are errors, not wrong values", function()
    local X = T(4, 3)
    raises("B shares memory with X", X.index_rows, X:narrow(1, 1, 2), X, {2, 1})
    local A = T(3, 3)
    raises("Y shares memory with X", nm.synth_teacher, nil, A, A, {T(3, 3)})
    local X5 = T(5, 3)
    raises("hidden[1] shares memory with X", nm.synth_teacher, nil, X5, T(5, 3),
           {T(3, 3), T(3, 3)}, {hidden = {X5}})
    raises("A shares memory with U", nm.synth_lowrank, gen(), A, 3, {U = A})
    local U = T(3, 2)
    raises("U shares memory with V", nm.synth_lowrank, gen(), A:clone(), 2, {U = U, V = U})
    raises("X shares memory with Y", nm.synth_lowrank_sample, gen(), T(3, 3), X:narrow(2, 1, 3), X:narrow(2, 1, 3))
    local W = T(3, 3)
    raises("W shares memory with pre", nm.kernels.plastic_outer, W, 0.5, T(3), W:row(1))
    raises("bias shares memory with post", nm.kernels.plastic_outer, W, 0.5, X, T(4, 3), nil, nil, X:row(2))
    raises("W shares memory with x", nm.kernels.plastic_oja, W, 0.5, T(3), W:row(1))
    local p = t23()
    raises("p shares memory with v", p.adam_update, p, t23(), t23(), p, 1, 0.9, 0.999, 1e-8, 0.1, 1)
    local r = D(2)
    raises("must not share memory", r.max, r, r, D(2, 3), 2)
    local net = bmvr_net()
    raises("W1 shares memory with X", nm.kernels.bmvr.train, net, net.W1, T(3, 2))
  end)

  it("tensors closed by metamethods while options are read are errors, not NULL writes", function()
    local X = T(5, 3)
    raises("X was closed during the call", nm.synth_teacher, gen(), X, T(5, 2), {T(2, 3)},
           setmetatable({}, {__index = function() X:close() end}))
    local A = T(4, 3)
    raises("A was closed during the call", nm.synth_lowrank, gen(), A, 2,
           setmetatable({}, {__index = function() A:close() end}))
    local Y = T(5, 2)
    raises("Y was closed during the call", nm.synth_lowrank_sample, gen(), T(2, 3), T(5, 3), Y,
           setmetatable({}, {__index = function() Y:close() end}))
    local B = T(2, 3)
    raises("closed during the call", B.index_rows, B, T(4, 3),
           setmetatable({}, {__len = function() return 2 end,
                             __index = function() B:close(); return 1 end}))
    local raw = bmvr_net()
    local net = setmetatable({}, {__newindex = raw, __index = function(_, k)
      if k == "work" then raw.W1:close() end
      return raw[k]
    end})
    raises("W1 was closed during the call", nm.kernels.bmvr.train, net, T(5, 4), T(5, 2))
    -- A list handing out fresh tensors it keeps nowhere: they stay alive.
    local Ws = setmetatable({}, {__len = function() return 2 end, __index = function(_, k)
      collectgarbage()
      return k == 1 and T(4, 3) or T(2, 4)
    end})
    nm.synth_teacher(nil, T(5, 3), T(5, 2), Ws)
  end)
end)

describe("robustness: functions with effects, by hand", function()
  it("nm.sys.spawn rejects bad commands before starting anything", function()
    raises("table expected", nm.sys.spawn)
    raises("table expected", nm.sys.spawn, "ls")
    raises("needs a program", nm.sys.spawn, {})
    raises("not a string", nm.sys.spawn, {{}})
    raises("not a string", nm.sys.spawn, {"true", {}})
    raises("string expected", nm.sys.spawn, {"true"}, {})
  end)

  it("nm.sys.kill and nm.sys.wait check their arguments", function()
    raises("number expected", nm.sys.kill)
    raises("must be a process id", nm.sys.kill, 0)
    raises("must be a process id", nm.sys.kill, -1)
    raises("must be a process id", nm.sys.kill, math.mininteger)
    raises("invalid option", nm.sys.kill, nm.sys.getpid(), "HUP")
    raises("number has no integer representation", nm.sys.kill, 0.5)
    raises("number has no integer representation", nm.sys.wait, 0 / 0)
    local pid, why = nm.sys.wait(-1, true)
    assert.is_nil(pid)
    assert.are.equal("no child", why)
  end)

  it("nm.sys.sleep takes a sane number of seconds", function()
    for _, v in ipairs{-1, 0 / 0, math.huge, -math.huge, 1e300} do
      raises("must be a non-negative number of seconds", nm.sys.sleep, v)
    end
    raises("number expected", nm.sys.sleep, "x")
    raises("number expected", nm.sys.sleep)
    assert.are.equal(0, nm.sys.sleep(0))
  end)

  it("nm.sys.mkdir, nm.sys.atomic_write, nm.save_* fail cleanly on bad paths and arguments", function()
    for _, f in ipairs{nm.sys.mkdir, nm.sys.atomic_write, nm.save_idx, nm.save_npy} do
      raises("expected", f)
      raises("expected", f, {})
    end
    raises("cannot create directory", nm.sys.mkdir, tmp("a.npy") .. "/sub")
    nm.sys.mkdir(tmp("d/e/f"))
    nm.sys.mkdir(tmp("d/e/f"))                                     -- exists: fine
    raises("string expected", nm.sys.atomic_write, tmp("w"), {})
    raises("cannot write", nm.sys.atomic_write, tmp("missing/dir/w"), "x")
    raises("cannot write", nm.sys.atomic_write, tmp("d"), "x")       -- a directory
    nm.sys.atomic_write(tmp("w"), "one")
    nm.sys.atomic_write(tmp("w"), "two", tmp("w.bak"))
    assert.are.equal("one", io.open(tmp("w.bak")):read("a"))
    for _, save in ipairs{nm.save_idx, nm.save_npy} do
      raises("neuromic.Tensor expected", save, tmp("s"))
      raises("closed tensor", save, tmp("s"), closed())
      raises("unknown element type", save, tmp("s"), T(2), "complex")
      raises("", save, tmp("missing/dir/s"), T(2))
      raises("", save, tmp("s"), nm.full(1e300, 3, "float64"), "uint8")
      raises("", save, tmp("s"), nm.full(0.5, 3), "int32")
      raises("", save, tmp("s"), nm.full(0 / 0, 3), "int8")
      raises("", save, tmp("s"), nm.full(-1, 3), "uint16")
    end
    -- Views, 0-size and 4-D tensors round-trip.
    for _, t in ipairs{T(3, 4):t(), T(4, 5):narrow(2, 2, 3), nm.zeros(0, 3), T(2, 1, 3, 2), nm.zeros()} do
      nm.save_npy(tmp("v.npy"), t)
      local back = nm.load_npy(tmp("v.npy"), t:dtype())
      assert.are.same(t:size(), back:size())
      assert.are.same(t:contiguous():tobytes(), back:tobytes())
    end
  end)

  it("the readers reject truncated and absurd files with a message", function()
    local function write(name, s) local f = assert(io.open(tmp(name), "wb")); f:write(s); f:close() end
    local function npy(header)
      local h = "{'descr': '<f4', 'fortran_order': False, 'shape': " .. header .. ", }"
      h = h .. string.rep(" ", 63 - (#h + 10) % 64) .. "\n"
      return "\147NUMPY\1\0" .. string.pack("<I2", #h) .. h
    end
    write("huge.npy", npy("(4611686018427387904, 4)"))
    write("neg.npy", npy("(-3,)"))
    write("trunc.npy", npy("(3,)") .. "\0\0\0\0")
    write("empty.npy", "")
    write("fortran.npy", (npy("(2, 2)"):gsub("False", "True ")) .. string.rep("\0", 16))
    write("huge.idx", "\0\0\13\4" .. string.pack(">I4>I4>I4>I4", 0xffffffff, 0xffffffff,
                                                   0xffffffff, 0xffffffff))
    write("trunc.idx", "\0\0\8\2" .. string.pack(">I4>I4", 3, 3) .. "abc")
    write("gz.idx.gz", "\31\139\8\0\0\0\0\0\0\3garbage")
    for _, name in ipairs{"huge.npy", "neg.npy", "trunc.npy", "empty.npy", "fortran.npy"} do
      raises(tmp(name), nm.load_npy, tmp(name))
    end
    for _, name in ipairs{"huge.idx", "trunc.idx", "gz.idx.gz", "d"} do
      raises(tmp(name), nm.load_idx, tmp(name))
    end
  end)

  it("nm.bench_direct_gemm checks its arguments and runs a tiny case", function()
    raises("n must be in 1..8192", nm.bench_direct_gemm, 0)
    raises("n must be in 1..8192", nm.bench_direct_gemm, 8193)
    raises("n must be in 1..8192", nm.bench_direct_gemm, math.mininteger)
    raises("reps must be >= 1", nm.bench_direct_gemm, 2, "float32", 0)
    raises("dtype must be", nm.bench_direct_gemm, 2, "int")
    assert.is_number(nm.bench_direct_gemm(3, "float64", 2))
  end)

  it("the stop handler functions take no arguments and answer", function()
    assert.is_false((nm.sys.stop_requested()))
    nm.sys.clear_stop()
  end)

  it("objects keep their tensors' storage after the tensors are closed", function()
    local net = mc_module.new{sizes = {3, 4, 2}, gen = gen()}
    local h = net:handle()
    for _, v in pairs(net) do
      if nm.is_tensor(v) then v:close() end
    end
    for _, layer in pairs(net.pyr) do
      for _, v in pairs(layer) do if nm.is_tensor(v) then v:close() end end
    end
    collectgarbage()
    collectgarbage()
    h:run(3, D(3), D(2), gen())
    h:refresh()
    assert.is_table(h:params())
  end)
end)

describe("robustness: zero-size operands run the kernels without touching memory", function()
  local Z = nm.zeros
  local cases = {
    function() return nm.mm(Z(0, 3), Z(3, 0)) end, function() return nm.mm(Z(2, 0), Z(0, 3)) end,
    function() return Z(2, 3):addmm(2, Z(2, 0), Z(0, 3), 0.5) end,
    function() return nm.mv(Z(0, 3), Z(3)) end, function() return nm.mv(Z(3, 0), Z(0)) end,
    function() return nm.outer(Z(0), Z(3)) end, function() return Z(0, 3):addr(1, Z(0), Z(3)) end,
    function() return Z(0, 3):addr_masked(1, Z(0), Z(3), Z(0, 3)) end,
    function() return Z(3, 0):softmax() end, function() return Z(0):logsoftmax() end,
    function() return Z(3, 0):sum(2) end, function() return Z(3, 0):norm(math.huge, 2) end,
    function() return Z(0, 3):max(2) end, function() return Z(0, 3):argmin(2) end,
    function() return Z(0, 3):t():contiguous() end, function() return Z(0, 3):tobytes() end,
    function() return tostring(Z(2, 0, 3, 1)) end, function() return Z(0, 4):normal(gen()) end,
    function() return gen():permutation(0) end, function() return gen():sample(5, 0) end,
    function() return nm.kernels.plastic_outer(Z(0, 3), 0.1, Z(0), Z(3)) end,
    function() return nm.kernels.plastic_oja(Z(3, 0), 0.1, Z(3), Z(0)) end,
    function() return nm.kernels.plastic_oja(Z(3, 2), 0.1, Z(0, 3), Z(0, 2), T(3, 2)) end,
    function() return Z(0):adam_update(Z(0), Z(0), Z(0), 1, 0.9, 0.999, 1e-8, 0.1, 1) end,
    function() return Z(0, 3):mul_dact(Z(0, 3), Z(0, 3), "tanh") end,
    function() return Z(0, 3):index_rows(Z(4, 3), {}) end,
    function() return Z(2, 0):index_rows(Z(4, 0), {1, 2}) end,
    function() return nm.synth_teacher(gen(), Z(0, 3), Z(0, 2), {T(4, 3), T(2, 4)}) end,
    function() return nm.synth_lowrank_sample(gen(), T(2, 3), Z(0, 3), Z(0, 2)) end,
    function() return nm.synth_lowrank_sample(gen(), Z(0, 3), T(5, 3), Z(5, 0)) end,
    function() return nm.kernels.bmvr.train(bmvr_net(), Z(0, 4), Z(0, 2)) end,
    function() return nm.kernels.bmvr.evaluate(bmvr_net(), Z(0, 4), Z(0, 2)) end,
    function() return nm.kernels.bmvr.hidden_cov(bmvr_net(), Z(0, 4)) end,
    function() return nm.kernels.bmvr.alignment(bmvr_net(), Z(0, 4), Z(0, 2)) end,
    function() return nm.kernels.bmvr.backprop(bmvr_net(), Z(0, 4), Z(0, 2)) end,
    function() return nm.kernels.folded.rates(Z(0, 3), Z(0, 3), Z(0, 3), "tanh") end,
    function() return nm.kernels.folded.velocity(Z(0, 3), Z(0, 3), 1, nil, 0, nil, 0, nil, nil, 1) end,
    function() return nm.frombytes("", "float32", 0, 5) end,
  }
  it("every case returns", function()
    for i, f in ipairs(cases) do
      local ok, err = pcall(f)
      assert.is_true(ok, "case " .. i .. ": " .. tostring(err))
    end
  end)
  it("empty reductions that have no value are errors", function()
    raises("max of an empty tensor", Z(0, 3).max, Z(0, 3), 1)
    raises("of an empty tensor", Z(0).argmax, Z(0))
    raises("non-empty", nm.symeig, Z(0, 0))
    raises("non-empty", nm.rrr, Z(0, 3), Z(0, 2), 1)
  end)
end)

-- The scratch directory goes when the file is done (os.remove takes only
-- files and empty directories, so everything written is listed).
teardown(function()
  for _, name in ipairs{"a.npy", "a.idx", "w", "w.bak", "s", "v.npy", "huge.npy", "neg.npy",
                        "trunc.npy", "empty.npy", "fortran.npy", "huge.idx", "trunc.idx",
                        "gz.idx.gz", "d/e/f", "d/e", "d", ""} do
    os.remove(tmp(name))
  end
end)

describe("robustness: list arguments are read raw, so metamethods cannot pull tensors away", function()
  -- Regression: net:query read its labels through __index, which could close
  -- X after X was checked: sgemm then read freed memory (segfault).
  it("motif net query with a proxy labels table is an error, not a crash", function()
    local g = nm.generator(1)
    local net = nm.kernels.motif_net{sizes = {4, 3, 2}}
    local X = nm.randn(g, 2, 4)
    local proxy = setmetatable({}, {__len = function() return 2 end,
                                    __index = function() X:close() return 1 end})
    local ok, msg = pcall(net.query, net, {nm.randn(g, 3, 4), nm.randn(g, 2, 3)}, X, proxy)
    assert.is_false(ok)
    assert.truthy(msg:find("0 labels for 2 rows", 1, true))
    assert.is_false(X:is_closed())
  end)
end)

describe("robustness: options tables whose metamethods close tensors", function()
  -- Regression: nm.kernels.nk.network checked x, then read more options through
  -- __index, which could close x: the copy of the data set read freed memory.
  it("nm.kernels.nk.network reads its tensors last", function()
    local X = nm.tensor({{1, -1, 1}, {-1, -1, 1}}, "float64")
    local F = nm.tensor({0.2, 0.7}, "float64")
    local o = {kind = "NAN", x = X, f = F, h = 2, generator = nm.generator(1)}
    local proxy = setmetatable({}, {__index = function(_, k)
      if k == "target" then X:close() end
      return o[k]
    end})
    local ok, msg = pcall(nm.kernels.nk.network, proxy)
    assert.is_false(ok)
    assert.truthy(msg:find("must be tensors", 1, true))
    -- the same options as a plain table still build a network
    o.x = nm.tensor({{1, -1, 1}, {-1, -1, 1}}, "float64")
    assert.truthy(nm.kernels.nk.network(o))
  end)
end)

describe("argument errors of nm.sys and nm.kernels functions", function()
  -- they said "bad argument #1 to '?'" when called without a name (pcall,
  -- a local alias): luaL_argerror finds names only in package.loaded
  it("name the function with its namespace", function()
    local ok, msg = pcall(nm.kernels.nk.sigmoid, "x")
    assert.is_false(ok)
    assert.truthy(msg:find("bad argument #1 to 'neuromic.kernels.nk.sigmoid'", 1, true), msg)
    ok, msg = pcall(nm.sys.sleep, "x")
    assert.is_false(ok)
    assert.truthy(msg:find("bad argument #1 to 'neuromic.sys.sleep'", 1, true), msg)
  end)
end)
