"""Parameters that name data: a local path as is, an artifact URI (runs:/<id>/..., models:/, s3://...)
downloaded into a cache once. Commands that must write nothing (evaluate, compare, promote, dry runs)
download into a temporary folder removed when they end."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from simclr_s2 import disk
from simclr_s2.errors import UserError
from simclr_s2.tracking.process import fluent_uris

REMOTE_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "s3://", "http://", "https://", "file://")


def is_remote(ref: str) -> bool:
    return ref.startswith(REMOTE_SCHEMES)


class Fetcher:
    """Local paths for data references, downloads cached under `cache` (keyed by the URI)."""

    def __init__(self, cache: Path, tracking_uri: str) -> None:
        self.cache, self.tracking_uri = cache, tracking_uri

    @classmethod
    @contextmanager
    def temporary(cls, tracking_uri: str) -> Iterator[Fetcher]:
        with tempfile.TemporaryDirectory(prefix="simclr-s2-fetch-") as tmp:
            yield cls(Path(tmp), tracking_uri)

    def path(self, ref: str, what: str) -> Path:
        """`ref` as a local path; `what` names the parameter in the one-line error. A models:/ URI is refused
        before its download: a registered model is no data file (it was downloaded whole, then read as a
        file its name does not name)."""
        if not is_remote(ref):
            path = Path(ref).expanduser().resolve()
            if not path.exists():
                raise UserError(f"{what}: {path} does not exist")
            return path
        if ref.startswith("models:/"):
            raise UserError(f"{what}: {ref} is a registered model; expected a path or an artifact URI such as "
                            "runs:/<run id>/<artifact path>")
        folder = self.cache / hashlib.sha256(ref.encode()).hexdigest()[:16]
        done = folder / ".complete"
        if not done.exists():
            try:
                # a half download never stays; a models:/ URI is resolved in the process-wide registry only
                with disk.writing(folder, folder), fluent_uris(self.tracking_uri, self.tracking_uri):
                    mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(folder),
                                                       tracking_uri=self.tracking_uri)
            except (MlflowException, OSError) as error:
                raise UserError(f"{what}: cannot download {ref}: {str(error).splitlines()[0]}") from None
            done.touch()
        path = folder / ref.rstrip("/").rsplit("/", 1)[-1]
        if not path.exists():  # runs:/<id> alone: the run's artifacts, none of them named <id>
            raise UserError(f"{what}: {ref} names no artifact; expected runs:/<run id>/<artifact path>")
        return path


def artifact_folder(client: MlflowClient, run_id: str) -> Path:
    """Where a run's artifacts are written when its store is a local folder (else its URI, as a path)."""
    uri = client.get_run(run_id).info.artifact_uri
    return Path(local_file_uri_to_path(uri) if uri.startswith("file:") else uri)
