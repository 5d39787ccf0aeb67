"""An encoder imported in torchgeo's layout gets a fair fine-tune: all 12 L2A bands, BatchNorm statistics
recomputed on the training patches, and its new projection head trained, never frozen at random."""

from __future__ import annotations

import pandas as pd
import torch

from simclr_s2.bigearthnet.bands import BANDS
from simclr_s2.learning.models import build_encoder
from simclr_s2.stages.classifier import FINETUNE
from simclr_s2.stages.pretrain import IMPORT_ENCODER
from simclr_s2.tracking.names import ENCODER_MODEL


def test_a_torchgeo_encoder_is_fine_tuned_on_12_bands_recalibrated_with_its_head_trained(project, demo, tmp_path):
    torch.manual_seed(0)
    import torchvision  # here, not at collection: every xdist worker would pay its import

    net = torchvision.models.resnet18()
    net.conv1 = torch.nn.Conv2d(13, 64, 7, 2, 3, bias=False)  # torchgeo's SENTINEL2_ALL_MOCO: 13 L1C bands
    torch.save(net.state_dict(), tmp_path / "ssl4eo-r18.pth")
    project.run_stage(IMPORT_ENCODER, state_dict=str(tmp_path / "ssl4eo-r18.pth"), name="ssl4eo-r18")
    version = project.client.get_model_version_by_alias(ENCODER_MODEL, "ssl4eo-r18")
    assert version.tags["band_list"] == ",".join(BANDS)

    run = project.client.get_run(project.run_stage(
        FINETUNE, pretrained="models:/simclr-s2-encoder@ssl4eo-r18", epochs=1, register="false",
        allow_pretraining_overlap="unknown"))  # imported: the ground it saw is unknown
    params = run.data.params
    splits = params["resolved_split"].removeprefix("runs:/").split("/")[0]  # the split this fine-tune read
    train = pd.read_csv(project.artifact(splits, "splits/basic/train_100pct.csv"))
    assert params["bn_recalibrated_on"] == str(len(train)) and run.data.tags["bn_recalibrated"] == "true"
    assert params["resolved_bands"] == ",".join(BANDS) and params["policy"] == "head2"
    unused = 512 * 128 + 128  # the head's last Dense feeds nothing
    assert int(params["frozen_weights"]) == sum(p.numel() for p in build_encoder("resnet18", 12).parameters()) + unused
    # this project's own encoder, frozen as well, gets its statistics from the training patches too (its own
    # are its 64 px pretraining views')
    assert demo.data.params["bn_recalibrated_on"] == str(len(train)) and demo.data.tags["bn_recalibrated"] == "true"
