"""What one stack is: its ports and mode, the passwords it was created with, and the folder that keeps
both, so every later command acts on what `start` made rather than on today's environment."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from secrets import token_hex

from simclr_s2 import disk

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
BUCKET = "mlflow"
ARTIFACTS_PREFIX = "artifacts"  # key prefix of run artifacts in the bucket
ARTIFACTS_DESTINATION = f"s3://{BUCKET}/{ARTIFACTS_PREFIX}"
DEFAULTS = {
    "SIMCLR_PG_PORT": "15432",
    "SIMCLR_S3_PORT": "18333",
    "SIMCLR_MLFLOW_PORT": "15000",
    "SIMCLR_MLFLOW_WORKERS": "2",
    "SIMCLR_PG_PASSWORD": "mlflow",
    "AWS_ACCESS_KEY_ID": "simclr-s2-local",
    "AWS_SECRET_ACCESS_KEY": "simclr-s2-local-secret",
}
WEED_SERVICES = ("s3", "master", "volume", "filer", "admin")  # at S3_PORT + index
WEED_GRPC_OFFSET = 10000  # SeaweedFS's own convention; its plugin worker assumes it for the admin port


class StackError(Exception):
    """A problem the user can fix; the command line prints its one-line message instead of a traceback."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Ports and mode of one stack, saved in stack.json so later commands act on what `start` made."""

    pg_port: int
    s3_port: int
    mlflow_port: int
    workers: int
    auth: bool
    admin_username: str | None

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    def weed_ports(self) -> dict[str, int]:
        return {name: self.s3_port + i for i, name in enumerate(WEED_SERVICES)}

    def ports(self, component: str) -> list[tuple[int, str]]:
        """(port, who uses it) for one component, so a clash names its environment variable."""
        if component == "postgres":
            return [(self.pg_port, "PostgreSQL (SIMCLR_PG_PORT)")]
        if component == "mlflow":
            return [(self.mlflow_port, "mlflow server (SIMCLR_MLFLOW_PORT)")]
        found = []
        for name, port in self.weed_ports().items():
            who = f"SeaweedFS {name} (SIMCLR_S3_PORT + {WEED_SERVICES.index(name)})"
            found += [(port, who), (port + WEED_GRPC_OFFSET, f"{who} gRPC")]
        return found


@dataclasses.dataclass(frozen=True)
class Secrets:
    """Kept apart from Config in a 0600 file, so stack.json can be read and shown freely."""

    pg_password: str
    s3_access_key: str
    s3_secret_key: str
    flask_secret_key: str  # signs basic-auth CSRF tokens; stable so restarts keep sessions valid


class StateDir:
    """The one folder a stack keeps everything in, so that deleting it removes the whole stack."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.pgdata = self.root / "postgres"
        self.seaweedfs = self.root / "seaweedfs"
        self.logs = self.root / "logs"
        self.run = self.root / "run"
        self.auth_dir = self.root / "auth"
        self._config = self.root / "stack.json"
        self._secrets = self.root / "secrets.json"

    def has_config(self) -> bool:
        return self._config.exists()

    def has_database(self) -> bool:
        """Whether initdb has made the cluster: its password is fixed from then on."""
        return (self.pgdata / "PG_VERSION").exists()

    def load_config(self) -> Config:
        if not self.has_config():
            raise StackError(f"no stack in {self.root}: run `python scripts/server.py start` first")
        try:
            return Config(**json.loads(self._config.read_text()))
        except (ValueError, TypeError) as error:  # truncated, or written by another version
            raise StackError(
                f"{self._config} is not a stack.json this version reads ({error}): "
                "stop the stack's processes by hand and delete the folder, or restore the file"
            ) from None

    def load_secrets(self) -> Secrets | None:
        """The passwords the stack was created with; None before its first start."""
        if not self._secrets.exists():
            return None
        try:
            return Secrets(**json.loads(self._secrets.read_text()))
        except (ValueError, TypeError) as error:  # edited by hand, or written by another version
            raise StackError(f"{self._secrets} is not a secrets.json this version reads ({error}): restore it, "
                             "or run `python scripts/server.py stop` and delete the folder") from None

    def stored_secrets(self) -> Secrets:
        """The passwords of a stack that has started: commands on a running stack cannot guess them."""
        found = self.load_secrets()
        if found is None:
            raise StackError(f"{self._secrets} is missing: restore it, or run `python scripts/server.py stop` "
                             "and delete the folder")
        return found

    def save(self, config: Config, secrets: Secrets) -> None:
        write_atomically(self._config, json.dumps(dataclasses.asdict(config), indent=2) + "\n")
        write_atomically(self._secrets, json.dumps(dataclasses.asdict(secrets), indent=2) + "\n", mode=0o600)

    def resolve_secrets(self, s3_running: bool) -> Secrets:
        """Environment first, then what the stack was created with, then local defaults. A password the
        database was created with, or keys a running SeaweedFS holds, cannot change (the other side keeps
        the old one)."""
        stored = self.load_secrets()
        database = f"the database in {self.pgdata} was created with: unset it, or stop the stack and delete the folder"
        weed = "the running SeaweedFS holds: unset it, or run `python scripts/server.py stop` first"
        return Secrets(
            pg_password=_kept("SIMCLR_PG_PASSWORD", stored and stored.pg_password, self.has_database(), database),
            s3_access_key=_kept("AWS_ACCESS_KEY_ID", stored and stored.s3_access_key, s3_running, weed),
            s3_secret_key=_kept("AWS_SECRET_ACCESS_KEY", stored and stored.s3_secret_key, s3_running, weed),
            flask_secret_key=os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
            or (stored.flask_secret_key if stored else token_hex(32)),
        )


def default_state_dir() -> Path:
    """SIMCLR_SERVER_DIR, else <repo>/.server: what `make server` uses when nothing is set."""
    return Path(os.environ.get("SIMCLR_SERVER_DIR") or REPO / ".server")


def config_from_env(auth: bool | None, saved: Config | None, bootstrapped: bool) -> Config:
    """Each setting from the environment, else from the stack's last start, else the default; `auth` (None:
    as the last start had it) from the command line. The admin of basic auth is fixed once its users exist
    (`bootstrapped`): clients set the same MLFLOW_TRACKING_USERNAME, and whoever restarts the stack must
    not become its admin."""

    def setting(name: str, field: str) -> str:
        return _env_or(name, str(getattr(saved, field)) if saved else None)

    def port(name: str, field: str) -> int:
        value = setting(name, field)
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise StackError(f"{name}={value!r}: expected a port number")
        return int(value)

    s3_port = port("SIMCLR_S3_PORT", "s3_port")
    if s3_port + len(WEED_SERVICES) - 1 + WEED_GRPC_OFFSET > 65535:
        raise StackError(
            f"SIMCLR_S3_PORT={s3_port}: SeaweedFS also needs that port + {WEED_GRPC_OFFSET + 4}, "
            f"so it must be {65535 - WEED_GRPC_OFFSET - 4} or less"
        )
    workers = setting("SIMCLR_MLFLOW_WORKERS", "workers")
    if not workers.isdigit() or int(workers) < 1:
        raise StackError(f"SIMCLR_MLFLOW_WORKERS={workers!r}: expected a positive integer")
    auth = saved.auth if auth is None and saved else bool(auth)
    admin = saved.admin_username if bootstrapped and saved and saved.admin_username else None
    admin = admin or (os.environ.get("MLFLOW_TRACKING_USERNAME") if auth else None)
    config = Config(
        pg_port=port("SIMCLR_PG_PORT", "pg_port"),
        s3_port=s3_port,
        mlflow_port=port("SIMCLR_MLFLOW_PORT", "mlflow_port"),
        workers=int(workers),
        auth=auth,
        admin_username=admin,
    )
    _check_distinct_ports(config)
    return config


def _check_distinct_ports(config: Config) -> None:
    """Two parts given one port would each pass the free-port check, and the later one would fail to bind
    once the others run: refused before anything starts."""
    wanted: dict[int, str] = {}
    for component in ("postgres", "seaweedfs", "mlflow"):
        for port, who in config.ports(component):
            if port in wanted:
                raise StackError(f"port {port} is wanted by both {wanted[port]} and {who}: move one of them")
            wanted[port] = who


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `path` whole or not at all (a file of this process's, synced, renamed into place): a crash or
    a power loss while writing leaves the old file, never an empty or truncated one."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.unlink(missing_ok=True)
    with open(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(part, path)
    disk.sync_folder(path.parent)


def _env_or(name: str, stored: str | None) -> str:
    return os.environ.get(name) or stored or DEFAULTS[name]


def _kept(name: str, stored: str | None, fixed: bool, holder: str) -> str:
    """`name`'s value (see _env_or), refused when it differs from the stored one while that is `fixed`."""
    value = _env_or(name, stored)
    if stored and fixed and value != stored:
        raise StackError(f"{name} differs from the one {holder}")
    return value
