"""Files that travel through the tracking server: downloading what a parameter points to, and logging
tables as artifacts and as MLflow dataset inputs (with digests, so a run names exactly what it used)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from simclr_s2.errors import UserError
from simclr_s2.tracking.runs import work_home

REMOTE_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "s3://", "http://", "https://", "file://")


def local_path(ref: str, what: str) -> Path:
    """`ref` as a local path: a local file or folder as is; an artifact URI (runs:/<id>/..., s3://...)
    downloaded once into the work cache."""
    if not ref.startswith(REMOTE_SCHEMES):
        path = Path(ref).expanduser().resolve()
        if not path.exists():
            raise UserError(f"{what}: {path} does not exist")
        return path
    cache = work_home() / "downloads" / hashlib.sha256(ref.encode()).hexdigest()[:16]
    done = cache / ".complete"
    if not done.exists():
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(cache))
        except (MlflowException, OSError) as error:
            raise UserError(f"{what}: cannot download {ref}: {str(error).splitlines()[0]}") from None
        done.touch()
    return cache / ref.rstrip("/").rsplit("/", 1)[-1]


def log_table_input(frame: pd.DataFrame, *, name: str, source: str, digest: str, context: str) -> None:
    """Log `frame` as an MLflow dataset input of the active run under `name`, with the file's digest."""
    with warnings.catch_warnings():  # two notes MLflow prints for every table, whatever its content
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:36])
    mlflow.log_input(dataset, context=context)
