"""Checkpoints: a round's model saved as safetensors plus a JSON sidecar, loaded back for
prediction, and old ones pruned.

A model predicts the classes its round was trained on (``class_ids``/``class_names``, one per output
column). After classes are renamed, merged or deleted, :func:`map_classes` maps those columns to the
project's current classes; an exported model carries that map in its sidecar (``column_map``, with
the columns' own names as ``trained_class_names``), and :meth:`ProjectModel.predict_proba` sums the
columns that now count as one class and leaves out those of deleted classes (renormalising)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ralif.project.features import features_for

if TYPE_CHECKING:
    from ralif.head import LinearHead
    from ralif.project.store import Store

LINEAR_FORMAT = "ralif-linear-head"
LINEAR_FORMAT_VERSION = 1
# An exported linear model whose columns are mapped to other classes (``column_map``): a ralif that
# cannot apply the map refuses it ("written by a newer ralif") instead of predicting stale classes.
MAPPED_FORMAT_VERSION = 2


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


def annotate_sidecar(weights: Path, extra: dict[str, Any]) -> None:
    sidecar = weights.with_suffix(".json")
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    meta.update(extra)
    _atomic_bytes(sidecar, (json.dumps(meta, indent=2) + "\n").encode())


@dataclass(frozen=True)
class ClassMapping:
    """How a model's output columns map to a project's current classes."""

    names: list[str]                 # the current classes the model predicts, in display order
    ids: list[int]
    columns: list[int | None]        # per output column: index into ``names``; None: class deleted
    trained_names: list[str]         # the columns' classes as the model was trained on them
    trained_ids: list[int]
    unknown: list[str]               # current classes the model has no column for (added since)

    @property
    def identity(self) -> bool:
        """Whether the columns are still the current classes, same names, same order."""
        return (self.ids == self.trained_ids and self.names == self.trained_names
                and self.columns == list(range(len(self.trained_ids))))

    @property
    def changed(self) -> bool:
        """Whether a class was renamed, merged, deleted or added since the training (a new display
        order alone is no change the model's user would notice)."""
        return (bool(self.unknown) or len(self.names) != len(self.trained_names)
                or any(c is None or self.names[c] != self.trained_names[k] for k, c in enumerate(self.columns)))

    def sidecar(self, meta: dict[str, Any]) -> dict[str, Any]:
        """``meta`` (the checkpoint's sidecar) describing the model with this map applied (``meta``
        itself where the map changes nothing)."""
        if self.identity:
            return meta
        out = {**meta, "class_names": list(self.names), "class_ids": list(self.ids),
               "trained_class_names": list(self.trained_names), "trained_class_ids": list(self.trained_ids),
               "column_map": list(self.columns)}
        if meta.get("format") == LINEAR_FORMAT:
            out["format_version"] = max(int(meta.get("format_version", 0)), MAPPED_FORMAT_VERSION)
        return out


def map_classes(meta: Mapping[str, Any], live: Sequence[tuple[int, str]],
                truth: Mapping[int, int]) -> ClassMapping | None:
    """The map from a checkpoint's columns to the current classes: ``live`` the live classes (id,
    name) in display order, ``truth`` every class id -> the live class it counts as now (itself, or
    its merge target; deleted ones absent, :meth:`ralif.project.classes.ClassesMixin.truth_map`).
    None for a checkpoint that does not record its class ids (nothing to map by). Raises
    ValueError when fewer than two of the model's classes are left (it would predict one class or none)."""
    trained_ids, trained_names = meta.get("class_ids"), meta.get("class_names")
    if "column_map" in meta or not isinstance(trained_ids, list) or not isinstance(trained_names, list) \
            or len(trained_ids) != len(trained_names):
        return None
    targets = [truth.get(int(c)) for c in trained_ids]
    hit = set(targets)
    kept = [(cid, name) for cid, name in live if cid in hit]
    index = {cid: i for i, (cid, _) in enumerate(kept)}
    if not kept:
        raise ValueError("every class the model was trained on has been deleted: label images of at least two "
                         "current classes and run a round to train a model on them")
    if len(kept) < 2:
        raise ValueError(f"every class the model was trained on is now deleted or merged into {kept[0][1]!r}, "
                         f"so it would predict that class for every image: label images of another class "
                         f"and run a round to train a model on the current classes")
    return ClassMapping(names=[n for _, n in kept], ids=[c for c, _ in kept],
                        columns=[None if t is None else index[t] for t in targets],
                        trained_names=[str(n) for n in trained_names], trained_ids=[int(c) for c in trained_ids],
                        unknown=[n for cid, n in live if cid not in index])


def project_classes(store: Store) -> tuple[list[tuple[int, str]], dict[int, int]]:
    """A project's live classes (id, name) in display order and its map of every class id to the
    live class it counts as now, as :func:`map_classes` takes them."""
    live = [(int(r[0]), str(r[1])) for r in store.query(
        "SELECT id, name FROM classes WHERE deleted = 0 ORDER BY position, id")]
    truth = {int(r[0]): int(r[1]) for r in store.query("SELECT class_id, live_id FROM class_truth")}
    return live, truth


def project_mapping(store: Store, meta: Mapping[str, Any]) -> ClassMapping | None:
    """:func:`map_classes` for a checkpoint of the project ``store`` belongs to."""
    return map_classes(meta, *project_classes(store))


def apply_column_map(probs: np.ndarray, columns: Sequence[int | None], n_out: int) -> np.ndarray:
    """Probabilities over the model's columns (N x K) as probabilities over ``n_out`` classes: the
    columns mapped to one class summed, those mapped to None left out, each row renormalised."""
    probs = np.asarray(probs, dtype=np.float64)
    out = np.zeros((probs.shape[0], n_out), dtype=np.float64)
    for k, m in enumerate(columns):
        if m is not None:
            out[:, m] += probs[:, k]
    total = out.sum(axis=1, keepdims=True)
    # A row whose mass was all on deleted classes (underflow) says nothing: uniform.
    return np.divide(out, total, out=np.full_like(out, 1.0 / max(n_out, 1)), where=total > 0)


@dataclass
class ProjectModel:
    """A trained project model, loaded for prediction on image files."""

    kind: str                        # "linear" or "resnet18"
    class_names: list[str]
    meta: dict[str, Any]
    weights_path: Path
    head: Any = None
    network: Any = None
    # Output column -> index into class_names (None: a deleted class); None: the columns are the classes.
    column_map: list[int | None] | None = None

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
        probs = self._column_proba(paths, cache_root, device, progress, hashes)
        if self.column_map is None:
            return probs
        return apply_column_map(probs, self.column_map, len(self.class_names))

    def _column_proba(self, paths: Sequence[str], cache_root: str | os.PathLike[str] | None,
                      device: str | None, progress: Callable[[int, int], None] | None,
                      hashes: Sequence[str] | None) -> np.ndarray:
        if self.kind == "resnet18":
            return np.asarray(self.network.predict_proba(list(paths)), dtype=np.float64)
        spec = self.meta["encoder_spec"]
        feats, enc_id = features_for(spec, paths, hashes, cache_root=cache_root, device=device, progress=progress)
        if self.encoder_id and enc_id != self.encoder_id:
            raise ValueError(f"the model was trained on features of {self.encoder_id} but {spec!r} now "
                             f"gives {enc_id} (different weights or embeddings file)")
        return np.asarray(self.head.predict_proba(feats), dtype=np.float64)


def _find_sidecar(path: Path) -> Path:
    if path.is_dir():
        from ralif.project.store import DB_NAME

        if (path / DB_NAME).is_file():
            from ralif.project.store import Store

            rel = Store(path / DB_NAME).get_setting("current_model")
            current = None if not rel else path / rel
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


def read_sidecar(sidecar: Path) -> dict[str, Any]:
    """A model's JSON description, checked: every message names the file."""
    try:
        text = sidecar.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{sidecar}: not a model description (not UTF-8 text)") from exc
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{sidecar}: not a model description (invalid JSON: {exc})") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{sidecar}: not a model description (a JSON object was expected)")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise ValueError(f"{sidecar}: class_names must be a list of names")
    if meta.get("format") == LINEAR_FORMAT and not names:
        raise ValueError(f"{sidecar}: the model has no classes (class_names is empty or missing)")
    if names is not None and not names:
        raise ValueError(f"{sidecar}: the model has no classes (class_names is empty)")
    if "column_map" in meta:
        _check_column_map(sidecar, meta)
    return meta


def _check_column_map(sidecar: Path, meta: dict[str, Any]) -> None:
    columns, trained, names = meta["column_map"], meta.get("trained_class_names"), meta.get("class_names")
    if not isinstance(trained, list) or not all(isinstance(n, str) for n in trained) or not trained:
        raise ValueError(f"{sidecar}: a model with a column_map needs trained_class_names (its columns' classes)")
    if not isinstance(columns, list) or len(columns) != len(trained):
        raise ValueError(f"{sidecar}: column_map must give one class per column ({len(trained)} columns)")
    n = len(names or [])
    if not all(c is None or (isinstance(c, int) and not isinstance(c, bool) and 0 <= c < n) for c in columns):
        raise ValueError(f"{sidecar}: column_map entries must be class numbers below {n} or null")
    if all(c is None for c in columns):
        raise ValueError(f"{sidecar}: column_map maps no column to a class")


def _column_count(meta: dict[str, Any]) -> int:
    return len(meta["trained_class_names"] if "column_map" in meta else meta["class_names"])


def weights_path(sidecar: Path, meta: dict[str, Any]) -> Path:
    """The weights file a sidecar names: a plain file name beside it (a project's models/ or an
    exported model folder), never a path that leads elsewhere."""
    name = meta.get("weights_file", sidecar.with_suffix(".safetensors").name)
    if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name \
            or "\\" in name:
        raise ValueError(f"{sidecar}: weights_file must name a file in the same folder, not {name!r}")
    path = sidecar.parent / name
    if not path.resolve().is_relative_to(sidecar.parent.resolve()):
        raise ValueError(f"{sidecar}: weights_file {name!r} leads outside {sidecar.parent}")
    return path


def _project_store(path: Path) -> Store | None:
    from ralif.project.store import DB_NAME, Store

    return Store(path / DB_NAME) if path.is_dir() and (path / DB_NAME).is_file() else None


def load_model(path: str | os.PathLike[str], device: str | None = None) -> ProjectModel:
    """A model saved by a project round (or exported): a project folder (its current model, its
    columns mapped to the project's current classes), an exported model folder, or the
    weights/.json file itself."""
    sidecar = _find_sidecar(Path(path))
    if not sidecar.is_file():
        raise FileNotFoundError(f"model description not found: {sidecar}")
    meta = read_sidecar(sidecar)
    store = _project_store(Path(path))
    if store is not None:
        mapping = project_mapping(store, meta)
        if mapping is not None:
            meta = mapping.sidecar(meta)
    weights = weights_path(sidecar, meta)
    fmt = meta.get("format")
    column_map = meta.get("column_map")
    if fmt == "ralif-resnet18":
        from ralif.models.resnet import TrainedResNet

        net = TrainedResNet.load(weights, device=device)
        if column_map is not None:
            if net.num_classes != len(column_map):
                raise ValueError(f"{sidecar} maps {len(column_map)} columns but {weights.name} has {net.num_classes}")
            return ProjectModel("resnet18", list(meta["class_names"]), meta, weights, network=net,
                                column_map=list(column_map))
        names = list(net.class_names or [str(i) for i in range(net.num_classes)])
        return ProjectModel("resnet18", names, meta, weights, network=net)
    if fmt != LINEAR_FORMAT:
        raise ValueError(f"{sidecar} does not describe a ralif model (format {fmt!r})")
    if int(meta.get("format_version", 0)) > MAPPED_FORMAT_VERSION:
        raise ValueError(f"{sidecar} was written by a newer ralif")
    from safetensors.torch import load as st_load

    from ralif.compute import resolve_device
    from ralif.head import LinearHead, Standardizer

    blob = weights.read_bytes()
    if meta.get("weights_sha256") not in (None, hashlib.sha256(blob).hexdigest()):
        raise ValueError(f"{weights} does not match {sidecar.name} (an interrupted save?)")
    t = st_load(blob)
    if not {"weight", "mean", "scale"} <= set(t):
        raise ValueError(f"{weights} lacks the tensors of a ralif linear model (weight, mean, scale)")
    st = Standardizer(mean=t["mean"].numpy(), scale=t["scale"].numpy())
    try:
        head = LinearHead(t["weight"], st, float(meta.get("l2", 1e-2)), resolve_device(device))
    except KeyError as exc:
        raise ValueError(f"{weights} lacks the tensor {exc} of a ralif linear model") from exc
    if head.num_classes != _column_count(meta):
        raise ValueError(f"{sidecar} names {_column_count(meta)} classes but {weights.name} has "
                         f"{head.num_classes}")
    return ProjectModel("linear", list(meta["class_names"]), meta, weights, head=head,
                        column_map=None if column_map is None else list(column_map))


def prune_models(folder: Path, wanted: list[str | None]) -> None:
    """Remove the round checkpoints under ``folder/models`` whose path (relative to ``folder``) is
    not in ``wanted``; the rounds table still records which round produced which model."""
    keep = set(wanted)
    for weights in (folder / "models").glob("round-*.safetensors"):
        if os.path.relpath(weights, folder) not in keep:
            # The sidecar is written last and removed first: a prune cut short leaves weights
            # without a sidecar (never loaded, removed by the next prune), not a sidecar
            # describing deleted weights.
            weights.with_suffix(".json").unlink(missing_ok=True)
            weights.unlink(missing_ok=True)
