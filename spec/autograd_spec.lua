-- spec/autograd_spec.lua: nm.autograd against central finite differences
-- (float64): every operation, composition and reuse of variables, the
-- checkpointed scan on a plasticity rule that is not the motif rule (equal
-- to the plain tape and to finite differences, any segment length), its
-- memory figures, and the errors.

local nm = require "neuromic"
local ag = require "nm.autograd"

local function rand(g, n, m)
  local t = m and nm.zeros(n, m, "float64") or nm.zeros(n, "float64")
  return t:uniform(g, -1, 1)
end

-- Gradient of f (a function of the values list returning a number or a
-- variable) with respect to each of `xs` (tensors or numbers), through a
-- tape; and by central differences.
local function tape_grads(f, xs)
  local tape = ag.tape()
  local vars = {}
  for i, x in ipairs(xs) do vars[i] = tape:leaf(x) end
  local out = f(table.unpack(vars))
  tape:backward(out)
  local gs = {}
  for i, v in ipairs(vars) do gs[i] = v.grad end
  return gs, ag.value(out)
end

local function fd_grads(f, xs, h)
  h = h or 1e-6
  local gs = {}
  for i, x in ipairs(xs) do
    if type(x) == "number" then
      local args = {table.unpack(xs)}
      args[i] = x + h
      local fp = ag.value(f(table.unpack(args)))
      args[i] = x - h
      local fm = ag.value(f(table.unpack(args)))
      gs[i] = (fp - fm) / (2 * h)
    else
      gs[i] = ag.numgrad(function() return ag.value(f(table.unpack(xs))) end, x, h)
    end
  end
  return gs
end

local function check(f, xs, tol)
  local tg = tape_grads(f, xs)
  local ng = fd_grads(f, xs)
  for i = 1, #xs do
    if type(xs[i]) == "number" then
      assert.is_number(tg[i])
      assert.is_true(math.abs(tg[i] - ng[i]) <= (tol or 1e-7), string.format(
        "argument %d: tape %.10g vs differences %.10g", i, tg[i], ng[i]))
    else
      assert.tensor_near(ng[i], tg[i], tol or 1e-7, "argument " .. i)
    end
  end
end

describe("nm.autograd operations", function()
  local g = nm.generator(11)

  it("elementwise arithmetic with tensors and numbers", function()
    local a, b = rand(g, 3, 4), rand(g, 3, 4)
    check(function(x, y) return ag.sum(ag.mul(ag.add(x, y), ag.sub(x, 0.5))) end, {a, b})
    check(function(x, y) return ag.sum(ag.div(x, ag.add(ag.mul(y, y), 1))) end, {a, b})
    check(function(x, s) return ag.sum(ag.mul(ag.scale(x, s), ag.sub(2, x))) end, {a, 0.7})
    check(function(x, s) return ag.sum(ag.div(s, ag.add(ag.exp(x), 1))) end, {a, 1.3})
    check(function(x, s) return ag.dot(ag.div(x, s), ag.neg(x)) end, {a, 2.5})
    check(function(s, t) return ag.mul(ag.add(s, t), ag.div(s, t)) end, {0.3, 1.7})
  end)

  it("sums and means along a dimension of a matrix (known values, finite differences)", function()
    local A = nm.tensor({{1, 2, 3}, {4, 5, -6}}, "float64")
    assert.are.same({5, 7, -3}, ag.sum(A, 1):totable())
    assert.are.same({6, 3}, ag.sum(A, 2):totable())
    assert.are.same({2, 1}, ag.mean(A, 2):totable())
    local a = rand(g, 3, 4)
    local c3, c4 = rand(g, 3), rand(g, 4)
    check(function(x) return ag.dot(ag.sum(x, 1), c4) end, {a})
    check(function(x) return ag.dot(ag.sum(x, 2), c3) end, {a})
    check(function(x) return ag.dot(ag.mean(x, 1), c4) end, {a})
    check(function(x) return ag.dot(ag.tanh(ag.mean(x, 2)), c3) end, {a})
    assert.has_error(function() ag.sum(rand(g, 3), 1) end,
                     "autograd: 'sum': sums along a dimension (1 or 2) of a matrix")
  end)

  it("elementwise functions", function()
    local a = rand(g, 5)
    local pos = nm.zeros(5, "float64"):uniform(g, 0.5, 2)
    check(function(x) return ag.sum(ag.exp(x)) end, {a})
    check(function(x) return ag.sum(ag.log(x)) end, {pos})
    check(function(x) return ag.sum(ag.sqrt(x)) end, {pos})
    check(function(x) return ag.sum(ag.tanh(x)) end, {a})
    check(function(x) return ag.sum(ag.sigmoid(x)) end, {a})
    check(function(x) return ag.sum(ag.pow(x, 3)) end, {pos})
    check(function(x) return ag.dot(ag.abs(x), x) end, {a})
    check(function(x) return ag.sum(ag.relu(x)) end, {a})
    check(function(x) return ag.sum(ag.softplus(x, 10)) end, {a})
    -- the derivative of softplus, differentiated again
    check(function(x) return ag.sum(ag.dsoftplus(x, 10)) end, {a}, 1e-6)
    check(function(x) return ag.exp(ag.tanh(x)) end, {0.4})
  end)

  it("reductions, indexing and products", function()
    local A, B, x, y = rand(g, 3, 4), rand(g, 4, 2), rand(g, 4), rand(g, 3)
    check(function(M) return ag.mean(ag.mul(M, M)) end, {A})
    check(function(v) return ag.mul(ag.index(v, 2), ag.index(v, 4)) end, {x})
    -- a matrix element (its backward used to pass only the first index)
    check(function(M) return ag.mul(ag.index(M, 2, 3), ag.index(M, 1, 4)) end, {A})
    -- a slice (one chemical of a 3-D tensor), used twice
    local C = rand(g, 2, 3, 4)
    check(function(T3) return ag.sum(ag.mul(ag.select(T3, 1, 2), ag.tanh(ag.select(T3, 1, 2)))) end, {C})
    check(function(M, v) return ag.dot(ag.mv(M, v), y) end, {A, x})
    check(function(M, v) return ag.dot(ag.mv(ag.t(M), v), x) end, {A, y})
    check(function(M, N) return ag.sum(ag.tanh(ag.mm(M, N))) end, {A, B})
    check(function(u, v) return ag.sum(ag.mul(ag.outer(u, v), A)) end, {y, x})
    check(function(u, v) return ag.l1(ag.sub(u, v)) end, {x, rand(g, 4)})
  end)

  it("softmax, log-softmax and cross-entropy (vector and rows)", function()
    local v, M, w, C = rand(g, 5), rand(g, 3, 5), rand(g, 5), rand(g, 3, 5)
    check(function(x) return ag.dot(ag.softmax(x), w) end, {v})
    check(function(X) return ag.sum(ag.mul(ag.softmax(X), ag.softmax(X))) end, {M})
    check(function(x) return ag.dot(ag.logsoftmax(x), w) end, {v})
    check(function(X) return ag.sum(ag.mul(ag.logsoftmax(X), C)) end, {M})
    check(function(x) return ag.cross_entropy(x, 3) end, {v})
    check(function(X) return ag.cross_entropy(X, {2, 5, 1}) end, {M})
  end)

  it("untracked calls compute plain values", function()
    local a = rand(g, 3)
    local r = ag.add(ag.mul(a, 2), 1)
    assert.is_true(nm.is_tensor(r))
    assert.tensor_near(a * 2 + 1, r, 1e-15)
    assert.are.equal(6, ag.mul(2, 3))
    assert.is_false(ag.is_var(r))
  end)

  it("sums the gradients of a variable used several times", function()
    local tape = ag.tape()
    local x = tape:leaf(nm.tensor({1, 2, 3}, "float64"))
    local out = ag.add(ag.dot(x, x), ag.sum(ag.scale(x, 3)))     -- |x|^2 + 3 sum x
    tape:backward(out)
    assert.tensor_near({5, 7, 9}, x.grad, 1e-14)
    assert.are.equal(0, tape:size())                            -- consumed
  end)

  it("takes tensor seeds and several roots", function()
    local tape = ag.tape()
    local x = tape:leaf(nm.tensor({1, 2}, "float64"))
    local y = ag.mul(x, x)
    local s = ag.sum(x)
    tape:backward({y, s}, {nm.tensor({1, 10}, "float64"), 2})
    assert.tensor_near({2 * 1 + 2, 10 * 4 + 2}, x.grad, 1e-14)
  end)

  it("never modifies its arguments", function()
    local a, b = rand(g, 4), rand(g, 4)
    local a0, b0 = a:clone(), b:clone()
    local tape = ag.tape()
    local va, vb = tape:leaf(a), tape:leaf(b)
    tape:backward(ag.sum(ag.mul(ag.exp(va), ag.sub(vb, va))))
    assert.tensor_near(a0, a, 0)
    assert.tensor_near(b0, b, 0)
  end)

  it("user-defined operations take part (ag.def)", function()
    -- f(x) = x^3 elementwise with a hand-written backward
    local cube = ag.def("cube", function(ctx, x)
      ctx.x = x
      return nm.zeros(x:size(), x:dtype()):pow(x, 3)
    end, function(ctx, gout)
      return gout:mul(nm.zeros(ctx.x:size(), "float64"):pow(ctx.x, 2)):scale(3)
    end)
    check(function(x) return ag.sum(ag.mul(cube(x), x)) end, {rand(g, 4)})
  end)

  it("raises clear errors", function()
    local a, b = rand(g, 3), rand(g, 4)
    assert.has_error(function() ag.add(a, b) end, "autograd: 'add': shapes differ, [3] vs [4]")
    local t1, t2 = ag.tape(), ag.tape()
    local x, y = t1:leaf(a), t2:leaf(a)
    assert.has_error(function() ag.add(x, y) end, "autograd: 'add': arguments from two different tapes")
    assert.has_error(function() return x * x end)
    assert.has_error(function() ag.cross_entropy(a, 4) end,
                     "autograd: 'cross_entropy': label 4 of row 1 is not a class in 1..3")
    assert.has_error(function() t1:leaf("x") end, "autograd: leaf value must be a tensor or a number, got string")
    -- a backward returning a gradient of the wrong shape names the operation
    local bad = ag.def("bad", function(_, v) return v:sum() end, function() return nm.zeros(2, "float64") end)
    local t = ag.tape()
    local v = t:leaf(a)
    assert.has_error(function() t:backward(bad(v)) end,
                     "autograd: 'bad' returned a gradient of shape [2] for a value of shape [3]")
  end)
end)

-- A plasticity rule that is not the motif rule, written with nm.autograd
-- operations: a two-layer tanh network learning online by a reward-free
-- "three-factor" form with meta-parameters p = (eta_hebb, eta_err, decay)
--   h = tanh(W1 x), o = W2 h, err = o - target
--   W2 <- W2 - p2 err h^T - p3 W2
--   W1 <- W1 + p1 (h x^T) .* (1 - h^2 1^T)... (Hebbian, gated)  - p3 W1
-- and a meta-loss: squared error of the final network on query pairs.
local function rule_step(state, params, t, data)
  local W1, W2 = state[1], state[2]
  local p = params[1]
  local x, target = data.X:row(t), data.Y:row(t)
  local h = ag.tanh(ag.mv(W1, x))
  local o = ag.mv(W2, h)
  local err = ag.sub(o, target)
  local gate = ag.sub(1, ag.mul(h, h))
  local W2n = ag.sub(ag.sub(W2, ag.scale(ag.outer(err, h), ag.index(p, 2))),
                     ag.scale(W2, ag.index(p, 3)))
  local W1n = ag.sub(ag.add(W1, ag.scale(ag.outer(ag.mul(h, gate), x), ag.index(p, 1))),
                     ag.scale(W1, ag.index(p, 3)))
  return {W1n, W2n}
end

local function rule_loss(W, data)
  local h = ag.tanh(ag.mm(data.Xq, ag.t(W[1])))
  local o = ag.mm(h, ag.t(W[2]))
  local d = ag.sub(o, data.Yq)
  return ag.mean(ag.mul(d, d))
end

describe("nm.autograd scan (checkpointed unroll) on a non-motif rule", function()
  local g = nm.generator(5)
  local T = 13
  local data = {X = rand(g, T, 4), Y = rand(g, T, 2), Xq = rand(g, 6, 4), Yq = rand(g, 6, 2)}
  local W1, W2 = rand(g, 3, 4):scale(0.5), rand(g, 2, 3):scale(0.5)
  local p = nm.tensor({0.05, 0.1, 0.01}, "float64")
  local step = function(s, pr, t) return rule_step(s, pr, t, data) end

  local function meta_loss_plain(pv, w1)
    local s = {w1 or W1, W2}
    for t = 1, T do s = step(s, {pv}, t) end
    return rule_loss(s, data)
  end

  -- Gradient through a plain (fully stored) tape.
  local function plain_grads()
    local tape = ag.tape()
    local pv, w1 = tape:leaf(p), tape:leaf(W1)
    local s = {w1, W2}
    for t = 1, T do s = step(s, {pv}, t) end
    tape:backward(rule_loss(s, data))
    return pv.grad, w1.grad
  end

  local function scan_grads(segment, stats)
    local tape = ag.tape()
    local pv, w1 = tape:leaf(p), tape:leaf(W1)
    local s = ag.scan(step, {w1, W2}, {pv}, T, {segment = segment, stats = stats})
    tape:backward(rule_loss(s, data))
    return pv.grad, w1.grad
  end

  it("equals central finite differences", function()
    local gp = scan_grads()
    local np = ag.numgrad(function() return meta_loss_plain(p) end, p)
    assert.tensor_near(np, gp, 1e-8)
    local _, gw = scan_grads(4)
    local nw = ag.numgrad(function() return meta_loss_plain(p, W1) end, W1)
    assert.tensor_near(nw, gw, 1e-8)
  end)

  it("equals the plain tape for every segment length", function()
    local gp0, gw0 = plain_grads()
    for _, S in ipairs{1, 2, 3, 5, 13, 20} do
      local gp, gw = scan_grads(S)
      assert.tensor_near(gp0, gp, 1e-13, "segment " .. S)
      assert.tensor_near(gw0, gw, 1e-13, "segment " .. S)
    end
  end)

  it("stores ceil(T/S) states and one segment's tape", function()
    local per_step
    do  -- nodes one step records
      local tape = ag.tape()
      step({tape:leaf(W1), tape:leaf(W2)}, {tape:leaf(p)}, 1)
      per_step = tape:size()
    end
    for _, S in ipairs{1, 4, 13} do
      local stats = {}
      scan_grads(S, stats)
      assert.are.equal(math.ceil(T / S), stats.snapshots)
      assert.are.equal(S, stats.segment)
      assert.is_true(stats.peak_tape_nodes <= S * per_step)
      assert.is_true(stats.peak_tape_nodes >= math.min(S, T) * per_step - per_step)
    end
    local stats = {}
    scan_grads(nil, stats)                    -- default: ceil(sqrt(T))
    assert.are.equal(math.ceil(math.sqrt(T)), stats.segment)
  end)

  it("returns plain values untracked and handles T = 0", function()
    local s = ag.scan(step, {W1, W2}, {p}, T)
    local direct = {W1, W2}
    for t = 1, T do direct = step(direct, {p}, t) end
    assert.tensor_near(direct[1], s[1], 1e-15)
    local tape = ag.tape()
    local w = tape:leaf(W1)
    local out = ag.scan(step, {w, W2}, {p}, 0)
    tape:backward(ag.sum(ag.mul(out[1], out[1])))
    assert.tensor_near(W1 * 2, w.grad, 1e-15)
  end)

  -- The same kind of unroll through a fused kernel: w_t = (1 - a) w_{t-1}
  -- + c x_t with a hand-written adjoint, against the generic form.
  local X = rand(g, T, 4)
  local function generic(st, pr, t)
    local a, c = ag.index(pr[1], 1), ag.index(pr[1], 2)
    return {ag.add(ag.scale(st[1], ag.sub(1, a)), ag.scale(X:row(t), c))}
  end
  local function fused(cache)
    return {
      cache = cache, state_bytes = 32, trace_bytes = 0,
      state = function() return {nm.zeros(4, "float64")} end,
      trace = function() return {} end,
      forward = function(dst, src, pr, t)
        local a, c = pr[1]:get(1), pr[1]:get(2)
        dst[1]:copy(src[1]):scale(1 - a):axpy(c, X:row(t))
      end,
      backward = function(adj, src, _, pr, gp, t)
        local a = pr[1]:get(1)
        gp[1]:set(1, gp[1]:get(1) - adj[1]:dot(src[1]))
        gp[1]:set(2, gp[1]:get(2) + adj[1]:dot(X:row(t)))
        adj[1]:scale(1 - a)
      end,
    }
  end
  local w0, q = rand(g, 4), nm.tensor({0.2, 0.7}, "float64")
  local function grads(step_or_kernel, S, stats)
    local tape = ag.tape()
    local qv, wv = tape:leaf(q), tape:leaf(w0)
    local out = ag.scan(step_or_kernel, {wv}, {qv}, T, {segment = S, stats = stats})
    tape:backward(ag.sum(ag.mul(out[1], out[1])))
    return qv.grad, wv.grad, out[1]
  end

  it("with a fused kernel equals the generic form, in reused buffers", function()
    local cache = {}
    for _, S in ipairs{1, 3, 4, 13} do
      local gq0, gw0 = grads(generic, S)
      local stats = {}
      local gq, gw = grads(fused(cache), S, stats)
      assert.tensor_near(gq0, gq, 1e-13, "segment " .. S)
      assert.tensor_near(gw0, gw, 1e-13, "segment " .. S)
      assert.are.equal(math.ceil(T / S), stats.snapshots)
      assert.are.equal((math.ceil(T / S) + S) * 32, stats.workspace_bytes)
    end
    local ws = cache[T .. ":" .. 3]
    grads(fused(cache), 3)
    assert.are.equal(ws, cache[T .. ":" .. 3])          -- buffers reused, not reallocated
    -- untracked and T = 0
    local plain = ag.scan(fused(cache), {w0}, {q}, T)
    local direct = {w0}
    for t = 1, T do direct = generic(direct, {q}, t) end
    assert.tensor_near(direct[1], plain[1], 1e-15)
    local tape = ag.tape()
    local wv = tape:leaf(w0)
    local out = ag.scan(fused({}), {wv}, {q}, 0)
    tape:backward(ag.sum(ag.mul(out[1], out[1])))
    assert.tensor_near(w0 * 2, wv.grad, 1e-15)
  end)

  it("with a kernel that replays: every step traced once, segments replayed, same gradients",
     function()
    -- the trace of step t: its increment c x_t, from which replay rebuilds
    -- the state without reading X
    local calls
    local function replaying()
      local k = fused({})
      k.trace = function() return {nm.zeros(4, "float64")} end
      local forward = k.forward
      k.forward = function(dst, src, pr, t, trace)
        calls.forward = calls.forward + 1
        if trace then
          calls.traced = calls.traced + 1
          trace[1]:copy(X:row(t)):scale(pr[1]:get(2))
        end
        forward(dst, src, pr, t)
      end
      k.replay = function(dst, src, pr, t, trace)
        calls.replay = calls.replay + 1
        dst[1]:copy(src[1]):scale(1 - pr[1]:get(1)):add(trace[1])
      end
      return k
    end
    for _, S in ipairs{1, 3, 4, 13} do
      calls = {forward = 0, traced = 0, replay = 0}
      local gq0, gw0, out0 = grads(generic, S)
      local stats = {}
      local gq, gw, out = grads(replaying(), S, stats)
      assert.tensor_near(out0, out, 1e-15)
      assert.tensor_near(gq0, gq, 1e-13, "segment " .. S)
      assert.tensor_near(gw0, gw, 1e-13, "segment " .. S)
      local nseg = math.ceil(T / S)
      -- T forward steps, all traced; the segments before the last replayed
      -- but for their last step (the next segment's stored start)
      local last = T - (nseg - 1) * S
      assert.are.same({forward = T, traced = T, replay = T - last - (nseg - 1)}, calls, "S " .. S)
      assert.are.equal((nseg + math.min(S, T)) * 32, stats.workspace_bytes)   -- trace_bytes 0
    end
  end)

  it("ag.checkpoint recomputes a function in backward", function()
    local tape = ag.tape()
    local x = tape:leaf(nm.tensor({0.3, -0.2}, "float64"))
    local out = ag.checkpoint(function(s) return {ag.tanh(ag.mul(s[1], s[1]))} end, {x}, {})
    tape:backward(ag.sum(out[1]))
    local v = {0.3, -0.2}
    for i = 1, 2 do
      local th = math.tanh(v[i] ^ 2)
      assert.is_true(math.abs(x.grad:get(i) - (1 - th * th) * 2 * v[i]) < 1e-14)
    end
  end)

  it("rejects misuse", function()
    assert.has_error(function() ag.scan(step, {}, {p}, 3) end,
                     "autograd: scan: init must hold at least one state")
    assert.has_error(function() ag.scan(step, {W1, W2}, {p}, -1) end)
    assert.has_error(function() ag.scan(function() return {W1} end, {W1, W2}, {p}, 2) end)
    -- a step closing over a variable of the outer tape is caught
    local tape = ag.tape()
    local pv = tape:leaf(p)
    assert.has_error(function()
      ag.scan(function(s) return {ag.scale(s[1], ag.index(pv, 1)), s[2]} end, {W1, W2}, {}, 2)
    end, "autograd: scan: step returned a variable in untracked mode")
  end)
end)
