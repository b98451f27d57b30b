-- The docs are tested: every ```lua block of README.md and doc/**/*.md runs
-- (as a script of ./neuromic, in a fresh folder, with a time limit) and
-- must succeed, so examples cannot drift from the code. A block whose info
-- string says "lua fragment" (a part of a larger program: it uses names
-- defined elsewhere) is only compiled. A block that begins with
-- "-- rules/NAME.lua" is a rule file: it must also be a valid rule named
-- NAME, and a network must train with it.

local support = require "spec.support"
local root = support.root

local function q(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

local function run(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"@rc=$?\""))
  local out = p:read("a")
  p:close()
  local body, rc = out:match("^(.-)@rc=(%d+)%s*$")
  return body, tonumber(rc)
end

-- Pages whose blocks build on each other (files written by earlier
-- blocks, outputs compared): their own specs run them in order.
local OWN_SPEC = {["doc/tutorial.md"] = "spec/tutorial_spec.lua"}

-- The markdown files: README.md and everything under doc/.
local function doc_files()
  local out = {"README.md"}
  local p = assert(io.popen("cd " .. q(root) .. " && find doc -name '*.md' | LC_ALL=C sort"))
  for f in p:lines() do
    if not OWN_SPEC[f] then out[#out + 1] = f end
  end
  p:close()
  return out
end

-- {file, line, info, code} for every fenced block tagged lua.
local function lua_blocks(file)
  local blocks, cur = {}, nil
  local n = 0
  for line in io.lines(root .. "/" .. file) do
    n = n + 1
    if cur then
      if line:match("^%s*```%s*$") then
        blocks[#blocks + 1] = cur
        cur = nil
      else
        cur.code[#cur.code + 1] = line:sub(#cur.indent + 1)   -- blocks in lists are indented
      end
    else
      local indent, info = line:match("^(%s*)```%s*(lua.*)$")
      if info then cur = {file = file, line = n, info = info, indent = indent, code = {}} end
    end
  end
  assert(cur == nil, file .. ": a ```lua block is not closed")
  for _, b in ipairs(blocks) do b.code = table.concat(b.code, "\n") .. "\n" end
  return blocks
end

local all = {}
for _, f in ipairs(doc_files()) do
  for _, b in ipairs(lua_blocks(f)) do all[#all + 1] = b end
end

describe("documentation examples", function()
  local tmp

  setup(function()
    tmp = run("mktemp -d /tmp/nm_docs_XXXXXX"):match("^(%S+)")
  end)

  teardown(function()
    if tmp then os.execute("rm -rf " .. q(tmp)) end
  end)

  it("finds the examples of README.md and the docs", function()
    assert.truthy(#all >= 10, "only " .. #all .. " lua blocks found")
  end)

  it("replays README.md's first session: the REPL prints what the page shows", function()
    local text = assert(io.open(root .. "/README.md")):read("a")
    local session = text:match("\n```\n%$ %./neuromic\n(.-)```")
    assert.truthy(session, "no session block starting with '$ ./neuromic'")
    local input, expected = {}, {}
    for line in session:gmatch("([^\n]*)\n") do
      local typed = line:match("^> (.*)$")
      if typed then input[#input + 1] = typed else expected[#expected + 1] = line end
    end
    local f = assert(io.open(tmp .. "/session.txt", "w"))
    f:write(table.concat(input, "\n"), "\n")
    f:close()
    local out, rc = run(q(support.exe) .. " -i < " .. q(tmp .. "/session.txt"))
    assert.equal(0, rc, out)
    local got = {}
    for line in out:gmatch("([^\n]*)\n") do got[#got + 1] = line end
    table.remove(got, 1)                   -- the version banner
    assert.same(expected, got)
  end)

  for i, b in ipairs(all) do
    local where = b.file .. ":" .. b.line
    local fragment = b.info:match("fragment") ~= nil
    it((fragment and "compiles " or "runs ") .. where, function()
      local chunk, err = load(b.code, "=" .. where)
      assert.truthy(chunk, err)
      if fragment then return end
      local dir = tmp .. "/" .. i
      assert(os.execute("mkdir -p " .. q(dir)))
      local rule_name = b.code:match("^%-%- rules/([%w_]+)%.lua")
      local script = b.code
      if rule_name then
        -- a rule file: saved where ./rules finds it, then validated and used
        assert(os.execute("mkdir -p " .. q(dir .. "/rules")))
        local f = assert(io.open(dir .. "/rules/" .. rule_name .. ".lua", "w"))
        f:write(b.code)
        f:close()
        script = ([[
local rule = require "nm.rule"
local nn = require "nm.nn"
local def = rule.definition(%q)
assert(def.name == %q)
local g = nm.generator(1)
local net = nn.mlp{sizes = {3, 2}, rule = %q, gen = g}
local W0 = net.conns[1].W:clone()
net:train_batch(nm.rand(g, 4, 3), nm.rand(g, 4, 2))
assert(net.conns[1].W:clone():sub(W0):norm() > 0, "the rule changed nothing")
print("rule ok")
]]):format(rule_name, rule_name, rule_name)
      end
      local f = assert(io.open(dir .. "/example.lua", "w"))
      f:write(script)
      f:close()
      local out, rc = run("cd " .. q(dir) .. " && timeout 120 " .. q(support.exe) .. " example.lua")
      assert.equal(0, rc, where .. " failed:\n" .. out)
    end)
  end
end)
