-- tools/busted.lua: runs the busted test suite under the bundled
-- interpreter, so specs get `require "neuromic"` (preloaded) and the
-- project's package paths.
--
--   ./neuromic tools/busted.lua [busted options] [spec files]
--
-- With no files busted reads .busted (ROOT = spec/). From another working
-- directory the suite still runs: the project root becomes busted's
-- directory (-C), so relative spec paths are then taken from the root.

local function has_option(args, short, long)
  for _, a in ipairs(args) do
    if a == short or a == long or a:sub(1, #long + 1) == long .. "="
       or (a:sub(1, 2) == short and #a > 2) then
      return true
    end
  end
  return false
end

local function readable(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

if NEUROMIC_ROOT and not readable(".busted")
   and not has_option(arg, "-C", "--directory") then
  table.insert(arg, 1, "--directory=" .. NEUROMIC_ROOT)
end

-- busted names itself after this file in its messages; standalone = false
-- lets it take the spec files from the command line and .busted.
require "busted.runner" { standalone = false }
