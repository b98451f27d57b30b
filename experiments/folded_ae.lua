-- experiments/folded_ae.lua: the energy-based folded autoencoder (Dold et
-- al., poster; doc/models/folded_ae.md) learning without
-- labels on Fashion-MNIST and the MNIST subset (784-256-64 by default).
--
-- The poster's test: encode with the discriminative path (W, lambda = 1),
-- decode with the generative path (G, lambda = 0), reconstruction MSE on
-- held-out images, against PCA with the same code size (the optimal linear
-- autoencoder, exact by LAPACK) and a backprop autoencoder of the same
-- shape (784-256-64-256-784, same rate function, no biases, same optimiser,
-- batches and epochs). Images of originals and reconstructions.
-- The poster's edge-case claims, measured on a probe batch of test images
-- with the trained weights: the cosine between the rule's G update and the
-- backprop gradient of the reconstruction cost C as lambda -> 0 (hard clamp,
-- and weak nudging beta C); W learning to match the settled (generative)
-- state (the forward mismatch along training); the energy falling during
-- settling (plain Euler steps of tau du/dt = -dE/du).
--
--   ./neuromic experiments/folded_ae.lua --help
--   ./neuromic experiments/folded_ae.lua --quick             # seconds
--   ./neuromic experiments/folded_ae.lua --dataset fashion --epochs 5
--   ./neuromic experiments/folded_ae.lua --phi identity      # linear: principal angles to PCA
--   ./neuromic experiments/folded_ae.lua --quick --rules folded_ae,./my_rule.lua
--
-- --rules: circuit rules of model folded_ae, one folded autoencoder each
-- (a rule drives the pathways W, G it lists; rules/folded_ae.lua the
-- others). The first folded_ae model is "folded"; another rule's model is
-- "folded+<name>", with the same rows, measures and plots (file names and
-- results under that label).
--
-- Images are centred per pixel with the training mean (the models have no
-- biases; MSE is the same in the original [0, 1] pixel scale).

local nm = require "neuromic"
local cli = require "nm.cli"
local results = require "nm.results"
local progress = require "nm.progress"
local plot = require "nm.plot"
local data = require "nm.data"
local nn = require "nm.nn"
local optim = require "nm.optim"
local fae = require "nm.models.folded_ae"

local format = string.format

local opts = cli.parse(arg, {
  name = "folded_ae",
  description = "Energy-based folded autoencoder (Dold et al.) on Fashion-MNIST and " ..
                "MNIST: W-encode/G-decode reconstruction against PCA and a backprop autoencoder.",
  options = {
    {"dataset", "list", {"fashion", "mnist"}, "data sets: fashion, mnist (60,000 / 10,000), " ..
     "mnist-subset (8,000 / 2,000), or folders/prefixes of IDX files", item = "string",
     metavar = "LIST", quick = {"fashion", "mnist-subset"}},
    {"hidden", "list", {256, 64}, "sizes of areas 1..N (area 0 is the image)", item = "int"},
    {"phi", "string", "tanh", "rate function of areas 1..N",
     choices = {"tanh", "sigmoid", "softplus", "relu", "identity"}},
    {"lambda", "number", 0.1, "gating of forward vs backward terms during training", min = 0, max = 1},
    {"clamp", "string", "hard", "data at area 0 during training: hard (u_0 = x) or soft (beta C)",
     choices = {"hard", "soft"}},
    {"beta", "number", 1, "weight of C with --clamp soft", min = 0},
    {"form", "string", "energy", "dynamics: energy (explicit errors) or compartments (poster's)",
     choices = {"energy", "compartments"}},
    {"solver", "string", "momentum", "settling: euler (the dynamics) or momentum (same fixed points)",
     choices = {"euler", "momentum"}},
    {"dt", "number", 0.2, "settling step (units of tau)", min = 0},
    {"tol", "number", 1e-3, "settled when max |dE/du| <= tol", min = 0},
    {"max-iter", "int", 400, "iteration cap per settle", quick = 200, min = 1},
    {"epochs", "int", 5, "training epochs", quick = 1, min = 1},
    {"batch", "int", 100, "minibatch size", quick = 25, min = 1},
    {"optim", "string", "adam", "optimiser of both models (on the rules' changes for the folded AE)",
     choices = {"sgd", "adam"}},
    {"lr", "number", 1e-3, "Adam's learning rate", min = 0},
    {"eta", "number", 0.05, "eta_W = eta_G with --optim sgd; the BP autoencoder's SGD step", min = 0},
    {"train-subset", "int", 0, "train on the first N training images (0: all)", quick = 800, min = 0},
    {"test-subset", "int", 0, "test on the first N test images (0: all)", quick = 300, min = 0},
    {"bp", "bool", true, "train the backprop autoencoder of the same shape"},
    {"rules", "list", {"folded_ae"}, "circuit rules of model folded_ae, one folded AE each " ..
     "(names from rules/ or paths, e.g. ./my_rule.lua)", item = "string"},
    {"probe", "int", 200, "test images in the probe batch (alignment, settling, images)",
     quick = 50, min = 8},
    {"lambdas", "list", {0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.001}, "lambdas of the G-alignment " ..
     "measure", item = "number", quick = {0.1, 0.01}},
    {"align-beta", "number", 0.01, "beta of the weak-nudging (soft clamp) alignment curve", min = 0},
    {"align-iter", "int", 3000, "iteration cap of the alignment settles", quick = 600, min = 1},
    {"eval-every", "int", 0, "batches between evaluations (0: once per epoch)", min = 0},
    {"checkpoint-every", "int", 100, "batches between checkpoints (0: only on a signal)",
     quick = 0, min = 0},
    {"stop-after", "int", 0, "send SIGTERM to itself after N batches (tests resume)", min = 0},
    {"plot", "bool", true, "write plots (gnuplot)"},
    {"threads", "int", 1, "OpenBLAS threads (0: leave as is)", min = 0},
  },
})

if opts.threads > 0 then cli.guard("--threads " .. opts.threads, nm.blas_threads, opts.threads) end
for _, d in ipairs(opts.dataset) do cli.guard("--dataset " .. d, data.files, d) end

local run = results.open(opts, {
  dataset = table.concat(opts.dataset, ","),
  columns = {"dataset", "model", "epoch", "step"},
  checkpoint_every = opts.checkpoint_every,
})

local function arch_name(dim)
  local s = {tostring(dim)}
  for _, h in ipairs(opts.hidden) do s[#s + 1] = tostring(h) end
  return table.concat(s, "-")
end

-- The folded models: label, rule (name or path) and the pathways it drives.
local FOLDED = {}
for i, def in ipairs(cli.rules("folded_ae", opts.rules, "circuit", "folded_ae")) do
  local r = opts.rules[i]
  local label = def.name == "folded_ae" and "folded" or "folded+" .. def.name
  for _, f in ipairs(FOLDED) do
    if f.label == label then
      io.stderr:write(format("folded_ae: --rules names rule '%s' twice\n", def.name))
      os.exit(2)
    end
  end
  local drives = {}
  for _, n in ipairs(def.pathways or {def.pathway}) do drives[n] = r end
  FOLDED[#FOLDED + 1] = {label = label, rules = {W = drives.W, G = drives.G}}
end

-- Cells: per data set the backprop autoencoder (when asked) then the folded
-- autoencoders, whose cells also run the measures and images.
local cells = {}
for _, d in ipairs(opts.dataset) do
  if opts.bp then cells[#cells + 1] = {dataset = d, model = "bp"} end
  for _, f in ipairs(FOLDED) do
    cells[#cells + 1] = {dataset = d, model = f.label, folded = true, rules = f.rules}
  end
end

local loaded = {}
local function load_data(name)
  if loaded.name ~= name then
    local ds = cli.guard("--dataset " .. name, data.load, name, {
      seed = opts.seed, normalize = "center",
      subset = opts.train_subset > 0 and opts.train_subset or nil,
      test_subset = opts.test_subset > 0 and opts.test_subset or nil,
    })
    local t0 = nm.sys.clock()
    local k = opts.hidden[#opts.hidden]
    local pca = fae.pca(ds.train.X, k)
    local probe = ds.test.X:narrow(1, 1, math.min(opts.probe, ds.test.n))
    loaded = {name = name, ds = ds, pca = pca, probe = probe,
              pca_test_mse = fae.pca_mse(pca, ds.test.X),
              pca_train_mse = fae.pca_mse(pca, ds.train.X), pca_seconds = nm.sys.clock() - t0}
    -- Sum of the trailing eigenvalues / d: PCA's training MSE in closed form.
    local tail = 0
    for j = k + 1, #pca.eigenvalues do tail = tail + pca.eigenvalues[j] end
    loaded.pca_train_mse_eig = tail / ds.dim
  end
  return loaded
end

local function make_optimiser()
  if opts.optim == "adam" then return optim.adam{lr = opts.lr} end
  return nil
end

local function build(cell, ds)
  local sizes = {ds.dim}
  for _, h in ipairs(opts.hidden) do sizes[#sizes + 1] = h end
  local gen = nm.generator(opts.seed)
  local adam = opts.optim == "adam"
  if cell.model == "bp" then
    local full = {}
    for i = 1, #sizes do full[#full + 1] = sizes[i] end
    for i = #sizes - 1, 1, -1 do full[#full + 1] = sizes[i] end
    local net = nn.mlp{sizes = full, act = opts.phi, out = "identity", loss = "mse", bias = false,
                       rule = "backprop", params = {eta = adam and 1 or opts.eta}, gen = gen}
    local opt = make_optimiser()
    net:set_optimiser(opt)
    return net, opt
  end
  local net = fae.new{sizes = sizes, phi = opts.phi, lambda = opts.lambda, clamp = opts.clamp,
                      beta = opts.beta, form = opts.form, solver = opts.solver, dt = opts.dt,
                      tol = opts.tol, max_iter = opts.max_iter, gen = gen, rules = cell.rules,
                      eta_W = adam and 1 or opts.eta, eta_G = adam and 1 or opts.eta}
  local opt = make_optimiser()
  net:set_optimiser(opt)
  return net, opt
end

-- Mean squared error per pixel of a model's reconstructions of X.
local function mse_of(cell, net, X)
  if cell.folded then return net:reconstruction_mse(X, 500) end
  local n, se, first = X:size(1), 0, 1
  while first <= n do
    local rows = math.min(500, n - first + 1)
    local xb = X:narrow(1, first, rows)
    net:forward(xb)
    se = se + 2 * net:loss_value(xb) * rows            -- loss = 1/2 sum per sample
    first = first + rows
  end
  return se / (n * X:size(2))
end

local function evaluate(cell, net, L, epoch, step, seconds, acc)
  local ds = L.ds
  local ntr = math.min(ds.train.n, 2000)
  local row = {dataset = cell.dataset, model = cell.model, epoch = epoch, step = step,
               samples = step * opts.batch, time_s = seconds,
               test_mse = mse_of(cell, net, ds.test.X),
               train_mse = mse_of(cell, net, ds.train.X:narrow(1, 1, ntr)),
               pca_test_mse = L.pca_test_mse}
  if cell.folded and acc and acc.settles > 0 then
    row.iterations = acc.iterations / acc.settles
    row.nonconverged = acc.nonconverged
    row.nonconverged_fraction = acc.nonconverged / acc.samples
    row.halvings = acc.halvings
    row.energy = acc.energy / acc.settles
    row.forward_mismatch = acc.mismatch / acc.settles
  end
  if cell.folded and opts.phi == "identity" then
    local E, D = net:linear_maps()
    local P = L.pca.components:t()
    -- Principal angles to the PCA subspace: the largest, the median, and the
    -- overlap sum cos^2 / k (1 = the same subspace). PCA's last directions
    -- have nearly equal variances, so the largest angle converges slowly.
    for name, ang in pairs{decoder = fae.principal_angles(D, P),
                           encoder = fae.principal_angles(E:t(), P)} do
      local c2 = 0
      for _, a in ipairs(ang) do c2 = c2 + math.cos(math.rad(a)) ^ 2 end
      row["max_angle_" .. name] = ang[#ang]
      row["median_angle_" .. name] = ang[(#ang + 1) // 2]
      row["overlap_" .. name] = c2 / #ang
    end
  end
  return row
end

-- Rows of the probe batch reconstructed by a model, back in pixel scale.
local function probe_images(cell, net, L, n)
  local X = L.probe:narrow(1, 1, n)
  local out = nm.zeros(n, X:size(2))
  if cell.folded then net:reconstruct(X, out)
  else out:copy(net:forward(X)) end
  local ones = nm.ones(n)
  out:addr(1, ones, nm.zeros(X:size(2)):copy(L.ds.stats.mean))
  return out
end

-- The edge-case measures of the folded autoencoder on the probe batch.
local function measures(net, L, cell)
  local out = {g_alignment = {}}
  local P = L.probe
  for _, lam in ipairs(opts.lambdas) do
    for _, mode in ipairs{"hard", "soft"} do
      local o = {lambda = lam, clamp = mode, beta = opts.align_beta, max_iter = opts.align_iter,
                 tol = opts.tol}
      local cos, info = net:g_alignment(P, o)
      local row = {dataset = cell.dataset, model = "alignment", lambda = lam, clamp = mode,
                   folded = cell.model ~= "folded" and cell.model or nil,
                   beta = mode == "soft" and opts.align_beta or nil, iterations = info.iterations,
                   nonconverged = info.nonconverged, forward_mismatch = net:forward_mismatch()}
      for i = 0, net.N - 1 do row["cos_G" .. i] = cos[i] end
      run:log(row)
      out.g_alignment[#out.g_alignment + 1] = row
    end
  end
  -- The energy along the settling dynamics at the training lambda: plain
  -- Euler steps with a fixed dt = 1 / L (L: the curvature bound, so that
  -- the steps follow the continuous dynamics; no adaptation), and the
  -- momentum solver (with its restarts and step halving, as in training).
  out.energy = {}
  local rows = {}
  local L_bound = net:curvature_bound()
  local emin = math.huge
  for _, solver in ipairs{"euler", "momentum"} do
    local trace = {}
    local o = {solver = solver, trace = trace, tol = opts.tol, max_iter = opts.align_iter}
    if solver == "euler" then o.adapt, o.dt = false, math.min(opts.dt, 1 / L_bound) end
    local info = net:settle(P, o)
    -- Rises beyond float32 rounding of the energy (relative 1e-6) count;
    -- the largest rise of any size is kept too.
    local rises, biggest = 0, 0
    for k = 2, #trace do
      local up = trace[k] - trace[k - 1]
      if up > 0 then
        biggest = math.max(biggest, up)
        if up > 1e-6 * math.abs(trace[k - 1]) then rises = rises + 1 end
      end
    end
    for k = 1, #trace do
      rows[#rows + 1] = {evaluation = k, solver = solver, energy = trace[k]}
    end
    emin = math.min(emin, trace[#trace])
    out.energy[solver] = {first = trace[1], last = trace[#trace], iterations = info.iterations,
                          rises = rises, largest_rise = biggest, converged = info.converged,
                          dt = o.dt or opts.dt, curvature_bound = L_bound}
  end
  if opts.plot then
    -- E - E(end) on a log scale, floored at float32 resolution.
    local floor = 1e-6 * math.abs(emin)
    for _, r in ipairs(rows) do r.energy = math.max(r.energy - emin, floor) end
    local suffix = cell.model == "folded" and "" or "_" .. cell.model:gsub("%W", "_")
    plot.curves(rows, {out = run:path("settling_energy_" .. cell.dataset .. suffix .. ".png"),
                       x = "evaluation", y = "energy", group = "solver", logy = true, logx = true,
                       quiet = true, ylabel = "E - E(fixed point), per sample",
                       title = format("energy during settling, %s, lambda %g (Euler dt = 1/L = %.3g)",
                                      cell.dataset, opts.lambda, out.energy.euler.dt)})
  end
  -- Reconstruction from the settled (inferred) top code of the probe batch.
  net:settle(P, {max_iter = opts.align_iter})
  local Z = net.cur.U[net.N]:clone()
  local Xr = net:decode(Z)
  local d = Xr:clone():sub(P)
  out.settled_probe_mse = d:dot(d) / d:numel()
  Xr = net:reconstruct(P)
  d = Xr:clone():sub(P)
  out.encoded_probe_mse = d:dot(d) / d:numel()
  -- How far the W-path code is from the settled code.
  local Zw = net:encode(P):clone()
  Zw:sub(Z)
  out.code_mismatch = Zw:dot(Zw) / Z:dot(Z)
  return out
end

local s = run:resume()
local resumed = s ~= nil
if not s then s = {cell = 1, step = 0, final = {}} end
local final = s.final

if opts.quick then
  io.stderr:write(format("folded_ae: --quick (%d training and %d test images, %d epoch%s)\n",
                         opts.train_subset, opts.test_subset, opts.epochs,
                         opts.epochs > 1 and "s" or ""))
end

for ci = s.cell, #cells do
  local cell = cells[ci]
  local L = load_data(cell.dataset)
  local ds = L.ds
  local net, opt = build(cell, ds)
  local order = nm.generator(opts.seed + 1)
  local batches = data.batches(ds.train, opts.batch, {generator = order})
  local nb = #batches
  local first_epoch, skip, train_time = 1, 0, 0
  local label = format("%s %s", cell.dataset, cell.model)
  local fin = final[cell.dataset] or {dataset = cell.dataset, arch = arch_name(ds.dim)}
  final[cell.dataset] = fin
  local acc = {settles = 0, samples = 0, iterations = 0, nonconverged = 0, halvings = 0,
               energy = 0, mismatch = 0}
  local cstep = 0                                   -- batches of this cell
  if resumed and ci == s.cell and s.net then
    net:load_state(s.net)
    if opt then opt:load_state(s.opt) end
    first_epoch, skip, train_time, acc = s.epoch, s.batch, s.train_time, s.acc
    cstep = s.cell_step
    order:set_state(s.order_state)
  else
    run:log(evaluate(cell, net, L, 0, 0, 0, nil))
  end
  resumed = false
  local epoch, done, order_state = first_epoch, skip, nil
  local function state()
    return {cell = ci, epoch = epoch, batch = done, step = s.step, order_state = order_state,
            net = net:state(), opt = opt and opt:state() or nil, final = final,
            train_time = train_time, acc = acc, cell_step = cstep}
  end
  local bar = progress.new{total = nb * opts.epochs, label = label}
  local function reset_acc()
    for k in pairs(acc) do acc[k] = 0 end
  end
  for e = first_epoch, opts.epochs do
    epoch, order_state = e, order:state()
    done = e == first_epoch and skip or 0
    local t0 = nm.sys.clock()
    for b in batches:epoch(done) do
      if cell.folded then
        local info = net:train_batch(b.X)
        acc.settles, acc.samples = acc.settles + 1, acc.samples + b.n
        acc.iterations = acc.iterations + info.iterations
        acc.nonconverged = acc.nonconverged + info.nonconverged
        acc.halvings = acc.halvings + info.halvings
        acc.energy = acc.energy + info.energy
        acc.mismatch = acc.mismatch + net:forward_mismatch()
      else
        run:guard(net.train_batch, net, b.X, b.X)
      end
      done = done + 1
      s.step, cstep = s.step + 1, cstep + 1
      bar:update((e - 1) * nb + done)
      if opts.eval_every > 0 and done % opts.eval_every == 0 and done < nb then
        train_time = train_time + (nm.sys.clock() - t0)
        run:log(evaluate(cell, net, L, e - 1 + done / nb, cstep, train_time, acc))
        reset_acc()
        t0 = nm.sys.clock()
      end
      run:poll(s.step, state)
    end
    train_time = train_time + (nm.sys.clock() - t0)
    run:log(evaluate(cell, net, L, e, cstep, train_time, acc))
    reset_acc()
  end
  bar:finish()
  local last = run:metrics()[#run:metrics()]
  fin.pca_test_mse, fin.pca_train_mse = L.pca_test_mse, L.pca_train_mse
  fin.pca_train_mse_eigenvalues = L.pca_train_mse_eig
  fin[cell.model .. "_test_mse"] = last.test_mse
  fin[cell.model .. "_train_mse"] = last.train_mse
  fin[cell.model .. "_seconds_per_epoch"] = train_time / opts.epochs
  local nimg = math.min(8, L.probe:size(1))
  if cell.model == "bp" then
    fin.bp_images = probe_images(cell, net, L, nimg)
  else
    -- The first model's results go in fin itself, another rule's under its label.
    local top = fin
    if cell.model ~= "folded" then
      fin = top[cell.model] or {}
      top[cell.model] = fin
    end
    local suffix = cell.model == "folded" and "" or "_" .. cell.model:gsub("%W", "_")
    local st = net.stats
    fin.nonconverged = last.nonconverged
    fin.iterations_per_settle = last.iterations
    fin.forward_mismatch_first = nil
    for _, r in ipairs(run:metrics()) do
      if r.dataset == cell.dataset and r.model == cell.model and r.forward_mismatch then
        fin.forward_mismatch_first = fin.forward_mismatch_first or r.forward_mismatch
        fin.forward_mismatch_last = r.forward_mismatch
      end
    end
    for _, k in ipairs{"max_angle_decoder", "max_angle_encoder", "median_angle_decoder",
                       "median_angle_encoder", "overlap_decoder", "overlap_encoder"} do
      fin[k] = last[k]
    end
    local m = measures(net, L, cell)
    fin.g_alignment, fin.energy = m.g_alignment, m.energy
    fin.settled_probe_mse, fin.encoded_probe_mse = m.settled_probe_mse, m.encoded_probe_mse
    fin.code_mismatch = m.code_mismatch
    fin.network = net:describe()
    local crc = 0                                     -- a fingerprint of the final weights
    for _, t in ipairs(net.params) do crc = nm.crc32(t:tobytes(), crc) end
    fin.folded_weights_crc32 = crc
    local _ = st
    if opts.plot then
      -- Originals, folded AE, backprop AE, PCA: one row of each.
      local d = ds.dim
      local side = math.floor(math.sqrt(d) + 0.5)
      if side * side == d then
        local ones = nm.ones(nimg)
        local mean = nm.zeros(d):copy(ds.stats.mean)
        local orig = nm.zeros(nimg, d):copy(L.probe:narrow(1, 1, nimg))
        orig:addr(1, ones, mean)
        local pca = nm.zeros(nimg, d):copy(fae.pca_reconstruct(L.pca, L.probe:narrow(1, 1, nimg)))
        pca:addr(1, ones, mean)
        local parts = {orig, probe_images(cell, net, L, nimg)}
        if top.bp_images then parts[#parts + 1] = top.bp_images end
        parts[#parts + 1] = pca
        local grid = nm.zeros(nimg * #parts, d)
        for p, t in ipairs(parts) do grid:narrow(1, (p - 1) * nimg + 1, nimg):copy(t) end
        grid:clamp(0, 1)
        plot.images(grid, {out = run:path("reconstructions_" .. cell.dataset .. suffix .. ".png"),
                           shape = {side, side}, cols = nimg, normalize = false, range = {0, 1},
                           quiet = true, pixel = 3,
                           title = format("%s: originals, %s%s, PCA-%d", cell.dataset,
                                          cell.model == "folded" and "folded AE" or cell.model,
                                          top.bp_images and ", backprop AE" or "",
                                          opts.hidden[#opts.hidden])})
        plot.images(net.G[0]:t():narrow(1, 1, math.min(64, net.sizes[1])):contiguous(),
                    {out = run:path("generative_fields_" .. cell.dataset .. suffix .. ".png"),
                     shape = {side, side}, quiet = true, title = "columns of G_0"})
      end
      local rows = {}
      for _, r in ipairs(run:metrics()) do
        if r.dataset == cell.dataset and r.model ~= "alignment" and r.test_mse then
          rows[#rows + 1] = r
        end
      end
      plot.curves(rows, {out = run:path("test_mse_" .. cell.dataset .. suffix .. ".png"), x = "epoch",
                         y = "test_mse", group = "model", logy = true, quiet = true,
                         title = format("test reconstruction MSE, %s (PCA: %.4f)", cell.dataset,
                                        L.pca_test_mse)})
      local arows = {}
      for _, r in ipairs(fin.g_alignment) do
        for i = 0, net.N - 1 do
          arows[#arows + 1] = {lambda = r.lambda, cos = r["cos_G" .. i],
                               curve = format("G_%d, %s clamp", i, r.clamp)}
        end
      end
      plot.curves(arows, {out = run:path("g_alignment_" .. cell.dataset .. suffix .. ".png"), x = "lambda",
                          y = "cos", group = "curve", logx = true, quiet = true,
                          ylabel = "cos(dG, -grad_G C)",
                          title = format("G update vs backprop gradient of C, %s", cell.dataset)})
    end
    fin = top
  end
  fin.bp_images = cell.model == "bp" and fin.bp_images or nil
  s.cell, s.net = ci + 1, nil
end

-- Summary: one line per data set, and the demo's table.
local summary, plots = {}, {}
print(format("%-8s %-12s %10s %10s %10s %8s %8s", "dataset", "arch", "folded", "backprop", "PCA",
             "nonconv", "it/settle"))
for _, d in ipairs(opts.dataset) do
  local f = final[d]
  f.bp_images = nil
  local note = opts.quick and "quick run" or format("%d epochs", opts.epochs)
  for _, m in ipairs(FOLDED) do
    local ff = m.label == "folded" and f or f[m.label]
    print(format("%-8s %-12s %10.5f %10s %10.5f %8s %8.1f%s", d, f.arch, f[m.label .. "_test_mse"],
                 f.bp_test_mse and format("%.5f", f.bp_test_mse) or "-", f.pca_test_mse,
                 tostring(ff.nonconverged), ff.iterations_per_settle or 0 / 0,
                 m.label == "folded" and "" or "  (" .. m.label .. ")"))
    summary[#summary + 1] = {label = format("%s test MSE (W encode, G decode), %s %s",
                                            m.label == "folded" and "Folded AE" or m.label, d, f.arch),
                             ours = f[m.label .. "_test_mse"], unit = "mse", note = note}
  end
  summary[#summary + 1] = {label = format("PCA-%d test MSE (linear optimum), %s", opts.hidden[#opts.hidden], d),
                           ours = f.pca_test_mse, unit = "mse", note = "exact (LAPACK)"}
  if f.bp_test_mse then
    summary[#summary + 1] = {label = format("Backprop AE test MSE, %s same shape", d),
                             ours = f.bp_test_mse, unit = "mse", note = note}
  end
  local smallest
  for _, r in ipairs(f.g_alignment or {}) do
    if r.clamp == "soft" and (not smallest or r.lambda < smallest.lambda) then smallest = r end
  end
  if smallest then
    summary[#summary + 1] = {label = format("cos(dG_0, -grad C) at lambda %g (beta %g), %s",
                                            smallest.lambda, opts.align_beta, d),
                             ours = smallest.cos_G0, unit = "cos",
                             paper = "-> 1 as lambda -> 0 (claim)", note = "probe batch"}
  end
  if f.energy then
    summary[#summary + 1] = {label = format("energy rises along Euler settling, %s", d),
                             ours = f.energy.euler.rises, unit = "count",
                             paper = "0 (gradient dynamics)",
                             note = format("%d steps of dt = 1/L, largest rise %.2g per sample",
                                           f.energy.euler.iterations, f.energy.euler.largest_rise)}
  end
  for _, m in ipairs(FOLDED) do
    local suffix = m.label == "folded" and "" or "_" .. m.label:gsub("%W", "_")
    for _, name in ipairs{"reconstructions_", "test_mse_", "g_alignment_", "settling_energy_"} do
      local p = run:path(name .. d .. suffix .. ".png")
      local fh = io.open(p, "r")
      if fh then fh:close(); plots[#plots + 1] = p end
    end
  end
end

run:finish{datasets = final, summary = summary, plots = plots, blas_threads = nm.blas_threads(),
           lambda = opts.lambda, arch = opts.hidden}
