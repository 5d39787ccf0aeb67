"""A test project: its own tracking store, state folder and small demo, named by an environment, with the
ways tests run this project's entry points in it (in this process, as `python entrypoints/<name>.py`, or
through `mlflow run . --env-manager local`) and look at the runs they made. Shared by the stage tests,
the end-to-end tests and the tests against the real server stack."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from simclr_s2.faults import PAUSE_ENV
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import build
from simclr_s2.stages.base import Stage, run_command
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.fingerprint import PACKAGE

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLEARED = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")  # read from there only


def unique_name(prefix: str) -> str:
    """A name no other test uses, for experiments and models in a store tests share."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def project_env(root: Path, tracking_uri: str | None = None, **extra: str) -> dict[str, str]:
    """What names a test project: its store (a SQLite file under `root` unless given), state folder, data
    folder, an 80-patch demo with encoders pretrained 1 epoch, and short heartbeats."""
    return {"MLFLOW_TRACKING_URI": tracking_uri or f"sqlite:///{root}/mlflow.db", "SIMCLR_S2_HOME": str(root / "home"),
            "SIMCLR_S2_DATA": str(root / "data"), "SIMCLR_S2_DEMO_PATCHES": "80",
            "SIMCLR_S2_DEMO_PRETRAIN_EPOCHS": "1", "SIMCLR_S2_HEARTBEAT_S": "2",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **extra}


def project_from(store: Path, root: Path, **extra: str) -> Project:
    """A project in `root` (`project_env`) whose store starts as a copy of `store`, an empty migrated one
    (tests/conftest.py's `migrated_store`): for tests whose claim is not about a store being made (MLflow's
    migrations cost about 1 CPU-s a new SQLite store)."""
    shutil.copyfile(store, root / "mlflow.db")
    return Project(root, project_env(root, **extra))


@dataclass
class Project:
    root: Path
    env: dict[str, str]
    unset: tuple[str, ...] = ()  # variables of this process its subprocesses must not see

    @cached_property
    def client(self) -> MlflowClient:
        """A client of the project's store, for tests to look at what the commands logged: its door is built
        once, on first use (the store's URI does not change; credentials added to `env` later are read by
        MLflow from the environment at each request)."""
        return Tracking(self.env["MLFLOW_TRACKING_URI"]).client

    def context(self) -> Context:
        """The context a command of the project runs in (MLflow's variables only here, never os.environ)."""
        return Context.from_env(self.process_env())

    def process_env(self) -> dict[str, str]:
        """This process's environment with the project's, for subprocesses; `python` is this venv's, and the
        package they import is the one this process imported (first on PYTHONPATH): the code's fingerprint is
        in every run's key, so a subprocess's run resumed here must come from the same sources, even where
        the venv's editable install points to another checkout."""
        path = os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, **self.env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": path}
        for name in (*CLEARED, PAUSE_ENV, *self.unset):  # a pause only where this project names one (see `held`)
            if name not in self.env:
                env.pop(name, None)
        return env

    def run_stage(self, stage: Stage, **params: object) -> str | None:
        """`stage` as its entry point runs it, in this process, in the project's context; the project's own
        settings (SIMCLR_S2_*: fault points, folders) and tracking credentials are in the environment while it
        runs, MLflow's other variables not."""
        with pytest.MonkeyPatch.context() as mp:
            for key, value in self.env.items():
                if not key.startswith("MLFLOW_") or key in CREDENTIALS:
                    mp.setenv(key, value)
            for key in CLEARED:
                mp.delenv(key, raising=False)
            return run_command(stage, build(stage.spec, params), self.context())

    @contextmanager
    def held(self, stage: Stage, at: str, folder: Path, **params: object) -> Iterator[Future]:
        """`stage` run by `run_stage` in a thread of this process, held live at the fault point `at`
        (SIMCLR_S2_PAUSE, e.g. "after_log@0") while the block runs, resumed when it ends (`folder`/resume, also
        when the block fails, so no thread waits forever); the future gives its run id or raises its error. The
        same run as `python -m simclr_s2 <name>` without that process's start-up (about 8 CPU-seconds of
        imports): for tests whose claim is about a live run, not its process. SIMCLR_S2_PAUSE is in this
        process's environment meanwhile; `process_env` leaves it out."""
        pool = ThreadPoolExecutor(1)
        future = pool.submit(replace(self, env={**self.env, PAUSE_ENV: f"{at}:{folder}"}).run_stage, stage, **params)
        pool.shutdown(wait=False)  # the thread ends with the stage
        while not (folder / "paused").exists():
            if future.done():
                raise AssertionError(f"{stage.spec.entry_point} ended before {at}: {future.result()}")
            time.sleep(0.2)
        try:
            yield future
        finally:
            (folder / "resume").touch()

    @staticmethod
    def command(entry_point: str, **params: object) -> list[str]:
        """`mlflow run . -e <entry_point> --env-manager local -P key=value ...`."""
        command = [str(BIN / "mlflow"), "run", str(ROOT), "-e", entry_point, "--env-manager", "local"]
        for key, value in params.items():
            command += ["-P", f"{key}={value}"]
        return command

    @staticmethod
    def entry_point(entry_point: str, **params: object) -> list[str]:
        """`python -m simclr_s2 <entry_point> --key value ...`: the command MLproject runs, without the launcher
        (the `mlflow` CLI's start-up costs about 4.5 CPU-seconds; tests whose claim is not about the launcher
        start this instead)."""
        command = [sys.executable, "-m", "simclr_s2", entry_point]
        for key, value in params.items():
            command += [f"--{key.replace('_', '-')}", str(value)]
        return command

    def run(self, entry_point: str, check: bool = True, timeout: int = 900, **params: object
            ) -> subprocess.CompletedProcess:
        """`mlflow run . -e <entry_point> --env-manager local -P ...` in the project's environment."""
        done = subprocess.run(self.command(entry_point, **params), check=False, env=self.process_env(), cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"mlflow run -e {entry_point} failed:\n{done.stderr[-4000:]}")
        return done

    def shell(self, command: str, cwd: Path = ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
        """A command line as a reader would type it (e.g. from the README) in a fresh shell: the project's
        environment, but no venv on PATH (`make test` puts this one there) unless the command activates it, and
        no PYTHONPATH."""
        env = self.process_env()
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != BIN)
        for name in ("VIRTUAL_ENV", "PYTHONPATH"):
            env.pop(name, None)
        done = subprocess.run(command, check=False, shell=True, cwd=cwd, env=env, executable="/bin/bash",
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done

    def runs(self, stage: str | None = None, **tags: str) -> list[Run]:
        """Every active run of every experiment, newest first, filtered by stage and tags."""
        filters = [f"tags.stage = '{stage}'"] if stage else []
        filters += [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        return self.client.search_runs(experiments, " and ".join(filters), order_by=["attributes.start_time DESC"])

    def artifact(self, run_id: str, path: str) -> Path:
        """The run's artifact `path` (a file or folder), downloaded into the project's folder: MLflow's own
        default, a new folder under /tmp, is never removed."""
        return Path(self.client.download_artifacts(run_id, path, tempfile.mkdtemp(dir=self.root)))

    def latest(self, stage: str, **tags: str) -> Run:
        runs = self.runs(stage, **tags)
        assert runs, f"no {stage} run with {tags}"
        return runs[0]
