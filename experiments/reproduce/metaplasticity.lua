-- Meta-learned plasticity (Shervani-Tabar & Rosenbaum 2023): the meta-test
-- accuracy of the learned rules against the learning-rate-only baselines,
-- 5 seeds, for `./neuromic experiments/reproduce.lua` (doc/reproduce.md).
local RUNS = {
  {"fa_lr", "FA, learning rate only", "~25% (EMNIST)"},
  {"bp_lr", "BP, learning rate only", "~70% (EMNIST)"},
  {"pool_guarded", "10-motif pool, guarded", "approaches BP"},
  {"bio", "F_bio (theta 0, 2, 9)", "about as well as the pool"},
  {"ehebb", "eHebb (theta 0, 2)", nil},
  {"oja", "Oja (theta 0, 9)", nil},
}

local measures, names = {}, {}
for i, r in ipairs(RUNS) do
  names[i] = r[1]
  measures[i] = {name = r[1], label = r[2] .. ", meta-test accuracy",
                 path = "final.runs." .. r[1] .. ".final_accuracy", scale = 100, unit = "%",
                 paper = r[3], headline = r[1] == "bio" or r[1] == "bp_lr" or nil}
end

return {
  family = "metaplasticity",
  order = 60,
  title = "Meta-learned plasticity",
  paper = "Shervani-Tabar & Rosenbaum 2023, \"Meta-learning biologically plausible plasticity " ..
          "rules with random feedback pathways\" (Nat. Commun. 14, 1805); the paper used EMNIST, " ..
          "here Fashion-MNIST 5-way tasks",
  report = "../reports/metaplasticity.md",
  results = {
    {
      name = "fashion",
      figure = "Figs. 3-4: meta-test accuracy after 600 episodes, Fashion-MNIST 5-way",
      experiment = "experiments/metaplasticity.lua",
      args = {"--runs=" .. table.concat(names, ",")},
      seeds = "1-5",
      quick = {seeds = "1-2"},
      estimate_s = 360,     -- measured: 357 s for the seven runs of one seed
      measures = measures,
      claims = {
        {text = "F_bio beats FA with a learned rate only", a = "bio", b = "fa_lr", relation = ">"},
        {text = "the guarded motif pool beats FA with a learned rate only", a = "pool_guarded",
         b = "fa_lr", relation = ">"},
        {text = "the guarded motif pool comes within 5 points of BP (lr only)", a = "pool_guarded",
         b = "bp_lr", relation = "within", delta = 5},
        {text = "F_bio comes within 3 points of the guarded pool", a = "bio", b = "pool_guarded",
         relation = "within", delta = 3},
      },
    },
  },
}
