"""results.md and results.json give the same spread over seeds: the sample standard deviation (ddof 1),
as the text says and as the 95 % interval uses; with one seed there is none to give."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ralif.report import build_results, write_results

ACC = {
    "random": [[0.1, 0.2, 0.4, 0.6], [0.2, 0.2, 0.4, 0.6], [0.1, 0.3, 0.4, 0.5]],
    "ralif": [[0.1, 0.3, 0.6, 0.9], [0.2, 0.2, 0.4, 0.6], [0.1, 0.4, 0.5, 0.7]],
}
SECS = {k: [[0.1] * 3] * 3 for k in ACC}


def _line(md: str, name: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {name} |"))


def test_std_is_the_sample_std_in_json_and_table(tmp_path):
    res = build_results({"initial": 10, "budget": 5}, ACC, SECS)
    ral = res["strategies"]["ralif"]
    ratios = np.asarray(ral["auca_ratio"])
    assert ral["auca_ratio_std"] == pytest.approx(ratios.std(ddof=1))
    paths = write_results(tmp_path, res)
    md = paths["md"].read_text()
    first = 100 * np.asarray(ACC["ralif"])[:, 1]
    assert f"{first.mean():.2f} ± {first.std(ddof=1):.2f}" in _line(md, "ralif")
    assert f"{ratios.mean():.3f} ± {ratios.std(ddof=1):.3f}" in _line(md, "ralif")
    assert "sample standard deviation (n − 1 denominator) over 3 seeds" in md
    assert json.loads(paths["json"].read_text())["strategies"]["ralif"]["auca_ratio_std"] == ral["auca_ratio_std"]


def test_one_seed_has_no_std(tmp_path):
    one = {k: v[:1] for k, v in ACC.items()}
    res = build_results({}, one, {k: v[:1] for k, v in SECS.items()})
    assert res["strategies"]["ralif"]["auca_ratio_std"] is None
    assert res["strategies"]["ralif"]["auca_ratio_ci95"] is None
    md = write_results(tmp_path, res)["md"].read_text()
    assert "±" not in _line(md, "ralif") and "nan" not in md.lower()
    assert "Mean over 1 seed" in md
