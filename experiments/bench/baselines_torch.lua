-- experiments/bench/baselines_torch.lua: neuromic against PyTorch (CPU)
-- on the same jobs, in the same run, at the same thread count:
--   * one epoch of a 784-256-10 ReLU (or --act sigmoid)/softmax network, minibatch 100, on
--     Fashion-MNIST's 60,000 training images, by backprop and by feedback
--     alignment (plain SGD, softmax cross-entropy);
--   * online learning (batch 1) of the same network on the first
--     --online-samples images, in order (neuromic: net:train_online, each
--     layer's update fused with the next sample's forward pass); with
--     --shuffle in a random order on both sides, as a shuffled epoch
--     trains (neuromic: data.batches's Batches:epoch_order() and
--     net:train_online(X, Y, {order = ...}); PyTorch: torch.randperm, each
--     row gathered); with --per-sample neuromic takes data.batches at batch
--     1 and net:train_batch per sample instead (shuffled or not: the path
--     before train_online, for comparison);
--   * online learning (batch 1) of a deep softplus network (--deep-sizes,
--     784-170-130-100-70-47; softplus slope --deep-beta 10, Xavier-uniform
--     weights and feedback matrices, zero biases, as the meta-plasticity
--     model's network) by feedback alignment (--deep-rules) at --deep-lr
--     0.003: it learns there (test accuracy ~0.48 after 2,000 images on
--     both sides), where at --lr 0.1, slope 1 and PyTorch's init it stays
--     at chance (0.10).
-- Prints seconds (wall clock and CPU time of the process), samples per
-- second, test accuracy after training, and the ratio PyTorch time /
-- neuromic time in CPU time (the machine may be shared) and wall clock:
-- the fastest of --repeats runs per side, the two sides alternating. The
-- epoch jobs also print the sgemm-peak bound measured in the same run:
-- the epoch's multiply-adds (2 (784 256 + 256 10) + the backward's per
-- sample and layer) at the GFLOP/s of a direct 1024^3 cblas_sgemm on
-- --threads OpenBLAS threads, and the share of it reached. A benchmark: it
-- checks nothing.
-- PyTorch runs as /usr/bin/python3 experiments/bench/torch_mlp.py; when
-- torch is missing the PyTorch column says so and is skipped. At
-- --threads N > 1 it runs twice per repeat: its BLAS (OPENBLAS_NUM_THREADS)
-- at N and torch's own threads (torch.set_num_threads) at N, then at 1; the
-- setting with the faster wall clock counts, and both are printed.
--
--   ./neuromic experiments/bench/baselines_torch.lua [--threads 1] [--act sigmoid] [--quick]
--   ./neuromic experiments/bench/baselines_torch.lua --jobs-run online,deep --shuffle

local nm = require "neuromic"
local cli = require "nm.cli"
local json = require "nm.json"
local data = require "nm.data"
local nn = require "nm.nn"

local format = string.format

local opts = cli.parse(arg, {
  name = "baselines_torch",
  threads = 1,                 -- the common --threads: 1 unless given (peers at 1)
  description = "One epoch of 784-256-10 (batch 100) and online learning (batch 1), " ..
                "BP and FA, neuromic vs PyTorch on the CPU.",
  options = {
    {"samples", "int", 60000, "training images for the minibatch job", quick = 6000, min = 100},
    {"online-samples", "int", 5000, "training images for the online job", quick = 1000, min = 1},
    {"batch", "int", 100, "minibatch size", min = 2},
    {"lr", "number", 0.1, "learning rate (both)", min = 0},
    {"act", "string", "relu", "hidden activation", choices = {"relu", "sigmoid"}},
    {"rules", "list", {"bp", "fa"}, "rules to time (bp, fa)", item = "string"},
    {"jobs-run", "list", {"epoch", "online", "deep"}, "jobs to run (epoch, online, deep)",
     item = "string"},
    {"deep-sizes", "list", {784, 170, 130, 100, 70, 47}, "layer widths of the deep online job",
     item = "int"},
    {"deep-samples", "int", 2000, "training images of the deep online job", quick = 500, min = 1},
    {"deep-rules", "list", {"fa"}, "rules of the deep online job (bp, fa)", item = "string"},
    {"deep-lr", "number", 0.003, "learning rate of the deep online job (both)", min = 0},
    {"deep-beta", "number", 10, "softplus slope of the deep online job (both)", min = 0},
    {"repeats", "int", 3, "timed runs per job and side; the fastest counts", quick = 1, min = 1},
    {"python", "string", "/usr/bin/python3", "python with torch"},
    {"torch", "bool", true, "run the PyTorch side"},
    {"shuffle", "bool", false, "online jobs: the samples in a shuffled order (both sides)"},
    {"per-sample", "bool", false, "online jobs: neuromic trains by data.batches (batch 1) and " ..
     "net:train_batch per sample instead of net:train_online"},
  },
})

local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
local RULE = {bp = "backprop", fa = "fa"}

local ds = data.load("fashion")
local Xtr, Ytr = ds.train.X, ds.train.Y

-- neuromic: seconds (wall, CPU) to train on n images in batches of `batch`.
local function ours(job, rule)
  local n, batch = job.n, job.batch
  local X, Y = Xtr:narrow(1, 1, n), Ytr:narrow(1, 1, n)
  local Xte, Yte = ds.test.X, ds.test.Y
  local out = job.sizes[#job.sizes]
  if out ~= Y:size(2) then      -- a wider output layer: the 10 classes and unused units
    if out < Y:size(2) then cli.error("the output layer needs at least 10 units") end
    local function widen(T)
      local W = nm.zeros(T:size(1), out, T:dtype())
      W:narrow(2, 1, T:size(2)):copy(T)
      return W
    end
    Y, Yte = widen(Y), widen(Yte)
  end
  local split = {X = X, Y = Y, n = n}
  local act = job.beta and {job.act, beta = job.beta} or job.act
  local net = nn.mlp{sizes = job.sizes, act = act, out = "softmax", loss = "xent",
                     rule = RULE[rule], params = {eta = job.lr}, gen = nm.generator(1),
                     init = job.init}
  local via_batches = batch > 1 or opts.per_sample
  local batches = (via_batches or opts.shuffle) and
                  data.batches(split, batch, {generator = nm.generator(2), shuffle = batch > 1 or opts.shuffle})
  collectgarbage("collect")
  local t0, c0 = nm.sys.clock(), os.clock()
  if via_batches then
    for b in batches:epoch() do net:train_batch(b.X, b.Y) end
  elseif batches then  -- online, shuffled: the epoch's order through net:train_online
    net:train_online(X, Y, {order = batches:epoch_order()})
  else                 -- online: the rows in order (as the PyTorch side), net:train_online
    net:train_online(X, Y)
  end
  local seconds, cpu = nm.sys.clock() - t0, os.clock() - c0
  local _, acc = net:evaluate(Xte, Yte, 1000)
  return {seconds = seconds, cpu_seconds = cpu, test_accuracy = acc}
end

local process = require "nm.process"

-- PyTorch: the same job in a child process, its BLAS on the same thread
-- count, torch's own (intra-op) threads `intra`.
local function torch(job, rule, intra)
  if not opts.torch then return {error = "skipped (--no-torch)"} end
  local t = tostring(opts.threads)
  local sizes = {}
  for i, v in ipairs(job.sizes) do sizes[i] = tostring(v) end
  local out = process.output{"env", "OPENBLAS_NUM_THREADS=" .. t, "OMP_NUM_THREADS=" .. intra,
                                   "MKL_NUM_THREADS=" .. t, opts.python, here .. "/torch_mlp.py",
                                   "--threads", tostring(intra), "--rule", rule, "--act", job.act,
                                   "--sizes", table.concat(sizes, ","),
                                   "--batch", tostring(job.batch),
                                   "--samples", tostring(job.n), "--lr", format("%.17g", job.lr),
                                   "--beta", format("%.17g", job.beta or 1),
                                   "--init", job.init or "pytorch", "--data", data.fashion_dir,
                                   opts.shuffle and job.batch == 1 and "--shuffle" or nil}
  local line = out:match("(%b{})%s*$")
  local ok, res = pcall(json.decode, line or "")
  if not ok or type(res) ~= "table" then
    return {error = "no result from torch_mlp.py: " .. out:sub(1, 200):gsub("\n", " ")}
  end
  return res
end

-- multiply-adds per sample of one training step (forward, backward
-- through every layer but the first, weight update), times 2: flops
local function step_flops(sizes)
  local f = 0
  for l = 1, #sizes - 1 do
    local mn = sizes[l] * sizes[l + 1]
    f = f + 2 * mn * (l > 1 and 3 or 2)
  end
  return f
end

-- sgemm peak: GFLOP/s of a direct 1024^3 cblas_sgemm on `threads`
-- OpenBLAS threads, the fastest of three; at one thread in CPU time (like
-- the neuromic side's share of the bound), else wall clock.
local function sgemm_peak(threads)
  local best = math.huge
  for _ = 1, 3 do
    local c0 = os.clock()
    local wall = nm.bench_direct_gemm(1024, "float32", 10, threads)
    best = math.min(best, threads == 1 and (os.clock() - c0) * 10 / 11 or wall)
  end
  return 2 * 1024 ^ 3 * 10 / best / 1e9
end

-- The peak is measured again before every timed epoch run and the
-- fastest counts, as for the jobs themselves: one measurement at the start
-- misjudges the bound when the machine's speed drifts during the run.
local peak = sgemm_peak(opts.threads)
print(format("neuromic %s vs PyTorch (CPU), %d thread%s, Fashion-MNIST, SGD lr %g (deep: %g); " ..
             "OpenBLAS's %s kernels (PyTorch's peer inherits the environment)", nm.version, opts.threads,
             opts.threads > 1 and "s" or "", opts.lr, opts.deep_lr, nm.blas_core()))
local rows, results = {}, {}
local act_name = opts.act
local online_how = (opts.shuffle and ", shuffled" or "") .. (opts.per_sample and ", per sample" or "")
local jobs = {
  epoch = {name = format("epoch 784-256-10 %s, batch %d", act_name, opts.batch),
           batch = opts.batch, n = opts.samples, sizes = {784, 256, 10}, act = act_name,
           rules = opts.rules, lr = opts.lr},
  online = {name = format("online 784-256-10 %s, batch 1%s", act_name, online_how), batch = 1,
            n = opts.online_samples, sizes = {784, 256, 10}, act = act_name, rules = opts.rules,
            lr = opts.lr},
  deep = {name = format("online %s softplus%g, batch 1%s", table.concat(opts.deep_sizes, "-"),
                        opts.deep_beta, online_how),
          batch = 1, n = opts.deep_samples, sizes = opts.deep_sizes, act = "softplus",
          rules = opts.deep_rules, lr = opts.deep_lr, beta = opts.deep_beta, init = "xavier"},
}
for _, key in ipairs(opts.jobs_run) do
  local job = jobs[key]
  if not job then cli.error("--jobs-run: unknown job '" .. key .. "' (epoch, online, deep)") end
  for _, rule in ipairs(job.rules) do
    if not RULE[rule] then cli.error("unknown rule " .. rule .. " (bp, fa)") end
    -- Alternate the two sides and keep each one's fastest run, so that
    -- load from other processes hits both alike.
    -- At more than one thread PyTorch runs in both settings, its BLAS on
    -- --threads threads and torch's own threads at --threads or at 1 (often
    -- faster on small products); the faster setting (wall clock) counts.
    local a = {seconds = math.huge, cpu_seconds = math.huge}
    local settings = {}
    for _, intra in ipairs(opts.threads > 1 and {opts.threads, 1} or {1}) do
      settings[#settings + 1] = {intra = intra}
    end
    for _ = 1, opts.repeats do
      if key == "epoch" then peak = math.max(peak, sgemm_peak(opts.threads)) end
      local ra = ours(job, rule)
      if ra.cpu_seconds < a.cpu_seconds then a.cpu_seconds, a.test_accuracy = ra.cpu_seconds, ra.test_accuracy end
      a.seconds = math.min(a.seconds, ra.seconds)
      for _, b in ipairs(settings) do
        local rb = torch(job, rule, b.intra)
        if rb.seconds then
          b.seconds = math.min(b.seconds or math.huge, rb.seconds)
          b.cpu_seconds = math.min(b.cpu_seconds or math.huge, rb.cpu_seconds or math.huge)
          b.test_accuracy = rb.test_accuracy
        elseif not b.seconds then b.error = rb.error end
      end
    end
    local b = settings[1]
    for _, s in ipairs(settings) do
      if s.seconds and (not b.seconds or s.seconds < b.seconds) then b = s end
    end
    local x_cpu = b.cpu_seconds and b.cpu_seconds / a.cpu_seconds or nil
    local x_wall = b.seconds and b.seconds / a.seconds or nil
    local flops = key == "epoch" and step_flops(job.sizes) * job.n or nil
    results[#results + 1] = function()
    local bound = flops and flops / (peak * 1e9) or nil
    print(format("%-36s %-4s %8.3f %8.3f %9.1f %8.4f %8s %9s %8s %8s %8s %7s",
                 job.name .. format(" (%d)", job.n), rule, a.seconds, a.cpu_seconds,
                 a.cpu_seconds / job.n * 1e6, a.test_accuracy,
                 b.seconds and format("%.3f", b.seconds) or "-",
                 b.cpu_seconds and format("%.3f", b.cpu_seconds) or "-",
                 b.test_accuracy and format("%.4f", b.test_accuracy) or "-",
                 x_cpu and format("%.2fx", x_cpu) or "-", x_wall and format("%.2fx", x_wall) or "-",
                 bound and format("%.0f%%", 100 * bound /
                                  (opts.threads == 1 and a.cpu_seconds or a.seconds)) or "-"))
    if b.error then print("  torch: " .. b.error) end
    if #settings > 1 then
      local line = {}
      for _, s in ipairs(settings) do
        line[#line + 1] = format("torch %d thread%s, BLAS %d: %s s", s.intra, s.intra > 1 and "s" or "",
                                 opts.threads, s.seconds and format("%.3f", s.seconds) or "-")
      end
      print("  PyTorch settings (the faster counts): " .. table.concat(line, "; "))
    end
    return bound
    end
    rows[#rows + 1] = {job = job.name, rule = rule, samples = job.n, neuromic_s = a.seconds,
                       neuromic_cpu_s = a.cpu_seconds, neuromic_accuracy = a.test_accuracy,
                       torch_s = b.seconds, torch_cpu_s = b.cpu_seconds,
                       torch_accuracy = b.test_accuracy, torch_intra_threads = b.intra,
                       torch_blas_threads = opts.threads, speedup_cpu = x_cpu, speedup_wall = x_wall,
                       torch_error = b.error}
  end
end
print(format("%-36s %-4s %8s %8s %9s %8s %8s %9s %8s %8s %8s %7s", "job", "rule", "nm s",
             "nm cpu", "nm us/smp", "nm acc", "torch s", "torch cpu", "torch acc", "x (cpu)",
             "x (wall)", "%bound"))
for i, show in ipairs(results) do rows[i].bound_s = show() end
print(format("sgemm peak %.1f GFLOP/s (direct 1024^3, %d OpenBLAS thread%s; the fastest of the " ..
             "measurements before each timed epoch run)", peak, opts.threads,
             opts.threads > 1 and "s" or ""))
print("x = PyTorch time / neuromic time (> 1: neuromic faster); %bound = the epoch's flops at " ..
      "the sgemm peak / neuromic's seconds (CPU time at 1 thread, wall clock at more)")
print("json " .. json.encode({threads = opts.threads, shuffle = opts.shuffle, per_sample = opts.per_sample,
                             sgemm_peak_gflops = peak, blas_core = nm.blas_core(), rows = rows}))
