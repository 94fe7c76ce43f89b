"""The MLflow file store a retrain run is written to."""

from __future__ import annotations

from backend.models.tracking import MLFLOW_EXPERIMENT, MlflowRun


def test_mlflow_file_store_layout(tmp_path):
    import yaml
    run = MlflowRun(tmp_path / "mlruns", "retrain x")
    run.log_params({"budget_s": 60, "config": {"a": 1}})
    run.log_metric("after.user_holdout.object_f1", 0.8)
    run.log_metric("train.steps", 12, 12)
    run.set_tag("ortholens.decision", "accepted")
    run.end("FINISHED")
    exp = yaml.safe_load((tmp_path / "mlruns" / run.experiment_id / "meta.yaml").read_text())
    assert exp["name"] == MLFLOW_EXPERIMENT and exp["lifecycle_stage"] == "active"
    assert (tmp_path / "mlruns" / "0" / "meta.yaml").is_file()  # MLflow's Default
    meta = yaml.safe_load((run.dir / "meta.yaml").read_text())
    assert meta["run_id"] == run.run_id and meta["status"] == 3 and meta["end_time"]
    assert meta["experiment_id"] == run.experiment_id
    assert (run.dir / "params" / "budget_s").read_text() == "60"
    ts, value, step = (run.dir / "metrics" / "train.steps").read_text().split()
    assert float(value) == 12 and step == "12" and int(ts) > 0
    assert (run.dir / "tags" / "mlflow.runName").read_text() == "retrain x"
    # a second run lands in the same experiment
    assert MlflowRun(tmp_path / "mlruns", "y").experiment_id == run.experiment_id
