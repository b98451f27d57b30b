-- spec/helper.lua: busted helper (see .busted), loaded before the specs.
-- Registers assert.tensor_near(expected, actual, tol[, message]):
-- element-wise |actual - expected| <= tol, where either side may be a
-- tensor, a (nested) Lua table of numbers or a number. Shapes must match.
-- NaN is near NaN, and an infinity near the same infinity. A failure
-- names the first differing index (1-based) and both values.

local luassert = require "luassert"
local say = require "say"

local function is_tensor(x)
  if type(x) ~= "userdata" then return false end
  local mt = getmetatable(x)
  if type(mt) ~= "table" then return false end
  return mt.__name == "neuromic.Tensor"
      or (type(mt.__index) == "table" and mt.__index.get ~= nil)
end

-- Reads a tensor into nested tables with whatever methods it has:
-- totable() when present, else dim/size/get.
local function tensor_to_table(t)
  if t.totable then return t:totable() end
  local ndim = t:dim()
  if ndim == 0 then return t:get() end
  local sizes = {}
  for d = 1, ndim do sizes[d] = t:size(d) end
  local index = {}
  local function fill(d)
    local out = {}
    for i = 1, sizes[d] do
      index[d] = i
      out[i] = (d == ndim) and t:get(table.unpack(index, 1, ndim)) or fill(d + 1)
    end
    return out
  end
  return fill(1)
end

local function as_value(x)
  if is_tensor(x) then return tensor_to_table(x) end
  return x
end

local function index_string(path)
  return "[" .. table.concat(path, ", ") .. "]"
end

-- "[2 x 3]" for a nested table (sizes taken along the first elements).
local function shape_string(v)
  if type(v) ~= "table" then return "[]" end
  local dims = {}
  while type(v) == "table" do
    dims[#dims + 1] = tostring(#v)
    v = v[1]
  end
  return "[" .. table.concat(dims, " x ") .. "]"
end

local function near(e, a, tol)
  if e ~= e then return a ~= a end                -- NaN
  if e == a then return true end                  -- equal infinities too
  return math.abs(a - e) <= tol
end

-- Returns nil when everything is near, else a description of the first
-- difference (shape or value); path holds the current index.
local function compare(e, a, tol, path)
  if type(e) == "table" or type(a) == "table" then
    if type(e) ~= "table" or type(a) ~= "table" or #e ~= #a then
      local where = #path > 0 and (" at " .. index_string(path)) or ""
      return string.format("shape mismatch%s: expected %s, got %s",
                           where, shape_string(e), shape_string(a))
    end
    for i = 1, #e do
      path[#path + 1] = i
      local diff = compare(e[i], a[i], tol, path)
      if diff then return diff end
      path[#path] = nil
    end
    return nil
  end
  if type(e) ~= "number" or type(a) ~= "number" then
    return string.format("not a number at %s: expected %s, got %s",
                         index_string(path), tostring(e), tostring(a))
  end
  if not near(e, a, tol) then
    return string.format("first difference at %s: expected %.10g, got %.10g "
                         .. "(|diff| %.3g > tol %.3g)", index_string(path),
                         e, a, math.abs(a - e), tol)
  end
  return nil
end

local function tensor_near(state, arguments, level)
  level = (level or 1) + 1
  local tol = arguments[3]
  if type(tol) ~= "number" or tol < 0 then
    error("tensor_near: argument #3 (tolerance) must be a non-negative number",
          level)
  end
  local ok, e = pcall(as_value, arguments[1])
  if not ok then error("tensor_near: cannot read expected: " .. tostring(e), level) end
  local a
  ok, a = pcall(as_value, arguments[2])
  if not ok then error("tensor_near: cannot read actual: " .. tostring(a), level) end
  local diff = compare(e, a, tol, {})
  local message = arguments[4]
  -- Show the description instead of dumping both tensors.
  for k in pairs(arguments) do arguments[k] = nil end
  arguments[1] = diff or string.format("all elements within %.3g", tol)
  arguments.n = 1
  arguments.nofmt = { true }
  if message ~= nil then state.failure_message = message end
  return diff == nil
end

say:set("assertion.tensor_near.positive",
        "Expected tensors to be element-wise near:\n%s")
say:set("assertion.tensor_near.negative",
        "Expected tensors to differ somewhere, but %s")
luassert:register("assertion", "tensor_near", tensor_near,
                  "assertion.tensor_near.positive",
                  "assertion.tensor_near.negative")
