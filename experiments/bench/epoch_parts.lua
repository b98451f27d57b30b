-- experiments/bench/epoch_parts.lua: where one MLP epoch's time goes at one
-- thread, against the sgemm-peak bound of baselines_torch.lua (the epoch's
-- multiply-adds at the GFLOP/s of a direct 1024^3 cblas_sgemm). Measured in
-- CPU time, alternating in one run, the fastest of --repeats rounds each:
--   * the sgemm peak;
--   * products: the epoch's matrix products alone, one batch's worth per
--     minibatch (forward X W1^T and Y1 W2^T, the hidden errors E2 M, the
--     updates W += a E^T Y through nm.kernels.plastic_outer), on fixed
--     tensors of the epoch's shapes: what the epoch would cost with nothing
--     but its BLAS calls;
--   * batches: data.batches' epoch alone (shuffle, row gather, Lua);
--   * epoch: the whole epoch, net:train_batch on each minibatch (the batch
--     step in one C call, nm.kernels.mlp_step);
--   * general: the same epoch on the general path (net.fused = false:
--     forward, backward, update from Lua), which trains to the same bits.
-- Each row prints its seconds and their share of the bound's time (100%:
-- the bound; the bench's %bound is the bound's time / the epoch's). A
-- benchmark, not a test: it prints figures, and whether the two epochs
-- ended with the same weights.
--
--   ./neuromic experiments/bench/epoch_parts.lua [--act sigmoid] [--rule fa] [--repeats 5]

local nm = require "neuromic"
local cli = require "nm.cli"
local data = require "nm.data"
local nn = require "nm.nn"

local format = string.format

local opts = cli.parse(arg, {
  name = "bench_epoch_parts",
  threads = 1,                 -- the common --threads: one thread (the bound is a 1-thread one)
  description = "Where one 784-H-10 epoch's CPU time goes at one thread: its products " ..
                "alone, data.batches alone, the whole epoch (one-call and general step), " ..
                "against the sgemm-peak bound.",
  options = {
    data.cli_option("fashion"),
    {"subset", "int", 0, "training rows (0: the whole training set)", min = 0, quick = 6000},
    {"batch", "int", 100, "minibatch size", min = 2},
    {"hidden", "int", 256, "hidden units (784-H-10)", min = 1},
    {"act", "string", "relu", "hidden activation", choices = {"relu", "sigmoid"}},
    {"rule", "string", "backprop", "learning rule", choices = {"backprop", "fa"}},
    {"repeats", "int", 5, "rounds; the fastest of each part counts", min = 1, quick = 1},
  },
})
if opts.threads ~= 1 then cli.error("--threads: this bench measures one thread") end

local ds = data.load(opts.data, {subset = opts.subset > 0 and opts.subset or nil,
                                 test_subset = 100, seed = 1})
local split = ds.train
local N, B, H = split.X:size(1), opts.batch, opts.hidden
local sizes = {split.X:size(2), H, split.Y:size(2)}
local nbatches = (N + B - 1) // B

-- the epoch's multiply-adds, times 2 (as baselines_torch.lua's step_flops)
local flops = 0
for l = 1, #sizes - 1 do flops = flops + 2 * sizes[l] * sizes[l + 1] * (l > 1 and 3 or 2) end
flops = flops * N

local function peak_seconds()
  local c0 = os.clock()
  nm.bench_direct_gemm(1024, "float32", 10, 1)
  return (os.clock() - c0) * 10 / 11            -- as baselines_torch.lua: 10 of 11 calls timed
end

-- products: fixed tensors of the epoch's shapes (the last batch's rows too)
local g = nm.generator(3)
local X = split.X:narrow(1, 1, B):clone()
local W1, W2 = nm.randn(g, H, sizes[1]):mul(0.01), nm.randn(g, sizes[3], H):mul(0.01)
local W1t, W2t = W1:t(), W2:t()
local A1, A2 = nm.zeros(B, H), nm.zeros(B, sizes[3])
local E1, E2 = nm.zeros(B, H), nm.randn(g, B, sizes[3]):mul(0.01)
local function products()
  for _ = 1, nbatches do
    A1:addmm(1, X, W1t, 0)
    A2:addmm(1, A1, W2t, 0)
    E1:addmm(1, E2, W2, 0)
    nm.kernels.plastic_outer(W1, -1e-9, E1, X)
    nm.kernels.plastic_outer(W2, -1e-9, E2, A1)
  end
end

local function make(fused)
  local net = nn.mlp{sizes = sizes, act = opts.act, out = "softmax", loss = "xent",
                     rule = opts.rule, params = {eta = 0.1}, gen = nm.generator(1)}
  if not fused then net.fused = false end
  return {net = net, batches = data.batches(split, B, {generator = nm.generator(2)})}
end
local only = data.batches(split, B, {generator = nm.generator(2)})
local one, general = make(true), make(false)
local function epoch_of(s)
  return function() for b in s.batches:epoch() do s.net:train_batch(b.X, b.Y) end end
end

local parts = {
  {"peak", peak_seconds},
  {"products", products},
  {"batches", function() for _ in only:epoch() do end end},
  {"epoch", epoch_of(one)},
  {"general", epoch_of(general)},
}
local best = {}
for _ = 1, opts.repeats do
  for _, p in ipairs(parts) do
    collectgarbage("collect")
    local c0 = os.clock()
    local t = p[2]()
    if p[1] ~= "peak" then t = os.clock() - c0 end
    best[p[1]] = math.min(best[p[1]] or math.huge, t)
  end
end

local gflops = 2 * 1024 ^ 3 * 10 / best.peak / 1e9
local bound = flops / (gflops * 1e9)
print(format("epoch %s %s/softmax, %s, batch %d, %d rows, 1 thread; sgemm peak %.1f GFLOP/s " ..
             "(OpenBLAS's %s kernels), bound %.3f s", table.concat(sizes, "-"), opts.act, opts.rule,
             B, N, gflops, nm.blas_core(), bound))
print(format("%-28s %9s %12s", "part", "CPU s", "% of bound"))
local rows = {
  {"products alone", best.products},
  {"data.batches alone", best.batches},
  {"epoch (one-call step)", best.epoch},
  {"epoch (general path)", best.general},
  {"epoch - products - batches", best.epoch - best.products - best.batches},
}
for _, r in ipairs(rows) do print(format("%-28s %9.4f %11.1f%%", r[1], r[2], 100 * r[2] / bound)) end
print(format("%%bound of the epoch: %.0f%% (one-call), %.0f%% (general)", 100 * bound / best.epoch,
             100 * bound / best.general))
local same = true
for l = 1, one.net.L do
  same = same and (one.net.conns[l].W - general.net.conns[l].W):abs():max() == 0
end
print("the two epochs ended with the same weights: " .. tostring(same))
