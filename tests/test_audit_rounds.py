"""The audit share wired into rounds: drawn uniformly from the unlabeled pool, kept from the
strategy, recorded with the model's guess, read back as an estimate with a Wilson interval, and the
accept rule that follows from it; a diverging ResNet run is the round's failure reason."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import DEMO
from PIL import Image

import ralif.strategies
from ralif.models.advice import SCRATCH_MIN_LABELS, scratch_advice
from ralif.project import Project, ProjectError
from ralif.project.rounds import audit_draw


def _inputs(candidates: np.ndarray, number: int, seed: int = 0) -> SimpleNamespace:
    return SimpleNamespace(candidate_pos=candidates, seed=seed, number=number)


def test_audit_draw_is_uniform_over_the_unlabeled_pool_and_left_out_of_the_candidates():
    candidates = np.arange(3, 53)                   # 50 unlabeled positions
    hits = np.zeros(60)
    reps = 4000
    for number in range(1, reps + 1):
        audit, rest, _ = audit_draw(_inputs(candidates, number), 10, 0.1)  # type: ignore[arg-type]
        assert len(audit) == 1 and len(rest) == 49
        assert not np.isin(rest, audit).any() and np.isin(audit, candidates).all()
        hits[audit] += 1
    expected = reps / 50
    chi2 = float(((hits[candidates] - expected) ** 2 / expected).sum())
    assert chi2 < 90                                # 49 degrees of freedom: p < 0.001 beyond 90
    assert hits[:3].sum() == 0 and hits[53:].sum() == 0
    off, rest, _ = audit_draw(_inputs(candidates, 1), 10, 0.0)  # type: ignore[arg-type]
    assert len(off) == 0 and np.array_equal(rest, candidates)


@pytest.fixture()
def demo100(tmp_path: Path) -> Project:
    return Project.create_demo(tmp_path / "demo", assets=DEMO, initial_labels=30, batch_size=100)


def _audit_rows(project: Project, number: int) -> dict[int, int | None]:
    return {int(r[0]): r[1] for r in project.store.query(
        "SELECT image_id, predicted_class_id FROM audit_picks WHERE round = ?", (number,))}


def test_round_batch_holds_the_audit_share_and_the_strategy_never_sees_it(tmp_path, monkeypatch):
    seen: dict[str, np.ndarray] = {}
    make = ralif.strategies.make_strategy

    def recording(spec: str):
        strategy = make(spec)
        select = strategy.select

        def spy(head, feats, labeled, unlabeled, budget, rng):
            seen["unlabeled"], seen["budget"] = np.asarray(unlabeled), budget
            return select(head, feats, labeled, unlabeled, budget, rng)
        strategy.select = spy
        return strategy

    monkeypatch.setattr(ralif.strategies, "make_strategy", recording)
    project = Project.create_demo(tmp_path / "demo", assets=DEMO, initial_labels=30, batch_size=100)
    batch = project.pending_batch()
    audits = _audit_rows(project, 1)
    assert len(batch) == 100 and len(audits) == 10
    pool_ids = [int(r[0]) for r in project.store.query("SELECT id FROM images WHERE split = 'pool' ORDER BY id")]
    assert seen["budget"] == 90 and len(seen["unlabeled"]) == len(pool_ids) - 30 - 10
    offered = {pool_ids[p] for p in seen["unlabeled"]}
    assert not offered & set(audits)
    by_id = {b.image_id: b for b in batch}
    assert set(audits) <= set(by_id)
    for image_id, guess in audits.items():
        # The guess at selection time is kept, and the tile says nothing that marks it as an audit.
        assert guess is not None and guess == by_id[image_id].predicted_class_id
        assert "random" not in by_id[image_id].reason and "audit" not in by_id[image_id].reason
    ranks = sorted(by_id[i].rank for i in audits)
    assert ranks != list(range(91, 101))            # placed among the picks, not after them
    picks = [b for b in batch if b.image_id not in audits]
    assert all("influence rank" in b.reason and b.score is not None for b in picks)

    project.set_audit_share(0)
    project.oracle_label_batch()
    project.submit_batch()
    project.run_round()
    assert _audit_rows(project, 2) == {} and len(project.pending_batch()) == 100
    with pytest.raises(ProjectError, match=r"between 0 and 0\.5"):
        project.set_audit_share(0.9)
    # The same setting through update_settings, with the same check.
    project.update_settings(audit_share=0.2)
    assert project.audit_share == 0.2
    with pytest.raises(ProjectError, match=r"between 0 and 0\.5"):
        project.update_settings(audit_share="lots")


def test_no_audit_image_reason_tells_the_model_guess(demo100):
    """A reason is shown to the user (a tile's tooltip): an audit image's must not say the guess or
    how sure the model is, or the answer meant to measure the model follows it. The guess is still
    kept, to score the answer against; the strategy's picks still show theirs."""
    import re

    batch = demo100.pending_batch()
    audits = _audit_rows(demo100, 1)
    assert len(audits) == 10
    for b in batch:
        assert b.predicted_class is not None and b.confidence is not None
        named = re.search(rf"\b{re.escape(b.predicted_class)}\b", b.reason)
        if b.image_id in audits:
            assert audits[b.image_id] == b.predicted_class_id
            assert "guess" not in b.reason and "%" not in b.reason and named is None, b.reason
            assert b.reason == "one of the 100 images of round 1's batch"
        else:
            assert b.reason.endswith(f"; model guess: {b.predicted_class} ({b.confidence:.0%})"), b.reason
    # What the Label page sends to the browser for a tile: the tooltip's text included.
    from ralif.ui.grid import batch_items

    for item in batch_items(batch, 32, audit=set(audits)):
        if item["audit"]:
            assert item["predicted"] is None and "guess" not in item["why_full"] + item["why"]


def _answer(project: Project, number: int, right: int) -> None:
    """Label round ``number``'s audit images: the first ``right`` with the model's guess, the rest
    with another class; the strategy's picks with the oracle."""
    classes = [c.id for c in project.classes()]
    audits = sorted(_audit_rows(project, number).items())
    for j, (image_id, guess) in enumerate(audits):
        assert guess is not None
        project.label(image_id, guess if j < right else next(c for c in classes if c != guess))
    project.oracle_label_batch()


def test_estimate_is_the_wilson_interval_of_the_audit_answers(demo100):
    _answer(demo100, 1, right=7)
    summary = demo100.audit_estimate()
    # Wilson score interval for 7 of 10 at z = 1.96, by hand:
    # centre = (0.7 + 1.96²/20) / (1 + 1.96²/10) = 0.89208 / 1.38415 = 0.64450
    # half   = 1.96 / 1.38415 * sqrt(0.7 * 0.3 / 10 + 1.96² / 400) = 1.41603 * 0.17494 = 0.24772
    assert summary.n == 10 and summary.accuracy == pytest.approx(0.7)
    assert summary.interval == pytest.approx((0.39678, 0.89222), abs=2e-4)
    assert summary.estimate.rounds == (1,)
    # Between chance (10 classes) and trustworthy: accepting a guess asks first.
    assert demo100.accept_policy().mode == "confirm"
    assert "wrong often" in demo100.accept_policy().reason


def test_accept_is_off_while_the_model_is_no_better_than_chance(demo100):
    _answer(demo100, 1, right=0)
    summary = demo100.audit_estimate()
    assert summary.accuracy == 0.0 and "near_chance" in {w.code for w in summary.warnings}
    assert demo100.accept_policy().mode == "off"
    # A skipped audit image is not an answer; it is counted as skipped.
    first = min(_audit_rows(demo100, 1))
    demo100.label(first, None)
    again = Project.open(demo100.folder).audit_estimate()
    assert again.n == 9 and again.estimate.skipped == 1 and again.accuracy == 0.0


def test_accept_asks_first_until_enough_audit_answers(demo_project):
    # The default demo starts cold (no model to audit); its first batch has no audit images.
    assert demo_project.audit_estimate().n == 0
    assert demo_project.accept_policy().mode == "confirm"
    assert "not measured yet" in demo_project.accept_policy().reason


def _tiny_resnet_project(root: Path) -> Project:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / "images" / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "images" / c / f"{i}.png")
    # An absurd learning rate with no scaling: the run must blow up within a few epochs.
    resnet = {"epochs": 4, "batch_size": 4, "image_size": 8, "lr": 1e6, "lr_scaling": "none", "amp": False}
    project = Project.create(root / "p", root / "images", model="resnet18", encoder="pixels:2", batch_size=4,
                             known_labels="truth", simulated_oracle=True, layout="imagefolder", resnet=resnet)
    project.run_round()                           # cold start: no model yet
    project.oracle_label_batch()
    project.submit_batch()
    return project


def test_a_diverging_resnet_run_is_the_rounds_failure_reason(tmp_path):
    project = _tiny_resnet_project(tmp_path)
    labeled_before = project.progress().labeled
    history_before = len(project.store.query("SELECT id FROM label_history"))
    with pytest.raises(Exception, match="training diverged"):
        project.run_round()
    status = project.round_status()
    assert status["status"] == "failed" and "training diverged" in status["error"]
    assert "label more images" in status["error"] or "pretrained encoder" in status["error"]
    assert project.progress().labeled == labeled_before == 4
    assert len(project.store.query("SELECT id FROM label_history")) == history_before
    assert project.current_model_path() is None


def test_scratch_advice_says_labels_and_hardware_up_front():
    few = scratch_advice(150, pool=1500, gpu=False)
    assert few.recommend_pretrained and "150 labels" in few.text and "no GPU" in few.text
    assert "pretrained encoder" in few.text and f"{SCRATCH_MIN_LABELS:,}" in few.text
    assert few.round_seconds_cpu is not None and few.round_seconds_cpu > 60
    many = scratch_advice(5000, gpu=True)
    assert not many.recommend_pretrained and "CUDA GPU" in many.text
    assert scratch_advice(5000, gpu=False).round_seconds_cpu > scratch_advice(1000, gpu=False).round_seconds_cpu
    unknown = scratch_advice(gpu=False)
    assert unknown.recommend_pretrained and unknown.round_seconds_cpu is None


def test_a_batch_saved_with_the_guess_in_an_audit_reason_does_not_show_it(demo100):
    """Batches computed before audit reasons left the guess out still hold it in the database."""
    import dataclasses

    from ralif.project.rounds import GUESS_MARK
    from ralif.ui.grid import batch_items

    audits = _audit_rows(demo100, 1)
    batch = [dataclasses.replace(b, reason=f"{b.reason}{GUESS_MARK}{b.predicted_class} ({b.confidence:.0%})")
             if b.image_id in audits else b for b in demo100.pending_batch()]
    items = batch_items(batch, 32, audit=set(audits))
    assert sum(it["audit"] for it in items) == 10
    for item in items:
        shown = item["why_full"] + item["why"]
        assert ("guess" in shown) != item["audit"], shown


def test_an_audit_image_labeled_on_the_map_is_not_an_answer(demo100):
    """The Map shows the model's guess for every image outside the pending batch, so an audit image
    of an earlier round labeled there was labeled with the guess in view: the estimate leaves it out."""
    audits = sorted(_audit_rows(demo100, 1))
    classes = [c.id for c in demo100.classes()]
    for image_id in audits[:4]:
        demo100.label(image_id, classes[0])
    assert demo100.audit_estimate(min_answers=1).n == 4
    demo100.bulk_label(audits[4:8], classes[1], source="map")
    assert demo100.audit_estimate(min_answers=1).n == 4
    # Taken back from the Map to a plain answer, it counts again.
    demo100.label(audits[4], classes[2])
    assert demo100.audit_estimate(min_answers=1).n == 5
