"""Simulated active learning with an oracle that reveals true labels (the paper's protocol).

Each seed draws one initial labeled set shared by every strategy; each cycle trains the head on the
labeled set, measures test accuracy, and asks the strategy for the next batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ralif.compute import configure_threads
from ralif.features import FeatureSplits
from ralif.head import DEFAULT_L2
from ralif.learners import Learner, LinearProbeLearner
from ralif.strategies import make_strategy


@dataclass
class SimulationConfig:
    strategies: Sequence[str] = ("random", "ralif")
    initial: int = 100
    budget: int = 100
    cycles: int = 9
    seeds: Sequence[int] = (0, 1, 2)
    l2: float | str = DEFAULT_L2  # or "cv": chosen from the labels at every fit (LinearProbeLearner)
    device: str | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "strategies": list(self.strategies), "initial": self.initial, "budget": self.budget,
            "cycles": self.cycles, "seeds": list(self.seeds), "l2": self.l2, **self.extra,
        }


@dataclass
class RunRecord:
    accuracy: list[float]
    select_seconds: list[float]
    fit_seconds: list[float]
    correct_last: np.ndarray
    selected: list[np.ndarray]


def initial_labeled_set(n: int, size: int, seed: int) -> np.ndarray:
    if not 0 < size < n:
        raise ValueError(f"initial labeled set size {size} must be between 1 and the pool size {n} − 1")
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def run_one(
    learner: Learner, y_train: np.ndarray, spec: str, initial: np.ndarray, cfg: SimulationConfig, seed: int,
    on_cycle: Callable[[], None] | None = None,
) -> RunRecord:
    strategy = make_strategy(spec)
    n = len(y_train)
    labeled = initial.copy()
    mask = np.zeros(n, dtype=bool)
    mask[labeled] = True
    acc, sel_s, fit_s, selected = [], [], [], []
    correct = np.zeros(0, dtype=bool)
    for cycle in range(cfg.cycles + 1):
        t0 = time.perf_counter()
        learner.fit(labeled, y_train[labeled], seed)
        fit_s.append(time.perf_counter() - t0)
        correct = learner.test_correct()
        acc.append(float(correct.mean()))
        if on_cycle:
            on_cycle()
        if cycle == cfg.cycles:
            break
        # Selection randomness depends on (seed, cycle) only, so strategies never share a stream.
        rng = np.random.default_rng([seed, cycle])
        head, features = learner.selection_inputs()
        t0 = time.perf_counter()
        batch = strategy.select(head, features, labeled, np.flatnonzero(~mask), cfg.budget, rng)
        sel_s.append(time.perf_counter() - t0)
        selected.append(batch)
        mask[batch] = True
        labeled = np.flatnonzero(mask)
    return RunRecord(acc, sel_s, fit_s, correct, selected)


def simulate(
    data: FeatureSplits | Learner, cfg: SimulationConfig, progress: Callable[[int, int, str], None] | None = None,
    y_train: np.ndarray | None = None,
) -> dict:
    """Run every strategy on every seed; returns the results dict of ``ralif.report.build_results``.

    ``data`` is a features file's splits (a linear probe is trained on them) or any learner, in which
    case ``y_train`` gives the oracle's labels for the pool.
    """
    from ralif.report import build_results

    configure_threads()
    if isinstance(data, FeatureSplits):
        learner: Learner = LinearProbeLearner(data, l2=cfg.l2, device=cfg.device)
        y_train = data.y_train
    else:
        learner = data
        if y_train is None:
            raise ValueError("y_train (the oracle's labels) is required with a learner")
    specs = list(dict.fromkeys(["random", *cfg.strategies]))
    for spec in specs:
        make_strategy(spec)  # fail on a bad spec before hours of work
    n = len(y_train)
    if cfg.initial + cfg.budget * cfg.cycles > n:
        raise ValueError(
            f"initial {cfg.initial} + {cfg.cycles} cycles × {cfg.budget} exceeds the pool of {n} samples"
        )
    total = len(specs) * len(cfg.seeds) * (cfg.cycles + 1)
    done = 0
    accuracy: dict[str, list] = {s: [] for s in specs}
    seconds: dict[str, list] = {s: [] for s in specs}
    correct: dict[str, list] = {s: [] for s in specs}
    fits: dict[str, list] = {s: [] for s in specs}

    for seed in cfg.seeds:
        init = initial_labeled_set(n, cfg.initial, seed)
        for spec in specs:
            def tick(spec: str = spec, seed: int = seed) -> None:
                nonlocal done
                done += 1
                if progress:
                    progress(done, total, f"{spec} seed {seed}")

            rec = run_one(learner, y_train, spec, init, cfg, seed, on_cycle=tick)
            accuracy[spec].append(rec.accuracy)
            seconds[spec].append(rec.select_seconds)
            correct[spec].append(rec.correct_last)
            fits[spec].append(rec.fit_seconds)
    results = build_results(cfg.as_dict(), accuracy, seconds, correct_last=correct)
    for spec in specs:
        results["strategies"][spec]["fit_seconds"] = fits[spec]
    return results
