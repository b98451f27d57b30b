-- experiments/bench/gemm.lua: GEMM throughput through the module (C:mm(A, B)
-- on n x n tensors) next to a direct OpenBLAS call on the same sizes, timed
-- in C (nm.bench_direct_gemm), for float32 and float64. Prints GFLOP/s and
-- the ratio module/direct. A benchmark, not a test: it checks nothing.
--
--   ./neuromic experiments/bench/gemm.lua [--sizes 64,256] [--quick]

local nm = require "neuromic"
local cli = require "nm.cli"

local opts = cli.parse(arg, {
  name = "gemm",
  description = "GEMM GFLOP/s through C:mm vs a direct cblas_?gemm call.",
  options = {
    { "sizes", "list", { 64, 128, 256, 512, 1024, 2048 }, "matrix sizes n (n x n times n x n)",
      item = "int", quick = { 64, 256, 512 } },
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

print(("%-8s %6s %5s %14s %14s %8s"):format("dtype", "n", "reps", "module GF/s",
                                           "direct GF/s", "ratio"))
for _, dtype in ipairs(opts.dtypes) do
  for _, n in ipairs(opts.sizes) do
    local flops = 2.0 * n * n * n
    -- ~`seconds` of work at a guessed 20 GFLOP/s, at least one call
    local reps = math.max(1, math.floor(opts.seconds * 20e9 / flops))
    local A, B, C = nm.zeros(n, n, dtype), nm.zeros(n, n, dtype), nm.zeros(n, n, dtype)
    A:fill(0.5)
    B:fill(-0.25)
    local best_module, best_direct = math.huge, math.huge
    for _ = 1, opts.repeats do
      best_direct = math.min(best_direct, nm.bench_direct_gemm(n, dtype, reps))
      best_module = math.min(best_module, module_seconds(C, A, B, reps))
    end
    local gm, gd = flops * reps / best_module / 1e9, flops * reps / best_direct / 1e9
    print(("%-8s %6d %5d %14.2f %14.2f %8.3f"):format(dtype, n, reps, gm, gd, gm / gd))
    A, B, C = nil, nil, nil
    collectgarbage()
  end
end
