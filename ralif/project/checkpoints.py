"""Checkpoints: a round's model saved as safetensors plus a JSON sidecar, loaded back for
prediction, and old ones pruned."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ralif.project.features import features_for

if TYPE_CHECKING:
    from ralif.head import LinearHead

LINEAR_FORMAT = "ralif-linear-head"
LINEAR_FORMAT_VERSION = 1


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
    return meta


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


def load_model(path: str | os.PathLike[str], device: str | None = None) -> ProjectModel:
    """A model saved by a project round (or exported): a project folder (its current model), an
    exported model folder, or the weights/.json file itself."""
    sidecar = _find_sidecar(Path(path))
    if not sidecar.is_file():
        raise FileNotFoundError(f"model description not found: {sidecar}")
    meta = read_sidecar(sidecar)
    weights = weights_path(sidecar, meta)
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
    if not {"weight", "mean", "scale"} <= set(t):
        raise ValueError(f"{weights} lacks the tensors of a ralif linear model (weight, mean, scale)")
    st = Standardizer(mean=t["mean"].numpy(), scale=t["scale"].numpy())
    try:
        head = LinearHead(t["weight"], st, float(meta.get("l2", 1e-2)), resolve_device(device))
    except KeyError as exc:
        raise ValueError(f"{weights} lacks the tensor {exc} of a ralif linear model") from exc
    if head.num_classes != len(meta["class_names"]):
        raise ValueError(f"{sidecar} names {len(meta['class_names'])} classes but {weights.name} has "
                         f"{head.num_classes}")
    return ProjectModel("linear", list(meta["class_names"]), meta, weights, head=head)


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
