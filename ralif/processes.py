"""Facts about operating-system processes that background jobs need: is a pid still the job's
process, how did a process end, and will its parent record that.

A process's exit status can only be learnt by its parent. A detached job (the round server) runs
under a small parent of its own, the *reaper* (see :func:`ralif.worker.start_job`), whatever
process started it; this module names that parent so a reader who finds the job's process dead
can tell that the reaper, not the reader, will record how it ended.

The reaper is itself a child of the process that started the job, and must be waited for in turn:
:func:`reap_when_done` does that for a reaper taken out of :mod:`multiprocessing`'s own list.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

# Kept under 16 characters: the kernel truncates a process's name there.
REAPER_NAME = "ralif-reaper"


def describe_exit(exitcode: int | None) -> str:
    """How a process ended, in words, from its exit code (negative: the signal that killed it)."""
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            return f"killed by signal {-exitcode}"
        if name == "SIGKILL":
            # The kernel's out-of-memory killer sends SIGKILL; so does a user's kill -9.
            return "killed by signal SIGKILL, most often because the machine ran out of memory"
        return f"killed by signal {name}"
    return f"exit code {exitcode}"


def process_start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def pid_alive(pid: int, started: float | None) -> bool | None:
    """Whether ``pid`` still runs the job's process; None when that cannot be told."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # A recycled pid belongs to a process created later than the worker.
        return started is None or abs(proc.create_time() - started) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return None


def name_this_process_reaper() -> None:
    """Name this process as a job's reaper (Linux; elsewhere readers simply do not wait for it)."""
    with contextlib.suppress(OSError), open(f"/proc/{os.getpid()}/comm", "w", encoding="ascii") as fh:
        fh.write(REAPER_NAME)


def reaper_collecting(pid: int) -> bool:
    """Whether dead ``pid`` waits, as a zombie, for a reaper that will record how it ended.

    The reaper reads the exit status without collecting the zombie, writes it, and only then
    collects it: so while the zombie exists the record is still to come."""
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
        parent = proc.ppid()
        return parent != os.getpid() and psutil.Process(parent).name() == REAPER_NAME
    except Exception:
        return False


def reap_when_done(process: Any) -> threading.Thread:
    """Collect ``process`` (a started ``multiprocessing`` process) as soon as it ends, from a daemon
    thread; returns the thread.

    A detached job's reaper is taken out of :mod:`multiprocessing`'s list of children, so that the
    app may exit while the job runs; that list is also what collects ended children (each new
    process started polls it), so nothing waited for the reaper and every one that finished stayed
    a zombie, ``[ralif-reaper] <defunct>``, for the life of the app. ``join`` waits through the
    process's own handle, which keeps its ``exitcode`` and ``is_alive`` true for its other users."""
    thread = threading.Thread(target=process.join, name=f"ralif-reap-{process.pid}", daemon=True)
    thread.start()
    return thread
