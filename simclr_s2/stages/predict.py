"""predict: map irrigation over a Sentinel-2 L2A scene with a registered classifier. The scene (an L2A
product, a folder of per-band GeoTIFFs or a STAC item) is cut into patch-sized windows with the archive's
radiometry and resampling, windows holding masked SCL classes are left out, the others are scored in
batches, and the maps (probability and binary COGs in the scene's CRS, a quicklook, a summary of areas)
go to `<out>/<scene id>/` and are logged as artifacts of the run, which is tagged with the model version,
the scene and its processing baseline. See docs/maps.md."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from simclr_s2.bigearthnet.bands import ZSCORE, InputTransform
from simclr_s2.learning.models import IrrigationClassifier
from simclr_s2.scenes.inference import Result, map_scene
from simclr_s2.scenes.maps import PROBABILITY, QUICKLOOK, SUMMARY, write_quicklook
from simclr_s2.scenes.output import ENTRY_POINT, IDENTITY, check_target, draft_folder, publish
from simclr_s2.scenes.product import Scene, open_scene
from simclr_s2.scenes.scl import parse_mask
from simclr_s2.scenes.windows import SceneReader
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.stages.base import Stage
from simclr_s2.tracking.registry import SCALING_TAG, classifier_bands
from simclr_s2.tracking.tracker import StageRun

ARTIFACTS = "maps"


def _offsets(scene: Scene, bands: tuple[str, ...]) -> str:
    values = {scene.offset(b) for b in bands}
    return str(values.pop()) if len(values) == 1 else ",".join(f"{b}={scene.offset(b)}" for b in bands)


class Predict(Stage[specs.Predict]):
    spec = specs.Predict
    read_only = True

    def run_name(self, spec: specs.Predict, resolved: Mapping[str, str]) -> str:
        return f"predict-{Path(spec.scene.rstrip('/')).stem}"

    def execute(self, spec: specs.Predict, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        out = Path(spec.out).expanduser().resolve()
        with draft_folder(out) as draft:
            model, ref = run.tracking.load_logged(spec.model, IrrigationClassifier, "model")
            bands = classifier_bands(ref, model, spec.model, "model", "predict picks a scene's bands by name")
            version = ref.version or spec.model
            threshold, source = (float(spec.threshold), "given") if spec.threshold != "auto" else \
                run.tracking.validation_threshold(ref)
            scene = open_scene(spec.scene)
            target = out / scene.id
            check_target(target, scene.identity)
            run.log_params({"resolved_model": version, "resolved_threshold": threshold})
            run.set_tags({"model_version": version, "scene_id": scene.id, "scene_form": scene.form,
                          "processing_baseline": scene.baseline, "boa_offset": _offsets(scene, bands),
                          "boa_offset_source": scene.offset_source, "threshold_source": source})
            scaling = ref.tags.get(SCALING_TAG, ZSCORE)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            start = time.perf_counter()
            with SceneReader(scene, bands, parse_mask(spec.mask)) as reader:
                result = map_scene(reader, model, InputTransform(bands, scaling), stride=spec.stride,
                                   threshold=threshold, folder=draft, batch_size=spec.batch_size, device=device)
                crs = str(reader.grid.crs)
            seconds = time.perf_counter() - start
            write_quicklook(draft / PROBABILITY, draft / QUICKLOOK)
            summary = {"entry_point": ENTRY_POINT, "scene": scene.id, IDENTITY: scene.identity,
                       "scene_form": scene.form,
                       "processing_baseline": scene.baseline, "boa_offset": {b: scene.offset(b) for b in bands},
                       "boa_offset_source": scene.offset_source, "model": version, "bands": list(bands),
                       "scaling": scaling, "threshold": threshold, "threshold_source": source,
                       "stride": spec.stride, "mask": list(parse_mask(spec.mask)), "crs": crs,
                       "map_resolution_m": result.resolution_m, "windows": result.windows,
                       "windows_scored": result.scored, **result.tally.areas(), "note": _note(result)}
            (draft / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
            run.log_metrics({**{k: v for k, v in summary.items() if k.endswith(("_ha", "_share"))},
                             "windows": result.windows, "windows_scored": result.scored,
                             "windows_per_s": result.windows / seconds})
            publish(draft, target, scene.identity)
        run.log_artifacts(target, ARTIFACTS)  # after publish: a run failing there has logged no maps
        areas = result.tally.areas()
        print(f"{scene.id}: {areas['irrigated_ha']:,.0f} ha irrigated, {areas['irrigated_share']:.1%} of the "
              f"{areas['scored_ha']:,.0f} ha scored ({result.scored} of {result.windows} windows, threshold "
              f"{threshold:.4g}: {source}); {areas['masked_share']:.1%} masked; maps in {target}")


def _note(result: Result) -> str:
    if result.windows == 0:
        return "the scene is smaller than one window (1.2 km): nothing was scored; the maps are all no data"
    if result.scored == 0:
        return "every window holds masked pixels (cloud, shadow, snow, no data): the maps are all no data"
    return ""


PREDICT = Predict()
