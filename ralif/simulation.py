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


CYCLES_MESSAGE = "curves need cycle 0 plus at least 2 active-learning cycles"


class SimulationInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`simulate`: ``results`` covers the seeds every strategy finished (None if none).

    ``results["partial"]`` says which seeds were done out of those asked for.
    """

    def __init__(self, results: dict | None, seeds_done: list[int], seeds_requested: list[int]) -> None:
        super().__init__(f"interrupted after {len(seeds_done)} of {len(seeds_requested)} seeds")
        self.results = results
        self.seeds_done = seeds_done
        self.seeds_requested = seeds_requested


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
    case ``y_train`` gives the oracle's labels for the pool. Ctrl-C raises :class:`SimulationInterrupted`
    carrying the results of the seeds that finished.
    """
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
    if cfg.cycles < 2:
        raise ValueError(f"cycles must be at least 2, got {cfg.cycles}: {CYCLES_MESSAGE}")
    if not len(cfg.seeds):
        raise ValueError("no seeds to run")
    present = np.unique(y_train)
    if len(present) < 2:
        raise ValueError(f"the pool has {len(present)} class{'' if len(present) == 1 else 'es'}; "
                         f"a simulation needs at least 2 classes to compare strategies")
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

    seeds_done: list[int] = []
    try:
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
            seeds_done.append(int(seed))
    except KeyboardInterrupt:
        # Keep the seeds every strategy finished; a seed cut short is dropped whole (curves are paired).
        k = len(seeds_done)
        partial = None
        if k:
            partial = _collect(cfg, specs, {s: v[:k] for s, v in accuracy.items()},
                               {s: v[:k] for s, v in seconds.items()}, {s: v[:k] for s, v in correct.items()},
                               {s: v[:k] for s, v in fits.items()}, seeds_done)
            partial["partial"] = {"interrupted": True, "seeds_done": seeds_done,
                                  "seeds_requested": [int(s) for s in cfg.seeds]}
        raise SimulationInterrupted(partial, seeds_done, [int(s) for s in cfg.seeds]) from None
    return _collect(cfg, specs, accuracy, seconds, correct, fits, list(cfg.seeds))


def _collect(cfg: SimulationConfig, specs: list[str], accuracy: dict, seconds: dict, correct: dict, fits: dict,
             seeds: list[int]) -> dict:
    from ralif.report import build_results

    results = build_results({**cfg.as_dict(), "seeds": list(seeds)}, accuracy, seconds, correct_last=correct)
    for spec in specs:
        results["strategies"][spec]["fit_seconds"] = fits[spec]
    return results
