-- Dendritic cortical microcircuits (Sacramento et al. 2018): Fig. 3 on full
-- MNIST, every learner, 5 seeds, for `./neuromic experiments/reproduce.lua`
-- (format: doc/reproduce.md).
local VARIANTS = {
  {"microcircuit", "microcircuit 784-500-500-10", 1.96},
  {"bp", "backprop, same network", 1.53},
  {"shallow", "shallow (output weights only)", 8.4},
  {"frozen", "hidden-to-hidden frozen", 2.11},
  {"topdown", "784-1000-10, learned top-down", 2.48},
}

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
      },
    },
  },
}
