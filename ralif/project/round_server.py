"""A warm background process per project that runs its rounds one after another.

Starting a fresh Python process for every round costs about 1.3 s of interpreter and torch
start-up before any work, and reloads the pool's features each time. The round server is started
once (when the Label page opens, or with the first round) and then waits: ``Project.start_round``
only records the claim in the database and writes the round's status file, and the server, which
polls the database every few tens of milliseconds, picks the round up.

Failure isolation is that of a worker process: a round that raises is recorded as failed and the
server goes on serving; a server that dies (killed, out of memory) leaves the round's status file
naming a dead pid, which the app reports as failed on its next look, and the next round starts a
new server. The server leaves on its own after ``idle_s`` seconds without a round, or once the
process that started it is gone and it is idle.

Its own status file (``jobs/round-server.json``) is that of an ordinary background job whose phase
is ``idle``, ``round N`` or ``exiting``, and names the folder the server serves (``serves``): a
project folder copied while its server ran carries the original's file, whose pid is alive but
serves the original; the copy must start a server of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from ralif.project.dbfile import StoreError
from ralif.project.lifecycle import RoundBook, RoundState
from ralif.worker import (
    FINAL_STATES,
    BackgroundJob,
    JobCancelled,
    JobContext,
    job_for,
    pid_alive,
    process_start_time,
    read_status,
    start_job,
)

SERVER_STATUS = "round-server.json"
DEFAULT_IDLE_S = 900.0
_POLL_S = 0.05
# A spawned server reports within a second or two; one silent for longer than this never started.
_START_GRACE_S = 60.0


def server_status_path(folder: str | os.PathLike[str]) -> Path:
    return Path(folder) / "jobs" / SERVER_STATUS


def served_folder(folder: str | os.PathLike[str]) -> str:
    """The folder a server started for ``folder`` opens the project by (the server finds the
    database by this path)."""
    return str(Path(folder).expanduser().resolve())


def serves_folder(status: dict[str, Any], folder: str | os.PathLike[str]) -> bool | None:
    """Whether the server of ``status`` serves the project at ``folder``: the folder it names is
    that folder (another name for it counts too: a symbolic link, another spelling of the path).
    None for a record that names no folder (written before servers named theirs, or by a server
    still starting)."""
    served = status.get("serves")
    if not isinstance(served, str) or not served:
        return None
    try:
        return os.path.samefile(served, folder)
    except OSError:
        return False  # the folder it names is gone (moved, deleted): it serves nothing here


def server_alive(folder: str | os.PathLike[str]) -> bool:
    """Whether a round server for the project at ``folder`` runs and will take new rounds. A server
    of another folder (the record came with a copy of the project) does not count."""
    path = server_status_path(folder)
    try:
        status = read_status(path)
    except (OSError, ValueError):
        return False
    if status.get("cancel_requested") or status.get("phase") == "exiting":
        return False
    if status.get("state") == "queued":
        # Just spawned and not yet reporting: alive unless it never got going.
        return time.time() - float(status.get("created_at") or 0) < _START_GRACE_S
    if status.get("state") != "running":
        return False
    pid = status.get("pid")
    if pid is None or pid_alive(int(pid), status.get("pid_started_at")) is False:
        return False
    serves = serves_folder(status, folder)
    if serves is None and status.get("phase") == "starting":
        # The worker marks the job running a moment before the server names its folder; one
        # that stays unnamed past the grace is another folder's, caught starting by a copy.
        return time.time() - float(status.get("started_at") or status.get("created_at") or 0) < _START_GRACE_S
    # A record naming no folder comes from a server of an earlier version: its pid is all there is
    # to go by. Taking it for dead would start a second server on a folder it may well serve.
    return serves is not False


@contextlib.contextmanager
def _start_lock(folder: Path):
    # Two tabs (threads of one app) or two app processes opening the same project start one server.
    lock_path = folder / "jobs" / "round-server.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_server(folder: str | os.PathLike[str], idle_s: float = DEFAULT_IDLE_S) -> BackgroundJob | None:
    """Start the project's round server unless one is running; returns the new job, or None."""
    folder = Path(folder)
    if server_alive(folder):
        return None
    with _start_lock(folder):
        if server_alive(folder):
            return None
        path = server_status_path(folder)
        with contextlib.suppress(OSError, ValueError):
            # A server found dead without a final state gets one (failed, with how it died).
            if read_status(path).get("state") not in FINAL_STATES:
                job_for(path).status()
        return start_job("ralif.project.round_server:serve_rounds",
                         {"folder": str(folder), "idle_s": float(idle_s), "parent_pid": os.getpid(),
                          "parent_started": process_start_time(os.getpid())},
                         path, job_id="round-server", detached=True)


def stop_server(folder: str | os.PathLike[str], grace_s: float = 10.0) -> None:
    """Ask the project's round server to leave: at once when idle; a round it runs is stopped at its
    next check, or the server is killed after ``grace_s`` seconds (the round is then failed and can
    be run again)."""
    path = server_status_path(folder)
    if not path.is_file():
        return
    with contextlib.suppress(OSError, ValueError):
        if serves_folder(read_status(path), folder) is False:
            return  # another folder's server, named by a copied record: never stop (or kill) it
    job_for(path).cancel(grace_s=grace_s)


def _warm_up(book: RoundBook) -> None:
    """Pay the first round's one-off costs before it arrives: imports, the lazy set-up of the
    first torch operations, and loading the pool's precomputed features into memory."""
    from ralif.project.rounds import POOL_MEMO, apply_round_threads, held_out_features
    from ralif.strategies import warm_up

    settings = book.store.settings()
    apply_round_threads(settings)
    with contextlib.suppress(Exception):  # only a head start: the real round reports any error
        warm_up(str(settings.get("strategy")))
    with book.store.read() as conn:
        files = book.image_files(conn)  # the image list every round starts from
        latest = book.current_number(conn)
    encoder = str(settings.get("encoder") or "")
    if encoder.partition(":")[0].lower() == "precomputed" and settings.get("model") == "clip-linear":
        with contextlib.suppress(Exception):  # a bad file is the round's to report, with its reason
            from ralif.head import Standardizer

            feats, _ = POOL_MEMO.features(encoder, files.pool_paths, files.pool_hashes,
                                           book.folder / "cache", None, None)
            POOL_MEMO.standardizer(feats, Standardizer.fit)
            held_out_features(book.inputs(latest), book.folder / "cache")
    _freeze_loaded()


def _freeze_loaded() -> None:
    """What the server has loaded (the image list, its rows and paths: hundreds of thousands of
    objects at 50k images) lives as long as the server; left to the collector, each full collection
    walks all of it again, in the middle of a round."""
    gc.collect()
    gc.freeze()


def _run_one(book: RoundBook, number: int, job_path: str) -> dict[str, Any]:
    """Run round ``number`` reporting through its own status file, as a one-round worker would."""
    from ralif.project.rounds import RoundCancelled, apply_round_threads, failure_reason, run_next_round
    from ralif.worker import finish_job_status, started_status

    path = Path(job_path)
    ctx = JobContext(path, None, started_status(path))
    ctx.report(force=True)

    # Seconds per phase, kept in the round's status file: where a slow round spends its time.
    phases: dict[str, float] = {}
    current_phase = ["starting"]
    since = [time.perf_counter()]

    def report(phase: str, progress: dict[str, Any] | None = None) -> None:
        if phase != current_phase[0]:
            now = time.perf_counter()
            phases[current_phase[0]] = round(phases.get(current_phase[0], 0.0) + now - since[0], 3)
            current_phase[0], since[0] = phase, now
            ctx.set_field("phase_seconds", dict(phases))
        ctx.report(progress if progress is not None else {}, phase=phase)

    apply_round_threads(book.store.settings())
    try:
        result = run_next_round(book, report, ctx.should_stop, job_path=job_path)
    except BaseException as exc:
        cancelled = isinstance(exc, (RoundCancelled, JobCancelled)) or ctx.should_stop()
        # On a full disk the status file may not take the outcome either; the server must live on
        # to record it in the database once there is space (see ``serve_rounds``).
        with contextlib.suppress(OSError):
            finish_job_status(ctx, exc, cancelled)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return {"round": number, "state": "cancelled" if cancelled else "failed",
                "reason": failure_reason(exc)}
    ctx.finish("done", phase="done", result=result)
    return result


def _still_running(book: RoundBook, number: int, job_path: str) -> bool:
    """Whether round ``number`` is still recorded as running for this server (its failure could
    not be written); a read, which works on a full disk too."""
    try:
        row = book.store.query_one("SELECT status, job_path FROM rounds WHERE number = ?", (number,))
    except (StoreError, sqlite3.Error):
        return True
    return row is not None and row[0] == RoundState.RUNNING and row[1] == job_path


def _record_owed(book: RoundBook, owed: dict[int, tuple[str, str]]) -> None:
    """Write the failures the database could not take when they happened (full disk, read-only
    folder); a round is never left showing "running" once its cause is gone."""
    for number, (job_path, reason) in list(owed.items()):
        try:
            book.fail(number, reason, only_if_running=True, job_path=job_path)
        except (StoreError, sqlite3.Error):
            continue
        del owed[number]


def _take(book: RoundBook, number: int, job_path: str) -> bool:
    """Take the round, or fail it with why it cannot be taken (the database cannot be written, or
    it was queued in the folder this project was copied from)."""
    from ralif.project.rounds import failure_reason

    # A round that waited when the project folder was copied names the original's status file: the
    # original's server reports there.
    if not book.in_jobs_folder(job_path):
        with contextlib.suppress(StoreError, sqlite3.Error):
            book.fail(number, "the round was queued in the folder this project was copied from; run it again",
                      only_if_running=True, job_path=job_path)
        return False
    try:
        return book.take(number, job_path)
    except StoreError as exc:
        with contextlib.suppress(StoreError, sqlite3.Error):
            book.fail(number, failure_reason(exc), only_if_running=True, job_path=job_path)
        return False


def serve_rounds(job: JobContext, folder: str, idle_s: float = DEFAULT_IDLE_S,
                 parent_pid: int | None = None, parent_started: float | None = None) -> dict[str, Any]:
    """Job function of the round server: run queued rounds of the project at ``folder`` until idle.

    The server belongs to the process that started it (``parent_pid``, the app): once that is gone
    (stopped with SIGTERM, Ctrl-C or killed), the server finishes the round it runs, and any round
    already queued for it, then leaves instead of waiting ``idle_s``. A round is never cut short
    by the app stopping: its result is recorded and its batch waits for the next start."""
    import signal

    # Ctrl-C in the app's terminal reaches this process too; the app stopping is noticed below
    # (the parent is gone), and a round under way is finished rather than failed half-way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    job.set_field("serves", served_folder(folder))
    job.report({"rounds": 0}, phase="warming up", force=True)
    book = RoundBook.open(folder)
    warmed = book.queued_for_server() is None
    if warmed:
        _warm_up(book)
    served = 0
    last_work = time.monotonic()
    owed: dict[int, tuple[str, str]] = {}
    job.report({"rounds": 0}, phase="idle", force=True)
    while not job.should_stop():
        _record_owed(book, owed)
        try:
            queued = book.queued_for_server()
        except StoreError:
            queued = None   # e.g. the folder replaced or gone for a moment: look again shortly
        if queued is not None:
            number, job_path = queued
            job.report({"rounds": served}, phase=f"round {number}", force=True)
            if _take(book, number, job_path):
                outcome = _run_one(book, number, job_path)
                if not warmed:
                    # A round was waiting at start, so it ran first: what it loaded stays, as a warm-up's would.
                    _freeze_loaded()
                    warmed = True
                if outcome.get("state") == "failed" and _still_running(book, number, job_path):
                    owed[number] = (job_path, str(outcome.get("reason")))
                served += 1
            last_work = time.monotonic()
            job.report({"rounds": served}, phase="idle", force=True)
            continue
        orphaned = parent_pid is not None and pid_alive(parent_pid, parent_started) is False
        if orphaned or time.monotonic() - last_work > idle_s:
            # Say so first, then look once more: a round queued in between is served, never stranded.
            job.report({"rounds": served}, phase="exiting", force=True)
            if book.queued_for_server() is not None:
                job.report({"rounds": served}, phase="idle", force=True)
                last_work = time.monotonic()
                continue
            break
        time.sleep(_POLL_S)
    return {"rounds": served, "pid": os.getpid(), "pid_started_at": process_start_time(os.getpid())}
