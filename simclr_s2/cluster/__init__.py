"""The platform's work on a Ray cluster (docs/cluster.md): grid cells, tuning workers and final runs as Ray
tasks that run the stage code in the run the dispatching command made for them (dispatch.py, tasks.py),
and single entry points through MLflow's project backend plugin `ray` (backend.py)."""

import os

# Ray reads it once, when it is imported (by this package's modules, after this line): else lines of
# different tasks that look alike are merged into one "[repeated Nx across cluster]".
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
