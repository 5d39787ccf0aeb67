"""The data stages: write the demo archive (or a demo scene), index an archive, draw the splits of one scheme."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import pandas as pd

from simclr_s2 import disk, faults
from simclr_s2.bigearthnet.demo import write_demo_archive, write_demo_scene
from simclr_s2.bigearthnet.index import (
    build_index,
    index_archive_root,
    index_digest,
    index_layout,
    load_index,
)
from simclr_s2.bigearthnet.layouts import V1, ArchiveLayout
from simclr_s2.bigearthnet.nomenclature import DEFAULT_MIN_FRACTION, PRESENT, scheme_labels
from simclr_s2.errors import UserError
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import Spec
from simclr_s2.stages.base import Stage
from simclr_s2.stages.inputs import SOURCE, fetcher
from simclr_s2.study.splits import NATURAL, OVERLAP_METRIC, create_splits, file_name, load_split, scheme_name
from simclr_s2.tracking.artifacts import is_remote
from simclr_s2.tracking.tracker import StageRun

DEMO_MARKER = ".simclr_s2_demo.json"
PARTIAL = ".partial-"  # <out>.partial-<pid>@<host>: where a demo is written before it is moved into place
ARCHIVE_TAG = "simclr_s2.archive"
SPLITS_TAG = "simclr_s2.study.splits"
SCENE_TAG = "simclr_s2.scene"
NO_SCENE = "none"

S = TypeVar("S", bound=Spec)


def _absolute(path: str) -> Path:
    return Path(path).expanduser().resolve()


def _path(spec: Spec, resolved: Mapping[str, str], name: str) -> Path:
    """A path parameter as `auto` resolved it, or as given."""
    return _absolute(resolved.get(name, getattr(spec, name)))


def _folder(spec: Spec, resolved: Mapping[str, str], name: str) -> Path:
    """A folder parameter (`_path`), checked before any work: a folder, or a path not there yet below one. A
    file in its place would stop the stage at its first write, after the work (a scan, a download)."""
    path = _path(spec, resolved, name)
    there = next(p for p in (path, *path.parents) if p.exists())
    if not there.is_dir():
        below = "" if there == path else f" (it would hold {path})"
        raise UserError(f"{name}: {there} is a file{below}; expected a folder, or a path not yet made")
    return path


class DataStage(Stage[S]):
    """A stage whose paths left at `auto` are their places in the data folder (SIMCLR_S2_DATA)."""

    def resolve(self, spec: S, ctx: Context, make: bool = True) -> dict[str, str]:
        return spec.data_paths(ctx.data_root)


class MakeDemoData(DataStage[specs.MakeDemoData]):
    spec = specs.MakeDemoData

    def run_name(self, spec: specs.MakeDemoData, resolved: Mapping[str, str]) -> str:
        return f"demo-data-{spec.n_patches}-s{spec.seed}" if spec.scene == NO_SCENE else f"demo-scene-s{spec.seed}"

    def tags(self, spec: specs.MakeDemoData, resolved: Mapping[str, str]) -> dict[str, object]:
        return {"seed": spec.seed}

    def execute(self, spec: specs.MakeDemoData, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        started = time.perf_counter()
        if spec.scene != NO_SCENE:
            scene = _folder(spec, resolved, "scene")
            reused = _write_once("scene", scene, {"scene_seed": spec.seed}, lambda f: write_demo_scene(
                f, seed=spec.seed))
            run.log_metrics({"seconds": time.perf_counter() - started})
            run.set_tags({SCENE_TAG: str(scene), "simclr_s2.reused_files": str(reused).lower()})
            print(f"demo scene: {scene} (map it: predict -P scene={spec.scene})")
            return
        out = _folder(spec, resolved, "out")
        where = "SIMCLR_S2_DATA" if "out" in resolved else "out"  # auto: the data folder's demo
        reused = _write_once(where, out, demo_recipe(spec), lambda f: write_demo_archive(
            f, n_patches=spec.n_patches, seed=spec.seed, layout=spec.layout))
        run.log_metrics({"patches": spec.n_patches, "seconds": time.perf_counter() - started})
        run.set_tags({ARCHIVE_TAG: str(out), "simclr_s2.reused_files": str(reused).lower()})
        print(f"demo archive: {out} ({spec.n_patches} patches)")


def _write_once(param: str, out: Path, recipe: Mapping[str, object], write: Callable[[Path], object]) -> bool:
    """Write a demo of `recipe` to `out` unless it is there already (deterministic by seed: nothing to redo);
    it is written beside `out` and moved into place whole, so only a finished one ever carries the name (what a
    write that failed left is removed then, what one killed left by the next call). Returns whether it was
    there; `param` names what chose `out` (a parameter, or SIMCLR_S2_DATA), for the error."""
    if out.parent.is_dir():  # what writes killed on this host left (SIGKILL, a lost session: no clean-up ran)
        disk.remove_left_by_dead(out.parent, f"{glob.escape(out.name)}{PARTIAL}*", _partial_pid)
    if has_demo(out, recipe):
        return True
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{param}: {out} holds {_held(out)}, not a demo of {dict(recipe)}; " + (
            "the demo chain's size is SIMCLR_S2_DEMO_PATCHES: set it back to the one that made this demo, or "
            "point SIMCLR_S2_DATA at another folder" if param == "SIMCLR_S2_DATA" else "choose an empty folder"))
    partial = out.with_name(f"{out.name}{PARTIAL}{os.getpid()}@{socket.gethostname()}")
    try:
        write(partial)
        faults.point("demo_write", 0)
        (partial / DEMO_MARKER).write_text(json.dumps(recipe))
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return False


def _partial_pid(name: str) -> str:
    """The process id in a partial demo's name when that process ran on this host (or named none: written
    before hosts were named), else "": a data folder several machines share holds their live partials too."""
    pid, _, host = name.rpartition(PARTIAL)[2].partition("@")
    return pid if host in ("", socket.gethostname()) else ""


def _held(folder: Path) -> str:
    """What a folder that is not the demo asked for holds: another demo (its recipe), or something else."""
    recipe = _recipe_of(folder)
    return "something other than a demo" if recipe is None else f"a demo of {recipe}"


def _recipe_of(folder: Path) -> object | None:
    """The recipe a demo folder's marker records; None without a readable one (a damaged marker: no demo)."""
    try:
        return json.loads((folder / DEMO_MARKER).read_text())
    except (OSError, ValueError):
        return None


def demo_recipe(spec: specs.MakeDemoData) -> dict[str, object]:
    """What decides a demo archive's bytes (the v1 recipe keeps its old form, so old archives still match)."""
    return {"n_patches": spec.n_patches, "seed": spec.seed,
            **({"layout": spec.layout} if spec.layout != V1.name else {})}


def has_demo(folder: Path, recipe: Mapping[str, object]) -> bool:
    """The demo (archive or scene) of `recipe` is there (deterministic by seed: nothing to redo)."""
    return _recipe_of(folder) == dict(recipe)


class BuildIndex(DataStage[specs.BuildIndex]):
    spec = specs.BuildIndex

    def run_name(self, spec: specs.BuildIndex, resolved: Mapping[str, str]) -> str:
        return f"index-{_path(spec, resolved, 'archive').name}"

    def execute(self, spec: specs.BuildIndex, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        archive, out = _path(spec, resolved, "archive"), _folder(spec, resolved, "out")
        result = build_index(archive, out / "index.parquet", workers=spec.workers or None,
                             check_rasters=spec.check_rasters, version=spec.version)
        total = result.n_indexed + result.n_rejected
        run.log_metrics({"patches_indexed": result.n_indexed, "patches_rejected": result.n_rejected,
                         "seconds": result.seconds, "patches_per_second": total / max(result.seconds, 1e-9)})
        run.log_artifact(result.index_path, "index")
        run.log_artifact(result.rejected_path, "index")
        index = load_index(result.index_path)
        run.log_table(index.drop(columns=["labels"]), name="bigearthnet-index", source=str(result.index_path),
                      digest=index_digest(result.index_path), context="index")
        run.set_tags({ARCHIVE_TAG: str(archive.resolve()), "archive_version": result.version})
        print(f"index: {result.index_path} ({result.version} archive, {result.n_indexed} patches, "
              f"{result.n_rejected} rejected)")


def labels(index: pd.DataFrame, layout: ArchiveLayout, spec: specs.CreateSplits) -> tuple[pd.Series | None, str]:
    """The scheme's labels and how they were made: on an index without reference maps (v1) `basic` and
    `expanded` read the index's presence columns (None), a custom scheme is presence too; on one with
    reference maps (v2) every scheme is by area."""
    if not layout.reference_maps and spec.min_fraction != "auto":
        raise UserError(f"min_fraction: a {layout.title} archive has labels only, no pixel shares; leave it at auto")
    if not layout.reference_maps and spec.scheme in ("basic", "expanded"):
        return None, f"column {PRESENT}{spec.scheme}"
    min_fraction = None if spec.min_fraction == "auto" else float(spec.min_fraction)
    rule = "presence of the scheme's classes" if not layout.reference_maps else \
        f"area: scheme's classes cover >= {min_fraction or DEFAULT_MIN_FRACTION} of the patch, " \
        f"ambiguous patches {'left out' if spec.ambiguous == 'exclude' else 'negative'}"
    return scheme_labels(index, spec.scheme, min_fraction=min_fraction, ambiguous=spec.ambiguous), rule


class CreateSplits(DataStage[specs.CreateSplits]):
    spec = specs.CreateSplits

    def run_name(self, spec: specs.CreateSplits, resolved: Mapping[str, str]) -> str:
        return f"splits-{scheme_name(spec.scheme)[0]}-s{spec.seed}"

    def tags(self, spec: specs.CreateSplits, resolved: Mapping[str, str]) -> dict[str, object]:
        return {"scheme": scheme_name(spec.scheme)[0], "seed": spec.seed}

    def execute(self, spec: specs.CreateSplits, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        out = _folder(spec, resolved, "out")
        scheme, classes = scheme_name(spec.scheme)
        index_ref = resolved.get("index", spec.index)
        index_path = fetcher(ctx).path(index_ref, "index")
        index = load_index(index_path)
        layout = index_layout(index_path)
        positives, rule = labels(index, layout, spec)
        by_area = {"min_fraction": spec.min_fraction, "ambiguous": spec.ambiguous} if layout.reference_maps else None
        manifest = create_splits(
            index, scheme, out, fractions=spec.fractions, seed=spec.seed, exclude_snow_cloud=spec.exclude_snow_cloud,
            official_split=None if spec.official_split == "all" else spec.official_split, ratios=spec.ratios,
            index_digest=index_digest(index_path), positives=positives, classes=classes, kind=spec.kind,
            natural_test=spec.natural_test, natural_share=spec.natural_share, label_rule=rule, fold=spec.fold,
            rule=by_area)
        scheme_dir = out / scheme
        (scheme_dir / SOURCE).write_text(json.dumps(
            {"index": index_ref if is_remote(index_ref) else str(index_path),
             "archive_root": str(index_archive_root(index_path))}, indent=2) + "\n")
        run.log_artifacts(scheme_dir, f"splits/{scheme}")
        run.log_metrics({f"{name.removesuffix('.csv')}_{what}": getattr(entry, what)
                         for name, entry in manifest.files.items() for what in ("count", "positives")})
        overlap = manifest.overlap_shares()  # share of each evaluation set on or next to train's ground
        run.log_metrics({f"{OVERLAP_METRIC}_{s}": share for s, share in overlap.items()})
        for set_name, fraction in _split_files(manifest.fractions, spec.natural_test):
            split = load_split(out, scheme, fraction, set_name)
            run.log_table(pd.DataFrame({"name": split.names, "label": split.labels}),
                          name=f"{scheme}/{file_name(set_name, fraction).removesuffix('.csv')}",
                          source=str(split.path), digest=split.digest, context=set_name)
        run.set_tags({SPLITS_TAG: str(scheme_dir), "split_kind": manifest.kind,
                      **({"fold": manifest.fold, "held_out": manifest.held_out} if manifest.held_out else {})})
        near = f"{overlap['test']:.1%}" if "test" in overlap else "not measured"
        print(f"splits: {scheme_dir} (" + ", ".join(f"{k} {v}" for k, v in manifest.sizes.items()) +
              f"; test patches near train: {near})")


def _split_files(fractions: tuple[int, ...], natural: bool) -> list[tuple[str, int]]:
    """(set, fraction) of every file of a scheme's splits: train and val per fraction, the test sets once."""
    tests = [("test", fractions[0]), *([(NATURAL, fractions[0])] if natural else [])]
    return [(s, f) for f in fractions for s in ("train", "val")] + tests


MAKE_DEMO_DATA = MakeDemoData()
BUILD_INDEX = BuildIndex()
CREATE_SPLITS = CreateSplits()
