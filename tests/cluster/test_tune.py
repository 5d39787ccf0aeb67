"""`tune` with backend=ray: its workers are Ray tasks joining one study on the shared storage, each a
child run of the command's run; the command's run holds the summary and the final run, made on the cluster."""

from __future__ import annotations

from simclr_s2.stages.tune import TUNE, WORKER_STAGE
from simclr_s2.tracking.tracker import PARENT_TAG


def test_tune_workers_join_one_study_as_ray_tasks(project, cluster, split):
    run_id = project.run_stage(TUNE, target="baseline", split=split, fraction=100, n_trials=2, epochs=1,
                               backend="ray", workers=2, study_name="on-ray")
    workers = project.runs(WORKER_STAGE, **{PARENT_TAG: run_id})
    assert len(workers) == 2 and {w.info.status for w in workers} == {"FINISHED"}
    trials = project.runs("tune-trial", **{"optuna.study": "on-ray"})
    assert len(trials) == 2 and {t.data.tags[PARENT_TAG] for t in trials} <= {w.info.run_id for w in workers}
    run = project.client.get_run(run_id)
    assert run.data.metrics["trials_complete"] == 2 and run.data.metrics["workers_failed"] == 0
    final = project.client.get_run(run.data.tags["simclr_s2.final_run"])
    assert final.data.tags[PARENT_TAG] == run_id and final.data.tags["simclr_s2.tuned"] == "true"
    assert final.info.status == "FINISHED"
