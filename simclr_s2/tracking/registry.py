"""The model registry: logging and registering encoders and classifiers, and turning the `pretrained`
parameter (registry URI, run model, or state-dict file) into a model with its provenance."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import simclr_s2
from simclr_s2.bigearthnet.bands import resolve_bands
from simclr_s2.errors import UserError
from simclr_s2.models import ARCHS, SimCLRModel, load_encoder_state

log = logging.getLogger(__name__)

T = TypeVar("T", bound=torch.nn.Module)

ENCODER_MODEL = "simclr-s2-encoder"
CLASSIFIER_MODEL = "simclr-s2-irrigation"
VERSION_TAG = "simclr_s2.model_version"
PIP_REQUIREMENTS = ["torch==2.14.1", "torchvision==0.29.1", "numpy", "mlflow"]


def log_and_register(model: torch.nn.Module, registered_name: str, example: np.ndarray,
                     tags: Mapping[str, object], aliases: tuple[str, ...] = ()) -> str:
    """Log `model` (pickle format, with the simclr_s2 code inside, so it loads where the package is not
    installed) with a signature and input example, register it, tag the version and set `aliases`.
    Returns the version. Called only once everything else in the run has succeeded, so a failed run
    never leaves a registered version behind."""
    if len(example) < 2:
        raise ValueError("input example needs a batch of at least 2 so the batch dimension stays free")
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model, name="model", serialization_format="pickle", signature=infer_signature(example, output),
        input_example=example, registered_model_name=registered_name,
        code_paths=[str(Path(simclr_s2.__file__).parent)], pip_requirements=PIP_REQUIREMENTS)
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, str(value))
    for alias in aliases:
        client.set_registered_model_alias(registered_name, alias, version)
    mlflow.set_tag(VERSION_TAG, f"{registered_name}/{version}")
    log.info("registered %s version %s%s", registered_name, version,
             f" as @{', @'.join(aliases)}" if aliases else "")
    return version


@dataclass(frozen=True)
class Pretrained:
    """A pretrained SimCLR model and where it came from (logged with every fine-tune)."""

    model: SimCLRModel
    uri: str
    name: str  # what the `pretrained` tag of fine-tunes says: the alias or name, e.g. "ben"
    version: str  # "simclr-s2-encoder/3", or "" for a file or a run's model
    arch: str
    bands: str


def resolve_model_uri(uri: str) -> tuple[str, str, dict[str, str]]:
    """(download URI, "name/version" or "", version tags) for a models:/ URI; other URIs pass through."""
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\w+)|@([\w-]+))", uri)
    if not match:
        return uri, "", {}
    name, version, alias = match.groups()
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as error:
        raise UserError(f"pretrained: {uri} not found in the model registry ({error.message.splitlines()[0]})") \
            from None
    return f"models:/{name}/{mv.version}", f"{name}/{mv.version}", dict(mv.tags)


def load_logged(uri: str, kind: type[T], what: str) -> tuple[T, str, dict[str, str]]:
    """A logged model of class `kind` from a registry or run URI, with its "name/version" ("" for a run's
    model) and version tags; `what` names the parameter in the one-line error."""
    resolved, version, tags = resolve_model_uri(uri)
    try:
        model = mlflow.pytorch.load_model(resolved, map_location="cpu")
    except (MlflowException, OSError) as error:
        raise UserError(f"{what}: cannot load {uri}: {str(error).splitlines()[0]}") from None
    if not isinstance(model, kind):
        raise UserError(f"{what}: {uri} is a {type(model).__name__}, expected a {kind.__name__}")
    return model, version, tags


def load_pretrained(spec: str, bands: str = "auto") -> Pretrained:
    """Load a SimCLR model from a registry URI (`models:/simclr-s2-encoder@ben`), a run's model
    (`runs:/<id>/model`) or a state-dict file (its arch inferred from the weights). `bands` "auto" takes
    the encoder's own band set; any other value must have the encoder's band count."""
    path = Path(spec).expanduser()
    version, tags = "", {}
    if path.suffix in {".pt", ".pth"} or path.is_file():
        if not path.is_file():
            raise UserError(f"pretrained: state-dict file {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        conv1 = state.get("encoder.conv1.weight", state.get("module.encoder.conv1.weight"))
        in_channels = int(conv1.shape[1]) if conv1 is not None else _band_count(bands)
        model = load_encoder_state(state, infer_arch(state, path), in_channels)
        spec = str(path.resolve())
    else:
        model, version, tags = load_logged(spec, SimCLRModel, "pretrained")
    in_channels = model.encoder.in_channels
    own_bands = tags.get("bands") or {10: "study", 12: "all"}.get(in_channels, "")
    if bands == "auto":
        if not own_bands:
            raise UserError(f"pretrained: {spec} takes {in_channels} bands; say which with the bands parameter")
        bands = own_bands
    if _band_count(bands) != in_channels:
        raise UserError(f"pretrained: encoder {spec} expects {in_channels} bands, data has "
                        f"{_band_count(bands)} (bands={bands})")
    alias = re.fullmatch(r"models:/[^/@]+@([\w-]+)", spec)
    name = alias.group(1) if alias else tags.get("name") or Path(spec.rstrip("/")).stem
    return Pretrained(model, spec, name, version, model.encoder.arch, bands)


def _band_count(bands: str) -> int:
    return len(resolve_bands(bands))


def infer_arch(state: Mapping[str, torch.Tensor], source: Path) -> str:
    """The ResNet depth from the number of residual blocks per stage in a state dict."""
    blocks = [len({k.split(".")[2] for k in state if k.startswith(f"encoder.layer{i}.")}) for i in range(1, 5)]
    bottleneck = any(".conv3." in k for k in state)
    known = {(2, 2, 2, 2, False): "resnet18", (3, 4, 6, 3, True): "resnet50",
             (3, 4, 23, 3, True): "resnet101", (3, 8, 36, 3, True): "resnet152"}
    arch = known.get((*blocks, bottleneck))
    if arch is None:
        raise UserError(f"pretrained: {source} is not a SimCLRModel state dict of {', '.join(ARCHS)} "
                        f"(found blocks {blocks} under 'encoder.layer*')")
    return arch
