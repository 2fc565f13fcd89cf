"""Running `uv pip compile`: where uv is, the environment it gets, and the call itself.

`UvCall` starts uv when it is made and answers when asked, so that the caller works while uv
resolves: `torchship lock` starts the primary environment's call as soon as it is planned and
loads the lock model, uv's error readers and the other environments' plans meanwhile (issue 20:
uv spends most of its time waiting on the index, torchship most of its own importing). This
module imports neither the lock model nor the resolver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torchship._atomic import remove_scratch, scratch_dir
from torchship.errors import LockError

if TYPE_CHECKING:
    from torchship.lock.plan import CompilePlan

__all__ = ["TIMEOUT_S", "Group", "Runner", "UvCall", "find_uv", "uv_environ"]

# (argv, stdin, variables to set in uv's environment) -> the finished process
Runner = Callable[[Sequence[str], str, Mapping[str, str]], "subprocess.CompletedProcess[str]"]

TIMEOUT_S = 900  # one uv call, then it is killed (the limit its subprocess.run call had)


def find_uv() -> str:
    """The uv binary: the one beside this Python in a virtual environment (where the `uv`
    package installs it, and where its find_uv_bin looks first), else the one find_uv_bin
    finds, else the first on PATH."""
    if sys.prefix != sys.base_prefix and os.name == "posix":
        # find_uv_bin imports sysconfig and builds all five places it could look (~5 ms
        # before `torchship lock` can start uv, issue 20); a venv's own executable uv is taken
        # even where the package is missing (a --no-deps install), as PATH would give it
        here = os.path.join(sys.prefix, "bin", "uv")
        if os.path.isfile(here) and os.access(here, os.X_OK):
            return here
    try:
        from uv import find_uv_bin

        found = str(find_uv_bin())
        if os.access(found, os.X_OK):  # find_uv_bin takes any file named uv
            return found
    except (ImportError, FileNotFoundError):
        pass
    import shutil  # with bz2 and lzma: not on the way to uv's start (issue 20)

    found = shutil.which("uv") or ""
    if found:
        return found
    raise LockError(
        "uv is not installed", "pip install uv (torchship locks through `uv pip compile`)"
    )


def uv_environ(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for uv, less what would point it elsewhere (a user's index
    settings, a macOS floor of this host), plus the plan's own variables."""
    drop = ("UV_INDEX", "UV_EXTRA_INDEX", "MACOSX_DEPLOYMENT_TARGET")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, **extra}


def _popen(argv: Sequence[str], extra: Mapping[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=uv_environ(extra),
    )


class UvCall:
    """One `uv pip compile` for a plan, started when made; `result()` waits for its answer and
    `kill()` stops it, and either removes its files. Through `runner` (the I/O seam) the call is
    made at once instead, and `result()` reads its answer."""

    def __init__(self, plan: CompilePlan, runner: Runner | None = None) -> None:
        self._tmp: Path | None = None  # uv's files: the constraints, the previous pins
        self._previous: Path | None = None  # uv's --output-file: the previous pins, its answer
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._answer: subprocess.CompletedProcess[str] | None = None
        self._failure: BaseException | None = None
        try:
            self._start(plan, runner)
        except BaseException:
            self.kill()
            raise

    def _start(self, plan: CompilePlan, runner: Runner | None) -> None:
        constraints = previous = ""
        if plan.constraints or plan.preferences:  # else no file is named: none is made
            self._tmp = scratch_dir("torchship-lock-")
            constraints = str(self._tmp / "constraints.txt")
            self._previous = self._tmp / "previous.txt"
            Path(constraints).write_text("".join(f"{c}\n" for c in plan.constraints), "utf-8")
            self._previous.write_text("".join(f"{c}\n" for c in plan.preferences), "utf-8")
            previous = str(self._previous)
        argv = plan.argv(find_uv() if runner is None else "uv", constraints, previous)
        if runner is not None:
            self._answer = runner(argv, plan.stdin, plan.environ)
            return
        self._proc = _popen(argv, plan.environ)
        # uv's answer is read as it comes, so that it never waits on a full pipe meanwhile
        self._thread = threading.Thread(target=self._wait, args=(plan.stdin,), daemon=True)
        self._thread.start()

    def _wait(self, stdin: str) -> None:
        proc = self._proc
        assert proc is not None
        try:
            out, err = proc.communicate(stdin, timeout=TIMEOUT_S)
        except BaseException as e:  # raised by result(), in the caller's thread
            proc.kill()
            proc.wait()
            self._failure = e
            return
        self._answer = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def result(self) -> tuple[int, str, str]:
        """uv's exit code, its answer and its stderr."""
        try:
            if self._thread is not None:
                self._thread.join()
            if self._failure is not None:
                raise self._failure
            proc = self._answer
            assert proc is not None
            if proc.returncode != 0:
                return proc.returncode, "", proc.stderr
            # With --output-file (previous pins to keep) uv writes its answer there.
            text = proc.stdout
            if not text.strip():
                text = self._previous.read_text("utf-8") if self._previous else ""
            return 0, text, proc.stderr
        finally:
            self.kill()

    def kill(self) -> None:
        """Stop uv if it still runs and remove the call's files (once done, only the latter)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=10)  # uv is gone; its pipes close
        if self._tmp is not None:
            remove_scratch(self._tmp)


class Group:
    """uv processes run side by side, all killed as soon as one fails (the lock fails then,
    and the others' answers would be thrown away)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen[str]] = []
        self.stopped = False

    def run(
        self, argv: Sequence[str], stdin: str, extra: Mapping[str, str]
    ) -> subprocess.CompletedProcess[str]:
        if argv and argv[0] == "uv":  # a runner's argv names uv; this one runs the real one
            argv = [find_uv(), *argv[1:]]  # (not whatever PATH has, if anything)
        with self._lock:
            if self.stopped:
                return subprocess.CompletedProcess(list(argv), -9, "", "")
            proc = _popen(argv, extra)
            self._procs.append(proc)
        try:
            out, err = proc.communicate(stdin, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            for proc in self._procs:
                if proc.poll() is None:
                    proc.kill()
