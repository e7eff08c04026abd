import csv
import json

import numpy as np
import pytest

from ralif.report import build_results, write_results

CONFIG = {"dataset": "toy", "initial": 10, "budget": 5, "seeds": [3, 4]}
ACCURACY = {
    "random": [[0.10, 0.20, 0.40, 0.60], [0.20, 0.20, 0.40, 0.60]],
    "ralif": [[0.10, 0.30, 0.60, 0.90], [0.20, 0.20, 0.40, 0.60]],
    "entropy": [[0.10, 0.10, 0.30, 0.60], [0.20, 0.30, 0.30, 0.50]],
}
SECONDS = {
    "random": [[0.01, 0.01, 0.01], [0.01, 0.02, 0.01]],
    "ralif": [[1.0, 2.0, 3.0], [1.5, 2.5, 3.5]],
    "entropy": [[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]],
}


def _correct_last():
    rng = np.random.default_rng(0)
    base = [rng.random(400) < 0.6, rng.random(300) < 0.6]
    return {
        "random": base,
        # Identical predictions: no evidence of a difference at all.
        "entropy": [c.copy() for c in base],
        # Every test sample right on both seeds: far better than random.
        "ralif": [np.ones(400, dtype=bool), np.ones(300, dtype=bool)],
    }


def test_build_results_fields():
    res = build_results(CONFIG, ACCURACY, SECONDS, _correct_last(), n_permutations=500, seed=0)
    assert res["config"] == CONFIG
    assert list(res["strategies"]) == ["random", "ralif", "entropy"]

    rnd = res["strategies"]["random"]
    assert rnd["auca_ratio"] == [1.0, 1.0]
    assert rnd["auca_ratio_mean"] == 1.0
    assert rnd["auca_ratio_std"] == 0.0
    assert rnd["cycles_below_random"] == 0
    assert rnd["p_value"] is None
    assert rnd["accuracy"] == ACCURACY["random"]
    assert rnd["select_seconds"] == SECONDS["random"]

    # Random AUCA is 0.8 on both seeds; ralif seed 0: 0.45 + 0.75 = 1.2 -> 1.5, seed 1: 1.0.
    ral = res["strategies"]["ralif"]
    assert ral["auca_ratio"] == pytest.approx([1.5, 1.0])
    assert ral["auca_ratio_mean"] == pytest.approx(1.25)
    assert ral["auca_ratio_std"] == pytest.approx(0.25 * 2**0.5)  # sample std (ddof 1) of {1.5, 1.0}
    assert ral["cycles_below_random"] == 0
    assert ral["p_value"] == pytest.approx(1 / 501)
    assert ral["select_seconds"] == SECONDS["ralif"]

    # entropy seed 0: 0.2 + 0.45 = 0.65, seed 1: 0.3 + 0.4 = 0.7.
    ent = res["strategies"]["entropy"]
    assert ent["auca_ratio"] == pytest.approx([0.8125, 0.875])
    assert ent["auca_ratio_mean"] == pytest.approx(0.84375)
    assert ent["auca_ratio_std"] == pytest.approx(0.03125 * 2**0.5)  # sample std of {0.8125, 0.875}
    # seed 0: cycles 1, 2 below (cycle 3 tied); seed 1: cycles 2, 3 below (cycle 1 above).
    assert ent["cycles_below_random"] == 4
    assert ent["cycles_compared"] == 6
    assert ent["p_value"] == 1.0
    # Interval of {0.8125, 0.875}: mean ± t(0.975, 1) · s/√2 = 0.84375 ± 12.706 · 0.03125.
    assert ent["auca_ratio_ci95"] == pytest.approx([0.84375 - 12.7062 * 0.03125, 0.84375 + 12.7062 * 0.03125],
                                                   abs=1e-3)
    # Two seeds, both below Random: the exact sign-flip test can reach no lower than 2/4.
    assert ent["seed_test"]["sign_flip"] == pytest.approx(0.5)
    assert rnd["seed_test"] is None

    # Plain built-in types only, so the structure is JSON as is.
    assert json.loads(json.dumps(res, allow_nan=False)) == res
    assert all(type(v) is float for v in ral["auca_ratio"])


def test_build_results_without_correctness_has_no_p_values():
    res = build_results(CONFIG, ACCURACY, SECONDS)
    assert all(s["p_value"] is None for s in res["strategies"].values())


def test_build_results_p_value_is_independent_of_strategy_order():
    rng = np.random.default_rng(9)
    correct = {name: [rng.random(200) < 0.6, rng.random(200) < 0.6] for name in ACCURACY}
    forward = build_results(CONFIG, ACCURACY, SECONDS, correct, n_permutations=300, seed=1)
    order = ["entropy", "random", "ralif"]
    backward = build_results(
        CONFIG, {k: ACCURACY[k] for k in order}, {k: SECONDS[k] for k in order}, correct, 300, seed=1
    )
    for name in ACCURACY:
        assert forward["strategies"][name]["p_value"] == backward["strategies"][name]["p_value"]


def test_build_results_rejects_bad_input():
    no_random = {k: v for k, v in ACCURACY.items() if k != "random"}
    with pytest.raises(ValueError, match="random"):
        build_results(CONFIG, no_random, SECONDS)
    with pytest.raises(ValueError):
        build_results(CONFIG, {**ACCURACY, "ralif": [[0.1, 0.2, 0.3]] * 2}, SECONDS)
    with pytest.raises(ValueError):
        build_results(CONFIG, ACCURACY, {**SECONDS, "ralif": [[1.0, 2.0], [1.0, 2.0]]})
    with pytest.raises(ValueError):
        build_results(CONFIG, ACCURACY, {k: v for k, v in SECONDS.items() if k != "entropy"})
    short = _correct_last()
    short["ralif"] = [np.ones(10, dtype=bool), np.ones(300, dtype=bool)]
    with pytest.raises(ValueError):
        build_results(CONFIG, ACCURACY, SECONDS, short, n_permutations=10)


def test_write_results_files(tmp_path):
    res = build_results(CONFIG, ACCURACY, SECONDS, _correct_last(), n_permutations=200, seed=0)
    paths = write_results(tmp_path / "out", res)
    assert set(paths) == {"json", "csv", "md", "html", "png"}
    assert {p.name for p in paths.values()} == {
        "results.json",
        "results.csv",
        "results.md",
        "curves.html",
        "curves.png",
    }
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    # No temporary files left behind by the atomic writes.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())

    assert json.loads(paths["json"].read_text()) == res

    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * 4  # strategies x seeds x (C + 1) cycles
    assert list(rows[0]) == ["strategy", "seed", "cycle", "accuracy", "select_seconds"]
    first = rows[0]
    assert (first["strategy"], first["seed"], first["cycle"], first["select_seconds"]) == (
        "random",
        "3",
        "0",
        "",
    )
    ralif_rows = [r for r in rows if r["strategy"] == "ralif" and r["seed"] == "4" and r["cycle"] == "2"]
    assert len(ralif_rows) == 1
    assert float(ralif_rows[0]["accuracy"]) == pytest.approx(0.20 * 2)
    assert float(ralif_rows[0]["select_seconds"]) == pytest.approx(2.5)

    md = paths["md"].read_text()
    for name in ACCURACY:
        assert f"| {name} |" in md
    # ralif first cycle: seeds 30% and 20% -> 25.00 ± 7.07 (sample std, ddof 1); AUCA ratio 1.250 ± 0.354;
    # p < 0.05.
    ralif_line = next(line for line in md.splitlines() if line.startswith("| ralif |"))
    assert "25.00 ± 7.07" in ralif_line
    assert "75.00 ± 21.21" in ralif_line
    assert "1.250 ± 0.354" in ralif_line
    assert ralif_line.rstrip(" |").endswith("*")
    entropy_line = next(line for line in md.splitlines() if line.startswith("| entropy |"))
    assert "| 4 of 6 |" in entropy_line and "*" not in entropy_line

    html = paths["html"].read_text()
    assert "plotly" in html.lower() and "ralif" in html and "Number of labeled images" in html
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_results_cycle_axis_without_budget(tmp_path):
    res = build_results({"dataset": "toy"}, ACCURACY, SECONDS)
    paths = write_results(tmp_path, res)
    html = paths["html"].read_text()
    assert "Number of labeled images" not in html
    with open(paths["csv"], newline="") as f:
        seeds = {r["seed"] for r in csv.DictReader(f)}
    assert seeds == {"0", "1"}
    assert "—" in paths["md"].read_text()
