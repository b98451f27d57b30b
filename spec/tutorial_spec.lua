-- spec/tutorial_spec.lua: doc/tutorial.md runs as written. In a scratch
-- folder (with ./neuromic and experiments/ linked in), in the order of the
-- page: a Lua block whose first line is "-- path.lua: ..." is saved as that
-- file; any other Lua block runs as a script; every command of a sh block
-- runs (a "# exit status N" line before it gives the status expected,
-- otherwise 0), and experiments run with --quick. A text block after a
-- block is what it prints: all of it for Lua blocks; for the commands of
-- a sh block every line must appear in what they print together, table rows of experiments/baselines.lua compared by
-- their labels, accuracies (within 0.02: thread counts change rounding)
-- and angles (within 1 degree), not their timings; other lines by their
-- words, numbers within 2%.

local support = require "spec.support"

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

local function absolute(path)
  return (sh(string.format("cd %q && pwd", path)):gsub("\n$", ""))
end

local function lines_of(text)
  local out = {}
  for line in (text .. "\n"):gmatch("(.-)\n") do out[#out + 1] = line:gsub("%s+$", "") end
  while out[#out] == "" do out[#out] = nil end
  return out
end

local function words(line)
  local out = {}
  for w in line:gmatch("%S+") do out[#out + 1] = w end
  return out
end

-- A row of the baselines table: dataset, arch, rule, test_acc, train_acc,
-- s/epoch, then "L<k> update/feedback" pairs.
local function table_row(line)
  local w = words(line)
  if #w < 6 or not (tonumber(w[4]) and tonumber(w[5]) and tonumber(w[6])) then return nil end
  local angles = {}
  for i = 7, #w, 2 do
    local u, f = (w[i + 1] or ""):match("^(.-)/(.-)$")
    angles[#angles + 1] = {w[i], tonumber(u), tonumber(f)}
  end
  return {key = w[1] .. " " .. w[2] .. " " .. w[3], test = tonumber(w[4]), train = tonumber(w[5]),
          angles = angles}
end

local function near(a, b, tol)
  if a == nil or b == nil then return a == b end
  return math.abs(a - b) <= tol
end

-- Any other line: the same words, numbers within 2% (and 0.02).
local function same_line(want, got)
  if want == got then return true end
  local a, b = words(want), words(got)
  if #a ~= #b then return false end
  for i, w in ipairs(a) do
    local x, y = tonumber(w), tonumber(b[i])
    if not (w == b[i] or (x and y and near(x, y, math.max(0.02, 0.02 * math.abs(x))))) then
      return false
    end
  end
  return true
end

local function check_command_output(expected, out, cmd)
  local got = lines_of(out)
  local rows = {}
  for _, line in ipairs(got) do
    local r = table_row(line)
    if r then rows[r.key] = r end
  end
  for _, line in ipairs(lines_of(expected)) do
    local want = table_row(line)
    if want then
      local r = rows[want.key]
      assert.is_not_nil(r, "no row '" .. want.key .. "' in the output of " .. cmd .. ":\n" .. out)
      assert.is_true(near(want.test, r.test, 0.02), want.key .. " test_acc " .. r.test)
      assert.is_true(near(want.train, r.train, 0.02), want.key .. " train_acc " .. r.train)
      assert.equal(#want.angles, #r.angles, want.key)
      for i, a in ipairs(want.angles) do
        assert.equal(a[1], r.angles[i][1])
        assert.is_true(near(a[2], r.angles[i][2], 1) and near(a[3], r.angles[i][3], 1),
                       want.key .. " angles " .. tostring(r.angles[i][2]) .. "/" ..
                       tostring(r.angles[i][3]))
      end
    else
      local found = false
      for _, g in ipairs(got) do found = found or same_line(line, g) end
      assert.is_true(found, "line not printed by " .. cmd .. ":\n" .. line .. "\noutput:\n" .. out)
    end
  end
end

describe("doc/tutorial.md", function()
  it("runs as written and prints what it shows", function()
    local blocks = support.doc_blocks(support.read_file(support.root .. "/doc/tutorial.md"))
    local root, exe = absolute(support.root), support.exe
    if not exe:match("^/") then exe = root .. "/" .. exe:gsub("^%./", "") end
    local dir = os.tmpname()
    os.remove(dir)
    assert.equal(0, select(2, sh(string.format("mkdir -p %q && ln -s %q %q && ln -s %q %q", dir,
      exe, dir .. "/neuromic", root .. "/experiments", dir .. "/experiments"))))
    local ran = {lua = 0, sh = 0, file = 0}
    for i, b in ipairs(blocks) do
      local expected = blocks[i + 1] and blocks[i + 1].lang == "text" and blocks[i + 1].text or nil
      if b.lang == "lua" then
        local file = b.text:match("^%-%- ([%w_%./%-]+%.lua):")
        if file then
          sh(string.format("mkdir -p %q", (dir .. "/" .. file):match("^(.*)/")))
          support.write_file(dir .. "/" .. file, b.text)
          ran.file = ran.file + 1
        else
          local script = string.format("block%d.lua", i)
          support.write_file(dir .. "/" .. script, b.text)
          local out, code = sh(string.format("cd %q && ./neuromic %s", dir, script))
          assert.equal(0, code, "Lua block " .. i .. " failed:\n" .. out)
          if expected then assert.same(lines_of(expected), lines_of(out)) end
          ran.lua = ran.lua + 1
        end
      elseif b.lang == "sh" then
        local status, outs, cmds = 0, {}, {}
        for _, line in ipairs(lines_of(b.text)) do
          local n = line:match("^# exit status (%d+)$")
          if n then
            status = tonumber(n)
          elseif line ~= "" and not line:match("^#") then
            assert.truthy(line:match("^%./neuromic "), "not a neuromic command: " .. line)
            if line:find("experiments/", 1, true) then
              assert.truthy(line:find(" %-%-quick"), "experiment without --quick: " .. line)
            end
            local out, code = sh(string.format("cd %q && %s", dir, line))
            assert.equal(status, code, line .. "\n" .. out)
            outs[#outs + 1], cmds[#cmds + 1] = out, line
            ran.sh, status = ran.sh + 1, 0
          end
        end
        if expected then check_command_output(expected, table.concat(outs), table.concat(cmds, "; ")) end
      end
    end
    assert.is_true(ran.file >= 3 and ran.lua >= 3 and ran.sh >= 4)
    sh(string.format("rm -rf %q", dir))
  end)
end)
