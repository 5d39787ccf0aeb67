"""MLproject, generated from the registered entry points' specs (`python -m simclr_s2.app.mlproject > MLproject`;
`make mlproject`). A test checks the committed file equals this output, so the two cannot drift."""

from __future__ import annotations

import dataclasses
import json

from simclr_s2.app.entry_points import REGISTRY, command
from simclr_s2.settings.spec import canonical, fields_of, flag, mlflow_type

HEADER = """\
# Generated from simclr_s2/settings/specs.py by `make mlproject`: edit the specs, not this file.
name: simclr-s2

# `mlflow run . -e <entry point> --env-manager local` runs in the current environment (the README's way);
# `--env-manager virtualenv` builds one from python_env.yaml (every package from requirements.lock).
python_env: python_env.yaml

entry_points:
"""


def render() -> str:
    lines = [HEADER.rstrip("\n")]
    for name, entry_point in REGISTRY.items():
        cls = entry_point.spec
        lines += [f"  {name}:", "    parameters:"]
        args = []
        for f in fields_of(cls):
            kind = mlflow_type(cls, f)
            value = canonical(f.default) if kind == "float" else json.dumps(canonical(f.default))
            default = "" if f.default is dataclasses.MISSING else f", default: {value}"
            lines.append(f"      {f.name}: {{type: {kind}{default}}}")
            args.append(f"{flag(f.name)} {{{f.name}}}")
        lines.append(f'    command: "{command(name)} {" ".join(args)}"')
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(render(), end="")
