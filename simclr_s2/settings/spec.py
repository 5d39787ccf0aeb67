"""How an entry point's settings are declared once: a frozen dataclass whose fields carry type, default,
help and validation. The command line, MLproject, the manual's parameter tables, run parameters and run
keys are all derived from it, so none can drift from another.

Values arrive as strings (from MLproject's `-P name=value` or argv) or typed (from the grid, tuning and
tests); both go through `build`, which converts by the field's type and runs the field's check, so a
bad value is one line naming the parameter and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from simclr_s2.errors import UserError

Check = Callable[[Any], str | None]  # returns what is wrong, or None
S = TypeVar("S", bound="Spec")


def param(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple[str, ...] | None = None,
          check: Check | None = None, keyed: bool = True, in_data: str | None = None, repeats: bool = False) -> Any:
    """A field of an entry point's spec. `keyed=False` for settings that change how a command runs but
    not what it produces (e.g. `reuse`): they stay out of the run's key and its logged parameters.
    `in_data`: a path whose `auto` is this place in the data folder (SIMCLR_S2_DATA), so a command left at
    its defaults reads and writes where the demo chain does, wherever it runs. A list's values must be
    distinct (`distinct`) unless `repeats` (a tuple of positions, such as the three split ratios)."""
    if isinstance(default, list):
        default = tuple(default)
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "check": check,
                                                        "keyed": keyed, "in_data": in_data, "repeats": repeats})


class Spec:
    """Base of every entry point's spec (subclasses are frozen dataclasses)."""

    entry_point: ClassVar[str]

    def validate(self) -> None:
        """Checks that involve several fields; single fields are checked by their `check`."""

    def given(self) -> dict[str, str]:
        """Every keyed parameter as the canonical string logged on the run and hashed into its key."""
        return {f.name: canonical(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata["keyed"]}

    def data_paths(self, data_root: Path) -> dict[str, str]:
        """The paths left at `auto`, as the places in `data_root` they stand for (logged resolved_<name>:
        the parameter as given stays `auto`)."""
        return {f.name: str(data_root / f.metadata["in_data"]) for f in dataclasses.fields(self)
                if f.metadata["in_data"] and getattr(self, f.name) == "auto"}


def canonical(value: Any) -> str:
    """One spelling per value, so 5e-5 and 0.00005, or 10 and 10.0, give one key."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(canonical(v) for v in value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


@cache
def _types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(name: str, kind: Any, value: Any) -> Any:
    """`value` (a string from the command line, or already typed) as `kind`."""
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        parts = value if isinstance(value, tuple | list) else [p.strip() for p in str(value).split(",") if p.strip()]
        return tuple(_convert(name, item, p) for p in parts)
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise UserError(f"{name}: expected true or false, got {value!r}")
        return text in ("true", "1", "yes")
    if kind is int:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not number.is_integer():
            raise UserError(f"{name}: expected a whole number, got {value!r}")
        return int(number)
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{name}: expected a number, got {value!r}") from None
    return str(value).strip()


def build(cls: type[S], values: Mapping[str, Any]) -> S:
    """The spec of `cls` from `values` (strings or typed), defaults filled in, every field checked."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"{cls.entry_point}: no parameter {', '.join(unknown)}; it takes {', '.join(fields)}")
    types = _types(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in values:
            value = _convert(name, types[name], values[name])
        elif f.default is not dataclasses.MISSING:
            value = f.default
        else:
            raise UserError(f"{cls.entry_point}: parameter {name} is required ({f.metadata['help']})")
        choices = f.metadata["choices"]
        for item in value if isinstance(value, tuple) else (value,):
            if choices and item not in choices:
                raise UserError(f"{name}: expected one of {', '.join(choices)}, got {item!r}")
        problem = (listed_problem(value, f.metadata["repeats"]) if isinstance(value, tuple) else None) or (
            f.metadata["check"] and f.metadata["check"](value))
        if problem:
            raise UserError(f"{name}: {problem}, got {canonical(value) or 'nothing'}")
        kwargs[name] = value
    spec = cls(**kwargs)
    spec.validate()
    return spec


def fields_of(cls: type[Spec]) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls))


def mlflow_type(cls: type[Spec], f: dataclasses.Field) -> str:
    """MLproject's parameter type: numbers are `float` (MLflow checks them), everything else `string`."""
    return "float" if _types(cls)[f.name] in (int, float) else "string"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# Checks shared by the specs.
def positive(value: float) -> str | None:
    return None if math.isfinite(value) and value > 0 else "expected a finite number > 0"


def non_negative(value: float) -> str | None:
    return None if math.isfinite(value) and value >= 0 else "expected a finite number >= 0"


def probability(value: float) -> str | None:
    return None if 0 <= value < 1 else "expected a probability in [0, 1)"


def percentages(values: tuple[int, ...]) -> str | None:
    ok = all(0 < v <= 100 for v in values)
    return None if ok else "expected whole percentages in 1..100"


def percentage(value: int) -> str | None:
    return None if 0 < value <= 100 else "expected a whole percentage in 1..100"


def not_empty(values: tuple) -> str | None:
    return None if values else "expected at least one value"


SEEDS = 2**32  # numpy's SeedSequence and torch.manual_seed take seeds in 0..2**32 - 1


def seed_number(value: int) -> str | None:
    return None if 0 <= value < SEEDS else f"expected a whole number in 0..{SEEDS - 1}"


def seed_numbers(values: tuple[int, ...]) -> str | None:
    return next(filter(None, map(seed_number, values)), None)


def listed_problem(values: tuple, repeats: bool) -> str | None:
    """What is wrong with a list parameter's values whatever it lists: none (`-P trainable=` planned no cells,
    silently), or one given twice (unless `repeats`)."""
    return not_empty(values) or (None if repeats else distinct(values))


def distinct(values: Iterable[Any]) -> str | None:
    """What is wrong when a value is given twice, however spelt (0 and 00, 0.1 and 0.10): a list's values
    each plan their own work (cells, trials), which a repeat would do twice or weigh double."""
    seen = set()
    for value in values:
        same = _as_number(value)
        if same in seen:
            return f"expected distinct values, {canonical(value)} repeats an earlier one"
        seen.add(same)
    return None


def _as_number(value: Any) -> Any:
    """A value that spells a number as that number, so that two spellings of it compare equal."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
