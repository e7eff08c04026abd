"""Child side of the crash-safety test (``test_crash_safety.py``).

Run as a script, this is a fork server: it imports the library once (torch, Streamlit, the
encoder), then reads one JSON trial per line from stdin, forks a disposable child for it, waits
for the child (killing its process group with SIGKILL after ``kill_after`` seconds when asked)
and answers with one JSON line. Forking from a warm, single-threaded process makes a trial cost
milliseconds instead of the seconds a fresh interpreter with torch needs, and keeps the pytest
process (which may have threads) out of ``fork``.

A child runs one activity of a labeling session (labeling through the library and through the
grid component's event handler, a round, exports) with kill points armed: every file write,
fsync, rename, copy, unlink and folder swap or removal, every SQL statement of a write
transaction and the moment after its commit, the moment between two events of one page run of
the grid, and the moment between a label call returning and its acknowledgement. Kill points
are counted per (phase, kind); a trial may name one, and the child SIGKILLs itself there, after
writing part of the data when the point is inside a write, so that torn files are produced
wherever they can be. Everything the child wants the parent to know (phases, operations and
their acknowledgements, where it was killed) is appended to a log file with single ``os.write``
calls, which survive the SIGKILL that follows them.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import random
import select
import shutil
import signal
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

ENCODER_SPEC = "resnet18-32:none"
# Small shards make a tiny pool commit several shards, so a killed extraction can leave some
# committed and some not.
SHARD_SIZE = 16
# A child that neither finishes nor is killed by then is stuck; the parent fails the test.
HANG_S = 120.0


# ----------------------------------------------------------------------------- kill points


class KillPoints:
    """Counts instrumented points per (phase, kind) and SIGKILLs the process at the chosen one."""

    def __init__(self, log_fd: int, kill: dict[str, Any] | None) -> None:
        self.log_fd = log_fd
        self.pid = os.getpid()
        self.phase = "start"
        self.counts: Counter[str] = Counter()
        # Grid events followed, in the same page run, by another answer for the same image.
        self.repeated: set[str] = set()
        self.target = None if not kill else (kill["phase"], kill["kind"], int(kill["k"]))

    def log(self, entry: str, **fields: Any) -> None:
        os.write(self.log_fd, (json.dumps({"t": entry, "at": time.time(), **fields}) + "\n").encode())

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.log("phase", phase=phase)

    def tick(self, kind: str, torn: Any = None) -> None:
        # Processes forked by the child (DataLoader workers) inherit the hooks but are not the
        # process whose crash is being simulated.
        if os.getpid() != self.pid:
            return
        key = f"{self.phase}|{kind}"
        self.counts[key] += 1
        if self.target is not None and self.target == (self.phase, kind, self.counts[key]):
            if torn is not None:
                torn()
            self.log("kill", phase=self.phase, kind=kind, k=self.counts[key])
            os.killpg(0, signal.SIGKILL)
            time.sleep(60)


class _HookedFile:
    """A file opened for writing whose every ``write`` is a kill point; killed there, it writes
    the first half of the data first, leaving a torn file."""

    def __init__(self, f: Any, points: KillPoints) -> None:
        self._f = f
        self._points = points

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")

        def torn() -> None:
            self._f.write(view[: len(view) // 2])
            self._f.flush()

        self._points.tick("write", torn)
        return self._f.write(data)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class _TickingConnection:
    """A connection inside a write transaction: each statement is a kill point (mid-transaction)."""

    def __init__(self, conn: Any, points: KillPoints) -> None:
        self._conn = conn
        self._points = points

    def execute(self, *args: Any) -> Any:
        self._points.tick("sql")
        return self._conn.execute(*args)

    def executemany(self, *args: Any) -> Any:
        self._points.tick("sql")
        return self._conn.executemany(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def install_hooks(points: KillPoints) -> None:
    """Arm the kill points in this (forked, disposable) process."""
    import builtins

    import ralif.atomic
    from ralif.project.lifecycle import RoundBook
    from ralif.project.store import Store

    real_open = builtins.open

    def hooked_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, mode, *args, **kwargs)
        return _HookedFile(f, points) if "w" in mode else f

    # Module globals shadow builtins: only the atomic writer's files are hooked.
    ralif.atomic.open = hooked_open  # type: ignore[attr-defined]

    def wrap(obj: Any, name: str, kind: str, after: bool = False) -> None:
        real = getattr(obj, name)

        @functools.wraps(real)
        def hooked(*args: Any, **kwargs: Any) -> Any:
            points.tick(kind)
            out = real(*args, **kwargs)
            if after:
                points.tick(kind + "-done")
            return out

        setattr(obj, name, hooked)

    wrap(ralif.atomic, "_exchange", "exchange", after=True)
    wrap(os, "fsync", "fsync")
    wrap(os, "replace", "replace", after=True)
    wrap(os, "unlink", "unlink")
    wrap(shutil, "rmtree", "rmtree")

    real_copy2 = shutil.copy2

    def copy2(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        def torn() -> None:
            target = Path(dst) / Path(src).name if Path(dst).is_dir() else Path(dst)
            data = Path(src).read_bytes()
            with real_open(target, "wb") as f:
                f.write(data[: len(data) // 2])

        points.tick("copy", torn)
        return real_copy2(src, dst, *args, **kwargs)

    shutil.copy2 = copy2

    real_write = Store.write

    @contextlib.contextmanager
    def write(self: Store) -> Any:
        with real_write(self) as conn:
            yield _TickingConnection(conn, points)
        points.tick("commit")   # committed, the caller not told yet

    Store.write = write  # type: ignore[method-assign]

    def phased(name: str, phase_of: Any) -> None:
        real = getattr(RoundBook, name)

        @functools.wraps(real)
        def hooked(self: RoundBook, *args: Any, **kwargs: Any) -> Any:
            phase = phase_of(*args)
            if phase is not None and phase != points.phase:
                points.set_phase(phase)
            return real(self, *args, **kwargs)

        setattr(RoundBook, name, hooked)

    import ralif.ui.grid

    real_apply_one = ralif.ui.grid._apply_one

    def apply_one(project: Any, ev: dict[str, Any], *args: Any) -> None:
        real_apply_one(project, ev, *args)
        # Applied and committed, not acknowledged: the page resends it after a restart.
        points.tick("event-repeated" if ev.get("id") in points.repeated else "event")

    ralif.ui.grid._apply_one = apply_one

    phased("claim", lambda *a: "claim")
    phased("set_phase", lambda number, phase: phase)
    phased("finish", lambda *a: "finishing")


# ----------------------------------------------------------------------------- activities


def _value(state: Any) -> list[Any]:
    """A label as the parent compares it: [state, class id]."""
    return [state.state, state.class_id]


class Labeler:
    """A user labeling the pending batch, through the library and through the grid's handler."""

    def __init__(self, project: Any, spec: dict[str, Any], points: KillPoints) -> None:
        from ralif.ui.grid import TabMemory, store_key

        self.project = project
        self.spec = spec
        self.points = points
        self.rng = random.Random(spec["seed"])
        self.memory = TabMemory()
        self.grid_key = "crash-grid"
        self.store_key = store_key(project, self.grid_key)
        rows = project.store.query("SELECT id, true_class_id FROM images WHERE split = 'pool' ORDER BY id")
        self.truth = {int(r[0]): r[1] for r in rows}
        self.classes = [c.id for c in project.classes()]
        self.value: dict[int, list[Any]] = {}
        self.version: dict[int, int] = {}
        for row in project.images_page("all", limit=10**9):
            self.value[row.image_id] = _value(row.label)
            self.version[row.image_id] = row.label.version
        self.seq = 0
        self.events = 0

    # -- bookkeeping shared with the parent ---------------------------------------------------
    def _op(self, kind: str, effects: dict[int, list[Any]], **extra: Any) -> int:
        self.seq += 1
        self.points.log("op", seq=self.seq, kind=kind, effects={str(k): v for k, v in effects.items()}, **extra)
        return self.seq

    def _ack(self, seq: int) -> None:
        self.points.tick("ack")
        self.points.log("ack", seq=seq)

    def _undo_effects(self) -> dict[int, list[Any]] | None:
        """What undo should bring back: the values this tab's last undoable action replaced (None:
        nothing to undo). Replayed answers that found their value already in place wrote nothing,
        so the database's action log, not this process's memory, says which action is last."""
        from ralif.project.validation import UNDOABLE

        marks = ",".join("?" * len(UNDOABLE))
        act = self.project.store.query_one(
            f"SELECT id FROM actions WHERE client = ? AND kind IN ({marks}) AND undone_by IS NULL"
            " AND undo_of IS NULL ORDER BY id DESC LIMIT 1", (self.spec["client"], *UNDOABLE))
        if act is None:
            return None
        rows = self.project.store.query("SELECT image_id, old_state, old_class_id FROM label_history"
                                        " WHERE action_id = ? ORDER BY id", (act[0],))
        return {int(i): ["unlabeled", None] if s in (None, "cleared") else [s, c] for i, s, c in rows}

    def _target(self, image_id: int) -> int | None:
        truth = self.truth.get(image_id)
        if truth is None or self.rng.random() < 0.15:
            return self.rng.choice(self.classes)
        return int(truth)

    def _batch(self) -> list[int]:
        batch = [b.image_id for b in self.project.pending_batch()]
        if batch:
            return batch
        # No pending batch (a round is queued): label from the image pages instead.
        return self.rng.sample(sorted(self.value), min(10, len(self.value)))

    def _new_value(self, image_id: int, current: list[Any]) -> list[Any]:
        """An answer that changes the image's label from ``current``."""
        while True:
            r = self.rng.random()
            new = ["unsure", None] if r < 0.1 else ["unlabeled", None] if r < 0.17 else \
                ["labeled", self._target(image_id)]
            if new != current:
                return new

    # -- operations ------------------------------------------------------------------------------
    def library_set(self, image_id: int, new: list[Any]) -> None:
        seq = self._op("library", {image_id: new})
        if new[0] == "unlabeled":
            res = self.project.unlabel(image_id, expected_version=self.version[image_id])
        else:
            res = self.project.label(image_id, new[1], expected_version=self.version[image_id])
        if [res.state, res.class_id] != new or res.conflict:
            raise AssertionError(f"label({image_id}, {new}) returned {res}")
        self.version[image_id] = res.version
        self.value[image_id] = new
        self._ack(seq)

    def grid_call(self, events: list[dict[str, Any]], effects: list[dict[int, list[Any]]]) -> None:
        """One page run of the app: the component's outbox applied, then acknowledged."""
        from ralif.ui.grid import apply_events

        seqs = [self._op("grid", eff, event=ev) for ev, eff in zip(events, effects)]
        self.points.repeated = {a["id"] for a, b in itertools.pairwise(events)
                                if "image_id" in a and a.get("image_id") == b.get("image_id")}
        applied = apply_events(self.project, {"outbox": events, "store": self.store_key}, self.memory,
                               self.grid_key)
        errors = [text for kind, text in applied.messages if kind == "error"]
        if errors:
            raise AssertionError(f"the grid refused {events}: {errors}")
        acked = set(applied.acked)
        for ev, seq in zip(events, seqs):
            if ev["id"] in acked:
                self._ack(seq)
        # The page is drawn again: the grid now shows the current labels and versions.
        for eff in effects:
            for i in eff:
                state = self.project.label_of(i)
                self.value[i], self.version[i] = _value(state), state.version

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.events += 1
        return {"id": f"{self.spec['client']}-{self.events}", "type": kind, **fields}

    def grid_op(self, batch: list[int]) -> None:
        """What the user typed between two page runs: events carry the versions the page showed."""
        events: list[dict[str, Any]] = []
        effects: list[dict[int, list[Any]]] = []
        for _ in range(self.rng.choice((1, 2, 2, 3))):
            r = self.rng.random()
            undo = self._undo_effects() if r < 0.12 and not events else None
            if undo is not None:
                events.append(self._event("undo"))
                effects.append(undo)
                break
            if r < 0.22:
                ids = self.rng.sample(batch, min(len(batch), self.rng.randint(2, 3)))
                cid = self.rng.choice(self.classes)
                events.append(self._event("bulk", image_ids=ids, class_id=cid))
                effects.append({i: ["labeled", cid] for i in ids})
                continue
            # A second answer for the image just answered (a corrected key press).
            again = events and r < 0.6 and "image_id" in events[-1]
            image_id = int(events[-1]["image_id"]) if again else self.rng.choice(batch)
            new = self._new_value(image_id, effects[-1][image_id] if again else self.value[image_id])
            if new[0] == "unlabeled":
                events.append(self._event("clear", image_id=image_id, version=self.version[image_id]))
            else:
                events.append(self._event("label", image_id=image_id, class_id=new[1],
                                          version=self.version[image_id]))
            effects.append({image_id: new})
        self.grid_call(events, effects)

    def replay(self, events: list[dict[str, Any]]) -> None:
        """What a reloaded page does first: resend the actions the dead app never acknowledged
        (the component resends label, clear and bulk events, marked as replays)."""
        events = [dict(e, replay=True) for e in events if e["type"] not in ("undo", "submit")]
        if not events:
            return
        effects = []
        for ev in events:
            if ev["type"] == "bulk":
                effects.append({int(i): ["labeled", ev["class_id"]] for i in ev["image_ids"]})
            elif ev["type"] == "clear":
                effects.append({int(ev["image_id"]): ["unlabeled", None]})
            elif ev["class_id"] is None:
                effects.append({int(ev["image_id"]): ["unsure", None]})
            else:
                effects.append({int(ev["image_id"]): ["labeled", ev["class_id"]]})
        self.grid_call(events, effects)

    def submit(self) -> None:
        number = self.project.pending_round()
        if number is None:
            return
        self.points.set_phase("submit")
        seq = self._op("submit", {}, round=number)
        new = self.project.submit_batch()
        if new != number + 1:
            raise AssertionError(f"submit_batch returned {new} for round {number}")
        self._ack(seq)
        self.points.set_phase("labeling")

    def run(self) -> None:
        self.points.set_phase("labeling")
        self.replay(self.spec.get("replay") or [])
        batch = self._batch()
        for _ in range(int(self.spec.get("ops", 0))):
            if self.rng.random() < 0.45:
                image_id = self.rng.choice(batch)
                self.library_set(image_id, self._new_value(image_id, self.value[image_id]))
            else:
                self.grid_op(batch)
        if self.spec.get("finish") and self.project.pending_round() is not None:
            # The rest of the batch answered, then the batch submitted.
            for image_id in batch:
                if self.value[image_id][0] == "unlabeled":
                    self.library_set(image_id, ["labeled", self._target(image_id)])
            self.submit()


def run_exports(project: Any, spec: dict[str, Any], points: KillPoints) -> None:
    exports = project.folder / "exports"
    for kind in spec["exports"]:
        points.set_phase(f"export-{kind}")
        if kind == "csv":
            project.export_csv(exports / "labels.csv")
        elif kind == "json":
            project.export_json(exports / "labels.json")
        elif kind == "imagefolder":
            project.export_imagefolder(exports / "imagefolder", overwrite=True)
        elif kind == "model":
            project.export_model(exports / "model", overwrite=True)
        else:
            raise ValueError(kind)
        points.log("exported", what=kind)


def run_round(project: Any, points: KillPoints) -> None:
    result = project.run_round()
    points.set_phase("after-round")
    points.log("round", result=result)


# ----------------------------------------------------------------------------- processes


def child(spec: dict[str, Any]) -> None:
    """A forked child: run one activity and exit; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        # The server's stdin/stdout carry its protocol; a child must not touch them.
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        log_fd = os.open(spec["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        points = KillPoints(log_fd, spec.get("kill"))
        try:
            import torch

            torch.set_num_threads(1)
            random.seed(spec["seed"])
            install_hooks(points)
            from ralif.project import Project

            project = Project.open(spec["folder"], client=spec["client"])
            if spec["activity"] == "labeling":
                Labeler(project, spec, points).run()
            elif spec["activity"] == "round":
                run_round(project, points)
            elif spec["activity"] == "export":
                run_exports(project, spec, points)
            else:
                raise ValueError(f"unknown activity {spec['activity']!r}")
            points.log("done", counts=dict(points.counts))
            code = 0
        except BaseException:  # reported to the parent, which fails the test
            points.log("error", traceback=traceback.format_exc())
    finally:
        os._exit(code)


def _exited_within(pid: int, seconds: float) -> bool:
    """Whether the child ``pid`` ends within ``seconds`` (it is not reaped here)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):   # no pidfd (kernel before 5.3): poll
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.002)
        return False
    try:
        return bool(select.select([fd], [], [], seconds)[0])
    finally:
        os.close(fd)


def _wait(pid: int, kill_after: float | None) -> dict[str, Any]:
    timer = hung = False
    if not _exited_within(pid, HANG_S if kill_after is None else float(kill_after)):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            os.kill(pid, signal.SIGKILL)
        timer, hung = kill_after is not None, kill_after is None
    _, status = os.waitpid(pid, 0)
    return {"pid": pid, "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None, "timer": timer, "hung": hung}


def warm_up() -> None:
    """One short session on a throwaway project, so that what children would otherwise import or
    initialise lazily (psutil, safetensors, optimisers, strategies) is in place before forking."""
    import tempfile

    import numpy as np
    from PIL import Image

    from ralif.project import Project
    from ralif.project.store import DB_NAME, release
    from ralif.ui.grid import TabMemory, apply_events, store_key

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for c in ("a", "b"):
            for i in range(6):
                (Path(tmp) / "images" / c).mkdir(parents=True, exist_ok=True)
                arr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(arr).save(Path(tmp) / "images" / c / f"{i}.png")
        project = Project.create(Path(tmp) / "p", Path(tmp) / "images", encoder=ENCODER_SPEC, batch_size=4,
                                 known_labels="truth", simulated_oracle=True, layout="imagefolder")
        project.run_round()
        for image_id, truth in project.store.query("SELECT MIN(id), true_class_id FROM images GROUP BY 2"):
            project.label(image_id, truth)
        project.oracle_label_batch()
        item = project.pending_batch()[0]
        apply_events(project, {"outbox": [{"id": "w", "type": "label", "image_id": item.image_id,
                                           "class_id": None, "version": item.label.version}],
                               "store": store_key(project, "g")}, TabMemory(), "g")
        project.undo_last()
        project.submit_batch()
        project.run_round()
        project.round_status()
        for kind in ("csv", "json", "imagefolder", "model"):
            getattr(project, f"export_{kind}")()
        release(project.folder / DB_NAME)


def serve() -> None:
    import psutil
    import torch

    torch.set_num_threads(1)
    import ralif.encoders
    import ralif.feature_cache
    import ralif.project.exports
    import ralif.project.rounds
    import ralif.ui.grid  # the app's write path, imported before forking

    # Built once here and inherited by every child, as a long-running app keeps its encoder.
    encoder = ralif.encoders.build_encoder(ENCODER_SPEC, device="cpu")
    real_build = ralif.encoders.build_encoder

    def build_encoder(spec: str, device: Any = None) -> Any:
        return encoder if spec.strip() == ENCODER_SPEC else real_build(spec, device)

    ralif.encoders.build_encoder = build_encoder
    ralif.feature_cache.fill_cache = functools.partial(ralif.feature_cache.fill_cache, shard_size=SHARD_SIZE)
    warm_up()

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    # Threads of the process, not only Python's: fork() copies the calling thread alone.
    reply({"ready": True, "threads": psutil.Process().num_threads(), "encoder_id": encoder.id})
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            child(spec)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)   # also done by the child: whichever runs first wins the race
        out = _wait(pid, spec.get("kill_after"))
        out["seconds"] = time.monotonic() - start
        reply(out)


if __name__ == "__main__":
    serve()
