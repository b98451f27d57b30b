-- nm/compile/interp.lua: runs an expression graph through the tensor
-- operations, node by node (the path taken when no C compiler is found,
-- and the reference the generated kernels are tested against). It
-- allocates as it goes; the numbers are those of the generated code up to
-- the order of summation.

local nm = require "neuromic"
local ag = require "nm.autograd"
local graph = require "nm.compile.graph"

local interp = {}

local function zeros(shape, dtype)
  return nm.zeros(shape, dtype)
end

local function unary(op, x, k)
  if op == "drelu" or op == "sign" then
    if type(x) == "number" then
      if op == "drelu" then return x > 0 and 1 or 0 end
      return (x > 0 and 1 or 0) - (x < 0 and 1 or 0)
    end
    local r = ag.new_like(x)
    return r[op](r, x)
  end
  return ag[op](x, k)
end

-- interp.run(g, outputs, env) -> list of output values; env maps input
-- nodes to their values (tensors or numbers).
function interp.run(g, outputs, env)
  outputs = graph.strip_detach(g, outputs)
  local need = graph.reachable(outputs)
  local val = {}
  local dtype = g.dtype
  for _, n in ipairs(g.nodes) do
    if need[n] then
      local op, a = n.op, n.args
      local v
      if op == "const" then v = n.k
      elseif op == "input" then v = env[n]
      elseif op == "captured" then v = n.value
      elseif graph.BINARY[op] then v = ag[op](val[a[1]], val[a[2]])
      elseif graph.UNARY[op] then v = unary(op, val[a[1]], n.k)
      elseif op == "sum" then v = ag.sum(val[a[1]])
      elseif op == "bcast" then v = zeros(n.shape, dtype):fill(val[a[1]])
      elseif op == "unit" then
        v = zeros(n.shape, dtype)
        v:view(v:numel()):set(n.k, val[a[1]])
      elseif op == "select" then v = val[a[1]]:select(1, n.k):clone()
      elseif op == "place" then
        v = zeros(n.shape, dtype)
        v:select(1, n.k):copy(val[a[1]])
      elseif op == "onehot" then v = ag.onehot(n.shape[1], math.tointeger(val[a[1]]), dtype)
      elseif op == "index" then
        local x = val[a[1]]
        v = x:contiguous():view(x:numel()):get(n.k)
      elseif op == "t" or op == "mv" or op == "mm" or op == "outer" or op == "softmax" or
             op == "logsoftmax" then
        local args = {}
        for i, x in ipairs(a) do args[i] = val[x] end
        v = ag[op](table.unpack(args))
      else
        error("rule compiler: the interpreter has no operation '" .. op .. "'")
      end
      val[n] = v
    end
  end
  local out = {}
  for i, o in ipairs(outputs) do out[i] = val[o] end
  return out
end

return interp
