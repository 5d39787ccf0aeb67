"""What every entry point script shares: logging set-up and turning user errors into one line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from simclr_s2.errors import UserError


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
    """Call `main`; a UserError becomes `error: <one line>` and exit status 2, with the run FAILED."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file floods logs
    try:
        main(None)
    except UserError as error:
        from simclr_s2.tracking.runs import fail_current_run

        fail_current_run(str(error))
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
