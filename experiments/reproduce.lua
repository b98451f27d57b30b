-- experiments/reproduce.lua: every paper result at the papers' scale, with
-- statistics over seeds, in one command (`make reproduce`). The results
-- are listed in experiments/reproduce/<family>.lua; the runs go through
-- the sweep runner (resume, --jobs, --shard) and the reports are written
-- to doc/results/<family>.md and the README's results table. See
-- doc/reproduce.md, or --help.
--
--   ./neuromic experiments/reproduce.lua --list
--   ./neuromic experiments/reproduce.lua --only bmvr --jobs 2
--   ./neuromic experiments/reproduce.lua --quick
local reproduce = require "nm.reproduce"
-- the registry lives next to this script
local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
os.exit(reproduce.main(arg, {registry = here .. "/reproduce"}))
