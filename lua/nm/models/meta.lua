-- nm/meta.lua: meta-learning plasticity rules (Shervani-Tabar & Rosenbaum,
-- Nat. Commun. 14, 1805, 2023): few-shot tasks, episodes (fresh Xavier
-- weights, an online inner loop driven by the rule), the query loss with
-- an L1 penalty, its exact meta-gradient through the whole inner loop
-- (nm.autograd, checkpointed), Adam on the rule's coefficients, and the
-- guards that keep meta-training alive (non-finite steps skipped or rolled
-- back, gradient clipping, per-motif scaling, best theta kept by held-out
-- accuracy).
--
--   local meta = require "nm.models.meta"
--   local motifs = require "rules.motifs"
--   local ds = require("nm.data").load("fashion")
--   local tasks = meta.sampler(ds.train, {M = 5, K = 50, Q = 10})
--   local learner = meta.learner{net = motifs.net{feedback = "fa"},
--                                motifs = {0, 2, 9}, lr = 1e-3, lambda = 5e-4}
--   local g = nm.generator(1)
--   for ep = 1, 600 do
--     local info = learner:meta_step(tasks:sample(g), g)   -- loss, accuracy, theta, ...
--   end
--
-- The rule is rules/motifs.lua (fused C step by default; fused = false
-- runs the generic autograd version). Any other rule can be meta-learned
-- with nm.autograd directly: see doc/autograd.md.

local nm = require "neuromic"
local ag = require "nm.autograd"
local data = require "nm.data"
local optim = require "nm.optim"
local measures = require "nm.measures"
local motifs = require "rules.motifs"

local meta = {}

local format, huge = string.format, math.huge

local function fail(msg, level) error("meta: " .. msg, (level or 1) + 1) end

local function finite(x) return x == x and x ~= huge and x ~= -huge end

-- ---------------------------------------------------------------- tasks

local Sampler = {}
Sampler.__index = Sampler

-- meta.sampler(split, {M = 5, K = 50, Q = 10, classes = nil}) -> sampler.
-- split: a data split (data.load(...).train or .test). Each task draws M
-- distinct classes (from `classes`, a list, or all classes of the split),
-- then K training and Q query images per class without overlap. Labels
-- stay the data set's own class numbers (1-based), so the network's
-- output layer needs at least split.classes units.
function meta.sampler(split, o)
  o = o or {}
  local self = setmetatable({
    split = split, M = o.M or 5, K = o.K or 50, Q = o.Q or 10,
    by_class = data.class_rows(split),
  }, Sampler)
  self.classes = o.classes
  if not self.classes then
    self.classes = {}
    for c = 1, split.classes do
      if #self.by_class[c] > 0 then self.classes[#self.classes + 1] = c end
    end
  end
  if self.M > #self.classes then
    fail(format("sampler: M = %d classes requested, the split has %d", self.M, #self.classes), 2)
  end
  for _, c in ipairs(self.classes) do
    if #self.by_class[c] < self.K + self.Q then
      fail(format("sampler: class %d has %d images, fewer than K + Q = %d", c,
                  #self.by_class[c], self.K + self.Q), 2)
    end
  end
  local D = split.X:size(2)
  self.X = nm.zeros(self.M * self.K, D, split.X:dtype())
  self.Xq = nm.zeros(self.M * self.Q, D, split.X:dtype())
  return self
end

-- sampler:sample(g) -> task {X [M K x D] (training images in a random
-- order), labels, Xq [M Q x D], labels_q, classes}. The tensors are the
-- sampler's own buffers, overwritten by the next sample (copy to keep).
function Sampler:sample(g)
  local M, K, Q = self.M, self.K, self.Q
  local pick = g:sample(#self.classes, M)
  local rows, labels, qrows, qlabels, classes = {}, {}, {}, {}, {}
  for i = 1, M do
    local c = self.classes[math.tointeger(pick:get(i))]
    classes[i] = c
    local pool = self.by_class[c]
    local s = g:sample(#pool, K + Q)
    for k = 1, K do
      rows[#rows + 1] = pool[math.tointeger(s:get(k))]
      labels[#labels + 1] = c
    end
    for k = K + 1, K + Q do
      qrows[#qrows + 1] = pool[math.tointeger(s:get(k))]
      qlabels[#qlabels + 1] = c
    end
  end
  -- The online order: a random permutation of the M K training images.
  local perm = g:permutation(#rows)
  local orows, olabels = {}, {}
  for i = 1, #rows do
    local j = math.tointeger(perm:get(i))
    orows[i], olabels[i] = rows[j], labels[j]
  end
  self.X:index_rows(self.split.X, orows)
  self.Xq:index_rows(self.split.X, qrows)
  return {X = self.X, labels = olabels, Xq = self.Xq, labels_q = qlabels, classes = classes,
          steps = #orows}
end

-- ---------------------------------------------------------------- learner

local Learner = {}
Learner.__index = Learner

-- meta.heldout(sampler, count, seed) -> a list of fixed episodes: copies of
-- sampled tasks, each with its own seed for the initial weights, so every
-- evaluation and every run sees the same episodes. Allocates the copies.
function meta.heldout(sampler, count, seed)
  local g = nm.generator(seed)
  local set = {}
  for i = 1, count do
    local t = sampler:sample(g)
    set[i] = {X = t.X:clone(), labels = t.labels, Xq = t.Xq:clone(), labels_q = t.labels_q,
              steps = t.steps, seed = seed * 1000 + i}
  end
  return set
end

-- meta.learner(o) -> learner. Options:
--   net        motifs.net{...} (required): sizes, beta, feedback, dtype
--   motifs     0-based indices of the motifs whose theta is meta-learned
--              (default {0}); the others stay at their initial value
--   theta0     initial theta: {[r] = value} (default {[0] = 1e-3})
--   lr         Adam learning rate (1e-3); beta1, beta2, eps as in nm.optim
--   lambda     L1 penalty on theta (0)
--   scale      per-motif scale s_r: theta_r = s_r phi_r and Adam moves phi
--              ({[r] = s}, default 1 each)
--   clip       clip the meta-gradient (of phi) to this Euclidean norm (nil: off)
--   guard      "none" (a non-finite loss or gradient still updates, as
--              plain meta-training would), "skip" (no update, counted),
--              "rollback" (default: no update; phi and Adam's state go back
--              to the last state marked good by learner:mark_good(), or
--              without one to the state before the previous update, and
--              the learning rate is multiplied by rollback_decay; counted)
--   rollback_decay  learning-rate factor per rollback (0.5)
--   segment    checkpoint segment length (default ceil(sqrt(steps)))
--   mode       how the inner loop is differentiated: "unroll" (default:
--              motifs.unroll, the fused C step and its adjoint in reused
--              checkpoint buffers), "scan" (ag.scan over motifs.fused_step)
--              or "generic" (ag.scan over motifs.step, the nm.autograd
--              operations; slow, the reference)
function meta.learner(o)
  if type(o) ~= "table" or type(o.net) ~= "table" or not o.net.kernel then
    fail("learner: option 'net' (motifs.net{...}) is required", 2)
  end
  local self = setmetatable({net = o.net}, Learner)
  self.active = {}
  for _, r in ipairs(o.motifs or {0}) do
    if math.type(r) ~= "integer" or r < 0 or r > 9 then fail("learner: motif indices are 0..9", 2) end
    self.active[r] = true
  end
  self.need = {}
  for r = 0, 9 do self.need[r + 1] = self.active[r] or false end
  self.scale = nm.ones(10, "float64")
  for r, s in pairs(o.scale or {}) do
    -- phi = theta / s: a zero scale would make phi 0/0 and the run NaN.
    if math.type(r) ~= "integer" or r < 0 or r > 9 then fail("learner: scale keys are motifs 0..9", 2) end
    if type(s) ~= "number" or not (s > 0 and s < math.huge) then
      fail(string.format("learner: scale of motif %d must be a positive finite number, got %s " ..
                         "(a tiny scale such as 1e-9 switches the motif off)", r, tostring(s)), 2)
    end
    self.scale:set(r + 1, s)
  end
  local theta = motifs.theta(o.theta0 or {[0] = 1e-3})
  self.phi = nm.zeros(10, "float64"):div(theta, self.scale)
  self.lambda = o.lambda or 0
  self.clip = o.clip
  self.guard = o.guard or "rollback"
  if self.guard ~= "none" and self.guard ~= "skip" and self.guard ~= "rollback" then
    fail("learner: guard must be 'none', 'skip' or 'rollback'", 2)
  end
  self.segment = o.segment
  self.mode = o.mode or "unroll"
  if self.mode ~= "unroll" and self.mode ~= "scan" and self.mode ~= "generic" then
    fail("learner: mode must be 'unroll', 'scan' or 'generic'", 2)
  end
  self.base_lr, self.lr_scale = o.lr or 1e-3, 1
  self.rollback_decay = o.rollback_decay or 0.5
  self.opt = optim.adam{lr = self.base_lr, beta1 = o.beta1, beta2 = o.beta2, eps = o.eps}
  self.episodes, self.skipped, self.rollbacks = 0, 0, 0
  self.grad = nm.zeros(10, "float64")
  return self
end

-- The effective theta (a new float64 tensor).
function Learner:theta()
  return nm.zeros(10, "float64"):mul(self.phi, self.scale)
end

-- The inner loop's step function for ag.scan on a task.
local function step_fn(net, B, X, labels, generic)
  local stepper = generic and motifs.step or motifs.fused_step
  return function(state, params, t)
    return stepper(net, state, params[1], X:row(t), labels[t], B)
  end
end

-- learner:episode(task, g [, theta]) -> W (adapted weights), B: the inner
-- loop alone (no gradient), from a fresh Xavier draw by g.
function Learner:episode(task, g, theta)
  local net = self.net
  theta = theta or self:theta()
  local W, B = motifs.init(net, g)
  for t = 1, task.steps do
    motifs.fused_step_into(net, W, W, theta, task.X:row(t), task.labels[t], B)
  end
  return W, B
end

-- learner:evaluate(task, g [, theta]) -> query accuracy, query loss of
-- one episode with theta fixed (held-out meta-test); NaN for a non-finite
-- theta.
function Learner:evaluate(task, g, theta)
  theta = theta or self:theta()
  if not finite(theta:sum()) then return 0 / 0, 0 / 0 end
  local W = self:episode(task, g, theta)
  local loss, correct = self.net.kernel:query(W, task.Xq, task.labels_q)
  return correct / #task.labels_q, loss
end

-- learner:meta_gradient(task, g [, stats]) -> loss (query CE + L1),
-- query CE, query accuracy, gradient (float64 [10], of phi; a buffer of
-- the learner). stats: a table for ag.scan's memory figures.
function Learner:meta_gradient(task, g, stats, scan_opts)
  local net = self.net
  if not finite(self:theta():sum()) then   -- a run that already diverged (guard "none")
    self.grad:fill(0 / 0)
    return 0 / 0, 0 / 0, 0 / 0, self.grad
  end
  local W0, B = motifs.init(net, g)
  local tape = ag.tape()
  local phi = tape:leaf(self.phi)
  local theta = ag.mul(phi, self.scale)
  net.need = self.need
  local o = {segment = self.segment, stats = stats}
  for k, v in pairs(scan_opts or {}) do o[k] = v end
  local WT
  if self.mode == "unroll" then
    WT = motifs.unroll(net, W0, B, task.X, task.labels, theta, task.steps, o)
  else
    WT = ag.scan(step_fn(net, B, task.X, task.labels, self.mode == "generic"), W0, {theta},
                 task.steps, o)
  end
  local ce
  if self.mode ~= "generic" then ce = motifs.fused_query_loss(net, WT, task.Xq, task.labels_q)
  else ce = motifs.query_loss(net, WT, task.Xq, task.labels_q) end
  local loss = ce
  if self.lambda > 0 then loss = ag.add(ce, ag.scale(ag.l1(theta), self.lambda)) end
  local Wplain = {}
  for l = 1, net.layers do Wplain[l] = ag.value(WT[l]) end
  local _, correct = net.kernel:query(Wplain, task.Xq, task.labels_q)
  tape:backward(loss)
  local grad = self.grad
  if phi.grad then grad:copy(phi.grad) else grad:zero() end
  for r = 0, 9 do if not self.active[r] then grad:set(r + 1, 0) end end
  return ag.value(loss), ag.value(ce), correct / #task.labels_q, grad
end

local function clone_state(st)
  if type(st) ~= "table" then return st end
  if nm.is_tensor(st) then return st:clone() end
  local c = {}
  for k, v in pairs(st) do
    c[k] = nm.is_tensor(v) and v:clone() or (type(v) == "table" and clone_state(v) or v)
  end
  return c
end

-- learner:meta_step(task, g) -> info: one meta-gradient and one Adam step
-- on phi (with the guards). info: loss, ce, accuracy, grad_norm,
-- finite, action ("update" | "skip" | "rollback"), theta (after the step).
function Learner:meta_step(task, g)
  local loss, ce, acc, grad = self:meta_gradient(task, g)
  local norm = grad:norm()
  local ok = finite(loss) and finite(norm)
  local info = {loss = loss, ce = ce, accuracy = acc, grad_norm = norm, finite = ok}
  self.episodes = self.episodes + 1
  if not ok and self.guard ~= "none" then
    if self.guard == "rollback" and self:rollback() then
      info.action = "rollback"
    else
      self.skipped = self.skipped + 1
      info.action = "skip"
    end
    info.theta = self:theta()
    return info
  end
  if self.guard == "rollback" then
    self.prev = {phi = self.phi:clone(), opt = clone_state(self.opt:state())}
  end
  if self.clip and norm > self.clip then grad:scale(self.clip / norm) end
  self.opt:step({self.phi}, {grad})
  info.action = "update"
  info.theta = self:theta()
  return info
end

-- learner:mark_good(): remembers phi and Adam's state as the target of
-- later rollbacks (meta-training marks the state of its best held-out
-- accuracy).
function Learner:mark_good()
  self.good = {phi = self.phi:clone(), opt = clone_state(self.opt:state())}
end

-- learner:rollback() -> true | false: phi and Adam's state back to the last
-- good mark (or to the state before the previous update), the learning
-- rate multiplied by rollback_decay; counted. false when there is nothing
-- to go back to.
function Learner:rollback()
  local target = self.good or self.prev
  if not target then return false end
  self.phi:copy(target.phi)
  self.opt:load_state(clone_state(target.opt))
  self.lr_scale = self.lr_scale * self.rollback_decay
  self.opt.lr = self.base_lr * self.lr_scale
  self.rollbacks = self.rollbacks + 1
  return true
end

local function copy_mark(m)
  return m and {phi = m.phi:clone(), opt = clone_state(m.opt)} or nil
end

-- Checkpoint state of a learner (a tree nm.checkpoint can save).
function Learner:state()
  return {phi = self.phi, opt = self.opt:state(), episodes = self.episodes,
          skipped = self.skipped, rollbacks = self.rollbacks, lr_scale = self.lr_scale,
          prev = self.prev, good = self.good}
end

function Learner:load_state(st)
  self.phi:copy(st.phi)
  self.opt:load_state(st.opt)
  self.episodes, self.skipped, self.rollbacks = st.episodes, st.skipped, st.rollbacks
  self.lr_scale = st.lr_scale or 1
  self.opt.lr = self.base_lr * self.lr_scale
  self.prev, self.good = copy_mark(st.prev), copy_mark(st.good)
end

-- ---------------------------------------------------------------- measures

-- meta.alignment(net, W, B, theta, X, labels [, n]) -> per-layer mean
-- angles (degrees) over the first n rows of X (default all):
--   e[l]:  between the rule's error e_l (FA) and backprop's delta_l, for
--          hidden layers l = 1..L-1;
--   dW[l]: between the rule's update sum_r theta_r F^r_l and the SGD
--          direction -delta_l y_{l-1}^T, l = 1..L.
-- Angles that are undefined (a zero vector) are left out of the mean.
function meta.alignment(net, W, B, theta, X, labels, n)
  n = math.min(n or X:size(1), X:size(1))
  local bp = {}
  for k, v in pairs(net) do bp[k] = v end
  bp.feedback = "bp"
  local L = net.layers
  local sum_e, cnt_e, sum_w, cnt_w = {}, {}, {}, {}
  for l = 1, L do sum_e[l], cnt_e[l], sum_w[l], cnt_w[l] = 0, 0, 0, 0 end
  for i = 1, n do
    local x, label = X:row(i), labels[i]
    local y, e = motifs.signals(net, W, B, x, label)
    local _, d = motifs.signals(bp, W, nil, x, label)
    local Wn = motifs.fused_step(net, W, theta, x, label, B)
    for l = 1, L do
      if l < L then
        local a = measures.angle(e[l], d[l])
        if a then sum_e[l], cnt_e[l] = sum_e[l] + a, cnt_e[l] + 1 end
      end
      local dW = Wn[l] - W[l]
      local sgd = nm.outer(d[l], y[l - 1]):scale(-1)
      local a = measures.angle(dW, sgd)
      if a then sum_w[l], cnt_w[l] = sum_w[l] + a, cnt_w[l] + 1 end
    end
  end
  local res = {e = {}, dW = {}}
  for l = 1, L do
    if l < L then res.e[l] = cnt_e[l] > 0 and sum_e[l] / cnt_e[l] or nil end
    res.dW[l] = cnt_w[l] > 0 and sum_w[l] / cnt_w[l] or nil
  end
  return res
end

-- ---------------------------------------------------------------- experiments

-- What the few-shot experiments (experiments/metaplasticity.lua, rcn.lua)
-- share.

-- meta.fewshot(opts) -> setup, or nil and a message when opts.outputs is
-- below the data set's classes. From the options data, dtype, M, K, Q and
-- outputs: the data set (ds), the network widths of the paper (sizes:
-- input, 170, 130, 100, 70, outputs), the inner steps (steps = M K), task
-- samplers over the training and the test images (train, test) and a line
-- describing the tasks (dataset).
function meta.fewshot(opts)
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

-- meta.mean(list) -> the mean of a list of numbers (0 when empty).
function meta.mean(list)
  local sum = 0
  for _, a in ipairs(list) do sum = sum + a end
  return sum / math.max(#list, 1)
end

-- meta.running_mean(recent, x, n) -> the mean of the last n values: x is
-- appended to the list recent, which keeps at most n.
function meta.running_mean(recent, x, n)
  recent[#recent + 1] = x
  if #recent > n then table.remove(recent, 1) end
  return meta.mean(recent)
end

-- meta.step_row(run, episode, info, accuracy_smooth, learner) -> the
-- metrics row of one meta-step (info from learner:meta_step).
function meta.step_row(run, episode, info, accuracy_smooth, learner)
  return {run = run, episode = episode, loss = info.loss, ce = info.ce, accuracy = info.accuracy,
          accuracy_smooth = accuracy_smooth, grad_norm = info.grad_norm, action = info.action,
          skipped = learner.skipped, rollbacks = learner.rollbacks}
end

meta.finite = finite

return meta
