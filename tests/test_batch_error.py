"""benchmarks/batch_error.py: the head's error on each batch, from the same picks `simulate` makes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ralif.features import load_feature_splits
from ralif.learners import LinearProbeLearner
from ralif.simulation import SimulationConfig, initial_labeled_set, run_one

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "batch_error.py"
spec = importlib.util.spec_from_file_location("batch_error", SCRIPT)
assert spec and spec.loader
batch_error = importlib.util.module_from_spec(spec)
spec.loader.exec_module(batch_error)


def test_balance_is_effective_classes_over_k() -> None:
    assert batch_error.balance(np.array([0, 1, 2, 0, 1, 2]), 3) == pytest.approx(1.0)
    assert batch_error.balance(np.array([1, 1, 1]), 3) == pytest.approx(1 / 3)
    assert batch_error.balance(np.array([0, 0, 0, 1]), 4) < batch_error.balance(np.array([0, 0, 1, 1]), 4)


@pytest.mark.parametrize("strategy", ["margin", "ralif"])
def test_runs_follow_simulate_and_count_the_heads_mistakes(tmp_path: Path, strategy: str) -> None:
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((3, 5)) * 1.5
    y_tr, y_te = rng.integers(0, 3, 300), rng.integers(0, 3, 90)
    x_tr = (centers[y_tr] + rng.standard_normal((300, 5))).astype(np.float32)
    x_te = (centers[y_te] + rng.standard_normal((90, 5))).astype(np.float32)
    path = tmp_path / "f.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    data = load_feature_splits(path)
    init = initial_labeled_set(300, 12, 7)
    rows = batch_error.batch_rows(LinearProbeLearner(data), y_tr, strategy, init, 10, 3, 7)
    cfg = SimulationConfig(strategies=[strategy], initial=12, budget=10, cycles=3, seeds=[7])
    record = run_one(LinearProbeLearner(data), y_tr, strategy, init, cfg, 7)
    # Accuracy before each batch is simulate's curve: the same initial set, heads and picks.
    assert [r[0] for r in rows] == record.accuracy[:3]
    # The error on each batch, recounted from simulate's own picks and a head fitted as it was.
    learner = LinearProbeLearner(data)
    labeled = init
    for (_, wrong, _), batch in zip(rows, record.selected, strict=True):
        learner.fit(labeled, y_tr[labeled], 7)
        assert wrong == pytest.approx(np.mean(learner.head.predict(x_tr, batch) != y_tr[batch]))
        labeled = np.union1d(labeled, batch)
    assert 0 < np.mean([r[1] for r in rows]) < 1
