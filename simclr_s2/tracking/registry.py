"""The model registry: logging and registering encoders and classifiers, and turning the `pretrained`
parameter (registry URI, run model, or state-dict file) into a model with its provenance.

A classifier is logged to serve itself: MLflow's pt2 format (`torch.export`, no pickle, no code) of a
`ServedClassifier` that takes archive DN and gives a probability, its bands and scaling in the model's
metadata, and beside it the weights (safetensors) and architecture spec from which the package rebuilds
the trainable classifier. Encoders are still logged as pickle with the package's code."""

from __future__ import annotations

import copy
import logging
import math
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import mlflow
import numpy as np
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

import simclr_s2
from simclr_s2.bigearthnet.bands import BANDS, STUDY_BANDS, ZSCORE, Bands
from simclr_s2.errors import NonFiniteError, UserError
from simclr_s2.learning.encoder_source import EncoderSource
from simclr_s2.learning.imported_weights import import_encoder_state, read_state_dict
from simclr_s2.learning.models import IrrigationClassifier, SimCLRModel
from simclr_s2.learning.serving import ServedClassifier, is_rebuildable, rebuild, save_rebuildable
from simclr_s2.settings.mlflow_store import StoreClient
from simclr_s2.tracking.names import CLASSIFIER_MODEL, ENCODER_MODEL
from simclr_s2.tracking.process import fluent_uris
from simclr_s2.tracking.versions import CLASSIFIER_STAGES, READY

log = logging.getLogger(__name__)

T = TypeVar("T", bound=torch.nn.Module)

VERSION_TAG = "simclr_s2.model_version"
BAND_LIST_TAG = "band_list"  # the encoder's input bands, in channel order: "B04,B03,..."
SCALING_TAG = "scaling"  # the input scaling an encoder or classifier expects (bands.SCALINGS)
# What a served or pickled model needs where it is loaded: the torch that wrote it (its public version, without
# a local build label such as +cu130, which a package index does not know), numpy and MLflow. No torchvision:
# the package builds its ResNets without it (learning/resnet.py).
PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+', 1)[0]}", "numpy", "mlflow"]


class _DeliberatePickle(logging.Filter):
    """MLflow warns at every pickle-format save; an encoder is pickled on purpose (pt2 would not give a
    trainable module back for fine-tuning), so that warning says nothing new."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Pickle or CloudPickle" not in record.getMessage()


def signature(example: np.ndarray, output: tuple[int, ...]) -> ModelSignature:
    """An explicit signature (batch dimension free) for inputs shaped as `example` and outputs of the shape
    `output` per item, so MLflow neither infers nor warns."""
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]))]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *output))]))


def log_and_register(client: StoreClient, run_id: str, model: torch.nn.Module, registered_name: str,
                     example: np.ndarray, tags: Mapping[str, object], *, aliases: tuple[str, ...] = (),
                     step: int = 0, finite: Mapping[str, float] | None = None) -> str:
    """Log `model` in run `run_id` as an MLflow logged model at `step` (so the metrics the run logged at
    that step are linked to it), register it, tag the version and set `aliases`. Returns the version.

    `example` is a batch of model inputs (scaled). A classifier is logged to serve itself (the module
    docstring); its bands and scaling come from `tags` (`band_list` or `bands`, `scaling`). Anything else
    is pickled with the simclr_s2 code inside, so it loads where the package is not installed. Called
    last, once everything else in the run has succeeded; a NaN or infinite value in `finite` (the
    metrics the version is tagged with) registers nothing. The version is made with its tags in one call
    (one transaction of the store, not one a tag). A version the run registered already (a cluster retry
    of a run killed after registering) is the one returned: a run registers one version, never two."""
    for key, value in (finite or {}).items():
        if not math.isfinite(value):
            raise NonFiniteError(f"{key} is {value}: a model with a non-finite figure is not registered")
    if len(example) < 2:
        raise ValueError("input example needs a batch of at least 2 so the batch dimension stays free")
    if isinstance(model, IrrigationClassifier):
        _band_list(tags)  # checked before the store is asked anything
    version = _registered(client, run_id, registered_name) or _log(client, run_id, model, registered_name, example,
                                                                    tags, step)
    for alias in aliases:
        client.set_registered_model_alias(registered_name, alias, version)
    client.set_tag(run_id, VERSION_TAG, f"{registered_name}/{version}")
    log.info("registered %s version %s%s", registered_name, version,
             f" as @{', @'.join(aliases)}" if aliases else "")
    return version


def _registered(client: StoreClient, run_id: str, registered_name: str) -> str | None:
    """The version of `registered_name` that run `run_id` registered, if it did."""
    versions = client.search_model_versions(f"name = '{registered_name}' and run_id = '{run_id}'")
    return str(versions[0].version) if versions else None


def _log(client: StoreClient, run_id: str, model: torch.nn.Module, registered_name: str, example: np.ndarray,
         tags: Mapping[str, object], step: int) -> str:
    """Log `model` in the run and register it as a new version of `registered_name`; returns the version."""
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    with tempfile.TemporaryDirectory(prefix="simclr-s2-model-") as folder:
        how = _served(model, example, tags, Path(folder)) if isinstance(model, IrrigationClassifier) else \
            _pickled(model, example, Path(folder))
        run = client.get_run(run_id)
        # The logged model is made here, in the run's own experiment: left to MLflow it would go to whatever
        # experiment the process-wide context names.
        logged = client.create_logged_model(run.info.experiment_id, name="model", source_run_id=run_id,
                                            params=dict(run.data.params))
        quiet, pytorch_log = _DeliberatePickle(), logging.getLogger("mlflow.pytorch")
        pytorch_log.addFilter(quiet)
        try:
            # log_model reads no client: it logs and registers process-wide
            # with `model_id` given, log_model's `tags` are the registered version's alone
            with fluent_uris(client.tracking_uri, client.registry_uri):
                info = mlflow.pytorch.log_model(name="model", registered_model_name=registered_name, step=step,
                                                run_id=run_id, model_id=logged.model_id,
                                                tags={key: str(value) for key, value in tags.items()},
                                                pip_requirements=PIP_REQUIREMENTS, **how)
        finally:
            pytorch_log.removeFilter(quiet)
    return str(info.registered_model_version)


def _pickled(model: torch.nn.Module, example: np.ndarray, folder: Path) -> dict[str, object]:
    """`log_model`'s arguments for a module pickled with the package's Python sources (copied into
    `folder`). The signature says the input's shape; no input example: for a pickled model MLflow would
    write it twice as JSON (14 MB for a ResNet-18's two patches) and load the model back to predict it,
    about a third of an encoder's registration and of its size, and nothing reads it back."""
    with torch.no_grad():
        output = tuple(model(torch.from_numpy(example[:2])).shape[1:])
    return {"pytorch_model": model, "serialization_format": "pickle", "signature": signature(example, output),
            "code_paths": [str(_python_sources(folder))]}


def _python_sources(folder: Path) -> Path:
    """A copy of the package's .py files in `folder`: what unpickling an encoder imports, without the
    bundled archive lists (5.4 MB) or bytecode caches. Where the package is not installed, such a model
    loads and runs, but simclr_s2.bigearthnet.official has no lists to read there."""
    package = Path(simclr_s2.__file__).parent
    copy_to = folder / package.name
    for source in package.rglob("*.py"):
        (copy_to / source.relative_to(package)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy_to / source.relative_to(package))
    return copy_to


def _band_list(tags: Mapping[str, object]) -> str:
    """The bands a classifier's tags record: a served model names its bands, never guessed from the channel
    count."""
    if recorded := tags.get(BAND_LIST_TAG) or tags.get("bands"):
        return str(recorded)
    raise ValueError(f"a classifier is registered with its band list ({BAND_LIST_TAG} or bands tag)")


def _served(model: IrrigationClassifier, example: np.ndarray, tags: Mapping[str, object],
            folder: Path) -> dict[str, object]:
    """`log_model`'s arguments for a classifier that serves itself: pt2 of the DN-taking module, with its
    bands and scaling as metadata and the package's rebuild files (written into `folder`) beside it."""
    served = ServedClassifier(model, Bands.parse(_band_list(tags)), str(tags.get(SCALING_TAG, ZSCORE))).eval()
    dn = served.dn_of(example[:2])
    metadata = {"bands": list(served.bands), "scaling": served.scaling,
                "input": "float32 DN (N, C, 120, 120): the archive's values, every band on the 10 m grid, "
                         "channels in the order of bands",
                "output": "probability of irrigated land (N,)"}
    return {"pytorch_model": served, "serialization_format": "pt2", "signature": signature(dn, served.OUTPUT),
            "input_example": dn, "metadata": metadata,
            "extra_files": [str(p) for p in save_rebuildable(model, folder)],
            # MLflow would load the exported model back and predict the example (1.3-2.4 CPU-s a version);
            # tests/scenes/test_served_model serves and predicts it for real. Only this path takes the
            # option: with pickle, MLflow hands log_model's other arguments to torch.save.
            "validate_serving_input": False}


@dataclass(frozen=True)
class Pretrained(EncoderSource):
    """A pretrained SimCLR model and where it came from (logged with every fine-tune): the encoder source
    of a fine-tune, whose trainable part is the one asked for."""

    model: SimCLRModel
    uri: str
    name: str  # what the `pretrained` tag of fine-tunes says: the alias or name, e.g. "ben"
    version: str  # "simclr-s2-encoder/3" (a run's model too: the version its run registered), or "" for a file
    arch: str
    bands: Bands  # input bands in channel order
    tags: Mapping[str, str]  # the registry version's tags ({} for a file)
    run_id: str | None  # the run that logged it (None for a file)
    scaling: str  # the input scaling it was trained with (bands.SCALINGS)

    def classifier(self, dropout: float) -> IrrigationClassifier:
        # a copy: tune's trials share one loaded encoder, and training (or recalibrating) must not carry over
        return IrrigationClassifier.from_simclr(copy.deepcopy(self.model), dropout=dropout)

    def trainable(self, asked: str) -> str:
        return asked

    def provenance(self) -> dict[str, str]:
        return {"pretrained_uri": self.uri, "pretrained_version": self.version or "-"}


@dataclass(frozen=True)
class ModelRef:
    """Where a model URI points: a URI to load it from, "name/version" ("" outside the registry), the
    version's tags and the run that logged it (None when unknown)."""

    uri: str
    version: str
    tags: dict[str, str]
    run_id: str | None


def resolve_model_uri(client: StoreClient, uri: str, what: str = "pretrained") -> ModelRef:
    """A models:/ URI (a version, `latest`: the newest ready version, or an alias) pinned to its version, with
    tags and run; a runs:/<id>/<path> URI as the version its run
    registered from that path (the newest where several), so a model read either way gets the same scaling,
    bands, threshold and pretraining membership from its tags; a run's model never registered, with its run
    alone."""
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\w+)|@([\w-]+))", uri)
    if not match:
        run = re.fullmatch(r"runs:/([0-9a-f]+)/(.+)", uri)
        if run and (registered := _run_version(client, uri, *run.groups())):
            return _version_ref(registered)
        return ModelRef(uri, "", {}, run.group(1) if run else None)
    name, version, alias = match.groups()
    if version is not None and not (version.isdigit() or version.lower() == LATEST):  # MLflow reads any case
        raise UserError(f"{what}: {uri}: expected a version number, {LATEST} or @<alias> after the model's name")
    try:
        mv = (client.get_model_version_by_alias(name, alias) if alias else _latest(client, name)
              if version.lower() == LATEST else client.get_model_version(name, version))
    except MlflowException as error:
        raise UserError(f"{what}: {uri} not found in the model registry ({error.message.splitlines()[0]})") \
            from None
    return _version_ref(mv)


LATEST = "latest"  # models:/<name>/latest, as MLflow's loaders take it


def _latest(client: StoreClient, name: str) -> ModelVersion:
    """The newest version of `name` ready to read (one still registering, or failed, has no model yet)."""
    token = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"], page_token=token)
        if ready := next((mv for mv in page if mv.status == READY), None):
            return ready
        if not (token := page.token):
            raise MlflowException(f"Registered model {name} has no version ready to read")


def _version_ref(mv: ModelVersion) -> ModelRef:
    return ModelRef(f"models:/{mv.name}/{mv.version}", f"{mv.name}/{mv.version}", dict(mv.tags), mv.run_id)


BARE_ALIAS = re.compile(r"[\w-]+")  # an alias of ENCODER_MODEL given alone: `ben`


def encoder_uri(given: str) -> str:
    """An encoder as given, or a bare alias (a word that is no file here: `r50`) as the registry URI it
    stands for, models:/simclr-s2-encoder@r50: what the grid's `encoders` and finetune's `pretrained` take."""
    if BARE_ALIAS.fullmatch(given) and not Path(given).expanduser().is_file():  # a folder is no state dict
        return f"models:/{ENCODER_MODEL}@{given}"
    return given


def encoder_ref(client: StoreClient, uri: str, what: str = "pretrained") -> ModelRef:
    """resolve_model_uri of an encoder, refusing a model no registered version records (a run's model never
    registered, a logged model's folder or any other artifact URI): its scaling and bands would be guesses,
    and the leakage guard would have no pretraining membership to check."""
    ref = resolve_model_uri(client, uri, what)
    if not ref.version:
        why = ("its run registered none from that path" if uri.startswith("runs:/") else
               "a logged model's folder or artifact URI records neither its bands nor its input scaling")
        raise UserError(f"{what}: {uri} is no registered model version ({why}); use models:/<name>/<version>")
    if ref.tags.get("stage") in CLASSIFIER_STAGES:  # the grid's dry run read no weights: it said nothing
        raise UserError(f"{what}: {uri} is {_kind(IrrigationClassifier)}, expected {_kind(SimCLRModel)}")
    return ref


def load_logged(client: StoreClient, uri: str, kind: type[T], what: str) -> tuple[T, ModelRef]:
    """A logged model of class `kind` from a registry or run URI, with where it came from; `what` names
    the parameter in the one-line error."""
    ref = resolve_model_uri(client, uri, what)
    return _load_ref(client, ref, uri, kind, what), ref


def _load_ref(client: StoreClient, ref: ModelRef, uri: str, kind: type[T], what: str) -> T:
    """The model `ref` (resolved from `uri`) points to, of class `kind`."""
    if not urlparse(ref.uri).scheme and not Path(ref.uri).expanduser().exists():  # was: No such artifact: 'MLmodel'
        raise UserError(f"{what}: {uri} does not exist; expected models:/<name>/<version>, models:/<name>@<alias>, "
                        "runs:/<run id>/<path> or a logged model's folder")
    try:
        # the artifact URIs of a store behind a server (mlflow-artifacts:/, runs:/) resolve process-wide only
        with tempfile.TemporaryDirectory(prefix="simclr-s2-model-") as folder, \
                fluent_uris(client.tracking_uri, client.registry_uri):
            model = _load_downloaded(_download_uri(client, ref), Path(folder))
    except (MlflowException, OSError, ValueError, ImportError) as error:  # ImportError: gs:// without its client
        raise UserError(f"{what}: cannot load {uri}: {str(error).splitlines()[0]}") from None
    if not isinstance(model, kind):
        raise UserError(f"{what}: {uri} is {_kind(type(model))}, expected {_kind(kind)}")
    return model


_KINDS = {SimCLRModel: f"an encoder ({ENCODER_MODEL})", IrrigationClassifier: f"a classifier ({CLASSIFIER_MODEL})"}


def _kind(cls: type) -> str:
    """A model class in the words of the registry's models (an encoder given where a classifier is expected
    was 'a SimCLRModel, expected a IrrigationClassifier')."""
    return _KINDS.get(cls, f"a {cls.__name__}")


def _download_uri(client: StoreClient, ref: ModelRef) -> str:
    """Where a registered version's files lie, asked of the registry once (each part downloaded through its
    models:/ URI would ask again, with a new client each time); a run's URI as it is."""
    if not ref.version:
        return ref.uri
    name, version = ref.version.rsplit("/", 1)
    return client.get_model_version_download_uri(name, version)


REBUILD_FOLDER = "extra_files"  # a served classifier's weights and architecture (save_rebuildable)
PICKLED_NEEDS = ("MLmodel", "data", "code")  # what mlflow.pytorch.load_model reads of a pickled model


def _load_downloaded(uri: str, folder: Path) -> torch.nn.Module:
    """The model logged at `uri`, downloading into `folder` only what loading reads: a served classifier's
    rebuild files (half its folder; the pt2 program and the input examples stay behind), else the parts
    of a pickled model that mlflow.pytorch.load_model reads."""
    names = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(artifact_uri=uri)}

    def download(*parts: str) -> Path:
        """The folder the parts land in: `folder`, or one below it for a runs:/ URI of a logged model."""
        landed = folder
        for name in (p for p in parts if p in names):
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri.rstrip('/')}/{name}", dst_path=str(folder))
            landed = Path(local).parent
        return landed

    rebuild_files = download(REBUILD_FOLDER) / REBUILD_FOLDER
    if is_rebuildable(rebuild_files):
        return rebuild(rebuild_files)
    path = list(sys.path)
    try:
        return mlflow.pytorch.load_model(str(download(*PICKLED_NEEDS)), map_location="cpu")
    finally:  # MLflow puts the model's code folder first on it, for good; `folder` is gone once loaded
        sys.path = path


def _run_version(client: StoreClient, uri: str, run_id: str, path: str) -> ModelVersion | None:
    """The version the run registered from the model at `path` of `uri` (the newest READY one where several:
    one still registering, or failed, has no model to read), with its tags, else None."""
    found = [v for v in client.search_model_versions(f"run_id = '{run_id}'")
             if v.status == READY and _registered_from(client, v, uri, path)]
    return max(found, key=lambda v: v.creation_timestamp, default=None)


def _registered_from(client: StoreClient, version: ModelVersion, uri: str, path: str) -> bool:
    """Whether `version` was registered from the run's model at `path`: its source is that runs:/ URI, or (as
    MLflow 3 registers) the run's logged model of that name."""
    if version.source.rstrip("/") == uri.rstrip("/"):
        return True
    logged = re.fullmatch(r"models:/(m-[0-9a-f]+)", version.source)
    if not logged:
        return False
    try:
        return client.get_logged_model(logged.group(1)).name == path.strip("/")
    except MlflowException as error:  # its logged model deleted since: not the model the URI names
        log.warning("version %s/%s: cannot read its logged model %s (%s)", version.name, version.version,
                    logged.group(1), error.message.splitlines()[0])
        return False


def classifier_bands(ref: ModelRef, model: IrrigationClassifier, uri: str, what: str, reads: str) -> Bands:
    """The bands the classifier reads, by name and in channel order, from its version's tags: a model that
    does not say which it reads is refused, never fed bands in an order guessed from its channel count.
    `what` names the parameter, `reads` what the command picks the bands from."""
    recorded = ref.tags.get(BAND_LIST_TAG) or ref.tags.get("bands")
    if not recorded:
        raise UserError(f"{what}: {uri} records no band list (a registered version's {BAND_LIST_TAG} or bands "
                        f"tag); {reads}: use a version registered by finetune or baseline")
    bands = Bands.parse(recorded)
    if len(bands) != model.encoder.in_channels:
        raise UserError(f"{what}: {uri} records {len(bands)} bands ({recorded}) but takes "
                        f"{model.encoder.in_channels} channels")
    return bands


def encoder_bands(tags: Mapping[str, str], in_channels: int) -> Bands | None:
    """The band list an encoder was trained on: its `band_list` tag, its `bands` tag, or, for a state
    dict with no record, the study's 10 or all 12 bands by channel count; None when unknowable."""
    for key in (BAND_LIST_TAG, "bands"):
        if tags.get(key):
            return Bands.parse(tags[key])
    known = {len(STUDY_BANDS): STUDY_BANDS, len(BANDS): BANDS}
    return Bands(known[in_channels]) if in_channels in known else None


STATE_DICT_SUFFIXES = (".pt", ".pth", ".safetensors")  # a `pretrained` so named is a file, there or not


def load_pretrained(client: StoreClient, spec: str, bands: Bands | None = None) -> Pretrained:
    """Load a SimCLR model from a registry URI (`models:/simclr-s2-encoder@ben`, or the alias alone:
    encoder_uri), a run's model (`runs:/<id>/model`: the version that run registered, resolve_model_uri) or a
    state-dict file (its arch inferred from the weights). `bands` None (auto) takes the encoder's own bands;
    any other band list must equal the encoder's, names and order. A logged model no registered version
    records is refused (encoder_ref)."""
    path = Path(spec).expanduser()
    ref, scaling = ModelRef(spec, "", {}, None), ZSCORE
    if path.suffix in STATE_DICT_SUFFIXES or path.is_file():
        imported = import_encoder_state(read_state_dict(path, "pretrained", bands), bands, source=str(path))
        model, scaling, spec = imported.model, imported.scaling, str(path.resolve())
        ref = ModelRef(spec, "", {BAND_LIST_TAG: imported.bands.text}, None)
    else:
        spec = encoder_uri(spec)
        ref = encoder_ref(client, spec)
        model = _load_ref(client, ref, spec, SimCLRModel, "pretrained")
        scaling = ref.tags.get(SCALING_TAG, ZSCORE)
    tags = ref.tags
    own = encoder_bands(tags, model.encoder.in_channels)
    wanted = own if bands is None else bands
    if wanted is None:
        raise UserError(f"pretrained: {spec} takes {model.encoder.in_channels} bands; say which with the "
                        "bands parameter")
    if own is not None and own != wanted:
        raise UserError(f"bands: encoder {spec} was trained on {own.text}, the data would have "
                        f"{wanted.text}; band names and order must match")
    if len(wanted) != model.encoder.in_channels:
        raise UserError(f"pretrained: encoder {spec} expects {model.encoder.in_channels} bands, data has "
                        f"{len(wanted)} (bands={wanted.text})")
    alias = re.fullmatch(r"models:/[^/@]+@([\w-]+)", spec)
    name = alias.group(1) if alias else tags.get("name") or Path(spec.rstrip("/")).stem
    return Pretrained(model, spec, name, ref.version, model.encoder.arch, wanted, tags, ref.run_id, scaling)
