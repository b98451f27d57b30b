-- Energy-based folded autoencoder (Dold et al.): reconstruction on MNIST
-- and Fashion-MNIST against a backprop autoencoder and PCA, 5 seeds, for
-- `./neuromic experiments/reproduce.lua` (format: doc/reproduce.md).
local function on(data, quick_data, title, headline)
  local function m(name, label, key, paper)
    return {name = name, label = label .. ", test MSE per pixel", path = "final.datasets.{data}." .. key,
            paper = paper, headline = headline and name == "folded" or nil}
  end
  return {
    name = data,
    figure = title,
    experiment = "experiments/folded_ae.lua",
    args = {"--dataset={data}"},
    vars = {data = data},
    seeds = "1-5",
    quick = {vars = {data = quick_data}, seeds = "1-2"},
    estimate_s = 420,     -- extrapolated (code bf5f16f): 1 epoch on 2,000 / 8,000 MNIST images took 17.6 /
                          -- 25.4 CPU s, so 1.3 ms per image: 5 x 60,000 images + ~15 s fixed
    measures = {
      m("folded", "folded AE 784-256-64", "folded_test_mse", "learns like backprop"),
      m("bp", "backprop AE, same shape", "bp_test_mse"),
      m("pca", "PCA-64 (optimal linear)", "pca_test_mse"),
    },
    claims = {
      {text = "the folded AE reconstructs within 10% of the backprop AE's MSE (0.001)", a = "folded",
       b = "bp", relation = "within", delta = 0.001},
    },
  }
end

return {
  family = "folded_ae",
  order = 40,
  title = "Energy-based folded autoencoder",
  paper = "Dold et al., energy-based folded autoencoder (poster)",
  report = "../reports/folded_ae.md",
  results = {
    on("mnist", "mnist-subset", "Reconstruction, MNIST, 784-256-64, 5 epochs", true),
    on("fashion", "fashion", "Reconstruction, Fashion-MNIST, 784-256-64, 5 epochs", false),
  },
}
