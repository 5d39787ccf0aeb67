"""promote: point an alias (champion) at the best registered classifier of a scheme, optionally of one
fraction or encoder, by a validation metric of its kept epoch; the former holder stays reachable as
`previous`, and the version and this run record why. --dry-run shows the choice and changes nothing."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import mlflow

from simclr_s2 import promote as promotion
from simclr_s2.cli import bool_flag, parser, positive_int, run_entry_point
from simclr_s2.tracking.runs import stage_run
from simclr_s2.tracking.versions import alias_version, move_alias, search_versions


def fraction_or_any(text: str) -> int | None:
    """MLproject passes a fraction as "10" or "10.0", and "any" for no filter (None)."""
    if text.strip().lower() == "any":
        return None
    try:
        return positive_int(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected a whole percentage or 'any', got {text}") from None


def main(argv: Sequence[str] | None) -> None:
    p = parser(__doc__)
    p.add_argument("--scheme", default="basic")
    p.add_argument("--fraction", type=fraction_or_any, default="any")
    p.add_argument("--pretrained", default="any", help="encoder name (ben), 'scratch' for baselines, or any")
    p.add_argument("--metric", default="val_f1", help="a validation metric: val_f1, val_auc, val_loss, ...")
    p.add_argument("--alias", default="champion")
    p.add_argument("--dry-run", type=bool_flag, default=False)
    args = p.parse_args(argv)
    key = promotion.run_metric(args.metric)
    promotion.check_alias(args.alias)
    fraction = "any" if args.fraction is None else str(args.fraction)
    pretrained = None if args.pretrained == "any" else args.pretrained
    what = f"scheme={args.scheme} fraction={fraction} pretrained={args.pretrained}"
    params = {**vars(args), "fraction": fraction}
    filters = {"fraction": fraction, "pretrained": args.pretrained}
    with stage_run("promote", params, run_name=f"promote-{args.scheme}-{args.alias}",
                   tags={"scheme": args.scheme, **{k: v for k, v in filters.items() if v != "any"}}):
        records = search_versions(args.scheme, fraction=args.fraction, pretrained=pretrained)
        choice = promotion.choose(
            [promotion.Candidate(r.version, r.describe(), r.metrics.get(key, math.nan)) for r in records],
            args.metric, what)
        former = alias_version(args.alias)
        tags = promotion.reason_tags(choice, args.alias, what)
        changes = not args.dry_run and former != choice.winner.version
        mlflow.set_tags({**tags, "chosen_version": choice.winner.version, "former_version": former or "-",
                         "alias_moved": str(changes).lower()})
        mlflow.log_dict({"metric": args.metric, "run_metric": key, "ranked": [vars(c) for c in choice.ranked],
                         "unscored": [c.label for c in choice.unscored]}, "promote/candidates.json")
        if changes:
            move_alias(choice.winner.version, args.alias, tags, former=former,
                       previous_alias=promotion.previous_alias(args.alias))
        print(promotion.decision(choice, args.alias, former, args.dry_run))


if __name__ == "__main__":
    run_entry_point(main)
