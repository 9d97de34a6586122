"""--backend dask: the same results as joblib's local workers, on a real LocalCluster."""

from __future__ import annotations

import pytest

from test_ledger import batch, make_folder, read_rows, summary
from xray_score.errors import ExitCode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    import distributed  # part of the test extras: a missing install fails, never skips

    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as local:
        yield local


def test_dask_backend_matches_joblib(baseline_bundle, tmp_path, cluster):
    folder = tmp_path / "scans"
    make_folder(folder, 12)
    (folder / "empty.png").write_bytes(b"")
    local = batch(folder, baseline_bundle, tmp_path / "local.csv")
    remote = batch(folder, baseline_bundle, tmp_path / "dask.csv", "--backend", "dask",
                   "--scheduler", cluster.scheduler_address)
    assert local.exit_code == remote.exit_code == ExitCode.SOME_FAILED, remote.output
    assert summary(remote)["scored"] == 12 and summary(remote)["errors"] == 1

    def keyed(name: str) -> dict[str, tuple[str, str, str]]:
        return {r["path"]: (r["p_pneumonia"], r["status"], r["error_kind"])
                for r in read_rows(tmp_path / name)}

    assert keyed("dask.csv") == keyed("local.csv")


def test_dask_needs_a_scheduler(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 1)
    result = batch(folder, baseline_bundle, tmp_path / "r.csv", "--backend", "dask")
    assert result.exit_code == ExitCode.USAGE
