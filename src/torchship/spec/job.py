"""The job spec: `job.toml` (a `[job]` table). Validated once, with field-path errors.

[job]
name = "quickstart-train"
workload = "reference"            # the built-in DDP workload, or:
# command = ["python", "train.py", "--epochs", "3"]
nodes = 1
gpus_per_node = 0                 # 0: CPU processes
processes_per_node = 2            # default: gpus_per_node, or 1
gpu_models = []                   # acceptable GPU models ("H100", "A100", "sm_90")
cpus = 2
memory_gib = 4
checkpoint_dir = "checkpoints"    # relative: to this file's folder
max_runtime_minutes = 30
retries = 1
budget_usd = 10.0
egress = ["10.20.0.0/16:443"]     # Kubernetes: where the pods may connect beyond the job and DNS

[[job.data]]
path = "data/corpus"              # where the data is, on the site
mount = "/data/corpus"            # where the job sees it
read_only = true
class = "internal"                # public | internal | sensitive
size_gb = 120                     # for the egress cost of placing the job away from the data
mirrors = ["pvc://corpus", "s3://corp/corpus"]  # the same data where other sites reach it

[job.env]
HF_HUB_OFFLINE = "1"

[job.workload_args]               # for the built-in workload
steps = 200
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchship.errors import SpecError, excerpt, key_text, one_line
from torchship.spec.load import NAME_RE, FieldReader, read_toml
from torchship.workload.config import ArgError, check_table

DATA_CLASSES = ("public", "internal", "sensitive")
WORKLOADS = ("reference",)
JOB_KEYS = (
    "name",
    "workload",
    "command",
    "nodes",
    "gpus_per_node",
    "processes_per_node",
    "gpu_models",
    "cpus",
    "memory_gib",
    "data",
    "env",
    "checkpoint_dir",
    "max_runtime_minutes",
    "retries",
    "budget_usd",
    "workload_args",
    "egress",
)
DATA_KEYS = ("path", "mount", "read_only", "class", "size_gb", "mirrors")
# How a site reaches data, by the address's form (see data_kind): a PersistentVolumeClaim,
# a bucket, or a path on the host.
BUCKETS = ("s3://", "gs://", "r2://", "cos://", "oci://", "https://")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Ceilings of a job's counts: past them a value is a typo. The largest nodes carry 16 GPUs
# (DGX-2, HGX-2); 64 leaves room. 10,000 nodes is past the largest published training runs'
# node counts (Llama 3: 16,384 GPUs = 2,048 nodes of 8).
MAX_NODES = 10_000
MAX_GPUS_PER_NODE = 64
MAX_PROCESSES_PER_NODE = 1024
MAX_RETRIES = 100


@dataclass(frozen=True, slots=True)
class DataMount:
    path: str
    mount: str
    read_only: bool
    data_class: str
    size_gb: float = 0.0  # what a site outside the data's home pays to move it (egress)
    mirrors: tuple[str, ...] = ()  # the same data at other addresses (another kind each)

    @property
    def kinds(self) -> frozenset[str]:
        """How this data can be reached: "path", "pvc", "bucket"."""
        return frozenset(data_kind(a) for a in (self.path, *self.mirrors))

    def address(self, kind: str) -> str | None:
        """The address of this data of that kind, or None when it has none."""
        return next((a for a in (self.path, *self.mirrors) if data_kind(a) == kind), None)


def data_kind(address: str) -> str:
    if address.startswith("pvc://"):
        return "pvc"
    return "bucket" if address.startswith(BUCKETS) else "path"


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    command: tuple[str, ...] | None  # None: the built-in workload
    workload: str | None
    nodes: int
    gpus_per_node: int
    processes_per_node: int
    gpu_models: tuple[str, ...] = ()
    cpus: float | None = None
    memory_gib: float | None = None
    data: tuple[DataMount, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    checkpoint_dir: str | None = None
    max_runtime_minutes: float | None = None
    retries: int = 0
    budget_usd: float | None = None
    workload_args: dict[str, Any] = field(default_factory=dict)
    egress: tuple[tuple[str, int | None], ...] = ()  # (CIDR, TCP port or None for any)
    source: str = ""

    @property
    def checkpoint_path(self) -> Path | None:
        """checkpoint_dir on the machine that reads the job file: a relative one resolved
        against the job file's folder (a re-run resumes, wherever it is started from); None
        when unset."""
        if not self.checkpoint_dir:
            return None
        path = Path(self.checkpoint_dir).expanduser()
        return path if path.is_absolute() else Path(self.source).resolve().parent / path

    @property
    def sensitivity(self) -> str:
        """The most sensitive data class the job reads ("public" when it reads none)."""
        order = {c: i for i, c in enumerate(DATA_CLASSES)}
        return max((d.data_class for d in self.data), key=order.__getitem__, default="public")


def _command(r: FieldReader) -> tuple[tuple[str, ...] | None, str | None]:
    has_cmd, has_wl = "command" in r.table, "workload" in r.table
    if has_cmd == has_wl:
        raise r.fail(
            "command" if has_cmd else "workload",
            "give exactly one of command and workload" if has_cmd else "missing",
            'add command = ["python", "train.py"] or workload = "reference"',
        )
    if has_wl:
        wl = r.string("workload", None, 'workload = "reference"')
        if wl not in WORKLOADS:
            raise r.fail(
                "workload", f"unknown workload {excerpt(wl)}", f"one of: {', '.join(WORKLOADS)}"
            )
        return None, wl
    cmd = r.strings("command", 'command = ["python", "train.py"]')
    if not cmd or not cmd[0].strip():
        raise r.fail("command", "is empty", 'write command = ["python", "train.py"]')
    return cmd, None


def _data(r: FieldReader) -> tuple[DataMount, ...]:
    out = []
    for d in r.tables("data", DATA_KEYS, "[[job.data]] blocks"):
        path = d.string("path", None, 'path = "data/corpus"')
        if not path:
            raise d.fail("path", "missing", 'add path = "data/corpus"')
        mount = d.string("mount", None, 'mount = "/data/corpus"') or f"/data/{Path(path).name}"
        if not mount.startswith("/"):
            raise d.fail(
                "mount", f"{excerpt(mount)} is not an absolute path", 'write mount = "/data/x"'
            )
        cls = d.string("class", "internal", 'class = "internal"') or "internal"
        if cls not in DATA_CLASSES:
            raise d.fail(
                "class", f"unknown data class {excerpt(cls)}", f"one of: {', '.join(DATA_CLASSES)}"
            )
        read_only = d.table.get("read_only", True)
        if not isinstance(read_only, bool):
            raise d.fail("read_only", "must be true or false", "write read_only = true")
        size = d.number("size_gb", 0, "size_gb = 120") or 0.0
        mirrors = d.strings("mirrors", 'mirrors = ["s3://bucket/corpus"]')
        kinds = [data_kind(a) for a in (path, *mirrors)]
        if len(set(kinds)) < len(kinds) or not all(mirrors):
            raise d.fail("mirrors", f"two addresses of one kind ({', '.join(kinds)})",
                         "give at most one host path, one pvc:// and one bucket URL")  # fmt: skip
        out.append(DataMount(path, mount, read_only, cls, size, tuple(mirrors)))
    return tuple(out)


def _env(r: FieldReader) -> dict[str, str]:
    raw = r.table.get("env", {})
    if not isinstance(raw, dict):
        raise r.fail("env", "must be a table", 'write [job.env] with NAME = "value" lines')
    for k, v in raw.items():
        if not _ENV_NAME.fullmatch(k) or not isinstance(v, str):
            raise r.fail(
                f"env.{key_text(k)}", 'must be NAME = "string"', 'write OMP_NUM_THREADS = "4"'
            )
        if "\x00" in v:  # no process can be given it: exec refuses a NUL in the environment
            raise r.fail(f"env.{k}", "holds a NUL character", "remove it from the value")
    return dict(raw)


def job_from_table(table: dict[str, Any], file: str, default_name: str) -> JobSpec:
    r = FieldReader(file, table, "job.", JOB_KEYS)
    command, workload = _command(r)
    gpus = r.integer("gpus_per_node", 0, 0, "gpus_per_node = 1", MAX_GPUS_PER_NODE)
    models = r.strings("gpu_models", 'gpu_models = ["H100", "A100"]')
    if models and gpus == 0:
        raise r.fail(
            "gpu_models",
            f"names GPU models ({excerpt(', '.join(models))}) but gpus_per_node is 0",
            "set gpus_per_node ≥ 1, or remove gpu_models for a CPU job",
        )
    procs = r.integer(
        "processes_per_node", max(gpus, 1), 1, "processes_per_node = 2", MAX_PROCESSES_PER_NODE
    )
    if gpus and procs > gpus:
        raise r.fail(
            "processes_per_node",
            f"{procs} processes share {gpus} GPU(s)",
            "use one process per GPU: processes_per_node = gpus_per_node",
        )
    args = r.table.get("workload_args", {})
    if not isinstance(args, dict):
        raise r.fail("workload_args", "must be a table", "write [job.workload_args]")
    if args and workload is None:
        raise r.fail("workload_args", "is for the built-in workload", "pass arguments in command")
    for key, value in args.items():  # nan passes every comparison the workload makes
        if isinstance(value, float) and not math.isfinite(value):
            raise r.fail(f"workload_args.{key_text(key)}", f"is {value}", "write a finite number")
    if workload == "reference":
        try:
            check_table(args)
        except ArgError as e:
            raise r.fail(
                f"workload_args.{key_text(e.key)}", one_line(str(e), 200), one_line(e.hint, 200)
            ) from None
    name = r.string("name", default_name, 'name = "train"') or default_name
    if not NAME_RE.fullmatch(name):
        # it names output files (plan -o DIR/<name>.yaml) and Kubernetes objects; fullmatch:
        # $ matches before a final line break, so match() took "train\n"
        raise r.fail(
            "name",
            f"{excerpt(name)} is not a valid job name",
            "use lower case letters, digits, '.', '_' and '-', starting with a letter or digit "
            '(at most 63), e.g. name = "train"',
        )
    return JobSpec(
        name=name,
        command=command,
        workload=workload,
        nodes=r.integer("nodes", 1, 1, "nodes = 1", MAX_NODES),
        gpus_per_node=gpus,
        processes_per_node=procs,
        gpu_models=models,
        cpus=r.number("cpus", 0.1, "cpus = 4"),
        memory_gib=r.number("memory_gib", 0.1, "memory_gib = 16"),
        data=_data(r),
        env=_env(r),
        checkpoint_dir=r.string("checkpoint_dir", None, 'checkpoint_dir = "checkpoints"'),
        max_runtime_minutes=r.number("max_runtime_minutes", 0.1, "max_runtime_minutes = 60"),
        retries=r.integer("retries", 0, 0, "retries = 2", MAX_RETRIES),
        budget_usd=r.number("budget_usd", 0, "budget_usd = 100.0"),
        workload_args=dict(args),
        egress=_egress(r),
        source=file,
    )


def _egress(r: FieldReader) -> tuple[tuple[str, int | None], ...]:
    """`"CIDR"` or `"CIDR:PORT"` (TCP) entries, each checked."""
    out = []
    example = 'egress = ["10.20.0.0/16:443"]'
    for i, item in enumerate(r.strings("egress", example)):
        cidr, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        where = f"{r.path('egress')}[{i}]"
        try:
            net = str(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise SpecError(
                r.file, where, f"{excerpt(cidr)} is not an IP network", example
            ) from None
        # isascii: '²' is a digit to isdigit() and no number to int()
        if port and not (
            port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535
        ):
            raise SpecError(r.file, where, f"{excerpt(port)} is not a port (1–65535)", example)
        out.append((net, int(port) if port else None))
    return tuple(out)


def _where_inside(key: str, value: object) -> str:
    """The hint for a top-level `key`: the closest field of [job], written as its kind of TOML
    (a list of tables is `[[job.data]]`, a table `[job.env]`, a value a line under [job])."""
    import difflib  # only for a key that is wrong

    close = difflib.get_close_matches(key, JOB_KEYS, n=1, cutoff=0.6)
    if not close:
        return f"move it under [job], whose fields are: {', '.join(JOB_KEYS)}"
    name = close[0]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return f"did you mean [[job.{name}]]?"
    if isinstance(value, dict):
        return f"did you mean [job.{name}]?"
    return f"did you mean {name} = … under [job]?"


def load_job(path: str | Path) -> JobSpec:
    """A job.toml, or any TOML file with a [job] table."""
    p = Path(path)
    if p.is_dir():
        p = p / "job.toml"
    hint = "pass a job.toml (see docs/jobs.md)"
    if not p.exists():
        raise SpecError(str(p), "", "does not exist", hint)
    data = read_toml(p, "job file", hint)
    table = data.get("job")
    if not isinstance(table, dict):
        import difflib

        close = difflib.get_close_matches("job", [k for k in data if len(k) < 20], n=1)
        hint = f"did you mean [job] (not [{close[0]}])?" if close else "put the job under [job]"
        if "job" in data:  # [[job]], or job = "..."
            hint = "write one [job] table"
        raise SpecError(str(p), "job", "missing or not a table", hint)
    for key, value in data.items():  # a top-level [[data]] or [env] would silently not be the job's
        if key != "job":
            raise SpecError(
                str(p),
                key_text(key),
                "unknown top-level table or key: everything of a job is under [job]",
                _where_inside(key, value),
            )
    folder = re.sub(r"[^a-z0-9._-]+", "-", p.parent.resolve().name.lower()).strip("-._")
    return job_from_table(table, str(p), folder[:63] or "job")
