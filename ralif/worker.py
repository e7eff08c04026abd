"""Long jobs (model training) in a separate process, observed through a JSON status file.

The child process is started with the ``spawn`` method so it never inherits the parent's threads,
locks or CUDA state (a web app's server threads, say).  It reports through a status file that it
rewrites atomically::

    {"job_id", "target", "state": queued|running|done|failed|cancelled, "phase", "message",
     "progress": {...}, "result_path", "result", "error", "traceback", "pid",
     "created_at", "started_at", "updated_at", "finished_at"}          (times: Unix seconds)

A job function is a top-level function ``fn(job: JobContext, **kwargs)``.  It reports with
``job.report(...)``, polls ``job.should_stop()`` (or calls ``job.check_cancelled()``) and
returns a result path (or a JSON-able dict, or None).

A worker that dies without writing a final state (killed, out of memory, crashed interpreter)
is reported as failed by whoever reads the status next, so a job never stays "running" forever.
Cancellation is cooperative first (an event plus a flag file next to the status file, so
another process can cancel by path) and forced after a grace period.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import types
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ralif.atomic import atomic_write_json
from ralif.processes import (
    describe_exit,
    name_this_process_reaper,
    pid_alive,
    process_start_time,
    reap_when_done,
    reaper_collecting,
)

__all__ = [
    "FINAL_STATES",
    "START_TIMEOUT_S",
    "STATES",
    "BackgroundJob",
    "JobCancelled",
    "JobContext",
    "finish_job_status",
    "job_for",
    "main_script_hidden",
    "never_started",
    "pid_alive",
    "process_start_time",
    "read_status",
    "start_job",
    "started_here",
    "started_status",
    "train_resnet_job",
    "write_queued_status",
]

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = frozenset({"done", "failed", "cancelled"})
# A queued job that no process has started by then never will (its worker failed to start, or the
# process meant to pick it up is gone).
START_TIMEOUT_S: float = 120.0

# Progress can arrive every batch; rewriting the file more often than this only costs fsyncs.
_MIN_WRITE_INTERVAL_S = 0.25
_TRACEBACK_TAIL_CHARS = 4000


class JobCancelled(Exception):
    """Raised inside a job when cancellation was requested."""


def never_started(status: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether a job's ``status`` is that of a job queued more than :data:`START_TIMEOUT_S`
    seconds ago that no process ever started."""
    if status.get("state") != "queued" or status.get("started_at") is not None:
        return False
    created = float(status.get("created_at") or 0.0)
    return (time.time() if now is None else now) - created > START_TIMEOUT_S


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays show up in progress dicts; paths in results.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return repr(obj)


def _cancel_flag(status_path: Path) -> Path:
    return status_path.with_name(status_path.name + ".cancel")


def _known_exitcode(pid: int) -> int | None:
    """The exit code of ``pid`` when this process started it (one worker can serve many jobs)."""
    for job in list(_LIVE_JOBS.values()):
        proc = job._process
        if proc is not None and proc.pid == pid:
            # The process can look dead (its main thread a zombie) a moment before its other
            # threads are gone and the kernel hands out its exit status.
            proc.join(2.0)
            if not proc.is_alive():
                return proc.exitcode
    return None


def read_status(status_path: str | os.PathLike) -> dict[str, Any]:
    """The job's status as last written, with ``cancel_requested``; see :class:`BackgroundJob`."""
    path = Path(status_path)
    status = json.loads(path.read_text(encoding="utf-8"))
    status["cancel_requested"] = _cancel_flag(path).exists()
    return status


# --------------------------------------------------------------------------- child side


class JobContext:
    """What a job function gets to report progress and notice cancellation."""

    def __init__(self, status_path: Path, cancel_event: Any, status: dict[str, Any]) -> None:
        self._path = status_path
        self._flag = _cancel_flag(status_path)
        self._event = cancel_event
        self._status = status
        self._last_write = 0.0
        self._dirty = False

    @property
    def status_path(self) -> Path:
        return self._path

    def should_stop(self) -> bool:
        """True once cancellation was requested; cheap enough to call every batch."""
        return bool(self._event is not None and self._event.is_set()) or self._flag.exists()

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if cancellation was requested."""
        if self.should_stop():
            raise JobCancelled("cancelled on request")

    def report(
        self,
        progress: dict[str, Any] | None = None,
        *,
        phase: str | None = None,
        message: str | None = None,
        force: bool = False,
    ) -> None:
        """Set the status's progress dict to ``progress`` and write the status (rate-limited
        unless ``force``).  A new ``phase`` is always written at once, so short phases show.
        """
        if progress is not None:
            self._status["progress"] = dict(progress)
        if phase is not None and phase != self._status.get("phase"):
            self._status["phase"] = phase
            force = True
        if message is not None:
            self._status["message"] = message
        self._dirty = True
        if force or time.monotonic() - self._last_write >= _MIN_WRITE_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        self._status["updated_at"] = time.time()
        atomic_write_json(self._path, self._status, indent=1, default=_json_default)
        self._last_write = time.monotonic()
        self._dirty = False

    def set_field(self, key: str, value: Any) -> None:
        """Set a top-level field of the status (written with the next report)."""
        self._status[key] = value
        self._dirty = True

    def finish(self, state: str, **fields: Any) -> None:
        """Write the final ``state`` (done, failed, cancelled) with ``fields``, at once."""
        now = time.time()
        self._status.update(fields, state=state, updated_at=now, finished_at=now)
        self._dirty = True
        self.flush()


def _resolve_target(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(target):
        return target
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"job target {target!r} is not 'package.module:function'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"job target {target!r} is not callable")
    return obj


def started_status(path: Path) -> dict[str, Any]:
    """The job's status file as left by whoever queued it, marked running in this process."""
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        status = {"job_id": path.stem, "created_at": time.time()}
    now = time.time()
    status.update(
        state="running",
        phase="starting",
        pid=os.getpid(),
        pid_started_at=process_start_time(os.getpid()),
        started_at=now,
        updated_at=now,
    )
    status.setdefault("progress", {})
    return status


def finish_job_status(job: JobContext, exc: BaseException, cancelled: bool) -> None:
    """Record how a job ended by ``exc``: cancelled, or failed with the reason and a traceback tail."""
    if cancelled:
        job.finish("cancelled", phase="cancelled", message=str(exc) or "cancelled")
        return
    tail = "".join(traceback.format_exception(exc))[-_TRACEBACK_TAIL_CHARS:]
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError):
        reason += " (the machine ran out of memory; a smaller batch size or pool, or more memory, helps)"
    job.finish("failed", error=reason, traceback=tail, message=reason)


def _child_main(
    target: str | Callable[..., Any], kwargs: dict[str, Any], status_path: str, cancel_event: Any
) -> None:
    import faulthandler
    import sys

    # A hard crash (segfault in a native library) then leaves a Python traceback on stderr.
    faulthandler.enable()
    path = Path(status_path)
    job = JobContext(path, cancel_event, started_status(path))
    job.report(force=True)
    try:
        result = _resolve_target(target)(job, **kwargs)
    except BaseException as exc:
        # Ctrl-C in a terminal reaches the worker too: the user stopped it, it did not fail.
        cancelled = isinstance(exc, (JobCancelled, KeyboardInterrupt)) or job.should_stop()
        finish_job_status(job, exc, cancelled)
        sys.exit(0 if cancelled else 1)
    fields: dict[str, Any] = {"phase": "done"}
    if isinstance(result, (str, os.PathLike)):
        fields["result_path"] = os.fspath(result)
    elif result is not None:
        fields["result"] = result
    job.finish("done", **fields)


def _reaper_main(
    target: str | Callable[..., Any], kwargs: dict[str, Any], status_path: str, cancel_event: Any
) -> None:
    """Parent of a detached job, whoever started it: runs the job in a child and, should the child
    end without a final state (killed, out of memory), records how it ended in each status file
    of its folder that names it (the job's own, and a round it was running).

    Only a parent can learn a child's exit status; the process that starts a long-lived job (an
    app, a test run) may not be the one that looks, or may be gone by then."""
    name_this_process_reaper()
    pid = os.fork()  # this process is fresh (spawned) and runs no other threads
    if pid == 0:
        _child_main(target, kwargs, status_path, cancel_event)
        return
    started = time.time()
    # Ctrl-C reaches the job, which decides; a terminate request is passed on to it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    # Read the exit status without collecting the child: while the zombie exists, readers know
    # (``reaper_collecting``) that the record is still to come and do not write "unknown".
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    # waitid answers None only under WNOHANG; this call blocks until the child has exited.
    assert info is not None
    exitcode = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
    try:
        _record_exit(Path(status_path).parent, pid, exitcode, since=started - 1.0)
    finally:
        os.waitpid(pid, 0)
    sys.exit(0 if exitcode == 0 else 1)


def _record_exit(folder: Path, pid: int, exitcode: int, since: float) -> None:
    for path in folder.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            if path.stat().st_mtime < since:
                continue  # written before the job started: not its
            status = read_status(path)
            if status.get("state") not in FINAL_STATES and status.get("pid") == pid:
                BackgroundJob(path)._record_death(status, exitcode)


# --------------------------------------------------------------------------- parent side


class BackgroundJob:
    """Handle on a job started by :func:`start_job` (or re-attached by status path)."""

    def __init__(
        self,
        status_path: str | os.PathLike,
        process: Any | None = None,
        cancel_event: Any | None = None,
    ) -> None:
        self.status_path = Path(status_path)
        self._process = process
        self._event = cancel_event
        self._lock = threading.Lock()
        # A detached job's process handle is its reaper's; the job itself is the reaper's child.
        self._reaped = False

    @classmethod
    def attach(cls, status_path: str | os.PathLike) -> BackgroundJob:
        """A handle on a job started elsewhere (another process, an earlier app run)."""
        path = Path(status_path)
        if not path.is_file():
            raise FileNotFoundError(f"no job status file at {path}")
        return cls(path)

    @property
    def pid(self) -> int | None:
        if self._process is not None and not self._reaped:
            return self._process.pid
        with contextlib.suppress(OSError, ValueError):
            return read_status(self.status_path).get("pid")
        return None

    def is_alive(self) -> bool:
        if self._process is not None:
            return self._process.is_alive()
        status = read_status(self.status_path)
        pid = status.get("pid")
        if status.get("state") in FINAL_STATES or pid is None:
            return False
        return bool(pid_alive(int(pid), status.get("pid_started_at")))

    def status(self) -> dict[str, Any]:
        """The current status; a worker found dead without a final state is recorded as failed
        (or cancelled, when a cancel had been requested)."""
        with self._lock:
            status = read_status(self.status_path)
            if status.get("state") in FINAL_STATES:
                if self._process is not None and not self._reaped:
                    # Only a poll of this handle (or the next process started) collects an ended
                    # worker, and the app reads a finished job only through here: without this
                    # poll the worker would stay a zombie until the next job. It does not wait: a
                    # worker still exiting is collected by a later read. A detached job's reaper
                    # is left to the thread of ``reap_when_done``, its one waiter.
                    self._process.is_alive()
                return status
            exitcode: int | None
            if self._process is not None:
                if self._process.is_alive():
                    return status
                exitcode = self._process.exitcode
                # The child may have written its final state just before exiting.
                status = read_status(self.status_path)
                if status.get("state") in FINAL_STATES:
                    return status
            else:
                pid = status.get("pid")
                if pid is None or pid_alive(int(pid), status.get("pid_started_at")) is not False:
                    return status
                exitcode = _known_exitcode(int(pid))
                if exitcode is None and reaper_collecting(int(pid)):
                    return status  # its reaper writes how it ended, in a moment
            return self._record_death(status, exitcode)

    def _record_death(self, status: dict[str, Any], exitcode: int | None) -> dict[str, Any]:
        how = describe_exit(exitcode)
        now = time.time()
        status.pop("cancel_requested", None)
        if _cancel_flag(self.status_path).exists():
            status.update(state="cancelled", phase="cancelled", message=f"stopped on request ({how})")
        else:
            if exitcode == 0:
                reason = "worker process exited (exit code 0) without reporting a result"
            else:
                reason = f"worker process died ({how})"
            status.update(state="failed", error=reason, message=reason)
        status.update(exit_code=exitcode, updated_at=now, finished_at=now)
        atomic_write_json(self.status_path, status, indent=1, default=_json_default)
        status["cancel_requested"] = _cancel_flag(self.status_path).exists()
        return status

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job ends or ``timeout`` seconds pass; returns the status either way."""
        if self._process is not None:
            self._process.join(timeout)
            return self.status()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status()
            if status.get("state") in FINAL_STATES:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                return status
            time.sleep(0.1)

    def cancel(self, grace_s: float = 10.0, wait: bool = True) -> dict[str, Any]:
        """Ask the job to stop; terminate it, then kill it, if it has not within ``grace_s``.

        With ``wait=False`` the escalation runs in a background thread and this returns at once.
        """
        if self.status().get("state") in FINAL_STATES:
            return self.status()
        _cancel_flag(self.status_path).touch()
        if self._event is not None:
            self._event.set()
        if wait:
            self._escalate(grace_s)
        else:
            threading.Thread(target=self._escalate, args=(grace_s,), daemon=True).start()
        return self.status()

    def _escalate(self, grace_s: float) -> None:
        proc = self._process
        if proc is not None and self._reaped:
            # Stop the job by its own pid; its reaper then records how it ended and leaves.
            self._escalate_by_pid(grace_s)
            proc.join(5.0)
            self.status()
            return
        if proc is not None:
            proc.join(grace_s)
            if proc.is_alive():
                proc.terminate()
                proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
            self.status()
            return
        self._escalate_by_pid(grace_s)

    def _escalate_by_pid(self, grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not self.is_alive():
                self.status()
                return
            time.sleep(0.1)
        status = read_status(self.status_path)
        pid = status.get("pid")
        if pid is not None and pid_alive(int(pid), status.get("pid_started_at")):
            import psutil

            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(int(pid))
                proc.terminate()
                try:
                    proc.wait(5.0)
                except psutil.TimeoutExpired:
                    proc.kill()
                    proc.wait(5.0)
        self.status()


def _check_target(target: str | Callable[..., Any]) -> str | Callable[..., Any]:
    if isinstance(target, str):
        return target
    if not callable(target):
        raise TypeError("job target must be a function or 'package.module:function'")
    try:
        pickle.dumps(target)
    except Exception as exc:  # pickle raises several types; all mean the same here
        raise ValueError(
            f"job function {getattr(target, '__qualname__', target)!r} cannot be sent to a "
            "worker process; use a top-level function of an importable module"
        ) from exc
    return target


def write_queued_status(status_path: str | os.PathLike, job_id: str, target: str) -> dict[str, Any]:
    """Write the status of a job that no process runs yet (it is picked up by one, or started)."""
    now = time.time()
    status: dict[str, Any] = {
        "job_id": job_id, "target": target, "state": "queued", "phase": "queued", "message": None,
        "progress": {}, "result_path": None, "result": None, "error": None, "traceback": None, "pid": None,
        "exit_code": None, "created_at": now, "started_at": None, "updated_at": now, "finished_at": None,
    }
    atomic_write_json(status_path, status, indent=1, default=_json_default)
    return status


def start_job(
    fn: str | Callable[..., Any],
    kwargs: dict[str, Any] | None,
    status_path: str | os.PathLike,
    *,
    job_id: str | None = None,
    detached: bool = False,
) -> BackgroundJob:
    """Run ``fn(job, **kwargs)`` in a new process; progress goes to ``status_path`` (JSON).

    ``fn`` is a top-level function or its name as ``"package.module:function"``; ``kwargs``
    must pickle.  A status file left by an earlier job at the same path is replaced.  A
    ``detached`` job does not keep this process from exiting (it has to watch for that itself).
    """
    target = _check_target(fn)
    path = Path(status_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        _cancel_flag(path).unlink()
    name = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
    status = write_queued_status(path, job_id or uuid.uuid4().hex[:12], name)
    ctx = multiprocessing.get_context("spawn")
    event = ctx.Event()
    # Not a daemon: training may start DataLoader worker processes of its own.
    process = ctx.Process(
        target=_reaper_main if detached else _child_main,
        args=(target, dict(kwargs or {}), str(path), event),
        name=f"ralif-job-{status['job_id']}",
    )
    try:
        with main_script_hidden():
            process.start()
    except Exception as exc:
        status.update(
            state="failed",
            error=f"could not start the worker process: {type(exc).__name__}: {exc}",
            finished_at=time.time(),
        )
        atomic_write_json(path, status, indent=1, default=_json_default)
        raise
    if detached:
        # multiprocessing joins its non-daemon children when the parent exits; a long-lived server
        # must not hold the parent (a test run, a stopped app) open. It notices the parent is gone.
        multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
        # That list is also what collects ended children: without a waiter each reaper stays a zombie.
        reap_when_done(process)
    job = BackgroundJob(path, process, event)
    job._reaped = detached
    # The child attaches to the cancel event's semaphore while starting; if the caller dropped the
    # handle first, the semaphore would be gone and the child would die on start-up.
    _LIVE_JOBS[str(path)] = job
    return job


_LIVE_JOBS: dict[str, BackgroundJob] = {}
_MAIN_LOCK = threading.Lock()


def started_here(status_path: str | os.PathLike) -> bool:
    """Whether this process started the job at ``status_path`` (and so holds its process handle)."""
    return str(Path(status_path)) in _LIVE_JOBS


def job_for(status_path: str | os.PathLike) -> BackgroundJob:
    """The handle of a job started by this process, or one attached to its status file."""
    return _LIVE_JOBS.get(str(Path(status_path))) or BackgroundJob.attach(status_path)


@contextlib.contextmanager
def main_script_hidden() -> Iterator[None]:
    """Streamlit runs a page as a module named ``__main__`` with the page's file but no spec; a spawned
    worker would import and so run that page again on start-up. A bare ``__main__`` stands in for it
    while the worker starts."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or not getattr(main, "__file__", None):
        yield
        return
    with _MAIN_LOCK:
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = main


# --------------------------------------------------------------------------- training job


def train_resnet_job(job: JobContext, **kwargs: Any) -> str:
    """Job function that trains a ResNet18; see :func:`ralif.training_job.train_resnet_job`
    (kept here so ``"ralif.worker:train_resnet_job"`` names it)."""
    from ralif.training_job import train_resnet_job as train

    return train(job, **kwargs)
