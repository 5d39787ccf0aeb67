"""A classifier's encoder from either source, through the one interface training uses."""

from __future__ import annotations

import torch

from simclr_s2.bigearthnet.bands import ZSCORE, Bands
from simclr_s2.learning.encoder_source import SCRATCH, EncoderSource, Scratch
from simclr_s2.learning.models import build_simclr


def test_scratch_trains_a_new_encoder_whole():
    source = Scratch("resnet18", Bands.parse("B04,B03,B02"))
    model = source.classifier(dropout=0.1)
    assert isinstance(source, EncoderSource) and model.encoder.in_channels == 3
    assert (source.name, source.scaling, source.version, dict(source.tags)) == (SCRATCH, ZSCORE, "", {})
    assert source.trainable("frozen") == "all" and source.provenance() == {}


def test_a_pretrained_source_gives_a_copy_and_the_policy_asked(tmp_path):
    from simclr_s2.tracking.registry import load_pretrained  # a file needs no tracking store

    torch.save(build_simclr("resnet18", 10).state_dict(), tmp_path / "own.pt")
    source = load_pretrained(None, str(tmp_path / "own.pt"))
    assert isinstance(source, EncoderSource) and source.name == "own" and source.bands == Bands.parse("study")
    model = source.classifier(dropout=0.0)
    with torch.no_grad():
        next(model.encoder.parameters()).add_(1.0)  # training one trial must not change the shared encoder
    assert not torch.equal(next(model.encoder.parameters()), next(source.model.encoder.parameters()))
    assert source.trainable("frozen") == "frozen"
    assert source.provenance() == {"pretrained_uri": str((tmp_path / "own.pt").resolve()), "pretrained_version": "-"}
