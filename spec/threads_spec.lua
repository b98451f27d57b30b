-- BLAS threads: results do not depend on the thread count (batch-1 and
-- minibatch training of an MLP, BP and FA, and the products behind it, at
-- 1 and 2 OpenBLAS threads give the same bits), and small products run on
-- one thread without changing the count a caller set (nm_blas_serial_begin).
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
    it(string.format("batch %d, %s, %s, %s: the same bits at 1 and 2 threads", table.unpack(c)),
       function()
      local one, after1 = train(1, table.unpack(c))
      local two, after2 = train(2, table.unpack(c))
      assert.equal(1, after1)
      assert.equal(2, after2)          -- small products left the count as it was
      for l = 1, #one do
        for k = 1, 2 do
          local d = (one[l][k] - two[l][k]):abs():max()
          assert.equal(0, d, string.format("layer %d %s", l, k == 1 and "W" or "b"))
        end
      end
    end)
  end

  it("a large product at 2 threads equals the 1-thread product", function()
    local saved = nm.blas_threads()
    local g = nm.generator(9)
    local A, B = nm.randn(g, 300, 400), nm.randn(g, 400, 500)
    nm.blas_threads(1)
    local C1 = nm.zeros(300, 500):mm(A, B)
    nm.blas_threads(2)
    local C2 = nm.zeros(300, 500):mm(A, B)
    nm.blas_threads(saved)
    assert.equal(0, (C1 - C2):abs():max())
  end)
end)
