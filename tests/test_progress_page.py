"""The Progress page, run headless with Streamlit's AppTest: the audit estimate with its interval,
warnings and accept rule, and the Random comparison explained in plain words."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import DEMO
from streamlit.testing.v1 import AppTest

from ralif import projection as proj
from ralif.project import Project
from ralif.ui.state import PROJECT_KEY

PAGE = Path(__file__).resolve().parents[1] / "views" / "3_Progress.py"


@pytest.fixture(scope="module")
def played(tmp_path_factory) -> Project:
    project = Project.create_demo(tmp_path_factory.mktemp("p") / "demo", assets=DEMO, initial_labels=30,
                                  batch_size=50)
    for _ in range(3):
        project.oracle_label_batch()
        project.submit_batch()
        project.run_round()
    counts = [r["labeled_count"] for r in project.rounds() if r["accuracy"] is not None]
    proj.random_baseline(project, counts)       # stored, so the page starts no background job
    return project


def _run(project: Project, monkeypatch) -> AppTest:
    monkeypatch.setenv("RALIF_PROJECTS", str(project.folder.parent))
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.session_state[PROJECT_KEY] = str(project.folder)
    return at.run()


def test_progress_shows_the_audit_estimate_and_explains_the_random_comparison(played, monkeypatch):
    at = _run(played, monkeypatch)
    assert not at.exception, at.exception
    summary = played.audit_estimate()
    assert summary.n == 15                                    # 5 audit images in each of 3 answered batches
    metric = next(m for m in at.metric if m.label == "Estimated accuracy")
    assert summary.estimate.high - summary.estimate.low < 0.5 and metric.value == f"{summary.accuracy:.0%}"
    captions = " ".join(c.value for c in at.caption)
    plain = captions.replace("\\", "")
    assert f"between {summary.estimate.low:.0%} and {summary.estimate.high:.0%} with 95 % confidence" in plain
    assert f"{summary.estimate.correct} of 15 audit images" in plain
    ratio = next(m for m in at.metric if m.label == "AUCA ratio against Random")
    assert 0.5 < float(ratio.value) < 2.0
    assert "the same 30 starting labels" in plain and "Random was run with 5 seeds" in plain
    assert "95 % interval for the ratio is" in plain
    accept = [i.value for i in at.info] + [c.value for c in at.caption]
    assert any("Accepting the model" in a.replace("\\", "") for a in accept)


def test_progress_says_when_the_comparison_is_unavailable(tmp_path, monkeypatch):
    project = Project.create(tmp_path / "p", DEMO / "images" / "train", test=DEMO / "images" / "test",
                             encoder=f"precomputed:{(DEMO / 'embeddings.npz').resolve()}", known_labels="import",
                             layout="imagefolder", decode=False, batch_size=20)
    project.run_round()
    at = _run(project, monkeypatch)
    assert not at.exception, at.exception
    infos = " ".join(i.value for i in at.info).replace("\\", "")
    assert "No comparison with Random" in infos and "hidden true label" in infos
    assert any(m.label == "Estimated accuracy" for m in at.metric)


def test_the_big_number_waits_for_a_usable_interval():
    from ralif.audit import AuditAnswer, estimate_accuracy
    from ralif.ui.quality_panel import shown_accuracy

    two = estimate_accuracy([AuditAnswer(1, i, 0, 1) for i in range(2)], 10, min_answers=1)
    assert two.accuracy == 0.0 and two.high - two.low > 0.5 and shown_accuracy(two) == "—"
    many = estimate_accuracy([AuditAnswer(1, i, 0, 0 if i % 4 else 1) for i in range(40)], 10, min_answers=1)
    assert shown_accuracy(many) == f"{many.accuracy:.0%}" == "75%"
    none = estimate_accuracy([], 10)
    assert shown_accuracy(none) == "—"
