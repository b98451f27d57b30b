-- experiments/baselines.lua: the reference learners every bio-plausible
-- rule is judged against (doc/models/baselines.md): backprop (BP),
-- feedback alignment (FA) and direct feedback alignment (DFA), on
-- Fashion-MNIST and the MNIST 10,000-digit subset, with 784-256-10 and
-- 784-256-256-10 networks. Logs learning curves (loss, accuracy, train
-- and test), the angle between each rule's hidden-layer update and BP's on
-- a fixed probe batch, and the alignment angle between feedback and
-- forward weights; plots them; prints a summary. --rules takes any
-- connection rule: a name from rules/ (sign_symmetry, hebb, ...) or a
-- file path (./my_rule.lua), run through the same loop, tables, angles,
-- plots and checkpoints as the built-in ones.
--
--   ./neuromic experiments/baselines.lua --help
--   ./neuromic experiments/baselines.lua --quick            # seconds
--   ./neuromic experiments/baselines.lua --dataset fashion --arch 256 --rules bp,fa --epochs 5
--   ./neuromic experiments/baselines.lua --quick --rules bp,fa,dfa,sign_symmetry,./my_rule.lua
--
-- Every cell (dataset x arch x rule) starts from the same weights for a
-- given seed (the feedback matrices of every pathway are drawn after
-- them) and sees the same batch order. Checkpoints every
-- --checkpoint-every batches and on SIGINT/SIGTERM; --resume continues
-- bit-identically. Non-finite weights or loss stop the run with one line
-- naming the rule, the connection and the update (--keep-going goes on).
-- At --batch 1 each epoch's order goes to net:train_online, which fuses
-- each layer's update with the next sample's forward pass where the
-- network allows (plain SGD: --optim sgd) and otherwise trains row by row:
-- the results of the batch loop, bit for bit.

local nm = require "neuromic"
local cli = require "nm.cli"
local results = require "nm.results"
local progress = require "nm.progress"
local plot = require "nm.plot"
local data = require "nm.data"
local nn = require "nm.nn"
local optim = require "nm.optim"
local measures = require "nm.measures"
local rule = require "nm.rule"
local sweep = require "nm.sweep"

local format = string.format

-- "bp" is the name results and tables have always used for backprop.
local ALIAS = {bp = "backprop"}
local MAX_WIDTH = 1 << 24   -- units per hidden layer (a 784 x 2^24 matrix is 49 GiB)
local ONLINE_STRETCH = 1000 -- samples per net:train_online call at --batch 1

local SPEC = {
  name = "baselines",
  grid = true,
  description = "Backprop, feedback alignment and direct feedback alignment on " ..
                "Fashion-MNIST and MNIST (784-256-10, 784-256-256-10). " ..
                "The grid (dataset x arch x rule) runs in this process; with --jobs > 1, " ..
                "--shard or --merge each cell is a worker process of its own (doc/sweeps.md).",
  options = {
    {"dataset", "list", {"fashion", "mnist"}, "data sets: fashion, mnist (60,000 / 10,000), " ..
     "mnist-subset (8,000 / 2,000), or folders/prefixes of IDX files", item = "string",
     metavar = "LIST", quick = {"fashion", "mnist-subset"}},
    {"arch", "list", {"256", "256-256"}, "hidden layer sizes per network, '-' between layers",
     item = "string", metavar = "LIST"},
    {"rules", "list", {"bp", "fa", "dfa"}, "connection rules: bp (backprop), fa, dfa, " ..
     "sign_symmetry, any name from rules/ or a file path (./my_rule.lua)", item = "string"},
    {"epochs", "int", 10, "training epochs per cell", quick = 1, min = 1},
    {"batch", "int", 100, "minibatch size", min = 1},
    {"lr", "number", 0.001, "learning rate (Adam's lr; the rule's eta with sgd/momentum)", min = 0},
    {"optim", "string", "adam", "optimiser", choices = {"sgd", "momentum", "adam"}},
    {"momentum", "number", 0.9, "momentum of --optim momentum", min = 0, max = 0.999},
    {"t0", "number", 0, "learning-rate decay lr/(1 + t/t0) over batches (0: none)", min = 0},
    {"act", "string", "relu", "hidden activation",
     choices = {"relu", "tanh", "sigmoid", "softplus", "identity"}},
    {"init", "string", "pytorch", "weight init (pytorch, xavier, he); FA/DFA matrices alike",
     choices = {"pytorch", "xavier", "he"}},
    {"feedback-scale", "number", 1, "scale of the FA/DFA feedback matrices", min = 0},
    {"dtype", "string", "float32", "float32 or float64", choices = {"float32", "float64"}},
    {"train-subset", "int", 0, "train on the first N training images (0: all)", quick = 2000, min = 0},
    {"test-subset", "int", 0, "test on the first N test images (0: all)", quick = 1000, min = 0},
    {"validation", "int", 0, "hold out N training images as a validation set (0: none)", min = 0},
    {"normalize", "string", "standardize", "input scaling after x/255: none, center, standardize " ..
     "(per pixel, from the training set)", choices = {"none", "center", "standardize"}},
    {"probe", "int", 1000, "training images in the fixed batch for update angles", quick = 200, min = 1},
    {"eval-every", "int", 0, "batches between evaluations (0: once per epoch)", min = 0},
    {"checkpoint-every", "int", 1000, "batches between checkpoints (0: only on a signal)",
     quick = 0, min = 0},
    {"stop-after", "int", 0, "send SIGTERM to itself after N batches (tests resume)", min = 0},
    {"keep-going", "bool", false, "go on when weights or loss become non-finite (default: stop)"},
    {"plot", "bool", true, "write plots (gnuplot)"},
  },
}
local opts = cli.parse(arg, SPEC)

-- A user's mistake: one line each, exit status 2.
local function fail(msg)
  for line in tostring(msg):gmatch("[^\n]+") do io.stderr:write("baselines: ", line, "\n") end
  os.exit(2)
end

-- Each --rules entry: its label in tables and results (the entry for
-- names, the rule's name for paths) and what nn.mlp is given.
local rule_of, seen, entries = {}, {}, {}
for i, r in ipairs(opts.rules) do
  entries[i] = r
  local ok, def = pcall(rule.definition, ALIAS[r] or r)
  if not ok then fail(def) end
  if def.kind ~= "connection" then
    fail(format("rule '%s' is a %s rule; --rules takes connection rules (%s)", def.name, def.kind,
                table.concat(rule.list("connection"), ", ")))
  end
  local label = r:find("/", 1, true) and def.name or r:gsub("%.lua$", "")
  if seen[label] then fail(format("--rules names '%s' twice", label)) end
  seen[label] = true
  opts.rules[i] = label
  rule_of[label] = ALIAS[r] or r
end
local archs = {}
for i, a in ipairs(opts.arch) do
  local sizes = {}
  for n in a:gmatch("[^%-]+") do
    local v = n:match("^%d+$") and math.tointeger(tonumber(n))
    if not v or v < 1 then
      io.stderr:write(format("baselines: bad --arch entry '%s' (e.g. 256 or 256-256)\n", a))
      os.exit(2)
    end
    if v > MAX_WIDTH then
      cli.error(format("--arch %s: a hidden layer of %s units is too large (at most %d)", a, n,
                       MAX_WIDTH))
    end
    sizes[#sizes + 1] = v
  end
  archs[i] = {name = a, hidden = sizes}
end
for _, d in ipairs(opts.dataset) do cli.guard("--dataset " .. d, data.files, d) end

local run = results.open(opts, {
  dataset = table.concat(opts.dataset, ","),
  columns = {"dataset", "arch", "rule", "epoch", "step"},
  checkpoint_every = opts.checkpoint_every,
  nonfinite = opts.keep_going,   -- rows may then hold NaN (null)
})

-- The grid, dataset-major so each data set is loaded once.
local cells = {}
for _, d in ipairs(opts.dataset) do
  for _, a in ipairs(archs) do
    for _, r in ipairs(opts.rules) do cells[#cells + 1] = {dataset = d, arch = a, rule = r} end
  end
end
-- With --shard, --merge or --jobs > 1 the grid is a sweep (nm.sweep's
-- sweep.grid) whose cells are this script on one dataset, arch and rule.
local as_sweep = opts.shard or opts.merge or (opts.jobs > 1 and #cells > 1)

local loaded = {}
local function load_data(name)
  if loaded.name ~= name then
    loaded = {name = name, ds = cli.guard("--dataset " .. name, data.load, name, {
      dtype = opts.dtype, seed = opts.seed,
      subset = opts.train_subset > 0 and opts.train_subset or nil,
      test_subset = opts.test_subset > 0 and opts.test_subset or nil,
      validation = opts.validation, normalize = opts.normalize,
    })}
  end
  return loaded.ds
end

local function build(cell, ds)
  local sizes = {ds.dim}
  for _, h in ipairs(cell.arch.hidden) do sizes[#sizes + 1] = h end
  sizes[#sizes + 1] = ds.classes
  local adam = opts.optim == "adam"
  local r = rule_of[cell.rule]
  local eta = rule.definition(r).params.eta
  local net = nn.mlp{
    sizes = sizes, act = opts.act, out = "softmax", loss = "xent",
    rule = r, params = eta and {eta = adam and 1 or opts.lr} or nil,
    gen = nm.generator(opts.seed), dtype = opts.dtype, init = opts.init,
    feedback_scale = opts.feedback_scale, keep_going = opts.keep_going,
  }
  local t0 = opts.t0 > 0 and opts.t0 or nil
  local opt
  if adam then opt = optim.adam{lr = opts.lr, t0 = t0}
  elseif opts.optim == "momentum" then opt = optim.sgd{lr = 1, momentum = opts.momentum, t0 = t0}
  elseif t0 then opt = optim.sgd{lr = 1, t0 = t0} end
  net:set_optimiser(opt)          -- plain SGD without decay: the fused rule kernels
  return net, opt
end

-- One evaluation row: loss and accuracy on train (and validation) and
-- test; for every rule but BP the angle of its update to BP's, and for
-- rules with an error pathway other than BP's the feedback angle.
local function evaluate(cell, net, ds, epoch, step, seconds)
  local row = {dataset = cell.dataset, arch = cell.arch.name, rule = cell.rule, epoch = epoch,
               step = step, samples = step * opts.batch, time_s = seconds}
  row.train_loss, row.train_accuracy = net:evaluate(ds.train.X, ds.train.Y, 1000)
  if ds.val then row.val_loss, row.val_accuracy = net:evaluate(ds.val.X, ds.val.Y, 1000) end
  row.test_loss, row.test_accuracy = net:evaluate(ds.test.X, ds.test.Y, 1000)
  if cell.rule ~= "bp" then
    local n = math.min(opts.probe, ds.train.X:size(1))
    local X, T = ds.train.X:narrow(1, 1, n), ds.train.Y:narrow(1, 1, n)
    local ua = measures.update_angles(net, X, T)
    local fa = net.feedback ~= "bp" and measures.feedback_angles(net) or {}
    for l = 1, net.L - 1 do
      row["update_angle_" .. l] = ua[l]
      row["feedback_angle_" .. l] = fa[l]
    end
  end
  return row
end

local s = run:resume()
local resumed = s ~= nil
if not s then s = {cell = 1, step = 0, batches = 0, summary = {}} end
local summary = s.summary

if opts.quick then
  io.stderr:write(format("baselines: --quick (%d training and %d test images, %d epoch%s)\n",
                         opts.train_subset, opts.test_subset, opts.epochs, opts.epochs > 1 and "s" or ""))
end

-- Trains and evaluates one cell (ci: its index in cells).
local function run_cell(ci)
  local cell = cells[ci]
  local ds = load_data(cell.dataset)
  local net, opt = cli.guard("--arch " .. cell.arch.name, build, cell, ds)
  local order = nm.generator(opts.seed + 1)
  local batches = data.batches(ds.train, opts.batch, {generator = order})
  local nb = #batches
  local first_epoch, skip, train_time = 1, 0, 0
  local label = format("%s %s %s", cell.dataset, cell.arch.name, cell.rule)
  if resumed and ci == s.cell and s.net then
    net:load_state(s.net)
    if opt then opt:load_state(s.opt) end
    first_epoch, skip, train_time = s.epoch, s.batch, s.train_time
    order:set_state(s.order_state)
  else
    s.step = 0                    -- the cell's own batch count (the rows' step)
    run:log(evaluate(cell, net, ds, 0, 0, 0))
  end
  resumed = false
  -- What a checkpoint holds (read through these upvalues).
  local epoch, done, order_state = first_epoch, skip, nil
  local function state()
    return {cell = ci, epoch = epoch, batch = done, step = s.step, batches = s.batches,
            order_state = order_state,
            net = net:state(), opt = opt and opt:state() or nil, summary = summary,
            train_time = train_time}
  end
  local bar = progress.new{total = nb * opts.epochs, label = label}
  for e = first_epoch, opts.epochs do
    epoch, order_state = e, order:state()
    done = e == first_epoch and skip or 0
    local t0 = nm.sys.clock()
    -- after n more batches of the epoch
    local function trained(n)
      done = done + n
      s.step, s.batches = s.step + n, s.batches + n
      bar:update((e - 1) * nb + done)
      if opts.eval_every > 0 and done % opts.eval_every == 0 and done < nb then
        train_time = train_time + (nm.sys.clock() - t0)
        run:log(evaluate(cell, net, ds, e - 1 + done / nb, s.step, train_time))
        t0 = nm.sys.clock()
      end
      run:poll(s.batches, state)   -- batches of the whole run: --stop-after, checkpoints
    end
    if opts.batch == 1 then
      -- Online: the epoch's order (the draw batches:epoch makes) through
      -- net:train_online, each layer's update fused with the next
      -- sample's pass where the network allows (plain SGD), in stretches
      -- that end where an evaluation, a checkpoint or --stop-after falls
      -- and every ONLINE_STRETCH samples (signals, progress): the results
      -- of training batch by batch, bit for bit.
      local online = {order = batches:epoch_order()}
      while done < nb do
        local n = math.min(nb - done, ONLINE_STRETCH)
        if opts.eval_every > 0 then n = math.min(n, opts.eval_every - done % opts.eval_every) end
        local due = run:poll_due(s.batches)
        if due then n = math.min(n, due - s.batches) end
        online.first, online.count = done + 1, n
        net:train_online(ds.train.X, ds.train.Y, online)
        trained(n)
      end
    else
      for b in batches:epoch(done) do
        net:train_batch(b.X, b.Y)
        trained(1)
      end
    end
    train_time = train_time + (nm.sys.clock() - t0)
    run:log(evaluate(cell, net, ds, e, s.step, train_time))
  end
  bar:finish()
  local last = run:metrics()[#run:metrics()]
  local fin = {dataset = cell.dataset, arch = cell.arch.name, rule = cell.rule,
               network = net:describe(), test_accuracy = last.test_accuracy,
               test_loss = last.test_loss, train_accuracy = last.train_accuracy,
               train_loss = last.train_loss, seconds_per_epoch = train_time / opts.epochs,
               train_n = ds.train.n}
  for l = 1, net.L - 1 do
    fin["update_angle_" .. l] = last["update_angle_" .. l]
    fin["feedback_angle_" .. l] = last["feedback_angle_" .. l]
  end
  -- A fingerprint of the final weights (resume checks compare it).
  local crc = 0
  for l = 1, net.L do crc = nm.crc32(net.conns[l].W:tobytes(), crc) end
  fin.weights_crc32 = crc
  if net.nonfinite then
    fin.nonfinite = net.nonfinite
    io.stderr:write(format("baselines: %s: %s (--keep-going: went on)\n", label, net.nonfinite))
  end
  summary[#summary + 1] = fin
  if opts.plot and cell.dataset == opts.dataset[1] and cell.arch == archs[1] then
    -- first-layer weights of the first data set and architecture
    local W1 = net.conns[1].W
    local side = math.floor(math.sqrt(ds.dim) + 0.5)
    if side * side == ds.dim then
      plot.images(W1:narrow(1, 1, math.min(64, W1:size(1))),
                  {out = run:path(format("fields_%s_%s_%s.png", cell.dataset, cell.arch.name,
                                         cell.rule)), shape = {side, side}, quiet = true,
                   title = "first-layer weights, " .. label})
    end
  end
  s.cell, s.net = ci + 1, nil
end

-- The cells as workers: their summaries and metric rows, in grid order,
-- and the first data set's and architecture's weight plots.
local function gather(rows)
  for _, row in ipairs(rows) do
    local res, mrows = results.read(row.dir)
    local fin = res.final.cells[1]
    summary[#summary + 1] = fin
    for _, r in ipairs(mrows) do run:log(r) end
    local name = format("fields_%s_%s_%s.png", fin.dataset, fin.arch, fin.rule)
    local f = opts.plot and fin.dataset == opts.dataset[1] and fin.arch == archs[1].name and
              io.open(row.dir .. "/" .. name, "rb")
    if f then
      local png = f:read("a")
      f:close()
      run:save(name, png)
    end
  end
end

if as_sweep then
  local names = {}
  for i, a in ipairs(archs) do names[i] = a.name end
  gather(sweep.grid(run, opts, {
    experiment = arg[0], seeds = {opts.seed},
    sets = {{name = "dataset", values = opts.dataset}, {name = "arch", values = names},
            {name = "rules", values = entries}},
    -- every other option as this run has it; --stop-after is this process's
    args = cli.argv(opts, SPEC, {dataset = true, arch = true, rules = true, stop_after = true}),
  }))
end

for ci = as_sweep and #cells + 1 or s.cell, #cells do
  local function nonfinite(e) return type(e) == "string" and e:match("^nn: .*non%-finite") end
  local ok, err = xpcall(run_cell, function(e)
    if cli.is_error(e) or nonfinite(e) then return e end
    return debug.traceback(tostring(e), 2)
  end, ci)
  if not ok then
    if cli.is_error(err) then error(err, 0) end   -- a user error or a failed run: one line
    if nonfinite(err) then
      local c = cells[ci]
      run:fail(format("%s %s %s: %s (--keep-going to go on)", c.dataset, c.arch.name, c.rule, err))
    end
    io.stderr:write("baselines: ", err, "\n")
    os.exit(1)
  end
end

-- Plots per data set and architecture: accuracy and angles against epochs.
if opts.plot then
  for _, d in ipairs(opts.dataset) do
    for _, a in ipairs(archs) do
      local rows = {}
      for _, r in ipairs(run:metrics()) do
        if r.dataset == d and r.arch == a.name then rows[#rows + 1] = r end
      end
      local tag = format("%s_%s", d:gsub("[^%w]", "_"), a.name)
      plot.curves(rows, {out = run:path("accuracy_" .. tag .. ".png"), x = "epoch",
                         y = "test_accuracy", group = "rule", quiet = true,
                         title = format("test accuracy, %s, hidden %s", d, a.name)})
      plot.curves(rows, {out = run:path("loss_" .. tag .. ".png"), x = "epoch",
                         y = "train_loss", group = "rule", logy = true, quiet = true,
                         title = format("training loss, %s, hidden %s", d, a.name)})
      for l = 1, #a.hidden do
        plot.curves(rows, {out = run:path(format("angles_%s_layer%d.png", tag, l)), x = "epoch",
                           y = {"update_angle_" .. l, "feedback_angle_" .. l}, group = "rule",
                           quiet = true, ylabel = "degrees",
                           title = format("angles to backprop, hidden layer %d, %s, hidden %s",
                                          l, d, a.name)})
      end
    end
  end
end

-- Summary on stdout.
local rw = 4
for _, r in ipairs(opts.rules) do rw = math.max(rw, #r) end
print(format("%-8s %-8s %-" .. rw .. "s %9s %9s %9s %s", "dataset", "arch", "rule", "test_acc",
             "train_acc", "s/epoch", "angles (update, feedback; per hidden layer)"))
for _, f in ipairs(summary) do
  local ang = {}
  for l = 1, 2 do
    if f["update_angle_" .. l] then
      local fb = f["feedback_angle_" .. l]
      ang[#ang + 1] = format("L%d %.1f/%s", l, f["update_angle_" .. l], fb and format("%.1f", fb) or "-")
    end
  end
  print(format("%-8s %-8s %-" .. rw .. "s %9.4f %9.4f %9.2f %s", f.dataset, f.arch, f.rule, f.test_accuracy,
               f.train_accuracy, f.seconds_per_epoch, table.concat(ang, "  ")))
end

-- Headline figures for `make demo` (one per cell) and the plots written.
local expected = {bp = "88-89% (Fashion)", fa = "a few points below BP", dfa = "a few points below BP"}
local headline = {}
for _, f in ipairs(summary) do
  headline[#headline + 1] = {
    label = format("%s test accuracy, %s, 784-%s-10", f.rule:upper(), f.dataset,
                   f.arch:gsub(",", "-")),
    ours = f.test_accuracy, unit = "%",
    paper = (f.dataset == "fashion" or f.rule ~= "bp") and expected[f.rule] or nil,
    note = format("%d epoch%s, %d training images%s", opts.epochs, opts.epochs == 1 and "" or "s",
                  f.train_n or 0,
                  f.update_angle_1 and format("; angle to BP update %.0f deg", f.update_angle_1) or ""),
  }
end
local plots = run:files("%.png$")

run:finish{cells = summary, summary = headline, plots = plots, optimiser = opts.optim, threads = opts.threads,
           variant = "feedback matrices drawn like W (init " .. opts.init .. ", scale " ..
                     opts.feedback_scale .. "); update angles on the first " .. opts.probe ..
                     " training images; DFA alignment against (W_L...W_{l+1})^T"}
