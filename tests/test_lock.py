"""One lock drives every install: the venv equals requirements.lock, the lock satisfies pyproject.toml, and
python_env.yaml, conda.yaml and both images install from it. Nothing here asks a package index."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from mlflow.utils.environment import _PythonEnv
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
SERVER_LOCK = ROOT / "docker" / "mlflow-server.lock"


def pins(lock: Path) -> dict[str, str]:
    """name -> version of every `name==version` entry of a pip-compile lock."""
    return {canonicalize_name(name): version
            for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock.read_text(), re.MULTILINE)}


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"]["dev"])]


def test_every_entry_is_pinned_with_hashes():
    lines = [line for line in LOCK.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    entries = re.split(r"\n(?=[A-Za-z0-9])", "\n".join(lines))
    assert len(entries) > 50
    for entry in entries:
        assert re.match(r"^[A-Za-z0-9_.\-]+==\S+ \\\n", entry), entry.splitlines()[0]
        assert "--hash=sha256:" in entry, entry.splitlines()[0]


def test_the_lock_satisfies_every_declared_requirement():
    locked = pins(LOCK)
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is declared but not locked: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{name}: the lock has {locked[name]}, pyproject.toml asks {requirement.specifier}: run `make lock`")


def test_this_environment_is_the_lock():
    mismatched = {}
    for name, version in pins(LOCK).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            mismatched[name] = (version, None)
            continue
        if installed.split("+")[0] != version.split("+")[0]:
            mismatched[name] = (version, installed)
    assert not mismatched, f"locked vs installed (run `make setup`): {mismatched}"


def test_the_server_image_lock_is_a_subset_of_the_project_lock():
    project, server = pins(LOCK), pins(SERVER_LOCK)
    assert {"mlflow", "boto3", "psycopg2-binary"} <= set(server)
    assert {name: version for name, version in server.items() if project.get(name) != version} == {}
    assert "torch" not in server


@pytest.mark.parametrize("dockerfile, lock", [("Dockerfile", "requirements.lock"),
                                              ("mlflow-server.Dockerfile", "mlflow-server.lock")])
def test_images_install_only_from_a_lock(dockerfile, lock):
    text = (ROOT / "docker" / dockerfile).read_text()
    installs = re.findall(r"pip install ([^&\n]*)", text)
    assert installs and all("--no-deps" in line for line in installs), installs
    assert any(f"--require-hashes -r /tmp/{lock}" in line for line in installs)
    assert "==" not in "".join(installs)  # no version typed by hand


def test_mlflow_project_environments_install_the_lock():
    python_env = _PythonEnv.from_yaml(str(ROOT / "python_env.yaml"))
    assert python_env.python == "3.11.7"
    assert python_env.dependencies == ["--require-hashes", "-r requirements.lock"]
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert pip_section == python_env.dependencies
    assert f"python={python_env.python}" in conda["dependencies"]
    assert "python_env: python_env.yaml" in (ROOT / "MLproject").read_text()
