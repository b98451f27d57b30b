-- experiments/bench/microcircuit.lua: Euler steps per second of the full
-- microcircuit dynamics (30-50-10, Fig. 2 settings: noise, W_up/W_ip/W_pi
-- plastic with low-pass traces) in neuromic's C step, against the same loop
-- in NumPy (experiments/bench/microcircuit_numpy.py) in the same run. First
-- both run noise-free from the same weights (handed over as .npy files)
-- and their potentials and weights are compared, so the two loops are
-- known to compute the same thing. A benchmark, not a test: it prints
-- figures and checks only that agreement.
--
--   ./neuromic experiments/bench/microcircuit.lua [--quick] [--python python3]

local nm = require "neuromic"
local cli = require "nm.cli"
local mc = require "nm.models.microcircuit"
local json = require "nm.json"

local opts = cli.parse(arg, {
  name = "bench_microcircuit",
  description = "Euler steps/s of the 30-50-10 microcircuit: neuromic (C) vs NumPy.",
  options = {
    {"steps", "int", 200000, "steps timed for neuromic", quick = 20000, min = 1000},
    {"numpy-steps", "int", 20000, "steps timed for NumPy", quick = 2000, min = 100},
    {"check", "int", 3000, "noise-free steps of the agreement check", quick = 500, min = 1},
    {"python", "string", "/usr/bin/python3", "Python with NumPy"},
    {"repeats", "int", 3, "timed runs of each; the fastest counts", quick = 1, min = 1},
    {"fig2-patterns", "int", 20000, "patterns of the Fig. 2 run, for the time estimate", min = 1},
  },
})

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local sizes = {30, 50, 10}
local fig2 = {up = {0.0011875, 0.0005}, ip = 0.0011875, pi = 0.0059375}

local function new_net(seed)
  return mc.new{sizes = sizes, gen = nm.generator(seed), sigma = 0.3, eta = fig2}
end

-- ------------------------------------------------------------ agreement

local net = new_net(opts.seed)
local g = nm.generator(opts.seed + 1)
local x = nm.zeros(sizes[1], "float64"):uniform(g, -1, 1)
local target = nm.zeros(sizes[3], "float64"):uniform(g, -1, 1)
local dir = os.tmpname()
os.remove(dir)
nm.sys.mkdir(dir)
local files = {W_up1 = net.up[1].W, W_up2 = net.up[2].W, W_down = net.down[1].W,
               W_ip = net.ip[1].W, W_pi = net.pi[1].W, x = x, target = target}
for name, t in pairs(files) do nm.save_npy(dir .. "/" .. name .. ".npy", t) end

local function python(...)
  local argv = {opts.python, here .. "microcircuit_numpy.py", ...}
  local out, why = require("nm.process").output(argv)
  local j = out:match("(%b{})%s*$")
  if why or not j then
    error("bench: failed to run: " .. table.concat(argv, " ") .. ": " .. tostring(why) .. " " .. out)
  end
  return json.decode(j)
end

local py = python("--steps", "100", "--repeats", "1", "--weights", dir, "--check",
                 tostring(opts.check), "--seed", tostring(opts.seed))
for name in pairs(files) do os.remove(dir .. "/" .. name .. ".npy") end
os.remove(dir)

net:set{sigma = 0}
net:run(x, opts.check, target)
local worst = 0
local function compare(t, list)
  local ref = nm.tensor(list, "float64")
  local d = t:contiguous():view(t:numel()):clone():sub(ref):abs():max()
  if d > worst then worst = d end
end
compare(net.pyr[1].u, py.check.u1)
compare(net.pyr[2].u, py.check.u2)
compare(net.int[1].u, py.check.uI)
compare(net.up[1].W, py.check.W_up1)
compare(net.pi[1].W, py.check.W_pi)
print(string.format("agreement after %d noise-free steps: max |neuromic - NumPy| = %.2e " ..
                    "(potentials and weights)", opts.check, worst))
if worst > 1e-8 then error("bench: the two loops disagree") end

-- ------------------------------------------------------------ timing

-- Steps per second, best of `repeats` timings, by the wall clock and by
-- this process's CPU time (os.clock): on a shared machine the CPU time is
-- the fairer measure of the work, and NumPy is timed the same way.
local function rate(steps_per_call, steps)
  local n = new_net(opts.seed)
  n:run(x, 1000, target)                          -- warm-up
  local calls = math.max(1, steps // steps_per_call)
  local wall, cpu = math.huge, math.huge
  for _ = 1, opts.repeats do
    local w0, c0 = nm.sys.clock(), os.clock()
    for _ = 1, calls do n:run(x, steps_per_call, target) end
    wall, cpu = math.min(wall, nm.sys.clock() - w0), math.min(cpu, os.clock() - c0)
  end
  local done = calls * steps_per_call
  return done / wall, done / cpu
end

local c_pattern, c_pattern_cpu = rate(1000, opts.steps)
local c_step, c_step_cpu = rate(1, opts.steps // 4)
local py = python("--steps", tostring(opts.numpy_steps), "--repeats", tostring(opts.repeats),
                 "--seed", tostring(opts.seed))
local np_rate, np_cpu = py.steps_per_second, py.steps_per_cpu_second

print(string.format("\n30-50-10 full dynamics, noise sigma = 0.3, W_up/W_ip/W_pi plastic (NumPy %s)",
                    py.numpy))
print(string.format("best of %d runs; CPU = steps per second of process CPU time", opts.repeats))
print(string.format("  %-34s %10s %9s %10s %9s", "implementation", "steps/s", "vs NumPy", "CPU", "vs NumPy"))
local function row(name, w, c)
  print(string.format("  %-34s %10.0f %8.1fx %10.0f %8.1fx", name, w, w / np_rate, c, c / np_cpu))
end
row("neuromic C, one call per pattern", c_pattern, c_pattern_cpu)
row("neuromic C, one call per step", c_step, c_step_cpu)
row("NumPy (same loop)", np_rate, np_cpu)
local fig2_steps = opts.fig2_patterns * 1000
print(string.format("\nFig. 2 (%d training patterns x 1000 steps): %.0f s of Euler steps at this rate " ..
                    "(NumPy: %.0f s)", opts.fig2_patterns, fig2_steps / c_pattern, fig2_steps / np_rate))
print(string.format("target >= 20x (one call per pattern): %s (%.1fx wall, %.1fx CPU)",
                    c_pattern_cpu / np_cpu >= 20 and "met" or "NOT met", c_pattern / np_rate,
                    c_pattern_cpu / np_cpu))
