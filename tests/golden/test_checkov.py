"""checkov's checks pass on every rendered Dockerfile and Kubernetes manifest (goldens and
examples).

checkov pins many packages of its own, so the test installs it into a venv of its own
(/var/tmp/torchship-checkov, reused) from PyPI; skipped with the reason where pip cannot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tools.scan_dockerfiles import checkov

from tests.conftest import REPO, venv_tool

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
VENV = Path("/var/tmp/torchship-checkov")
DOCKERFILES = sorted(
    [
        *REPO.glob("tests/golden/dockerfiles/*/Dockerfile"),
        *REPO.glob("examples/*/image/*/Dockerfile"),
    ]
)


@pytest.fixture(scope="module")
def checkov_exe() -> str:
    return str(venv_tool(VENV, "checkov", "checkov"))


def test_every_rendered_dockerfile_passes_checkov(checkov_exe: str) -> None:
    assert len(DOCKERFILES) >= 16
    failures = {}
    for path in DOCKERFILES:
        passed, failed, ids = checkov(checkov_exe, path)
        assert passed > 50, f"{path}: checkov ran {passed} checks; did it parse the file?"
        if failed:
            failures[str(path.relative_to(REPO))] = ids
    assert failures == {}


def test_every_rendered_manifest_passes_checkov(checkov_exe: str) -> None:
    """checkov's Kubernetes checks on every golden manifest (custom resources' pod templates
    scanned as batch Jobs, which checkov cannot look into). The goldens name the image by tag,
    so CKV_K8S_43 (image by digest) is the one check they may fail; rendered with the pushed
    image's digest (`plan --image-digest`), every check passes."""
    import yaml
    from tools.scan_manifests import as_scannable
    from tools.scan_manifests import checkov as checkov_k8s

    from torchship.backends.kubernetes import options_for
    from torchship.k8s.render import render
    from torchship.lock import read_lock
    from torchship.sites import load_sites
    from torchship.spec.job import load_job

    manifests = sorted(REPO.glob("examples/*/k8s/*.yaml"))
    assert len(manifests) >= 4
    for path in manifests:
        objs = as_scannable(list(yaml.safe_load_all(path.read_text())))
        passed, _, ids = checkov_k8s(checkov_exe, objs)
        assert passed > 60, f"{path}: checkov ran {passed} checks"
        assert set(ids) <= {"CKV_K8S_43"}, f"{path}: {ids}"
    hybrid = REPO / "examples/hybrid"
    onprem = next(s for s in load_sites(hybrid / "sites.toml") if s.name == "onprem")
    opts = options_for(onprem, "sha256:" + "0f" * 32)
    lock = read_lock(hybrid / "torchship.lock")
    for job_file, operator in (("job-1node.toml", "jobset"), ("job-2node.toml", "jobset"),
                               ("job-2node.toml", "pytorchjob")):  # fmt: skip
        job = load_job(hybrid / job_file)
        objs = as_scannable(render(job, lock, "01example0000000000", opts, operator))
        passed, failed, ids = checkov_k8s(checkov_exe, objs)
        assert (failed, ids) == (0, []), f"{job_file} {operator}: {ids}"
        assert passed > 60


def test_the_pods_of_a_trainjob_pass_checkov(checkov_exe: str) -> None:
    """A TrainJob holds no pod template: Kubeflow Trainer makes its pods from the runtime's.
    The pod it makes of ours on `torch-distributed` (tests/golden/test_kubernetes_objects.py's
    stand-in for its controller) is scanned as a batch Job, with the image by digest. One
    check may fail, and only because the TrainJob API cannot reach it: CKV_K8S_38, the
    service-account token, which the runtime's pod template (or the namespace's default
    ServiceAccount) decides (docs/sites-kubernetes.md)."""
    from tools.scan_manifests import checkov as checkov_k8s

    from tests.golden.test_kubernetes_objects import trainer_pod
    from torchship.backends.kubernetes import options_for
    from torchship.k8s.render import render
    from torchship.lock import read_lock
    from torchship.sites import load_sites
    from torchship.spec.job import load_job

    hybrid = REPO / "examples/hybrid"
    onprem = next(s for s in load_sites(hybrid / "sites.toml") if s.name == "onprem")
    opts = options_for(onprem, "sha256:" + "0f" * 32)
    job = load_job(hybrid / "job-2node.toml")
    main, policy = render(job, read_lock(hybrid / "torchship.lock"), "01example0000000000", opts,
                          "trainer")  # fmt: skip
    meta, pod = trainer_pod(main)
    assert "automountServiceAccountToken" not in pod  # the runtime's: it does not set it
    as_job = {"apiVersion": "batch/v1", "kind": "Job",
              "metadata": {"name": "trainjob-node", "namespace": "ml"},
              "spec": {"template": {"metadata": meta, "spec": pod}}}  # fmt: skip
    passed, _, ids = checkov_k8s(checkov_exe, [as_job, policy])
    assert passed > 60, f"checkov ran {passed} checks"
    assert ids == ["CKV_K8S_38"]
