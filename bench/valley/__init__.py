"""`bench valley A B`: is run A's final model in the valley of run B's, and does it differ from it
only in directions that leave the training loss flat? (The gRDA paper's connectivity and
projection evidence, for any pruner.)

A and B are run folders, or selectors of one run each in `--in` (the grammar of `bench compare`:
`grda:c=0.01648,seed=0`). B defaults to the dense run of A's model, data set, seed and budget
(and optimizer family, where the records have one): runs with the same seed share the
initialization and the order of the mini-batches, so the pair is the paper's "fixed batch" pair.

Both final models are compared in the parameter space of the dense model (masks applied: pruned
weights are 0; VD's and STR's reparameterizations are folded into plain weights by the pruner's
`finalize`). Measured:

- the straight path w(t) = w_A + t (w_B - w_A) at `points` evenly spaced t in [0, 1]: training
  loss (mean cross-entropy over the training set, no augmentation, no regularizer) and validation
  and test top-1, batch-norm statistics recomputed from the training set at every point;
- the barrier: max over t of loss(t) - ((1 - t) loss(0) + t loss(1)), 0 for a convex path;
- optionally (`--curve-epochs E`) a quadratic Bezier curve (Garipov et al. 2018)
  (1 - t)^2 w_A + 2 t (1 - t) theta + t^2 w_B whose control point theta is trained for E epochs of
  SGD on the loss at a uniformly drawn t per mini-batch, with the same measurements along it;
- the top-k eigenpairs of the training-loss Hessian at B on a fixed sample of training examples
  (Lanczos: scipy's `eigsh` on Hessian-vector products by `torch.func`), and the fraction of
  ||w_A - w_B||^2 in their span, beside that fraction for random Gaussian directions (its
  expectation is k / number of parameters).

Not applicable (reported, not measured): a model whose final architecture differs from the dense
one (structured pruning). Measured but marked: pairs that do not share the data order (different
seeds or budgets, a pruner that rewinds or trains past the budget), where the projection is not
the paper's fixed-batch comparison.

    bench valley grda:c=0.01648,seed=0 --in runs/digits-mlp
    bench valley runs/x/grda-mlp-digits-s0-... runs/x/dense-mlp-digits-s0-... --json

The package, one concern per module: endpoints (loading runs, choosing B), path (measurements
along a path, barrier, Bezier curve), hessian (eigenpairs, span fractions), analysis (`valley`:
one pair), figures, board (a board's valley table and its files), cli.
"""

from bench.valley.analysis import HESSIAN_EXAMPLES, POINTS, RANDOM_DRAWS, TOP_K, Valley, measure_pair, valley
from bench.valley.board import board_markdown, board_valley, read_valley, section_markdown, write_valley
from bench.valley.endpoints import Endpoint, data_order_note, dense_partner, load_endpoint, read_run, resolve
from bench.valley.figures import plot_board_paths, plot_path
from bench.valley.hessian import hessian_eigs, random_fractions, span_fraction
from bench.valley.path import barrier, recompute_bn, training_batches

__all__ = [
    "HESSIAN_EXAMPLES", "POINTS", "RANDOM_DRAWS", "TOP_K", "Endpoint", "Valley", "barrier", "board_markdown",
    "board_valley", "data_order_note", "dense_partner", "hessian_eigs", "load_endpoint", "measure_pair",
    "plot_board_paths", "plot_path", "random_fractions", "read_run", "read_valley", "recompute_bn", "resolve",
    "section_markdown", "span_fraction", "training_batches", "valley", "write_valley",
]
