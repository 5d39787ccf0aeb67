"""pretrain and import_encoder: SimCLR encoders in the registry, and the demo's encoders behind `auto`.

Several GPUs or machines: torchrun starts one process per device; --batch-size stays the global batch
(NT-Xent's negatives come from all of it), and rank 0 alone logs and registers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from simclr_s2.bigearthnet.bands import ZSCORE, Bands, bands_or_auto
from simclr_s2.errors import UserError
from simclr_s2.hashing import sha256_file
from simclr_s2.learning import distributed
from simclr_s2.learning.imported_weights import SOURCE_BANDS, import_encoder_state, read_state_dict
from simclr_s2.learning.models import build_simclr
from simclr_s2.learning.simclr import pretrain
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import build
from simclr_s2.stages import auto, leakage
from simclr_s2.stages.base import Stage
from simclr_s2.stages.inputs import fetcher, loader, read_index
from simclr_s2.tracking.names import ENCODER_MODEL
from simclr_s2.tracking.registry import BAND_LIST_TAG, SCALING_TAG, VERSION_TAG
from simclr_s2.tracking.tracker import StageRun

# The study's three encoders, pretrained on the demo archive with the recipes of STUDY.md.
DEMO_ENCODERS: dict[str, dict[str, object]] = {
    "ben": {}, "ca-sgd": {"optimizer": "sgd", "lr": 0.1}, "ca-adam": {"optimizer": "adam", "lr": 5e-4}}


@dataclass(frozen=True)
class PretrainingData:
    archive_root: Path
    names: list[str]
    digest: str
    excluded: int  # patches on or next to the ground of the excluded splits' test and natural test sets
    index: pd.DataFrame


def capped(values: dict[str, str], ctx: Context, epochs: int) -> dict[str, str]:
    """`values` plus the epoch count when SIMCLR_S2_MAX_EPOCHS shortens it (logged, and in the key)."""
    return {**values, **({"epochs": str(ctx.sizes.epochs(epochs))} if ctx.sizes.epochs(epochs) != epochs else {})}


class Pretrain(Stage[specs.Pretrain]):
    spec = specs.Pretrain
    system_metrics = True

    def resolve(self, spec: specs.Pretrain, ctx: Context, make: bool = True) -> dict[str, str]:
        """The demo's index and test sets for what is `auto` (pinned, so the run's key says exactly what it
        used); an exclude_split given with index=auto is kept as given."""
        resolved: dict[str, str] = {}
        if spec.index == "auto":
            resolved["index"] = _demo(auto.demo_index(ctx, make), "index", "index")
        if spec.exclude_split == "auto":  # only with index=auto (validate)
            resolved["exclude_split"] = _demo(auto.demo_test_sets(ctx, make), "exclude_split", "splits")
        return capped(resolved, ctx, spec.epochs)

    def run_name(self, spec: specs.Pretrain, resolved: Mapping[str, str]) -> str:
        return f"pretrain-{spec.name}-{spec.arch}-s{spec.seed}"

    def tags(self, spec: specs.Pretrain, resolved: Mapping[str, str]) -> dict[str, object]:
        return {"arch": spec.arch, "seed": spec.seed, "pretrained": spec.name}

    def execute(self, spec: specs.Pretrain, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        bands = Bands.parse(spec.bands)
        epochs = int(resolved.get("epochs", spec.epochs))
        data = distributed.main_only(lambda: _pretraining_data(spec, resolved, ctx))
        if len(data.names) < spec.batch_size:
            raise UserError(f"batch_size: {spec.batch_size} is more than the {len(data.names)} patches "
                            "to pretrain on")
        augment = spec.augment()
        run.log_params({"index_digest": data.digest, "patches": len(data.names),
                        "excluded_test_patches": data.excluded})
        membership_digest = leakage.record(run, data.names, data.index) if distributed.is_main() else ""
        # the store keyed by the band names, as fine-tunes and `fetch pack=index` key it (not the raw `study`); of
        # the whole index unless max_patches samples it: the fine-tunes then read their splits from it, unpacked
        stored = None if spec.max_patches else sorted(data.index["name"])
        batches = loader(ctx, data.archive_root, data.names, None, bands, spec.batch_size, shuffle=True,
                         seed=spec.seed, digest=data.digest, store_names=stored).sharded()
        torch.manual_seed(spec.seed)  # the initial weights too (torch seeds each process anew)
        model = build_simclr(spec.arch, len(bands))
        result = pretrain(model, batches, epochs, optimizer=spec.optimizer, lr=spec.lr,
                          temperature=spec.temperature, seed=spec.seed, augment=augment,
                          checkpoint_path=run.checkpoint_dir / "pretrain.safetensors", progress=run.progress(),
                          device=distributed.device(), amp=torch.cuda.is_available())
        if not distributed.is_main():
            return
        run.close_publisher(wait=True)
        example = batches.source.read_batch(np.arange(2))[0].numpy()
        version = run.tracking.log_and_register(run.run_id, model, ENCODER_MODEL, example, aliases=(spec.name,),
                                   step=result.global_step, finite={"final_loss": result.epoch_losses[-1]},
                                   tags={"stage": "pretrain", "arch": spec.arch, "bands": spec.bands,
                                         BAND_LIST_TAG: bands.text, SCALING_TAG: ZSCORE,
                                         "data_digest": data.digest,
                                         leakage.DIGEST_TAG: membership_digest,
                                         "optimizer": spec.optimizer, "epochs": epochs, "name": spec.name,
                                         "seed": spec.seed, "final_loss": f"{result.epoch_losses[-1]:.5f}"})
        print(f"encoder: models:/{ENCODER_MODEL}@{spec.name} (version {version}), "
              f"loss {result.epoch_losses[0]:.4f} -> {result.epoch_losses[-1]:.4f}")


def _demo(ref: str | None, name: str, what: str) -> str:
    """The demo link `auto` stands for; one line when a command that only looks finds none."""
    if ref is None:
        raise UserError(f"{name}: auto names the demo {what}, and {auto.NONE_YET}; "
                        "run pretrain or finetune (which make them) or give one")
    return ref


def _pretraining_data(spec: specs.Pretrain, resolved: Mapping[str, str], ctx: Context) -> PretrainingData:
    """The patches to pretrain on: the index's, less the ground (any date, neighbours) of every excluded
    evaluation set, at most max_patches."""
    fetch = fetcher(ctx)
    index = read_index(fetch, resolved.get("index", spec.index))
    names = leakage.outside_evaluation(index.frame, fetch, resolved.get("exclude_split", spec.exclude_split))
    excluded = len(index.frame) - len(names)
    if spec.max_patches:
        rng = np.random.default_rng(spec.seed)
        names = sorted(rng.choice(names, size=min(spec.max_patches, len(names)), replace=False).tolist())
    return PretrainingData(index.archive_root, names, index.digest, excluded, index.frame)


def demo_encoder_spec(ctx: Context, name: str = "ben", arch: str = "resnet18") -> specs.Pretrain:
    """The pretrain settings of a demo encoder (its data: the demo index, less the demo test sets)."""
    epochs = ctx.sizes.demo_pretrain_epochs
    return build(specs.Pretrain, {"name": name, "arch": arch, **DEMO_ENCODERS[name],
                                  **({"epochs": epochs} if epochs else {})})


def demo_encoder(ctx: Context, name: str = "ben", make: bool = True, arch: str = "resnet18") -> str | None:
    """The pinned registry URI (models:/simclr-s2-encoder/<version>) of a demo encoder."""
    return encoder_step(demo_encoder_spec(ctx, name, arch), ctx, make)


def encoder_step(spec: specs.Pretrain, ctx: Context, make: bool, tags: Mapping[str, str] | None = None) -> str | None:
    """The pinned registry URI of the encoder `spec` pretrains, as a step: reused when finished, resumed when
    interrupted, made when `make` (None when not made yet)."""
    run = auto.step_run(PRETRAIN, spec, ctx, make, tags=tags)
    return None if run is None else f"models:/{run.data.tags[VERSION_TAG]}"


class ImportEncoder(Stage[specs.ImportEncoder]):
    spec = specs.ImportEncoder

    def run_name(self, spec: specs.ImportEncoder, resolved: Mapping[str, str]) -> str:
        return f"import-{spec.name}-{spec.arch}"

    def tags(self, spec: specs.ImportEncoder, resolved: Mapping[str, str]) -> dict[str, object]:
        return {"pretrained": spec.name}

    def execute(self, spec: specs.ImportEncoder, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        path = fetcher(ctx).path(spec.state_dict, "state_dict")
        bands = bands_or_auto(spec.bands)
        imported = import_encoder_state(read_state_dict(path, "state_dict", bands), bands,
                                        source_bands=SOURCE_BANDS[spec.source_bands], source=str(path))
        if spec.arch not in ("auto", imported.arch):
            raise UserError(f"arch: {path} holds a {imported.arch} encoder, not a {spec.arch}")
        digest = sha256_file(path)
        run.log_params({"state_dict_sha256": digest, "layout": imported.layout, "resolved_arch": imported.arch})
        example = torch.randn(2, len(imported.bands), 120, 120, generator=torch.Generator().manual_seed(0)).numpy()
        unknown = "unknown (imported)"
        version = run.tracking.log_and_register(
            run.run_id, imported.model, ENCODER_MODEL, example, aliases=(spec.name,),
            tags={"stage": "import_encoder", "arch": imported.arch, "bands": spec.bands,
                  BAND_LIST_TAG: imported.bands.text, SCALING_TAG: imported.scaling, "data_digest": unknown,
                  "optimizer": unknown, "epochs": unknown, "name": spec.name, "source": spec.state_dict,
                  "state_dict_sha256": digest, "layout": imported.layout, "source_bands": spec.source_bands})
        print(f"encoder: models:/{ENCODER_MODEL}@{spec.name} (version {version}, {imported.arch}, "
              f"{imported.layout} layout, inputs {imported.scaling}) from {spec.state_dict}")


PRETRAIN = Pretrain()
IMPORT_ENCODER = ImportEncoder()
