-- nm/checkpoint.lua: the full state of a run in one binary file.
--
-- A state is a tree of tables whose leaves are numbers, strings,
-- booleans, tensors and generators. Numbers keep their subtype and bits
-- (integers as 8-byte integers, floats as 8-byte doubles), tensors keep
-- dtype, shape and raw bytes, generators their g:state(): a state that is
-- loaded back is bit-identical to the one saved.
--
-- File layout (little-endian):
--   header  32 bytes: magic "NMCKPT\r\n", u32 format version, u32 flags
--           (1 = tensor bytes little-endian), u64 payload length,
--           u32 block size, u32 CRC-32 of the header's first 28 bytes
--   payload the encoded tree
--   table   one u32 CRC-32 per block of the payload, then a u32 CRC-32
--           of that table
-- Per-block checksums let a corrupted file be reported with the byte
-- range that is damaged. Files are replaced atomically, and the previous
-- checkpoint is kept as PATH.1; load() falls back to it, with a warning,
-- when the latest one is missing, truncated or corrupted.

local nm = require "neuromic"

local checkpoint = {}

local pack, unpack, format, concat, sort = string.pack, string.unpack, string.format,
  table.concat, table.sort

local MAGIC = "NMCKPT\r\n"
local VERSION = 1
local BLOCK = 4096
local HEADER = "<c8I4I4I8I4"          -- magic, version, flags, length, block size
local HEADER_SIZE = 32

local LITTLE = pack("=i4", 1):byte() == 1
local DTYPE_CODE = {float32 = 0, float64 = 1}
local DTYPE_NAME = {[0] = "float32", [1] = "float64"}

checkpoint.BLOCK = BLOCK
checkpoint.HEADER_SIZE = HEADER_SIZE

local function is_tensor(v)
  return nm.is_tensor ~= nil and nm.is_tensor(v)
end

-- A generator is a userdata with state/set_state methods (nm.generator).
local function is_generator(v)
  if type(v) ~= "userdata" or is_tensor(v) then return false end
  local ok, st = pcall(function() return v.state end)
  local ok2, set = pcall(function() return v.set_state end)
  return ok and ok2 and type(st) == "function" and type(set) == "function"
end

---------------------------------------------------------------------------
-- Encoding

-- Sorted keys give the same bytes for the same state, whatever the
-- table's insertion history.
local KEY_ORDER = {number = 1, string = 2, boolean = 3}
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return KEY_ORDER[ta] < KEY_ORDER[tb] end
  if ta == "boolean" then return (not a) and b end
  return a < b
end

local encode

local function encode_tensor(t, out)
  local dt = DTYPE_CODE[t:dtype()]
  local nd = t:dim()
  local parts = {pack("<c1BB", "X", dt, nd)}
  for d = 1, nd do parts[#parts + 1] = pack("<i8", t:size(d)) end
  out[#out + 1] = concat(parts)
  out[#out + 1] = pack("<s8", t:tobytes())
end

function encode(v, out, path, seen)
  local tv = type(v)
  if tv == "boolean" then
    out[#out + 1] = v and "T" or "F"
  elseif tv == "number" then
    if math.type(v) == "integer" then out[#out + 1] = pack("<c1i8", "I", v)
    else out[#out + 1] = pack("<c1d", "D", v) end
  elseif tv == "string" then
    out[#out + 1] = pack("<c1s8", "S", v)
  elseif tv == "table" then
    if seen[v] then error(format("checkpoint.save: cycle at %s", path), 0) end
    seen[v] = true
    local keys = {}
    for k in pairs(v) do
      if not KEY_ORDER[type(k)] then
        error(format("checkpoint.save: key of type %s at %s", type(k), path), 0)
      end
      keys[#keys + 1] = k
    end
    sort(keys, key_less)
    out[#out + 1] = pack("<c1I8", "M", #keys)
    for _, k in ipairs(keys) do
      encode(k, out, path, seen)
      encode(v[k], out, path .. "." .. tostring(k), seen)
    end
    seen[v] = nil
  elseif is_tensor(v) then
    encode_tensor(v, out)
  elseif is_generator(v) then
    out[#out + 1] = "G"
    encode(v:state(), out, path .. ":state()", seen)
  else
    error(format("checkpoint.save: cannot store a %s at %s", tv, path), 0)
  end
end

-- checkpoint.encode(state) -> string (the whole file's bytes)
function checkpoint.encode(state)
  local out = {}
  encode(state, out, "state", {})
  local payload = concat(out)
  local head = pack(HEADER, MAGIC, VERSION, LITTLE and 1 or 0, #payload, BLOCK)
  head = head .. pack("<I4", nm.crc32(head))
  local crcs = {}
  for pos = 1, #payload, BLOCK do
    crcs[#crcs + 1] = pack("<I4", nm.crc32(payload:sub(pos, pos + BLOCK - 1)))
  end
  local tbl = concat(crcs)
  return concat{head, payload, tbl, pack("<I4", nm.crc32(tbl))}
end

---------------------------------------------------------------------------
-- Decoding

local function new_tensor(bytes, dtype, sizes)
  return nm.frombytes(bytes, dtype, table.unpack(sizes))
end

local function new_generator(state)
  if not nm.generator then
    error("checkpoint.load: this build has no nm.generator to restore a generator", 0)
  end
  local g = nm.generator(0)
  g:set_state(state)
  return g
end

local decode

-- Reads one value at byte pos (1-based) of payload s; returns value, next pos.
function decode(st, pos)
  local s = st.s
  local function bad(msg, at)
    error(format("%s: malformed checkpoint, %s at byte %d", st.name, msg,
                 HEADER_SIZE + (at or pos) - 1), 0)
  end
  local function take(fmt, at)
    local ok, a, b, c, d = pcall(unpack, fmt, s, at)
    if not ok then bad("value runs past the end", at) end
    return a, b, c, d
  end
  local tag = s:sub(pos, pos)
  if tag == "T" then return true, pos + 1
  elseif tag == "F" then return false, pos + 1
  elseif tag == "I" then return take("<i8", pos + 1)
  elseif tag == "D" then return take("<d", pos + 1)
  elseif tag == "S" then return take("<s8", pos + 1)
  elseif tag == "M" then
    local n, p = take("<I8", pos + 1)
    if n > #s then bad("impossible table size", pos) end
    local t = {}
    for _ = 1, n do
      local k, v
      local kpos = p
      k, p = decode(st, p)
      if type(k) == "table" or type(k) == "userdata" then bad("table key is not a scalar", kpos) end
      if k ~= k then bad("NaN table key", kpos) end
      v, p = decode(st, p)
      t[k] = v
    end
    return t, p
  elseif tag == "X" then
    local dt, nd, p = take("<BB", pos + 1)
    if not DTYPE_NAME[dt] or nd > 4 then bad("bad tensor header", pos) end
    local sizes = {}
    for d = 1, nd do
      sizes[d], p = take("<i8", p)
      if sizes[d] < 0 then bad("negative tensor size", pos) end
    end
    local bytes
    bytes, p = take("<s8", p)
    local ok, t = pcall(new_tensor, bytes, DTYPE_NAME[dt], sizes)
    if not ok then bad(tostring(t), pos) end
    return t, p
  elseif tag == "G" then
    local state, p = decode(st, pos + 1)
    return new_generator(state), p
  elseif tag == "" then
    bad("unexpected end of payload")
  end
  bad(format("unknown tag 0x%02x", tag:byte()))
end

-- Checks the framing of a whole file's bytes; returns the payload or
-- nil, message naming the file and the damaged byte offset.
local function verify(bytes, name)
  if #bytes < HEADER_SIZE then
    return nil, format("%s: truncated at byte %d (header needs %d bytes)", name, #bytes, HEADER_SIZE)
  end
  local magic, version, flags, len, block = unpack(HEADER, bytes)
  if magic ~= MAGIC then
    return nil, format("%s: not a neuromic checkpoint (bad magic at byte 0)", name)
  end
  local hcrc = unpack("<I4", bytes, 29)
  if hcrc ~= nm.crc32(bytes:sub(1, 28)) then
    return nil, format("%s: checksum mismatch in the header (bytes 0-27)", name)
  end
  if version ~= VERSION then
    return nil, format("%s: checkpoint format version %d, this build reads %d", name, version, VERSION)
  end
  if (flags & 1 == 1) ~= LITTLE then
    return nil, format("%s: written on a machine of the other byte order", name)
  end
  if block < 1 then return nil, format("%s: bad block size at byte 24", name) end
  local nblocks = (len + block - 1) // block
  local want = HEADER_SIZE + len + 4 * nblocks + 4
  if #bytes < want then
    return nil, format("%s: truncated at byte %d (expected %d bytes)", name, #bytes, want)
  end
  if #bytes > want then
    return nil, format("%s: %d unexpected bytes after byte %d", name, #bytes - want, want)
  end
  local tstart = HEADER_SIZE + len + 1
  local tbl = bytes:sub(tstart, tstart + 4 * nblocks - 1)
  if unpack("<I4", bytes, tstart + 4 * nblocks) ~= nm.crc32(tbl) then
    return nil, format("%s: checksum mismatch in the checksum table (bytes %d-%d)",
                       name, tstart - 1, want - 1)
  end
  local payload = bytes:sub(HEADER_SIZE + 1, HEADER_SIZE + len)
  for b = 1, nblocks do
    local from = (b - 1) * block + 1
    local stored = unpack("<I4", tbl, 4 * (b - 1) + 1)
    if stored ~= nm.crc32(payload:sub(from, from + block - 1)) then
      local last = math.min(from + block - 1, len)
      return nil, format("%s: checksum mismatch in bytes %d-%d", name,
                         HEADER_SIZE + from - 1, HEADER_SIZE + last - 1)
    end
  end
  return payload
end

-- checkpoint.decode(bytes [, name]) -> state, or raises an error naming
-- the file (name) and the byte offset of the damage.
function checkpoint.decode(bytes, name)
  name = name or "checkpoint"
  local payload, err = verify(bytes, name)
  if not payload then error(err, 0) end
  local st = {s = payload, name = name}
  local v, pos = decode(st, 1)
  if pos ~= #payload + 1 then
    error(format("%s: malformed checkpoint, trailing data at byte %d", name, HEADER_SIZE + pos - 1), 0)
  end
  return v
end

---------------------------------------------------------------------------
-- Files

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- checkpoint.save(path, state [, {keep = true}]): writes atomically; the
-- file it replaces becomes path .. ".1" unless keep == false.
function checkpoint.save(path, state, opts)
  local bytes = checkpoint.encode(state)
  local keep = not (opts and opts.keep == false)
  nm.sys.atomic_write(path, bytes, keep and (path .. ".1") or nil)
  return #bytes
end

-- checkpoint.load(path [, {warn = function(msg)}]) -> state, path read
-- | nil when neither path nor path.1 exists. A damaged latest file is
-- reported through warn (default: stderr) and the previous one is used;
-- when both are damaged, an error lists both.
function checkpoint.load(path, opts)
  local warn = (opts and opts.warn) or function(msg)
    io.stderr:write("warning: ", msg, "\n")
  end
  local problems = {}
  for _, p in ipairs{path, path .. ".1"} do
    local bytes = read_file(p)
    if bytes then
      local ok, v = pcall(checkpoint.decode, bytes, p)
      if ok then
        if #problems > 0 then
          warn(format("%s; using the previous checkpoint %s", concat(problems, "; "), p))
        elseif p ~= path then
          warn(format("%s is missing; using the previous checkpoint %s", path, p))
        end
        return v, p
      end
      problems[#problems + 1] = v
    end
  end
  if #problems > 0 then
    error("checkpoint.load: no usable checkpoint: " .. concat(problems, "; "), 0)
  end
  return nil
end

-- checkpoint.remove(path): deletes path and path.1 (a fresh start).
function checkpoint.remove(path)
  os.remove(path)
  os.remove(path .. ".1")
end

return checkpoint
