-- nm/models/meta.lua: what every meta-learned plasticity rule shares
-- (rules of kind "meta": the motif rule on nm.models.motif_net, the RCN
-- chemical update on nm.models.rcn): few-shot tasks and fixed held-out
-- episodes, and ONE meta-learner: Adam on groups of meta-parameters, each
-- group with its own rate, masks of the entries that move, an exact
-- meta-gradient supplied by the model (its loss through the whole inner
-- loop, checkpointed by ag.scan), gradient clipping, and the guards that
-- keep meta-training alive (non-finite steps skipped or rolled back to the
-- last good state with the learning rate decayed).
--
--   local meta = require "nm.models.meta"
--   local motif_net = require "nm.models.motif_net"
--   local rule = require "nm.rule"
--   local ds = require("nm.data").load("fashion")
--   local tasks = meta.sampler(ds.train, {M = 5, K = 50, Q = 10})
--   local net = motif_net.new{rule = rule.definition("motifs"), feedback = "fa"}
--   local learner = motif_net.learner{net = net, motifs = {0, 2, 9}, lr = 1e-3, lambda = 5e-4}
--   local g = nm.generator(1)
--   for ep = 1, 600 do
--     local info = learner:meta_step(tasks:sample(g), g)   -- loss, accuracy, theta, ...
--   end
--
-- A model's learner is meta.learner(o, class): class supplies
-- loss(vars, task, g, stats, scan_opts) (see there) and its own methods.
-- Any other rule can be meta-learned with nm.autograd directly: see
-- doc/autograd.md.

local nm = require "neuromic"
local ag = require "nm.autograd"
local data = require "nm.data"
local optim = require "nm.optim"

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

local Learner = {}
Learner.__index = Learner
meta.Learner = Learner

local GUARDS = {none = true, skip = true, rollback = true}

-- meta.learner(o [, class]) -> learner: Adam on a list of meta-parameters.
--   params     the tensors Adam moves (required; the learner's own)
--   groups     the group of each entry (default "all"): one Adam per group
--   lr         Adam learning rate (1e-3); beta1, beta2, eps as in nm.optim
--   lr_scale   {group = factor}: a group's rate is lr * factor (default 1)
--   active     {[i] = false}: entries that never move (no gradient)
--   masks      {[i] = tensor of 0/1 like params[i]}: the elements of an
--              entry that move (the others get a zero gradient)
--   clip       clip the meta-gradient to this Euclidean norm (nil: off)
--   guard      "none" (a non-finite loss or gradient still updates, as
--              plain meta-training would), "skip" (no update, counted),
--              "rollback" (default: no update; the parameters and Adam's
--              state go back to the last state marked good by
--              learner:mark_good(), or without one to the state before the
--              previous update, and every rate is multiplied by
--              rollback_decay; counted)
--   rollback_decay  learning-rate factor per rollback (0.5)
-- class (a table whose __index falls back to meta.Learner) supplies
--   class:loss(vars, task, g, stats, scan_opts) -> loss, ce, accuracy:
--     the meta-loss on the tape of vars (leaves holding params), its
--     cross-entropy part and the query accuracy of the adapted network;
--   class:theta() (optional): the effective coefficients, given in info;
--   class:components(grads) (optional): a table of the meta-gradient's
--     components worth logging, taken before clipping (info.grad).
function meta.learner(o, class)
  if type(o) ~= "table" or type(o.params) ~= "table" or #o.params == 0 then
    fail("learner: option 'params' (a list of tensors) is required", 2)
  end
  local self = setmetatable({params = o.params}, class or Learner)
  local n = #o.params
  self.groups, self.active, self.zero = {}, {}, {}
  for i = 1, n do
    self.groups[i] = (o.groups or {})[i] or "all"
    self.active[i] = not (o.active and o.active[i] == false)
    local mask = o.masks and o.masks[i]
    if mask then                           -- flat indices of the elements that never move
      local z, flat = {}, mask:contiguous():view(mask:numel())
      for k = 1, flat:numel() do if flat:get(k) == 0 then z[#z + 1] = k end end
      self.zero[i] = z
    end
  end
  self.order = {}
  for i = 1, n do
    local key = self.groups[i]
    if not self.order[key] then self.order[key] = true; self.order[#self.order + 1] = key end
  end
  self.clip = o.clip
  self.guard = o.guard or "rollback"
  if not GUARDS[self.guard] then fail("learner: guard must be 'none', 'skip' or 'rollback'", 2) end
  self.base_lr, self.lr_scale = o.lr or 1e-3, 1
  self.rollback_decay = o.rollback_decay or 0.5
  self.group_scale = {}
  for _, key in ipairs(self.order) do self.group_scale[key] = 1 end
  for key, f in pairs(o.lr_scale or {}) do
    if type(f) ~= "number" or not (f >= 0) then
      fail("learner: lr_scale is a table {group = factor} of non-negative numbers", 2)
    end
    self.group_scale[key] = f
  end
  self.opts = {}
  for _, key in ipairs(self.order) do
    self.opts[key] = optim.adam{lr = self.base_lr * self.group_scale[key], beta1 = o.beta1,
                                beta2 = o.beta2, eps = o.eps}
  end
  self.episodes, self.skipped, self.rollbacks = 0, 0, 0
  self.grads = {}
  for i = 1, n do self.grads[i] = nm.zeros(o.params[i]:size(), o.params[i]:dtype()) end
  return self
end

-- learner:meta_gradient(task, g [, stats, scan_opts]) -> loss, CE, query
-- accuracy, gradients (a list like params; buffers of the learner).
-- A learner whose parameters are no longer finite (guard "none") gives NaN.
function Learner:meta_gradient(task, g, stats, scan_opts)
  for _, p in ipairs(self.params) do
    if not finite(p:sum()) then
      for _, gr in ipairs(self.grads) do gr:fill(0 / 0) end
      return 0 / 0, 0 / 0, 0 / 0, self.grads
    end
  end
  local tape = ag.tape()
  local vars = {}
  for i, p in ipairs(self.params) do vars[i] = tape:leaf(p) end
  local loss, ce, acc = self:loss(vars, task, g, stats, scan_opts)
  tape:backward(loss)
  for i, v in ipairs(vars) do
    local gr = self.grads[i]
    if v.grad and self.active[i] then gr:copy(v.grad) else gr:zero() end
    local z = self.zero[i]
    if z and #z > 0 then
      local flat = gr:view(gr:numel())
      for _, k in ipairs(z) do flat:set(k, 0) end
    end
  end
  return ag.value(loss), ag.value(ce), acc, self.grads
end

-- The Euclidean norm of the gradients of the entries that move, and the
-- norm of each group's ({group = norm}).
local function grad_norms(self, grads)
  if #grads == 1 then
    local n = grads[1]:norm()
    return n, {[self.groups[1]] = self.active[1] and n or 0}
  end
  local s, by = 0, {}
  for _, key in ipairs(self.order) do by[key] = 0 end
  for i, gr in ipairs(grads) do
    if self.active[i] then
      local n = gr:norm()
      s = s + n * n
      by[self.groups[i]] = by[self.groups[i]] + n * n
    end
  end
  for key, v in pairs(by) do by[key] = math.sqrt(v) end
  return math.sqrt(s), by
end

local function clone_tree(st)
  if nm.is_tensor(st) then return st:clone() end
  if type(st) ~= "table" then return st end
  local c = {}
  for k, v in pairs(st) do c[k] = clone_tree(v) end
  return c
end

-- The optimisers' states, by group, and their restore.
function Learner:opt_state()
  local st = {}
  for key, opt in pairs(self.opts) do st[key] = opt:state() end
  return st
end

function Learner:load_opt_state(st)
  for key, opt in pairs(self.opts) do opt:load_state(st[key]) end
end

local function set_rates(self)
  for key, opt in pairs(self.opts) do
    opt.lr = self.base_lr * self.group_scale[key] * self.lr_scale
  end
end

-- learner:meta_step(task, g) -> info: one meta-gradient and one Adam step
-- per group (with the guards). info: loss, ce, accuracy, grad_norm (the
-- Euclidean norm of the whole meta-gradient before clipping), grad_norms
-- ({group = norm}, before clipping; a group without active entries has
-- 0), finite, action ("update" | "skip" | "rollback"), theta (after the
-- step, when the class has one).
function Learner:meta_step(task, g)
  local loss, ce, acc, grads = Learner.meta_gradient(self, task, g)
  local norm, norms = grad_norms(self, grads)
  local ok = finite(loss) and finite(norm)
  local info = {loss = loss, ce = ce, accuracy = acc, grad_norm = norm, grad_norms = norms,
                finite = ok}
  if self.components then info.grad = self:components(grads) end
  self.episodes = self.episodes + 1
  if not ok and self.guard ~= "none" then
    if self.guard == "rollback" and self:rollback() then
      info.action = "rollback"
    else
      self.skipped = self.skipped + 1
      info.action = "skip"
    end
    if self.theta then info.theta = self:theta() end
    return info
  end
  if self.guard == "rollback" then
    self.prev = {list = clone_tree(self.params), opt = clone_tree(self:opt_state())}
  end
  if self.clip and norm > self.clip then
    for _, gr in ipairs(grads) do gr:scale(self.clip / norm) end
  end
  for _, key in ipairs(self.order) do
    local ps, gs = {}, {}
    for i, p in ipairs(self.params) do
      if self.groups[i] == key and self.active[i] then ps[#ps + 1], gs[#gs + 1] = p, grads[i] end
    end
    if #ps > 0 then self.opts[key]:step(ps, gs) end
  end
  info.action = "update"
  if self.theta then info.theta = self:theta() end
  return info
end

-- learner:mark_good(): remembers the parameters and Adam's state as the
-- target of later rollbacks (meta-training marks the state of its best
-- held-out accuracy).
function Learner:mark_good()
  self.good = {list = clone_tree(self.params), opt = clone_tree(self:opt_state())}
end

-- learner:rollback() -> true | false: the parameters and Adam's state back
-- to the last good mark (or to the state before the previous update),
-- every rate multiplied by rollback_decay; counted. false when there is
-- nothing to go back to.
function Learner:rollback()
  local target = self.good or self.prev
  if not target then return false end
  for i, p in ipairs(self.params) do p:copy(target.list[i]) end
  self:load_opt_state(clone_tree(target.opt))
  self.lr_scale = self.lr_scale * self.rollback_decay
  set_rates(self)
  self.rollbacks = self.rollbacks + 1
  return true
end

-- Checkpoint state of a learner (a tree nm.checkpoint can save) and its
-- restore.
function Learner:state()
  return {list = self.params, opt = self:opt_state(), episodes = self.episodes,
          skipped = self.skipped, rollbacks = self.rollbacks, lr_scale = self.lr_scale,
          prev = self.prev, good = self.good}
end

function Learner:load_state(st)
  for i, p in ipairs(self.params) do p:copy(st.list[i]) end
  self:load_opt_state(st.opt)
  self.episodes, self.skipped, self.rollbacks = st.episodes, st.skipped, st.rollbacks
  self.lr_scale = st.lr_scale or 1
  set_rates(self)
  self.prev = st.prev and clone_tree(st.prev) or nil
  self.good = st.good and clone_tree(st.good) or nil
end

meta.finite = finite

return meta
