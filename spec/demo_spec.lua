-- experiments/demo.lua (make demo): two of its steps, run as a user would;
-- the output fits 100 columns, says what each run is, and never shows a
-- number beside the paper's without the column saying it is a quick run.
local support = require "spec.support"

local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

describe("make demo", function()
  it("prints each family's quick run in 100 columns, labelled as a quick run", function()
    local tmp = os.tmpname()
    os.remove(tmp)
    local p = assert(io.popen(("cd %s && %s experiments/demo.lua --only bmvr,nan_nk --out %s 2>/dev/null; echo @rc=$?")
                              :format(q(support.root), q(support.exe), q(tmp))))
    local out = p:read("a")
    p:close()
    os.execute("rm -rf " .. q(tmp))
    local body, rc = out:match("^(.-)@rc=(%d+)%s*$")
    assert.equal("0", rc, out)
    for line in body:gmatch("[^\n]*") do
      assert.truthy(#line <= 100, "wider than 100 columns: " .. line)
    end
    assert.truthy(body:find("BMVR gain-control networks (experiments/bmvr.lua --quick,", 1, true), body)
    assert.truthy(body:find("  run: Fig. 3, linear networks: Fashion-MNIST", 1, true), body)
    -- the table's header says which column is the quick run and which the paper's
    local header = body:match("\n(  result[^\n]*)")
    assert.truthy(header and header:find("quick run", 1, true) and header:find("paper (full scale)", 1, true),
                  body)
    assert.truthy(body:find("Fig. 3 linear objective, fashion, bmvr", 1, true), body)
    assert.truthy(body:find("(exact RRR optimum 0.7190)", 1, true), body)
    -- a family whose effect needs long runs says so instead of showing numbers
    assert.truthy(body:find("a pipeline check: the paper's findings need the full grid", 1, true), body)
    assert.truthy(body:find("doc/results/nk.md", 1, true), body)
  end)
end)
