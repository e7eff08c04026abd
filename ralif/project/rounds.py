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
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ralif.head import LinearHead
    from ralif.project.session import Project

Reporter = Callable[[str, "dict[str, Any] | None"], None]
StopCheck = Callable[[], bool]

LINEAR_FORMAT = "ralif-linear-head"
LINEAR_FORMAT_VERSION = 1
PIXELS_DEFAULT = 8
# Cold-start k-means++ costs O(candidates x batch x dim); a random subset this large already
# covers the pool's modes, so huge pools stay fast.
COLD_START_MAX_CANDIDATES = 20_000
DEFAULT_RESNET = {"variant": "cifar", "epochs": 30, "batch_size": 64}


class RoundCancelled(Exception):
    """The round was stopped on request; nothing was written."""


# ----------------------------------------------------------------------------- features


def _sha256_prefix(path: str, n: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:n]


class EmbeddingTable:
    """Precomputed embeddings with the image path of every row.

    Reads an .npz holding ``features`` (N x D) and ``paths``, or the quantised layout
    (``emb_train_uint8``/``emb_test_uint8``, ``paths_train``/``paths_test``, ``quant_scale``,
    ``quant_zero_point``). Relative paths are taken from the file's folder.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"embeddings file not found: {self.path}")
        with np.load(self.path, allow_pickle=False) as data:
            keys = set(data.files)
            if "features" in keys:
                if "paths" not in keys:
                    raise ValueError(f"{self.path} has features but no 'paths' array, so its rows cannot "
                                     f"be matched to image files")
                feats = np.asarray(data["features"], dtype=np.float32)
                paths = [str(p) for p in data["paths"].reshape(-1)]
            elif {"quant_scale", "quant_zero_point"} <= keys and any(k.startswith("emb_") for k in keys):
                scale = np.float32(data["quant_scale"])
                zero = np.float32(data["quant_zero_point"])
                parts, paths = [], []
                for split in ("train", "val", "test"):
                    if f"emb_{split}_uint8" not in keys:
                        continue
                    if f"paths_{split}" not in keys:
                        raise ValueError(f"{self.path} has emb_{split}_uint8 but no paths_{split}")
                    parts.append((data[f"emb_{split}_uint8"].astype(np.float32) - zero) * scale)
                    paths += [str(p) for p in data[f"paths_{split}"].reshape(-1)]
                feats = np.concatenate(parts).astype(np.float32, copy=False)
            else:
                raise ValueError(f"{self.path} holds {sorted(keys)}; expected 'features' and 'paths', or "
                                 f"quantised emb_<split>_uint8 arrays with paths_<split>")
        if feats.ndim != 2 or len(feats) != len(paths):
            raise ValueError(f"{self.path}: {len(paths)} paths for feature array of shape {feats.shape}")
        self.features = feats
        base = os.path.dirname(self.path)
        self.paths = [os.path.normpath(os.path.join(base, p)) for p in paths]
        self.dim = int(feats.shape[1])
        self.id = f"precomputed:sha256-{_sha256_prefix(self.path)}"

    def rows_for(self, paths: Sequence[str]) -> np.ndarray:
        import pandas as pd

        index = self.__dict__.get("_index")
        if index is None:
            index = pd.Index(self.paths)
            if not index.is_unique:
                index = index.drop_duplicates(keep="first")
            self._index = index
        rows = index.get_indexer([os.path.normpath(p) for p in paths])
        miss = np.flatnonzero(rows < 0)
        if miss.size:
            # Symbolic links or a moved folder: match the resolved paths before giving up.
            real = pd.Index([os.path.realpath(p) for p in self.paths])
            real = real.drop_duplicates(keep="first") if not real.is_unique else real
            found = real.get_indexer([os.path.realpath(paths[i]) for i in miss])
            ok = found >= 0
            rows[miss[ok]] = index.get_indexer(np.asarray(self.paths, dtype=object)[found[ok]])
            miss = miss[~ok]
        if miss.size:
            shown = ", ".join(paths[i] for i in miss[:3])
            raise ValueError(f"{miss.size} of {len(paths)} images have no row in {self.path}, e.g. {shown}")
        return rows

    def features_for(self, paths: Sequence[str]) -> np.ndarray:
        feats = self.features[self.rows_for(paths)]
        # Checked here, where the file and the images are known, rather than deep in training.
        bad = np.flatnonzero(~np.isfinite(feats).all(axis=1))
        if bad.size:
            shown = ", ".join(paths[i] for i in bad[:3])
            raise ValueError(f"{self.path} holds NaN or inf values for {bad.size} of {len(paths)} images, "
                             f"e.g. {shown}; re-extract those embeddings")
        return feats


_TABLES: dict[tuple[Any, ...], EmbeddingTable] = {}


def embedding_table(path: str | os.PathLike[str]) -> EmbeddingTable:
    """The table at ``path``, read once per process while the file stays the same (reading and
    dequantising 60k rows takes seconds, and every round needs the pool's and the held-out rows)."""
    full = os.path.abspath(os.fspath(path))
    try:
        info = os.stat(full)
    except OSError:
        return EmbeddingTable(full)  # its own clear error
    key = (full, info.st_size, info.st_mtime_ns, info.st_ino)
    table = _TABLES.get(key)
    if table is None:
        table = EmbeddingTable(full)
        _TABLES.clear()  # one table at a time: they can be large
        _TABLES[key] = table
    return table


def pixel_size(spec: str) -> int:
    _, _, rest = spec.partition(":")
    size = int(rest) if rest.strip() else PIXELS_DEFAULT
    if not 1 <= size <= 64:
        raise ValueError(f"encoder spec {spec!r}: the thumbnail size must be between 1 and 64")
    return size


def pixel_features(paths: Sequence[str], size: int = PIXELS_DEFAULT,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """size x size RGB thumbnails scaled to [0, 1], flattened (N x 3·size²)."""
    from PIL import Image

    from ralif.images import load_rgb

    out = np.empty((len(paths), size * size * 3), dtype=np.float32)
    for i, p in enumerate(paths):  # one decode per file: the work is I/O and decoding, not arithmetic
        im = load_rgb(p, min_side=size).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(im, dtype=np.float32).reshape(-1) / 255.0
        if progress is not None and (i + 1) % 256 == 0:
            progress(i + 1, len(paths))
    if progress is not None:
        progress(len(paths), len(paths))
    return out


def encoder_id_for(spec: str) -> str:
    """The id under which features of ``spec`` are stored (cheap for precomputed and pixels)."""
    kind = spec.partition(":")[0].lower()
    if kind == "precomputed":
        return embedding_table(spec.partition(":")[2]).id
    if kind == "pixels":
        return f"pixels:{pixel_size(spec)}"
    from ralif.encoders import build_encoder

    return build_encoder(spec, device="cpu").id


def features_for(spec: str, paths: Sequence[str], hashes: Sequence[str] | None = None,
                 cache_root: str | os.PathLike[str] | None = None, device: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, str]:
    """(features N x D float32, encoder id) of the images at ``paths`` under encoder ``spec``."""
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if kind == "precomputed":
        table = embedding_table(rest)
        return table.features_for(paths), table.id
    if kind == "pixels":
        size = pixel_size(spec)
        return pixel_features(paths, size, progress), f"pixels:{size}"
    from ralif.encoders import build_encoder, extract_features
    from ralif.feature_cache import fill_cache
    from ralif.images import ImageList, hash_file

    encoder = build_encoder(spec, device=device)
    if hashes is None:
        hashes = [hash_file(p) for p in paths]
    images = ImageList(paths=list(paths), labels=np.full(len(paths), -1), classes=[], hashes=list(hashes))
    if cache_root is None:
        return extract_features(encoder, images, progress=progress), encoder.id
    return fill_cache(encoder, images, cache_root=cache_root, progress=progress).features, encoder.id


class _PoolMemo:
    """The last pool's features and standardizer, kept by a process that runs many rounds.

    A pool's features never change for the same encoder and the same files, and the round server
    runs round after round on one pool: reloading them (and refitting the standardizer, a full
    pass over the pool) every round would be most of a small round's time.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._value: tuple[np.ndarray, str] | None = None
        self._standardizer: Any = None

    @staticmethod
    def _key_for(spec: str, paths: Sequence[str], hashes: Sequence[str] | None,
                 cache_root: str | os.PathLike[str] | None) -> tuple[Any, ...]:
        digest = hashlib.blake2b(digest_size=16)
        digest.update("\n".join(paths).encode("utf-8", "surrogateescape"))
        digest.update(b"\0" + "\n".join(hashes or ()).encode("ascii", "replace"))
        source: tuple[Any, ...] = ()
        if spec.partition(":")[0].lower() == "precomputed":
            # A replaced embedding file must not be served from memory.
            with contextlib.suppress(OSError):
                info = os.stat(spec.partition(":")[2])
                source = (info.st_size, info.st_mtime_ns, info.st_ino)
        return (spec, source, str(cache_root), len(paths), digest.hexdigest())

    def features(self, spec: str, paths: Sequence[str], hashes: Sequence[str] | None,
                 cache_root: str | os.PathLike[str] | None, device: str | None,
                 progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, str]:
        key = self._key_for(spec, paths, hashes, cache_root)
        if key != self._key or self._value is None:
            self._key, self._value, self._standardizer = None, None, None
            value = features_for(spec, paths, hashes, cache_root, device, progress)
            self._key, self._value = key, value
        elif progress is not None:
            progress(len(paths), len(paths))
        return self._value

    def standardizer(self, feats: np.ndarray, fit: Callable[[np.ndarray], Any]) -> Any:
        if self._value is None or self._value[0] is not feats:
            return fit(feats)
        if self._standardizer is None:
            self._standardizer = fit(feats)
        return self._standardizer

    def clear(self) -> None:
        self._key, self._value, self._standardizer = None, None, None


POOL_MEMO = _PoolMemo()


def round_threads(settings: dict[str, Any]) -> int | None:
    """Torch threads for a project's rounds: its ``threads`` setting when it has one; one for a
    linear head, which gains nothing from more on a few thousand labels, while on a busy machine
    threads waiting on each other made a demo round about five times slower
    (benchmarks/app_latency.py); otherwise None (torch's default, every core)."""
    if settings.get("threads"):
        return int(settings["threads"])
    return 1 if settings.get("model", "clip-linear") == "clip-linear" else None


_DEFAULT_THREADS: list[int] = []


def apply_round_threads(settings: dict[str, Any]) -> None:
    """Set torch's threads for the next round of a project with ``settings``."""
    import torch

    if not _DEFAULT_THREADS:
        _DEFAULT_THREADS.append(torch.get_num_threads())
    want = round_threads(settings) or _DEFAULT_THREADS[0]
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)


# ----------------------------------------------------------------------------- inputs


@dataclass
class RoundInputs:
    """Everything a round reads from the project database, read in one snapshot."""

    number: int
    strategy: str
    model_kind: str
    batch_size: int
    seed: int
    encoder: str
    l2: float
    device: str | None
    resnet: dict[str, Any]
    class_ids: list[int]
    class_names: list[str]
    pool_ids: np.ndarray
    pool_paths: list[str]
    pool_hashes: list[str]
    test_ids: np.ndarray
    test_paths: list[str]
    test_hashes: list[str]
    labeled_pos: np.ndarray          # positions in the pool
    labeled_y: np.ndarray            # class index (into class_ids) of each labeled position
    candidate_pos: np.ndarray        # pool positions that may be picked (never labeled, not skipped)
    test_pos: np.ndarray             # test positions with a reference label
    test_y: np.ndarray
    project_name: str = ""

    @property
    def labeled_classes(self) -> int:
        return int(np.unique(self.labeled_y).size)


@dataclass
class RoundOutcome:
    image_ids: np.ndarray
    scores: list[float | None]
    reasons: list[str]
    predicted: list[int | None]      # class ids
    confidence: list[float | None]
    cold_start: bool
    labeled_count: int
    accuracy: float | None = None
    test_count: int = 0
    model_path: str | None = None    # relative to the project folder
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- checkpoints


def _atomic_bytes(path: Path, data: bytes) -> None:
    from ralif.atomic import atomic_write

    atomic_write(path, lambda f: f.write(data))


def save_linear_head(path: str | os.PathLike[str], head: LinearHead, meta: dict[str, Any]) -> Path:
    """Weights as safetensors plus a JSON sidecar (same name, ``.json``) with class names, encoder id
    and the weights' sha256, so a pair left mismatched by an interrupted save is detected."""
    import torch
    from safetensors.torch import save as st_save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "weight": head.weight.detach().to("cpu", torch.float64).contiguous(),
        "mean": torch.as_tensor(np.asarray(head.standardizer.mean, dtype=np.float64)),
        "scale": torch.as_tensor(np.asarray(head.standardizer.scale, dtype=np.float64)),
    }
    meta = {"format": LINEAR_FORMAT, "format_version": LINEAR_FORMAT_VERSION, "architecture": "linear",
            "feature_dim": head.dim, "num_classes": head.num_classes, "l2": head.l2, **meta}
    blob = st_save(tensors, metadata={"ralif": json.dumps(meta)})
    _atomic_bytes(path, blob)
    meta.update(weights_file=path.name, weights_sha256=hashlib.sha256(blob).hexdigest(),
                saved_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    _atomic_bytes(path.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
    return path


def _annotate_sidecar(weights: Path, extra: dict[str, Any]) -> None:
    sidecar = weights.with_suffix(".json")
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    meta.update(extra)
    _atomic_bytes(sidecar, (json.dumps(meta, indent=2) + "\n").encode())


@dataclass
class ProjectModel:
    """A trained project model, loaded for prediction on image files."""

    kind: str                        # "linear" or "resnet18"
    class_names: list[str]
    meta: dict[str, Any]
    weights_path: Path
    head: Any = None
    network: Any = None

    @property
    def encoder_id(self) -> str | None:
        return self.meta.get("encoder_id")

    def predict_proba(self, paths: Sequence[str], cache_root: str | os.PathLike[str] | None = None,
                      device: str | None = None, progress: Callable[[int, int], None] | None = None,
                      hashes: Sequence[str] | None = None) -> np.ndarray:
        """Class probabilities (N x K) for the images at ``paths`` (``hashes``: their sha256, when
        already known, saves reading every file again for the feature cache)."""
        if not len(paths):
            return np.zeros((0, len(self.class_names)))
        if self.kind == "resnet18":
            return np.asarray(self.network.predict_proba(list(paths)), dtype=np.float64)
        spec = self.meta["encoder_spec"]
        feats, enc_id = features_for(spec, paths, hashes, cache_root=cache_root, device=device, progress=progress)
        if self.encoder_id and enc_id != self.encoder_id:
            raise ValueError(f"the model was trained on features of {self.encoder_id} but {spec!r} now "
                             f"gives {enc_id} (different weights or embeddings file)")
        return self.head.predict_proba(feats)


def _find_sidecar(path: Path) -> Path:
    if path.is_dir():
        from ralif.project.store import DB_NAME

        if (path / DB_NAME).is_file():
            from ralif.project.session import Project

            current = Project.open(path).current_model_path()
            if current is None:
                raise ValueError(f"project {path} has no trained model yet; finish a round with labels "
                                 f"of at least two classes first")
            return current.with_suffix(".json")
        found = sorted(path.glob("*.json"))
        if len(found) != 1:
            raise ValueError(f"{path} should hold exactly one model .json (found {len(found)})")
        return found[0]
    if path.suffix == ".json":
        return path
    if path.suffix == ".safetensors":
        return path.with_suffix(".json")
    raise ValueError(f"{path} is not a model: pass a project folder, a model folder, or a .safetensors/.json file")


def load_model(path: str | os.PathLike[str], device: str | None = None) -> ProjectModel:
    """A model saved by a project round (or exported): a project folder (its current model), an
    exported model folder, or the weights/.json file itself."""
    sidecar = _find_sidecar(Path(path))
    if not sidecar.is_file():
        raise FileNotFoundError(f"model description not found: {sidecar}")
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    weights = sidecar.parent / meta.get("weights_file", sidecar.with_suffix(".safetensors").name)
    fmt = meta.get("format")
    if fmt == "ralif-resnet18":
        from ralif.models.resnet import TrainedResNet

        net = TrainedResNet.load(weights, device=device)
        names = list(net.class_names or [str(i) for i in range(net.num_classes)])
        return ProjectModel("resnet18", names, meta, weights, network=net)
    if fmt != LINEAR_FORMAT:
        raise ValueError(f"{sidecar} does not describe a ralif model (format {fmt!r})")
    if int(meta.get("format_version", 0)) > LINEAR_FORMAT_VERSION:
        raise ValueError(f"{sidecar} was written by a newer ralif")
    from safetensors.torch import load as st_load

    from ralif.compute import resolve_device
    from ralif.head import LinearHead, Standardizer

    blob = weights.read_bytes()
    if meta.get("weights_sha256") not in (None, hashlib.sha256(blob).hexdigest()):
        raise ValueError(f"{weights} does not match {sidecar.name} (an interrupted save?)")
    t = st_load(blob)
    st = Standardizer(mean=t["mean"].numpy(), scale=t["scale"].numpy())
    head = LinearHead(t["weight"], st, float(meta.get("l2", 1e-2)), resolve_device(device))
    return ProjectModel("linear", list(meta["class_names"]), meta, weights, head=head)


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
    why = "no labels yet" if not len(inputs.labeled_pos) else "fewer than two classes labeled"
    reasons = [f"k-means++ pick {j + 1} of {budget} over {over} unlabeled images (cold start: {why})"
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
            rng: np.random.Generator) -> tuple[np.ndarray, list[float | None], list[str], dict[str, Any]]:
    from ralif.strategies import make_strategy

    strategy = make_strategy(inputs.strategy)
    captured = _capture_scores(strategy)
    unlabeled = np.sort(inputs.candidate_pos)
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
    diversity = getattr(strategy, "diversity", None)
    pick_word = {"kmeanspp": "k-means++ pick", "meanshift": "mean-shift pick", "kmeans": "k-means pick"}
    reasons = []
    if cand is not None and len(picked) < len(unlabeled):
        cand = np.asarray(cand)
        rank_of = np.full(len(feats), -1, dtype=np.int64)
        rank_of[cand] = np.arange(len(cand))
        for j, p in enumerate(picked):
            text = f"influence rank {rank_of[p] + 1} of {len(cand):,} candidates"
            if diversity in pick_word:
                text += f", {pick_word[diversity]} {j + 1} of {budget}"
            reasons.append(text)
    elif len(picked) == len(unlabeled):
        reasons = [f"one of the last {len(unlabeled):,} unlabeled images"] * len(picked)
    else:
        reasons = [f"{strategy.name} pick {j + 1} of {budget}" for j in range(len(picked))]
    return picked, scores, reasons, info


def _add_guesses(reasons: list[str], probs: np.ndarray, inputs: RoundInputs
                 ) -> tuple[list[str], list[int | None], list[float | None]]:
    top = probs.argmax(1)
    conf = probs[np.arange(len(top)), top]
    predicted = [inputs.class_ids[k] for k in top]
    out = [f"{r}; model guess: {inputs.class_names[k]} ({c:.0%})" for r, k, c in zip(reasons, top, conf)]
    return out, predicted, [float(c) for c in conf]


def _train_resnet(inputs: RoundInputs, report: Reporter, should_stop: StopCheck, device: str | None):
    from ralif.learners import load_uint8_images
    from ralif.models.resnet import TrainConfig, TrainingCancelled, train_resnet

    cfg = TrainConfig.from_dict({**DEFAULT_RESNET, **inputs.resnet})
    report("extracting", {"what": "decoding images", "done": 0, "total": len(inputs.pool_paths)})
    if cfg.variant == "cifar":
        # Small images are decoded once and kept in memory; 224-px images are read from disk.
        pool_imgs: Any = load_uint8_images(inputs.pool_paths, int(cfg.image_size))
        test_imgs: Any = load_uint8_images(inputs.test_paths, int(cfg.image_size)) if len(inputs.test_paths) \
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

    report("training", {"epoch": 0, "epochs": int(cfg.epochs), "fraction": 0.0})
    try:
        net = train_resnet(train_imgs, inputs.labeled_y, len(inputs.class_ids), cfg, device=device,
                           progress=on_progress, should_stop=should_stop, class_names=inputs.class_names)
    except TrainingCancelled as exc:
        raise RoundCancelled(str(exc)) from exc
    feats, _ = net.features_and_proba(pool_imgs)
    test_pred = net.predict(test_imgs) if len(inputs.test_pos) else None
    return net, feats, test_pred, cfg


def compute_round(project: Project, inputs: RoundInputs, report: Reporter | None = None,
                  should_stop: StopCheck | None = None) -> RoundOutcome:
    """Features, training, selection and checkpoint for ``inputs``; writes only the model file."""
    from ralif.head import LinearHead, Standardizer, fit_head

    report = report or (lambda phase, progress=None: None)
    stop = should_stop or (lambda: False)

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
        picks, reasons = _cold_start(pool_feats, inputs, budget, rng)
        return RoundOutcome(inputs.pool_ids[picks], [None] * budget, reasons, [None] * budget,
                            [None] * budget, cold_start=True, labeled_count=len(inputs.labeled_pos),
                            info={"encoder_id": enc_id})

    models_dir = project.folder / "models"
    weights_path = models_dir / f"round-{inputs.number:04d}.safetensors"
    accuracy: float | None = None
    common_meta = {"class_names": inputs.class_names, "class_ids": inputs.class_ids,
                   "round": inputs.number, "labeled": len(inputs.labeled_pos),
                   "project": inputs.project_name}
    if inputs.model_kind == "resnet18":
        net, pool_feats, test_pred, cfg = _train_resnet(inputs, report, stop, inputs.device)
        w, b = net.final_layer()
        # SGD weight decay wd on the mean loss is the L2 term (wd/2)‖W‖², the λ of the Hessian.
        head = LinearHead.from_linear_layer(w, b, l2=float(cfg.weight_decay), device=inputs.device)
        if test_pred is not None:
            accuracy = float(np.mean(test_pred[inputs.test_pos] == inputs.test_y))
        check()
        report("saving", None)
        net.save(weights_path)
        _annotate_sidecar(weights_path, {**common_meta, "encoder_id": f"resnet18:{cfg.variant}",
                                         "accuracy": accuracy, "test_count": len(inputs.test_pos)})
        enc_id = f"resnet18:{cfg.variant}"
    else:
        report("training", {"fraction": 0.0, "labeled": len(inputs.labeled_pos)})
        st = POOL_MEMO.standardizer(pool_feats, Standardizer.fit)
        head = fit_head(pool_feats, inputs.labeled_pos, inputs.labeled_y, len(inputs.class_ids),
                        l2=inputs.l2, standardizer=st, device=inputs.device)
        report("training", {"fraction": 1.0, "labeled": len(inputs.labeled_pos)})
        if len(inputs.test_pos):
            test_feats, _ = features_for(inputs.encoder, [inputs.test_paths[i] for i in inputs.test_pos],
                                         [inputs.test_hashes[i] for i in inputs.test_pos], cache_root,
                                         inputs.device, None)
            accuracy = float(np.mean(head.predict(test_feats) == inputs.test_y))
        check()
        report("saving", None)
        save_linear_head(weights_path, head, {**common_meta, "encoder_spec": inputs.encoder,
                                              "encoder_id": enc_id, "accuracy": accuracy,
                                              "test_count": len(inputs.test_pos)})
    check()
    if budget < 1:
        # Every pool image is labeled: the model is still worth training, there is just nothing to ask.
        picks, scores, reasons, info = np.zeros(0, np.int64), [], [], {"note": "every image is labeled"}
        predicted: list[int | None] = []
        confidence: list[float | None] = []
    else:
        report("selecting", None)
        picks, scores, reasons, info = _select(head, pool_feats, inputs, budget, rng)
        probs = head.predict_proba(pool_feats, picks)
        reasons, predicted, confidence = _add_guesses(reasons, probs, inputs)
    info["encoder_id"] = enc_id
    return RoundOutcome(inputs.pool_ids[picks], scores, reasons, predicted, confidence, cold_start=False,
                        labeled_count=len(inputs.labeled_pos), accuracy=accuracy,
                        test_count=len(inputs.test_pos),
                        model_path=os.path.relpath(weights_path, project.folder), info=info)


def run_next_round(project: Project | str | os.PathLike[str], report: Reporter | None = None,
                   should_stop: StopCheck | None = None, *, job_path: str | None = None) -> dict[str, Any]:
    """Run the project's queued (or failed) round to completion: the plain function behind the
    background worker. Returns a summary; on failure the round is marked failed with the reason,
    labels and the current model stay as they were, and the exception is raised again."""
    from ralif.project.session import Project

    if not isinstance(project, Project):
        project = Project.open(project)
    number = project._claim_round(job_path=job_path)
    last_phase: list[str | None] = [None]

    def relay(phase: str, progress: dict[str, Any] | None = None) -> None:
        if phase != last_phase[0]:
            last_phase[0] = phase
            project._set_round_phase(number, phase)
        if report is not None:
            report(phase, progress)

    start = time.perf_counter()
    try:
        inputs = project._round_inputs(number)
        outcome = compute_round(project, inputs, relay, should_stop)
        project._finish_round(number, outcome, time.perf_counter() - start, job_path=job_path)
    except BaseException as exc:
        from ralif.project.session import RoundBusy

        if not isinstance(exc, RoundBusy):  # a round taken over is the other runner's to record
            reason = "cancelled on request" if isinstance(exc, RoundCancelled) else f"{type(exc).__name__}: {exc}"
            project._fail_round(number, reason, only_if_running=True, job_path=job_path)
        raise
    if report is not None:
        report("done", None)
    return {"round": number, "selected": len(outcome.image_ids), "cold_start": outcome.cold_start,
            "accuracy": outcome.accuracy, "labeled": outcome.labeled_count, "model": outcome.model_path,
            "seconds": round(time.perf_counter() - start, 3)}


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
