"""Ctrl-C during ``ralif simulate`` keeps the seeds every strategy finished, marked partial (exit 130)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ralif.simulation
from ralif.cli import main
from ralif.features import FeatureSplits
from ralif.simulation import SimulationConfig, SimulationInterrupted, simulate


def _data() -> FeatureSplits:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 4)) * 3
    y = np.arange(90) % 3
    x = (centers[y] + rng.standard_normal((90, 4))).astype(np.float32)
    return FeatureSplits(x[:60], y[:60], x[60:], y[60:], ["a", "b", "c"])


CFG = SimulationConfig(strategies=["uncertainty"], initial=6, budget=3, cycles=2, seeds=[4, 5, 6])


def _interrupt_on(seed: int, spec: str):
    def progress(done: int, total: int, what: str) -> None:
        if what == f"{spec} seed {seed}":
            raise KeyboardInterrupt
    return progress


def test_interrupt_keeps_only_complete_seeds():
    full = simulate(_data(), CFG)
    # Seed 5's Random finished, its uncertainty did not: seed 5 is dropped whole.
    with pytest.raises(SimulationInterrupted) as info:
        simulate(_data(), CFG, progress=_interrupt_on(5, "uncertainty"))
    stop = info.value
    assert isinstance(stop, KeyboardInterrupt)
    assert stop.seeds_done == [4] and stop.seeds_requested == [4, 5, 6]
    res = stop.results
    assert res is not None
    assert res["partial"] == {"interrupted": True, "seeds_done": [4], "seeds_requested": [4, 5, 6]}
    assert res["config"]["seeds"] == [4]
    for name, s in res["strategies"].items():
        # The finished seed's numbers are the ones a full run computes.
        assert s["accuracy"] == full["strategies"][name]["accuracy"][:1]


def test_interrupt_in_the_first_seed_keeps_nothing():
    with pytest.raises(SimulationInterrupted) as info:
        simulate(_data(), CFG, progress=_interrupt_on(4, "random"))
    assert info.value.results is None and info.value.seeds_done == []


def _npz(tmp_path):
    d = _data()
    path = tmp_path / "f.npz"
    np.savez(path, x_train=d.x_train, y_train=d.y_train, x_test=d.x_test, y_test=d.y_test)
    return path


ARGS = ["--initial", "6", "--budget", "3", "--cycles", "2", "--seeds", "3", "--quiet", "--strategies", "uncertainty"]


def _stop_at_seed(monkeypatch, stop_seed: int) -> None:
    run_one = ralif.simulation.run_one

    def interrupted(learner, y_train, spec, initial, cfg, seed, on_cycle=None):
        if seed == stop_seed:
            raise KeyboardInterrupt
        return run_one(learner, y_train, spec, initial, cfg, seed, on_cycle=on_cycle)

    monkeypatch.setattr(ralif.simulation, "run_one", interrupted)


def test_cli_writes_a_partial_result_and_exits_130(tmp_path, capsys, monkeypatch):
    _stop_at_seed(monkeypatch, 2)
    out = tmp_path / "o"
    rc = main(["simulate", "--features", str(_npz(tmp_path)), *ARGS, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 130
    assert err.count("\n") == 1 and "PARTIAL result of 2 of 3 seeds" in err and str(out) in err
    res = json.loads((out / "results.json").read_text())
    assert res["partial"]["seeds_done"] == [0, 1] and res["config"]["seeds"] == [0, 1]
    assert np.asarray(res["strategies"]["uncertainty"]["accuracy"]).shape == (2, 3)
    assert (out / "results.md").read_text().startswith("**Partial result**: the simulation was interrupted "
                                                       "after 2 of 3 seeds")


def test_cli_interrupted_before_a_seed_finished_saves_nothing(tmp_path, capsys, monkeypatch):
    _stop_at_seed(monkeypatch, 0)
    out = tmp_path / "o"
    rc = main(["simulate", "--features", str(_npz(tmp_path)), *ARGS, "--out", str(out)])
    assert rc == 130
    assert "nothing saved" in capsys.readouterr().err
    assert not out.exists()
