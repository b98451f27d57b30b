-- nm/models/nk.lua: Bull's networks on NK-model regression (NN, NAN, ANN;
-- doc/nk.md) trained by a circuit rule of model "nk": by default the
-- random hill climber of rules/hillclimb.lua, or any other (a name from
-- rules/, a path, a definition or an nm.rule instance).
--
--   local nk = require "nm.models.nk"
--   local net = nk.new{kind = "NAN", x = X, f = F, generator = g, h = 10}
--   net:run(g, 10000)                   -- 10,000 cycles (the rule's C kernel)
--   local task, rec = net:errors()
--
-- Options of nk.new: kind, x, f, generator, h, target, test_x, test_f as nm.kernels.nk.network
-- takes them; rule ["hillclimb"]; the rule's parameters by name (range:
-- the network is made with the rule's range, so the kernel's mutations
-- match the rule's). The rule's state s: net (the nm.kernels.nk.network), info
-- (net:info()), g (the generator of the current run); step(s, p) runs one
-- cycle and leaves its decision in s.last; kernel(s, p, cycles) runs
-- cycles in C and returns the changes kept.
local nm = require "neuromic"
local rule = require "nm.rule"

local nk = {}

local Net = {}
Net.__index = Net

-- nk.new(o) -> a network with its rule. See the header.
function nk.new(o)
  if type(o) ~= "table" then error("nk.new: options table expected", 2) end
  local inst = o.rule
  if not rule.is_rule(inst) then
    local ok, def = pcall(rule.definition, inst or "hillclimb")
    if ok then ok, def = pcall(rule.require_kind, def, "circuit", "nk") end
    if not ok then error("nk.new: " .. tostring(def), 2) end
    local p = {}
    for key in pairs(def.params) do p[key] = o[key] end
    ok, inst = pcall(rule.new, def, p)
    if not ok then error("nk.new: " .. tostring(inst), 2) end
  end
  local range = inst.p.range
  if type(range) ~= "number" then range = o.range end
  local handle = nm.kernels.nk.network{kind = o.kind, x = o.x, f = o.f, generator = o.generator,
                               h = o.h, range = range, target = o.target,
                               test_x = o.test_x, test_f = o.test_f}
  local s = {net = handle, info = handle:info()}
  if inst.def.init then inst.def.init(s, inst.p) end
  return setmetatable({net = handle, rule = inst, s = s, kind = o.kind}, Net)
end

-- net:run(g, cycles [, o]) -> the changes kept in these cycles: the rule's
-- kernel when it has one, else (or with o.fused = false) its step, cycle
-- by cycle, with the network's counters advanced alike.
function Net:run(g, cycles, o)
  local s, def, p = self.s, self.rule.def, self.rule.p
  s.g = g
  if def.kernel and not (o and o.fused == false) then
    self.lua_last = false
    return def.kernel(s, p, cycles)
  end
  local c0, k0, t0 = self.net:counts()
  local kept, ties = 0, 0
  for _ = 1, cycles do
    def.step(s, p)
    if s.last.kept then kept = kept + 1 end
    if s.last.tie then ties = ties + 1 end
  end
  self.net:set_counts(c0 + cycles, k0 + kept, t0 + ties)
  self.lua_last = cycles > 0 or self.lua_last
  return kept
end

-- One cycle of the rule's step; returns its decision (see net:last).
function Net:cycle(g)
  self:run(g, 1, {fused = false})
  return self.s.last
end

-- The last cycle: {autoenc, group, i, j, delta, before, after, kept, tie}.
function Net:last()
  if self.lua_last then return self.s.last end
  return self.net:last()
end

-- The network's own methods (doc/nk.md). Each calls its method by name and
-- not as a tail call, so an argument error names it ("bad argument #1 to
-- 'get'") instead of '?'.
local function results(...) return ... end
function Net:errors(...) return results(self.net:errors(...)) end
function Net:naive(...) return results(self.net:naive(...)) end
function Net:test_error(...) return results(self.net:test_error(...)) end
function Net:counts(...) return results(self.net:counts(...)) end
function Net:weights(...) return results(self.net:weights(...)) end
function Net:set_weights(...) return results(self.net:set_weights(...)) end
function Net:get(...) return results(self.net:get(...)) end
function Net:set(...) return results(self.net:set(...)) end
function Net:perturb(...) return results(self.net:perturb(...)) end
function Net:shape(...) return results(self.net:shape(...)) end
function Net:state(...) return results(self.net:state(...)) end

function Net:set_state(st)
  self.net:set_state(st)
  self.lua_last = false
  return self
end

function Net:__tostring()
  return string.format("nk.%s{rule = %s}", tostring(self.kind), self.rule.name)
end

return nk
