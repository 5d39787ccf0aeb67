"""An encoder given as a file is its content: two files of one name (moco/resnet18.pth, dino/resnet18.pth) are
two encoder versions in their fine-tunes' condition tags (the file's sha256, as the run's key pins it), so
compare keeps them two conditions instead of taking the second for a rerun of the first."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from simclr_s2.bigearthnet.bands import BANDS, Bands
from simclr_s2.hashing import sha256_file
from simclr_s2.learning.encoder_source import Scratch
from simclr_s2.learning.models import Encoder
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import build
from simclr_s2.stages.classifier import ENCODER_DIGEST, Prepared, condition_tags, resolve_training
from simclr_s2.study.comparison import FILE_ENCODER
from simclr_s2.tracking.registry import load_pretrained


def _tags(spec: specs.Training, resolved: dict[str, str], prepared: Prepared) -> dict[str, object]:
    """condition_tags of a training that ran (its split, run and model stand-ins: the tags read their names)."""
    digests = SimpleNamespace(digest="d" * 64)
    split = SimpleNamespace(kind="tile", test=digests, train=digests, val=digests, index_digest="i" * 64)
    trained = SimpleNamespace(split=split, pretrained=prepared.encoder.name, arch=prepared.encoder.arch,
                              policy="head2", bands=prepared.encoder.bands, scaling=prepared.encoder.scaling)
    run = SimpleNamespace(run_id="r" * 32, tracking=SimpleNamespace(tags=lambda run_id: {}))
    return condition_tags(spec, resolved, trained, prepared, run)  # type: ignore[arg-type]


def test_two_encoder_files_of_one_name_are_two_encoder_versions(tmp_path: Path, ctx: Context) -> None:
    versions = []
    for seed, folder in enumerate(("moco", "dino")):
        torch.manual_seed(seed)
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "resnet18.pth"
        torch.save(Encoder("resnet18", 13).state_dict(), path)  # torchgeo's layout, 13 bands
        spec = build(specs.Finetune, {"pretrained": str(path), "split": str(tmp_path / "no-split")})
        resolved = resolve_training(spec, ctx, make=False)
        assert resolved[ENCODER_DIGEST] == sha256_file(path)
        tags = _tags(spec, resolved, Prepared(None, load_pretrained(None, str(path))))  # type: ignore[arg-type]
        assert (tags["pretrained"], tags["encoder_version"]) == ("resnet18", f"{FILE_ENCODER}{sha256_file(path)}")
        versions.append(tags["encoder_version"])
    assert versions[0] != versions[1]
    baseline = build(specs.Baseline, {"split": str(tmp_path / "no-split")})
    scratch = Prepared(None, Scratch("resnet18", Bands(BANDS)))  # type: ignore[arg-type]
    assert _tags(baseline, resolve_training(baseline, ctx, make=False), scratch)["encoder_version"] == ""
