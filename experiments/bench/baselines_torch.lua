-- experiments/bench/baselines_torch.lua: neuromic against PyTorch (CPU)
-- on the same jobs, in the same run, at the same thread count:
--   * one epoch of a 784-256-10 ReLU (or --act sigmoid)/softmax network, minibatch 100, on
--     Fashion-MNIST's 60,000 training images, by backprop and by feedback
--     alignment (plain SGD, softmax cross-entropy);
--   * online learning (batch 1) of the same network on the first
--     --online-samples images.
-- Prints seconds, samples per second, test accuracy after training, and
-- the ratio PyTorch time / neuromic time: the fastest of --repeats runs per
-- side, the two sides alternating. A benchmark: it checks nothing.
-- PyTorch runs as /usr/bin/python3 experiments/bench/torch_mlp.py; when
-- torch is missing the PyTorch column says so and is skipped.
--
--   ./neuromic experiments/bench/baselines_torch.lua [--threads 1] [--act sigmoid] [--quick]

local nm = require "neuromic"
local cli = require "nm.cli"
local json = require "nm.json"
local data = require "nm.data"
local nn = require "nm.nn"

local format = string.format

local opts = cli.parse(arg, {
  name = "baselines_torch",
  description = "One epoch of 784-256-10 (batch 100) and online learning (batch 1), " ..
                "BP and FA, neuromic vs PyTorch on the CPU.",
  options = {
    {"threads", "int", 1, "threads for both OpenBLAS and PyTorch", min = 1},
    {"samples", "int", 60000, "training images for the minibatch job", quick = 6000, min = 100},
    {"online-samples", "int", 5000, "training images for the online job", quick = 1000, min = 1},
    {"batch", "int", 100, "minibatch size", min = 2},
    {"lr", "number", 0.1, "learning rate (both)", min = 0},
    {"act", "string", "relu", "hidden activation", choices = {"relu", "sigmoid"}},
    {"rules", "list", {"bp", "fa"}, "rules to time (bp, fa)", item = "string"},
    {"repeats", "int", 3, "timed runs per job and side; the fastest counts", quick = 1, min = 1},
    {"python", "string", "/usr/bin/python3", "python with torch"},
    {"torch", "bool", true, "run the PyTorch side"},
  },
})

nm.blas_threads(opts.threads)
local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
local RULE = {bp = "backprop", fa = "fa"}

local ds = data.load("fashion")
local Xtr, Ytr = ds.train.X, ds.train.Y

-- neuromic: seconds to train on n images in batches of `batch`.
local function ours(rule, batch, n)
  local X, Y = Xtr:narrow(1, 1, n), Ytr:narrow(1, 1, n)
  local split = {X = X, Y = Y, n = n}
  local net = nn.mlp{sizes = {784, 256, 10}, act = opts.act, out = "softmax", loss = "xent",
                     rule = RULE[rule], params = {eta = opts.lr}, gen = nm.generator(1)}
  local batches = data.batches(split, batch, {generator = nm.generator(2), shuffle = batch > 1})
  collectgarbage("collect")
  local t0 = nm.sys.clock()
  for b in batches:epoch() do net:train_batch(b.X, b.Y) end
  local seconds = nm.sys.clock() - t0
  local _, acc = net:evaluate(ds.test.X, ds.test.Y, 1000)
  return {seconds = seconds, test_accuracy = acc}
end

local process = require "nm.process"

-- PyTorch: the same job in a child process with the same thread count.
local function torch(rule, batch, n)
  if not opts.torch then return {error = "skipped (--no-torch)"} end
  local t = tostring(opts.threads)
  local out = process.output{"env", "OPENBLAS_NUM_THREADS=" .. t, "OMP_NUM_THREADS=" .. t,
                                   "MKL_NUM_THREADS=" .. t, opts.python, here .. "/torch_mlp.py",
                                   "--threads", t, "--rule", rule, "--act", opts.act,
                                   "--batch", tostring(batch),
                                   "--samples", tostring(n), "--lr", format("%.17g", opts.lr),
                                   "--data", data.fashion_dir}
  local line = out:match("(%b{})%s*$")
  local ok, res = pcall(json.decode, line or "")
  if not ok or type(res) ~= "table" then
    return {error = "no result from torch_mlp.py: " .. out:sub(1, 200):gsub("\n", " ")}
  end
  return res
end

print(format("neuromic %s vs PyTorch (CPU), %d thread%s, Fashion-MNIST, 784-256-10 %s/softmax, SGD lr %g",
             nm.version, opts.threads, opts.threads > 1 and "s" or "", opts.act, opts.lr))
print(format("%-26s %-4s %10s %12s %9s %10s %12s %9s %8s", "job", "rule", "nm s", "nm samples/s",
             "nm acc", "torch s", "torch smp/s", "torch acc", "speedup"))
local rows = {}
local jobs = {
  {name = format("epoch, batch %d", opts.batch), batch = opts.batch, n = opts.samples},
  {name = "online, batch 1", batch = 1, n = opts.online_samples},
}
for _, job in ipairs(jobs) do
  for _, rule in ipairs(opts.rules) do
    if not RULE[rule] then error("baselines_torch: unknown rule " .. rule .. " (bp, fa)") end
    -- Alternate the two sides and keep each one's fastest run, so that
    -- load from other processes hits both alike.
    local a, b = {seconds = math.huge}, {}
    for _ = 1, opts.repeats do
      local ra = ours(rule, job.batch, job.n)
      if ra.seconds < a.seconds then a = ra end
      local rb = torch(rule, job.batch, job.n)
      if rb.seconds and (not b.seconds or rb.seconds < b.seconds) then b = rb
      elseif not b.seconds then b = rb end
    end
    local speed = b.seconds and b.seconds / a.seconds or nil
    print(format("%-26s %-4s %10.3f %12.0f %9.4f %10s %12s %9s %8s", job.name .. format(" (%d)", job.n),
                 rule, a.seconds, job.n / a.seconds, a.test_accuracy,
                 b.seconds and format("%.3f", b.seconds) or "-",
                 b.seconds and format("%.0f", job.n / b.seconds) or "-",
                 b.test_accuracy and format("%.4f", b.test_accuracy) or "-",
                 speed and format("%.2fx", speed) or "-"))
    if b.error then print("  torch: " .. b.error) end
    rows[#rows + 1] = {job = job.name, rule = rule, samples = job.n, neuromic_s = a.seconds,
                       neuromic_accuracy = a.test_accuracy, torch_s = b.seconds,
                       torch_accuracy = b.test_accuracy, speedup = speed, torch_error = b.error}
  end
end
print("speedup = PyTorch seconds / neuromic seconds (> 1: neuromic faster)")
print("json " .. json.encode({threads = opts.threads, rows = rows}))
