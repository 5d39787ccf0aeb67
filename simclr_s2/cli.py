"""What every entry point script shares: logging set-up and turning user errors into one line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from simclr_s2.errors import UserError
from simclr_s2.tracking.connectivity import TrackingUnreachable, bound_retries, is_unreachable


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(float(text))
    if value <= 0 or value != float(text):
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text}")
    return value


def bool_flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in {"true", "false", "1", "0", "yes", "no"}:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text}")
    return lowered in {"true", "1", "yes"}


def int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text}") from None


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad parameter as one line and marks the MLflow run FAILED."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def parser(description: str) -> argparse.ArgumentParser:
    return _Parser(description=description)


def run_entry_point(main: Callable[[Sequence[str] | None], None]) -> None:
    """Call `main`; a UserError becomes `error: <one line>` and exit status 2, with the run FAILED.

    Under torchrun (RANK set) only rank 0 logs progress and touches the run; the others log warnings.
    """
    main_rank = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file floods logs
    bound_retries()
    try:
        main(None)
    except TrackingUnreachable as error:
        _give_up(str(error))
    except UserError as error:
        from simclr_s2.tracking.runs import fail_current_run

        if main_rank:
            fail_current_run(str(error))
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:
        if is_unreachable(error):
            _give_up(f"tracking server unreachable: {str(error).splitlines()[0]}")
        raise


def _give_up(reason: str) -> None:
    print(f"error: {reason}", file=sys.stderr, flush=True)
    os._exit(3)  # skip MLflow's exit hooks: they would wait for the server all over again
