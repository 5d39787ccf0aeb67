"""Every entry point by name: its spec (what it takes) and its stage (what it does). The stage is named as
"module:attribute" and imported only when its command runs, so listing or generating the entry points
(MLproject, the manual) loads no training stack. `python -m simclr_s2 <name>` runs one; MLproject and the
entrypoints/ scripts call exactly that. docs/development.md shows how to add one."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from simclr_s2.settings.spec import Spec
from simclr_s2.settings.specs import ENTRY_POINTS

if TYPE_CHECKING:
    from simclr_s2.stages.base import Stage


@dataclass(frozen=True)
class EntryPoint:
    spec: type[Spec]
    stage: str  # "package.module:ATTRIBUTE" of its Stage

    def load(self) -> Stage:
        module, _, attribute = self.stage.partition(":")
        return getattr(importlib.import_module(module), attribute)


_STAGES = {
    "make_demo_data": "simclr_s2.stages.data:MAKE_DEMO_DATA",
    "build_index": "simclr_s2.stages.data:BUILD_INDEX",
    "create_splits": "simclr_s2.stages.data:CREATE_SPLITS",
    "pretrain": "simclr_s2.stages.pretrain:PRETRAIN",
    "import_encoder": "simclr_s2.stages.pretrain:IMPORT_ENCODER",
    "finetune": "simclr_s2.stages.classifier:FINETUNE",
    "baseline": "simclr_s2.stages.classifier:BASELINE",
    "evaluate": "simclr_s2.stages.evaluate:EVALUATE",
    "main": "simclr_s2.stages.grid:GRID",
    "compare": "simclr_s2.stages.compare:COMPARE",
    "promote": "simclr_s2.stages.promote:PROMOTE",
    "tune": "simclr_s2.stages.tune:TUNE",
    "predict": "simclr_s2.stages.predict:PREDICT",
    "fetch": "simclr_s2.stages.fetch:FETCH",
}
REGISTRY: dict[str, EntryPoint] = {name: EntryPoint(spec, _STAGES[name]) for name, spec in ENTRY_POINTS.items()}


def register(spec: type[Spec], stage: str) -> None:
    """Add an entry point: it appears in `python -m simclr_s2`, MLproject (`make mlproject`) and the manual."""
    if spec.entry_point in REGISTRY:
        raise ValueError(f"entry point {spec.entry_point} is already registered")
    REGISTRY[spec.entry_point] = EntryPoint(spec, stage)


def command(name: str) -> str:
    """The shell command MLproject runs for an entry point (parameters are appended)."""
    return f"python -m simclr_s2 {name}"
