"""One run, in pieces (imports point down this list):

    job.py          what a job calls: `run(config, out)`: lock the folder, train, speed-up, write
    trainer.py      the Trainer: the loop and evaluation, the pruner acting through its hooks
    result.py       the run record read off a trained Trainer (no training, no files)
    history.py      history.csv rows (validation top-1, ||w||_2/||w||_1 per epoch)
    evaluation.py   top-1/top-5 and per-example predictions on the test set or validation split
    memory.py       the live-tensor peak of a few CPU training steps (peak_tensor_bytes)
    checkpoint.py   save, resume, and `load_model(run_dir)`: a finished run's final model
    build.py        `build(config)`: data, model, pruner, optimizer, RunContext, dense MACs
    distributed.py  device, threads, rank helpers
"""
