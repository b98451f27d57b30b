-- nm.repl: the doc strings help() prints come from the tables of doc/*.md;
-- every function of the module and every tensor and generator method has
-- one, and every documented nm.* or library name exists (so the reference
-- cannot drift from the code). Printing of results. The REPL itself is
-- driven through a terminal in spec/interp_spec.lua.

local nm = require "neuromic"
local repl = require "nm.repl"

describe("help's doc strings (doc/*.md)", function()
  it("are read from every doc file", function()
    for _, f in ipairs(repl.doc_files) do
      assert.truthy(io.open(repl.doc_dir .. "/" .. f), repl.doc_dir .. "/" .. f)
    end
    assert.truthy(#repl.names() > 150)
  end)

  it("cover every function of the module and every tensor and generator method", function()
    local missing = {}
    for k, v in pairs(nm) do
      if type(v) == "function" and not repl.entries("nm." .. k) then missing[#missing + 1] = "nm." .. k end
    end
    for _, ns in ipairs(repl.namespaces) do
      for k, v in pairs(nm[ns]) do
        local name = "nm." .. ns .. "." .. k
        if type(v) == "function" and not repl.entries(name) then missing[#missing + 1] = name end
      end
    end
    for _, cls in ipairs{"Tensor", "Generator"} do
      for k in pairs(nm[cls]) do
        if not repl.entries(":" .. k) then missing[#missing + 1] = cls .. ":" .. k end
      end
    end
    table.sort(missing)
    assert.same({}, missing)
  end)

  it("name only functions that exist", function()
    local libs = {"nn", "rule", "optim", "measures", "data", "results", "cli", "sweep", "stats",
                  "plot", "autograd", "checkpoint", "progress", "json"}
    local methods = {}
    for _, cls in ipairs{"Tensor", "Generator"} do
      for k in pairs(nm[cls]) do methods[k] = true end
    end
    local unknown = {}
    for _, name in ipairs(repl.names()) do
      local mod, field = name:match("^([%w_]+)%.([%w_]+)$")
      if name:match("^nm%.[%w_]+%.") then   -- nm.sys.spawn, nm.kernels.nk.model
        local v = nm
        for part in name:sub(4):gmatch("[^.]+") do v = type(v) == "table" and v[part] or nil end
        if v == nil then unknown[#unknown + 1] = name end
      elseif mod == "nm" then
        if nm[field] == nil then unknown[#unknown + 1] = name end
      elseif mod then
        for _, lib in ipairs(libs) do
          if lib == mod and require("nm." .. lib)[field] == nil then unknown[#unknown + 1] = name end
        end
      end
    end
    -- tensor methods as the tensor docs write them (t:, r:, C:, ...)
    for _, name in ipairs(repl.names()) do
      local meth = name:match("^:([%w_]+)$")
      if meth then
        for _, e in ipairs(repl.entries(name)) do
          if e.file:match("^doc/tensor") and not methods[meth] then unknown[#unknown + 1] = name end
        end
      end
    end
    table.sort(unknown)
    assert.same({}, unknown)
  end)

  it("help_text finds functions by value and by name, rules and experiment options", function()
    local by_value = assert(repl.help_text(nm.zeros))
    assert.truthy(by_value:find("nm.zeros(d1, ..., [dtype])", 1, true))
    assert.equal(by_value, repl.help_text("nm.zeros"))
    assert.truthy(repl.help_text(nm.zeros(2).addmm):find("C:addmm", 1, true))
    assert.equal(repl.help_text("t:addmm"), repl.help_text("addmm"))
    assert.truthy(repl.help_text("nm.nn.mlp"):find("nn.mlp{sizes", 1, true))
    assert.truthy(repl.help_text(require("nm.nn").mlp):find("nn.mlp{sizes", 1, true))
    assert.truthy(repl.help_text("hebb"):find("hebb (connection rule)", 1, true))
    assert.truthy(repl.help_text("bmvr"):find("usage: ", 1, true))
    assert.truthy(repl.help_text("bmvr --runs"):find("--runs N", 1, true))
    local none, why = repl.help_text("bmvr --no-such")
    assert.truthy((none or why):find("has no option --no-such", 1, true))
    none, why = repl.help_text("zzz_unknown")
    assert.is_nil(none)
    assert.equal("no help for 'zzz_unknown' (help() says what there is)", why)
    assert.truthy(repl.help_text(nm):find("nm (the module: the tensor library; nm.sys, nm.kernels):", 1, true))
    assert.truthy(repl.help_text(nm.sys):find("nm.sys:", 1, true))
    assert.truthy(repl.help_text(nm.kernels):find("motif_net", 1, true))
    assert.truthy(repl.help_text(nm.sys.spawn):find("nm.sys.spawn(", 1, true))
    assert.equal(repl.help_text(nm.sys.spawn), repl.help_text("nm.sys.spawn"))
    assert.truthy(repl.help_text(nm.kernels.plastic_outer):find("nm.kernels.plastic_outer(W,", 1, true))
  end)
end)

describe("repl.show", function()
  it("prints sizes, lists, records, tensors inside tables and functions by name", function()
    assert.equal("[3 x 4]", repl.show(nm.zeros(3, 4):size()))
    assert.equal("{1, 2, a = 3}", repl.show{1, 2, a = 3})
    assert.equal('{"x", {y = true}}', repl.show{"x", {y = true}})
    assert.equal("{t = DoubleTensor[2]}", repl.show{t = nm.zeros(2, "float64")})
    assert.equal("function nm.zeros", repl.show(nm.zeros))
    assert.equal("text", repl.show("text"))
    local cyc = {}
    cyc.self = cyc
    assert.equal("{self = {...}}", repl.show(cyc))
    local long = {}
    for i = 1, 30 do long[i] = "rule_" .. i end
    local s = repl.show(long)
    assert.truthy(s:find("\n", 1, true))
    for line in s:gmatch("[^\n]+") do assert.truthy(#line <= 96, line) end
  end)
end)
