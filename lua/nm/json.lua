-- nm/json.lua: JSON encoding with a stable key order and decoding with
-- byte offsets in its errors, plus JSON-lines files.
--
-- Encoding: object keys sorted; Lua integers as integers; floats in the
-- shortest form that reads back to the same double (a float with an
-- integral value keeps a ".0", so integer/float subtypes round-trip);
-- NaN and infinities as null; an empty table as [] unless marked with
-- json.object(). Decoding: null gives json.null (or opts.null).

local json = {}

-- The value null decodes to, and that encodes to null.
json.null = setmetatable({}, {__name = "json.null", __tostring = function() return "null" end})

local object_mt = {__name = "json.object"}
-- Marks t (default: a new table) to encode as an object even when empty.
function json.object(t)
  return setmetatable(t or {}, object_mt)
end

local format, concat, sort, mtype = string.format, table.concat, table.sort, math.type

-- Shortest of %.15g/%.16g/%.17g that reads back to x exactly.
local function number_text(x)
  if mtype(x) == "integer" then return format("%d", x) end
  if x ~= x or x == math.huge or x == -math.huge then return "null" end
  local s = format("%.15g", x)
  if tonumber(s) ~= x then
    s = format("%.16g", x)
    if tonumber(s) ~= x then s = format("%.17g", x) end
  end
  if not s:find("[%.eE]") then s = s .. ".0" end   -- keep it a float
  return s
end
json.number_text = number_text

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}
local function string_text(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or format("\\u%04x", c:byte())
  end) .. '"'
end

-- Kind of a table: "array" (keys exactly 1..n, n >= 1 or empty and
-- unmarked) or "object".
local function table_kind(t)
  if getmetatable(t) == object_mt then return "object" end
  local n = 0
  for k in pairs(t) do
    if mtype(k) ~= "integer" or k < 1 then return "object" end
    n = n + 1
  end
  if n == #t then return "array" end
  return "object"
end

local function key_text(k, path)
  local tk = type(k)
  if tk == "string" then return k end
  if tk == "number" then return number_text(k) end
  if tk == "boolean" then return tostring(k) end
  error(format("json.encode: key of type %s at %s", tk, path), 0)
end

local encode_value

local function encode_table(t, out, indent, depth, seen, path)
  if seen[t] then error("json.encode: cycle at " .. path, 0) end
  seen[t] = true
  local nl, pad, pad_in, colon = "", "", "", ":"
  if indent then
    nl = "\n"
    pad = string.rep(indent, depth)
    pad_in = pad .. indent
    colon = ": "
  end
  if table_kind(t) == "array" then
    if #t == 0 then
      out[#out + 1] = "[]"
    else
      out[#out + 1] = "[" .. nl
      for i = 1, #t do
        if i > 1 then out[#out + 1] = "," .. nl end
        out[#out + 1] = pad_in
        encode_value(t[i], out, indent, depth + 1, seen, path .. "[" .. i .. "]")
      end
      out[#out + 1] = nl .. pad .. "]"
    end
  else
    local keys, texts = {}, {}
    for k in pairs(t) do
      local s = key_text(k, path)
      if texts[s] ~= nil then
        error(format("json.encode: key %q appears twice (as string and number) at %s", s, path), 0)
      end
      texts[s] = k
      keys[#keys + 1] = s
    end
    sort(keys)
    if #keys == 0 then
      out[#out + 1] = "{}"
    else
      out[#out + 1] = "{" .. nl
      for i, s in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," .. nl end
        out[#out + 1] = pad_in .. string_text(s) .. colon
        encode_value(t[texts[s]], out, indent, depth + 1, seen, path .. "." .. s)
      end
      out[#out + 1] = nl .. pad .. "}"
    end
  end
  seen[t] = nil
end

function encode_value(v, out, indent, depth, seen, path)
  local tv = type(v)
  if v == nil or v == json.null then
    out[#out + 1] = "null"
  elseif tv == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif tv == "number" then
    out[#out + 1] = number_text(v)
  elseif tv == "string" then
    out[#out + 1] = string_text(v)
  elseif tv == "table" then
    encode_table(v, out, indent, depth, seen, path)
  elseif tv == "userdata" and type(v.totable) == "function" then
    -- tensors: their nested tables of numbers
    encode_value(v:totable(), out, indent, depth, seen, path)
  else
    error(format("json.encode: cannot encode a %s at %s", tv, path), 0)
  end
end

-- json.encode(value [, {indent = "  "}]) -> string
function json.encode(v, opts)
  local indent = opts and opts.indent
  if type(indent) == "number" then indent = string.rep(" ", indent) end
  local out = {}
  encode_value(v, out, indent, 0, {}, "$")
  return concat(out)
end

---------------------------------------------------------------------------
-- Decoding

local byte, sub, char, find = string.byte, string.sub, string.char, string.find

local function decode_error(st, pos, msg)
  local line = st.line
  for _ in sub(st.s, 1, pos - 1):gmatch("\n") do line = line + 1 end
  error(format("%s: %s at byte %d (line %d)", st.name, msg, pos - 1 + st.base, line), 0)
end

local function skip_space(st, pos)
  return find(st.s, "[^ \t\r\n]", pos) or #st.s + 1
end

local function utf8_char(st, pos, cp)
  if cp < 0 or cp > 0x10FFFF then decode_error(st, pos, "bad unicode escape") end
  return utf8.char(cp)
end

local function decode_string(st, pos)
  -- pos is at the opening quote
  local s, parts, i = st.s, {}, pos + 1
  while true do
    local j = find(s, '["\\%c]', i)
    if not j then decode_error(st, pos, "unterminated string") end
    parts[#parts + 1] = sub(s, i, j - 1)
    local c = byte(s, j)
    if c == 34 then           -- "
      return concat(parts), j + 1
    elseif c == 92 then       -- backslash
      local e = sub(s, j + 1, j + 1)
      local simple = ({['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
                       n = "\n", r = "\r", t = "\t"})[e]
      if simple then
        parts[#parts + 1] = simple
        i = j + 2
      elseif e == "u" then
        local hex = sub(s, j + 2, j + 5)
        if not hex:match("^%x%x%x%x$") then decode_error(st, j, "bad \\u escape") end
        local cp = tonumber(hex, 16)
        i = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF then   -- surrogate pair
          local lo = sub(s, i, i + 5):match("^\\u(%x%x%x%x)$")
          local lcp = lo and tonumber(lo, 16)
          if not lcp or lcp < 0xDC00 or lcp > 0xDFFF then
            decode_error(st, j, "unpaired surrogate in \\u escape")
          end
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lcp - 0xDC00)
          i = i + 6
        end
        parts[#parts + 1] = utf8_char(st, j, cp)
      else
        decode_error(st, j, "bad escape in string")
      end
    else
      decode_error(st, j, "control character in string")
    end
  end
end

local decode_value

local function decode_number(st, pos)
  local s = st.s
  local int = s:match("^-?%d+", pos)
  if not int then decode_error(st, pos, "unexpected character") end
  if int:match("^-?0%d") then decode_error(st, pos, "malformed number (leading zero)") end
  local e = pos + #int
  local frac = s:match("^%.%d*", e)
  if frac then
    if #frac == 1 then decode_error(st, e, "malformed number (no digits after '.')") end
    e = e + #frac
  end
  local exp = s:match("^[eE][-+]?%d*", e)
  if exp then
    if not exp:match("%d$") then decode_error(st, e, "malformed number (no exponent digits)") end
    e = e + #exp
  end
  local text = sub(s, pos, e - 1)
  local v
  if frac or exp then
    v = tonumber(text)
  else   -- integers beyond 64 bits become floats
    v = math.tointeger(tonumber(text)) or tonumber(text .. ".0")
  end
  return v, e
end

local function decode_array(st, pos)
  local t, n = {}, 0
  pos = skip_space(st, pos + 1)
  if byte(st.s, pos) == 93 then return t, pos + 1 end
  while true do
    local v
    v, pos = decode_value(st, pos)
    n = n + 1
    t[n] = v
    pos = skip_space(st, pos)
    local c = byte(st.s, pos)
    if c == 93 then return t, pos + 1 end
    if c ~= 44 then decode_error(st, pos, "expected ',' or ']'") end
    pos = skip_space(st, pos + 1)
  end
end

local function decode_object(st, pos)
  local t = {}
  pos = skip_space(st, pos + 1)
  if byte(st.s, pos) == 125 then return json.object(t), pos + 1 end
  while true do
    if byte(st.s, pos) ~= 34 then decode_error(st, pos, "expected a string key") end
    local k
    k, pos = decode_string(st, pos)
    pos = skip_space(st, pos)
    if byte(st.s, pos) ~= 58 then decode_error(st, pos, "expected ':'") end
    local v
    v, pos = decode_value(st, skip_space(st, pos + 1))
    t[k] = v
    pos = skip_space(st, pos)
    local c = byte(st.s, pos)
    if c == 125 then return t, pos + 1 end
    if c ~= 44 then decode_error(st, pos, "expected ',' or '}'") end
    pos = skip_space(st, pos + 1)
  end
end

function decode_value(st, pos)
  pos = skip_space(st, pos)
  st.depth = st.depth + 1
  if st.depth > 1000 then decode_error(st, pos, "nested too deeply") end
  local c = byte(st.s, pos)
  local v
  if c == nil then decode_error(st, pos, "unexpected end of input")
  elseif c == 123 then v, pos = decode_object(st, pos)
  elseif c == 91 then v, pos = decode_array(st, pos)
  elseif c == 34 then v, pos = decode_string(st, pos)
  elseif sub(st.s, pos, pos + 3) == "true" then v, pos = true, pos + 4
  elseif sub(st.s, pos, pos + 4) == "false" then v, pos = false, pos + 5
  elseif sub(st.s, pos, pos + 3) == "null" then v, pos = st.null, pos + 4
  else v, pos = decode_number(st, pos)
  end
  st.depth = st.depth - 1
  return v, pos
end

-- json.decode(s [, {null = value, name = "file.json", base = byte offset,
-- line = first line number}]) -> value. Errors read "name: what at byte N
-- (line L)"; byte offsets count from 0 (plus base).
function json.decode(s, opts)
  opts = opts or {}
  local null = json.null
  if opts.null ~= nil then null = opts.null end
  local st = {s = s, null = null, name = opts.name or "json.decode", base = opts.base or 0,
              line = opts.line or 1, depth = 0}
  local v, pos = decode_value(st, 1)
  pos = skip_space(st, pos)
  if pos <= #s then decode_error(st, pos, "trailing characters after the value") end
  return v
end

local function read_all(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

-- json.read_file(path [, opts]) -> value (errors name the file and byte).
function json.read_file(path, opts)
  local s, err = read_all(path)
  if not s then error("json.read_file: " .. err, 2) end
  local o = {name = path}
  for k, v in pairs(opts or {}) do o[k] = v end
  return json.decode(s, o)
end

-- json.read_lines(path [, opts]) -> rows, warning. One value per line;
-- blank lines skipped. A malformed last line without its newline is a
-- write cut short by a crash: skipped, and described in `warning`. Any
-- other malformed line is an error naming the file, line and byte.
function json.read_lines(path, opts)
  local s, err = read_all(path)
  if not s then error("json.read_lines: " .. err, 2) end
  local rows, warning = {}, nil
  local pos, lineno = 1, 0
  while pos <= #s do
    local nl = find(s, "\n", pos, true)
    local line = sub(s, pos, (nl or #s + 1) - 1)
    lineno = lineno + 1
    if line:find("%S") then
      local o = {name = path, base = pos - 1, line = lineno}
      for k, v in pairs(opts or {}) do o[k] = v end
      local ok, v = pcall(json.decode, line, o)
      if ok then
        rows[#rows + 1] = v
      elseif nl == nil then
        warning = format("%s: ignoring an incomplete last line %d at byte %d (%s)",
                         path, lineno, pos - 1, v)
      else
        error(v, 0)
      end
    end
    if not nl then break end
    pos = nl + 1
  end
  return rows, warning
end

return json
