-- experiments/bench/isa.lua: which instruction-set version of each hot
-- kernel runs on this CPU (nm.sys.isa_versions: the clones of nm_simd.h and the
-- loader's choice), then the elementwise transcendentals (nm_vmath.h) on a
-- rows x cols tensor next to PyTorch's kernels and NumPy's straightforward
-- expressions on the same array, one thread, measured in the same run: ns
-- per element and the ratios peer time / neuromic time (> 1: neuromic
-- faster). Both sides are timed in CPU seconds of their one thread (the
-- machine is shared: wall time would count other processes); the fastest of
-- --repeats alternating rounds counts. A benchmark: it checks nothing.
--
--   ./neuromic experiments/bench/isa.lua [--dtypes float32] [--quick]

local nm = require "neuromic"
local cli = require "nm.cli"
local json = require "nm.json"
local process = require "nm.process"

local format = string.format

local opts = cli.parse(arg, {
  name = "isa",
  threads = 1,                 -- the common --threads: 1 unless given
  description = "ISA version of each hot kernel on this CPU; transcendentals vs PyTorch and NumPy.",
  options = {
    {"dtypes", "list", {"float32", "float64"}, "element types", item = "string"},
    {"rows", "int", 100, "rows (a minibatch)", min = 1},
    {"cols", "int", 256, "columns (a hidden layer)", min = 1},
    {"reps", "int", 200, "calls per timing", quick = 20, min = 1},
    {"repeats", "int", 5, "rounds per side, alternating; the fastest counts", quick = 1, min = 1},
    {"python", "string", "/usr/bin/python3", "python with torch and numpy"},
    {"peers", "bool", true, "run the PyTorch/NumPy side"},
  },
})

local function cpu_model()
  local f = io.open("/proc/cpuinfo")
  if not f then return "unknown" end
  local s = f:read("a")
  f:close()
  return s:match("model name%s*:%s*([^\n]+)") or "unknown"
end

if nm.sys.isa_versions then                -- (an older build, timed for comparison, lacks it)
  local isa = nm.sys.isa_versions()
  print(format("CPU: %s; highest level the clones use here: %s", cpu_model(), isa.cpu))
  print(format("%-92s %-32s %s", "hot kernels", "versions built", "runs here"))
  for _, k in ipairs(isa.kernels) do
    print(format("%-92s %-32s %s", k.kernels, k.clones, k.runs))
  end
else
  print(format("CPU: %s; this build has no nm.sys.isa_versions", cpu_model()))
end
-- OpenBLAS's products: the kernels it runs, and whether the CPU allows better
-- ones (an OPENBLAS_CORETYPE set by the user is kept by ./neuromic)
if nm.blas_core_advice then
  local advice, set = nm.blas_core_advice(), os.getenv("OPENBLAS_CORETYPE")
  print(format("OpenBLAS products (sgemm, dgemm): %s kernels%s%s", nm.blas_core(),
               set and format(" (OPENBLAS_CORETYPE=%s)", set) or "",
               advice and format("; this CPU allows %s's: unset OPENBLAS_CORETYPE or set it to %s",
                                 advice, advice) or ""))
end
print()

local OPS = {"exp", "log", "tanh", "sigmoid", "softplus", "dsigmoid", "dtanh", "dsoftplus"}
local here = (arg[0]:match("^(.*)/[^/]*$") or ".")

local function ours(dtype)
  local n = opts.rows * opts.cols
  local x = nm.zeros(opts.rows, opts.cols, dtype)
  for i = 1, opts.rows do
    for j = 1, opts.cols do x:set(i, j, -8 + 16 * ((i - 1) * opts.cols + j - 1) / (n - 1)) end
  end
  local pos = x:clone():abs():add(0.5)
  local y = nm.zeros(opts.rows, opts.cols, dtype)
  local out = {}
  for _, op in ipairs(OPS) do
    local a = op == "log" and pos or x
    y[op](y, a)                                  -- warm-up
    local t0 = os.clock()
    for _ = 1, opts.reps do y[op](y, a) end
    out[op] = (os.clock() - t0) / opts.reps
  end
  return out
end

local function peers(dtype)
  if not opts.peers then return {} end
  local out = process.output{"env", "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", opts.python,
                             here .. "/vmath_peers.py", "--dtype", dtype, "--rows",
                             tostring(opts.rows), "--cols", tostring(opts.cols), "--reps",
                             tostring(opts.reps), "--rounds", "1"} or ""
  local ok, res = pcall(json.decode, out:match("(%b{})%s*$") or "")
  return ok and type(res) == "table" and res or {error = out:sub(1, 200)}
end

local function keep_min(best, new)
  for k, v in pairs(new or {}) do
    if type(v) == "number" and (best[k] == nil or v < best[k]) then best[k] = v end
  end
end

local n = opts.rows * opts.cols
for _, dtype in ipairs(opts.dtypes) do
  local a, t, np, err = {}, {}, {}, nil
  for _ = 1, opts.repeats do
    keep_min(a, ours(dtype))
    local p = peers(dtype)
    keep_min(t, p.torch)
    keep_min(np, p.numpy)
    err = p.error or p.torch_error or p.numpy_error or err
  end
  print(format("%s, %d x %d, 1 thread: ns per element", dtype, opts.rows, opts.cols))
  print(format("%-10s %10s %10s %10s %12s %12s", "op", "neuromic", "torch", "numpy",
               "torch/nm", "numpy/nm"))
  for _, op in ipairs(OPS) do
    local function ns(s) return s and format("%.2f", s / n * 1e9) or "-" end
    local function ratio(s) return s and format("%.2fx", s / a[op]) or "-" end
    print(format("%-10s %10s %10s %10s %12s %12s", op, ns(a[op]), ns(t[op]), ns(np[op]),
                 ratio(t[op]), ratio(np[op])))
  end
  if err then print("  peers: " .. tostring(err)) end
  print()
end
