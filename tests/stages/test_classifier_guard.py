"""finetune's leakage guard (classifier.prepare) covers every set the run is scored on: the natural test set,
whose test_natural_* metrics a fine-tune logs and registers, as well as the balanced test set."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from simclr_s2.errors import UserError
from simclr_s2.settings import specs
from simclr_s2.stages import classifier, leakage
from simclr_s2.study import footprint, membership
from simclr_s2.study.splits import SplitSet

INDEX = pd.DataFrame({"name": ["seen", "seen_twin", "far"], "epsg": [32629] * 3,
                      "ulx": [300_000.0, 300_000.0, 306_000.0], "uly": [4_500_000.0] * 3})


class Door:
    """Tracking's door as prepare uses it: an encoder whose membership (the file `footprints`) is recorded."""

    def __init__(self, footprints: Path) -> None:
        self.footprints = footprints

    def load_pretrained(self, spec: str, bands: object) -> SimpleNamespace:
        return SimpleNamespace(tags={leakage.DIGEST_TAG: "d"}, run_id="r1")

    def download_artifacts(self, run_id: str, path: str, dst: str) -> str:
        return str(self.footprints)


def _set(names: list[str]) -> SplitSet:
    return SplitSet(names, np.zeros(len(names), np.int64), "digest", Path(f"{names[0]}.csv"))


@pytest.fixture
def finetune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """prepare of a fine-tune whose encoder saw "seen" (and so its twin), on a split whose test set is "far"
    and whose natural test set is `natural` (None: the split has none)."""
    door = Door(membership.save(membership.Membership.of(footprint.of(INDEX, ["seen"])), tmp_path / "f.npy"))
    monkeypatch.setattr(classifier.Tracking, "of", lambda ctx: door)
    monkeypatch.setattr(classifier, "fetcher", lambda ctx: None)

    def prepare(natural: list[str] | None, allow: str = "false") -> classifier.Prepared:
        split = SimpleNamespace(test=_set(["far"]), natural=natural and _set(natural), index=INDEX)
        monkeypatch.setattr(classifier, "load_split_data", lambda *args, **kwargs: split)
        spec = specs.Finetune(pretrained="models:/simclr-s2-encoder/1", split="s", allow_pretraining_overlap=allow)
        return classifier.prepare(spec, {}, None)

    return prepare


def test_an_encoder_that_saw_the_natural_test_set_is_refused(finetune):
    with pytest.raises(UserError, match=r"^pretrained: the encoder was pretrained on 1 of the 2 patches of the "
                                        r"test \+ test_natural set \(.*allow_pretraining_overlap=true") as error:
        finetune(["far", "seen_twin"])  # "far" is in both sets: one patch
    assert "\n" not in str(error.value)
    assert finetune(["seen_twin"], allow="true").overlap == "override:1"  # one verdict, recorded as before


def test_a_clean_natural_test_set_or_none_passes(finetune):
    assert finetune(["far"]).overlap == "0"
    assert finetune(None).overlap == "0"
