-- Backprop, feedback alignment and direct feedback alignment (the
-- baselines every rule is compared with), 5 seeds per data set, for
-- `./neuromic experiments/reproduce.lua` (format: doc/reproduce.md).

-- The results of one data set: BP, FA, DFA on 784-256-10 and 784-256-256-10.
local function on(data, quick_data, title, headline)
  local measures = {}
  for _, arch in ipairs{"256", "256-256"} do
    for _, rule in ipairs{"bp", "fa", "dfa"} do
      measures[#measures + 1] = {
        name = rule .. "_" .. arch:gsub("-", "_"),
        label = string.format("%s test accuracy, 784-%s-10", rule:upper(), arch),
        path = string.format("final.cells[arch=%s,rule=%s].test_accuracy", arch, rule),
        scale = 100, unit = "%", headline = headline and arch == "256" or nil,
        paper = rule ~= "bp" and "close to BP" or nil,
      }
    end
  end
  local claims = {}
  for _, arch in ipairs{"256", "256_256"} do
    for _, rule in ipairs{"fa", "dfa"} do
      claims[#claims + 1] = {
        text = string.format("%s within 1 point of BP, 784-%s-10", rule:upper(), arch:gsub("_", "-")),
        a = rule .. "_" .. arch, b = "bp_" .. arch, relation = "within", delta = 1,
      }
    end
  end
  return {
    name = data,
    figure = title,
    experiment = "experiments/baselines.lua",
    args = {"--dataset={data}"},
    vars = {data = data},
    seeds = "1-5",
    quick = {vars = {data = quick_data}, seeds = "1-2"},
    estimate_s = 120,   -- measured: 117 CPU s per MNIST cell (2026-12-06, code bf5f16f)
    measures = measures,
    claims = claims,
  }
end

return {
  family = "baselines",
  order = 10,
  title = "Backprop, feedback alignment, DFA",
  paper = "Lillicrap, Cownden, Tweed & Akerman 2016 (feedback alignment, Nat. Commun.); " ..
          "Nøkland 2016 (direct feedback alignment, NeurIPS)",
  report = "../reports/baselines.md",
  results = {
    on("mnist", "mnist-subset", "MNIST, 10 epochs, Adam", true),
    on("fashion", "fashion", "Fashion-MNIST, 10 epochs, Adam", false),
  },
}
