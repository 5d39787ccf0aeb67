"""The platform's work on a Ray cluster (docs/cluster.md): grid cells, tuning workers and final runs as Ray
tasks that run the stage code in the run the dispatching command made for them (dispatch.py, tasks.py),
and single entry points through MLflow's project backend plugin `ray` (backend.py)."""
