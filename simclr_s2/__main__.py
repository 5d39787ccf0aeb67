"""`python -m simclr_s2 <entry point> [--parameter value ...]`: the one command behind every entry point
(MLproject and the entrypoints/ scripts run it). `python -m simclr_s2` alone lists them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from simclr_s2.app.entry_points import REGISTRY


def usage() -> str:
    names = "\n".join(f"  {name:<16}{' '.join((ep.spec.__doc__ or '').split()[:12])}..."
                      for name, ep in REGISTRY.items())
    return f"usage: python -m simclr_s2 <entry point> [--parameter value ...] (-h for its parameters)\n{names}"


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0)
    if args[0] not in REGISTRY:
        print(f"error: no entry point {args[0]!r}; one of {', '.join(REGISTRY)}", file=sys.stderr)
        sys.exit(2)
    from simclr_s2.app.cli import main as run  # the boundary: parse, run, exit status

    run(REGISTRY[args[0]], args[1:])  # parsed before its stage loads


def command(argv: Sequence[str] | None = None) -> None:
    """`main` as this process's whole life: its exit status leaves through `cli.leave` (no teardown)."""
    try:
        main(argv)
    except SystemExit as done:
        if not isinstance(done.code, int | None):  # a message to print: the ordinary exit prints it
            raise
        from simclr_s2.app.cli import leave

        leave(done.code)


def run_script(path: str) -> None:
    """entrypoints/<name>.py: the entry point its file is named after, with the script's arguments."""
    command([Path(path).stem, *sys.argv[1:]])


if __name__ == "__main__":
    command()
