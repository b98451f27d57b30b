-- experiments/lib/fewshot.lua: what the few-shot meta-learning
-- experiments (experiments/metaplasticity.lua, rcn.lua) share: the data
-- set, network widths and task samplers of their options, the running
-- mean of the query accuracy, a metrics row per meta-step, and the meta
-- rules named by --rules.

local data = require "nm.data"
local rule = require "nm.rule"
local meta = require "nm.models.meta"

local fewshot = {}

local format = string.format

-- fewshot.setup(opts) -> setup, or nil and a message when opts.outputs is
-- below the data set's classes. From the options data, dtype, M, K, Q and
-- outputs: the data set (ds), the network widths of the paper (sizes:
-- input, 170, 130, 100, 70, outputs), the inner steps (steps = M K), task
-- samplers over the training and the test images (train, test) and a line
-- describing the tasks (dataset).
function fewshot.setup(opts)
  local ds = data.load(opts.data, {validation = 0, dtype = opts.dtype})
  if opts.outputs < ds.classes then
    return nil, format("--outputs %d is below the %d classes of %s", opts.outputs, ds.classes,
                       ds.name)
  end
  local o = {M = opts.M, K = opts.K, Q = opts.Q}
  return {
    ds = ds, sizes = {ds.dim, 170, 130, 100, 70, opts.outputs}, steps = opts.M * opts.K,
    train = meta.sampler(ds.train, o), test = meta.sampler(ds.test, o),
    dataset = format("%s: %d-way tasks, K = %d, Q = %d from the training images; held-out " ..
                     "episodes from the test images; %d outputs", ds.name, opts.M, opts.K,
                     opts.Q, opts.outputs),
  }
end

-- fewshot.mean(list) -> the mean of a list of numbers (0 when empty).
function fewshot.mean(list)
  local sum = 0
  for _, a in ipairs(list) do sum = sum + a end
  return sum / math.max(#list, 1)
end

-- fewshot.running_mean(recent, x, n) -> the mean of the last n values: x is
-- appended to the list recent, which keeps at most n.
function fewshot.running_mean(recent, x, n)
  recent[#recent + 1] = x
  if #recent > n then table.remove(recent, 1) end
  return fewshot.mean(recent)
end

-- fewshot.step_row(run, episode, info, accuracy_smooth, learner) -> the
-- metrics row of one meta-step (info from learner:meta_step): losses,
-- accuracies, the meta-gradient's norm before clipping (grad_norm), its
-- norm per parameter group (grad_norm_<group>), its components where the
-- learner gives them (grad_theta_<r> for the motif rule), the guards'
-- action and counts, and the meta learning rate in force (lr).
function fewshot.step_row(run, episode, info, accuracy_smooth, learner)
  local row = {run = run, episode = episode, loss = info.loss, ce = info.ce,
               accuracy = info.accuracy, accuracy_smooth = accuracy_smooth,
               grad_norm = info.grad_norm, action = info.action, skipped = learner.skipped,
               rollbacks = learner.rollbacks, lr = learner.base_lr * learner.lr_scale}
  for group, n in pairs(info.grad_norms or {}) do row["grad_norm_" .. group] = n end
  for r, v in pairs(info.grad or {}) do row["grad_theta_" .. r] = v end
  return row
end

-- fewshot.nonfinite(n) -> the set of metric keys of fewshot.step_row
-- (and of the held-out evaluations) that may be NaN or infinite for a
-- learner of n coefficients: an exploding or undefined meta-gradient, a
-- diverged network or theta. The runs record them (results.open's
-- nonfinite) instead of failing: measuring such runs is the point.
function fewshot.nonfinite(n)
  local set = {loss = true, ce = true, accuracy = true, accuracy_smooth = true, grad_norm = true,
               heldout_accuracy = true, heldout_loss = true}
  for _, group in ipairs{"theta", "P", "K", "v", "b"} do set["grad_norm_" .. group] = true end
  for r = 0, n - 1 do set["grad_theta_" .. r], set["theta_" .. r] = true, true end
  return set
end

-- fewshot.rules(list, models, who) -> the meta rule definitions named by
-- --rules (names from rules/ or paths such as ./my_rule.lua) in order;
-- models: the models they may be for (a list). On a rule that does not
-- load, is not a meta rule or is for another model: one line per problem
-- on stderr, prefixed by who, and exit status 2.
function fewshot.rules(list, models, who)
  local allowed = {}
  for _, m in ipairs(models) do allowed[m] = true end
  local defs = {}
  for i, name in ipairs(list) do
    local ok, def = pcall(rule.definition, name)
    if ok and (def.kind ~= "meta" or not allowed[def.model]) then
      ok, def = false, format("%s: rule '%s' is a %s rule for model '%s', not a meta rule " ..
                              "for model %s", name, tostring(def.name), tostring(def.kind),
                              tostring(def.model), table.concat(models, " or "))
    end
    if not ok then
      io.stderr:write(who, ": ", (tostring(def):gsub("\n", "\n" .. who .. ": ")), "\n")
      os.exit(2)
    end
    defs[i] = def
  end
  return defs
end

-- fewshot.pathway(name, who, option): checks an error pathway named on the
-- command line (nm.rule.pathway); one line on stderr and exit status 2
-- when there is none.
function fewshot.pathway(name, who, option)
  local ok, err = pcall(rule.pathway, name)
  if not ok then
    io.stderr:write(who, ": ", option, ": ", (tostring(err):gsub("\n.*", "")), "\n")
    os.exit(2)
  end
end

return fewshot
