-- Threads. OpenBLAS runs on one thread; neuromic's pool (nm.threads) runs
-- the parts of large products, elementwise kernels and row gathers, cut
-- by the shapes alone, so results are the same bits for 1, 2 and 3
-- threads: at batch 1 (nothing is split) and at batch 100 (everything
-- large is).
local nm = require "neuromic"
local nn = require "nm.nn"
local fae = require "nm.models.folded_ae"

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
  local out = {Y}
  for l = 1, net.L do
    out[#out + 1] = net.conns[l].W:clone()
    out[#out + 1] = net.conns[l].b:clone()
  end
  return out
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
