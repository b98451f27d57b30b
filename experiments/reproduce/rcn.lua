-- Recurrent chemical networks (McMillan): meta-test accuracy of the RCN
-- variants against the motif baseline, 5 seeds, for
-- `./neuromic experiments/reproduce.lua` (format: doc/reproduce.md).
local RUNS = {
  {"motif", "motif baseline (theta 0, 2, 9)", "the baseline"},
  {"rcn1", "RCN, L = 1", "above the baseline"},
  {"layer2", "layer-specific P K v, L = 2", "above shared"},
}
local measures, names = {}, {}
for i, r in ipairs(RUNS) do
  names[i] = r[1]
  measures[i] = {name = r[1], label = r[2] .. ", meta-test accuracy",
                 path = "final.runs." .. r[1] .. ".final_accuracy", scale = 100, unit = "%",
                 paper = r[3], headline = r[1] ~= "rcn1" or nil}
end

return {
  family = "rcn",
  order = 70,
  title = "Recurrent chemical networks",
  paper = "McMillan, recurrent chemical networks (report; EMNIST, curves only), here " ..
          "Fashion-MNIST 5-way tasks",
  report = "../reports/rcn.md",
  results = {
    {
      name = "fashion",
      figure = "Meta-test accuracy after 200 episodes, Fashion-MNIST 5-way",
      experiment = "experiments/rcn.lua",
      args = {"--runs=" .. table.concat(names, ","), "--episodes=200", "--eval-every=20",
              "--heldout=10", "--test-episodes=50"},
      seeds = "1-5",
      quick = {args = {"--runs=" .. table.concat(names, ",")}, seeds = "1-2"},
      estimate_s = 600,     -- extrapolated (code bf5f16f): motif, rcn1, layer2 over 4 / 12 episodes took
                          -- 11.8 / 28.6 CPU s: 0.7 s per episode and run, plus the evaluations
      measures = measures,
      claims = {
        {text = "RCN (L = 1) beats the motif baseline", a = "rcn1", b = "motif", relation = ">"},
        {text = "layer-specific RCN (L = 2) beats the motif baseline", a = "layer2", b = "motif",
         relation = ">"},
      },
    },
  },
}
