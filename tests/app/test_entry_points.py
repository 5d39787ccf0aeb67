"""Entry points by name (docs/development.md, "Adding an entry point"): one registered from this test module
appears in `python -m simclr_s2`, in its own `--help` and in the generated MLproject and manual."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import pytest

from simclr_s2 import __main__ as front_door
from simclr_s2.app import entry_points as registry
from simclr_s2.app import manual, mlproject
from simclr_s2.settings.spec import Spec, param, positive
from simclr_s2.stages.base import Stage


@dataclass(frozen=True)
class Toy(Spec):
    """Count to a number, as the smallest entry point there is."""

    entry_point: ClassVar[str] = "toy"
    up_to: int = param(3, "the number to count to", check=positive)


class ToyStage(Stage[Toy]):
    spec = Toy


TOY = ToyStage()


@pytest.fixture
def toy() -> Iterator[None]:
    registry.register(Toy, f"{__name__}:TOY")
    yield
    del registry.REGISTRY["toy"]


def test_a_registered_entry_point_is_a_command_with_its_parameters(toy, capsys):
    with pytest.raises(SystemExit) as listed:
        front_door.main([])
    assert listed.value.code == 0 and "toy" in capsys.readouterr().out
    with pytest.raises(SystemExit) as helped:
        front_door.main(["toy", "--help"])
    assert helped.value.code == 0 and "--up-to" in capsys.readouterr().out
    assert registry.REGISTRY["toy"].load() is TOY


def test_a_registered_entry_point_is_in_mlproject_and_the_manual(toy):
    assert '  toy:\n    parameters:\n      up_to: {type: float, default: 3}\n' in mlproject.render()
    assert 'command: "python -m simclr_s2 toy --up-to {up_to}"' in mlproject.render()
    assert "### `toy`\n\nCount to a number" in manual.tables()


def test_a_name_is_registered_once(toy):
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Toy, f"{__name__}:TOY")


def test_an_unknown_entry_point_is_one_line():
    result = subprocess.run([sys.executable, "-m", "simclr_s2", "nonsense"], check=False, capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no entry point 'nonsense'; one of make_demo_data,")
    assert result.stderr.count("\n") == 1


HEAVY = ("torch", "torchvision", "mlflow", "matplotlib")


def test_help_and_a_refusal_import_neither_torch_nor_mlflow():
    """Every entry point's --help, then a bad parameter, in a fresh interpreter: neither loads the stage's
    training stack (so both answer in about a second)."""
    script = (
        "import contextlib, io, sys\n"
        "from simclr_s2.__main__ import main\n"
        "from simclr_s2.app.entry_points import REGISTRY\n"
        "for name in REGISTRY:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main([name, '--help'])\n"
        "with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.suppress(SystemExit):\n"
        "    main(['finetune', '--lr', '-1'])\n"
        "assert err.getvalue().startswith('error: lr: expected'), err.getvalue()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout
