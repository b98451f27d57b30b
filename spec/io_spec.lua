-- IDX and .npy files: files built byte by byte here (string.pack) read
-- correctly, round trips for every element type, gzip, every malformed
-- case an error naming the file and byte offset, and a cross-check with
-- NumPy when /usr/bin/python3 has it.
local nm = require "neuromic"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "'"))

local function path(name) return dir .. "/" .. name end

local function write(name, bytes)
  local p = path(name)
  local f = assert(io.open(p, "wb"))
  f:write(bytes)
  f:close()
  return p
end

local function slurp(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end

local function sh(cmd) return os.execute(cmd) == true end

local have_gzip = sh("command -v gzip >/dev/null 2>&1")
local have_numpy = sh("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1")

-- Values as float32 would store them.
local function f32(v) return (string.unpack("<f", string.pack("<f", v))) end

local function flatten(t, out)
  out = out or {}
  if type(t) ~= "table" then out[#out + 1] = t return out end
  for _, v in ipairs(t) do flatten(v, out) end
  return out
end

-- Independent IDX writer: magic 00 00 type rank, big-endian dims, data.
local IDX = {ubyte = {0x08, ">B"}, byte = {0x09, ">b"}, short = {0x0B, ">i2"},
             int = {0x0C, ">i4"}, float = {0x0D, ">f"}, double = {0x0E, ">d"}}

local function idx_bytes(kind, dims, values)
  local code, fmt = IDX[kind][1], IDX[kind][2]
  local parts = {string.pack(">BBBB", 0, 0, code, #dims)}
  for _, d in ipairs(dims) do parts[#parts + 1] = string.pack(">I4", d) end
  for _, v in ipairs(values) do parts[#parts + 1] = string.pack(fmt, v) end
  return table.concat(parts)
end

-- Independent .npy writer.
local function npy_dict(descr, shape, fortran)
  return string.format("{'descr': '%s', 'fortran_order': %s, 'shape': %s, }",
                       descr, fortran and "True" or "False", shape)
end

local function npy_bytes(dict, payload, version)
  version = version or 1
  local pre = version == 1 and 10 or 12
  local pad = (64 - (pre + #dict + 1) % 64) % 64
  local header = dict .. string.rep(" ", pad) .. "\n"
  local len = version == 1 and string.pack("<I2", #header) or string.pack("<I4", #header)
  return "\x93NUMPY" .. string.char(version, 0) .. len .. header .. (payload or "")
end

local function pack_all(fmt, values)
  local parts = {}
  for i, v in ipairs(values) do parts[i] = string.pack(fmt, v) end
  return table.concat(parts)
end

-- Asserts that f errors with a message naming fname, the file, the byte
-- offset (when given) and containing every phrase.
local function expect_error(f, p, offset, ...)
  local ok, msg = pcall(f, p)
  assert.is_false(ok, "expected an error for " .. p)
  msg = tostring(msg)
  assert.truthy(msg:find(p, 1, true), "file name missing: " .. msg)
  if offset then
    assert.truthy(msg:find(": byte " .. offset .. ":", 1, true),
                  "offset " .. offset .. " missing: " .. msg)
  end
  for _, phrase in ipairs({...}) do
    assert.truthy(msg:find(phrase, 1, true), "'" .. phrase .. "' missing: " .. msg)
  end
  return msg
end

describe("io", function()
  lazy_teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  describe("IDX reading", function()
    local cases = {
      {"ubyte", {0, 1, 2, 127, 128, 255}, "float32"},
      {"byte", {-128, -1, 0, 1, 127, 5}, "float32"},
      {"short", {-32768, -1, 0, 1, 32767, 1234}, "float32"},
      {"int", {-2147483648, -1, 0, 1, 2147483647, 123456789}, "float64"},
      {"float", {1.5, -2.25, 0, 1e30, -1e-30, f32(3.14159)}, "float32"},
      {"double", {0.1, -1e300, 0, 1 / 3, 5e-324, -7}, "float64"},
    }
    for _, c in ipairs(cases) do
      it("reads " .. c[1] .. " files built independently, default dtype " .. c[3], function()
        local p = write("t_" .. c[1] .. ".idx", idx_bytes(c[1], {2, 3}, c[2]))
        local t = nm.load_idx(p)
        assert.equal(c[3], t:dtype())
        assert.same({2, 3}, t:size())
        local expect = {}
        for i, v in ipairs(c[2]) do expect[i] = c[3] == "float32" and f32(v) or v end
        assert.same(expect, flatten(t:totable()))
        local d = nm.load_idx(p, "float64")
        assert.equal("float64", d:dtype())
        if c[1] ~= "float" then assert.same(c[2], flatten(d:totable())) end
      end)
    end

    it("reads MNIST-shaped images as N x rows x cols, labels as 1-D, and 4-D", function()
      local pixels = {}
      for i = 1, 2 * 3 * 4 do pixels[i] = (i * 37) % 256 end
      local t = nm.load_idx(write("img.idx", idx_bytes("ubyte", {2, 3, 4}, pixels)))
      assert.same({2, 3, 4}, t:size())
      assert.equal(pixels[1 * 12 + 2 * 4 + 3 + 1], t:get(2, 3, 4))
      assert.equal(pixels[4 + 1], t:get(1, 2, 1))
      assert.same(pixels, flatten(t:totable()))
      local labels = nm.load_idx(write("lab.idx", idx_bytes("ubyte", {5}, {7, 2, 1, 0, 4})))
      assert.same({7, 2, 1, 0, 4}, labels:totable())
      local vals = {}
      for i = 1, 16 do vals[i] = i end
      assert.same({2, 2, 2, 2}, nm.load_idx(write("four.idx",
        idx_bytes("short", {2, 2, 2, 2}, vals))):size())
      assert.same({0, 3}, nm.load_idx(write("empty.idx", idx_bytes("ubyte", {0, 3}, {}))):size())
    end)

    it("reads gzip-compressed files transparently", function()
      if not have_gzip then pending("no gzip command") return end
      local values = {}
      for i = 1, 300 do values[i] = (i * 7919) % 256 end
      local p = write("gz.idx", idx_bytes("ubyte", {3, 10, 10}, values))
      assert(sh("gzip -c '" .. p .. "' > '" .. p .. ".gz'"))
      local t = nm.load_idx(p .. ".gz")
      assert.same({3, 10, 10}, t:size())
      assert.same(values, flatten(t:totable()))
      local d = write("gzd.idx", idx_bytes("double", {4}, {1.5, -2, 1e100, 0}))
      assert(sh("gzip -f '" .. d .. "'"))
      assert.same({1.5, -2, 1e100, 0}, nm.load_idx(d .. ".gz"):totable())
    end)
  end)

  describe("IDX writing", function()
    local m = nm.tensor({{0, 1, 2}, {127, 128, 255}}, "float64")
    local kinds = {
      {"ubyte", m}, {"byte", nm.tensor{{-128, -1, 0}, {1, 2, 127}}},
      {"short", nm.tensor{{-32768, 0, 32767}, {5, 6, 7}}},
      {"int", nm.tensor({{-2147483648, 0, 2147483647}, {5, 6, 7}}, "float64")},
      {"float", nm.tensor{{0.5, -1.25, 3e20}, {1, 2, 3}}},
      {"double", nm.tensor({{0.1, 1 / 3, -1e300}, {1, 2, 3}}, "float64")},
    }
    for _, k in ipairs(kinds) do
      it("round-trips " .. k[1] .. " and writes the standard layout", function()
        local p = path("rt_" .. k[1] .. ".idx")
        nm.save_idx(p, k[2], k[1])
        assert.same(k[2]:totable(), nm.load_idx(p, k[2]:dtype()):totable())
        local bytes = slurp(p)
        local values = flatten(k[2]:totable())
        assert.equal(idx_bytes(k[1], {2, 3}, values), bytes)
      end)
    end

    it("defaults to the tensor's dtype and writes views in logical order", function()
      local base = nm.tensor({{1, 2, 3}, {4, 5, 6}}, "float64")
      local p = path("view.idx")
      nm.save_idx(p, base:t())
      assert.equal(idx_bytes("double", {3, 2}, {1, 4, 2, 5, 3, 6}), slurp(p))
      nm.save_idx(p, nm.tensor{1.5, 2})
      assert.equal(idx_bytes("float", {2}, {1.5, 2}), slurp(p))
    end)

    it("writes gzip when the name ends in .gz", function()
      local p = path("w.idx.gz")
      nm.save_idx(p, m, "ubyte")
      assert.equal("\x1f\x8b", slurp(p):sub(1, 2))
      assert.same(m:totable(), nm.load_idx(p, "float64"):totable())
      if have_gzip then
        assert(sh("gzip -dc '" .. p .. "' > '" .. path("w.idx") .. "'"))
        assert.equal(idx_bytes("ubyte", {2, 3}, flatten(m:totable())), slurp(path("w.idx")))
      end
    end)

    it("refuses values the element type cannot hold, leaving no file", function()
      local function save_err(t, kind, ...)
        local p = path("bad_" .. kind .. ".idx")
        local ok, msg = pcall(nm.save_idx, p, t, kind)
        assert.is_false(ok)
        assert.truthy(msg:find("save_idx", 1, true), msg)
        assert.truthy(msg:find(p, 1, true), msg)
        for _, phrase in ipairs({...}) do assert.truthy(msg:find(phrase, 1, true), msg) end
        assert.is_false(exists(p))
      end
      save_err(nm.tensor{{1, 2}, {3, 256}}, "ubyte", "element [2, 2] = 256", "uint8")
      save_err(nm.tensor{-1}, "ubyte", "element [1] = -1")
      save_err(nm.tensor{0.5}, "ubyte", "= 0.5")
      save_err(nm.tensor{0 / 0}, "short", "int16")
      save_err(nm.tensor{128}, "byte", "int8")
      save_err(nm.tensor({2 ^ 31}, "float64"), "int", "int32")
      save_err(nm.tensor{1}, "int64", "IDX files cannot hold int64")
      local ok, msg = pcall(nm.save_idx, path("x.idx"), m, "complex")
      assert.is_false(ok)
      assert.truthy(msg:find("unknown element type 'complex'", 1, true), msg)
      local nodir = path("no/such/dir/x.idx")
      ok, msg = pcall(nm.save_idx, nodir, m)
      assert.is_false(ok)
      assert.truthy(msg:find(nodir .. ": cannot open for writing", 1, true), msg)
    end)
  end)

  describe("malformed IDX files", function()
    local good = idx_bytes("ubyte", {2, 3}, {1, 2, 3, 4, 5, 6})
    local cases = {
      {"empty", "", 0, "truncated IDX header"},
      {"short header", "\0\0", 2, "truncated IDX header"},
      {"bad magic", "\1" .. good:sub(2), 0, "bad IDX magic 01 00 08 02"},
      {"unknown type", "\0\0\x0A\2" .. good:sub(5), 2, "unknown IDX element type 0x0a"},
      {"too many dims", string.pack(">BBBB", 0, 0, 8, 5) .. string.rep("\0\0\0\1", 5) .. "x",
       3, "5 dimensions", "at most 4"},
      {"truncated dims", good:sub(1, 4) .. "\0\0\0\2", 8, "truncated IDX header"},
      {"truncated payload", good:sub(1, -3), 16, "truncated payload", "2 x 3 uint8",
       "only 4 bytes after the 12-byte header"},
      {"trailing bytes", good .. "\0\0", 18, "2 unexpected bytes after the payload"},
      {"overflowing dims", string.pack(">BBBBI4I4I4", 0, 0, 0x0E, 3, 0xFFFFFFFF, 0xFFFFFFFF, 2),
       8, "dimension 2 (4294967295) makes the shape 4294967295 x 4294967295 x 2 too large"},
      -- issue 18: an empty shape whose other sizes overflow the strides
      {"empty with huge dims", "\0\0\8\3\0\0\0\0\255\255\255\255\255\255\255\255", 12,
       "dimension 3 (4294967295) makes the shape 0 x 4294967295 x 4294967295 too large"},
      {"huge dims, no data", string.pack(">BBBBI4I4I4", 0, 0, 8, 3, 60000, 28, 28), 16,
       "truncated payload", "60000 x 28 x 28 uint8 (47040000 bytes)"},
      {"wrong dims for the data", idx_bytes("ubyte", {3, 3}, {1, 2, 3, 4, 5, 6}), 18,
       "truncated payload"},
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " is an error naming the file and byte " .. c[3], function()
        local p = write("bad_" .. c[1]:gsub(" ", "_") .. ".idx", c[2])
        expect_error(nm.load_idx, p, c[3], "load_idx", table.unpack(c, 4))
      end)
    end

    it("a gzip file declaring more data than it can hold is refused before allocating", function()
      if not have_gzip then pending("no gzip command") return end
      local p = write("bomb.idx", string.pack(">BBBBI4I4I4", 0, 0, 8, 3, 1000, 1000, 100))
      assert(sh("gzip -f '" .. p .. "'"))
      expect_error(nm.load_idx, p .. ".gz", 16, "cannot hold that much data")
      local over = write("over.idx", string.pack(">BBBBI4I4", 0, 0, 8, 2, 0x7FFFFFFF, 4))
      assert(sh("gzip -f '" .. over .. "'"))
      expect_error(nm.load_idx, over .. ".gz", 12, "over the 4 GiB limit")
    end)

    it("truncated and corrupt gzip streams are errors", function()
      if not have_gzip then pending("no gzip command") return end
      local g = nm.generator(5)
      local values = {}
      for i = 1, 4000 do values[i] = g:integer(0, 255) end
      local p = write("trunc.idx", idx_bytes("ubyte", {4000}, values))
      assert(sh("gzip -f '" .. p .. "'"))
      local gz = slurp(p .. ".gz")
      local cut = write("cut.idx.gz", gz:sub(1, #gz // 2))
      local msg = expect_error(nm.load_idx, cut, nil, "load_idx", "truncated gzip stream in the payload")
      assert.truthy(msg:find(": byte %d+:"), msg)
      -- a flipped CRC byte: reported as a checksum error at the end of the
      -- data (4008 bytes) and the CRC's own compressed byte (issue 18)
      local crc = #gz - 7
      local bad = gz:sub(1, crc - 1) .. string.char(gz:byte(crc) ~ 0xFF) .. gz:sub(crc + 1)
      expect_error(nm.load_idx, write("crc.idx.gz", bad), 4008, "gzip checksum error",
                   "compressed byte " .. (crc - 1))
      -- corrupt deflate data (block type 3 right after a 10-byte gzip header)
      local broken = "\31\139\8\0\0\0\0\0\0\3\7" .. string.rep("\0", 20)
      expect_error(nm.load_idx, write("broken.idx.gz", broken), 0, "corrupt gzip data",
                   "at compressed byte 11", "invalid block type")
      -- trailing bytes inside the compressed stream
      local extra = write("extra.idx", idx_bytes("ubyte", {2}, {1, 2}) .. "xyz")
      assert(sh("gzip -f '" .. extra .. "'"))
      expect_error(nm.load_idx, extra .. ".gz", 10, "unexpected bytes after the payload")
    end)

    it("missing files and directories are errors naming them", function()
      expect_error(nm.load_idx, path("absent.idx"), nil, "cannot open", "No such file")
      expect_error(nm.load_idx, dir, nil, "is a directory")
      expect_error(nm.load_npy, path("absent.npy"), nil, "load_npy", "cannot open")
    end)
  end)

  describe(".npy reading", function()
    local cases = {
      {"<f4", "<f", {1.5, -2.25, 0, 1e30, -1e-30, f32(0.1)}, "float32"},
      {"<f8", "<d", {0.1, -1e300, 0, 1 / 3, 5e-324, -7}, "float64"},
      {"|u1", "B", {0, 1, 2, 127, 128, 255}, "float32"},
      {"<u1", "B", {9, 8, 7, 6, 5, 4}, "float32"},
      {"|i1", "b", {-128, -1, 0, 1, 127, 3}, "float32"},
      {"|b1", "B", {0, 1, 1, 0, 0, 1}, "float32"},
      {"<i2", "<i2", {-32768, -1, 0, 1, 32767, 9}, "float32"},
      {"<u2", "<I2", {0, 65535, 1, 2, 3, 4}, "float32"},
      {"<i4", "<i4", {-2147483648, -1, 0, 1, 2147483647, 123456789}, "float64"},
      {"<u4", "<I4", {0, 4294967295, 1, 2, 3, 4}, "float64"},
      {"<i8", "<i8", {math.mininteger, -1, 0, 1, 2 ^ 53, 1 << 40}, "float64"},
    }
    for _, c in ipairs(cases) do
      it("reads " .. c[1] .. " (default dtype " .. c[4] .. ")", function()
        local bytes = npy_bytes(npy_dict(c[1], "(2, 3)"), pack_all(c[2], c[3]))
        local t = nm.load_npy(write("t" .. c[1]:sub(2) .. ".npy", bytes))
        assert.equal(c[4], t:dtype())
        assert.same({2, 3}, t:size())
        local expect = {}
        for i, v in ipairs(c[3]) do expect[i] = c[4] == "float32" and f32(v) or v + 0.0 end
        assert.same(expect, flatten(t:totable()))
      end)
    end

    it("reads 64-bit integers exactly or refuses them (issue 18)", function()
      -- exact in float64: kept, whatever the magnitude (2^63, -2^63, 2^53 + 2)
      local ok = npy_bytes(npy_dict("<u8", "(3,)"), string.pack("<I8<I8<I8", 1 << 63, 5,
                                                                (1 << 53) + 2))
      assert.same({2.0 ^ 63, 5, 2.0 ^ 53 + 2}, nm.load_npy(write("u8.npy", ok)):totable())
      -- 2^64 - 1 and 2^53 + 1 have no float64: refused, naming element and byte
      local big = npy_bytes(npy_dict("<u8", "(2,)"), string.pack("<i8<i8", 5, -1))
      expect_error(nm.load_npy, write("u8big.npy", big), 136, "element 2 = 18446744073709551615",
                   "no exact float64", "refused rather than rounded")
      local odd = npy_bytes(npy_dict("<i8", "(1,)"), string.pack("<i8", -((1 << 53) + 1)))
      expect_error(nm.load_npy, write("i8odd.npy", odd), 128, "element 1 = -9007199254740993")
      -- whatever the dtype asked for
      expect_error(function(p) return nm.load_npy(p, "float32") end, path("u8big.npy"), 136,
                   "no exact float64")
    end)

    it("reads versions 2.0 and 3.0, any key order, quotes, spacing and Python 2 longs", function()
      local payload = pack_all("<f", {1, 2, 3, 4, 5, 6})
      local headers = {
        {npy_dict("<f4", "(2, 3)"), 2},
        {npy_dict("<f4", "(2, 3)"), 3},
        {"{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}", 1},
        {"{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":(2,3)}", 1},
        {"{ 'descr' : '<f4' ,\n 'fortran_order' : False , 'shape' : ( 2 , 3 , ) , }", 1},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }", 1},
      }
      for i, h in ipairs(headers) do
        local t = nm.load_npy(write("v" .. i .. ".npy", npy_bytes(h[1], payload, h[2])))
        assert.same({{1, 2, 3}, {4, 5, 6}}, t:totable())
      end
    end)

    it("reads 1-D, 0-D and empty arrays, and takes a dtype", function()
      local v = nm.load_npy(write("one.npy", npy_bytes(npy_dict("<i4", "(4,)"),
                                                        pack_all("<i4", {4, 3, 2, 1}))), "float32")
      assert.equal("float32", v:dtype())
      assert.same({4, 3, 2, 1}, v:totable())
      local s = nm.load_npy(write("zero.npy", npy_bytes(npy_dict("<f8", "()"), string.pack("<d", 2.5))))
      assert.equal(0, s:dim())
      assert.equal(2.5, s:totable())
      local e = nm.load_npy(write("emp.npy", npy_bytes(npy_dict("<f4", "(0, 5)"), "")))
      assert.same({0, 5}, e:size())
    end)

    it("reads gzip-compressed .npy too", function()
      if not have_gzip then pending("no gzip command") return end
      local p = write("c.npy", npy_bytes(npy_dict("<f8", "(3,)"), pack_all("<d", {1, 2, 3})))
      assert(sh("gzip -f '" .. p .. "'"))
      assert.same({1, 2, 3}, nm.load_npy(p .. ".gz"):totable())
    end)
  end)

  describe(".npy writing", function()
    local t = nm.tensor({{0, 1, 2}, {250, 255, 7}}, "float64")
    local kinds = {
      {"float32", "<f4", "<f", t:float()}, {"float64", "<f8", "<d", t},
      {"uint8", "|u1", "B", t}, {"int32", "<i4", "<i4", nm.tensor({{-5, 0, 2 ^ 31 - 1}, {1, 2, 3}}, "float64")},
      {"int64", "<i8", "<i8", nm.tensor({{-2 ^ 62, 0, 2 ^ 53}, {1, 2, 3}}, "float64")},
    }
    for _, k in ipairs(kinds) do
      it("writes " .. k[1] .. " in the standard layout and reads it back", function()
        local p = path("w_" .. k[1] .. ".npy")
        nm.save_npy(p, k[4], k[1] ~= k[4]:dtype() and k[1] or nil)
        local bytes = slurp(p)
        assert.equal("\x93NUMPY\1\0", bytes:sub(1, 8))
        local hlen = string.unpack("<I2", bytes, 9)
        assert.equal(0, (10 + hlen) % 64)
        local header = bytes:sub(11, 10 + hlen)
        assert.equal(npy_dict(k[2], "(2, 3)"), header:match("^(.-)%s*\n$"))
        local values = flatten(k[4]:totable())
        for i, v in ipairs(values) do if k[3]:find("i") then values[i] = math.tointeger(v) end end
        assert.equal(pack_all(k[3], values), bytes:sub(11 + hlen))
        assert.same(k[4]:totable(), nm.load_npy(p, k[4]:dtype()):totable())
      end)
    end

    it("writes views in C order, 1-D shapes as (n,) and refuses bad values", function()
      local p = path("view.npy")
      nm.save_npy(p, nm.tensor{{1, 2, 3}, {4, 5, 6}}:t())
      assert.same({{1, 4}, {2, 5}, {3, 6}}, nm.load_npy(p):totable())
      nm.save_npy(p, nm.tensor{1, 2})
      assert.truthy(slurp(p):find("'shape': (2,)", 1, true))
      local q = path("bad.npy")
      local ok, msg = pcall(nm.save_npy, q, nm.tensor{300}, "uint8")
      assert.is_false(ok)
      assert.truthy(msg:find("save_npy: " .. q .. ": element [1] = 300", 1, true), msg)
      ok, msg = pcall(nm.save_npy, q, nm.tensor({2 ^ 31}, "float64"), "int32")
      assert.is_false(ok)
      assert.truthy(msg:find("int32", 1, true), msg)
      assert.is_false(exists(q))
    end)
  end)

  describe("malformed .npy files", function()
    local pay = pack_all("<f", {1, 2, 3, 4, 5, 6})
    local function at(dict, text) return 10 + dict:find(text, 1, true) - 1 end
    local fortran = npy_dict("<f4", "(2, 3)", true)
    local big = npy_dict(">f4", "(2, 3)")
    local cplx = npy_dict("<c8", "(2, 3)")
    local nonshape = npy_dict("<f4", "(6)")
    local neg = npy_dict("<f4", "(-6,)")
    local five = npy_dict("<f4", "(1, 1, 1, 1, 6)")
    local missing = "{'descr': '<f4', 'fortran_order': False}"
    local dup = "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,)}"
    local unknown = "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}"
    local unterminated = "{'descr': '<f4"
    local garbage = npy_dict("<f4", "(2, 3)") .. " junk"
    local structured = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,)}"
    local good = npy_bytes(npy_dict("<f4", "(2, 3)"), pay)
    local cases = {
      {"empty", "", 0, "truncated .npy preamble"},
      {"bad magic", "\x93NUMPX" .. good:sub(7), 0, "bad .npy magic"},
      {"version 4", good:sub(1, 6) .. "\4\0" .. good:sub(9), 6, "unsupported .npy format version 4.0"},
      {"fortran order", npy_bytes(fortran, pay), at(fortran, "True"), "fortran_order is True"},
      {"big-endian", npy_bytes(big, pay), at(big, "'>f4'"), "big-endian dtype '>f4'"},
      {"complex", npy_bytes(cplx, pay), at(cplx, "'<c8'"), "unsupported dtype '<c8'"},
      {"structured", npy_bytes(structured, pay), at(structured, "["), "structured dtypes"},
      {"shape not a tuple", npy_bytes(nonshape, pay), at(nonshape, ")"), "shape must be a tuple"},
      {"negative shape", npy_bytes(neg, pay), at(neg, "-"), "non-negative integers"},
      {"five dims", npy_bytes(five, pay), at(five, "6)"), "more than 4 dimensions"},
      {"missing key", npy_bytes(missing, pay), 10, "missing key 'shape'"},
      {"duplicate key", npy_bytes(dup, pay), at(dup, "'descr': '<f4', 'f"), "duplicate key 'descr'"},
      {"unknown key", npy_bytes(unknown, pay), at(unknown, "'x'"), "unexpected key 'x'"},
      {"unterminated string", npy_bytes(unterminated, pay), at(unterminated, "'<f4"),
       "unterminated string"},
      {"text after the dict", npy_bytes(garbage, pay), at(garbage, "junk"), "unexpected text"},
      {"truncated header", good:sub(1, 40), 40, "truncated header"},
      {"truncated payload", good:sub(1, -5), #good - 4, "truncated payload", "2 x 3 float32 (24 bytes)"},
      {"trailing bytes", good .. "\0\0\0\0", #good, "4 unexpected bytes after the payload"},
      {"shape disagrees with data", npy_bytes(npy_dict("<f4", "(2, 2)"), pay),
       #npy_bytes(npy_dict("<f4", "(2, 2)")) + 16,
       "unexpected bytes"},
      -- issue 18: a NUL (or any control byte) inside a string is no dtype
      {"NUL in dtype", npy_bytes(npy_dict("<f4\0", "(2, 3)"), pay),
       at(npy_dict("<f4\0", "(2, 3)"), "\0"), "control byte 0x00 in a string"},
      {"NUL in key", npy_bytes("{'descr\0': '<f4', 'fortran_order': False, 'shape': (6,)}", pay),
       17, "control byte 0x00"},
      {"implausible header length", "\x93NUMPY\2\0" .. string.pack("<I4", 1 << 30), 8,
       "implausible"},
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " is an error naming the file and byte " .. c[3], function()
        local p = write("bad_" .. c[1]:gsub("[^%w]", "_") .. ".npy", c[2])
        expect_error(nm.load_npy, p, c[3], "load_npy", table.unpack(c, 4))
      end)
    end
  end)

  describe("saving without losing the old file (issue 18)", function()
    local function is_root()
      local f = io.popen("id -u 2>/dev/null")
      local uid = f and f:read("l")
      if f then f:close() end
      return uid == "0"
    end

    local function leftovers(folder, name)
      local f = assert(io.popen("ls -a '" .. folder .. "'"))
      local found = {}
      for line in f:lines() do
        if line:find(name, 1, true) and line ~= name then found[#found + 1] = line end
      end
      f:close()
      return found
    end

    it("a save that fails on a full disk keeps the old file whole and leaves no temp file", function()
      if not is_root() then pending("needs root to mount a small tmpfs") return end
      local mnt = path("full")
      assert(sh("mkdir -p '" .. mnt .. "'"))
      if not sh("mount -t tmpfs -o size=64k tmpfs '" .. mnt .. "' 2>/dev/null") then
        pending("mount -t tmpfs failed (no privilege in this container)") return
      end
      local ok, err = pcall(function()
        local small = nm.tensor{{1, 2, 3}, {4, 5, 6}}
        local big = nm.zeros(40000):fill(7)          -- 160 KB, over the 64 KB disk
        for _, c in ipairs{{"a.npy", nm.save_npy, nm.load_npy}, {"a.idx", nm.save_idx, nm.load_idx},
                           {"a.idx.gz", nm.save_idx, nm.load_idx}} do
          local p = mnt .. "/" .. c[1]
          c[2](p, small)
          local before = slurp(p)
          local big_one = c[1]:find("gz", 1, true) and nm.rand(nm.generator(1), 40000) or big
          local ok2, msg = pcall(c[2], p, big_one)
          assert.is_false(ok2)
          assert.truthy(msg:find(p, 1, true), msg)
          assert.truthy(msg:find("No space left on device", 1, true), msg)
          assert.equal(before, slurp(p))
          assert.same(small:totable(), c[3](p):totable())
          assert.same({}, leftovers(mnt, c[1]))
        end
      end)
      sh("umount '" .. mnt .. "'")
      assert(ok, err)
    end)

    it("saving to a device writes it in place and never removes it", function()
      if not exists("/dev/full") then pending("no /dev/full") return end
      local ok, msg = pcall(nm.save_npy, "/dev/full", nm.zeros(100000))
      assert.is_false(ok)
      assert.truthy(msg:find("/dev/full: byte %d+: write error %(No space left on device%)"), msg)
      assert.is_true(sh("test -c /dev/full"))
    end)

    it("replaces the file atomically, keeps its mode, follows a symbolic link", function()
      local p = path("mode.npy")
      nm.save_npy(p, nm.tensor{1})
      assert(sh("chmod 640 '" .. p .. "'"))
      nm.save_npy(p, nm.tensor{2, 3})
      assert.same({2, 3}, nm.load_npy(p):totable())
      local f = io.popen("stat -c %a '" .. p .. "'")
      assert.equal("640", f:read("l"))
      f:close()
      local link = path("link.npy")
      assert(sh("ln -sf mode.npy '" .. link .. "'"))
      nm.save_npy(link, nm.tensor{4})
      assert.is_true(sh("test -L '" .. link .. "'"))
      assert.same({4}, nm.load_npy(p):totable())
      assert.same({}, leftovers(dir, "mode.npy"))
      -- a value the type cannot hold: the old file stays as it was
      assert.is_false(pcall(nm.save_npy, p, nm.tensor{300}, "uint8"))
      assert.same({4}, nm.load_npy(p):totable())
    end)

    it("refuses a path with a NUL byte instead of cutting it short", function()
      local p = path("nul.npy")
      for _, f in ipairs{nm.save_npy, nm.save_idx} do
        local ok, msg = pcall(f, p .. "\0.x", nm.tensor{1})
        assert.is_false(ok)
        assert.truthy(msg:find("path contains a NUL byte", 1, true), msg)
        assert.is_false(exists(p))
      end
      nm.save_npy(p, nm.tensor{1})
      for _, f in ipairs{nm.load_npy, nm.load_idx} do
        local ok, msg = pcall(f, p .. "\0garbage")
        assert.is_false(ok)
        assert.truthy(msg:find("path contains a NUL byte (at byte " .. (#p + 1) .. ")", 1, true), msg)
      end
    end)
  end)

  describe("hostile headers and streams (issue 18)", function()
    it("a 12-byte header through a pipe allocates nothing for its 512 MB", function()
      if (os.getenv("NEUROMIC_EXE") or ""):find("asan") then
        pending("ulimit -v cannot bound a sanitizer build's address space") return
      end
      local exe = os.getenv("NEUROMIC_EXE") or "./neuromic"
      local out = path("pipe.out")
      -- 800 MB of address space: the interpreter fits, a 2 GiB tensor does not;
      -- the cap (max_bytes) raised out of the way: streaming alone must do it
      local function run(opts)
        local cmd = string.format("printf '\\0\\0\\010\\002\\0\\0\\200\\0\\0\\0\\100\\0' | "
          .. "sh -c 'ulimit -v 800000; %q -l nm=neuromic -e \"print(pcall(nm.load_idx, [[/dev/stdin]], %s))\"' > %q 2>&1",
          exe, opts, out)
        sh(cmd)
        return slurp(out)
      end
      local got = run("{max_bytes = 1 << 40}")
      assert.truthy(got:find("truncated payload: the header declares 32768 x 16384 uint8", 1, true), got)
      assert.truthy(got:find("the stream ends after 0 of them", 1, true), got)
      -- by default the 2 GiB request is over the cap and refused at once
      got = run("nil")
      assert.truthy(got:find("2147483648 bytes as float32, over the limit of 1073741824 bytes", 1, true), got)
    end)

    it("a gzip stream is read before allocating, and truncation is found first", function()
      if not have_gzip then pending("no gzip command") return end
      local p = write("short.idx", string.pack(">BBBBI4I4", 0, 0, 8, 2, 100, 100) .. string.rep("\1", 500))
      assert(sh("gzip -f '" .. p .. "'"))
      expect_error(nm.load_idx, p .. ".gz", 512, "truncated payload", "100 x 100 uint8",
                   "gzip stream ends after 500 of them")
      -- the 29-byte gzip that crashed both fuzz targets (issue 18): an empty
      -- shape whose other sizes overflowed the strides
      local z = write("z.idx", "\0\0\8\3\0\0\0\0\255\255\255\255\255\255\255\255")
      assert(sh("gzip -n -f '" .. z .. "'"))
      assert.equal(29, #slurp(z .. ".gz"))
      expect_error(nm.load_idx, z .. ".gz", 12, "makes the shape 0 x 4294967295 x 4294967295 too large")
    end)

    it("caps what a header may request (max_bytes, NEUROMIC_LOAD_MAX_BYTES)", function()
      local p = path("cap.npy")
      nm.save_npy(p, nm.zeros(100, 10), "uint8")             -- 4000 bytes as float32
      assert.same({100, 10}, nm.load_npy(p, {max_bytes = 4000}):size())
      local ok, msg = pcall(nm.load_npy, p, {max_bytes = 3999})
      assert.is_false(ok)
      assert.truthy(msg:find("100 x 10 uint8 elements, 4000 bytes as float32, over the limit "
                             .. "of 3999 bytes", 1, true), msg)
      ok, msg = pcall(nm.load_npy, p, "float64", {max_bytes = 4000})
      assert.is_false(ok)
      assert.truthy(msg:find("8000 bytes as float64", 1, true), msg)
      assert.equal("float64", nm.load_npy(p, {dtype = "float64"}):dtype())
      local exe = os.getenv("NEUROMIC_EXE") or "./neuromic"
      local out = path("cap.out")
      sh(string.format("NEUROMIC_LOAD_MAX_BYTES=100 %q -l nm=neuromic -e 'print(pcall(nm.load_npy, %q))' > %q 2>&1",
                       exe, p, out))
      assert.truthy(slurp(out):find("over the limit of 100 bytes", 1, true), slurp(out))
      ok, msg = pcall(nm.load_npy, p, {max_bytes = -1})
      assert.is_false(ok)
      assert.truthy(msg:find("max_bytes must be a non-negative integer", 1, true), msg)
    end)

    it("a FIFO with no writer waits, as cat does, and Ctrl-C ends the wait", function()
      if not sh("command -v mkfifo >/dev/null 2>&1") then pending("no mkfifo") return end
      local exe = os.getenv("NEUROMIC_EXE") or "./neuromic"
      local fifo, out = path("fifo"), path("fifo.out")
      assert(sh("mkfifo '" .. fifo .. "'"))
      local script = string.format([[%q -l nm=neuromic -e 'print(pcall(nm.load_idx, %q))' > %q 2>&1 &
pid=$!; sleep 1; kill -INT $pid; i=0
while kill -0 $pid 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
kill -0 $pid 2>/dev/null && { kill -9 $pid; exit 1; }; exit 0]], exe, fifo, out)
      assert.is_true(sh(script), "still waiting 5 s after Ctrl-C")
      assert.truthy(slurp(out):find("false\tinterrupted!", 1, true), slurp(out))
      -- with a writer it reads like any stream
      assert(sh(string.format("printf '\\0\\0\\010\\001\\0\\0\\0\\002\\007\\011' > %q &", fifo)))
      assert.same({7, 9}, nm.load_idx(fifo):totable())
    end)

    it("refuses data after the gzip stream; reads concatenated gzip members", function()
      if not have_gzip then pending("no gzip command") return end
      local p = write("tail.idx", idx_bytes("ubyte", {4}, {1, 2, 3, 4}))
      assert(sh("gzip -n -f '" .. p .. "'"))
      local gz = slurp(p .. ".gz")
      local junk = write("junk.idx.gz", gz .. "garbage")
      expect_error(nm.load_idx, junk, 12, "unexpected data after the end of the gzip stream",
                   "compressed byte " .. #gz)
      -- two members, split inside the payload: one stream, as gzip(1) reads it
      local a = write("part1", idx_bytes("ubyte", {4}, {1, 2}))
      local b = write("part2", string.char(3, 4))
      assert(sh("gzip -n -f '" .. a .. "' '" .. b .. "'"))
      local two = write("two.idx.gz", slurp(a .. ".gz") .. slurp(b .. ".gz"))
      assert.same({1, 2, 3, 4}, nm.load_idx(two):totable())
    end)
  end)

  describe("NumPy cross-check", function()
    local function python(code)
      local p = write("check.py", code)
      return sh("/usr/bin/python3 '" .. p .. "'")
    end

    it("numpy reads what neuromic writes", function()
      if not have_numpy then pending("/usr/bin/python3 with numpy not available") return end
      local t = nm.tensor({{0, 1, 2}, {3, 4, 255}}, "float64")
      nm.save_npy(path("x_f32.npy"), t:float())
      nm.save_npy(path("x_f64.npy"), nm.tensor({{0.1, -2}, {1e300, 1 / 3}}, "float64"))
      nm.save_npy(path("x_u8.npy"), t, "uint8")
      nm.save_npy(path("x_i32.npy"), nm.tensor({-7, 0, 2147483647}, "float64"), "int32")
      nm.save_npy(path("x_i64.npy"), nm.tensor({-2 ^ 60, 5}, "float64"), "int64")
      nm.save_npy(path("x_t.npy"), t:t())
      nm.save_npy(path("x_0d.npy"), nm.full(2.5, {}, "float64"))
      assert.is_true(python(string.format([==[
import numpy as np, sys
d = %q
def chk(name, expect, dtype):
    a = np.load(d + '/' + name)
    e = np.array(expect, dtype=dtype)
    if a.dtype != e.dtype or a.shape != e.shape or not np.array_equal(a, e):
        print(name, repr(a), repr(e)); sys.exit(1)
chk('x_f32.npy', [[0, 1, 2], [3, 4, 255]], np.float32)
chk('x_f64.npy', [[0.1, -2], [1e300, 1/3]], np.float64)
chk('x_u8.npy', [[0, 1, 2], [3, 4, 255]], np.uint8)
chk('x_i32.npy', [-7, 0, 2147483647], np.int32)
chk('x_i64.npy', [-2**60, 5], np.int64)
chk('x_t.npy', [[0, 3], [1, 4], [2, 255]], np.float64)
chk('x_0d.npy', 2.5, np.float64)
]==], dir)))
    end)

    it("neuromic reads what numpy writes and rejects what it cannot hold", function()
      if not have_numpy then pending("/usr/bin/python3 with numpy not available") return end
      assert.is_true(python(string.format([==[
import numpy as np
d = %q
a = np.arange(12).reshape(3, 4)
np.save(d + '/p_f32.npy', a.astype(np.float32))
np.save(d + '/p_f64.npy', a / 7.0)
np.save(d + '/p_u8.npy', a.astype(np.uint8) * 20)
np.save(d + '/p_i32.npy', a.astype(np.int32) - 6)
np.save(d + '/p_i64.npy', a.astype(np.int64) * (1 << 40))
np.save(d + '/p_bool.npy', a %% 3 == 0)
np.save(d + '/p_1d.npy', np.arange(5, dtype=np.float64))
np.save(d + '/p_0d.npy', np.float64(4.5))
np.save(d + '/p_empty.npy', np.zeros((0, 3), np.float32))
np.save(d + '/p_fortran.npy', np.asfortranarray(a.astype(np.float64)))
np.save(d + '/p_big.npy', a.astype('>f8'))
np.save(d + '/p_c16.npy', a.astype(np.complex128))
with open(d + '/p_v2.npy', 'wb') as f:
    np.lib.format.write_array(f, a.astype(np.float32), version=(2, 0))
]==], dir)))
      local function grid(f)
        local t = {}
        for i = 1, 3 do
          t[i] = {}
          for j = 1, 4 do t[i][j] = f((i - 1) * 4 + (j - 1)) end
        end
        return t
      end
      local function load(name) return nm.load_npy(path(name)) end
      assert.same(grid(function(k) return k end), load("p_f32.npy"):totable())
      assert.equal("float32", load("p_f32.npy"):dtype())
      assert.same(grid(function(k) return k / 7.0 end), load("p_f64.npy"):totable())
      assert.same(grid(function(k) return (k * 20) % 256 end), load("p_u8.npy"):totable())
      assert.same(grid(function(k) return k - 6 end), load("p_i32.npy"):totable())
      assert.same(grid(function(k) return k * 2.0 ^ 40 end), load("p_i64.npy"):totable())
      assert.same(grid(function(k) return k % 3 == 0 and 1 or 0 end), load("p_bool.npy"):totable())
      assert.same({0, 1, 2, 3, 4}, load("p_1d.npy"):totable())
      assert.equal(4.5, load("p_0d.npy"):totable())
      assert.same({0, 3}, load("p_empty.npy"):size())
      assert.same(grid(function(k) return k end), load("p_v2.npy"):totable())
      expect_error(nm.load_npy, path("p_fortran.npy"), nil, "fortran_order is True")
      expect_error(nm.load_npy, path("p_big.npy"), nil, "big-endian dtype '>f8'")
      expect_error(nm.load_npy, path("p_c16.npy"), nil, "unsupported dtype '<c16'")
    end)
  end)
end)
