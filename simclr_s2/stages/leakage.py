"""The leakage guard: every pretrained encoder records which ground it saw (membership.py), and every
fine-tune and evaluation counts how many of its patches lie on it: the same footprint on any date, or a
neighbour (footprint.py). What was found is recorded on the run and on the registered version as
`pretraining_overlap` ("0", "unknown" or "override:<n>"), and `compare` shows it.

The guard fails closed. `allow_pretraining_overlap` (membership.OVERLAP_POLICIES) says what a run accepts:
"false" stops on an overlap and on a membership that cannot be read (a missing or broken artifact, a
version older than footprints); "unknown" goes on past the latter, recorded as unknown; "true" goes on past
both. An encoder that never recorded a membership (imported from elsewhere) is "unknown" whatever the
policy, as documented. `pretrain` leaves out the ground of every evaluation set of the splits it is given
(`outside_evaluation`), so an encoder pretrained on the demo archive passes the guard on the demo splits.

`evaluate` also guards the classifier's own ground: a test set of a split other than the one it was
trained on, and the validation set its threshold is chosen on there, may lie on the ground it trained or
validated on (another seed, another index of the same archive), judged as the encoder's: the same footprint
on any date, or a neighbour. That ground is its run's split at its fraction (train, val and the natural
validation set its threshold was chosen on), checked against the digests its version and run recorded (a
split that cannot be read, has changed since or has no footprints is Unreadable; a version without those
digests never recorded them), and the same policy applies, recorded as `training_overlap` and
`threshold_overlap`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simclr_s2.errors import UserError
from simclr_s2.stages.inputs import SplitData, load_split_data
from simclr_s2.study import footprint, membership
from simclr_s2.study.splits import MANIFEST, NATURAL, VAL_NATURAL, SplitSet, load_manifest, load_sets
from simclr_s2.tracking.artifacts import Fetcher
from simclr_s2.tracking.door import Tracking, TrackingError
from simclr_s2.tracking.tracker import StageRun

ARTIFACT = "pretraining/footprints.npy"
DIGEST_TAG = "pretraining_digest"
OVERLAP_TAG = "pretraining_overlap"
TRAINING_TAG = "training_overlap"
V1_NAME = "s2v1_name"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Unreadable:
    """An encoder that claims a membership which cannot be read: why."""

    reason: str


Seen = membership.Membership | Unreadable | None  # None: the encoder (or classifier) never recorded one


def identities(names: Sequence[str], index: pd.DataFrame | None) -> list[str]:
    """Each patch's identity across archive versions: its v1 name where the index knows it."""
    if index is None or V1_NAME not in index.columns:
        return list(names)
    v1 = index.set_index("name")[V1_NAME]
    return [v if isinstance(v, str) and v else n for n, v in zip(names, v1.reindex(list(names)), strict=True)]


def record(run: StageRun, names: Sequence[str], index: pd.DataFrame) -> str:
    """Log the membership artifact of the patches a pretraining used; returns the digest of their identities."""
    seen = membership.Membership.of(footprint.of(index, names))
    with tempfile.TemporaryDirectory() as tmp:
        run.log_artifact(membership.save(seen, Path(tmp) / Path(ARTIFACT).name), str(Path(ARTIFACT).parent))
    return membership.digest(identities(names, index))


def outside_evaluation(index: pd.DataFrame, fetch: Fetcher, refs: str) -> list[str]:
    """The index's patches, sorted, less every patch near (footprint.near) a test or natural-test patch of
    the splits `refs` (comma-separated split folders or URIs; "none" leaves nothing out): what pretraining
    may see. Footprints of the splits' patches come from the index each split was drawn from."""
    names = sorted(index["name"])
    if refs == "none":
        return names
    evaluation = [footprint.of(data.index, s.names) for data in _splits(fetch, refs)
                  for s in evaluation_sets(data).values()]
    held = membership.Membership.of(np.vstack([np.empty((0, len(footprint.COLUMNS)), np.int64), *evaluation]))
    near = held.seen(footprint.of(index, names))
    return [n for n, close in zip(names, near, strict=True) if not close]


def evaluation_sets(data: SplitData) -> dict[str, SplitSet]:
    """The sets a classifier of `data` is scored on, by name: test, and the natural test set where the split
    has one. No encoder may have seen their ground."""
    return {name: s for name, s in (("test", data.test), (NATURAL, data.natural)) if s is not None}


def evaluation_status(seen: Seen, data: SplitData, allow: str) -> str:
    """`status` of one verdict over every set a classifier of `data` is scored on (`evaluation_sets`): a
    fine-tune logs test_natural_* beside test_*, so the natural test set is guarded as evaluate guards it."""
    sets = evaluation_sets(data)
    names = list(dict.fromkeys(n for s in sets.values() for n in s.names))
    return status(seen, names, data.index, " + ".join(sets), allow)


def _splits(fetch: Fetcher, refs: str) -> list[SplitData]:
    """Every scheme's splits in the comma-separated references `refs`, verified, with their index."""
    found = []
    for ref in filter(None, (r.strip() for r in refs.split(","))):
        folder = fetch.path(ref, "exclude_split")
        schemes = sorted(p.parent.name for p in folder.glob(f"*/{MANIFEST}"))
        if not schemes:
            raise UserError(f"exclude_split: {ref} holds no splits (no <scheme>/{MANIFEST})")
        found += [load_split_data(fetch, ref, s, load_manifest(folder, s).fractions[0]) for s in schemes]
    return found


def encoder_membership(client: Tracking, version_tags: dict[str, str], run_id: str | None) -> Seen:
    """What the encoder behind a registry version was pretrained on: None when it never recorded it (an
    encoder imported from elsewhere, a state-dict file), Unreadable when it did but it cannot be read."""
    if not run_id or DIGEST_TAG not in version_tags:
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return membership.load(Path(client.download_artifacts(run_id, ARTIFACT, tmp)))
    except (TrackingError, OSError, UserError) as exc:
        return Unreadable(f"{ARTIFACT} of run {run_id}: {_first_line(exc)}")


def classifier_encoder(client: Tracking, version_tags: dict[str, str]) -> Seen:
    """What the encoder behind a registered classifier was pretrained on (None: never recorded, or a
    baseline)."""
    encoder = version_tags.get("encoder_version", "")
    if "/" not in encoder:
        return None
    name, number = encoder.rsplit("/", 1)
    try:
        mv = client.get_model_version(name, number)
    except TrackingError as exc:
        return Unreadable(f"encoder version {encoder}: {_first_line(exc)}")
    return encoder_membership(client, dict(mv.tags), mv.run_id)


def classifier_ground(client: Tracking, fetch: Fetcher, tags: Mapping[str, str], run_id: str | None) -> Seen:
    """The ground a registered classifier was trained and validated on, as a membership: the footprints of
    its run's split (`split`, or `resolved_split` for auto) at its fraction, train, val and the natural
    validation set (where the split has one), when that split still holds the sets whose digests its version
    and run recorded. None when the version recorded none (older versions, a run's model never registered)."""
    if not run_id or not {"scheme", "fraction", "train_digest", "val_digest"} <= set(tags):
        return None
    try:
        params = client.get_run(run_id).data.params
        ref = params.get("resolved_split", params.get("split", ""))
        data = load_split_data(fetch, ref, tags["scheme"], int(tags["fraction"]))
        natural = _natural_validation(data, params.get("val_natural_digest"))
        if (data.train.digest, data.val.digest) != (tags["train_digest"], tags["val_digest"]) or natural is None:
            return Unreadable(f"{ref} no longer holds the training and validation sets of run {run_id}")
        names = [*data.train.names, *data.val.names, *natural]
        return membership.Membership.of(footprint.of(data.index, names))
    except (TrackingError, OSError, UserError) as exc:
        return Unreadable(f"the split of run {run_id}: {_first_line(exc)}")


def _natural_validation(data: SplitData, recorded: str | None) -> list[str] | None:
    """The names of the natural validation set of `data`'s fraction ([] where the split has none); None when
    it is not the one whose digest the run `recorded` (a run that recorded none may have predated it: the
    split's own is counted, so the guard never counts less)."""
    splits = load_sets(data.folder, data.scheme)
    if not splits.manifest.natural_validation or data.fraction not in splits.manifest.fractions:
        return None if recorded else []
    chosen = splits.get(data.fraction, VAL_NATURAL)
    return chosen.names if recorded in (None, chosen.digest) else None


def training_status(ground: Seen, names: Sequence[str], index: pd.DataFrame, set_name: str, allow: str) -> str:
    """`status` of the patches `names` of `set_name` against a classifier's own ground (`classifier_ground`),
    under the same policy `allow`."""
    return _verdict(_overlap(ground, names, index), allow, lambda reason: (
        f"model_uri: the model's training and validation ground cannot be read ({reason}), so its overlap "
        f"with the {set_name} set is unknown; allow_pretraining_overlap=unknown to go on (recorded on the run)"),
        lambda overlap: (
        f"model_uri: the model was trained or validated on the ground of {overlap} of the {len(names)} patches of "
        f"the {set_name} set (their footprint on any date, or a neighbour); score it on its own split, or "
        "allow_pretraining_overlap=true to go on (recorded on the run)"))


def status(seen: Seen, names: Sequence[str], index: pd.DataFrame, set_name: str, allow: str) -> str:
    """"0", "unknown" or "override:<n>" for the patches `names` of `set_name` under the policy `allow`
    (membership.OVERLAP_POLICIES); a UserError in one line when the policy does not accept what was found."""
    return _verdict(_overlap(seen, names, index), allow, lambda reason: (
        f"pretrained: the encoder's pretraining membership cannot be read ({reason}), so its overlap with the "
        f"{set_name} set is unknown; allow_pretraining_overlap=unknown to go on (recorded on the run)"),
        lambda overlap: (
        f"pretrained: the encoder was pretrained on {overlap} of the {len(names)} patches of the {set_name} set "
        "(their footprint on any date, or a neighbour); use an encoder that never saw them, or "
        "allow_pretraining_overlap=true to go on (recorded on the run)"))


def _overlap(seen: Seen, names: Sequence[str], index: pd.DataFrame) -> int | Unreadable | None:
    """How many of the patches `names` lie on the ground `seen` (by footprint), or what stands in its place."""
    return seen if seen is None or isinstance(seen, Unreadable) else seen.overlap(footprint.of(index, names))


def _verdict(found: int | Unreadable | None, allow: str, unreadable: Callable[[str], str],
             overlapping: Callable[[int], str]) -> str:
    """The policy `allow` on what a guard found: None (never recorded) is "unknown" whatever the policy; an
    Unreadable stops unless unknown or true; an overlap stops unless true."""
    if found is None:
        return UNKNOWN
    if isinstance(found, Unreadable):
        if allow == "false":
            raise UserError(unreadable(found.reason))
        return UNKNOWN
    if found == 0:
        return "0"
    if allow != "true":
        raise UserError(overlapping(found))
    return f"override:{found}"


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
