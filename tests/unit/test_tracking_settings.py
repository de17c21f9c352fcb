"""params.yaml's mlflow section resolved for a run: the store, the experiment, the system-metrics interval."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_the_system_metrics_interval_is_a_number_or_one_per_profile_and_a_missing_profile_is_named(tmp_path):
    """A demo run lasts seconds and MLflow logs a sample only after a whole interval: the demo samples every second,
    the full profile's hours-long runs every 10 s (params.yaml)."""
    from pipelines.sources import CatalogueError, load_params
    from pipelines.tracking import tracking_settings

    params = load_params(REPO / "params.yaml")
    assert tracking_settings({**params, "profile": "demo"}, tmp_path).interval == 1.0
    assert tracking_settings({**params, "profile": "full"}, tmp_path).interval == 10.0
    assert tracking_settings({**params, "mlflow": {**params["mlflow"], "system_metrics_interval": 3}},
                             tmp_path).interval == 3.0
    with pytest.raises(CatalogueError, match=r"system_metrics_interval has no entry for profile 'own'.*demo, full"):
        tracking_settings({**params, "profile": "own"}, tmp_path)
    with pytest.raises(CatalogueError, match=r"system_metrics_interval=\{'demo': -1\} is invalid"):
        tracking_settings({**params, "mlflow": {**params["mlflow"], "system_metrics_interval": {"demo": -1}}}, tmp_path)
