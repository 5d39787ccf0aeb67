"""The command line of the stack (`python -m simclr_s2.server`, `python scripts/server.py`, `make server`):
a user's mistake ends in one `error: ...` line and exit status 1, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import simclr_s2.server
from simclr_s2.server import stack
from simclr_s2.server.config import HOST, StackError, StateDir, default_state_dir


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Exit status 0, 1 on a StackError, and 3 from `status` when a part is not healthy."""
    args = _parser(prog).parse_args(argv)
    state = StateDir(args.dir)
    try:
        if args.command == "start":
            print("\n".join(stack.env_lines(stack.start(state, args.auth))))
        elif args.command == "stop":
            stack.stop(state)
        elif args.command == "restart-mlflow":
            stack.restart_mlflow(state)
        elif args.command == "stop-mlflow":
            stack.stop_mlflow(state)
        elif args.command == "env":
            print("\n".join(stack.env_lines(state.load_config())))
        else:
            return _print_status(state, args.json)
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=simclr_s2.server.__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir",
        type=Path,
        default=default_state_dir(),
        help="state folder (SIMCLR_SERVER_DIR; default <repo>/.server)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser(
        "start", help="start whatever is not running, health-checking each part"
    )
    start_parser.add_argument(
        "--auth",
        action=argparse.BooleanOptionalAction,
        help="run mlflow with its basic-auth app, or (--no-auth) without it; default: as the stack last ran",
    )
    commands.add_parser("stop", help="stop mlflow, SeaweedFS and PostgreSQL")
    status_parser = commands.add_parser("status", help="show each part; exit 3 unless all are healthy")
    status_parser.add_argument("--json", action="store_true")
    commands.add_parser("restart-mlflow", help="restart the tracking server only")
    commands.add_parser("stop-mlflow", help="stop the tracking server only (`start` brings it back)")
    commands.add_parser("env", help="print the export lines for clients")
    return parser


def _print_status(state: StateDir, as_json: bool) -> int:
    report = stack.status(state)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(f"stack in {report['dir']}" + (" (basic auth)" if report["auth"] else ""))
        for name, c in report["components"].items():
            shown = (
                "healthy" if c["healthy"] else "running, not healthy" if c["running"]
                else "stopped, but its workers still run (`stop` ends them)" if c.get("orphaned") else "stopped"
            )
            print(f"  {name:<10} {HOST}:{c['port']:<6} {shown}")
    return 0 if all(c["healthy"] for c in report["components"].values()) else 3
