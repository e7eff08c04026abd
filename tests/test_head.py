"""The linear softmax head: convergence, agreement with independent solvers, input checks."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax
from sklearn.linear_model import LogisticRegression

import ralif.head
from ralif.head import LinearHead, Standardizer, fit_head

L2 = 1e-2


def blobs(n=240, d=6, k=4, seed=0, spread=2.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(k, d))
    y = rng.integers(k, size=n)
    x = centers[y] + rng.normal(size=(n, d))
    # Uneven scales and offsets so that standardisation matters.
    x = x * rng.uniform(0.1, 10.0, size=d) + rng.uniform(-5, 5, size=d)
    return x, y


@pytest.fixture(scope="module")
def problem():
    x, y = blobs()
    labeled = np.arange(0, 240, 2)
    head = fit_head(x, labeled, y[labeled], 4, l2=L2, device="cpu")
    return x, y, labeled, head


def objective_and_grad(w_flat, x_tilde, y, k, l2):
    """Mean cross-entropy + l2/2‖W‖² over the design rows, in numpy (independent of the library)."""
    w = w_flat.reshape(k, -1)
    logits = x_tilde @ w.T
    logp = log_softmax(logits, axis=1)
    m = len(y)
    f = -logp[np.arange(m), y].mean() + 0.5 * l2 * (w * w).sum()
    resid = np.exp(logp)
    resid[np.arange(m), y] -= 1.0
    g = resid.T @ x_tilde / m + l2 * w
    return f, g.reshape(-1)


def test_fit_converges_to_stationary_point(problem):
    x, y, labeled, head = problem
    xt = head.design(x, labeled)
    w = head.weight.clone().requires_grad_(True)
    target = torch.as_tensor(y[labeled])
    loss = torch.nn.functional.cross_entropy(xt @ w.T, target) + 0.5 * L2 * (w * w).sum()
    (grad,) = torch.autograd.grad(loss, w)
    assert grad.abs().max().item() < 1e-5
    assert head.weight.dtype == torch.float64
    assert head.weight.shape == (4, x.shape[1] + 1)
    assert head.num_classes == 4 and head.dim == x.shape[1]


def test_fit_matches_scipy_on_the_same_objective(problem):
    x, y, labeled, head = problem
    xt = head.design(x, labeled).numpy()
    res = minimize(
        objective_and_grad, np.zeros(4 * xt.shape[1]), args=(xt, y[labeled], 4, L2), jac=True,
        method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000},
    )
    w_ref = res.x.reshape(4, -1)
    assert np.abs(objective_and_grad(res.x, xt, y[labeled], 4, L2)[1]).max() < 1e-7
    np.testing.assert_allclose(head.weight.numpy(), w_ref, atol=1e-5)
    # Probabilities over the whole data set, through the head's own standardisation.
    p_ref = softmax(head.design(x, slice(None)).numpy() @ w_ref.T, axis=1)
    np.testing.assert_allclose(head.predict_proba(x), p_ref, atol=1e-6)


def test_fit_agrees_with_sklearn_predictions(problem):
    x, y, labeled, head = problem
    m = len(labeled)
    z_l = head.design(x, labeled).numpy()[:, :-1]
    z = head.design(x, slice(None)).numpy()[:, :-1]
    # sklearn minimises C·Σ CE + ½‖w‖² (intercept unpenalised); dividing by C·m gives mean CE + 1/(2Cm)‖w‖²,
    # so C = 1/(l2·m) matches everything but the penalty on the bias, which ours includes.
    clf = LogisticRegression(C=1.0 / (L2 * m), tol=1e-10, max_iter=10_000).fit(z_l, y[labeled])
    ours = head.predict_proba(x)
    theirs = clf.predict_proba(z)
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.99
    assert np.abs(ours - theirs).mean() < 0.01
    # Held-out accuracy is the same task either way and clearly above chance.
    rest = np.setdiff1d(np.arange(len(y)), labeled)
    acc = (head.predict(x, rest) == y[rest]).mean()
    assert acc > 0.9
    assert abs(acc - (clf.predict(z[rest]) == y[rest]).mean()) <= 0.02


def test_fit_is_deterministic(problem):
    x, y, labeled, head = problem
    again = fit_head(x, labeled, y[labeled], 4, l2=L2, device="cpu")
    assert torch.equal(head.weight, again.weight)
    np.testing.assert_array_equal(head.standardizer.mean, again.standardizer.mean)


def test_predict_proba_rows_and_chunking(problem, monkeypatch):
    x, _, _, head = problem
    p = head.predict_proba(x)
    assert p.shape == (len(x), 4)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    # Pool-sized products run in float32 on standardised rows: agreement to float32 round-off.
    idx = np.array([5, 0, 17, 5])
    np.testing.assert_allclose(head.predict_proba(x, idx), p[idx], rtol=1e-5, atol=1e-9)
    monkeypatch.setattr(ralif.head, "chunk_size", lambda *a, **k: 7)
    np.testing.assert_allclose(head.predict_proba(x), p, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(head.predict(x), p.argmax(1))


def test_design_standardises_and_appends_bias(problem):
    x, _, labeled, head = problem
    xt = head.design(x, labeled).numpy()
    expected = (x[labeled] - x.mean(0)) / x.std(0)
    np.testing.assert_allclose(xt[:, :-1], expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(xt[:, -1], 1.0)


def test_standardizer_constant_column_and_subsample():
    x = np.random.default_rng(0).normal(size=(500, 3))
    x[:, 1] = 7.0
    st = Standardizer.fit(x)
    assert st.scale[1] == 1.0 and st.mean[1] == 7.0
    sub = Standardizer.fit(x, max_rows=200)
    np.testing.assert_allclose(sub.mean, st.mean, atol=0.2)
    with pytest.raises(ValueError, match="empty"):
        Standardizer.fit(np.zeros((0, 3)))


def test_from_linear_layer_is_softmax_of_affine_map():
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(5, 7)), rng.normal(size=5)
    x = rng.normal(size=(30, 7)).astype(np.float32)
    head = LinearHead.from_linear_layer(w, b, device="cpu")
    expected = softmax(x.astype(np.float64) @ w.T + b, axis=1)
    np.testing.assert_allclose(head.predict_proba(x), expected, rtol=1e-5, atol=1e-9)
    assert head.num_classes == 5 and head.dim == 7


@pytest.mark.parametrize(
    ("labeled", "labels", "num_classes", "match"),
    [
        ([], [], 3, "without labeled"),
        ([0, 1, 2], [0, 1], 3, "3 labeled indices but 2 labels"),
        ([0, 1, 2], [0, 1, 3], 3, r"labels must lie in \[0, 3\)"),
        ([0, 1, 2], [0, -1, 2], 3, r"labels must lie in \[0, 3\)"),
        ([0, 1, 2], [0, 0, 0], 0, "num_classes"),
    ],
)
def test_fit_rejects_bad_labels(labeled, labels, num_classes, match):
    x = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match=match):
        fit_head(x, np.asarray(labeled, dtype=np.int64), np.asarray(labels, dtype=np.int64), num_classes)


def test_fit_rejects_nan_features_and_bad_l2():
    x = np.random.default_rng(0).normal(size=(10, 2))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_head(x, np.arange(5), np.zeros(5, dtype=int), 2)
    # With a given standardizer the check happens on the labeled rows themselves.
    with pytest.raises(ValueError, match="NaN"):
        fit_head(x, np.arange(5), np.zeros(5, dtype=int), 2, standardizer=Standardizer.identity(2))
    with pytest.raises(ValueError, match="l2 must be positive"):
        fit_head(np.nan_to_num(x), np.arange(5), np.zeros(5, dtype=int), 2, l2=0.0)


def test_head_fit_device_keeps_small_fits_on_the_cpu():
    from ralif.head import GPU_FIT_MIN_WORK, head_fit_device

    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert head_fit_device(1000, 1024, 10, torch.device("cpu")).type == "cpu"
    assert head_fit_device(1000, 1024, 10, cuda).type == "cpu"  # the measured slow case
    big = int(GPU_FIT_MIN_WORK // (1025 * 10)) + 1
    assert head_fit_device(big, 1024, 10, cuda) == cuda
    assert head_fit_device(big - 2, 1024, 10, cuda).type == "cpu"


def test_fit_device_choice_gives_the_same_head(monkeypatch):
    import ralif.head as rh

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    lab = np.arange(200)
    auto = fit_head(x, lab, y[lab], 2, device="cpu")
    explicit = fit_head(x, lab, y[lab], 2, device="cpu", fit_device="cpu")
    assert torch.equal(auto.weight, explicit.weight) and auto.device.type == "cpu"
    seen = []
    monkeypatch.setattr(rh, "head_fit_device", lambda *a: seen.append(a) or torch.device("cpu"))
    fit_head(x, lab, y[lab], 2, device="cpu")
    assert seen == [(200, 6, 2, torch.device("cpu"))]
