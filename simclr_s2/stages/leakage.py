"""The leakage guard: every pretrained encoder records which patches it saw (membership.py), and every
fine-tune and evaluation counts how many of its test patches are among them. An overlap stops the run with
one line naming the count unless `allow_pretraining_overlap` is given; what was found is recorded on the
run and on the registered version as `pretraining_overlap` ("0", "unknown" for an encoder imported from
elsewhere, or "override:<n>"), and `compare` shows it.

Patches are identified by their BigEarthNet v1 name (v2 patches through the index's `s2v1_name`), so an
encoder pretrained on the v1 archive is checked against v2 test sets too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from simclr_s2 import membership
from simclr_s2.errors import UserError
from simclr_s2.tracking.tracker import StageRun

ARTIFACT = "pretraining/membership.npy"
DIGEST_TAG = "pretraining_digest"
OVERLAP_TAG = "pretraining_overlap"
V1_NAME = "s2v1_name"
UNKNOWN = "unknown"


def identities(names: Sequence[str], index: pd.DataFrame | None) -> list[str]:
    """Each patch's identity across archive versions: its v1 name where the index knows it."""
    if index is None or V1_NAME not in index.columns:
        return list(names)
    v1 = index.set_index("name")[V1_NAME]
    return [v if isinstance(v, str) and v else n for n, v in zip(names, v1.reindex(list(names)), strict=True)]


def record(run: StageRun, names: Sequence[str], index: pd.DataFrame | None) -> str:
    """Log the membership artifact of the patches a pretraining used; returns their digest."""
    ids = identities(names, index)
    with tempfile.TemporaryDirectory() as tmp:
        run.log_artifact(membership.save(membership.Membership.of(ids), Path(tmp) / Path(ARTIFACT).name),
                         str(Path(ARTIFACT).parent))
    return membership.digest(ids)


def encoder_membership(client: MlflowClient, version_tags: dict[str, str], run_id: str | None
                       ) -> membership.Membership | None:
    """What the encoder behind a registry version was pretrained on; None when that is not known (an
    encoder imported from elsewhere, a state-dict file, a version older than the guard)."""
    if not run_id or DIGEST_TAG not in version_tags:
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return membership.load(Path(client.download_artifacts(run_id, ARTIFACT, tmp)))
    except (MlflowException, OSError):
        return None


def classifier_encoder(client: MlflowClient, version_tags: dict[str, str]) -> membership.Membership | None:
    """What the encoder behind a registered classifier was pretrained on (None: unknown or a baseline)."""
    encoder = version_tags.get("encoder_version", "")
    if "/" not in encoder:
        return None
    name, number = encoder.rsplit("/", 1)
    try:
        mv = client.get_model_version(name, number)
    except MlflowException:
        return None
    return encoder_membership(client, dict(mv.tags), mv.run_id)


def status(seen: membership.Membership | None, names: Sequence[str], index: pd.DataFrame | None, set_name: str,
           allow: bool) -> str:
    """"0", "unknown" or "override:<n>" for the patches `names` of `set_name`; a UserError naming the count
    when some were seen in pretraining and `allow` is not given."""
    if seen is None:
        return UNKNOWN
    overlap = seen.overlap(identities(names, index))
    if overlap == 0:
        return "0"
    if not allow:
        raise UserError(f"pretrained: the encoder was pretrained on {overlap} of the {len(names)} patches of the "
                        f"{set_name} set; use an encoder that never saw them, or allow_pretraining_overlap=true "
                        "to go on (recorded on the run)")
    return f"override:{overlap}"
