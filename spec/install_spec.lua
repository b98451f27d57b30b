-- The rock as a user installs it: `luarocks --lua-version 5.4 make --tree T`
-- from the checkout, then, from another folder, the installed interpreter
-- and plain lua5.4 (with `luarocks path`) build a network, train it with a
-- named rule and give the same weights, bit for bit, as the checkout; the
-- installed interpreter runs an experiment --quick by name.

local support = require "spec.support"

local function q(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

-- Runs a shell command; returns stdout+stderr and the exit code.
local function run(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"@rc=$?\""))
  local out = p:read("a")
  p:close()
  local body, rc = out:match("^(.-)@rc=(%d+)%s*$")
  return body, tonumber(rc)
end

local have_luarocks = select(2, run("command -v luarocks")) == 0
local have_lua = select(2, run("command -v lua5.4")) == 0
-- The sanitizer build is not what luarocks installs.
local sanitizing = os.getenv("NEUROMIC_EXE") ~= nil

-- Trains an FA network on one fixed batch for 20 steps and prints the
-- rules it can find, the loss before and after, and every weight's bytes.
local SCRIPT = [[
local nm = require "neuromic"
local nn = require "nm.nn"
local rule = require "nm.rule"
print("rules: " .. table.concat(rule.list(), ","))
local gen = nm.generator(7)
local net = nn.mlp{sizes = {4, 5, 3}, act = "tanh", rule = "fa", params = {eta = 0.1}, gen = gen}
local X, T = nm.randn(gen, 16, 4), nm.zeros(16, 3)
for i = 1, 16 do T:set(i, (i % 3) + 1, 1) end
net:forward(X)
print("before " .. string.format("%.6f", net:loss_value(T)))
for _ = 1, 20 do net:train_batch(X, T) end
net:forward(X)
print("after " .. string.format("%.6f", net:loss_value(T)))
local hex = {}
for _, c in ipairs(net.conns) do
  hex[#hex + 1] = (c.W:tobytes():gsub(".", function(ch) return string.format("%02x", ch:byte()) end))
end
print("weights " .. table.concat(hex, ":"))
]]

describe("luarocks install", function()
  local tmp, tree, away

  setup(function()
    if not have_luarocks or sanitizing then return end
    local out = run("mktemp -d /tmp/nm_rock_XXXXXX")
    tmp = out:match("^(%S+)")
    tree, away = tmp .. "/tree", tmp .. "/elsewhere"
    assert(os.execute("mkdir -p " .. q(away)))
    local f = assert(io.open(away .. "/train.lua", "w"))
    f:write(SCRIPT)
    f:close()
  end)

  teardown(function()
    if tmp then os.execute("rm -rf " .. q(tmp)) end
  end)

  local function skip()
    if sanitizing then pending("make sanitize: luarocks installs the normal build") return true end
    if not have_luarocks then pending("luarocks is not installed (make deps installs it)") return true end
  end

  it("installs the module, the libraries, the rules, the experiments and the interpreter", function()
    if skip() then return end
    -- luarocks builds in the folder it runs in: a copy of the checkout with
    -- its build outputs, so the suite's own binaries are never rebuilt
    -- under it; with the same version string nothing is recompiled.
    local src = tmp .. "/src"
    local out, rc = run("mkdir -p " .. q(src) .. " && tar -C " .. q(support.root) ..
                        " --exclude=./.git --exclude=./data --exclude=./results --exclude=./build-asan" ..
                        " --exclude=./build-fuzz --exclude=./neuromic-asan -cf - . | tar -C " .. q(src) .. " -xf -")
    assert.equal(0, rc, out)
    out, rc = run("cd " .. q(src) .. " && VERSION=" .. q(require("neuromic").version) ..
                  " luarocks --lua-version 5.4 make --tree " .. q(tree) .. " neuromic-scm-1.rockspec")
    assert.equal(0, rc, out)
    for _, f in ipairs{"bin/neuromic", "lib/lua/5.4/neuromic.so", "share/lua/5.4/nm/nn.lua",
                       "share/lua/5.4/nm/models/bmvr.lua", "share/lua/5.4/rules/backprop.lua",
                       "share/lua/5.4/nm/compile/graph.lua", "share/lua/5.4/nm/doc/tensor.md",
                       "share/lua/5.4/nm/experiments/nan_nk.lua"} do
      assert.truthy(io.open(tree .. "/" .. f), "missing " .. f)
    end
  end)

  it("trains a network with a named rule from another folder, as the checkout does", function()
    if skip() then return end
    local here, rc = run("cd " .. q(away) .. " && " .. q(support.exe) .. " train.lua")
    assert.equal(0, rc, here)
    local installed, rc2 = run("cd " .. q(away) .. " && " .. q(tree .. "/bin/neuromic") .. " train.lua")
    assert.equal(0, rc2, installed)
    assert.truthy(installed:find("rules: [^\n]*backprop[^\n]*fa"), installed)
    local before, after = installed:match("before (%S+)\nafter (%S+)")
    assert.truthy(tonumber(after) < tonumber(before), installed)
    -- the installed copy computes exactly what the checkout computes; the
    -- rules line differs (a checkout also has ./rules of its own folder)
    local function weights(s) return s:match("weights (%S+)") end
    assert.truthy(weights(here))
    assert.equal(weights(here), weights(installed))
    if have_lua then
      local env = "eval \"$(luarocks --lua-version 5.4 --tree " .. q(tree) .. " path)\" && "
      local plain, rc3 = run("cd " .. q(away) .. " && " .. env .. "lua5.4 train.lua")
      assert.equal(0, rc3, plain)
      assert.equal(weights(here), weights(plain))
    end
  end)

  it("gives help from the installed docs, rules and experiments", function()
    if skip() then return end
    local out, rc = run("cd " .. q(away) .. " && " .. q(tree .. "/bin/neuromic") ..
                        [[ -e 'local r = require "nm.repl" print(r.help_text(nm.zeros)) ]] ..
                        [[print(r.help_text("backprop")) print(r.help_text("bmvr --runs"))']])
    assert.equal(0, rc, out)
    assert.truthy(out:find("nm.zeros(d1, ..., [dtype])", 1, true), out)
    assert.truthy(out:find("backprop (connection rule)", 1, true), out)
    assert.truthy(out:find("--runs N", 1, true), out)
  end)

  it("runs an experiment --quick by name from another folder", function()
    if skip() then return end
    local out, rc = run("cd " .. q(away) .. " && " .. q(tree .. "/bin/neuromic") ..
                        " nan_nk.lua --quick --out quick")
    assert.equal(0, rc, out)
    local f = assert(io.open(away .. "/quick/results.json"), out)
    local text = f:read("a")
    f:close()
    assert.truthy(text:find('"finished"%s*:%s*"%d'), text)   -- a finished run has its end time
    assert.truthy(io.open(away .. "/quick/findings.md"))
  end)
end)
