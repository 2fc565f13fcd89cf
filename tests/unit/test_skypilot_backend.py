"""The SkyPilot site's pure parts: the request (task + the exact `sky launch`), data from
buckets only, the time limit enforced on the nodes, and how SkyPilot's output and exit codes
are read (shapes from SkyPilot 0.14's CLI; the real CLI is exercised in
tests/integration/test_skypilot_real.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.integration.test_skypilot_site import LOCK, SAY_RANK, SITE, job
from torchship.backends import backend_for_site
from torchship.backends.skypilot import (
    SkyPilotBackend,
    ended_status,
    parse_json_tail,
    sky_task,
)
from torchship.errors import SpecError, UsageError

# `sky queue -o json` for a missing cluster, as SkyPilot 0.14.1 printed it here
QUEUE_MISSING = """Fetching job queue for: ts-x
Failed to get the job queue for cluster 'ts-x'.
  sky.exceptions.ClusterDoesNotExist: Cluster 'ts-x' does not exist.
{}
"""


def test_the_request_is_the_task_and_the_exact_launch(tmp_path: Path) -> None:
    be = SkyPilotBackend(SITE, tmp_path, "/opt/sky/bin/sky", python="/venv/bin/python")
    r = be.plan(job(SAY_RANK, max_runtime_minutes=90), LOCK, "0ab1")
    task_file = str(tmp_path / "runs/0ab1/task.sky.yaml")
    launch = ["/opt/sky/bin/sky", "launch", "--yes", "--down", "--cluster", "ts-0ab1", task_file]
    assert r.argv[-7:] == tuple(launch)
    assert r.argv[:3] == ("/venv/bin/python", "-m", "torchship.backends.supervise")
    assert "--remote" in r.argv[: -len(launch)]  # no GPU samples here, no reaper, sky's codes
    assert r.text.endswith(f"# {' '.join(launch)}\n")
    task = yaml.safe_load(r.text)
    assert task["resources"]["image_id"].startswith("docker:registry.example/ml/pytorch-cuda:")
    assert task["resources"]["region"] == "us-east-1"
    assert "accelerators" not in task["resources"]  # a CPU job asks for none
    assert "timeout --kill-after=60 5400 python -m torch.distributed.run" in task["run"]
    assert be.capabilities().remote and be.capabilities().multi_node


def test_data_is_mounted_from_its_bucket_address_or_refused() -> None:
    data = [{"path": "/srv/corpus", "mirrors": ["pvc://corpus", "gs://corp/corpus"],
             "mount": "/data/corpus", "class": "public"}]  # fmt: skip
    task = sky_task(job(SAY_RANK, data=data), LOCK, "0ab2", SITE)
    assert task["file_mounts"] == {"/data/corpus": {"source": "gs://corp/corpus", "mode": "MOUNT"}}
    with pytest.raises(UsageError, match="has no bucket address") as e:
        sky_task(job(SAY_RANK, data=[{"path": "pvc://corpus", "class": "public"}]), LOCK, "x", SITE)
    assert "mirrors" in e.value.hint


def test_mirrors_must_be_one_address_of_each_kind() -> None:
    with pytest.raises(SpecError) as e:
        job(SAY_RANK, data=[{"path": "s3://a/b", "mirrors": ["gs://c/d"], "class": "public"}])
    assert e.value.field == "job.data[0].mirrors"
    assert "two addresses of one kind (bucket, bucket)" in str(e.value)


def test_no_lock_no_task() -> None:
    with pytest.raises(UsageError, match="there is no lock"):
        sky_task(job(SAY_RANK), None, "0ab3", SITE)


@pytest.mark.parametrize(
    ("record", "state", "reason"),
    [
        ({"state": "succeeded", "exit_code": 0}, "succeeded", ""),
        ({"state": "failed", "exit_code": 100}, "failed", "the job failed on the cluster (sky "
         "launch exit 100)"),
        ({"state": "failed", "exit_code": 103}, "cancelled", "cancelled on the cluster (sky launch"
         " exit 103)"),
        ({"state": "cancelled", "exit_code": 143, "reason": "cancelled (SIGTERM)"}, "cancelled",
         "cancelled (SIGTERM)"),
        ({"state": "failed", "exit_code": 1}, "failed", "sky launch failed (exit 1): "
         "sky.exceptions.CloudError: no catalog"),
    ],
)  # fmt: skip
def test_how_sky_launch_ended(record: dict[str, object], state: str, reason: str,
                              tmp_path: Path) -> None:  # fmt: skip
    log = tmp_path / "log"
    log.write_text("YAML to run: t.yaml\nsky.exceptions.CloudError: no catalog\n"
                   "[torchship] job x failed: exit code 1\n")  # fmt: skip
    st = ended_status(record, log)
    assert (st.state, st.reason) == (state, reason)


def test_json_after_progress_lines() -> None:
    assert parse_json_tail(QUEUE_MISSING) == {}
    jobs = 'Fetching job queue for: c\n{\n  "c": [\n    {"job_id": 1, "status": "RUNNING"}\n]\n}\n'
    assert parse_json_tail(jobs) == {"c": [{"job_id": 1, "status": "RUNNING"}]}
    assert parse_json_tail("no json at all") == {}


def test_a_skypilot_site_gets_the_skypilot_backend() -> None:
    be = backend_for_site(SITE)
    assert isinstance(be, SkyPilotBackend) and be.site is SITE


def test_a_hand_edited_handle_cannot_name_another_cluster(tmp_path: Path) -> None:
    """`sky://prod-serving/<id>` in the store would make cancel run `sky down prod-serving`."""
    from torchship.backends.skypilot import SkyPilotBackend

    be = SkyPilotBackend(None, tmp_path, sky=None)
    with pytest.raises(UsageError, match="not the job's own ts-01abc"):
        be.cancel("sky://prod-serving/01abc")
