"""What a Ray task needs of the dispatching command's context, handed over as a task argument, in the
variables `mlflow run` hands an entry point (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_ID, MLFLOW_RUN_ID).
A task builds its context from them; only the SIMCLR_S2_* settings are applied to the worker's own
environment while it runs (the MLflow ones go to a command's child process, never into os.environ).

Only the tracking URI, the experiment, the run to continue and the SIMCLR_S2_* settings the command was
given travel; of the folders of a machine (SIMCLR_S2_HOME, SIMCLR_S2_DATA) a node that sets its own keeps
them, since the command's paths may not exist there. Secrets never do: tracking credentials
(MLFLOW_TRACKING_USERNAME / PASSWORD / TOKEN) and object-store keys (AWS_*) come from each node's own
environment, set where `ray start` runs (docs/cluster.md), so they appear in no task argument, dashboard
or log. A cluster started by the command itself (`local`) inherits them from the command.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

PREFIX = "SIMCLR_S2_"
NODE_LOCAL = ("SIMCLR_S2_HOME", "SIMCLR_S2_DATA")  # folders on a machine: a node's own, when it sets them


def handed_over(tracking_uri: str, experiment_id: str, run_id: str) -> dict[str, str]:
    """The environment of a task that continues run `run_id` of that store and experiment."""
    settings = {k: v for k, v in os.environ.items() if k.startswith(PREFIX)}
    return {**settings, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_EXPERIMENT_ID": experiment_id,
            "MLFLOW_RUN_ID": run_id}


def for_this_node(env: Mapping[str, str]) -> dict[str, str]:
    """`env` less the NODE_LOCAL folders this node sets itself."""
    return {k: v for k, v in env.items() if not (k in NODE_LOCAL and os.environ.get(k))}


@contextmanager
def applied(env: Mapping[str, str]) -> Iterator[None]:
    """The SIMCLR_S2_* settings of `env` (for this node) set in this process for the body, then the
    environment as it was: a Ray worker process runs one task after another, and none may see the last
    one's settings."""
    env = {k: v for k, v in for_this_node(env).items() if k.startswith(PREFIX)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
