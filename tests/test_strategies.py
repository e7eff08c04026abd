"""Every registered query strategy against one shared template, plus spec parsing and RALIF's batch steps."""

import math

import numpy as np
import pytest
import torch

from ralif.head import fit_head
from ralif.ranking import top_k_lowest
from ralif.strategies import REGISTRY, check_request, make_strategy, split_specs
from ralif.strategies.ralif import RalifStrategy

SPECS = [
    "random",
    "uncertainty",
    "margin",
    "typiclust",
    "typiclust(dims=4)",
    "coreset",
    "badge",
    "gradnorm",
    "gradnorm(loss=expected)",
    "ralif",
    "ralif(rule=single)",
    "ralif(rule=expectation)",
    "ralif(reading=paper)",
    "ralif(reading=reference)",
    "ralif(diversity=none)",
    "ralif(diversity=meanshift)",
    "ralif(diversity=kmeanspp)",
    "ralif(diversity=kmeanspp,space=raw)",
    "ralif(diversity=kmeans,space=raw)",
    "ralif(solver=cg)",
    "ralif(diversity=kcenter)",
    "ralif(multiple=25)",
    "ralif(candidates=balanced)",
    "ralif(weighting=balanced)",
    "ralif(weighting=confidence)",
    "ralif(centroids=score)",
    "ralif(calibration=cv)",
    "ralif(representative=best)",
    "ralif(representative=nearest)",
    "ralif(representative=central)",
    "ralif(damping=10)",
    "ralif(target=entropy)",
    "ralif(gate=half,gate_from=0)",
    "ralif(gate=error,gate_from=0)",
    "ralif(gate=0.2,gate_from=0)",
    "ralif(gate=auto,gate_from=0)",
    "ralif(space=pca)",
    "ralif(space=cosine)",
    "ralif(diversity=kmeanspp,space=pca)",
    "ralif(cold=5)",
    "ralif(step=newton)",
    "ralif(step=newton,curvature=kronecker)",
    # The sharded engine on workers in this process (tests/test_sharded.py covers worker processes).
    "ralif(engine=dask,scheduler=threads,workers=2,shards=3)",
]


def blobs(n, d, k, seed, spread=3.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(k, d))
    y = np.arange(n) % k
    rng.shuffle(y)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


@pytest.fixture(scope="module")
def data():
    """300 samples, D=8, K=4 Gaussian blobs; 30 labeled."""
    x, y = blobs(300, 8, 4, seed=0)
    perm = np.random.default_rng(1).permutation(300)
    labeled, unlabeled = np.sort(perm[:30]), np.sort(perm[30:])
    head = fit_head(x, labeled, y[labeled], 4, device="cpu")
    return x, y, labeled, unlabeled, head


@pytest.fixture(scope="module")
def many_classes():
    """1000 samples, D=16, K=100 (10 per class); 200 labeled, two of every class."""
    x, y = blobs(1000, 16, 100, seed=2)
    labeled = np.sort(np.concatenate([np.flatnonzero(y == c)[:2] for c in range(100)]))
    unlabeled = np.setdiff1d(np.arange(1000), labeled)
    head = fit_head(x, labeled, y[labeled], 100, device="cpu")
    return x, labeled, unlabeled, head


def select(spec, head, x, labeled, unlabeled, budget, seed=0):
    return make_strategy(spec).select(head, x, labeled, unlabeled, budget, np.random.default_rng(seed))


def assert_valid_batch(picked, labeled, unlabeled, budget):
    assert isinstance(picked, np.ndarray) and np.issubdtype(picked.dtype, np.integer)
    assert picked.shape == (budget,)
    assert np.unique(picked).size == budget
    assert np.isin(picked, unlabeled).all()
    assert not np.isin(picked, labeled).any()


def test_every_registered_strategy_is_covered():
    assert {s.split("(")[0] for s in SPECS} == set(REGISTRY)


# -- the shared template -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS)
def test_batch_is_valid_and_reproducible(spec, data):
    x, _, labeled, unlabeled, head = data
    picked = select(spec, head, x, labeled, unlabeled, 10, seed=7)
    assert_valid_batch(picked, labeled, unlabeled, 10)
    # Two fresh generators with the same seed (and a fresh strategy) give the same batch.
    np.testing.assert_array_equal(select(spec, head, x, labeled, unlabeled, 10, seed=7), picked)


@pytest.mark.parametrize("spec", SPECS)
def test_batch_of_one(spec, data):
    x, _, labeled, unlabeled, head = data
    picked = select(spec, head, x, labeled, unlabeled, 1)
    assert_valid_batch(picked, labeled, unlabeled, 1)


@pytest.mark.parametrize("spec", SPECS)
def test_batch_equal_to_pool_returns_whole_pool(spec, data):
    x, _, labeled, unlabeled, head = data
    pool = unlabeled[::9]
    picked = select(spec, head, x, labeled, pool, len(pool))
    np.testing.assert_array_equal(np.sort(picked), np.sort(pool))


@pytest.mark.parametrize("spec", SPECS)
def test_single_class_in_labels(spec, data):
    x, _, labeled, unlabeled, _ = data
    head = fit_head(x, labeled, np.zeros(len(labeled), dtype=np.int64), 4, device="cpu")
    assert (head.predict(x, unlabeled) == 0).all()
    picked = select(spec, head, x, labeled, unlabeled, 12)
    assert_valid_batch(picked, labeled, unlabeled, 12)


@pytest.mark.parametrize("spec", SPECS)
def test_hundred_classes(spec, many_classes):
    x, labeled, unlabeled, head = many_classes
    assert head.num_classes == 100
    picked = select(spec, head, x, labeled, unlabeled, 25)
    assert_valid_batch(picked, labeled, unlabeled, 25)


@pytest.mark.parametrize("spec", SPECS)
def test_memory_mapped_features(spec, data, tmp_path):
    x, _, labeled, unlabeled, head = data
    mm = np.memmap(tmp_path / "features.f32", dtype=np.float32, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    mm = np.memmap(tmp_path / "features.f32", dtype=np.float32, mode="r", shape=x.shape)
    np.testing.assert_array_equal(
        select(spec, head, mm, labeled, unlabeled, 10, seed=3), select(spec, head, x, labeled, unlabeled, 10, seed=3)
    )


def test_head_fitted_on_memmap_is_identical(data, tmp_path):
    x, y, labeled, _, head = data
    path = tmp_path / "features.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    assert torch.equal(fit_head(mm, labeled, y[labeled], 4, device="cpu").weight, head.weight)


# -- spec parsing and request checks ---------------------------------------------------------------


def test_specs_round_trip():
    for spec in SPECS:
        strategy = make_strategy(spec)
        assert make_strategy(strategy.spec()) == strategy
    s = make_strategy(" ralif( rule = single , fraction=0.25, tau=none ) ")
    assert (s.rule, s.fraction, s.tau) == ("single", 0.25, None)
    assert make_strategy("ralif(tau=0.3)").tau == 0.3
    assert make_strategy("RALIF").name == "ralif"
    assert split_specs("random, ralif(rule=single,diversity=none),gradnorm") == [
        "random", "ralif(rule=single,diversity=none)", "gradnorm",
    ]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("nosuch", "unknown strategy 'nosuch'; available: random"),
        ("ralif(color=red)", "strategy 'ralif' has no option 'color'; options: rule"),
        ("random(seed=1)", "strategy 'random' has no option 'seed'"),
        ("ralif(rule)", "must be key=value"),
        ("ralif(", "cannot parse strategy spec"),
        ("ralif(rule=mean)", "unknown rule 'mean'; choose from single, expectation, truncated"),
        ("ralif(reading=book)", "unknown reading 'book'"),
        ("ralif(diversity=dpp)", "unknown diversity 'dpp'"),
        ("ralif(fraction=0)", r"fraction must be in \(0, 1\]"),
        ("ralif(fraction=1.5)", r"fraction must be in \(0, 1\]"),
        ("ralif(tau=1.2)", r"tau must be in \[0, 1\)"),
        ("ralif(centroids=mass)", "unknown centroids 'mass'; choose from uniform, score"),
        ("ralif(calibration=platt)", "unknown calibration 'platt'; choose from none, cv"),
        ("ralif(representative=mean)", "unknown representative 'mean'; choose from nearest, best, central"),
        ("ralif(target=margin)", "unknown target 'margin'; choose from pseudo, entropy"),
        ("ralif(damping=0)", "damping must be positive"),
        ("ralif(damping=10,step=newton)", "need step=first and engine=single"),
        ("ralif(target=entropy,engine=dask)", "need step=first and engine=single"),
        ("ralif(gate=all)", "unknown gate 'all'; choose from none, auto, half, error"),
        ("ralif(gate=1.5)", r"or a share in \(0, 1\]"),
        ("ralif(gate=half,engine=dask)", "engine=dask supports gate=none|auto only"),
    ],
)
def test_make_strategy_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        make_strategy(spec)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("gradnorm(loss=bogus)", "loss"),
        ("ralif(solver=lu)", "solver"),
        ("ralif(fraction=abc)", "fraction"),
    ],
)
def test_make_strategy_rejects_bad_values_up_front(spec, match):
    with pytest.raises(ValueError, match=match):
        make_strategy(spec)


def test_check_request_errors(data):
    x, _, labeled, unlabeled, head = data
    ok_l, ok_u = check_request(x, labeled.tolist(), unlabeled, 5)
    np.testing.assert_array_equal(ok_l, labeled)
    np.testing.assert_array_equal(ok_u, unlabeled)
    cases = [
        (labeled, unlabeled, len(unlabeled) + 1, f"batch size {len(unlabeled) + 1} exceeds the {len(unlabeled)}"),
        (labeled, unlabeled, 0, "batch size must be a positive integer, got 0"),
        (labeled, unlabeled, -3, "positive integer"),
        (labeled, unlabeled, 2.5, "positive integer"),
        (labeled, np.append(unlabeled, labeled[0]), 5, "both labeled and unlabeled"),
        (labeled, np.append(unlabeled, unlabeled[0]), 5, "unlabeled indices contain duplicates"),
        (labeled, np.append(unlabeled, 300), 5, "unlabeled indices out of range for 300 samples"),
        (np.append(labeled, -1), unlabeled, 5, "labeled indices out of range"),
    ]
    for lab, unl, budget, match in cases:
        with pytest.raises(ValueError, match=match):
            check_request(x, lab, unl, budget)
        # Every strategy goes through the same check before doing any work.
        with pytest.raises(ValueError, match=match):
            make_strategy("ralif").select(head, x, lab, unl, budget, np.random.default_rng(0))
    with pytest.raises(ValueError, match="2-D"):
        check_request(x[:, 0], labeled, unlabeled, 5)
    with pytest.raises(ValueError, match="integers"):
        check_request(x, labeled.astype(float), unlabeled, 5)


def test_model_requirement(data):
    x, _, labeled, unlabeled, _ = data
    with pytest.raises(ValueError, match="needs a trained model"):
        select("uncertainty", None, x, labeled, unlabeled, 5)
    for spec in ("random", "coreset"):
        assert_valid_batch(select(spec, None, x, labeled, unlabeled, 5), labeled, unlabeled, 5)


def test_top_k_lowest_nan_last_and_seeded_ties():
    s = torch.tensor([float("nan"), 1.0, 0.0, float("nan"), 2.0], dtype=torch.float64)
    np.testing.assert_array_equal(top_k_lowest(s, 3, np.random.default_rng(0)), [2, 1, 4])
    assert set(top_k_lowest(s, 5, np.random.default_rng(0))[3:]) == {0, 3}
    ties = torch.zeros(50, dtype=torch.float64)
    a = top_k_lowest(ties, 10, np.random.default_rng(5))
    np.testing.assert_array_equal(a, top_k_lowest(ties, 10, np.random.default_rng(5)))
    assert not np.array_equal(a, np.arange(10))  # ties are broken at random, not by position


# -- RALIF's candidate set and diversity step --------------------------------------------------------


@pytest.mark.parametrize("spec", ["ralif(diversity=none)", "ralif(diversity=none,rule=single,solver=cg)"])
def test_no_diversity_takes_the_best_scores(spec, data):
    x, _, labeled, unlabeled, head = data
    strategy = make_strategy(spec)
    scores = strategy.scores(head, x, labeled, unlabeled).numpy()
    order = np.argsort(scores, kind="stable")
    assert np.unique(scores[order[:11]]).size == 11  # no ties at the top: the expected batch is unique
    picked = strategy.select(head, x, labeled, unlabeled, 10, np.random.default_rng(0))
    np.testing.assert_array_equal(picked, unlabeled[order[:10]])


@pytest.mark.parametrize(("fraction", "budget"), [(0.1, 10), (0.25, 10), (0.1, 40)])
@pytest.mark.parametrize("diversity", ["kmeanspp", "meanshift"])
def test_batch_comes_from_the_candidate_set(fraction, budget, diversity, data):
    x, _, labeled, unlabeled, head = data
    strategy = RalifStrategy(fraction=fraction, diversity=diversity)
    picked = strategy.select(head, x, labeled, unlabeled, budget, np.random.default_rng(0))
    cand = strategy.last_info["candidates"]
    n_cand = max(budget, math.ceil(fraction * len(unlabeled)))  # 27, 68, then the budget itself
    assert len(cand) == n_cand and np.unique(cand).size == n_cand
    assert_valid_batch(picked, labeled, unlabeled, budget)
    assert np.isin(picked, cand).all()
    # The candidates are the lowest scores, best first.
    scores = RalifStrategy().scores(head, x, labeled, unlabeled).numpy()
    pos = np.searchsorted(unlabeled, cand)
    assert np.all(np.diff(scores[pos]) >= 0)
    assert scores[pos].max() <= np.sort(scores)[n_cand - 1]
    if diversity == "kmeanspp":
        assert picked[0] == cand[0]  # k-means++ starts from the best-scored candidate
    assert strategy.last_info["solver"] == "cholesky"


@pytest.mark.parametrize("gate", ["half", "error"])
def test_gated_candidates_are_the_best_scored_among_the_least_sure(gate, data):
    x, _, labeled, unlabeled, head = data
    strategy = RalifStrategy(gate=gate, gate_from=0, diversity="none")
    picked = strategy.select(head, x, labeled, unlabeled, 5, np.random.default_rng(0))
    probs = head.predict_proba(x[unlabeled])
    top2 = np.sort(probs, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    share = 0.5 if gate == "half" else max(0.1, float((1 - top2[:, 1]).mean()))
    keep = math.ceil(share * len(unlabeled))
    assert strategy.last_info["gate_share"] == pytest.approx(keep / len(unlabeled))
    unsure = unlabeled[np.argsort(margin, kind="stable")[:keep]]
    cand = strategy.last_info["candidates"]
    assert np.isin(cand, unsure).all() and np.isin(picked, cand).all()
    # Among the unsure, the candidates are exactly the lowest plain scores.
    scores = RalifStrategy(gate="none").scores(head, x, labeled, unlabeled).numpy()
    pos = np.searchsorted(unlabeled, unsure)
    best = unsure[np.argsort(scores[pos], kind="stable")[: len(cand)]]
    assert set(cand.tolist()) == set(best.tolist())


def test_gate_from_applies_the_gate_only_from_that_many_labels_per_class(data):
    x, _, labeled, unlabeled, head = data
    per_class = len(labeled) / head.num_classes
    plain = RalifStrategy(gate="none").scores(head, x, labeled, unlabeled)
    gated = RalifStrategy(gate="0.2", gate_from=0).scores(head, x, labeled, unlabeled)
    assert int(gated.isnan().sum()) > 0
    # Fewer labels per class than gate_from: the plain scores; at or above it: the gated ones.
    early = RalifStrategy(gate="0.2", gate_from=per_class + 1).scores(head, x, labeled, unlabeled)
    late = RalifStrategy(gate="0.2", gate_from=per_class).scores(head, x, labeled, unlabeled)
    assert torch.equal(early, plain)
    assert torch.equal(late.isnan(), gated.isnan())
    with pytest.raises(ValueError, match="gate_from"):
        RalifStrategy(gate="0.2", gate_from=-1)
    # The default gate (auto) keeps the least-sure 10 % once the labels per class reach gate_from.
    auto = RalifStrategy(gate_from=per_class).scores(head, x, labeled, unlabeled)
    assert int((~auto.isnan()).sum()) == math.ceil(0.1 * len(unlabeled))
    assert torch.equal(RalifStrategy().scores(head, x, labeled, unlabeled), plain)  # < 100 labels per class
    assert RalifStrategy(engine="dask", gate_from=0).gate == "auto"  # resolves to no gate there


@pytest.mark.parametrize(("spec", "budget"), [("candidates=balanced", 20), ("multiple=8", 40),
                                              ("candidates=score", 60), ("candidates=score", 150)])
def test_the_gate_keeps_every_candidate_it_needs_and_no_other(spec, budget, data):
    # A class's equal share, a multiple of the batch or a batch larger than the least-sure 10 % never
    # reach images the gate left out: the gate keeps as many as the selection takes.
    x, _, labeled, unlabeled, head = data
    strategy = make_strategy(f"ralif(gate=auto,gate_from=0,{spec})")
    picked = strategy.select(head, x, labeled, unlabeled, budget, np.random.default_rng(0))
    probs = head.predict_proba(x[unlabeled])
    top2 = np.sort(probs, axis=1)[:, -2:]
    keep = round(strategy.last_info["gate_share"] * len(unlabeled))
    assert keep >= max(budget, math.ceil(0.1 * len(unlabeled)))
    unsure = unlabeled[np.argsort(top2[:, 1] - top2[:, 0], kind="stable")[:keep]]
    assert np.isin(strategy.last_info["candidates"], unsure).all() and np.isin(picked, unsure).all()
    assert len(picked) == budget


def test_kmeanspp_batch_is_more_spread_than_top_scores(data):
    x, _, labeled, unlabeled, head = data
    div = RalifStrategy(fraction=0.5, diversity="kmeanspp", space="raw").select(
        head, x, labeled, unlabeled, 10, np.random.default_rng(0))
    top = RalifStrategy(fraction=0.5, diversity="none").select(
        head, x, labeled, unlabeled, 10, np.random.default_rng(0))

    def min_pairwise(idx):
        d = np.linalg.norm(x[idx][:, None] - x[idx][None], axis=-1)
        return d[np.triu_indices(len(idx), 1)].min()

    assert min_pairwise(div) > min_pairwise(top)


def test_class_balanced_take_equal_shares_best_first():
    from ralif.strategies.ralif import class_balanced_take

    order = np.arange(20)
    classes = np.array([0] * 12 + [1] * 5 + [2] * 3)
    # Quota 3 per class: the three best of each class, in the given order.
    assert class_balanced_take(order, classes, 9, 3).tolist() == [0, 1, 2, 12, 13, 14, 17, 18, 19]
    # Class 2 has only 3: its unused share goes to the others.
    got = class_balanced_take(order, classes, 12, 3)
    assert len(got) == 12 and set(got) >= {17, 18, 19} and np.bincount(classes[got]).tolist() == [5, 4, 3]


def test_balanced_pool_grad_equals_uniform_when_classes_are_even(data):
    from ralif.influence import pool_state
    from ralif.strategies.ralif import balanced_pool_grad

    x, _y, _labeled, unlabeled, head = data
    state = pool_state(head, x, unlabeled)
    pred = state.probs.argmax(1).numpy()
    # Keep an equal number of pool points per predicted class: then every weight is the same.
    n = np.bincount(pred).min()
    even = np.sort(np.concatenate([unlabeled[pred == c][:n] for c in range(4)]))
    st = pool_state(head, x, even)
    torch.testing.assert_close(balanced_pool_grad(head, x, even, st.probs), st.grad)
    # On the uneven pool the weighting differs from the plain mean.
    assert not torch.allclose(balanced_pool_grad(head, x, unlabeled, state.probs), state.grad)


def test_confidence_weighted_pool_grad_is_the_weighted_mean_of_the_residual_terms(data):
    from ralif.influence import pool_state
    from ralif.strategies.ralif import weighted_pool_grad

    x, _y, _labeled, unlabeled, head = data
    state = pool_state(head, x, unlabeled)
    torch.testing.assert_close(weighted_pool_grad(head, x, unlabeled, state.probs, torch.ones(len(unlabeled))),
                               state.grad)
    conf = state.probs.max(1).values
    got = weighted_pool_grad(head, x, unlabeled, state.probs, conf)
    # Brute force over the head's standardised input with a bias column.
    z = torch.as_tensor((x[unlabeled] - head.standardizer.mean) / head.standardizer.scale, dtype=torch.float64)
    z = torch.cat([z, torch.ones(len(z), 1, dtype=torch.float64)], 1)
    resid = state.probs.clone()
    resid[torch.arange(len(resid)), state.probs.argmax(1)] -= 1.0
    want = ((conf / conf.sum())[:, None] * resid).T @ z
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-4, atol=1e-6)
    picked = make_strategy("ralif(weighting=confidence)").select(head, x, _labeled, unlabeled, 5,
                                                                 np.random.default_rng(0))
    assert len(set(picked.tolist())) == 5 and set(picked.tolist()) <= set(unlabeled.tolist())


def test_pca_space_clusters_on_top_directions_and_skips_what_is_labeled():
    # 200-d features (more than the 64 directions kept): 6 blobs, one of them already labeled.
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=6.0, size=(6, 200))
    y = np.repeat(np.arange(6), 150)
    x = (centers[y] + rng.normal(size=(len(y), 200))).astype(np.float32)
    labeled = np.flatnonzero(y == 0)[:40]
    unlabeled = np.setdiff1d(np.arange(len(y)), labeled)
    head = fit_head(x, labeled, y[labeled], 6, device="cpu")
    picked = select("ralif(space=pca,fraction=1,cold=0)", head, x, labeled, unlabeled, 5)
    assert_valid_batch(picked, labeled, unlabeled, 5)
    # The labeled blob is covered: the five picks are one from each of the others.
    assert sorted(y[picked].tolist()) == [1, 2, 3, 4, 5]


def test_cold_start_takes_typical_points_until_enough_labels(data):
    x, _y, labeled, unlabeled, head = data
    cold = make_strategy("ralif(cold=20)")  # 30 labels < 20 per class × 4 classes
    cold.select(head, x, labeled, unlabeled, 8, np.random.default_rng(0))
    assert cold.last_info.get("cold_start") is True
    warm = make_strategy("ralif(cold=5)")
    warm.select(head, x, labeled, unlabeled, 8, np.random.default_rng(0))
    assert "cold_start" not in warm.last_info


def test_candidates_scale_with_the_batch(data):
    x, _y, labeled, unlabeled, head = data
    s = make_strategy("ralif(multiple=10,diversity=none)")
    s.select(head, x, labeled, unlabeled, 20, np.random.default_rng(0))
    assert len(s.last_info["candidates"]) == 200  # 10 × 20, more than 10 % of 270


def test_a_strategy_returning_a_wrong_batch_is_stopped(data):
    # The result check: a duplicate, a labeled image, an index outside the pool, a short batch.
    x, _, labeled, unlabeled, _ = data
    from dataclasses import dataclass

    from ralif.strategies.base import Strategy

    for bad in ([unlabeled[0]] * 5, [labeled[0], *unlabeled[:4]], [*unlabeled[:4], 10_000], list(unlabeled[:4])):
        @dataclass
        class Broken(Strategy):
            name = "broken"
            needs_model = False

            def _select(self, head, features, labeled, unlabeled, budget, rng, out=bad):
                return np.asarray(out)

        with pytest.raises(RuntimeError, match="'broken' returned an invalid batch"):
            Broken().select(None, x, labeled, unlabeled, 5, np.random.default_rng(0))
