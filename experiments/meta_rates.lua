-- experiments/meta_rates.lua: meta-learns the parameters of connection
-- rules (every layer's learning rate by default; any numeric parameter a
-- rule declares, e.g. the tutorial's BCM tau) by gradient descent on their
-- logarithms, with the exact meta-gradient of nm.unroll (averaged over
-- --episodes episodes per meta-step): an episode is a
-- network drawn afresh, trained by the rule on --steps minibatches of
-- --batch Fashion-MNIST images, then scored by its cross-entropy on a
-- query batch; the gradient of that loss with respect to the parameters
-- goes through the generated C step and adjoint of the whole training.
-- Before and after, the same --eval episodes (test images, other initial
-- weights) measure the mean query loss and accuracy with the initial
-- parameters (eta = --init-eta, the others the rules' defaults) and the
-- learned ones. Every
-- rule meets the same episodes. Results: metrics.jsonl/csv (a row per
-- meta-step: rule, query loss, the parameters), results.json (per rule:
-- before, after, learned).
--
--   ./neuromic experiments/meta_rates.lua --rules fa,sign_symmetry [--quick]
--   ./neuromic experiments/meta_rates.lua --rules ./my_rules/bcm.lua --params eta,tau

local nm = require "neuromic"
local cli = require "nm.cli"
local data = require "nm.data"
local nn = require "nm.nn"
local results = require "nm.results"
local rule = require "nm.rule"
local unroll = require "nm.unroll"

local format = string.format

local opts = cli.parse(arg, {
  name = "meta_rates",
  description = "Meta-learns connection rules' parameters (learning rates, ...) by gradient " ..
                "descent through their training (nm.unroll).",
  options = {
    {"rules", "list", {"fa", "sign_symmetry"}, "connection rules (names or paths)"},
    {"params", "list", {"eta"}, "the rules' numeric parameters learned (every layer's; those " ..
     "a rule has)"},
    {"init-eta", "number", 0.01, "initial learning rate eta (0: the rule's default); the " ..
     "other parameters start at the rules' defaults", min = 0},
    {"dataset", "string", "fashion", "data set (a name or a folder of IDX files)"},
    {"hidden", "int", 100, "hidden units (784-H-10, tanh, softmax cross-entropy)", min = 1},
    {"batch", "int", 10, "minibatch size (and query batch)", min = 1},
    {"steps", "int", 50, "training minibatches per episode", quick = 10, min = 1},
    {"meta-steps", "int", 200, "meta-gradient steps", quick = 4, min = 0},
    {"episodes", "int", 4, "episodes per meta-step (their gradients averaged)", quick = 1, min = 1},
    {"meta-lr", "number", 0.05, "step on the log-parameters (the gradient clipped to norm 1)",
     min = 0},
    {"eval", "int", 20, "evaluation episodes before and after", quick = 2, min = 1},
    {"dtype", "string", "float32", "element type", choices = {"float32", "float64"}},
    {"checkpoint-every", "int", 50, "meta-steps between checkpoints", quick = 0, min = 0},
    {"stop-after", "int", 0, "send SIGTERM to itself after N meta-steps in all (tests resume)",
     min = 0},
  },
})

-- the listed parameters each rule has (checked before anything is written)
local params_of = {}
for _, r in ipairs(opts.rules) do
  local def, params = cli.guard("--rules " .. r, rule.definition, r), {}
  for _, k in ipairs(opts.params) do
    if def.params[k] and type(def.params[k].default) == "number" then params[#params + 1] = k end
  end
  if #params == 0 then
    cli.error(format("--rules %s: the rule has none of the parameters %s", r,
                     table.concat(opts.params, ", ")))
  end
  params_of[r] = params
end
cli.guard("--dataset " .. opts.dataset, data.files, opts.dataset)

local run = results.open(opts, {dataset = opts.dataset, columns = {"rule", "meta_step"}})
local ds = cli.guard("--dataset " .. opts.dataset, data.load, opts.dataset,
                     {dtype = opts.dtype, seed = opts.seed, normalize = "standardize"})

-- An episode: (steps + 1) * batch distinct training rows (the last batch
-- the query), drawn from generator g.
local function episode(g, split)
  local n = (opts.steps + 1) * opts.batch
  if n > split.n then cli.error(format("an episode needs %d images, the data set has %d", n, split.n)) end
  local e = data.take(split, g:sample(split.n, n):totable())
  local m = opts.steps * opts.batch
  return {X = e.X:narrow(1, 1, m), T = e.Y:narrow(1, 1, m),
          Xq = e.X:narrow(1, m + 1, opts.batch), Tq = e.Y:narrow(1, m + 1, opts.batch),
          labels = {table.unpack(e.labels, m + 1, n)}}
end

-- A network for rule r and its unroll (traced and compiled once per rule).
local function setup(r)
  local net = nn.mlp{sizes = {ds.dim, opts.hidden, ds.classes}, act = "tanh", out = "softmax",
                     loss = "xent", rule = r, gen = nm.generator(opts.seed), dtype = opts.dtype}
  local u = cli.guard("--rules " .. r, unroll.mlp, net, {params = params_of[r], batch = opts.batch})
  return net, u
end

-- Redraws the network's weights (its pathway's matrices stay) and its
-- rule state, from g.
local function redraw(net, g)
  for _, c in ipairs(net.conns) do
    nn.init_weights(c.W, c.b, "pytorch", g)
    local fresh = c.rule:init_state(c)
    if type(fresh) == "table" then
      for k, v in pairs(fresh) do if nm.is_tensor(v) then c.state[k]:copy(v) end end
    end
  end
end

-- Mean query loss and accuracy over the evaluation episodes (their own
-- generator: the same episodes before and after), with parameters theta.
local function evaluate(net, u, theta)
  local g = nm.generator(opts.seed + 7919)
  local loss, correct = 0, 0
  for _ = 1, opts.eval do
    redraw(net, g)
    local e = episode(g, ds.test)
    local S = u:run(theta, u:state(), e.X, e.T)
    u:load(S)
    net:forward(e.Xq)
    loss = loss + net:loss_value(e.Tq) / opts.eval
    correct = correct + net:correct(e.labels)
  end
  return loss, correct / (opts.eval * opts.batch)
end

local s = run:resume()
if not s then s = {rule = 1, meta_step = 0, done = {}} end

local function values(u, theta)
  local out = {}
  for i, name in ipairs(u.names) do out[name] = theta:get(i) end
  return out
end

for ri = s.rule, #opts.rules do
  local r = opts.rules[ri]
  local net, u = setup(r)
  if ri ~= s.rule or not s.theta then
    s.rule, s.meta_step = ri, 0
    s.g = nm.generator(opts.seed + 1)          -- every rule sees the same episodes
    s.theta = u:theta()
    for i, name in ipairs(u.names) do
      if opts.init_eta > 0 and name:match("%.eta$") then s.theta:set(i, opts.init_eta) end
    end
    local before_loss, before_acc = evaluate(net, u, s.theta)
    s.before = {loss = before_loss, accuracy = before_acc}
  end
  for step = s.meta_step + 1, opts.meta_steps do
    local loss, grad = 0, nm.zeros(s.theta:numel(), "float64")
    for _ = 1, opts.episodes do
      redraw(net, s.g)
      local e = episode(s.g, ds.train)
      local l, gr = u:gradient(e.X, e.T, e.Xq, e.Tq, {theta = s.theta})
      loss = loss + l / opts.episodes
      grad:axpy(1 / opts.episodes, gr)
    end
    -- gradient descent on log theta: d loss / d log theta = theta .* grad
    grad:mul(s.theta)
    local norm = grad:norm()
    if norm ~= norm or norm == math.huge then
      run:fail(format("%s: the meta-gradient is not finite at meta-step %d (the training " ..
                      "diverged: a smaller --init-eta)", r, step))
    end
    if norm > 1 then grad:mul(1 / norm) end
    for i = 1, s.theta:numel() do
      s.theta:set(i, s.theta:get(i) * math.exp(-opts.meta_lr * grad:get(i)))
    end
    local row = {rule = net.conns[1].rule.name, meta_step = step, query_loss = loss}
    for k, v in pairs(values(u, s.theta)) do row[k] = v end
    run:log(row)
    s.meta_step = step
    run:poll((ri - 1) * opts.meta_steps + step, function() return s end)
  end
  local after_loss, after_acc = evaluate(net, u, s.theta)
  s.done[#s.done + 1] = {rule = net.conns[1].rule.name, learned = values(u, s.theta),
                         before = s.before, after = {loss = after_loss, accuracy = after_acc}}
  s.theta = nil
end

local summary = {}
for _, d in ipairs(s.done) do
  local names = {}
  for k in pairs(d.learned) do names[#names + 1] = k end
  table.sort(names)
  local learned = {}
  for _, k in ipairs(names) do learned[#learned + 1] = format("%s %.4g", k, d.learned[k]) end
  print(format("%-14s query loss %.4f -> %.4f, accuracy %.3f -> %.3f (%d-step episodes); " ..
               "learned %s", d.rule, d.before.loss, d.after.loss, d.before.accuracy,
               d.after.accuracy, opts.steps, table.concat(learned, ", ")))
  summary[#summary + 1] = {label = d.rule .. ": evaluation query loss with the learned parameters",
                           ours = d.after.loss, note = format("initial %.4g", d.before.loss)}
end
run:finish{rules = s.done, summary = summary}
