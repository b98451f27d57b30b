-- Dendritic cortical microcircuits (Sacramento et al. 2018): Fig. 2 (the
-- teacher-student regression) and Fig. 3 on full MNIST, every learner, 5
-- seeds, for `./neuromic experiments/reproduce.lua` (format: doc/reproduce.md).
local VARIANTS = {
  {"microcircuit", "microcircuit 784-500-500-10", 1.96},
  {"bp", "backprop, same network", 1.53},
  {"shallow", "shallow (output weights only)", 8.4},
  {"frozen", "hidden-to-hidden frozen", 2.11},
  {"topdown", "784-1000-10, learned top-down", 2.48},
  -- not in the paper: the frozen variant's reference (what freezing W_2
  -- costs exact gradients on this network)
  {"bp_frozen", "backprop with the hidden-to-hidden weights frozen"},
}

-- Fig. 2: every learner in one run per seed (same teacher, test set,
-- training stream and initial weights), so the claims are paired tests.
-- The microcircuit's rates annealed over the last quarter: the best of
-- decays 0, 0.25, 0.5, 1 on seed 6 (not one of the seeds below; 20,000
-- patterns: 0.0123, 0.0119, 0.0127, 0.0148); over the last half: the lead
-- of an earlier probe, and FA's schedule. FA's best rates (30; 40
-- annealed) were picked on the test errors of seeds 1-5
-- (doc/reports/microcircuit.md).
local FIG2 = {
  {"mc", "microcircuit", "microcircuit (full dynamics)", "below shallow", true},
  {"mc_anneal25", "microcircuit:decay=0.25", "microcircuit, annealed over the last 1/4"},
  {"mc_anneal50", "microcircuit:decay=0.5", "microcircuit, annealed over the last 1/2"},
  {"shallow", "shallow", "shallow (output weights only)"},
  {"bp", "bp", "BP, lr 20", nil, true},
  {"fa", "fa", "FA, lr 20 (default)", nil, true},
  {"fa_lr30", "fa:lr=30", "FA, lr 30 (best constant)"},
  {"fa_lr40_anneal", "fa:lr=40:decay=0.5", "FA, lr 40 annealed over the last 1/2"},
  {"fa_att", "fa_att", "FA with the attenuation, lr 100"},
}
-- (the angles and the self-predicting state per seed: the report)

-- Fig. 2 learners {name, --fig2-models item, label, paper, headline} ->
-- the --fig2-models list and a test-error measure per learner.
local function fig2_learners(rows)
  local models, measures = {}, {}
  for i, m in ipairs(rows) do
    local id = m[2]
    models[i] = id
    measures[i] = {name = m[1], label = m[3] .. ", test error", unit = "mse", paper = m[4],
                   headline = m[5],
                   get = function(results) return results.final.figures.fig2[id].test_error end}
  end
  return models, measures
end
local fig2_models, fig2_measures = fig2_learners(FIG2)

-- Fig. 2 with W_pi fixed at -W_down (the paper's Fig. 1A relation) and W_ip
-- learning from random at W_up's multiple of the paper's rates (300x, the
-- paper's ratio of W_ip to W_up[2]): W_pi's own learning, always on while a
-- target is shown, is what holds the default at FA's level (issue 19,
-- doc/reports/microcircuit.md, "Why the seeds differ"; found on seed 1,
-- checked on held-out seed 6). Not the default: W_pi then learns nothing.
local PIFIXED = {
  {"mc", "microcircuit", "microcircuit, W_pi = -W_down fixed, W_ip 300x", nil, true},
  {"fa", "fa", "FA, lr 20 (default)"},
  {"fa_lr30", "fa:lr=30", "FA, lr 30 (best constant)"},
  {"fa_lr40_anneal", "fa:lr=40:decay=0.5", "FA, lr 40 annealed over the last 1/2"},
}
local pifixed_models, pifixed_measures = fig2_learners(PIFIXED)

local measures, values = {}, {}
for i, v in ipairs(VARIANTS) do
  values[i] = v[1]
  measures[i] = {name = v[1], label = v[2] .. ", test error", where = {variants = v[1]},
                 path = "final.figures.fig3.{data}." .. v[1] .. ".test_error", scale = 100,
                 unit = "%", paper = v[3], headline = v[1] == "microcircuit" or v[1] == "bp" or nil}
end

return {
  family = "microcircuit",
  order = 30,
  title = "Dendritic cortical microcircuits",
  paper = "Sacramento, Costa, Bengio & Senn 2018, \"Dendritic cortical microcircuits approximate " ..
          "the backpropagation algorithm\" (NeurIPS)",
  report = "../reports/microcircuit.md",
  results = {
    {
      name = "fig2",
      figure = "Fig. 2: teacher-student regression 30-50-10, test error after 20,000 patterns",
      experiment = "experiments/microcircuit.lua",
      args = {"--figure=fig2", "--fig2-models=" .. table.concat(fig2_models, ",")},
      seeds = "1-5",
      quick = {seeds = "1-2"},
      estimate_s = 410,     -- measured (b31fb23): 410 s CPU per cell, ~100 s per microcircuit learner
      measures = fig2_measures,
      claims = {
        {text = "the microcircuit's error is below the shallow learner's (the paper's Fig. 2)",
         a = "mc", b = "shallow", relation = "<"},
        {text = "the microcircuit's error is below FA's at its default rate", a = "mc", b = "fa",
         relation = "<"},
        {text = "the microcircuit's error is below FA's with the same attenuation", a = "mc",
         b = "fa_att", relation = "<"},
        {text = "annealing the rates over the last quarter lowers the microcircuit's error",
         a = "mc_anneal25", b = "mc", relation = "<"},
        {text = "the annealed microcircuit's error is below FA's at its best constant rate",
         a = "mc_anneal25", b = "fa_lr30", relation = "<"},
        {text = "the annealed microcircuit's error is below annealed FA's (tuned vs tuned)",
         a = "mc_anneal25", b = "fa_lr40_anneal", relation = "<"},
        {text = "with FA's schedule (the last half annealed), the microcircuit's error is below FA's",
         a = "mc_anneal50", b = "fa_lr40_anneal", relation = "<"},
      },
    },
    {
      name = "fig2-pifixed",
      figure = "Fig. 2 with W_pi fixed at -W_down and W_ip at 300x: test error after 20,000 patterns",
      experiment = "experiments/microcircuit.lua",
      args = {"--figure=fig2", "--fig2-models=" .. table.concat(pifixed_models, ","),
              "--fig2-pi-start=mirror", "--fig2-scale-pi=0", "--fig2-scale-ip=300"},
      seeds = "1-5",
      quick = {seeds = "1-2"},
      estimate_s = 93,      -- measured (7376312): 93 s CPU per cell (the microcircuit learner; FA ~1 s each)
      measures = pifixed_measures,
      claims = {
        {text = "with W_pi fixed, the microcircuit's error is below FA's at its best constant rate",
         a = "mc", b = "fa_lr30", relation = "<"},
        {text = "with W_pi fixed, the microcircuit's error is below FA's at its default rate",
         a = "mc", b = "fa", relation = "<"},
        {text = "with W_pi fixed, the microcircuit's error is below annealed FA's",
         a = "mc", b = "fa_lr40_anneal", relation = "<"},
      },
    },
    {
      name = "fig3",
      figure = "Fig. 3: MNIST test error after 20 epochs (steady-state dynamics, minibatch 10)",
      experiment = "experiments/microcircuit.lua",
      args = {"--figure=fig3", "--datasets={data}"},
      vars = {data = "mnist"},
      -- one learner per cell (the grid axis), each over the seeds
      sets = {{"variants", values}},
      seeds = "1-5",
      quick = {vars = {data = "mnist-subset"}, seeds = "1-2"},
      estimate_s = 350,     -- extrapolated (code bf5f16f): the microcircuit learner took 0.33 ms per image
                          -- (1 epoch on 3,000 / 15,000 images: 1.8 / 5.8 CPU s), 20 x 60,000 images = 420 s; bp ~60% of it
      measures = measures,
      claims = {
        {text = "the microcircuit's error is below the shallow learner's", a = "microcircuit",
         b = "shallow", relation = "<", paired = false},
        {text = "the microcircuit comes within 0.5 points of backprop (paper: 0.43)", a = "microcircuit",
         b = "bp", relation = "within", delta = 0.5, paired = false},
        {text = "freezing the hidden-to-hidden weights costs under 0.5 points (paper: 0.15)", a = "frozen",
         b = "microcircuit", relation = "within", delta = 0.5, paired = false},
        {text = "freezing the hidden-to-hidden weights costs backprop more than 0.5 points too (ours)",
         a = "bp_frozen", b = "bp", relation = ">", delta = 0.5, paired = false},
      },
    },
  },
}
