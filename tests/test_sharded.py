"""Sharded RALIF scoring and feature extraction on a real Dask LocalCluster."""

import io
import json
import os
from contextlib import redirect_stdout

import dask
import numpy as np
import pytest
import torch
from distributed import Client, LocalCluster, get_worker
from PIL import Image

from ralif import sharded
from ralif.cli import main
from ralif.encoders import Encoder, build_encoder, extract_features
from ralif.feature_cache import FeatureCache
from ralif.head import fit_head
from ralif.images import scan_images
from ralif.ranking import top_k_lowest
from ralif.sharded import (
    MemmapSource,
    ShardError,
    at_or_below,
    covering_threshold,
    memmap_source,
    merge_candidates,
    score_summary,
    shard_bounds,
    sharded_candidates,
    sharded_fill_cache,
)
from ralif.strategies import make_strategy
from ralif.strategies.ralif import RalifStrategy
from ralif.worker import main_script_hidden


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded workers in this process: a real scheduler and real tasks, no start-up cost."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as lc, \
            Client(lc, set_as_default=False) as client:
        yield lc, client
        sharded.close_clients()  # the strategies' own clients to this cluster


@pytest.fixture(scope="module")
def data():
    """2000 samples, D=16, K=5 Gaussian blobs; 60 labeled."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(5, 16))
    y = np.arange(2000) % 5
    x = (centers[y] + rng.normal(size=(2000, 16))).astype(np.float32)
    perm = rng.permutation(2000)
    labeled, unlabeled = np.sort(perm[:60]), np.sort(perm[60:])
    head = fit_head(x, labeled, y[labeled], 5, device="cpu")
    return x, labeled, unlabeled, head


def npy_memmap(x, path):
    np.save(path, x)
    return np.load(path, mmap_mode="r")


# -- the same selection as the single-process strategy -------------------------------------------------


@pytest.mark.parametrize(
    "options",
    ["", "diversity=kmeanspp", "diversity=none,rule=single", "reading=reference", "solver=cg,diversity=meanshift"],
)
@pytest.mark.parametrize("memmap", [False, True])
def test_selection_equals_single_process(options, memmap, cluster, data, tmp_path):
    lc, _ = cluster
    x, labeled, unlabeled, head = data
    feats = npy_memmap(x, tmp_path / "f.npy") if memmap else x
    single = make_strategy(f"ralif({options})")
    sharded = make_strategy(f"ralif({options + ',' if options else ''}engine=dask,"
                            f"scheduler={lc.scheduler_address},shards=7)")
    a = single.select(head, feats, labeled, unlabeled, 25, np.random.default_rng(4))
    b = sharded.select(head, feats, labeled, unlabeled, 25, np.random.default_rng(4))
    np.testing.assert_array_equal(b, a)
    np.testing.assert_array_equal(sharded.last_info["candidates"], single.last_info["candidates"])
    assert sharded.last_info["features_via"] == ("memmap path" if memmap else "scatter")
    assert sharded.last_info["shards"] == 7 and sharded.last_info["solver"] == single.last_info["solver"]


def test_candidate_scores_match_to_float32_accumulation(cluster, data):
    # g_U sums float32 products over different row groups than the single pass, so scores agree to
    # float32 accumulation precision, not bit for bit; the ranking here is identical.
    _, client = cluster
    x, labeled, unlabeled, head = data
    ref = RalifStrategy().scores(head, x, labeled, unlabeled).numpy()
    n = 200
    res = sharded_candidates(head, x, labeled, unlabeled, n, np.random.default_rng(1), client=client, shards=5)
    expect = unlabeled[top_k_lowest(torch.from_numpy(ref), n, np.random.default_rng(1))]
    np.testing.assert_array_equal(res.candidates, expect)
    np.testing.assert_allclose(res.scores, ref[np.searchsorted(unlabeled, res.candidates)], rtol=1e-5, atol=0)
    assert res.info["gathered_rows"] < 2 * n  # the threshold pass sends little more than the candidates


@pytest.mark.parametrize("shards", [1, 3, 40])
def test_unsorted_partial_pool(shards, cluster, data):
    """A pool that is neither sorted nor the complement of the labeled set; rows past 1500 are in no
    pool, so the shards there are skipped."""
    _, client = cluster
    x, labeled, unlabeled, head = data
    pool = np.random.default_rng(2).permutation(unlabeled[unlabeled < 1500])[:900]
    n = 90
    ref = RalifStrategy().scores(head, x, labeled, pool).numpy()
    res = sharded_candidates(head, x, labeled, pool, n, np.random.default_rng(3), client=client, shards=shards)
    want = pool[top_k_lowest(torch.from_numpy(ref), n, np.random.default_rng(3))]
    np.testing.assert_array_equal(res.candidates, want)
    assert res.info["shards"] == sum(bool(((pool >= lo) & (pool < hi)).any()) for lo, hi in shard_bounds(2000, shards))


def test_more_shards_than_rows(cluster, data):
    _, client = cluster
    x, _, _, head = data
    x, labeled = x[:40], np.arange(0, 40, 4)
    pool = np.setdiff1d(np.arange(40), labeled)
    ref = RalifStrategy().scores(head, x, labeled, pool).numpy()
    res = sharded_candidates(head, x, labeled, pool, 12, np.random.default_rng(3), client=client, shards=500)
    want = pool[top_k_lowest(torch.from_numpy(ref), 12, np.random.default_rng(3))]
    np.testing.assert_array_equal(res.candidates, want)
    assert res.info["shards"] == 30  # one per pool row: empty and labeled-only shards are skipped


# -- the top-candidate merge, exactly, on scores with ties and NaN -------------------------------------


def merged_top(scores, unlabeled, n, bounds, points, seed):
    """The map-reduce of the candidate pass, run without a cluster: per shard a summary, then the rows at
    or below the covering threshold, then the merge under the single-process draws."""
    rows_of = [np.flatnonzero((unlabeled >= lo) & (unlabeled < hi)) for lo, hi in bounds]
    parts = [(unlabeled[p], scores[p]) for p in rows_of if len(p)]
    t = covering_threshold([score_summary(s, points) for _, s in parts], n)
    kept = [at_or_below(r, s, t) for r, s in parts]
    rows = np.concatenate([r for r, _ in kept])
    got = np.concatenate([s for _, s in kept])
    tie = np.random.default_rng(seed).random(len(unlabeled))
    return merge_candidates(rows, got, unlabeled, tie, n)[0], len(rows)


@pytest.mark.parametrize(
    ("n_rows", "shards", "n", "points"),
    [
        (400, 1, 40, 1024),  # one shard
        (400, 7, 40, 1024),  # uneven boundaries
        (400, 40, 35, 3),  # every shard smaller than the budget, coarse summaries
        (400, 400, 40, 1024),  # one row per shard
        (400, 5, 300, 2),  # most of the pool, coarsest summaries
        (50, 50, 50, 4),  # the whole pool
    ],
)
@pytest.mark.parametrize("kind", ["distinct", "ties", "nan"])
def test_merge_equals_top_k_lowest_over_the_whole_pool(n_rows, shards, n, points, kind):
    rng = np.random.default_rng(n_rows + shards + n)
    unlabeled = rng.permutation(np.sort(rng.choice(n_rows * 2, n_rows, replace=False)))
    scores = rng.normal(size=n_rows)
    if kind == "ties":
        scores = np.round(scores)  # a handful of values shared by many rows: ranks decided by the draws
    elif kind == "nan":
        scores[rng.random(n_rows) < 0.6] = np.nan  # often fewer finite scores than n
    expect = unlabeled[top_k_lowest(torch.from_numpy(scores), n, np.random.default_rng(9))]
    got, sent = merged_top(scores, unlabeled, n, shard_bounds(n_rows * 2, shards), points, 9)
    np.testing.assert_array_equal(got, expect)
    assert sent >= n


def test_shard_bounds_cover_every_row_once():
    for n_rows, shards in [(10, 1), (10, 3), (10, 10), (10, 25), (1, 4), (1000, 7)]:
        b = shard_bounds(n_rows, shards)
        assert b[0][0] == 0 and b[-1][1] == n_rows and all(hi > lo for lo, hi in b)
        assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
        assert len(b) == min(shards, n_rows)
    with pytest.raises(ValueError, match="positive"):
        shard_bounds(10, 0)


def test_summary_bounds_the_rows_sent():
    scores = np.random.default_rng(0).normal(size=10_000)
    vals, counts = score_summary(scores, 100)
    assert len(vals) == 100 and counts[-1] == 10_000 and np.all(np.diff(counts) <= 100)
    assert all((scores <= v).sum() >= c for v, c in zip(vals, counts))
    t = covering_threshold([(vals, counts)], 1234)
    assert 1234 <= (scores <= t).sum() <= 1234 + 100


def test_memmap_source_only_for_whole_files(tmp_path, data):
    x = data[0]
    mm = npy_memmap(x, tmp_path / "f.npy")
    src = memmap_source(mm)
    assert src is not None and src.shape == x.shape and src.offset > 0
    np.testing.assert_array_equal(src.open()[5:9], x[5:9])
    assert memmap_source(x) is None and memmap_source(mm[3:]) is None  # a view's offset is not tracked


# -- feature extraction ---------------------------------------------------------------------------------


class MeanEncoder(Encoder):
    """Cheap and deterministic (4x4 colour means); counts what it encodes, optionally fails."""

    def __init__(self, fail: bool = False) -> None:
        self.id, self.dim, self.device = "test:means", 48, torch.device("cpu")
        self.encoded, self.fail = 0, fail

    def transform(self, im: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(im.resize((16, 16)), dtype=np.float32) / 255.0).permute(2, 0, 1)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        if self.fail:
            raise RuntimeError("encoder exploded")
        self.encoded += len(batch)
        return torch.nn.functional.avg_pool2d(batch, 4).flatten(1)


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(30):
        arr = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"im_{i:02d}.png")
    (root / "im_99.png").write_bytes((root / "im_03.png").read_bytes())  # a duplicate file
    return scan_images(root)


def test_extraction_fills_the_cache_and_a_second_run_hits_it(cluster, images, tmp_path):
    _, client = cluster
    enc = MeanEncoder()
    expect = extract_features(MeanEncoder(), images, num_workers=0)
    res = sharded_fill_cache(enc, images, tmp_path / "cache", client=client, shards=4, batch_size=4, shard_size=5)
    np.testing.assert_allclose(res.features, expect, rtol=1e-6)
    assert (res.hits, res.misses, res.computed) == (0, 31, 30) and enc.encoded == 30  # the duplicate once
    cache = FeatureCache(tmp_path / "cache", enc.id)
    assert len(cache) == 30 and len(cache.shards) >= 4  # every worker task committed its own shards
    again = sharded_fill_cache(enc, images, tmp_path / "cache", client=client, shards=4)
    assert (again.hits, again.computed) == (31, 0) and enc.encoded == 30
    np.testing.assert_array_equal(again.features, res.features)


def test_extraction_by_encoder_spec_builds_it_on_the_workers(cluster, images, tmp_path):
    _, client = cluster
    res = sharded_fill_cache("resnet18-32:none", images, tmp_path / "cache", client=client, device="cpu")
    expect = extract_features(build_encoder("resnet18-32:none", device="cpu"), images, num_workers=0)
    np.testing.assert_allclose(res.features, expect, rtol=1e-4, atol=1e-5)
    assert res.computed == 30 and len(FeatureCache(tmp_path / "cache", "torchvision:resnet18:random0:32px")) == 30


# -- failures surface as clear errors -------------------------------------------------------------------


def test_feature_file_missing_on_the_workers(cluster, data, tmp_path):
    _, client = cluster
    x, labeled, unlabeled, head = data
    mm = npy_memmap(x, tmp_path / "f.npy")
    os.remove(tmp_path / "f.npy")  # the driver still has its mapping; the workers open the path
    with pytest.raises(ShardError, match=r"pool pass of rows \d+:\d+ failed on worker .*same path"):
        sharded_candidates(head, mm, labeled, unlabeled, 50, np.random.default_rng(0), client=client, shards=3)


def test_encoder_failure_names_the_shard(cluster, images, tmp_path):
    _, client = cluster
    with pytest.raises(ShardError, match=r"feature extraction of missing images \d+:\d+ failed on worker "
                                         r".*RuntimeError: encoder exploded"):
        sharded_fill_cache(MeanEncoder(fail=True), images, tmp_path / "cache", client=client)


def test_no_workers_is_a_clear_error(data):
    x, labeled, unlabeled, head = data
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as lc, \
            Client(lc, set_as_default=False) as client, \
            pytest.raises(ShardError, match="no dask worker joined the scheduler"):
        sharded_candidates(head, x, labeled, unlabeled, 50, np.random.default_rng(0), client=client,
                           worker_timeout=0.2)


class _DyingSource(MemmapSource):
    """A feature file whose opening ends the worker process that opens it (never the driver)."""

    def open(self):
        try:
            get_worker()
        except ValueError:
            return super().open()
        os._exit(3)


def test_worker_processes_select_the_same_batch_and_a_dead_worker_is_reported(data, tmp_path, monkeypatch):
    x, labeled, unlabeled, head = data
    mm = npy_memmap(x, tmp_path / "f.npy")
    # No retries, so a worker that dies ends the call at once instead of after three restarts.
    # Spawned workers must not rerun whatever script an earlier test left as __main__ (a page).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), main_script_hidden(), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc, \
            Client(lc, set_as_default=False) as client:
        spec = f"ralif(engine=dask,scheduler={lc.scheduler_address},shards=4)"
        a = make_strategy("ralif").select(head, mm, labeled, unlabeled, 20, np.random.default_rng(5))
        b = make_strategy(spec).select(head, mm, labeled, unlabeled, 20, np.random.default_rng(5))
        np.testing.assert_array_equal(b, a)
        src = memmap_source(mm)
        monkeypatch.setattr(sharded, "memmap_source", lambda f: _DyingSource(**vars(src)))
        with pytest.raises(ShardError, match=r"pool pass of rows \d+:\d+: a worker died while running it"):
            sharded_candidates(head, mm, labeled, unlabeled, 50, np.random.default_rng(0), client=client)
        sharded.close_clients()


# -- the option ----------------------------------------------------------------------------------------


def test_engine_option_parses_and_round_trips():
    s = make_strategy("ralif(engine=dask,scheduler=tcp://10.0.0.5:8786,shards=16,workers=2)")
    assert (s.engine, s.scheduler, s.shards, s.workers) == ("dask", "tcp://10.0.0.5:8786", 16, 2)
    assert make_strategy(s.spec()) == s
    assert make_strategy("ralif").engine == "single"
    with pytest.raises(ValueError, match="unknown engine 'spark'"):
        make_strategy("ralif(engine=spark)")
    with pytest.raises(ValueError, match="shards must be"):
        make_strategy("ralif(shards=-1)")


def test_benchmark_command_with_the_dask_engine():
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["benchmark", "selection", "--pool", "3000", "--dim", "16", "--classes", "4", "--budget", "20",
                   "--engine", "dask", "--scheduler", "threads", "--workers", "2", "--shards", "3",
                   "--strategy", "ralif(diversity=none)"])
    sharded.close_clients()
    assert rc == 0
    result = json.loads(out.getvalue())
    assert "engine=dask" in result["strategy"] and result["info"]["shards"] == 3
    assert result["selected"] == 20 and result["cluster_start_seconds"] >= 0
