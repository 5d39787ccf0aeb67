"""promote: point an alias (champion) at the best registered classifier of a scheme by a validation
metric of its kept epoch, among versions of one fraction and one test set unless told to cross them;
the former holder stays reachable as `previous`, and the version and this run record why. A dry run
shows the choice and changes nothing (and opens no run)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.stages.base import Stage
from simclr_s2.study import promotion
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.tracker import StageRun
from simclr_s2.tracking.versions import VersionRecord


def _choice(spec: specs.Promote, ctx: Context) -> tuple[promotion.Choice, str, str | None]:
    """The ranked candidates, the filters in words, and the version holding the alias now."""
    key = promotion.run_metric(spec.metric)  # the spec refused a test metric (validate) and a bad alias
    what = f"scheme={spec.scheme} fraction={spec.fraction} pretrained={spec.pretrained}"
    door = Tracking.of(ctx)
    records = door.search_versions(spec.scheme, fraction=None if spec.fraction == "any" else int(spec.fraction),
                                   pretrained=None if spec.pretrained == "any" else spec.pretrained)
    choice = promotion.choose(candidates(records, key), spec.metric, what, cross_fractions=spec.cross_fractions,
                              cross_test_sets=spec.cross_test_sets)
    return choice, what, door.alias_version(spec.alias)


def candidates(records: list[VersionRecord], key: str) -> list[promotion.Candidate]:
    """The versions as candidates by the run metric `key`, flagged near-constant by their validation tag only
    (the test set's `near_constant` is compare's: it must not decide)."""
    return [promotion.Candidate(r.version, r.describe(), r.metrics.get(key, math.nan), int(r.tags["fraction"]),
                                r.tags.get("test_digest", ""), r.metrics.get("best_val_loss", math.nan),
                                near_constant=r.tags.get(promotion.VAL_NEAR_CONSTANT) == "true")
            for r in records]


class Promote(Stage[specs.Promote]):
    spec = specs.Promote
    read_only = True

    def run_name(self, spec: specs.Promote, resolved: Mapping[str, str]) -> str:
        return f"promote-{spec.scheme}-{spec.alias}"

    def tags(self, spec: specs.Promote, resolved: Mapping[str, str]) -> dict[str, object]:
        filters = {"fraction": spec.fraction, "pretrained": spec.pretrained}
        return {"scheme": spec.scheme, **{k: v for k, v in filters.items() if v != "any"}}

    def dry_run(self, spec: specs.Promote, ctx: Context) -> None:
        choice, _, former = _choice(spec, ctx)
        print(promotion.decision(choice, spec.alias, former, dry_run=True))

    def execute(self, spec: specs.Promote, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        choice, what, former = _choice(spec, ctx)
        tags = promotion.reason_tags(choice, spec.alias, what)
        changes = former != choice.winner.version
        run.set_tags({**tags, "chosen_version": choice.winner.version, "former_version": former or "-",
                      "alias_moved": str(changes).lower()})
        run.log_dict({"metric": spec.metric, "ranked": [vars(c) for c in choice.ranked],
                      "unscored": [c.label for c in choice.unscored],
                      "near_constant": [c.label for c in choice.flagged]}, "promote/candidates.json")
        if changes:
            run.tracking.move_alias(choice.winner.version, spec.alias, tags, former=former,
                                    previous_alias=promotion.previous_alias(spec.alias))
        print(promotion.decision(choice, spec.alias, former, dry_run=False))


PROMOTE = Promote()
