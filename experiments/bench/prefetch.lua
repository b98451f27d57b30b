-- experiments/bench/prefetch.lua: seconds per MLP training epoch with
-- the next minibatch gathered on a worker of the thread pool while the
-- current one trains (data.batches' prefetch, nm.gather) against the same
-- epoch gathering each batch when it is served, at each thread count;
-- both measured alternately in the same run: wall time (nm.sys.clock),
-- process CPU time (all threads, os.clock) and the training thread's own
-- CPU time (nm.sys.thread_cpu). With one thread the gather only moves in
-- time (same work); with two it leaves the training thread when a worker
-- takes it (else the training thread takes it back when it needs the
-- batch), so the training thread's CPU time, and the wall time when the
-- other core is free, can drop by at most the gather's share of the
-- epoch, while the process's CPU time stays. On a loaded machine the
-- wall time shows little of it; the training thread's CPU time shows what
-- left that thread. A benchmark, not a test: it prints figures, and
-- whether both forms trained to the same bits.
--
--   ./neuromic experiments/bench/prefetch.lua [--quick] [--counts 1,2] [--repeats 5]

local nm = require "neuromic"
local cli = require "nm.cli"
local data = require "nm.data"
local nn = require "nm.nn"

local opts = cli.parse(arg, {
  name = "bench_prefetch",
  threads = 1,                 -- the common --threads: unused (see --counts)
  description = "MLP epochs with the next minibatch gathered beside the training vs " ..
                "gathered when served: wall and CPU seconds per epoch.",
  options = {
    data.cli_option("fashion"),
    {"counts", "list", {1, 2}, "thread counts to measure", item = "int"},
    {"subset", "int", 0, "training rows (0: the whole training set)", min = 0, quick = 5000},
    {"batch", "int", 100, "minibatch size", min = 1},
    {"hidden", "int", 256, "hidden units (784-H-10)", min = 1},
    {"act", "string", "sigmoid", "hidden activation", choices = {"sigmoid", "relu"}},
    {"rule", "string", "backprop", "learning rule", choices = {"backprop", "fa"}},
    {"repeats", "int", 5, "epochs per form and count; the fastest is reported", min = 1,
     quick = 2},
  },
})

for _, t in ipairs(opts.counts) do
  if t < 1 or t > 256 then
    io.stderr:write("bench_prefetch: --counts must be in [1, 256]\n")
    os.exit(2)
  end
end

local ds = data.load(opts.data, {subset = opts.subset > 0 and opts.subset or nil,
                                 test_subset = 100, seed = 1})
local clock = nm.sys.clock

-- A network and its batches, one per form, from the same seeds.
local function setup(prefetch)
  local net = nn.mlp{sizes = {784, opts.hidden, 10}, act = opts.act, out = "softmax",
                     loss = "xent", rule = opts.rule, params = {eta = 0.05},
                     gen = nm.generator(3)}
  local batches = data.batches(ds.train, opts.batch, {generator = nm.generator(4),
                                                      prefetch = prefetch})
  return {net = net, batches = batches}
end

local thread_cpu = nm.sys.thread_cpu

local function epoch(s)
  local w0, c0, t0 = clock(), os.clock(), thread_cpu()
  for b in s.batches:epoch() do s.net:train_batch(b.X, b.Y) end
  return clock() - w0, os.clock() - c0, thread_cpu() - t0
end

local function same_bits(a, b)
  for l = 1, a.net.L do
    for _, key in ipairs{"W", "b"} do
      if (a.net.conns[l][key] - b.net.conns[l][key]):abs():max() ~= 0 then return false end
    end
  end
  return true
end

print(string.format("MLP 784-%d-10 %s %s, batch %d, %d training rows (%s): seconds per " ..
                    "epoch, best of %d, the two forms alternating", opts.hidden, opts.act,
                    opts.rule, opts.batch, ds.train.X:size(1), opts.data, opts.repeats))
print("| threads | wall, gathered when served | wall, prefetched | ratio | training thread " ..
      "CPU, when served | prefetched | ratio | process CPU, when served | prefetched | ratio | " ..
      "prefetches a worker ran | same bits |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
-- The gathers alone: an epoch of batches served without training, at one
-- thread (the most the training thread can shed).
local saved = nm.threads()
nm.threads(1)
local only = data.batches(ds.train, opts.batch, {generator = nm.generator(4), prefetch = false})
local gather_s = math.huge
for _ = 1, opts.repeats do
  local c0 = thread_cpu()
  for _ in only:epoch() do end
  gather_s = math.min(gather_s, thread_cpu() - c0)
end
for _, t in ipairs(opts.counts) do
  nm.threads(t)
  local plain, pre = setup(false), setup(true)
  local best = {}                       -- wall, thread, process: [2 m - 1] served, [2 m] prefetched
  for k = 1, 6 do best[k] = math.huge end
  for r = 1, opts.repeats do
    local order = r % 2 == 1 and {plain, pre} or {pre, plain}
    for _, s in ipairs(order) do
      local w, c, th = epoch(s)
      local k = s == plain and 1 or 2
      best[k] = math.min(best[k], w)
      best[k + 2] = math.min(best[k + 2], th)
      best[k + 4] = math.min(best[k + 4], c)
    end
  end
  local runs, on_worker = pre.batches:gathers()
  print(string.format("| %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | " ..
                      "%d of %d | %s |", t, best[1], best[2], best[1] / best[2], best[3], best[4],
                      best[3] / best[4], best[5], best[6], best[5] / best[6], on_worker, runs,
                      same_bits(plain, pre) and "yes" or "NO"))
end
nm.threads(saved)
print("ratio = gathered when served / prefetched (> 1: prefetching is faster)")
print(string.format("an epoch's gathers alone: %.3f CPU s on one thread (the most a worker can " ..
                    "take off the training thread)", gather_s))
