"""MLproject, generated from the entry points' specs (`python -m simclr_s2.app.mlproject > MLproject`;
`make mlproject`). A test checks the committed file equals this output, so the two cannot drift."""

from __future__ import annotations

import dataclasses
import json

from simclr_s2.app.spec import canonical, fields_of, flag, mlflow_type
from simclr_s2.app.specs import ENTRY_POINTS

HEADER = """\
# Generated from simclr_s2/app/specs.py by `make mlproject`: edit the specs, not this file.
name: simclr-s2

# `mlflow run . -e <entry point> --env-manager local` on machines without conda (see README).
conda_env: conda.yaml

entry_points:
"""


def render() -> str:
    lines = [HEADER.rstrip("\n")]
    for name, cls in ENTRY_POINTS.items():
        lines += [f"  {name}:", "    parameters:"]
        args = []
        for f in fields_of(cls):
            kind = mlflow_type(cls, f)
            value = canonical(f.default) if kind == "float" else json.dumps(canonical(f.default))
            default = "" if f.default is dataclasses.MISSING else f", default: {value}"
            lines.append(f"      {f.name}: {{type: {kind}{default}}}")
            args.append(f"{flag(f.name)} {{{f.name}}}")
        lines.append(f'    command: "python entrypoints/{name}.py {" ".join(args)}"')
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(render(), end="")
