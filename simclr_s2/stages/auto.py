"""What `auto` stands for, in one place: the demo chain, so that `mlflow run . -e finetune` works on a fresh
checkout. Each link (demo archive, index, splits; the encoders live in pretrain.py) is its own run, reused
when finished, and refers to the next through an artifact URI (runs:/...), valid on a shared server too.

Every path of the chain is left at its default, `auto`: its place in the data folder (SIMCLR_S2_DATA),
the same place make_demo_data, build_index and create_splits use when run with their defaults.

Commands that train resolve with `make=True` (missing links are made); evaluate, compare, promote and
dry runs with `make=False`: they only find what exists, and get None where a link is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from simclr_s2.errors import UserError
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import build
from simclr_s2.stages.base import Stage, ensure_step, find_step
from simclr_s2.stages.data import (
    ARCHIVE_TAG,
    BUILD_INDEX,
    CREATE_SPLITS,
    MAKE_DEMO_DATA,
    demo_recipe,
    has_demo,
)

if TYPE_CHECKING:
    from mlflow.entities import Run

DEMO_SCHEMES = ("basic", "expanded")

# the demo's links are keyed by the code's fingerprint, so after an upgrade those of the old code are not found
NONE_YET = "this tracking store has none made by this version of the code yet"


def step_run(stage: Stage, spec: specs.Spec, ctx: Context, make: bool, usable=None,
             tags: Mapping[str, str] | None = None) -> Run | None:
    """The finished run of a link: made when `make` (with `tags` beside the stage's), else found (None when
    missing or unusable)."""
    if make:
        return ensure_step(stage, spec, ctx, usable=usable, tags=tags)
    found = find_step(stage, spec, ctx)
    return found if found is not None and (usable is None or usable(found)) else None


def _link(ctx: Context, key: tuple[str, ...], look_up: Callable[[], str | None]) -> str | None:
    """`look_up()`, once per command: finetune asks for the demo index four times (its split, pretrain's index
    and both schemes' test sets), each a search of the store. Not kept when the command reruns what it would
    reuse (ctx.reuse false) or the link is missing (another step may make it)."""
    if key in ctx.found_links:
        return ctx.found_links[key]
    found = look_up()
    if found is not None and ctx.reuse:
        ctx.found_links[key] = found
    return found


def demo_index(ctx: Context, make: bool = True) -> str | None:
    """runs:/ URI of the demo archive's index."""
    return _link(ctx, ("index",), lambda: _demo_index(ctx, make))


def _demo_index(ctx: Context, make: bool) -> str | None:
    data_spec = build(specs.MakeDemoData, {"n_patches": ctx.sizes.demo_patches})
    recipe = demo_recipe(data_spec)
    data = step_run(MAKE_DEMO_DATA, data_spec, ctx, make,
                    usable=lambda run: has_demo(Path(run.data.tags[ARCHIVE_TAG]), recipe))
    if data is None:
        return None
    index_spec = build(specs.BuildIndex, {"archive": data.data.tags[ARCHIVE_TAG]})
    index = step_run(BUILD_INDEX, index_spec, ctx, make)
    return None if index is None else f"runs:/{index.info.run_id}/index/index.parquet"


def demo_splits(ctx: Context, scheme: str, make: bool = True) -> str | None:
    """runs:/ URI of the demo splits of `scheme`."""
    return _link(ctx, ("splits", scheme), lambda: _demo_splits(ctx, scheme, make))


def _demo_splits(ctx: Context, scheme: str, make: bool) -> str | None:
    index = demo_index(ctx, make)
    if index is None:
        return None
    spec = build(specs.CreateSplits, {"index": index, "scheme": scheme})
    run = step_run(CREATE_SPLITS, spec, ctx, make)
    return None if run is None else f"runs:/{run.info.run_id}/splits"


def demo_test_sets(ctx: Context, make: bool = True) -> str | None:
    """The demo splits of every scheme, whose test patches pretraining must never see."""
    refs = [demo_splits(ctx, scheme, make) for scheme in DEMO_SCHEMES]
    return None if None in refs else ",".join(refs)


def split_ref(ctx: Context, given: str, scheme: str, make: bool) -> str:
    """The split a `split` parameter names; `auto` = the demo's, one line when it is not there yet."""
    if given != "auto":
        return given
    ref = demo_splits(ctx, scheme, make)
    if ref is None:
        raise UserError(f"split: auto names the demo splits of {scheme}, and {NONE_YET}; "
                        "run finetune (which makes them) or give a split")
    return ref
