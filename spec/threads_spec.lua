-- BLAS threads. Small products (below 2^20 multiply-adds: all of batch-1
-- training) run on one thread whatever the count (nm_blas_serial_begin), so
-- batch-1 results are the same bits at 1 and 2 threads, and the count a
-- caller set is back afterwards. Larger products go to OpenBLAS's threads,
-- whose multi-threaded sgemm/dgemm sums in another order than its
-- one-thread kernels: minibatch results agree to rounding, not bit for bit.
local nm = require "neuromic"
local nn = require "nm.nn"

local function train(threads, batch, rule, act, dtype)
  local saved = nm.blas_threads()
  nm.blas_threads(threads)
  local g = nm.generator(5)
  local net = nn.mlp{sizes = {784, 256, 64, 10}, act = act, out = "softmax", loss = "xent",
                     rule = rule, params = {eta = 0.05}, gen = nm.generator(3), dtype = dtype}
  for _ = 1, 3 do
    local X = nm.rand(g, batch, 784, dtype)
    local T = nm.zeros(batch, 10, dtype)
    for i = 1, batch do T:set(i, (i * 7) % 10 + 1, 1) end
    net:train_batch(X, T)
  end
  local after = nm.blas_threads()
  nm.blas_threads(saved)
  local out = {}
  for l = 1, net.L do out[l] = {net.conns[l].W:clone(), net.conns[l].b:clone()} end
  return out, after
end

describe("BLAS threads", function()
  for _, c in ipairs {
    {1, "backprop", "softplus", "float32"}, {1, "fa", "sigmoid", "float64"},
    {200, "backprop", "sigmoid", "float32"}, {200, "fa", "relu", "float32"},
  } do
    it(string.format("batch %d, %s, %s, %s: %s at 1 and 2 threads", c[1], c[2], c[3], c[4],
                     c[1] == 1 and "the same bits" or "the same to rounding"),
       function()
      local one, after1 = train(1, table.unpack(c))
      local two, after2 = train(2, table.unpack(c))
      assert.equal(1, after1)
      assert.equal(2, after2)          -- small products left the count as it was
      local exact = c[1] == 1
      for l = 1, #one do
        for k = 1, 2 do
          local d = (one[l][k] - two[l][k]):abs():max()
          local what = string.format("layer %d %s", l, k == 1 and "W" or "b")
          if exact then assert.equal(0, d, what)
          else assert.is_true(d <= 1e-5 * math.max(1, one[l][k]:abs():max()), what) end
        end
      end
    end)
  end

  it("a small product leaves the thread count as the caller set it", function()
    local saved = nm.blas_threads()
    local g = nm.generator(9)
    local W, x = nm.randn(g, 300, 400), nm.randn(g, 400)
    nm.blas_threads(1)
    local y1 = nm.zeros(300):mv(W, x)
    nm.blas_threads(2)
    local y2 = nm.zeros(300):mv(W, x)
    assert.equal(2, nm.blas_threads())
    nm.blas_threads(saved)
    assert.equal(0, (y1 - y2):abs():max())
  end)
end)
