-- BMVR (Golkar et al. 2020): Fig. 3 and Table 1 at the paper's scale, for
-- `./neuromic experiments/reproduce.lua` (format: doc/reproduce.md).
-- Table 1's test accuracy of `method` at k hidden units, beside the paper's.
local function acc(k, method, paper, headline)
  return {name = string.format("%s_k%d", method, k),
          label = string.format("%s test accuracy, k = %d", method == "bmvr" and "BMVR" or "backprop", k),
          path = string.format("final.table1_{data}_k%d_%s_test", k, method), unit = "%",
          paper = paper, headline = headline}
end

return {
  family = "bmvr",
  order = 20,
  title = "BMVR gain-control networks",
  paper = "Golkar, Lipshutz, Bahroun, Sengupta & Chklovskii 2020, \"A simple normative network " ..
          "approximates local non-Hebbian learning in the cortex\" (NeurIPS)",
  report = "../reports/bmvr.md",
  results = {
    {
      name = "fig3",
      figure = "Fig. 3: linear objective after 10 passes (Fashion-MNIST k = 2, MNIST k = 1)",
      experiment = "experiments/bmvr.lua",
      -- one run per cell; the cells' seeds are the runs
      args = {"--parts=fig3", "--runs=1", "--fig3-mnist={data}"},
      vars = {data = "mnist"},
      seeds = "1-5",
      quick = {vars = {data = "mnist-subset"}, seeds = "1-2"},
      estimate_s = 40,      -- measured: 8 s per quick cell; 10 passes over 10k + 10k images
      measures = {
        {name = "fashion_bmvr", label = "Fashion-MNIST, BMVR", path = "final.fig3_fashion_bmvr",
         paper = "≈ 0.72 (the optimum)"},
        {name = "fashion_bp", label = "Fashion-MNIST, backprop", path = "final.fig3_fashion_backprop",
         paper = "≈ 0.72 (the optimum)"},
        {name = "fashion_opt", label = "Fashion-MNIST, exact RRR optimum", path = "final.fig3_fashion_optimum"},
        {name = "mnist_bmvr", label = "MNIST, BMVR", path = "final.fig3_mnist_bmvr", paper = "the optimum"},
        {name = "mnist_bp", label = "MNIST, backprop", path = "final.fig3_mnist_backprop", paper = "the optimum"},
        {name = "mnist_opt", label = "MNIST, exact RRR optimum", path = "final.fig3_mnist_optimum"},
      },
      claims = {
        {text = "Fashion-MNIST: BMVR ends within 0.01 of the RRR optimum", a = "fashion_bmvr",
         b = "fashion_opt", relation = "within", delta = 0.01},
        {text = "Fashion-MNIST: backprop ends within 0.01 of the RRR optimum", a = "fashion_bp",
         b = "fashion_opt", relation = "within", delta = 0.01},
        {text = "MNIST: BMVR ends within 0.01 of the RRR optimum", a = "mnist_bmvr", b = "mnist_opt",
         relation = "within", delta = 0.01},
        {text = "MNIST: backprop ends within 0.01 of the RRR optimum", a = "mnist_bp", b = "mnist_opt",
         relation = "within", delta = 0.01},
      },
    },
    {
      name = "table1",
      figure = "Table 1: ReLU networks, MNIST test accuracy (trained on the 10,000 test images)",
      experiment = "experiments/bmvr.lua",
      args = {"--parts=table1", "--datasets={data}", "--ks=16,64,256", "--no-variants"},
      vars = {data = "mnist"},
      seeds = "1-5",
      quick = {vars = {data = "mnist-subset"}, seeds = "1-2"},
      estimate_s = 150,     -- extrapolated: the full bmvr.lua (Table 1 on 8k + 10k, variants) took 161 s
      measures = {
        acc(16, "bmvr", "95.2 (k = 16 or 256)"),
        acc(16, "backprop", "95.5 (k = 16 or 256)"),
        acc(64, "bmvr", 93.6, true),
        acc(64, "backprop", 94.0, true),
        acc(256, "bmvr", "95.2 (k = 16 or 256)"),
        acc(256, "backprop", "95.5 (k = 16 or 256)"),
      },
      claims = {
        {text = "k = 16: BMVR within 1 point of backprop (paper: 0.3)", a = "bmvr_k16", b = "backprop_k16",
         relation = "within", delta = 1},
        {text = "k = 64: BMVR within 1 point of backprop (paper: 0.4)", a = "bmvr_k64", b = "backprop_k64",
         relation = "within", delta = 1},
        {text = "k = 256: BMVR within 1 point of backprop (paper: 0.3)", a = "bmvr_k256", b = "backprop_k256",
         relation = "within", delta = 1},
      },
    },
  },
}
