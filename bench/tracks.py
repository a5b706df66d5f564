"""Recipe tracks (`budget.recipe`): what each means, and the methods that keep their own optimizer
on the shared one (those whose `PrunerInfo.own_optimizer` is set). Text for boards and `bench list`;
nothing here trains, and nothing imports torch until a track is described.

`paper`: each method its authors' optimizer (the pruner's `paper_recipe`); `shared`: one standard
recipe, SGD with the budget's momentum and weight decay, for every method that can take it. The
committed sweep files lead with `paper` and set the shared recipe to momentum 0.9 and weight
decay 5e-4. Epochs, batches, the lr schedule, data and evaluation are the budget's on both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.config import Budget
    from bench.pruner import OptimizerRecipe

TRACKS: dict[str, str] = {
    "paper": "each method trains with its authors' optimizer",
    "shared": "one standard recipe, SGD with the budget's momentum and weight decay, for every method that "
    "can take it",
}

# why a method that keeps its own optimizer (`PrunerInfo.own_optimizer`) does, in a board's words;
# one without a note here is described by its paper recipe
OWN_OPTIMIZER_NOTES: dict[str, str] = {
    "grda": "gRDA is its own optimizer (proximal SGD steps: no momentum or weight decay by design)",
    "vd": "VD needs Adam (lr 1e-3, the authors' recipe): with SGD its KL term barely moves the "
    "dropout rates; `optimizer = \"sgd\"` trains it with the shared recipe instead",
}


def own_optimizer(recipe: str, pruner: str, hparams: dict | None = None) -> str | None:
    """Why `pruner` (with `hparams`) does not train with the track's shared recipe, or None: a
    method whose `PrunerInfo.own_optimizer` is set, unless its `optimizer` knob picks SGD (VD)."""
    if recipe != "shared":
        return None
    from bench.registry import PRUNERS  # imports the pruner (torch): only when a track is described

    cls = PRUNERS.get(pruner)
    if not cls.info.own_optimizer or picks_sgd(cls, hparams):
        return None
    default = f"{pruner} keeps its own optimizer ({recipe_text(cls.paper_recipe)})"
    return OWN_OPTIMIZER_NOTES.get(pruner, default)


def picks_sgd(pruner_cls: Any, hparams: dict | None) -> bool:
    """The method's `optimizer` knob (VD's), as set in `hparams` or by default, is SGD: it then
    trains with the budget's SGD recipe instead of its own optimizer."""
    default = {f.name: f.default for f in dataclasses.fields(pruner_cls.Hparams)}.get("optimizer")
    return (hparams or {}).get("optimizer", default) == "sgd"


def recipe_text(recipe: OptimizerRecipe | None) -> str:
    """`SGD, momentum 0.9, weight decay 0.0005`; None (no paper recipe of its own): the shared one."""
    if recipe is None:
        return "the shared recipe"
    parts = ["Adam" if recipe.optimizer == "adam" else "SGD"]
    if recipe.lr is not None:
        parts.append(f"lr {recipe.lr:g}")
    if recipe.momentum:
        parts.append(f"{'Nesterov ' if recipe.nesterov else ''}momentum {recipe.momentum:g}")
    if recipe.weight_decay:
        parts.append(f"weight decay {recipe.weight_decay:g}")
    if len(parts) == 1 and recipe.optimizer == "sgd":
        parts.append("no momentum or weight decay")
    return ", ".join(parts)


def describe_track(
    recipe: str, pruners: Iterable[tuple[str, dict]] = (), budget: Budget | None = None
) -> str:
    """One paragraph for a board section: the track's definition and its methods' optimizers. On
    the paper track, each optimizer with the methods among `pruners` ((name, hparams) pairs) that
    train with it (their `paper_recipe`); on the shared track, `budget`'s recipe and the methods
    that keep their own optimizer, marked. The dense rows are one per optimizer family (their
    `optimizer` knob), so they are left out."""
    from bench.pruner import OptimizerRecipe
    from bench.registry import PRUNERS  # imports the pruners (torch): only when a board asks

    pruners = [(p, hp) for p, hp in pruners if p != "dense"]
    text = f"Recipe track `{recipe}`: {TRACKS.get(recipe, 'unknown track')}"
    if recipe == "shared" and budget is not None:
        text += f" (here: {recipe_text(OptimizerRecipe.shared(budget))})"
    if recipe == "paper":
        groups: dict[str, list[str]] = {}
        for name, hp in pruners:
            own = PRUNERS.get(name).paper_recipe
            own = own.on(budget) if own is not None and budget is not None else own  # its weight decay here
            if picks_sgd(PRUNERS.get(name), hp):  # VD with Gale et al.'s SGD recipe
                how, name = "SGD with the budget's momentum and weight decay", f"{name} (optimizer = sgd)"
            else:
                how = recipe_text(own)
            if name not in groups.setdefault(how, []):
                groups[how].append(name)
        if groups:
            text += ": " + "; ".join(f"{how} for {', '.join(names)}" for how, names in groups.items())
    marks = dict.fromkeys(note for p, hp in pruners if (note := own_optimizer(recipe, p, hp)))
    if marks:
        text += ". Not on it: " + "; ".join(marks)
    return text + "."
