"""Crash safety of a labeling session: SIGKILL at many random points, restart, check everything.

A small project (tiny generated images, a fixed-seed random ResNet-18 encoder through the feature
cache, batches of 10) is driven through labeling (library calls and the grid component's event
handler, with the replays a reloaded page sends), rounds (feature extraction, training, selection,
checkpoint) and exports, one disposable child process per step. Most steps are killed with
SIGKILL, either at a randomly chosen instrumented point (inside a file write, before an fsync or
rename, inside a database transaction, between a commit and its acknowledgement; see
``crash_child.py``) or after a random delay. After every step the project is reopened as a
restarted app would, and checked:

* the database passes ``integrity_check``; every acknowledged label is there with its class and
  nothing else changed; of the operations in flight, a prefix took effect, each one whole;
* round bookkeeping: the statuses form a valid history, a round left running by the dead process
  is reported failed (and is retried by a later step), a ready batch has ``batch_size`` images;
* every checkpoint file parses and the checkpoints of finished rounds load (weights match their
  sidecar), the current model loads;
* every committed feature-cache shard loads and holds the features a fresh extraction gives;
* every export is absent (never made), the previous complete one or the new complete one.

Every failure message names the RNG seed; ``RALIF_CRASH_SEED`` sets it, which replays the same
schedule of steps and kill points (kills after a delay land wherever timing puts them).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ralif.project import Project
from ralif.project.exports import safe_folder_name
from ralif.project.rounds import load_model
from ralif.project.store import DB_NAME, ROUND_STATUSES, release

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(os, "waitid"),
                                reason="needs fork and waitid (POSIX)")

CHILD = Path(__file__).resolve().parent / "crash_child.py"
SEED = int(os.environ.get("RALIF_CRASH_SEED", "20250611"))
# SIGKILLs wanted per activity (at least 100 in all).
KILLS = {"labeling": 24, "extraction": 22, "training": 20, "selection": 20, "export": 22}
MAX_TRIALS = 420
BATCH = 10
KEEP_MODELS = 2
COLORS = {"amber": (230, 160, 30), "blue": (40, 70, 220), "green": (40, 180, 60), "violet": (150, 50, 200)}
POOL_PER_CLASS, TEST_PER_CLASS, EXTRA_PER_CLASS, EXTRA_CHUNKS = 50, 6, 4, 12
# Which activity a phase of the child belongs to (claiming the round and reading its inputs start
# the training job; writing the batch to the database ends the selection).
ACTIVITY = {"labeling": "labeling", "submit": "labeling", "claim": "training", "extracting": "extraction",
            "training": "training", "saving": "training", "selecting": "selection", "finishing": "selection",
            "export-csv": "export", "export-json": "export",
            "export-imagefolder": "export", "export-model": "export"}
PHASES = {a: [p for p, b in ACTIVITY.items() if b == a] for a in KILLS}
# Kill points aimed at more often: the gap between two answers of one page run, where a restart
# makes the page resend both.
WEIGHT = {"event-repeated": 3}
CHECKPOINT = re.compile(r"round-\d{4}\.(safetensors|json)")


def _image(path: Path, color: tuple[int, int, int], rng: np.random.Generator) -> None:
    arr = np.clip(np.array(color) + rng.normal(0, 35, (16, 16, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _make_images(root: Path) -> tuple[Path, list[Path]]:
    rng = np.random.default_rng(SEED)
    for name, color in COLORS.items():
        for i in range(POOL_PER_CLASS):
            _image(root / "base" / "train" / name / f"{name}-{i:03d}.png", color, rng)
        for i in range(TEST_PER_CLASS):
            _image(root / "base" / "test" / name / f"{name}-t{i:03d}.png", color, rng)
    chunks = []
    for c in range(EXTRA_CHUNKS):
        for name, color in COLORS.items():
            for i in range(EXTRA_PER_CLASS):
                _image(root / f"extra-{c:02d}" / name / f"{name}-x{c:02d}{i:02d}.png", color, rng)
        chunks.append(root / f"extra-{c:02d}")
    return root / "base", chunks


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ForkServer:
    """``crash_child.py`` running as a fork server: one JSON trial in, one JSON result out."""

    def __init__(self, stderr_path: Path) -> None:
        self.stderr = open(stderr_path, "w")  # noqa: SIM115 - open for the server's lifetime
        self.proc = subprocess.Popen([sys.executable, str(CHILD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1,
                                     env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        self.hello = self._read()
        assert self.hello.get("ready"), self.hello
        # fork() copies only the calling thread; the server must have no other.
        assert self.hello["threads"] == 1, self.hello

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.flush()
            raise AssertionError(f"the fork server died: {Path(self.stderr.name).read_text()[-3000:]}")
        return json.loads(line)

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()     # the server ends when its input does
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self.stderr.close()


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    # Every line was written by one write() call before any kill, so none is torn.
    return [json.loads(line) for line in path.read_text().splitlines()]


def _db_labels(folder: Path) -> dict[int, list[Any]]:
    conn = sqlite3.connect(folder / DB_NAME)
    try:
        rows = conn.execute("SELECT i.id, l.state, l.class_id FROM images i LEFT JOIN labels l"
                            " ON l.image_id = i.id WHERE i.split = 'pool'").fetchall()
    finally:
        conn.close()
    return {int(i): (["unlabeled", None] if s in (None, "cleared") else [s, c]) for i, s, c in rows}


class Session:
    """The parent: schedules the trials, keeps what was acknowledged, checks after every trial."""

    def __init__(self, tmp: Path) -> None:
        from ralif.encoders import build_encoder

        self.tmp = tmp
        self.rng = random.Random(SEED)
        base, self.chunks = _make_images(tmp / "images")
        project = Project.create(tmp / "project", base, encoder="resnet18-32:none", known_labels="truth",
                                 batch_size=BATCH, layout="imagefolder", simulated_oracle=True, seed=SEED % 1000,
                                 l2=1.0)   # well conditioned: the head trains in a few steps
        project.update_settings(keep_models=KEEP_MODELS)
        self.folder = project.folder
        release(self.folder / DB_NAME)
        self.server = ForkServer(tmp / "server.err")
        self.encoder = build_encoder("resnet18-32:none", device="cpu")
        assert self.encoder.id == self.server.hello["encoder_id"]
        self.expected = _db_labels(self.folder)
        self.outbox: list[dict[str, Any]] = []       # grid events the dead app never acknowledged
        self.exports: dict[str, Any] = {}            # last complete export seen, per kind
        self.checked_shards: set[str] = set()
        self.kills: Counter[str] = Counter()
        self.kill_kinds: Counter[str] = Counter()
        self.trials = 0
        self.timer_kills = 0
        self.calibration: dict[str, dict[str, float]] = {}   # kill points per phase and kind
        self.tried: set[tuple[str, str, int]] = set()        # kill points aimed at so far
        self.durations: dict[str, float] = {}
        self.extract_seconds = 0.01        # per image, learned from the first extraction
        # Images a round could pick (never labeled, not skipped) when it ran, per round number.
        self.candidates: dict[int, int] = {}

    # -- the project as a restarted app sees it ------------------------------------------------
    def reopen(self) -> Project:
        release(self.folder / DB_NAME)
        return Project.open(self.folder)

    @staticmethod
    def latest_status(project: Project) -> str:
        row = project.store.query_one("SELECT status FROM rounds ORDER BY number DESC LIMIT 1")
        return str(row[0])

    def cache_dir(self) -> Path:
        from ralif.feature_cache import safe_dirname

        return self.folder / "cache" / safe_dirname(self.encoder.id)

    def missing_features(self, project: Project) -> int:
        from ralif.feature_cache import FeatureCache

        hashes = [r[0] for r in project.store.query("SELECT content_hash FROM images WHERE split = 'pool'")]
        if not self.cache_dir().is_dir():
            return len(hashes)
        cache = FeatureCache(self.folder / "cache", self.encoder.id)
        return sum(h not in cache for h in hashes)

    def warm(self, project: Project) -> bool:
        """Whether the next round trains a model (labels of two classes or more)."""
        row = project.store.query_one("SELECT COUNT(DISTINCT class_id) FROM labels l JOIN images i"
                                      " ON i.id = l.image_id WHERE l.state = 'labeled' AND i.split = 'pool'")
        return int(row[0]) >= 2

    # -- scheduling ------------------------------------------------------------------------------
    def need(self, activity: str) -> int:
        return KILLS[activity] - self.kills[activity]

    def pick_kill(self, activity: str, phases: list[str], missing: int = 0, ops: int = 0
                  ) -> tuple[dict | None, float | None]:
        """Where to kill a trial of ``activity``: an instrumented point in one of ``phases`` chosen at
        random (stratified by kind: writes, fsyncs, renames, statements, commits...), or a delay.
        ``missing``: images the round will extract; ``ops``: label operations the trial will do."""
        phases = [p for p in phases if self.need(ACTIVITY[p]) > 0]
        if not phases:
            return None, None
        choices: list[tuple[str, str, list[int]]] = []
        for phase in phases:
            for kind, n in self.calibration.get(phase, {}).items():
                # Extraction and labeling work follow the images to extract and the operations.
                n = math.ceil(n * (missing if phase == "extracting" else ops if phase == "labeling" else 1))
                # Points not tried yet come first, so that the few points of a short phase are all hit.
                fresh = [k for k in range(1, n + 1) if (phase, kind, k) not in self.tried]
                choices.append((phase, kind, fresh or list(range(1, n + 1))))
        choices = [c for c in choices if c[2]]
        if not choices or self.rng.random() < 0.22:
            limit = self.durations.get(activity, 0.5) + self.extract_seconds * missing
            return None, self.rng.uniform(0.0, max(0.05, limit))
        phase, kind, ks = self.rng.choices(choices, [WEIGHT.get(c[1], 1) for c in choices])[0]
        k = self.rng.choice(ks)
        self.tried.add((phase, kind, k))
        return {"phase": phase, "kind": kind, "k": k}, None

    def next_trial(self) -> dict[str, Any]:
        project = self.reopen()
        status = self.latest_status(project)
        spec: dict[str, Any] = {"folder": str(self.folder), "seed": self.rng.randrange(1 << 30),
                                "client": f"tab{self.trials:04d}"}
        round_needs = [a for a in ("extraction", "training", "selection") if self.need(a) > 0]
        if not self.warm(project):
            round_needs = [a for a in round_needs if a != "training"]
        options = ["labeling"] * (self.need("labeling") > 0) + ["export"] * (self.need("export") > 0)
        if status in ("queued", "failed"):
            options += ["round"] * (3 if round_needs else 0)
        else:
            options += ["progress"] * (2 if round_needs else 0)
        if self.outbox:
            options = ["labeling"]   # a reloaded page resends first
        choice = self.rng.choice(options or ["round" if status in ("queued", "failed") else "progress"])
        if choice == "labeling":
            ops = self.rng.randint(2, 10)
            spec.update(activity="labeling", replay=self.outbox, ops=ops,
                        finish=status == "ready" and self.rng.random() < 0.3)
            spec["kill"], spec["kill_after"] = self.pick_kill("labeling", PHASES["labeling"],
                                                              ops=ops + len(self.outbox))
        elif choice == "export":
            kinds = ["csv", "json", "imagefolder"] + (["model"] if project.current_model_path() else [])
            self.rng.shuffle(kinds)
            spec.update(activity="export", exports=kinds[: self.rng.randint(1, len(kinds))])
            spec["kill"], spec["kill_after"] = self.pick_kill("export", [f"export-{k}" for k in spec["exports"]])
        elif choice == "progress":
            # Move the session on: answer the rest of the batch and submit, no kill.
            spec.update(activity="labeling", ops=self.rng.randint(0, 3), finish=True, kill=None, kill_after=None)
        else:
            if "extraction" in round_needs and self.rng.random() < 0.5:
                round_needs = ["extraction"]
                if not self.missing_features(project):
                    self.make_extraction_work(project)
            elif "extraction" in round_needs and len(round_needs) > 1:
                round_needs.remove("extraction")
            missing = self.missing_features(project)
            spec.update(activity="round", missing=missing)
            phases = [p for a in round_needs for p in PHASES[a]]
            spec["kill"], spec["kill_after"] = self.pick_kill("round", phases, missing)
            if "extracting" not in self.calibration:
                # The first extraction runs whole: it shows where an extraction's kill points are.
                spec["kill"] = spec["kill_after"] = None
        return spec

    def make_extraction_work(self, project: Project) -> None:
        """New images to extract: a chunk added to the pool, or (chunks used up) the cache cleared."""
        if self.chunks:
            report = project.add_images(self.chunks.pop(0), known_labels="truth", layout="imagefolder")
            assert report.added == EXTRA_PER_CLASS * len(COLORS), report
            self.expected.update({i: v for i, v in _db_labels(self.folder).items() if i not in self.expected})
        else:
            import shutil

            shutil.rmtree(self.cache_dir())
            self.checked_shards.clear()

    # -- one trial ------------------------------------------------------------------------------
    def trial(self, spec: dict[str, Any]) -> None:
        self.trials += 1
        log_path = self.tmp / "logs" / f"trial-{self.trials:04d}.jsonl"
        log_path.parent.mkdir(exist_ok=True)
        spec["log"] = str(log_path)
        if spec["activity"] == "round":
            # Labels do not change while a round runs: what it may pick is known now.
            number = int(self.reopen().store.query_one("SELECT MAX(number) FROM rounds")[0])
            self.candidates[number] = sum(v[0] == "unlabeled" for v in self.expected.values())
        before = time.monotonic()
        result = self.server.run(spec)
        log = _read_log(log_path)
        errors = [e["traceback"] for e in log if e["t"] == "error"]
        assert not errors, f"seed {SEED}, trial {self.trials} ({spec['activity']}) failed in the child:\n{errors[0]}"
        assert not result["hung"], f"seed {SEED}, trial {self.trials} hung: {spec}"
        killed = result["signal"] is not None
        if killed:
            assert result["signal"] == 9, result
            phases = [e["phase"] for e in log if e["t"] == "phase"]
            where = next((e for e in log if e["t"] == "kill"), None)
            phase = where["phase"] if where else (phases[-1] if phases else "start")
            # Killed before its first phase: the activity of the step; after the round returned: none.
            default = {"round": "training", "labeling": "labeling", "export": "export"}[spec["activity"]]
            activity = "after the round" if phase == "after-round" else ACTIVITY.get(phase, default)
            self.kills[activity] += 1
            self.kill_kinds[f"{activity}:{where['kind'] if where else 'timer'}"] += 1
            self.timer_kills += where is None
        else:
            assert result["code"] == 0, (result, log[-3:])
            self.learn(spec, log, time.monotonic() - before)
        self.check(spec, log, killed)

    def learn(self, spec: dict[str, Any], log: list[dict[str, Any]], seconds: float) -> None:
        """Kill points seen in a run that was not killed, per phase and kind: where later kills aim."""
        self.durations[spec["activity"]] = seconds
        per_phase: dict[str, dict[str, float]] = {}
        counts = next(e for e in log if e["t"] == "done")["counts"]
        for key, n in counts.items():
            phase, kind = key.split("|")
            per_phase.setdefault(phase, {})[kind] = n
        ops = sum(e["t"] == "op" for e in log)
        for phase, kinds in per_phase.items():
            if phase == "labeling":
                if not ops:
                    continue
                kinds = {k: n / ops for k, n in kinds.items()}
            if phase == "extracting":
                if spec.get("missing"):
                    self.calibration[phase] = {k: n / spec["missing"] for k, n in kinds.items()}
                    self.extract_seconds = seconds / spec["missing"]
                continue
            seen = self.calibration.setdefault(phase, {})
            for kind, n in kinds.items():
                seen[kind] = max(n, seen.get(kind, 0))

    # -- checks ----------------------------------------------------------------------------------
    def check(self, spec: dict[str, Any], log: list[dict[str, Any]], killed: bool) -> None:
        where = (f"seed {SEED}, trial {self.trials} ({spec['activity']}, kill "
                 f"{spec.get('kill') or spec.get('kill_after')})")
        db = self.folder / DB_NAME
        release(db)
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], where
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == [], where
        finally:
            conn.close()
        project = Project.open(self.folder)
        self.check_labels(project, log, where)
        self.check_rounds(project, log, killed, where)
        self.check_models(project, where)
        if spec["activity"] == "round":
            self.check_cache(project, where)
        if spec["activity"] == "export":
            self.check_exports(project, log, where)

    def check_labels(self, project: Project, log: list[dict[str, Any]], where: str) -> None:
        ops: dict[int, dict[str, Any]] = {}
        acked: list[int] = []
        for e in log:
            if e["t"] == "op":
                ops[e["seq"]] = e
            elif e["t"] == "ack":
                acked.append(e["seq"])
        assert acked == sorted(acked), where
        expected = dict(self.expected)
        for seq in acked:
            expected.update({int(k): v for k, v in ops[seq]["effects"].items()})
        in_flight = [ops[s] for s in sorted(ops) if s not in set(acked)]
        assert all(s > max(acked, default=0) for s in (o["seq"] for o in in_flight)), where
        actual = _db_labels(self.folder)
        # Of the operations in flight when the process died, a prefix took effect, each one whole.
        candidate = dict(expected)
        matched = candidate == actual
        for op in in_flight:
            if matched:
                break
            candidate.update({int(k): v for k, v in op["effects"].items()})
            matched = candidate == actual
        if not matched:
            touched = {int(k) for o in in_flight for k in o["effects"]}
            differ = {i: (expected[i], actual.get(i)) for i in expected if expected[i] != actual.get(i)}
            lost = {i: d for i, d in differ.items() if i not in touched}
            assert not lost, (f"{where}: acknowledged labels lost (image: (acknowledged, found)): {lost}; "
                              f"operations of this step: {[o.get('event') or o for o in ops.values()]}")
            flight = [(o.get("event") or o["kind"], {k: actual[int(k)] for k in o["effects"]}) for o in in_flight]
            raise AssertionError(f"{where}: of the operations in flight, not a prefix took effect, or one took "
                                 f"effect in part. Acknowledged and found: {differ}; in flight (operation, what "
                                 f"its images hold now): {flight}")
        self.expected = actual
        self.outbox = [o["event"] for o in in_flight if o["kind"] == "grid"]
        for seq in acked:
            if ops[seq]["kind"] == "submit":
                row = project.store.query_one("SELECT status FROM rounds WHERE number = ?", (ops[seq]["round"],))
                assert row[0] == "submitted", where

    def check_rounds(self, project: Project, log: list[dict[str, Any]], killed: bool, where: str) -> None:
        rows = project.rounds()
        assert [r["number"] for r in rows] == list(range(1, len(rows) + 1)), where
        assert all(r["status"] in ROUND_STATUSES for r in rows), where
        assert all(r["status"] == "submitted" for r in rows[:-1]), (where, [r["status"] for r in rows])
        last = rows[-1]
        assert last["status"] != "submitted", where
        if last["status"] == "running":
            # Left running by the process that was killed: reported failed, retryable.
            assert killed, where
            status = project.round_status()
            assert status["status"] == "failed" and status["error"], (where, status)
            assert project.rounds()[-1]["status"] == "failed", where
        if any(e["t"] == "round" for e in log):
            # The round this step ran (a retry, often) completed: its batch holds only images that
            # had no answer (labels do not change during a round step).
            assert project.rounds()[-1]["status"] == "ready", where
            batch = [b.image_id for b in project.pending_batch()]
            assert all(self.expected[i] == ["unlabeled", None] for i in batch), where
        for r in project.rounds():
            sel = project.store.query("SELECT s.image_id, s.rank, i.split FROM selections s JOIN images i"
                                      " ON i.id = s.image_id WHERE s.round = ? ORDER BY s.rank", (r["number"],))
            if r["status"] in ("ready", "submitted"):
                # A full batch, or every candidate when fewer are left.
                size = min(BATCH, self.candidates[r["number"]])
                assert [s[1] for s in sel] == list(range(1, size + 1)), (where, r["number"], len(sel))
                assert len({s[0] for s in sel}) == size and all(s[2] == "pool" for s in sel), where
            else:
                assert not sel, (where, r)
        if last["status"] == "ready":
            size = min(BATCH, self.candidates[last["number"]])
            assert len(project.pending_batch()) == size == project.progress().pending, where
        finished = [r for r in project.rounds() if r["status"] in ("ready", "submitted") and r["model_path"]]
        current = project.store.get_setting("current_model")
        assert current == (finished[-1]["model_path"] if finished else None), (where, current)
        if current:
            model = project.load_model()
            assert model.meta["round"] == finished[-1]["number"], where

    def check_models(self, project: Project, where: str) -> list[str]:
        """Every checkpoint file parses; a sidecar (written after the weights, so it marks a complete
        save) of a finished round has its weights, matching. Returns the uncommitted leftovers:
        weights whose sidecar is not there (yet, or any more)."""
        from safetensors.torch import load as st_load

        models = self.folder / "models"
        status = {f"round-{r['number']:04d}": r["status"] for r in project.rounds()}
        leftovers = []
        for entry in sorted(models.iterdir()):
            if entry.name.startswith("."):
                continue   # a temporary of an interrupted write; never read
            assert CHECKPOINT.fullmatch(entry.name), (where, entry.name)
            if entry.suffix == ".safetensors":
                st_load(entry.read_bytes())              # torn weights fail here
                if not entry.with_suffix(".json").exists():
                    leftovers.append(entry.name)
                continue
            meta = json.loads(entry.read_text())         # and a torn sidecar here
            assert meta["format"] == "ralif-linear-head" and meta["round"] == int(entry.stem[6:]), where
            if status.get(entry.stem) in ("ready", "submitted"):
                assert entry.with_suffix(".safetensors").is_file(), \
                    f"{where}: {entry.name} describes weights that are gone (a half-deleted checkpoint)"
                load_model(entry)                        # the weights match the sidecar's checksum
        return leftovers

    def check_cache(self, project: Project, where: str) -> None:
        from ralif.encoders import extract_features
        from ralif.feature_cache import FeatureCache
        from ralif.images import ImageList

        folder = self.cache_dir()
        if not folder.is_dir():
            return
        if (folder / "meta.json").exists():
            meta = json.loads((folder / "meta.json").read_text())
            assert meta["encoder_id"] == self.encoder.id and meta["dim"] == self.encoder.dim, where
        committed = sorted(p.name[: -len(".keys.npy")] for p in folder.glob("*.keys.npy") if not p.name.startswith("."))
        rows = {}
        for name in committed:
            # A committed shard (its keys file exists) must be whole: features first, keys last.
            keys = np.load(folder / f"{name}.keys.npy", allow_pickle=False)
            feats = np.load(folder / f"{name}.npy", allow_pickle=False)
            assert keys.dtype == np.uint8 and keys.shape[1] == 32, (where, name)
            assert feats.dtype == np.float32 and feats.shape == (len(keys), self.encoder.dim), (where, name)
            rows[name] = (keys, feats)
        cache = FeatureCache(self.folder / "cache", self.encoder.id, dim=self.encoder.dim)
        assert sorted(cache.shards) == committed, where
        paths = {r[0]: r[1] for r in project.store.query("SELECT content_hash, path FROM images")}
        sample_hashes, sample_feats = [], []
        for name in committed:
            if name in self.checked_shards:
                continue
            keys, feats = rows[name]
            for j in self.rng.sample(range(len(keys)), min(2, len(keys))):
                sample_hashes.append(keys[j].tobytes().hex())
                sample_feats.append(feats[j])
            self.checked_shards.add(name)
        if sample_hashes:
            images = ImageList(paths=[paths[h] for h in sample_hashes], labels=np.full(len(sample_hashes), -1),
                               classes=[], hashes=sample_hashes)
            fresh = extract_features(self.encoder, images, num_workers=0, progress=lambda d, t: None)
            assert np.allclose(np.stack(sample_feats), fresh, rtol=1e-4, atol=1e-5), where
            got, missing = cache.get_many(sample_hashes)
            assert not missing.any() and np.allclose(got, fresh, rtol=1e-4, atol=1e-5), where

    def expected_exports(self, project: Project) -> dict[str, Any]:
        rows = project.store.query(
            "SELECT i.id, i.path, c.name, c.id FROM labels l JOIN images i ON i.id = l.image_id"
            " JOIN classes c ON c.id = l.class_id WHERE l.state = 'labeled' ORDER BY i.id")
        table = [[int(r[0]), r[1], r[2]] for r in rows]
        folder = {f"{safe_folder_name(r[2], f'class-{r[3]}')}/{os.path.basename(r[1])}": _sha(Path(r[1]))
                  for r in rows}
        model = project.current_model_path()
        return {"csv": table, "json": table, "imagefolder": folder,
                "model": _sha(model) if model else None}

    def read_export(self, kind: str, where: str) -> Any:
        exports = self.folder / "exports"
        if kind == "csv":
            path = exports / "labels.csv"
            if not path.exists():
                return None
            with open(path, newline="", encoding="utf-8") as f:
                return [[int(r["image_id"]), r["path"], r["label"]] for r in csv.DictReader(f)]
        if kind == "json":
            path = exports / "labels.json"
            if not path.exists():
                return None
            doc = json.loads(path.read_text(encoding="utf-8"))
            assert doc["classes"] == list(COLORS), where
            return [[r["image_id"], r["path"], r["label"]] for r in doc["labels"]]
        if kind == "imagefolder":
            path = exports / "imagefolder"
            if not path.exists():
                return None
            # The images; the manifest of their class names (labels.csv) is moved in with them.
            return {str(p.relative_to(path)): _sha(p) for p in path.rglob("*")
                    if p.is_file() and p != path / "labels.csv"}
        path = exports / "model"
        if not path.exists():
            return None
        model = load_model(path)      # the weights match the sidecar's checksum
        return _sha(model.weights_path)

    def check_exports(self, project: Project, log: list[dict[str, Any]], where: str) -> None:
        exports = self.folder / "exports"
        visible = {p.name for p in exports.iterdir() if not p.name.startswith(".")}
        assert visible <= {"labels.csv", "labels.json", "imagefolder", "model"}, (where, visible)
        now = self.expected_exports(project)
        finished = {e["what"] for e in log if e["t"] == "exported"}
        for kind in ("csv", "json", "imagefolder", "model"):
            found = self.read_export(kind, where)
            previous = self.exports.get(kind)
            if kind in finished:
                assert found == now[kind], (where, kind)
            elif found is None:
                assert previous is None, f"{where}: the {kind} export vanished"
            else:
                assert found in (previous, now[kind]), f"{where}: the {kind} export is incomplete"
            if found is not None:
                self.exports[kind] = found

    # -- the session goes on ---------------------------------------------------------------------
    def finish(self) -> None:
        """After the last kill: the round is retried and completes, labeling and submitting work,
        and the next batch is computed."""
        project = self.reopen()
        status = project.round_status()["status"]
        if status in ("queued", "failed"):
            self.candidates[project.rounds()[-1]["number"]] = sum(v[0] == "unlabeled" for v in self.expected.values())
            project.run_round()
        for _ in range(2):
            assert project.round_status()["status"] == "ready"
            for item in project.pending_batch():
                res = project.label(item.image_id, project.oracle_answer(item.image_id))
                assert res.state == "labeled"
                self.expected[item.image_id] = ["labeled", res.class_id]
            number = project.submit_batch()
            self.candidates[number] = sum(v[0] == "unlabeled" for v in self.expected.values())
            summary = project.run_round()
            assert summary["selected"] == min(BATCH, self.candidates[number]) and not summary["cold_start"], summary
        assert _db_labels(self.folder) == self.expected
        project.export_csv(self.folder / "exports" / "labels.csv")
        project.export_json(self.folder / "exports" / "labels.json")
        project.export_imagefolder(self.folder / "exports" / "imagefolder", overwrite=True)
        project.export_model(self.folder / "exports" / "model", overwrite=True)
        now = self.expected_exports(project)
        for kind in now:
            assert self.read_export(kind, "final") == now[kind], (SEED, kind)
        where = f"seed {SEED}, after the last kill"
        self.check_rounds(project, [], False, where)
        self.check_cache(project, where)
        assert self.check_models(project, where) == [], f"{where}: uncommitted checkpoint files were left behind"
        self.check_no_leftovers()

    def check_no_leftovers(self) -> None:
        """What killed writers left behind is gone once the session has gone on: temporaries of
        processes that no longer run, and (an hour on) features whose shard was never committed."""
        from ralif.feature_cache import FeatureCache

        folder = self.cache_dir()
        before = len(FeatureCache(self.folder / "cache", self.encoder.id))
        uncommitted = [p for p in folder.glob("*.npy") if not p.name.startswith(".")
                       and not p.name.endswith(".keys.npy") and not (folder / f"{p.stem}.keys.npy").exists()]
        hour_ago = time.time() - 3700
        for p in uncommitted:
            os.utime(p, (hour_ago, hour_ago))
        cache = FeatureCache(self.folder / "cache", self.encoder.id)
        assert len(cache) == before
        assert not any(p.exists() for p in uncommitted)
        left = [str(p.relative_to(self.folder)) for d in (folder, self.folder / "models", self.folder / "exports")
                for p in d.iterdir() if p.name.startswith(".")]
        assert not left, f"temporaries of killed writers were left behind: {left}"


def test_sigkill_at_random_points_loses_nothing_acknowledged(tmp_path):
    started = time.monotonic()
    session = Session(tmp_path)
    try:
        while any(session.need(a) > 0 for a in KILLS):
            assert session.trials < MAX_TRIALS, (f"{MAX_TRIALS} trials gave only {dict(session.kills)} "
                                                 f"kills (seed {SEED})")
            session.trial(session.next_trial())
        session.finish()
    finally:
        session.server.close()
    total = sum(session.kills[a] for a in KILLS)
    print(f"\ncrash safety (seed {SEED}): {session.trials} trials, {total} SIGKILLs {dict(session.kills)}, "
          f"{session.timer_kills} by timer; {time.monotonic() - started:.1f} s")
    print("kill points:", dict(sorted(session.kill_kinds.items())))
    assert total >= 100
