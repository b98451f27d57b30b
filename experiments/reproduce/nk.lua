-- NK-model neuron autoencoders (Bull 2024): Figs. 5-7 and the paper's seven
-- findings, 20 runs per grid point as in the paper, for
-- `./neuromic experiments/reproduce.lua` (format: doc/reproduce.md).
return {
  family = "nk",
  order = 50,
  title = "NK-model neuron autoencoders",
  paper = "L. Bull 2024, \"Toward neuromic computing: neurons as autoencoders\" (arXiv 2403.02331)",
  report = "../reports/nk.md",
  results = {
    {
      name = "findings",
      figure = "Figs. 5-7: NAN, ANN and NN over N x K, and the seven findings",
      experiment = "experiments/nan_nk.lua",
      -- one cell: the experiment runs its own grid (N x K x network x 20
      -- runs) through the sweep runner with reproduce's --jobs
      args = {},
      jobs_arg = "jobs",
      seeds = {1},
      quick = {seeds = {1}},
      estimate_s = 900,     -- measured: 894 CPU s in the 1,440 cells (float32 climber), doc/reports/nk.md
      findings = "final.findings",
      findings_test = "Student and Welch t-tests over the 20 runs of each grid point, p < 0.05",
      measures = {},
    },
  },
}
