-- spec/meta_rates_spec.lua: experiments/meta_rates.lua meta-learns
-- connection rules' parameters through nm.unroll: a quick run finishes with
-- a row per meta-step and the figures before and after per rule; two rules
-- that are the same rule under two names (sign_symmetry and a copy) learn
-- the same values on the same episodes; a stopped run resumes to the
-- results of an uninterrupted one; a rule without the parameters is a
-- one-line error, exit 2.
local json = require "nm.json"
local support = require "spec.support"

describe("experiments/meta_rates.lua", function()
  local run, tmp = support.experiment("meta_rates.lua")
  local copy = support.user_rule(tmp .. "-rules", "sign_symmetry", "my_sign")
  teardown(function()
    os.execute(string.format("rm -rf %q %q %q %q", tmp .. "-a", tmp .. "-b", tmp .. "-rules",
                             tmp .. ".log"))
  end)

  it("meta-learns each rule's rates; resumes after SIGTERM to the same results", function()
    local common = "--quick --steps 5 --meta-steps 3 --rules sign_symmetry," .. copy ..
                   " --checkpoint-every 1"
    local a, b = tmp .. "-a", tmp .. "-b"
    assert.equal(0, run(common .. " --out " .. a))
    local ra = json.read_file(a .. "/results.json")
    assert.equal("finished", ra.status)
    local rows = support.metric_rows(a)
    assert.equal(6, #rows)
    local r1, r2 = ra.final.rules[1], ra.final.rules[2]
    assert.equal("sign_symmetry", r1.rule)
    assert.equal("my_sign", r2.rule)
    assert.same(r1.learned, r2.learned)               -- the same rule, the same episodes
    assert.same(r1.after, r2.after)
    assert.is_true(r1.learned["W1.eta"] ~= 0.01)     -- it moved from --init-eta
    for i = 1, 3 do
      assert.equal(rows[i].query_loss, rows[i + 3].query_loss)
      assert.is_number(rows[i]["W2.eta"])
    end
    assert.equal(143, run(common .. " --stop-after 4 --out " .. b))
    assert.equal("stopped", json.read_file(b .. "/results.json").status)
    assert.equal(0, run(common .. " --resume --out " .. b))
    local rb = json.read_file(b .. "/results.json")
    assert.equal("finished", rb.status)
    assert.same(ra.final.rules, rb.final.rules)
    assert.same(rows, support.metric_rows(b))
  end)

  it("a rule without the parameters is a one-line error", function()
    assert.equal(2, run("--quick --rules hebb --params tau --out " .. tmp .. "-a --overwrite"))
    local f = assert(io.open(tmp .. ".log"))
    local log = f:read("a")
    f:close()
    assert.truthy(log:find("meta_rates: --rules hebb: the rule has none of the parameters tau",
                           1, true), log)
  end)
end)
