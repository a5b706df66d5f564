"""One run, in pieces: `build` (data, model, pruner, optimizer, context), `trainer` (the loop and
evaluation), `checkpoint` (save, restore, a finished run's model), `distributed` (device and rank
helpers) and `job` (the lock, the run, its record; `bench.run.job.run` is what a job calls)."""
