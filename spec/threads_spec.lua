-- Threads. OpenBLAS runs on one thread; neuromic's pool (nm.threads) runs
-- the parts of large products, elementwise kernels and row gathers, cut
-- by the shapes alone, so results are the same bits for 1, 2 and 3
-- threads: at batch 1 (nothing is split) and at batch 100 (everything
-- large is); the next minibatch gathered beside the training (nm.gather)
-- changes nothing either.
local nm = require "neuromic"
local nn = require "nm.nn"
local fae = require "nm.models.folded_ae"
local data = require "nm.data"

local function with_threads(n, f)
  local saved = nm.threads()
  nm.threads(n)
  local ok, res = pcall(f)
  nm.threads(saved)
  assert(ok, res)
  return res
end

local function max_diff(a, b)
  local d = (a - b):abs():max()
  return d
end

-- Copies of an MLP's weights and biases, appended to out.
local function weights_of(net, out)
  for l = 1, net.L do
    out[#out + 1] = net.conns[l].W:clone()
    out[#out + 1] = net.conns[l].b:clone()
  end
  return out
end

-- Three steps of an MLP; the weights, biases and last output.
local function train_mlp(batch, rule, act, dtype)
  local g = nm.generator(5)
  local net = nn.mlp{sizes = {784, 256, 64, 10}, act = act, out = "softmax", loss = "xent",
                     rule = rule, params = {eta = 0.05}, gen = nm.generator(3), dtype = dtype}
  local Y
  for _ = 1, 3 do
    local X = nm.rand(g, batch, 784, dtype)
    local T = nm.zeros(batch, 10, dtype)
    for i = 1, batch do T:set(i, (i * 7) % 10 + 1, 1) end
    net:train_batch(X, T)
    Y = net:forward(X):clone()
  end
  return weights_of(net, {Y})
end

-- Two minibatches of the folded autoencoder (settle, then learn).
local function train_fae(batch)
  local g = nm.generator(11)
  local net = fae.new{sizes = {784, 256, 64}, lambda = 0.1, gen = nm.generator(1)}
  for _ = 1, 2 do net:train_batch(nm.rand(g, batch, 784)) end
  local out = {net:encode(nm.rand(g, batch, 784)):clone()}
  local st = net:state()
  for _, key in ipairs{"W", "G"} do
    for _, t in ipairs(st[key]) do out[#out + 1] = t:clone() end
  end
  return out
end

local function same_for_any_count(run)
  local one = with_threads(1, run)
  assert.is_true(#one > 0)
  for _, n in ipairs{2, 3} do
    local other = with_threads(n, run)
    assert.equal(#one, #other)
    for i = 1, #one do
      assert.equal(0, max_diff(one[i], other[i]), string.format("%d threads, tensor %d", n, i))
    end
  end
end

describe("threads", function()
  for _, c in ipairs {
    {1, "backprop", "softplus", "float32"}, {1, "fa", "sigmoid", "float64"},
    {100, "backprop", "sigmoid", "float32"}, {100, "fa", "relu", "float32"},
    {100, "backprop", "tanh", "float64"},
  } do
    it(string.format("MLP, batch %d, %s, %s, %s: the same bits at 1, 2 and 3 threads",
                     table.unpack(c)), function()
      same_for_any_count(function() return train_mlp(table.unpack(c)) end)
    end)
  end

  for _, b in ipairs{1, 100} do
    it(string.format("folded autoencoder, batch %d: the same bits at 1, 2 and 3 threads", b),
       function()
      same_for_any_count(function() return train_fae(b) end)
    end)
  end

  it("products, elementwise kernels and gathers big enough to split agree with a naive loop",
     function()
    local g = nm.generator(9)
    -- shapes cut by rows and by columns, with transposed operands
    for _, sh in ipairs{{100, 784, 256}, {256, 100, 784}, {300, 17, 40}} do
      local m, k, n = table.unpack(sh)
      local A, B = nm.randn(g, m, k, "float64"), nm.randn(g, k, n, "float64")
      local naive = nm.zeros(m, n, "float64")
      for i = 1, m, 37 do
        for j = 1, n, 23 do
          local s = 0
          for q = 1, k do s = s + A:get(i, q) * B:get(q, j) end
          naive:set(i, j, s)
        end
      end
      for _, t in ipairs{1, 3} do
        with_threads(t, function()
          local C = nm.zeros(m, n, "float64"):mm(A, B)
          local Bt = B:t():contiguous()           -- B given as a transposed view
          local C2 = nm.zeros(m, n, "float64"):mm(A, Bt:t())
          for i = 1, m, 37 do
            for j = 1, n, 23 do
              assert.near(naive:get(i, j), C:get(i, j), 1e-9 * k)
              assert.equal(C:get(i, j), C2:get(i, j))
            end
          end
        end)
      end
    end
    local x = nm.randn(g, 200000)
    local y1 = with_threads(1, function() return x:clone():sigmoid() end)
    local y3 = with_threads(3, function() return x:clone():sigmoid() end)
    assert.equal(0, max_diff(y1, y3))
    for _, i in ipairs{1, 65537, 200000} do
      assert.near(1 / (1 + math.exp(-x:get(i))), y3:get(i), 1e-6)
    end
    local X = nm.randn(g, 500, 300)
    local idx = {}
    for i = 1, 400 do idx[i] = (i * 7919) % 500 + 1 end
    local R = with_threads(3, function() return nm.zeros(400, 300):index_rows(X, idx) end)
    for _, i in ipairs{1, 200, 400} do
      assert.equal(0, max_diff(R:select(1, i), X:select(1, idx[i])))
    end
  end)

  it("an Adam step big enough to split: the same bits at 1, 2, 3 threads, each element as the formula",
     function()
    local g = nm.generator(13)
    local n = 200003                          -- 6 parts, the last one short
    local p0, d = nm.randn(g, n, "float64"), nm.randn(g, n, "float64")
    local m0, v0 = nm.randn(g, n, "float64"):mul(0.1), nm.rand(g, n, "float64")
    local function step()
      local p, m, v = p0:clone(), m0:clone(), v0:clone()
      p:adam_update(d, m, v, -1, 0.9, 0.999, 1e-8, 0.01, 1.5)
      return {p, m, v}
    end
    same_for_any_count(step)
    local p, m, v = table.unpack(with_threads(3, step))
    for _, i in ipairs{1, 64, 33334, 100000, 166667, n} do
      local gi = d:get(i)
      local mi = 0.9 * m0:get(i) + 0.1 * -1 * gi
      local vi = 0.999 * v0:get(i) + 0.001 * gi * gi
      assert.near(mi, m:get(i), 1e-15)
      assert.near(vi, v:get(i), 1e-15)
      assert.near(p0:get(i) + 0.01 * mi / (math.sqrt(vi) * 1.5 + 1e-8), p:get(i), 1e-12)
    end
  end)

  -- An epoch over data.batches, which gathers the next batch on a worker
  -- while the current one trains (nm.gather): 1,050 rows, so the last
  -- batch is partial and has its own buffers.
  local function train_epochs(prefetch)
    local g = nm.generator(21)
    local n = 1050
    local split = {X = nm.rand(g, n, 784), Y = nm.zeros(n, 10), labels = {}}
    for i = 1, n do
      split.labels[i] = (i * 7) % 10 + 1
      split.Y:set(i, split.labels[i], 1)
    end
    local net = nn.mlp{sizes = {784, 64, 10}, act = "sigmoid", out = "softmax", loss = "xent",
                       rule = "backprop", params = {eta = 0.1}, gen = nm.generator(3)}
    local batches = data.batches(split, 100, {generator = nm.generator(4), prefetch = prefetch})
    for _ = 1, 2 do
      for b in batches:epoch() do net:train_batch(b.X, b.Y) end
    end
    if prefetch then   -- 11 batches per epoch: the next one of each but the last
      local runs, on_worker = batches:gathers()
      assert.equal(20, runs)
      assert.is_true(on_worker <= runs)
      if nm.threads() == 1 then assert.equal(0, on_worker) end
    end
    return weights_of(net, {})
  end

  it("MLP epochs over prefetched minibatches: the same bits at 1, 2, 3 threads and unprefetched",
     function()
    local plain = with_threads(1, function() return train_epochs(false) end)
    same_for_any_count(function() return train_epochs(true) end)
    local one = with_threads(1, function() return train_epochs(true) end)
    local plain_batches = data.batches({X = nm.zeros(10, 2)}, 3, {prefetch = false})
    for _ in plain_batches:epoch() do end
    assert.same({0, 0}, {plain_batches:gathers()})
    for i = 1, #plain do assert.equal(0, max_diff(plain[i], one[i]), "tensor " .. i) end
  end)

  it("nm.gather copies the rows index_rows copies, while the caller works", function()
    local g = nm.generator(13)
    local X, Y = nm.randn(g, 700, 300), nm.randn(g, 700, 3, "float64")
    local gather = nm.gather(128)
    local B1, B2 = nm.zeros(128, 300), nm.zeros(128, 3)        -- Y cast to float32
    local R1, R2 = nm.zeros(128, 300), nm.zeros(128, 3)
    local A, C = nm.randn(g, 200, 200), nm.zeros(200, 200)
    for _, t in ipairs{1, 2, 3} do
      with_threads(t, function()
        for round = 1, 40 do
          local idx = {}
          for i = 1, 150 do idx[i] = g:integer(1, 700) end
          local first = round % 23 + 1
          gather:start(idx, first, B1, X, B2, Y)
          C:mm(A, A:t()):sigmoid()              -- the caller's own (pooled) work meanwhile
          gather:wait()
          R1:index_rows(X, idx, first)
          R2:index_rows(Y, idx, first)
          assert.equal(0, max_diff(B1, R1), t .. " threads, round " .. round)
          assert.equal(0, max_diff(B2, R2), t .. " threads, round " .. round)
        end
      end)
    end
    -- a worker takes the copies when it is free before the caller waits
    with_threads(2, function()
      local runs, on_worker = gather:counts()
      assert.equal(120, runs)                  -- 40 rounds at 1, 2 and 3 threads
      local idx = {}
      for i = 1, 128 do idx[i] = i end
      local t0 = nm.sys.clock()
      repeat
        gather:start(idx, 1, B1, X)
        nm.sys.sleep(0.01)
        local r, w = gather:counts()
        runs, on_worker = r, w
      until on_worker > 0 or nm.sys.clock() - t0 > 5
      assert.is_true(on_worker > 0, "no worker took a gather in 5 s")
    end)
    with_threads(1, function()                 -- one thread: the caller copies
      local r0, w0 = gather:counts()
      gather:start({1}, 1, B1:narrow(1, 1, 1), X)
      local r1, w1 = gather:counts()
      assert.equal(r0 + 1, r1)
      assert.equal(w0, w1)
    end)
    -- waiting twice, or with nothing started, returns; a running gather keeps
    -- its tensors alive through a close and is waited for when collected
    assert.equal(gather, gather:wait():wait())
    with_threads(2, function()
      local S = nm.randn(g, 5000, 300)
      local D = nm.zeros(128, 300)
      local idx = {}
      for i = 1, 128 do idx[i] = 5000 - i end
      local want = S:select(1, 4999):clone()
      local h = nm.gather(128):start(idx, 1, D, S)
      S:close()
      h:wait()
      assert.equal(0, max_diff(D:select(1, 1), want))
      nm.gather(128):start(idx, 1, nm.zeros(128, 300), nm.randn(g, 5000, 300))
      collectgarbage("collect")
    end)
  end)

  -- Online learning (batch 1) over data.batches at 2 threads: every kernel
  -- of the step and the one-sample gathers stay in the caller, so no
  -- worker is woken or kept spinning (nm.pool_counts); a minibatch epoch
  -- of the same data does offer work to the workers.
  it("a batch-1 epoch hands no work to the pool; a batch-100 one does", function()
    local g = nm.generator(23)
    local n = 300
    local split = {X = nm.rand(g, n, 784), Y = nm.zeros(n, 47)}
    for i = 1, n do split.Y:set(i, (i * 7) % 10 + 1, 1) end
    local function counts(batch, rule)
      return with_threads(2, function()
        local net = nn.mlp{sizes = {784, 170, 130, 100, 70, 47}, act = {"softplus", beta = 10},
                           out = "softmax", loss = "xent", rule = rule,
                           params = {eta = 0.003}, gen = nm.generator(3), init = "xavier"}
        local batches = data.batches(split, batch, {generator = nm.generator(4)})
        local j0, t0 = nm.pool_counts()
        for b in batches:epoch() do net:train_batch(b.X, b.Y) end
        local j1, t1 = nm.pool_counts()
        return {j1 - j0, t1 - t0, batches:gathers()}
      end)
    end
    for _, rule in ipairs{"fa", "backprop"} do
      local c = counts(1, rule)
      assert.same({0, 0, n - 1, 0}, c, rule)
    end
    local c = counts(100, "fa")
    assert.is_true(c[1] > 0 and c[2] == 2 and c[3] == 2, table.concat(c, " "))
  end)

  it("nm.gather checks its arguments as index_rows does, naming the method", function()
    local X = nm.tensor({{1, 2}, {3, 4}, {5, 6}})
    local gather = nm.gather(2)
    assert.equal(2, gather:rows())
    assert.has_error(function() nm.gather(0) end,
      "bad argument #1 to 'gather' (rows must be in [1, 2^26])")
    assert.has_error(function() gather:start({1, 4}, 1, nm.zeros(2, 2), X) end,
      "bad argument #1 to 'start' (index 4 at position 2 out of range [1, 3])")
    assert.has_error(function() gather:start({1, 2}, 1, nm.zeros(2, 3), X) end,
      "bad argument #4 to 'start' (row size mismatch, [2 x 3] vs [3 x 2])")
    assert.has_error(function() gather:start({1, 2, 3}, 1, nm.zeros(3, 2), X) end,
      "bad argument #3 to 'start' (3 rows, more than the gather's 2)")
    assert.has_error(function() gather:start({1, 2}, 2, nm.zeros(2, 2), X) end,
      "bad argument #1 to 'start' (2 rows from position 2 need more than the 2 indices of the list)")
    assert.has_error(function() gather:start({1, 2}, 1, nm.zeros(2, 2)) end,
      "bad argument #3 to 'start' (1 to 4 pairs of tensors B, X expected after idx and first)")
    assert.has_error(function() gather:start({1, 2}, 1, nm.zeros(2, 2), X, nm.zeros(1, 2), X) end,
      "bad argument #5 to 'start' (B2 has 1 rows, B1 2)")
    local B = nm.zeros(2, 2)
    assert.has_error(function() gather:start({1, 2}, 1, B, X, B, X) end,
      "bad argument #5 to 'start' (B1 shares memory with B2)")
    assert.has_error(function() gather:start({1, 2}, 1, X:narrow(1, 1, 2), X) end)
    assert.equal(gather, gather:start({3, 1}, 1, B, X):wait())
    assert.same({{5, 6}, {1, 2}}, B:totable())
  end)

  it("nm.sys.thread_cpu reads the calling thread's CPU time, within the process's", function()
    local c0, t0 = os.clock(), nm.sys.thread_cpu()
    local x = 0
    for i = 1, 3000000 do x = x + i % 7 end
    local c1, t1 = os.clock(), nm.sys.thread_cpu()
    assert.is_true(x > 0)
    assert.is_true(t1 > t0)
    assert.is_true(t1 - t0 <= (c1 - c0) + 1e-3, (t1 - t0) .. " > " .. (c1 - c0))
  end)

  it("nm.threads sets and reports the count and the processors", function()
    local saved, cores = nm.threads()
    assert.is_true(cores >= 1)
    assert.equal(3, (nm.threads(3)))
    assert.equal(1, (nm.threads(1)))
    nm.threads(saved)
    assert.has_error(function() nm.threads(0) end)
    assert.has_error(function() nm.threads(257) end)
  end)
end)
