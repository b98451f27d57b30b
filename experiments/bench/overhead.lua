-- experiments/bench/overhead.lua: per-call cost, in ns, of tiny tensor
-- operations called from Lua (y:axpy on a 10-vector, W:addr on a 10x10)
-- next to plain Lua loops doing the same arithmetic on Lua tables. A
-- benchmark, not a test: it prints figures and checks nothing.
--
--   ./neuromic experiments/bench/overhead.lua [--calls N] [--quick]

local nm = require "neuromic"
local cli = require "nm.cli"

local opts = cli.parse(arg, {
  name = "overhead",
  description = "Per-call overhead of tiny tensor operations from Lua, in ns per call.",
  options = {
    { "calls", "int", 300000, "calls per measurement", quick = 50000, min = 1 },
    { "repeats", "int", 3, "measurements per case; the fastest is reported", quick = 1, min = 1 },
  },
})

local clock = nm.sys.clock

-- ns per call of body(calls), best of `repeats`.
local function time_ns(body)
  local best = math.huge
  for _ = 1, opts.repeats do
    local t0 = clock()
    body(opts.calls)
    local dt = clock() - t0
    if dt < best then best = dt end
  end
  return best / opts.calls * 1e9
end

local function lua_vector(n, f)
  local v = {}
  for i = 1, n do v[i] = f(i) end
  return v
end

local rows = {}
local function report(name, module_ns, lua_ns)
  rows[#rows + 1] = { name, module_ns, lua_ns }
end

-- The floor: a method call into C that does nothing with data.
local probe = nm.zeros(10)
local floor_ns = time_ns(function(n)
  local t = probe
  for _ = 1, n do t:dim() end
end)

for _, dtype in ipairs { "float32", "float64" } do
  -- axpy on a 10-vector
  local y, x = nm.zeros(10, dtype), nm.zeros(10, dtype)
  for i = 1, 10 do x:set(i, i / 10) end
  local module_ns = time_ns(function(n)
    for _ = 1, n do y:axpy(1e-3, x) end
  end)
  local ly, lx = lua_vector(10, function() return 0 end), lua_vector(10, function(i) return i / 10 end)
  local function lua_axpy(yy, a, xx)
    for i = 1, 10 do yy[i] = yy[i] + a * xx[i] end
  end
  local lua_ns = time_ns(function(n)
    for _ = 1, n do lua_axpy(ly, 1e-3, lx) end
  end)
  report("axpy 10 " .. dtype, module_ns, lua_ns)

  -- addr (W += eta x y^T) on a 10x10
  local W = nm.zeros(10, 10, dtype)
  local pre, post = nm.zeros(10, dtype), nm.zeros(10, dtype)
  for i = 1, 10 do pre:set(i, i / 10); post:set(i, 1 - i / 10) end
  module_ns = time_ns(function(n)
    for _ = 1, n do W:addr(1e-3, post, pre) end
  end)
  local LW = {}
  for i = 1, 10 do LW[i] = lua_vector(10, function() return 0 end) end
  local lpre = lua_vector(10, function(i) return i / 10 end)
  local lpost = lua_vector(10, function(i) return 1 - i / 10 end)
  local function lua_addr(w, eta, xx, yy)
    for i = 1, 10 do
      local row, a = w[i], eta * xx[i]
      for j = 1, 10 do row[j] = row[j] + a * yy[j] end
    end
  end
  lua_ns = time_ns(function(n)
    for _ = 1, n do lua_addr(LW, 1e-3, lpost, lpre) end
  end)
  report("addr 10x10 " .. dtype, module_ns, lua_ns)
end

print(("calls per measurement %d, best of %d; empty method call t:dim() %.0f ns")
      :format(opts.calls, opts.repeats, floor_ns))
print(("%-20s %12s %12s %14s"):format("operation", "module ns", "Lua loop ns", "module/Lua"))
for _, r in ipairs(rows) do
  print(("%-20s %12.1f %12.1f %14.2f"):format(r[1], r[2], r[3], r[2] / r[3]))
end
