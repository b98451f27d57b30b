-- experiments/demo.lua: the showcase behind `make demo`. Runs the quick
-- version of every model family's experiment, then prints one table of our
-- figures beside the papers' and lists the plots written.
local nm = require "neuromic"
local cli = require "nm.cli"
local json = require "nm.json"
local process = require "nm.process"

local opts = cli.parse(arg, {
  name = "demo",
  description = "Quick runs of every model family, then one table of results beside the papers'.",
  options = {
    {"only", "list", {}, "run only these steps (names as listed by --list)", item = "string"},
    {"list", "bool", false, "list the steps and exit"},
  },
})

local root = NEUROMIC_ROOT or "."
local exe = root .. "/neuromic"

-- The steps, in the order a visitor should see them: the reference learners
-- first, then each model family. `args` are added to --quick.
local steps = {
  {name = "baselines", script = "baselines.lua", title = "Backprop, feedback alignment, DFA",
   args = {"--dataset", "fashion", "--arch", "256", "--train-subset", "10000", "--epochs", "2"}},
  {name = "nan_nk", script = "nan_nk.lua", title = "Neurons as autoencoders on NK-model regression"},
  {name = "folded_ae", script = "folded_ae.lua", title = "Energy-based folded autoencoder"},
  {name = "bmvr", script = "bmvr.lua", title = "BMVR gain-control networks"},
  {name = "metaplasticity", script = "metaplasticity.lua", title = "Meta-learned plasticity (10 motifs)"},
  {name = "rcn", script = "rcn.lua", title = "Recurrent chemical networks"},
  {name = "microcircuit", script = "microcircuit.lua", title = "Dendritic cortical microcircuits"},
}

if opts.list then
  for _, s in ipairs(steps) do print(string.format("%-16s %s", s.name, s.title)) end
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
  if unit == "%" then return string.format("%.1f%%", v <= 1 and v * 100 or v) end
  if v ~= 0 and (math.abs(v) < 1e-3 or math.abs(v) >= 1e5) then return string.format("%.3g", v) end
  return string.format("%.4g", v)
end

cli.guard(nm.mkdir, opts.out)
local rows, plots, ran = {}, {}, {}
local t_start = nm.clock()
for _, step in ipairs(steps) do
  if next(wanted) == nil or wanted[step.name] then
    local script = root .. "/experiments/" .. step.script
    local out = opts.out .. "/" .. step.name
    io.stderr:write(string.format("\n== %s (%s --quick)\n", step.title, step.script))
    if not exists(script) then
      io.stderr:write("   not built yet: experiments/" .. step.script .. " is missing\n")
      ran[#ran + 1] = {step = step, status = "missing"}
    else
      local t0 = nm.clock()
      -- --overwrite: an earlier demo's run (and its plots) is replaced
      local argv = {exe, script, "--quick", "--seed", tostring(opts.seed), "--out", out,
                    "--overwrite"}
      for _, a in ipairs(step.args or {}) do argv[#argv + 1] = a end
      os.remove(out .. ".log")
      local ok = process.run(argv, out .. ".log")
      local secs = nm.clock() - t0
      local res
      local f = io.open(out .. "/results.json")
      if f then
        local text = f:read("a")
        f:close()
        local okj, r = pcall(json.decode, text)
        if okj then res = r end
      end
      local status = ok and "ok" or "FAILED (see " .. out .. ".log)"
      io.stderr:write(string.format("   %s in %.1f s\n", status, secs))
      ran[#ran + 1] = {step = step, status = status, seconds = secs}
      local final = res and res.final or {}
      for _, s in ipairs(final.summary or {}) do
        rows[#rows + 1] = {family = step.name, label = s.label, ours = fmt(s.ours, s.unit),
                           paper = fmt(s.paper, s.unit), note = s.note or ""}
      end
      for _, p in ipairs(final.plots or {}) do plots[#plots + 1] = p end
    end
  end
end

-- One table of every headline figure.
local function pad(s, n) s = tostring(s) return s .. string.rep(" ", math.max(0, n - #s)) end
local widths = {family = 6, label = 6, ours = 4, paper = 5}
for _, r in ipairs(rows) do
  for k in pairs(widths) do widths[k] = math.max(widths[k], #tostring(r[k])) end
end
print()
print(pad("family", widths.family) .. "  " .. pad("result", widths.label) .. "  "
      .. pad("ours", widths.ours) .. "  " .. pad("paper", widths.paper) .. "  note")
print(string.rep("-", widths.family + widths.label + widths.ours + widths.paper + 14))
for _, r in ipairs(rows) do
  print(pad(r.family, widths.family) .. "  " .. pad(r.label, widths.label) .. "  "
        .. pad(r.ours, widths.ours) .. "  " .. pad(r.paper, widths.paper) .. "  " .. r.note)
end
print()
print("Quick runs: small networks and few steps, so 'ours' is below the full runs in README.md;")
print("each README section gives the command for the full result.")
for _, r in ipairs(ran) do
  if r.status ~= "ok" then print(string.format("  %s: %s", r.step.name, r.status)) end
end
if #plots > 0 then
  print("\nPlots written:")
  for _, p in ipairs(plots) do print("  " .. p) end
end
print(string.format("\nTotal %.0f s. Outputs under %s/", nm.clock() - t_start, opts.out))

local failed = 0
for _, r in ipairs(ran) do if r.status:match("^FAILED") then failed = failed + 1 end end
os.exit(failed == 0 and 0 or 1)
