"""job.toml: valid forms, field-path errors for every kind of mistake, fuzzing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from torchship.errors import SpecError
from torchship.spec.job import job_from_table, load_job


def test_quickstart_job() -> None:
    job = load_job(REPO / "examples/quickstart/job.toml")
    assert (job.name, job.workload, job.command, job.processes_per_node) == (
        "quickstart-train",
        "reference",
        None,
        2,
    )
    assert job.workload_args == {"steps": 60, "checkpoint_every": 20} and job.retries == 1


def test_full_job(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text("""
[job]
command = ["python", "train.py"]
nodes = 2
gpus_per_node = 8
gpu_models = ["H100", "A100"]
budget_usd = 250
[[job.data]]
path = "s3://bucket/corpus"
class = "sensitive"
[[job.data]]
path = "datasets/public"
mount = "/data/public"
read_only = false
class = "public"
[job.env]
NCCL_DEBUG = "INFO"
""")
    job = load_job(tmp_path)
    assert job.processes_per_node == 8 and job.nodes == 2 and job.budget_usd == 250.0
    assert job.data[0].mount == "/data/corpus" and job.data[0].read_only
    assert job.sensitivity == "sensitive" and job.env == {"NCCL_DEBUG": "INFO"}


@pytest.mark.parametrize(
    ("body", "field", "hint"),
    [
        ("name = 'x'", "job.workload", "command ="),
        ("command = []", "job.command", "command ="),
        ('workload = "reference"\ncommand = ["x"]', "job.command", "command ="),
        ('workload = "bert"', "job.workload", "reference"),
        ('workload = "reference"\ngpu_models = ["H100"]', "job.gpu_models", "gpus_per_node ≥ 1"),
        (
            'workload = "reference"\ngpus_per_node = 2\nprocesses_per_node = 4',
            "job.processes_per_node",
            "one process per GPU",
        ),
        ('workload = "reference"\nbudget_usd = -5', "job.budget_usd", "budget_usd ="),
        ('workload = "reference"\nnodes = 0', "job.nodes", "nodes ="),
        ('workload = "reference"\nnodes = 1.5', "job.nodes", "nodes ="),
        ('workload = "reference"\nretires = 2', "job.retires", "did you mean 'retries'"),
        (
            'workload = "reference"\n[job.workload_args]\nstepz = 3',
            "job.workload_args.stepz",
            "did you mean steps?",
        ),
        (
            'workload = "reference"\n[job.workload_args]\nsteps = "many"',
            "job.workload_args.steps",
            "steps = 60",
        ),
        (
            'command = ["python", "t.py"]\n[job.workload_args]\nsteps = 3',
            "job.workload_args",
            "command",
        ),
        ('workload = "reference"\n[[job.data]]\nmount = "/d"', "job.data[0].path", "path ="),
        (
            'workload = "reference"\n[[job.data]]\npath = "d"\nclass = "secret"',
            "job.data[0].class",
            "sensitive",
        ),
        (
            'workload = "reference"\n[[job.data]]\npath = "d"\nmount = "rel"',
            "job.data[0].mount",
            "/data",
        ),
        ('workload = "reference"\n[job.env]\n"BAD-NAME" = "1"', "job.env.BAD-NAME", "OMP"),
    ],
)
def test_errors(tmp_path: Path, body: str, field: str, hint: str) -> None:
    (tmp_path / "job.toml").write_text("[job]\n" + body + "\n")
    with pytest.raises(SpecError) as e:
        load_job(tmp_path)
    assert e.value.field == field, str(e.value)
    assert hint in e.value.hint and e.value.exit_code == 2


def test_missing_job_table(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text("name = 'x'\n")
    with pytest.raises(SpecError, match="job: missing"):
        load_job(tmp_path)


values = st.one_of(
    st.integers(-3, 10),
    st.floats(),  # nan and inf are TOML floats
    st.sampled_from([10**30, 10**400, -(10**30), "\x00", "x" * 10_000]),
    st.text(max_size=6),
    st.booleans(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
keys = st.sampled_from(
    [
        "name",
        "workload",
        "command",
        "nodes",
        "gpus_per_node",
        "gpu_models",
        "processes_per_node",
        "budget_usd",
        "data",
        "env",
        "retries",
        "cpus",
        "memory_gib",
        "max_runtime_minutes",
        "zzz",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_fuzz(table: dict[str, object]) -> None:
    """Only SpecError, short and on one line; what loads has finite, bounded numbers (before:
    nan and inf passed every `value < minimum` check, 10**30 nodes reached rendering)."""
    try:
        job = job_from_table(table, "job.toml", "j")
    except SpecError as e:
        assert e.hint and "\n" not in str(e) and len(str(e)) < 300
        return
    assert 1 <= job.nodes <= 10_000 and job.gpus_per_node <= 64 and job.retries <= 100
    for number in (job.cpus, job.memory_gib, job.max_runtime_minutes, job.budget_usd):
        assert number is None or math.isfinite(number)
