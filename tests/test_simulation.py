"""Simulation protocol, feature files and the simulate/strategies/benchmark commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ralif.cli import main
from ralif.features import load_feature_splits
from ralif.simulation import SimulationConfig, initial_labeled_set, simulate


def blobs(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 3
    y = rng.integers(0, k, n)
    return (centers[y] + rng.standard_normal((n, d))).astype(np.float32), y


@pytest.fixture()
def npz(tmp_path):
    x_tr, y_tr = blobs(400, 6, 3, 0)
    x_te, y_te = blobs(150, 6, 3, 1)
    path = tmp_path / "feats.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


def test_quantised_layout_is_dequantised(tmp_path):
    u8 = np.array([[0, 10], [20, 30]], dtype=np.uint8)
    path = tmp_path / "q.npz"
    np.savez(path, emb_train_uint8=u8, emb_test_uint8=u8, y_train=np.array([0, 1]), y_test=np.array([1, 0]),
             quant_scale=np.float32(0.5), quant_zero_point=np.int32(10), classes=np.array(["a", "b"]))
    d = load_feature_splits(path)
    np.testing.assert_allclose(d.x_train, [[-5.0, 0.0], [5.0, 10.0]])
    assert d.classes == ["a", "b"] and d.num_classes == 2


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("x_test"), "expected x_train"),
    (lambda d: d.update(y_train=d["y_train"][:-1]), "labels"),
    (lambda d: d["x_train"].__setitem__((3, 2), np.nan), "NaN"),
    (lambda d: d.update(x_test=d["x_test"][:, :3]), "-d"),
    (lambda d: d.update(y_train=d["y_train"].astype(float)), "integer"),
])
def test_bad_feature_files_get_clear_errors(tmp_path, change, message):
    x, y = blobs(20, 5, 2, 0)
    data = {"x_train": x, "y_train": y, "x_test": x.copy(), "y_test": y.copy()}
    change(data)
    path = tmp_path / "bad.npz"
    np.savez(path, **data)
    with pytest.raises(ValueError, match=message):
        load_feature_splits(path)


def test_not_an_npz(tmp_path):
    path = tmp_path / "x.npz"
    path.write_text("hello")
    with pytest.raises(ValueError, match="cannot read"):
        load_feature_splits(path)


def test_simulation_shares_initial_set_and_is_reproducible(npz):
    data = load_feature_splits(npz)
    cfg = SimulationConfig(strategies=["uncertainty", "ralif"], initial=20, budget=10, cycles=3, seeds=[0, 1])
    a = simulate(data, cfg)
    b = simulate(data, cfg)
    assert a["strategies"].keys() == {"random", "uncertainty", "ralif"}
    for name, s in a["strategies"].items():
        assert np.asarray(s["accuracy"]).shape == (2, 4)
        assert np.asarray(s["select_seconds"]).shape == (2, 3)
        assert s["accuracy"] == b["strategies"][name]["accuracy"]
        # Cycle 0 is trained on the shared initial set, so every strategy starts from the same accuracy.
        assert [row[0] for row in s["accuracy"]] == [row[0] for row in a["strategies"]["random"]["accuracy"]]
    assert a["strategies"]["random"]["auca_ratio"] == [1.0, 1.0]


def test_initial_set_and_budget_checks(npz):
    assert len(np.unique(initial_labeled_set(100, 10, 3))) == 10
    with pytest.raises(ValueError):
        initial_labeled_set(10, 10, 0)
    data = load_feature_splits(npz)
    with pytest.raises(ValueError, match="exceeds"):
        simulate(data, SimulationConfig(initial=100, budget=100, cycles=5))
    with pytest.raises(ValueError, match="unknown strategy"):
        simulate(data, SimulationConfig(strategies=["nope"], initial=10, budget=5, cycles=1))


def test_simulate_command_writes_every_report(npz, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["simulate", "--features", str(npz), "--strategies", "random,ralif(rule=single,diversity=none),coreset",
               "--initial", "20", "--budget", "10", "--cycles", "2", "--seeds", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    for name in ("results.json", "results.csv", "results.md", "curves.html", "curves.png"):
        assert (out / name).stat().st_size > 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["strategies"]) == {"random", "ralif(rule=single,diversity=none)", "coreset"}
    assert res["config"]["initial"] == 20 and res["config"]["seeds"] == [0, 1]
    s = res["strategies"]["coreset"]
    assert len(s["auca_ratio"]) == 2 and isinstance(s["cycles_below_random"], int)
    assert "auca_ratio_mean" in capsys.readouterr().out


def test_simulate_command_reports_bad_input(tmp_path, capsys):
    rc = main(["simulate", "--features", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")])
    assert rc == 1
    assert "not found" in capsys.readouterr().err


def test_strategies_command_lists_every_strategy(capsys):
    assert main(["strategies", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    names = {s["name"] for s in info}
    assert {"random", "uncertainty", "coreset", "badge", "gradnorm", "ralif"} <= names
    ralif = next(s for s in info if s["name"] == "ralif")
    assert {"rule", "reading", "tau", "fraction", "diversity"} <= set(ralif["options"])


def test_benchmark_command_checks_closed_form_against_autograd(capsys):
    rc = main(["benchmark", "selection", "--pool", "2000", "--dim", "16", "--classes", "4", "--budget", "20",
               "--naive", "5", "--device", "cpu"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["selected"] == 20 and res["peak_rss_mb"] > 0
    # The closed form must agree with per-(sample, class) autograd on the sampled pairs.
    assert res["naive"]["max_abs_difference"] <= 1e-6 * max(1.0, res["naive"]["max_abs_value"])


def test_benchmark_warm_reports_one_off_costs_apart(capsys):
    args = ["benchmark", "selection", "--pool", "2000", "--dim", "16", "--classes", "4", "--budget", "20",
            "--device", "cpu"]
    assert main(args) == 0
    cold = json.loads(capsys.readouterr().out)
    assert main([*args, "--warm"]) == 0
    warm = json.loads(capsys.readouterr().out)
    assert cold["warmup_seconds"] is None
    assert warm["warmup_seconds"] > 0 and warm["selected"] == cold["selected"] == 20
