-- experiments/bench/gemm.lua: GEMM throughput through the module (C:mm(A, B)
-- on n x n tensors, and on the products of a 784-256-10 minibatch epoch)
-- next to a direct OpenBLAS call on the same sizes, timed in C
-- (nm.bench_direct_gemm), for float32 and float64. Prints GFLOP/s and the
-- ratio module/direct; with --threads N > 1 also the direct call on N
-- OpenBLAS threads (OpenBLAS's own threading, whose sums depend on the
-- count) against the module on N threads of neuromic's pool (fixed cuts:
-- the same bits for any count). A benchmark, not a test: it checks nothing.
--
--   ./neuromic experiments/bench/gemm.lua [--sizes 64,256] [--threads 2] [--quick]

local nm = require "neuromic"
local cli = require "nm.cli"

local opts = cli.parse(arg, {
  name = "gemm",
  threads = 1,                 -- the common --threads: 1 unless given
  description = "GEMM GFLOP/s through C:mm vs a direct cblas_?gemm call.",
  options = {
    { "sizes", "list", { 64, 128, 256, 512, 1024, 2048 }, "matrix sizes n (n x n times n x n)",
      item = "int", quick = { 64, 256, 512 } },
    { "shapes", "list", { "100x784x256", "256x100x784" }, "more products MxKxN ([M x K] " ..
      "times [K x N]; default: the forward and the weight update of a 784-256-10 minibatch)",
      item = "string", empty = true },
    { "dtypes", "list", { "float32", "float64" }, "element types", item = "string" },
    { "seconds", "number", 0.25, "target seconds of work per measurement", min = 0,
      quick = 0.05 },
    { "repeats", "int", 5, "measurements per case (alternating); the fastest is reported",
      quick = 1, min = 1 },
  },
})

local clock = nm.sys.clock

local function module_seconds(C, A, B, reps)
  C:mm(A, B)                                   -- warm-up, untimed
  local t0 = clock()
  for _ = 1, reps do C:mm(A, B) end
  return clock() - t0
end

local cases = {}
for _, n in ipairs(opts.sizes) do cases[#cases + 1] = {n, n, n} end
for _, sh in ipairs(opts.shapes) do
  local m, k, n = sh:match("^(%d+)x(%d+)x(%d+)$")
  if not m then cli.error("--shapes: expected MxKxN, got '" .. sh .. "'") end
  cases[#cases + 1] = {tonumber(m), tonumber(k), tonumber(n)}
end

local T = opts.threads
print(("threads %d (module: neuromic's pool; direct: OpenBLAS at 1%s)"):format(
  T, T > 1 and (" and at " .. T .. " threads") or ""))
print(("%-8s %-14s %5s %12s %12s %8s%s"):format("dtype", "m x k x n", "reps", "module GF/s",
      "direct GF/s", "ratio", T > 1 and ("  direct@" .. T .. " GF/s  ratio@" .. T) or ""))
for _, dtype in ipairs(opts.dtypes) do
  for _, c in ipairs(cases) do
    local m, k, n = c[1], c[2], c[3]
    local flops = 2.0 * m * n * k
    -- ~`seconds` of work at a guessed 20 GFLOP/s, at least one call
    local reps = math.max(1, math.floor(opts.seconds * 20e9 / flops))
    local A, B, C = nm.zeros(m, k, dtype), nm.zeros(k, n, dtype), nm.zeros(m, n, dtype)
    A:fill(0.5)
    B:fill(-0.25)
    local best_module, best_direct, best_direct_t = math.huge, math.huge, math.huge
    for _ = 1, opts.repeats do
      best_direct = math.min(best_direct, nm.bench_direct_gemm({m, k, n}, dtype, reps))
      best_module = math.min(best_module, module_seconds(C, A, B, reps))
      if T > 1 then
        best_direct_t = math.min(best_direct_t, nm.bench_direct_gemm({m, k, n}, dtype, reps, T))
      end
    end
    local gm, gd = flops * reps / best_module / 1e9, flops * reps / best_direct / 1e9
    local extra = ""
    if T > 1 then
      local gt = flops * reps / best_direct_t / 1e9
      extra = ("  %12.2f  %8.3f"):format(gt, gm / gt)
    end
    print(("%-8s %-14s %5d %12.2f %12.2f %8.3f%s"):format(dtype, ("%dx%dx%d"):format(m, k, n),
          reps, gm, gd, gm / gd, extra))
    A, B, C = nil, nil, nil
    collectgarbage()
  end
end
