-- experiments/demo.lua: the showcase behind `make demo` (under 2 minutes on
-- an idle 2-core machine). Runs a short version of each model family's
-- experiment, chosen so that it already shows the paper's effect where a
-- short run can (FA within a point of BP, BMVR near the regression optimum,
-- the folded autoencoder's and the microcircuit's approximations of
-- backprop), and prints, family by family, what was run (data, size,
-- length) and each figure of that quick run beside the paper's claim, in
-- 100 columns. Families whose effect needs long runs (meta-learning over
-- hundreds of episodes, the NK grid) run as pipeline checks and say so.
-- The full-scale numbers are in doc/results/ and the README's table.
local nm = require "neuromic"
local cli = require "nm.cli"
local json = require "nm.json"
local process = require "nm.process"

local opts = cli.parse(arg, {
  name = "demo",
  description = "Short runs of every model family; each figure beside the paper's claim.",
  options = {
    {"only", "list", {}, "run only these steps (names as listed by --list)", item = "string"},
    {"list", "bool", false, "list the steps and exit"},
  },
})

local root = NEUROMIC_ROOT or "."
-- the experiments run under the interpreter running the demo (the
-- sanitizer build under `make sanitize`, the installed binary of a rock)
local exe = require("nm.sweep").interpreter()
local format = string.format

local function has(...)
  local words = {...}
  return function(label)
    for _, w in ipairs(words) do if label:find(w, 1, true) then return true end end
    return false
  end
end

-- The steps, in the order a visitor should see them. `args` are added to
-- --quick; `setup` says what the quick run is; `keep` picks the summary
-- rows that mean something at this size; `caveat` replaces the rows of a
-- family whose effect a short run cannot show.
local steps = {
  {name = "baselines", script = "baselines.lua", title = "Backprop, feedback alignment, DFA",
   args = {"--dataset", "fashion", "--arch", "256", "--train-subset", "10000", "--epochs", "2"},
   setup = "Fashion-MNIST, 10,000 training and 1,000 test images, 784-256-10 ReLU, 2 epochs " ..
           "(the full run: 60,000 images, 10 epochs)",
   report = "baselines"},
  {name = "bmvr", script = "bmvr.lua", title = "BMVR gain-control networks",
   args = {"--parts", "fig3"},
   setup = "Fig. 3, linear networks: Fashion-MNIST (k = 2, its 10,000 test images) and the " ..
           "MNIST subset (k = 1, 8,000 images), 1 pass, 2 runs (the full run: 10 passes, 5 runs)",
   report = "bmvr"},
  {name = "folded_ae", script = "folded_ae.lua", title = "Energy-based folded autoencoder",
   args = {"--dataset", "fashion", "--no-bp"},
   setup = "Fashion-MNIST, 800 training images, 784-256-64, 1 epoch; both measures on 50 test " ..
           "images with the trained weights",
   keep = has("cos(", "energy rises"), report = "folded_ae"},
  {name = "microcircuit", script = "microcircuit.lua", title = "Dendritic cortical microcircuits",
   args = {"--figure", "fig1,figS1,theory"},
   setup = "Fig. 1: one input-target association, 3 s of simulated time; Fig. S1: 100 random " ..
           "patterns; theory: one update at a small apical coupling (lambda 0.009)",
   report = "microcircuit"},
  {name = "nan_nk", script = "nan_nk.lua", title = "Neurons as autoencoders on NK-model regression",
   setup = "NK grid N = 20, 100 and K = 1, 5; 4 runs of 400 hill-climbing cycles on 200 genomes",
   caveat = "a pipeline check: the paper's findings need the full grid (20 runs of 10,000 " ..
            "cycles, 960 cells: 2.4 min on 2 cores)",
   report = "nk"},
  {name = "metaplasticity", script = "metaplasticity.lua", title = "Meta-learned plasticity (10 motifs)",
   setup = "Fashion-MNIST 5-way tasks, 6 training and 4 query images per class, 4 episodes",
   caveat = "a pipeline check: meta-learning shows its effect after hundreds of episodes (6 min)",
   report = "metaplasticity"},
  {name = "rcn", script = "rcn.lua", title = "Recurrent chemical networks",
   setup = "Fashion-MNIST 5-way tasks, 6 training and 4 query images per class, 3 episodes",
   caveat = "a pipeline check: the variants differ after about 200 episodes (57 min)",
   report = "rcn"},
}

if opts.list then
  for _, s in ipairs(steps) do print(format("%-16s %s", s.name, s.title)) end
  os.exit(0)
end

local wanted = {}
for _, n in ipairs(opts.only) do wanted[n] = true end


local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

local function fmt(v, unit)
  if v == nil then return "" end
  if type(v) ~= "number" then return tostring(v) end
  if unit == "%" then return format("%.1f%%", v <= 1 and v * 100 or v) end
  if v ~= 0 and (math.abs(v) < 1e-3 or math.abs(v) >= 1e5) then return format("%.3g", v) end
  return format("%.4g", v)
end

-- Splits text into lines of at most width characters, at spaces.
local function wrap(text, width)
  local lines, line = {}, ""
  for word in tostring(text):gmatch("%S+") do
    if line == "" then line = word
    elseif #line + 1 + #word <= width then line = line .. " " .. word
    else lines[#lines + 1] = line; line = word end
  end
  if line ~= "" or #lines == 0 then lines[#lines + 1] = line end
  return lines
end

local WIDTH, LABEL, VALUE, PAPER = 100, 46, 10, 38

local function pad(s, n) return s .. string.rep(" ", math.max(0, n - #s)) end

-- One row: the label and the paper's claim wrapped in their columns.
local function print_row(label, value, paper)
  local l, p = wrap(label, LABEL), wrap(paper ~= "" and paper or "-", PAPER)
  for i = 1, math.max(#l, #p) do
    local v = i == 1 and value or ""
    print((("  " .. pad(l[i] or "", LABEL) .. "  " .. string.rep(" ", VALUE - #v) .. v ..
            "  " .. (p[i] or "")):gsub("%s+$", "")))
  end
end

local function print_text(prefix, text)
  for i, line in ipairs(wrap(text, WIDTH - #prefix)) do
    print((i == 1 and prefix or string.rep(" ", #prefix)) .. line)
  end
end

print("neuromic demo: a short run of each model family. Every number is from that short run,")
print("on the data and size stated; the paper's column is the published full-scale claim.")
print("Full-scale results and their commands: README.md and doc/results/.")

cli.guard(nm.sys.mkdir, opts.out)
local ran, plots = {}, {}
local t_start = nm.sys.clock()
for _, step in ipairs(steps) do
  if next(wanted) == nil or wanted[step.name] then
    local script = root .. "/experiments/" .. step.script
    local out = opts.out .. "/" .. step.name
    io.stderr:write(format("running %s --quick ...\n", step.script))
    local status, secs, res = "missing", 0, nil
    if exists(script) then
      local t0 = nm.sys.clock()
      -- --overwrite: an earlier demo's run (and its plots) is replaced
      local argv = {exe, script, "--quick", "--seed", tostring(opts.seed), "--out", out,
                    "--overwrite"}
      for _, a in ipairs(step.args or {}) do argv[#argv + 1] = a end
      os.remove(out .. ".log")
      local ok = process.run(argv, out .. ".log")   -- no shell
      secs = nm.sys.clock() - t0
      status = ok and "ok" or "FAILED (see " .. out .. ".log)"
      local f = io.open(out .. "/results.json")
      if f then
        local okj, r = pcall(json.decode, f:read("a"))
        f:close()
        if okj then res = r end
      end
    end
    ran[#ran + 1] = {step = step, status = status}
    print()
    local head = format("%s (experiments/%s --quick, %.0f s)", step.title, step.script, secs)
    print(head)
    print_text("  run: ", step.setup)
    if status ~= "ok" then
      print("  " .. status)
    elseif step.caveat then
      print_text("  ", step.caveat .. "; see doc/results/" .. step.report .. ".md")
    else
      local final = res and res.final or {}
      print("  " .. pad("result", LABEL) .. "  " .. string.rep(" ", VALUE - 9) .. "quick run" ..
            "  paper (full scale)")
      for _, s in ipairs(final.summary or {}) do
        if not step.keep or step.keep(s.label) then
          print_row(s.label, fmt(s.ours, s.unit), s.paper and fmt(s.paper, s.unit) or "")
          if s.note and s.note ~= "" and s.note ~= "quick run" then
            print_text("      ", "(" .. s.note .. ")")
          end
        end
      end
      print("  full-scale results: doc/results/" .. step.report .. ".md")
    end
    for _, p in ipairs(res and res.final and res.final.plots or {}) do plots[#plots + 1] = p end
  end
end

print()
print(format("%d plots written under %s/ (PNG). Total %.0f s.", #plots, opts.out, nm.sys.clock() - t_start))
local failed = 0
for _, r in ipairs(ran) do if r.status ~= "ok" then failed = failed + 1 end end
os.exit(failed == 0 and 0 or 1)
