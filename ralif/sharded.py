"""RALIF scoring and feature extraction as maps over shards on a Dask cluster.

Scoring splits the rows of the feature matrix into contiguous shards and runs three maps with small
reductions in between (docs/distributed.md has the volumes and how to run it across machines):

1. ``pool_state`` on each shard's unlabeled rows. The shard's probabilities stay on its worker;
   only (n_j, n_j·L_j, n_j·g_j), K(D+1) + 2 numbers, come back and are summed into L_U and g_U.
2. The driver solves s = H⁻¹ g_U once (H is over the labeled set, which is small). Each shard then
   computes ΔL_U and the score for its rows from the probabilities kept on its worker, and sends a
   fixed-size summary of its sorted scores.
3. From the summaries the driver picks a threshold that provably keeps every one of the n best
   scores; each shard sends only its rows at or below it, and the driver ranks them with the
   single-process tie-break (``top_k_lowest``) under the same random draws. The diversity step
   then runs on the driver over the candidates, exactly as in ``RalifStrategy``.

Workers read their own row range of a memory-mapped file by path, so the pool never passes
through the scheduler; in-memory features are scattered to the workers once per call instead.

Extraction maps an encoder over shards of the images missing from the feature cache; each worker
writes committed cache shards (``FeatureCache`` writes are atomic), and the driver reads the
features back from the shared cache folder.

Dask is imported only when these functions are used, so the rest of the library does not need it.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import mmap
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch

from ralif.compute import as_index
from ralif.encoders import Encoder, PrecomputedEmbeddings, build_encoder
from ralif.feature_cache import CacheResult, FeatureCache, default_cache_root, fill_cache
from ralif.head import LinearHead
from ralif.images import ImageList
from ralif.influence import InfluenceSolution, PoolState, delta_pool_loss, pool_state, solve_influence
from ralif.ranking import top_k_lowest
from ralif.scoring import ralif_scores

if TYPE_CHECKING:
    from distributed import Client

SCHEDULERS_HELP = "local (worker processes on this machine) | threads (workers in this process) | tcp://host:port"
# Points of each shard's score summary: a shard sends at most len/POINTS rows more than it must.
SUMMARY_POINTS = 1024
WORKER_TIMEOUT_S = 60.0


class ShardError(RuntimeError):
    """A shard's task failed on a worker, or the cluster could not run it; the message says which."""


# -- where the features come from ------------------------------------------------------------------


@dataclass(frozen=True)
class MemmapSource:
    """A memory-mapped feature file that a worker opens by path and reads only its rows of."""

    path: str
    dtype: str
    shape: tuple[int, int]
    offset: int
    order: Literal["C", "F"]

    def open(self) -> np.memmap:
        try:
            return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape,
                             order=self.order)
        except OSError as exc:
            raise OSError(f"cannot open the feature file {self.path} ({exc.strerror or exc}); every "
                          f"worker must see it at the same path (shared storage)") from exc


def memmap_source(features: np.ndarray) -> MemmapSource | None:
    """The file behind ``features`` when it is a whole memory-mapped file (np.load(mmap_mode=...)
    or np.memmap); None for in-memory arrays and for views, whose offset numpy does not track."""
    if not isinstance(features, np.memmap) or not isinstance(features.base, mmap.mmap):
        return None
    if features.filename is None or not (features.flags.c_contiguous or features.flags.f_contiguous):
        return None
    order: Literal["C", "F"] = "C" if features.flags.c_contiguous else "F"
    return MemmapSource(os.path.abspath(features.filename), features.dtype.str,
                        (int(features.shape[0]), int(features.shape[1])), int(features.offset), order)


def shard_bounds(n_rows: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous, non-empty row ranges covering [0, n_rows), as even as possible."""
    if shards < 1:
        raise ValueError(f"the number of shards must be positive, got {shards}")
    edges = np.linspace(0, n_rows, min(shards, max(1, n_rows)) + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def _rows_of(source: MemmapSource | np.ndarray, lo: int, hi: int) -> np.ndarray:
    # A memmap view reads nothing until rows are indexed; a scattered block is already the shard.
    return source.open()[lo:hi] if isinstance(source, MemmapSource) else source


def _where() -> str:
    try:
        from distributed import get_worker

        return f"worker {get_worker().address}"
    except (ImportError, ValueError):
        return "the driver"


@contextlib.contextmanager
def _shard_task(what: str) -> Iterator[None]:
    # Re-raised as one picklable error whose message names the shard and the worker, so the
    # driver can report it without the remote traceback.
    try:
        yield
    except ShardError:
        raise
    except Exception as exc:
        raise ShardError(f"{what} failed on {_where()}: {type(exc).__name__}: {exc}") from exc


# -- worker tasks of the scoring maps ---------------------------------------------------------------


@dataclass
class _ShardState:
    lo: int
    rows: np.ndarray  # global row indices of the shard's unlabeled samples, ascending
    state: PoolState


@dataclass
class _ShardScores:
    rows: np.ndarray
    scores: np.ndarray  # float64, NaN = never a candidate


def _pool_task(head: LinearHead, source: MemmapSource | np.ndarray, lo: int, hi: int,
               bits: np.ndarray) -> _ShardState:
    with _shard_task(f"the pool pass of rows {lo}:{hi}"):
        local = np.flatnonzero(np.unpackbits(bits, count=hi - lo)).astype(np.int64)
        state = pool_state(head, _rows_of(source, lo, hi), local)
        return _ShardState(lo, lo + local, state)


def _pool_partial(part: _ShardState) -> tuple[int, float, np.ndarray]:
    # pool_state returns shard means; times n_j they become sums that add up across shards.
    n = len(part.rows)
    return n, part.state.pool_loss * n, part.state.grad.cpu().numpy() * n


def _score_task(head: LinearHead, source: MemmapSource | np.ndarray, hi: int, part: _ShardState,
                sol: InfluenceSolution, pool_loss: float, pool_size: int, rule: str, reading: str,
                tau: float | None) -> _ShardScores:
    with _shard_task(f"scoring rows {part.lo}:{hi}"):
        probs = part.state.probs
        delta = delta_pool_loss(head, _rows_of(source, part.lo, hi), part.rows - part.lo, probs, sol)
        scores = ralif_scores(probs, delta, pool_loss, pool_size, rule=rule, reading=reading, tau=tau)
        return _ShardScores(part.rows, scores.cpu().numpy())


def score_summary(scores: np.ndarray, points: int = SUMMARY_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts): at least ``counts[i]`` of ``scores`` are ≤ ``values[i]`` (NaN ranks last).

    At most ``points`` pairs; consecutive counts differ by at most ⌈len/points⌉.
    """
    key = np.sort(np.where(np.isnan(scores), np.inf, scores))
    n = len(key)
    counts = np.unique(np.ceil(np.arange(1, points + 1) * n / points).astype(np.int64))
    counts = counts[counts > 0]
    return key[counts - 1], counts


def covering_threshold(summaries: Sequence[tuple[np.ndarray, np.ndarray]], n: int) -> float:
    """The smallest summary value t such that the summaries guarantee ≥ n scores ≤ t in total.

    Every one of the n lowest scores is then ≤ t, ties at the n-th included (NaN counts as +inf).
    """
    vals = np.concatenate([v for v, _ in summaries])
    # Within a shard, moving to its next summary point adds the difference of the counts.
    gain = np.concatenate([np.diff(c, prepend=0) for _, c in summaries])
    if gain.sum() < n:
        raise ValueError(f"the shards hold {int(gain.sum())} scores, fewer than the {n} asked for")
    order = np.argsort(vals, kind="stable")
    first = int(np.searchsorted(np.cumsum(gain[order]), n))
    return float(vals[order[first]])


def at_or_below(rows: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The rows (and scores) whose score is ≤ threshold, NaN counting as +inf."""
    keep = np.where(np.isnan(scores), np.inf, scores) <= threshold
    return rows[keep], scores[keep]


def _summary_task(part: _ShardScores, points: int) -> tuple[np.ndarray, np.ndarray]:
    return score_summary(part.scores, points)


def _select_task(part: _ShardScores, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    return at_or_below(part.rows, part.scores, threshold)


class _PresetDraws:
    """Stands in for the generator inside ``top_k_lowest``: it hands out the tie-break draws that the
    single-process path made for these same rows, so both paths rank ties identically."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def random(self, n: int) -> np.ndarray:
        if n != len(self.values):
            raise ValueError(f"expected a request for {len(self.values)} draws, got {n}")
        return self.values


def positions_in(unlabeled: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Where each of ``rows`` sits in ``unlabeled`` (all rows must be there)."""
    if len(unlabeled) < 2 or np.all(unlabeled[1:] > unlabeled[:-1]):
        return np.searchsorted(unlabeled, rows)
    order = np.argsort(unlabeled, kind="stable")
    return order[np.searchsorted(unlabeled[order], rows)]


def merge_candidates(rows: np.ndarray, scores: np.ndarray, unlabeled: np.ndarray, tie: np.ndarray,
                     n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best of the gathered rows, best first, with their scores, ranked as ``top_k_lowest``
    ranks the whole pool when its draws were ``tie`` (one per position of ``unlabeled``)."""
    pos = positions_in(unlabeled, rows)
    # Pool order keeps even exactly equal draws (a stable sort's tie-break) as in the one-process path.
    order = np.argsort(pos, kind="stable")
    rows, scores, pos = rows[order], scores[order], pos[order]
    # top_k_lowest only asks its generator for ``random(n)``, which _PresetDraws answers.
    draws = cast(np.random.Generator, _PresetDraws(tie[pos]))
    best = top_k_lowest(torch.from_numpy(scores), n, draws)
    return rows[best], scores[best]


# -- the driver -------------------------------------------------------------------------------------


@dataclass
class ShardedCandidates:
    """What ``sharded_candidates`` returns: the ranked candidates and how the work went."""

    candidates: np.ndarray  # row indices into the features, best-scored first
    scores: np.ndarray  # their scores
    info: dict[str, Any] = field(default_factory=dict)


def _gather(client: Client, futures: list, labels: Mapping[Any, str], what: str) -> list:
    """Results of ``futures``; a failure becomes a ShardError naming its shard (``labels`` maps task
    keys to shard names), and the other tasks are cancelled."""
    from distributed import KilledWorker

    def label_of(key: Any) -> str:
        if key in labels:
            return labels[key]
        erred = [f.key for f in futures if f.status == "error"]
        return labels.get(erred[0], "a shard") if erred else "a shard"

    try:
        return client.gather(futures)
    except ShardError:
        client.cancel(futures)
        raise
    except KilledWorker as exc:
        client.cancel(futures)
        raise ShardError(
            f"{what} of {label_of(exc.task)}: a worker died while running it ({exc.allowed_failures + 1} "
            f"attempt(s), the last on {exc.last_worker.address}); the worker's log says why, e.g. its "
            f"memory limit"
        ) from exc
    except Exception as exc:
        client.cancel(futures)
        raise ShardError(f"{what} of {label_of(None)} failed: {type(exc).__name__}: {exc}") from exc


def _require_workers(client: Client, timeout: float) -> int:
    try:
        client.wait_for_workers(1, timeout=timeout)
    except Exception as exc:  # dask raises its own TimeoutError type
        address = client.scheduler.address if client.scheduler is not None else "(not connected)"
        raise ShardError(f"no dask worker joined the scheduler {address} within "
                         f"{timeout:g} s; start workers with `dask worker {address}`") from exc
    return max(1, sum(client.nthreads().values()))


def sharded_candidates(
    head: LinearHead, features: np.ndarray, labeled: np.ndarray, unlabeled: np.ndarray, n_cand: int,
    rng: np.random.Generator, *, client: Client, shards: int = 0, rule: str = "truncated",
    reading: str = "influence", tau: float | None = None, solver: str = "auto",
    summary_points: int = SUMMARY_POINTS, worker_timeout: float = WORKER_TIMEOUT_S,
) -> ShardedCandidates:
    """RALIF's n_cand best-scored unlabeled rows, best first, computed shard by shard on ``client``.

    Draws from ``rng`` exactly what the single-process path draws before its diversity step, so ties
    fall as they do in ``RalifStrategy`` with the same generator. The scores equal the single-process
    ones to float32 summation precision (about 2e-7 relative: g_U sums float32 products over other
    row groups), so two candidates whose scores agree that closely may trade places. ``shards=0``
    uses two per worker thread.
    """
    t_start = time.perf_counter()
    labeled, unlabeled = as_index(labeled), as_index(unlabeled)
    n_rows, n_u = int(features.shape[0]), len(unlabeled)
    if n_u == 0:
        raise ValueError("the unlabeled pool is empty")
    if not 1 <= n_cand <= n_u:
        raise ValueError(f"cannot keep {n_cand} candidates from {n_u} unlabeled samples")
    threads = _require_workers(client, worker_timeout)
    bounds = shard_bounds(n_rows, shards or 2 * threads)
    mask = np.zeros(n_rows, dtype=bool)
    mask[unlabeled] = True
    bounds = [(lo, hi) for lo, hi in bounds if mask[lo:hi].any()]  # pool_state needs a non-empty pool
    names = [f"rows {lo}:{hi}" for lo, hi in bounds]
    labels: dict[str, str] = {}

    def named(futures: list) -> list:
        labels.update({f.key: name for f, name in zip(futures, names)})
        return futures

    tag = uuid.uuid4().hex[:8]
    source = memmap_source(features)
    if source is not None:
        sources: list = [source] * len(bounds)
    else:
        # Not a file the workers can open: each shard's block goes straight to one worker, once.
        # hash=False: content-hashed keys would be shared with an identical earlier call whose release
        # can still be in flight, and the scheduler would then drop the new copies.
        sources = client.scatter([np.asarray(features[lo:hi]) for lo, hi in bounds], direct=True, hash=False)
    [head_f] = client.scatter([head], broadcast=True, hash=False)

    states = named([
        client.submit(_pool_task, head_f, src, lo, hi, np.packbits(mask[lo:hi]), key=f"ralif-pool-{tag}-{j}")
        for j, ((lo, hi), src) in enumerate(zip(bounds, sources))
    ])
    partials = _gather(client, named([client.submit(_pool_partial, s) for s in states]), labels,
                       "the pool pass")
    n_total = sum(n for n, _, _ in partials)
    pool_loss = sum(loss for _, loss, _ in partials) / n_total
    grad = torch.from_numpy(sum(g for _, _, g in partials) / n_total).to(head.device)
    t_pool = time.perf_counter()

    sol = solve_influence(head, features, labeled, grad, method=solver)
    t_solve = time.perf_counter()

    scored = named([
        client.submit(_score_task, head_f, src, hi, st, sol, pool_loss, n_u, rule, reading, tau,
                      key=f"ralif-score-{tag}-{j}")
        for j, ((_, hi), src, st) in enumerate(zip(bounds, sources, states))
    ])
    del states  # the probabilities are dropped from the workers once scoring is done
    summaries = _gather(client, named([client.submit(_summary_task, s, summary_points) for s in scored]),
                        labels, "scoring")
    threshold = covering_threshold(summaries, n_cand)
    picked = _gather(client, named([client.submit(_select_task, s, threshold) for s in scored]), labels,
                     "the candidate pass")
    del scored, sources
    rows = np.concatenate([r for r, _ in picked])
    scores = np.concatenate([s for _, s in picked])
    # The same draws top_k_lowest makes over the whole pool, so ties fall the same way.
    tie = rng.random(n_u)
    cand, cand_scores = merge_candidates(rows, scores, unlabeled, tie, n_cand)
    t_end = time.perf_counter()
    gathered = sum(g.nbytes for _, _, g in partials) + 16 * len(partials)
    gathered += sum(v.nbytes + c.nbytes for v, c in summaries) + rows.nbytes + scores.nbytes
    info = {
        "engine": "dask", "shards": len(bounds), "worker_threads": threads,
        "features_via": "memmap path" if source is not None else "scatter",
        "solver": sol.method, "solver_iterations": sol.iterations, "pool_loss": pool_loss,
        "gathered_rows": len(rows), "gathered_bytes": int(gathered),
        "pool_pass_seconds": t_pool - t_start, "solve_seconds": t_solve - t_pool,
        "candidate_pass_seconds": t_end - t_solve,
    }
    return ShardedCandidates(cand, cand_scores, info)


# -- clients ----------------------------------------------------------------------------------------

_CLIENTS: dict[tuple[str, int], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def get_client(scheduler: str = "local", workers: int = 0) -> Client:
    """A client for ``scheduler``, created on first use and kept for the life of the process.

    ``local`` starts a LocalCluster of ``workers`` single-threaded worker processes (default: one
    per core), ``threads`` the same with workers as threads of this process (no copies, one
    interpreter: torch releases the GIL in its products); anything else is a scheduler address.
    """
    from distributed import Client, LocalCluster

    key = (scheduler, int(workers))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is not None and client.status == "running":
            return client
        if scheduler in ("local", "threads"):
            from ralif.worker import main_script_hidden

            # Worker processes are spawned: from a Streamlit page (or anything run as a script
            # without a module spec) they would otherwise run that script again on start-up.
            with main_script_hidden():
                cluster = LocalCluster(n_workers=int(workers) or (os.cpu_count() or 1), threads_per_worker=1,
                                       processes=scheduler == "local", dashboard_address=":0")
            client = Client(cluster, set_as_default=False)
        else:
            try:
                client = Client(scheduler, set_as_default=False, timeout=WORKER_TIMEOUT_S)
            except OSError as exc:
                raise ShardError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from exc
        _CLIENTS[key] = client
        return client


@atexit.register
def close_clients() -> None:
    """Close every client (and local cluster) that ``get_client`` started."""
    with _CLIENTS_LOCK:
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for client in clients:
        cluster = client.cluster
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


# -- sharded feature extraction ---------------------------------------------------------------------

_ENCODERS: dict[tuple[str, str | None], Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def _worker_encoder(encoder: Encoder | str, device: str | None) -> Encoder:
    """The encoder on this worker: a spec is built once per worker process and reused."""
    if isinstance(encoder, Encoder):
        return encoder
    with _ENCODERS_LOCK:
        key = (encoder, device)
        if key not in _ENCODERS:
            _ENCODERS[key] = build_encoder(encoder, device=device)
        return _ENCODERS[key]


def _encoder_info_task(encoder: Encoder | str, device: str | None) -> tuple[str, int]:
    with _shard_task(f"building the encoder {encoder}"):
        enc = _worker_encoder(encoder, device)
        return enc.id, int(enc.dim)


def _no_progress(done: int, total: int) -> None:
    pass


def _extract_task(encoder: Encoder | str, images: ImageList, cache_root: str, batch_size: int,
                  device: str | None, shard_size: int, lo: int, hi: int) -> tuple[int, int]:
    with _shard_task(f"feature extraction of missing images {lo}:{hi}"):
        # num_workers=0: dask worker processes are daemons, which may not start loader processes.
        res = fill_cache(_worker_encoder(encoder, device), images, cache_root, batch_size,
                         progress=_no_progress, num_workers=0, device=device, shard_size=shard_size)
        return res.computed, res.hits


def sharded_fill_cache(
    encoder: Encoder | str, images: ImageList, cache_root: str | os.PathLike[str] | None = None, *,
    client: Client, shards: int = 0, batch_size: int = 64, device: str | None = None,
    shard_size: int | None = None, worker_timeout: float = WORKER_TIMEOUT_S,
) -> CacheResult:
    """``fill_cache`` with the missing images encoded on the cluster's workers.

    ``encoder`` is an Encoder or, better for remote workers, an encoder spec (``build_encoder``),
    which each worker builds once. ``cache_root`` must be the same folder for the driver and every
    worker (shared storage): workers commit cache shards there and the driver reads them back.
    Identical files are encoded once. ``shards=0`` uses four per worker thread.
    """
    start = time.perf_counter()
    if isinstance(encoder, PrecomputedEmbeddings):
        return fill_cache(encoder, images, cache_root, progress=_no_progress)
    root = os.path.abspath(cache_root if cache_root is not None else default_cache_root())
    threads = _require_workers(client, worker_timeout)
    if isinstance(encoder, Encoder):
        enc_ref: Any = client.scatter([encoder], broadcast=True, hash=False)[0]
        enc_id, dim = encoder.id, int(encoder.dim)
    else:
        enc_ref = encoder
        info = client.submit(_encoder_info_task, encoder, device, pure=False)
        [(enc_id, dim)] = _gather(client, [info], {info.key: encoder}, "building the encoder")
    cache = FeatureCache(root, enc_id, dim=dim)
    feats, missing = cache.get_many(images.hashes)
    miss_idx = np.flatnonzero(missing)
    computed = 0
    if miss_idx.size:
        miss_hashes = np.array([images.hashes[i] for i in miss_idx])
        _, first = np.unique(miss_hashes, return_index=True)
        todo = np.sort(miss_idx[first])  # one image per distinct file
        parts = [p for p in np.array_split(todo, min(len(todo), shards or 4 * threads)) if len(p)]
        bounds, at = [], 0
        for p in parts:
            bounds.append((at, at + len(p)))
            at += len(p)
        size = shard_size or cache.shard_size
        futures = [
            client.submit(_extract_task, enc_ref, images.subset(p), root, batch_size, device, size, lo, hi,
                          key=f"ralif-extract-{uuid.uuid4().hex[:8]}-{j}")
            for j, (p, (lo, hi)) in enumerate(zip(parts, bounds))
        ]
        done = _gather(client, futures, {f.key: f"missing images {lo}:{hi}" for f, (lo, hi) in zip(futures, bounds)},
                       "feature extraction")
        computed = sum(c for c, _ in done)
        cache.refresh()
        got, still = cache.get_many([images.hashes[i] for i in miss_idx])
        if still.any():
            raise ShardError(f"the workers finished but {int(still.sum())} of {miss_idx.size} images are "
                             f"not in the cache at {root}; workers and driver must share that folder")
        feats[miss_idx] = got
    return CacheResult(feats, len(images) - int(miss_idx.size), int(miss_idx.size), computed,
                       time.perf_counter() - start)
