"""One active-learning round of a project: features, training, selection, checkpoint.

``run_next_round`` is a plain function: the app calls it through a background worker
(``round_job``) and scripts or tests call it in-process. A round never touches labels, and the
project's current model changes only once the whole round has succeeded, so a failed round
leaves the project exactly as it was and can simply be run again.

Features come from the project's encoder spec:

* ``precomputed:FILE.npz``: rows looked up by image path (``features`` + ``paths``, or the
  quantised ``emb_*_uint8`` layout with ``paths_train``/``paths_test``);
* ``pixels`` / ``pixels:N``: N x N RGB thumbnails (default 8), a model-free stand-in used for the
  cold start of ResNet18 projects and for quick checks;
* any spec of :func:`ralif.encoders.build_encoder`, through the project's feature cache.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ralif.project.checkpoints import (
    LINEAR_FORMAT,
    LINEAR_FORMAT_VERSION,
    ProjectModel,
    annotate_sidecar,
    load_model,
    save_linear_head,
)
from ralif.project.dbfile import StoreError, file_fault
from ralif.project.errors import RoundBusy
from ralif.project.features import (
    HELD_OUT_MEMO,
    PIXELS_DEFAULT,
    POOL_MEMO,
    EmbeddingTable,
    apply_round_threads,
    embedding_table,
    encoder_id_for,
    features_for,
    pixel_features,
    pixel_size,
    round_threads,
)
from ralif.project.lifecycle import RoundBook
from ralif.project.records import RoundInputs, RoundOutcome

if TYPE_CHECKING:
    from ralif.head import LinearHead

Reporter = Callable[[str, "dict[str, Any] | None"], None]
StopCheck = Callable[[], bool]

# Cold-start k-means++ costs O(candidates x batch x dim); a random subset this large already
# covers the pool's modes, so huge pools stay fast.
COLD_START_MAX_CANDIDATES = 20_000
# Seeds the audit draw's own random stream (with the project seed and round number).
AUDIT_STREAM = 0xA0D17
DEFAULT_RESNET = {"variant": "cifar", "epochs": 30, "batch_size": 64}


# Names other modules import from here; they live in the modules above.
__all__ = [
    "COLD_START_MAX_CANDIDATES",
    "DEFAULT_RESNET",
    "LINEAR_FORMAT",
    "LINEAR_FORMAT_VERSION",
    "PIXELS_DEFAULT",
    "POOL_MEMO",
    "EmbeddingTable",
    "ProjectModel",
    "RoundCancelled",
    "RoundInputs",
    "RoundOutcome",
    "apply_round_threads",
    "audit_draw",
    "compute_round",
    "embedding_table",
    "encoder_id_for",
    "features_for",
    "held_out_features",
    "load_model",
    "pixel_features",
    "pixel_size",
    "round_job",
    "round_threads",
    "run_next_round",
    "save_linear_head",
]


class RoundCancelled(Exception):
    """The round was stopped on request; nothing was written."""


class HasFolder(Protocol):
    folder: Path



# ----------------------------------------------------------------------------- the round


def _cold_start(feats: np.ndarray, inputs: RoundInputs, budget: int, rng: np.random.Generator,
                ) -> tuple[np.ndarray, list[str]]:
    import torch

    from ralif.diversity import euclidean_dist_to, kmeanspp_seeding, labeled_sq_dist

    cand = inputs.candidate_pos
    sampled = len(cand) > COLD_START_MAX_CANDIDATES
    if sampled:
        cand = np.sort(rng.choice(cand, COLD_START_MAX_CANDIDATES, replace=False))
    dev = torch.device("cpu")
    if len(inputs.labeled_pos):
        pts, d2 = labeled_sq_dist(feats, cand, inputs.labeled_pos, dev)
    else:
        pts, d2 = torch.from_numpy(np.ascontiguousarray(feats[cand], dtype=np.float32)), None
    order = kmeanspp_seeding(len(cand), budget, rng, euclidean_dist_to(pts), d2=d2, first=None, device=dev)
    over = f"a random {len(cand):,} of {len(inputs.candidate_pos):,}" if sampled else f"{len(cand):,}"
    images = "image" if len(cand) == 1 else "images"
    why = "no labels yet" if not len(inputs.labeled_pos) else "fewer than two classes labeled"
    reasons = [f"k-means++ pick {j + 1} of {budget} over {over} unlabeled {images} (cold start: {why})"
               for j in range(budget)]
    return cand[order], reasons


def _capture_scores(strategy: Any) -> dict[str, Any]:
    """Keep the per-sample scores a strategy computes anyway, so they can be shown to the user."""
    captured: dict[str, Any] = {}
    scores = getattr(strategy, "scores", None)
    if callable(scores):
        def keep(*args: Any, **kwargs: Any) -> Any:
            out = scores(*args, **kwargs)
            captured["scores"] = out
            return out
        strategy.scores = keep
    return captured


def _select(head: LinearHead, feats: np.ndarray, inputs: RoundInputs, budget: int,
            rng: np.random.Generator, candidates: np.ndarray,
            ) -> tuple[np.ndarray, list[float | None], list[str], dict[str, Any]]:
    from ralif.strategies import make_strategy

    strategy = make_strategy(inputs.strategy)
    captured = _capture_scores(strategy)
    unlabeled = np.sort(candidates)
    picked = strategy.select(head, feats, inputs.labeled_pos, unlabeled, budget, rng)
    info = {k: v for k, v in strategy.last_info.items() if isinstance(v, (int, float, str))}
    scores: list[float | None] = [None] * len(picked)
    if "scores" in captured:
        s = np.asarray(captured["scores"].detach().cpu().numpy() if hasattr(captured["scores"], "detach")
                       else captured["scores"], dtype=np.float64)
        if s.shape == (len(unlabeled),):
            vals = s[np.searchsorted(unlabeled, picked)]
            scores = [float(v) if math.isfinite(v) else None for v in vals]
    cand = strategy.last_info.get("candidates")
    # The step the strategy resolved ("auto" becomes kmeans or kcenter from the pool's pseudo labels).
    diversity = strategy.last_info.get("diversity") or getattr(strategy, "diversity", None)
    pick_word = {"kmeanspp": "k-means++ pick", "meanshift": "mean-shift pick", "kmeans": "k-means pick",
                 "kcenter": "k-center pick"}
    reasons = []
    if strategy.last_info.get("cold_start"):
        per, below = strategy.last_info["cold_labels_per_class"], strategy.last_info["cold"]
        reasons = [f"typicality pick {j + 1} of {budget}: the most typical unlabeled image of a cluster with "
                   f"few labels (cold start: {per:.1f} labels per class, fewer than {below:g})"
                   for j in range(len(picked))]
    elif cand is not None and len(picked) < len(unlabeled):
        cand = np.asarray(cand)
        rank_of = np.full(len(feats), -1, dtype=np.int64)
        rank_of[cand] = np.arange(len(cand))
        # No gate, or one that kept the whole pool: nothing to say.
        gate = strategy.last_info.get("gate_share") or 1.0
        digits = 0 if gate >= 0.01 else 1
        among = f" among the {gate:.{digits}%} of images the model is least sure of" if gate < 1 else ""
        for j, p in enumerate(picked):
            # Only a pick from inside the gate (a finite score) was chosen among the least sure.
            inside = among if scores[j] is not None else ""
            text = f"influence rank {rank_of[p] + 1} of {len(cand):,} candidates{inside}"
            if diversity in pick_word:
                text += f", {pick_word[diversity]} {j + 1} of {budget}"
            reasons.append(text)
    elif len(picked) == len(unlabeled):
        reasons = [f"one of the last {len(unlabeled):,} unlabeled images" if len(unlabeled) > 1
                   else "the last unlabeled image"] * len(picked)
    else:
        reasons = [f"{strategy.name} pick {j + 1} of {budget}" for j in range(len(picked))]
    return picked, scores, reasons, info


def audit_draw(inputs: RoundInputs, budget: int, share: float,
                ) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """(audit positions, candidates left to the strategy, the generator that placed them): the
    audit share of the batch drawn uniformly from the whole unlabeled pool before the strategy
    sees it, from a stream of its own so the strategy's draws do not depend on it."""
    from ralif.audit import audit_count

    arng = np.random.default_rng([int(inputs.seed), int(inputs.number), AUDIT_STREAM])
    n_audit = audit_count(budget, share)
    if not n_audit:
        return np.zeros(0, np.int64), inputs.candidate_pos, arng
    audit = np.sort(arng.choice(inputs.candidate_pos, size=n_audit, replace=False)).astype(np.int64)
    return audit, inputs.candidate_pos[~np.isin(inputs.candidate_pos, audit)], arng


def _interleave(picks: np.ndarray, scores: list[float | None], reasons: list[str], audit: np.ndarray,
                rng: np.random.Generator, inputs: RoundInputs,
                ) -> tuple[np.ndarray, list[float | None], list[str]]:
    """Audit images at random places among the strategy's picks, with a reason that is true and
    does not single them out: a user who knows which images check the model labels them apart."""
    if not len(audit):
        return picks, scores, reasons
    total = len(picks) + len(audit)
    at = np.zeros(total, dtype=bool)
    at[rng.choice(total, size=len(audit), replace=False)] = True
    order = np.empty(total, dtype=np.int64)
    order[at], order[~at] = audit, picks
    out_s = np.full(total, None, dtype=object)
    batch = (f"one of the {total} images" if total > 1 else "the only image") + f" of round {inputs.number}'s batch"
    out_r = np.full(total, batch, dtype=object)
    out_s[~at] = np.array(scores, dtype=object).reshape(-1)
    out_r[~at] = np.array(reasons, dtype=object).reshape(-1)
    return order, list(out_s), [str(r) for r in out_r]


# What separates a reason from the model's guess appended to it.
GUESS_MARK = "; model guess: "


def _add_guesses(reasons: list[str], probs: np.ndarray, inputs: RoundInputs, hidden: np.ndarray
                 ) -> tuple[list[str], list[int | None], list[float | None]]:
    """The model's guess added to each reason, except where ``hidden`` (audit images): their guess
    is still returned, to score the answer against, but a reason is shown to the user (a tile's
    tooltip), and a guess seen there would sway the very answer that measures the model."""
    top = probs.argmax(1)
    conf = probs[np.arange(len(top)), top]
    predicted = [inputs.class_ids[k] for k in top]
    out = [r if h else f"{r}{GUESS_MARK}{inputs.class_names[k]} ({c:.0%})"
           for r, k, c, h in zip(reasons, top, conf, hidden)]
    return out, predicted, [float(c) for c in conf]


def _train_resnet(inputs: RoundInputs, report: Reporter, should_stop: StopCheck, device: str | None):
    from ralif.learners import load_uint8_images
    from ralif.models.resnet import TrainConfig, TrainingCancelled, train_resnet
    from ralif.models.resnet_model import required

    cfg = TrainConfig.from_dict({**DEFAULT_RESNET, **inputs.resnet})
    if cfg.image_size is None or cfg.epochs is None:
        raise ValueError("the project's ResNet settings give no image_size or epochs")
    report("extracting", {"what": "decoding images", "done": 0, "total": len(inputs.pool_paths)})
    if cfg.variant == "cifar":
        # Small images are decoded once and kept in memory; 224-px images are read from disk.
        pool_imgs: Any = load_uint8_images(inputs.pool_paths, int(required(cfg.image_size)))
        test_imgs: Any = load_uint8_images(inputs.test_paths, int(required(cfg.image_size))) if len(inputs.test_paths) \
            else []
        train_imgs: Any = pool_imgs[inputs.labeled_pos]
    else:
        pool_imgs, test_imgs = inputs.pool_paths, inputs.test_paths
        train_imgs = [inputs.pool_paths[i] for i in inputs.labeled_pos]

    def on_progress(p: dict[str, Any]) -> None:
        epochs = max(1, int(p.get("epochs", 1)))
        done = p["epoch"] - 1 + (p["batch"] / p["batches"] if "batch" in p else 1.0)
        report("training", {"epoch": p["epoch"], "epochs": epochs, "fraction": min(1.0, done / epochs),
                            "loss": p.get("loss"), "accuracy": p.get("accuracy")})

    report("training", {"epoch": 0, "epochs": int(required(cfg.epochs)), "fraction": 0.0})
    try:
        net = train_resnet(train_imgs, inputs.labeled_y, len(inputs.class_ids), cfg, device=device,
                           progress=on_progress, should_stop=should_stop, class_names=inputs.class_names)
    except TrainingCancelled as exc:
        raise RoundCancelled(str(exc)) from exc
    feats, _ = net.features_and_proba(pool_imgs)
    test_pred = net.predict(test_imgs) if len(inputs.test_pos) else None
    return net, feats, test_pred, cfg


@contextlib.contextmanager
def _saving(path: Path) -> Iterator[None]:
    """A model that cannot be written (full disk, read-only folder) fails the round naming the file."""
    try:
        yield
    except OSError as exc:
        mapped = file_fault(exc, path)
        if mapped is None:
            raise
        raise mapped from exc


def _no_report(phase: str, progress: dict[str, Any] | None = None) -> None:
    pass


def _never() -> bool:
    return False


def held_out_features(inputs: RoundInputs, cache_root: Path) -> tuple[np.ndarray, str]:
    """Features of the held-out images that have a reference label (``inputs.test_pos``), kept
    in memory from round to round."""
    return HELD_OUT_MEMO.features(inputs.encoder, [inputs.test_paths[i] for i in inputs.test_pos],
                                  [inputs.test_hashes[i] for i in inputs.test_pos], cache_root,
                                  inputs.device, None)


def compute_round(project: HasFolder, inputs: RoundInputs, report: Reporter | None = None,
                  should_stop: StopCheck | None = None, *, audit_share: float = 0.0) -> RoundOutcome:
    """Features, training, selection and checkpoint for ``inputs``; writes only the model file
    (under ``project.folder``: a Project or a RoundBook). Pure of the database.

    ``audit_share``: the share of a batch drawn uniformly from the unlabeled pool instead of by the
    strategy (:mod:`ralif.audit`); their image ids go in ``info["audit_ids"]``. A cold start has
    no model to audit and draws none."""
    from ralif.head import LinearHead, Standardizer, fit_head

    report = report or _no_report
    stop = should_stop or _never

    def check() -> None:
        if stop():
            raise RoundCancelled("the round was cancelled")

    budget = min(inputs.batch_size, len(inputs.candidate_pos))
    rng = np.random.default_rng([int(inputs.seed), int(inputs.number)])
    cold = len(inputs.class_ids) < 2 or inputs.labeled_classes < 2
    cache_root = project.folder / "cache"

    def extracting(done: int, total: int) -> None:
        check()
        report("extracting", {"done": int(done), "total": int(total)})

    if cold or inputs.model_kind != "resnet18":
        report("extracting", {"done": 0, "total": len(inputs.pool_paths)})
        pool_feats, enc_id = POOL_MEMO.features(inputs.encoder, inputs.pool_paths, inputs.pool_hashes,
                                                 cache_root, inputs.device, extracting)
    check()
    if cold and budget < 1:
        # Nothing left to ask and no model possible: a round that "succeeded" with neither would
        # leave the user an empty screen, so it fails with what to do instead.
        named = sorted({inputs.class_names[k] for k in inputs.labeled_y.tolist()})
        have = f"only {', '.join(named)} has labels" if named else "no image has a label"
        raise ValueError(f"every pool image is labeled or skipped, but {have}: a model needs labeled images "
                         f"of at least two classes. Add images of another class (or relabel some), then run "
                         f"the round again")
    if cold:
        report("selecting", None)
        cold_picks, cold_reasons = _cold_start(pool_feats, inputs, budget, rng)
        return RoundOutcome(inputs.pool_ids[cold_picks], [None] * budget, cold_reasons, [None] * budget,
                            [None] * budget, cold_start=True, labeled_count=len(inputs.labeled_pos),
                            info={"encoder_id": enc_id})

    models_dir = project.folder / "models"
    weights_path = models_dir / f"round-{inputs.number:04d}.safetensors"
    accuracy: float | None = None
    losses: list[float] | None = None
    common_meta = {"class_names": inputs.class_names, "class_ids": inputs.class_ids,
                   "round": inputs.number, "labeled": len(inputs.labeled_pos),
                   "project": inputs.project_name}
    if inputs.model_kind == "resnet18":
        net, pool_feats, test_pred, cfg = _train_resnet(inputs, report, stop, inputs.device)
        losses = [float(r["loss"]) for r in net.history]
        w, b = net.final_layer()
        # SGD weight decay wd on the mean loss is the L2 term (wd/2)‖W‖², the λ of the Hessian.
        head = LinearHead.from_linear_layer(w, b, l2=float(cfg.weight_decay), device=inputs.device)
        if test_pred is not None:
            accuracy = float(np.mean(test_pred[inputs.test_pos] == inputs.test_y))
        check()
        report("saving", None)
        with _saving(weights_path):
            net.save(weights_path)
        annotate_sidecar(weights_path, {**common_meta, "encoder_id": f"resnet18:{cfg.variant}",
                                         "accuracy": accuracy, "test_count": len(inputs.test_pos)})
        enc_id = f"resnet18:{cfg.variant}"
    else:
        report("training", {"fraction": 0.0, "labeled": len(inputs.labeled_pos)})
        st = POOL_MEMO.standardizer(pool_feats, Standardizer.fit)
        head = fit_head(pool_feats, inputs.labeled_pos, inputs.labeled_y, len(inputs.class_ids),
                        l2=inputs.l2, standardizer=st, device=inputs.device)
        report("training", {"fraction": 1.0, "labeled": len(inputs.labeled_pos)})
        if len(inputs.test_pos):
            test_feats, _ = held_out_features(inputs, cache_root)
            accuracy = float(np.mean(head.predict(test_feats) == inputs.test_y))
        check()
        report("saving", None)
        with _saving(weights_path):
            save_linear_head(weights_path, head, {**common_meta, "encoder_spec": inputs.encoder,
                                                  "encoder_id": enc_id, "accuracy": accuracy,
                                                  "test_count": len(inputs.test_pos)})
    check()
    scores: list[float | None]
    reasons: list[str]
    info: dict[str, Any]
    if budget < 1:
        # Every pool image is labeled: the model is still worth training, there is just nothing to ask.
        scores = []
        picks, reasons, info = np.zeros(0, np.int64), [], {"note": "every image is labeled"}
        predicted: list[int | None] = []
        confidence: list[float | None] = []
    else:
        report("selecting", None)
        audit, rest, arng = audit_draw(inputs, budget, audit_share)
        picks, scores, reasons, info = _select(head, pool_feats, inputs, budget - len(audit), rng, rest)
        picks, scores, reasons = _interleave(picks, scores, reasons, audit, arng, inputs)
        probs = head.predict_proba(pool_feats, picks)
        reasons, predicted, confidence = _add_guesses(reasons, probs, inputs, np.isin(picks, audit))
        info["audit_ids"] = [int(i) for i in inputs.pool_ids[audit]]
        info["audit_share"] = float(audit_share)
    if losses is not None:
        info["losses"] = losses
    info["encoder_id"] = enc_id
    return RoundOutcome(inputs.pool_ids[picks], scores, reasons, predicted, confidence, cold_start=False,
                        labeled_count=len(inputs.labeled_pos), accuracy=accuracy,
                        test_count=len(inputs.test_pos),
                        model_path=os.path.relpath(weights_path, project.folder), info=info)


def run_next_round(project: HasFolder | str | os.PathLike[str], report: Reporter | None = None,
                   should_stop: StopCheck | None = None, *, job_path: str | None = None) -> dict[str, Any]:
    """Run the project's queued (or failed) round to completion: the plain function behind the
    background worker. ``project``: a Project (its ``round_book``), a RoundBook or a folder.
    Returns a summary; on failure the round is marked failed with the reason, labels and the
    current model stay as they were, and the exception is raised again."""
    book = project_rounds(project)
    number = book.claim(job_path=job_path)
    last_phase: list[str | None] = [None]

    def relay(phase: str, progress: dict[str, Any] | None = None) -> None:
        if phase != last_phase[0]:
            last_phase[0] = phase
            book.set_phase(number, phase)
        if report is not None:
            report(phase, progress)

    start = time.perf_counter()
    try:
        inputs = book.inputs(number)
        outcome = compute_round(book, inputs, relay, should_stop, audit_share=book.audit_share())
        book.finish(number, outcome, time.perf_counter() - start, job_path=job_path)
    except BaseException as exc:
        if not isinstance(exc, RoundBusy):  # a round taken over is the other runner's to record
            # The database may not take the failure either (the same full disk or read-only
            # folder): the caller sees the original reason; the round server records it later.
            with contextlib.suppress(StoreError):
                book.fail(number, failure_reason(exc), only_if_running=True, job_path=job_path)
        raise
    if report is not None:
        report("done", None)
    return {"round": number, "selected": len(outcome.image_ids), "cold_start": outcome.cold_start,
            "accuracy": outcome.accuracy, "labeled": outcome.labeled_count, "model": outcome.model_path,
            "seconds": round(time.perf_counter() - start, 3)}


def failure_reason(exc: BaseException) -> str:
    """Why a round failed, as the user reads it: a full disk, a read-only folder or a replaced
    project file is said plainly with the file or folder; other errors keep their type."""
    if isinstance(exc, RoundCancelled):
        return "cancelled on request"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C) before the round finished; run it again"
    if isinstance(exc, SystemExit):
        return f"the process running the round exited (code {exc.code}) before the round finished; run it again"
    if isinstance(exc, StoreError):
        return str(exc)
    if isinstance(exc, OSError):
        mapped = file_fault(exc, exc.filename or "a file of the project")
        if mapped is not None:
            return str(mapped)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def project_rounds(project: Any) -> RoundBook:
    """The RoundBook of a Project, a RoundBook, or a project folder."""
    if isinstance(project, RoundBook):
        return project
    if isinstance(project, (str, os.PathLike)):
        return RoundBook.open(project)
    return project.round_book


def round_job(job: Any, folder: str, threads: int | None = None) -> dict[str, Any]:
    """Worker entry point for one round in a process of its own (``ralif.worker.start_job``); the
    app uses the warm round server instead (:mod:`ralif.project.round_server`)."""
    from ralif.worker import JobCancelled

    if threads:
        import torch

        torch.set_num_threads(int(threads))

    def report(phase: str, progress: dict[str, Any] | None = None) -> None:
        job.report(progress if progress is not None else {}, phase=phase)

    try:
        return run_next_round(folder, report, job.should_stop, job_path=str(job.status_path))
    except RoundCancelled as exc:
        raise JobCancelled(str(exc)) from exc
