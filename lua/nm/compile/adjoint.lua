-- nm/compile/adjoint.lua: reverse mode on an expression graph.
--
-- adjoint.grad(g, outputs, seeds, wrt) adds to graph g the nodes of the
-- vector-Jacobian product: given seeds (one symbol per output, shaped
-- like it: the gradient of the loss with respect to that output), it
-- returns one symbol per entry of wrt (an input), the gradient of the loss
-- with respect to it (nil where the loss does not depend on it). The rules
-- are written with the graph's own constructors, so the gradient graph is
-- simplified and shares nodes with the forward graph like any traced code;
-- the code generator compiles both together (the forward is recomputed
-- inside the adjoint kernel, as a checkpointed unroll needs).

local graph = require "nm.compile.graph"

local adjoint = {}

local is_scalar = graph.is_scalar

-- The gradient for an operand from the gradient of a result of the
-- result's shape: a scalar operand broadcast in the operation gets the sum.
local function reduce(g, operand, gr)
  if is_scalar(operand) and not is_scalar(gr) then return g:sum(gr) end
  return gr
end

-- Each rule: function(g, node, gout, add) calling add(arg_index, gradient).
local RULES = {}

RULES.add = function(g, n, go, add)
  add(1, reduce(g, n.args[1], go))
  add(2, reduce(g, n.args[2], go))
end
RULES.sub = function(g, n, go, add)
  add(1, reduce(g, n.args[1], go))
  add(2, reduce(g, n.args[2], g:unary("neg", go)))
end
RULES.mul = function(g, n, go, add)
  local a, b = n.args[1], n.args[2]
  add(1, reduce(g, a, g:binary("mul", go, b)))
  add(2, reduce(g, b, g:binary("mul", go, a)))
end
RULES.div = function(g, n, go, add)
  local a, b = n.args[1], n.args[2]
  local ga = g:binary("div", go, b)
  add(1, reduce(g, a, ga))
  add(2, reduce(g, b, g:unary("neg", g:binary("mul", ga, n))))   -- -g a / b^2 = -(g / b) r
end
RULES.neg = function(g, n, go, add) add(1, g:unary("neg", go)) end
RULES.exp = function(g, n, go, add) add(1, g:binary("mul", go, n)) end
RULES.log = function(g, n, go, add) add(1, g:binary("div", go, n.args[1])) end
RULES.sqrt = function(g, n, go, add)
  add(1, g:binary("div", g:binary("mul", g:const(0.5), go), n))
end
RULES.tanh = function(g, n, go, add)
  add(1, g:binary("mul", go, g:binary("sub", g:const(1), g:binary("mul", n, n))))
end
RULES.sigmoid = function(g, n, go, add)
  add(1, g:binary("mul", go, g:binary("mul", n, g:binary("sub", g:const(1), n))))
end
RULES.relu = function(g, n, go, add)
  add(1, g:binary("mul", go, g:unary("drelu", n.args[1])))
end
RULES.abs = function(g, n, go, add)
  add(1, g:binary("mul", go, g:unary("sign", n.args[1])))
end
RULES.softplus = function(g, n, go, add)
  add(1, g:binary("mul", go, g:unary("dsoftplus", n.args[1], n.k)))
end
RULES.dsoftplus = function(g, n, go, add)
  -- d/dx sigmoid(beta x) = beta s (1 - s)
  local s = n
  local d = g:binary("mul", g:const(n.k), g:binary("mul", s, g:binary("sub", g:const(1), s)))
  add(1, g:binary("mul", go, d))
end
RULES.pow = function(g, n, go, add)
  local p = n.k
  add(1, g:binary("mul", go, g:binary("mul", g:const(p), g:unary("pow", n.args[1], p - 1))))
end
RULES.drelu = function() end
RULES.sign = function() end
RULES.onehot = function() end
RULES.detach = function() end
RULES.sum = function(g, n, go, add)
  add(1, g:bcast(go, n.args[1].shape))
end
RULES.bcast = function(g, n, go, add) add(1, g:sum(go)) end
RULES.unit = function(g, n, go, add) add(1, g:index(go, n.k)) end
RULES.index = function(g, n, go, add) add(1, g:unit(go, n.k, n.args[1].shape)) end
RULES.select = function(g, n, go, add) add(1, g:place(go, n.k, n.args[1].shape)) end
RULES.place = function(g, n, go, add) add(1, g:select(go, n.k)) end
RULES.t = function(g, n, go, add) add(1, g:t(go)) end
RULES.mv = function(g, n, go, add)
  local A, x = n.args[1], n.args[2]
  add(1, g:outer(go, x))
  add(2, g:mv(g:t(A), go))
end
RULES.mm = function(g, n, go, add)
  local A, B = n.args[1], n.args[2]
  add(1, g:mm(go, g:t(B)))
  add(2, g:mm(g:t(A), go))
end
RULES.outer = function(g, n, go, add)
  local a, b = n.args[1], n.args[2]
  add(1, g:mv(go, b))
  add(2, g:mv(g:t(go), a))
end
RULES.softmax = function(g, n, go, add)
  -- y .* (g - <g, y>), per row of a matrix
  add(1, g:binary("mul", n, g:binary("sub", go, g:row_sums_spread(g:binary("mul", go, n)))))
end
RULES.logsoftmax = function(g, n, go, add)
  -- g - softmax(x) sum(g), per row of a matrix
  add(1, g:binary("sub", go, g:binary("mul", g:softmax(n.args[1]), g:row_sums_spread(go))))
end

-- Which nodes lie on a path from some wanted input to some output (only
-- their gradients are formed).
local function on_path(g, outputs, wrt)
  local from = {}
  for _, x in ipairs(wrt) do from[x] = true end
  local reach = {}
  for _, n in ipairs(g.nodes) do
    if from[n] then reach[n] = true
    else
      for _, a in ipairs(n.args) do
        if reach[a] then reach[n] = true break end
      end
    end
  end
  return reach
end

function adjoint.grad(g, outputs, seeds, wrt)
  local nforward = #g.nodes
  local reach = on_path(g, outputs, wrt)
  local grads = {}
  local function accumulate(node, gr)
    if not reach[node] or gr == nil then return end
    local old = grads[node]
    grads[node] = old and g:binary("add", old, gr) or gr
  end
  for i, o in ipairs(outputs) do accumulate(o, seeds[i]) end
  for id = nforward, 1, -1 do
    local n = g.nodes[id]
    local go = grads[n]
    if go ~= nil and #n.args > 0 then
      local rule = RULES[n.op]
      if not rule then graph.fail(g, "no gradient for operation '" .. n.op .. "'") end
      rule(g, n, go, function(i, gr) accumulate(n.args[i], gr) end)
    end
  end
  local out = {}
  for i, x in ipairs(wrt) do out[i] = grads[x] end
  return out
end

return adjoint
