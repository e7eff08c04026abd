"""The ResNet18 itself: its two variants and their training settings (:class:`TrainConfig`), the
network with a fresh final layer (ImageNet weights read from a local file, never downloaded), and
:class:`TrainedResNet`, a trained network that gives features, probabilities and its final layer
and is saved and read back as safetensors plus a JSON sidecar."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models import ResNet, ResNet18_Weights, resnet18

from ralif.atomic import atomic_write_bytes
from ralif.compute import resolve_device
from ralif.models.advice import PAPER_EPOCHS
from ralif.models.resnet_data import EvalView, ImageSet, ImageSource, Normalizer, batch_array, source_len

VARIANTS = ("cifar", "imagenet")
FEATURE_DIM = 512
IMAGENET_WEIGHTS = "imagenet"
CHECKPOINT_FORMAT = "ralif-resnet18"
CHECKPOINT_VERSION = 1

_PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar": {
        "epochs": PAPER_EPOCHS, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "image_size": 32,
    },
    "imagenet": {
        "epochs": PAPER_EPOCHS, "batch_size": 128, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
        "image_size": 224,
    },
}

_T = TypeVar("_T")


def required(value: _T | None) -> _T:
    """A :class:`TrainConfig` field that ``__post_init__`` has filled in (never None after it)."""
    if value is None:
        raise ValueError("a TrainConfig field was left unset")
    return value


LR_SCALINGS = ("batch", "none")
# The automatic warm-up: this share of all steps, capped (a long run needs no longer ramp).
AUTO_WARMUP_FRACTION = 0.1
AUTO_WARMUP_MAX = 500


@dataclasses.dataclass
class TrainConfig:
    """Training settings.  Fields left as ``None`` take the paper's value for ``variant``.

    ``weights`` applies to the imagenet variant: ``"auto"`` or ``"imagenet"`` loads torchvision's
    ImageNet weights from the torch hub cache, a file path loads that file, and ``None`` starts
    from random weights.  ``amp`` and ``channels_last`` only take effect on CUDA.

    ``lr`` is the rate for a full batch of ``batch_size`` images.  With ``lr_scaling="batch"``
    a run with fewer labeled images than a batch scales it down in proportion (the linear
    scaling rule): the full rate on a batch of a few images is what made from-scratch training
    on a few labels diverge (benchmarks/resnet_few_labels.py).  ``"none"`` keeps it as given.
    ``warmup_steps`` ramps the rate up linearly over the first steps (0, the default: none;
    ``None``: :data:`AUTO_WARMUP_FRACTION` of the run, at most :data:`AUTO_WARMUP_MAX` steps);
    warm-up alone did not prevent the divergence.  ``clip_grad_norm`` bounds the gradient's
    norm (``None``, the default: no clipping).
    """

    variant: str = "cifar"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    image_size: int | None = None
    seed: int = 0
    num_workers: int = 0
    amp: bool = True
    channels_last: bool = True
    weights: str | None = "auto"
    lr_scaling: str = "batch"
    warmup_steps: int | None = 0
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown ResNet variant {self.variant!r}; expected one of {VARIANTS}")
        for name, value in _PAPER_DEFAULTS[self.variant].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.weights == "auto":
            self.weights = IMAGENET_WEIGHTS if self.variant == "imagenet" else None
        if self.weights is not None:
            self.weights = os.fspath(self.weights)
            if self.variant == "cifar":
                raise ValueError("the cifar variant trains from scratch; set weights=None")
        if int(required(self.epochs)) < 1 or int(required(self.batch_size)) < 1 or int(required(self.image_size)) < 8:
            raise ValueError("epochs and batch_size must be >= 1 and image_size >= 8")
        if self.num_workers < 0:
            raise ValueError("num_workers must be >= 0")
        if self.lr_scaling not in LR_SCALINGS:
            raise ValueError(f"unknown lr_scaling {self.lr_scaling!r}; expected one of {LR_SCALINGS}")
        if self.warmup_steps is not None and int(self.warmup_steps) < 0:
            raise ValueError("warmup_steps must be >= 0 (or None for the automatic warm-up)")
        if self.clip_grad_norm is not None and not float(self.clip_grad_norm) > 0:
            raise ValueError("clip_grad_norm must be > 0 (or None for no clipping)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**data)


# --------------------------------------------------------------------------- network


def imagenet_weights_path() -> Path:
    """Where torchvision keeps ``ResNet18_Weights.IMAGENET1K_V1`` in the torch hub cache."""
    filename = os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _missing_weights_message(path: Path) -> str:
    url = ResNet18_Weights.IMAGENET1K_V1.url
    return (
        f"ImageNet weights for ResNet18 were not found at {path}. They are never downloaded "
        f"automatically. Copy torchvision's ResNet18_Weights.IMAGENET1K_V1 file ({url}) to that "
        "location (the torch hub cache; TORCH_HOME moves it), or pass the path of a local copy "
        "as weights=..., or use weights=None to start from random weights."
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        # weights_only keeps a checkpoint from running code while it is read.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_imagenet_weights(model: nn.Module, weights: str) -> None:
    path = imagenet_weights_path() if weights == IMAGENET_WEIGHTS else Path(weights).expanduser()
    if not path.is_file():
        if weights == IMAGENET_WEIGHTS:
            raise RuntimeError(_missing_weights_message(path))
        raise RuntimeError(
            f"ResNet18 weights file {path} does not exist; pass an existing file, or "
            "weights=None to start from random weights."
        )
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("fc.")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{path} is not a torchvision ResNet18 state dict "
            f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )


def build_resnet18(variant: str, num_classes: int, weights: str | None = None) -> ResNet:
    """torchvision's ResNet18 for ``variant`` with a fresh ``num_classes``-way final layer.

    ``weights`` (imagenet variant only): ``"imagenet"`` for the hub-cache ImageNet file, a path,
    or ``None`` for random initialisation.  Raises ``RuntimeError`` when requested weights are
    absent.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown ResNet variant {variant!r}; expected one of {VARIANTS}")
    if num_classes < 2:
        raise ValueError("num_classes must be at least 2")
    if variant == "cifar":
        if weights is not None:
            raise ValueError("the cifar variant trains from scratch; set weights=None")
        model = resnet18(weights=None, num_classes=num_classes)
        # At 32 px the ImageNet stem (7x7 stride 2 + max-pool) would throw away 3/4 of the
        # resolution before the first block, so the CIFAR stem keeps it.
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
        return model
    model = resnet18(weights=None)
    if weights is not None:
        _load_imagenet_weights(model, weights)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _penultimate(model: ResNet, x: torch.Tensor) -> torch.Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


class TrainedResNet:
    """A trained ResNet18 plus what is needed to use it again (variant, classes, image size)."""

    def __init__(
        self,
        model: ResNet,
        variant: str,
        num_classes: int,
        image_size: int,
        config: TrainConfig,
        class_names: Sequence[str] | None = None,
        history: list[dict] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.variant = variant
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.config = config
        self.class_names = list(class_names) if class_names is not None else None
        self.history = list(history or [])
        self.device = resolve_device(device)
        self.channels_last = self.device.type == "cuda" and config.channels_last
        self.model: ResNet = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def __repr__(self) -> str:
        return (
            f"TrainedResNet(variant={self.variant!r}, num_classes={self.num_classes}, "
            f"image_size={self.image_size}, device={str(self.device)!r})"
        )

    # ---- inference

    def _batches(self, images: ImageSource, batch_size: int) -> Iterator[torch.Tensor]:
        view = EvalView(self.variant, self.image_size)
        norm = Normalizer(self.variant, self.device, self.channels_last)
        whole = batch_array(images)
        if whole is not None:
            for i in range(0, whole.shape[0], batch_size):
                x = whole[i : i + batch_size].to(self.device, non_blocking=True)
                yield norm(view(x))
            return
        source_len(images)
        loader = DataLoader(
            ImageSet(images, None, view),
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for x, _ in loader:
            yield norm(x.to(self.device, non_blocking=True))

    @torch.no_grad()
    def features_and_proba(
        self, images: ImageSource, batch_size: int = 256
    ) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features (N x 512) and class probabilities (N x K) in one pass."""
        self.model.eval()
        feats, probs = [], []
        for x in self._batches(images, batch_size):
            f = _penultimate(self.model, x).float()
            feats.append(f.cpu())
            probs.append(torch.softmax(self.model.fc(f), dim=1).cpu())
        if not feats:
            return (
                np.zeros((0, FEATURE_DIM), np.float32),
                np.zeros((0, self.num_classes), np.float32),
            )
        return torch.cat(feats).numpy(), torch.cat(probs).numpy()

    def predict_proba(self, images: ImageSource, batch_size: int = 256) -> np.ndarray:
        """Softmax class probabilities, N x K float32."""
        return self.features_and_proba(images, batch_size)[1]

    def predict(self, images: ImageSource, batch_size: int = 256) -> np.ndarray:
        """Most probable class index per image."""
        return self.predict_proba(images, batch_size).argmax(axis=1)

    def penultimate_features(self, images: ImageSource, batch_size: int = 256) -> np.ndarray:
        """Global-average-pool output feeding the final layer, N x 512 float32."""
        return self.features_and_proba(images, batch_size)[0]

    def final_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """The final linear layer as (weight K x 512, bias K), float32 copies."""
        fc = self.model.fc
        w = fc.weight.detach().float().cpu().numpy().copy()
        b = fc.bias.detach().float().cpu().numpy().copy()
        return w, b

    # ---- persistence

    def _metadata(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "architecture": "resnet18",
            "variant": self.variant,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "image_size": self.image_size,
            "feature_dim": FEATURE_DIM,
            "config": self.config.to_dict(),
            "history": self.history,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write weights to ``path`` (safetensors) and a JSON sidecar next to it (``.json``).

        Both files are replaced atomically; the sidecar records the weights' SHA-256 so a pair
        left mismatched by an interrupted save is detected on load.  Returns the weights path.
        """
        from safetensors.torch import save as st_save

        path = Path(path)
        sidecar = _sidecar_path(path)
        if sidecar == path:
            raise ValueError("the weights path must not end in .json (that name is the sidecar)")
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        meta = self._metadata()
        blob = st_save(state, metadata={"format": "pt", "ralif": json.dumps(meta)})
        atomic_write_bytes(path, blob)
        meta["weights_file"] = path.name
        meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
        meta["saved_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_bytes(sidecar, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, device: str | torch.device | None = None
    ) -> TrainedResNet:
        """Read a model written by :meth:`save`; ``path`` may name the weights or the sidecar."""
        from safetensors import safe_open
        from safetensors.torch import load as st_load

        file = Path(path)
        if file.suffix == ".json":
            sidecar = file
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            file = sidecar.parent / meta.get("weights_file", sidecar.with_suffix("").name)
        else:
            sidecar = _sidecar_path(file)
            meta = None
            if sidecar.is_file():
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
        blob = file.read_bytes()
        if meta is None:
            # The weights carry a copy of the metadata, so a lost sidecar is not fatal.
            with safe_open(str(file), framework="pt") as f:
                embedded = (f.metadata() or {}).get("ralif")
            if embedded is None:
                raise ValueError(f"{file} is not a ralif ResNet checkpoint (no metadata)")
            meta = json.loads(embedded)
        elif meta.get("weights_sha256") not in (None, hashlib.sha256(blob).hexdigest()):
            raise ValueError(
                f"{file} does not match {sidecar.name} (an interrupted save?); retrain or "
                "restore both files together"
            )
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{file} is not a ralif ResNet checkpoint")
        if int(meta.get("format_version", 0)) > CHECKPOINT_VERSION:
            raise ValueError(f"{file} was written by a newer ralif (format {meta['format_version']})")
        config = TrainConfig.from_dict({**meta["config"], "weights": None})
        model = build_resnet18(meta["variant"], int(meta["num_classes"]), weights=None)
        model.load_state_dict(st_load(blob), strict=True)
        return cls(
            model,
            variant=meta["variant"],
            num_classes=int(meta["num_classes"]),
            image_size=int(meta["image_size"]),
            config=config,
            class_names=meta.get("class_names"),
            history=meta.get("history"),
            device=device,
        )


def _sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")
