-- experiments/sweep.lua: runs any experiment over a grid of options x
-- seeds in parallel worker processes, resumable and shardable; `merge`
-- gathers shards. ./neuromic experiments/sweep.lua --help; doc/sweeps.md.
os.exit(require("nm.sweep").main(arg))
