"""ResNet18 trained end to end on the labeled images, in the paper's two variants.

* ``cifar``: torchvision's ResNet18 with a CIFAR-style stem (3x3 stride-1 first convolution, no
  max-pool) trained from scratch at 32 px; SGD lr 0.1, momentum 0.9, weight decay 5e-4, lr x0.1
  at 80% of the epochs; augmentation: random crop (padding 4) and horizontal flip.
* ``imagenet``: the standard 224 px ResNet18 fine-tuned from ImageNet weights; SGD lr 0.01 with a
  cosine schedule; augmentation: RandomResizedCrop and horizontal flip; evaluation on a
  Resize(256) + CenterCrop(224) view.

The trained network exposes what the influence engine needs: the 512-d penultimate features
(global average pool output) and the final linear layer.  Weights are never downloaded: ImageNet
weights are read from torch's hub cache or from a file the caller names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models import ResNet18_Weights, resnet18
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ralif.atomic import atomic_write_bytes
from ralif.compute import resolve_device
from ralif.images import load_rgb, to_rgb

__all__ = [
    "FEATURE_DIM",
    "VARIANTS",
    "TrainConfig",
    "TrainedResNet",
    "TrainingCancelled",
    "build_resnet18",
    "imagenet_weights_path",
    "train_resnet",
]

VARIANTS = ("cifar", "imagenet")
FEATURE_DIM = 512
IMAGENET_WEIGHTS = "imagenet"
CHECKPOINT_FORMAT = "ralif-resnet18"
CHECKPOINT_VERSION = 1

# The cifar variant uses the usual CIFAR statistics (as the paper's code does); the imagenet
# variant uses ImageNet statistics because the pretrained filters expect them.
_MEAN_STD = {
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

_PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar": {
        "epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
        "image_size": 32,
    },
    "imagenet": {
        "epochs": 200, "batch_size": 128, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
        "image_size": 224,
    },
}

# Step decay for the cifar variant happens once, at this fraction of the epochs.
_STEP_AT = 0.8

ImageSource = Sequence[str | os.PathLike] | np.ndarray | torch.Tensor | Dataset
ProgressFn = Callable[[dict], None]


class TrainingCancelled(Exception):
    """Raised by :func:`train_resnet` when ``should_stop()`` returned true."""


@dataclasses.dataclass
class TrainConfig:
    """Training settings.  Fields left as ``None`` take the paper's value for ``variant``.

    ``weights`` applies to the imagenet variant: ``"auto"`` or ``"imagenet"`` loads torchvision's
    ImageNet weights from the torch hub cache, a file path loads that file, and ``None`` starts
    from random weights.  ``amp`` and ``channels_last`` only take effect on CUDA.
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
        if int(self.epochs) < 1 or int(self.batch_size) < 1 or int(self.image_size) < 8:
            raise ValueError("epochs and batch_size must be >= 1 and image_size >= 8")
        if self.num_workers < 0:
            raise ValueError("num_workers must be >= 0")

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

        state = load_file(str(path))
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


def build_resnet18(variant: str, num_classes: int, weights: str | None = None) -> nn.Module:
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


def _penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


# --------------------------------------------------------------------------- images


def _load_image(path: str | os.PathLike) -> torch.Tensor:
    arr = np.asarray(load_rgb(path), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _array_to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    if a.dtype == np.uint16:
        return (a // 257).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {a.dtype}; use uint8 (or floats in [0, 1])")


def _to_uint8_chw(img: Any) -> torch.Tensor:
    """One image of any supported kind as a uint8 3xHxW tensor."""
    if isinstance(img, (str, os.PathLike)):
        return _load_image(img)
    if isinstance(img, Image.Image):
        arr = np.asarray(to_rgb(img), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    if isinstance(img, np.ndarray):
        a = _array_to_uint8(img)
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise ValueError(f"expected an HxWxC image array, got shape {img.shape}")
        t = torch.from_numpy(np.ascontiguousarray(a[:, :, :3])).permute(2, 0, 1)
    elif isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.is_floating_point():
            t = (t * 255.0).round().clamp(0, 255).to(torch.uint8)
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(f"expected a CxHxW image tensor, got shape {tuple(img.shape)}")
        t = t[:3]
    else:
        raise TypeError(f"unsupported image type {type(img).__name__}")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t.contiguous()


def _batch_array(source: np.ndarray | torch.Tensor) -> torch.Tensor | None:
    """A whole N-image array as a uint8 Nx3xHxW tensor, or None if it is not one."""
    if isinstance(source, np.ndarray):
        if source.ndim == 3:
            source = source[..., None]
        if source.ndim != 4 or source.shape[3] not in (1, 3, 4):
            raise ValueError(f"expected an NxHxWx3 image array, got shape {source.shape}")
        t = torch.from_numpy(np.ascontiguousarray(_array_to_uint8(source)[..., :3]))
        t = t.permute(0, 3, 1, 2)
    elif isinstance(source, torch.Tensor):
        if source.ndim != 4 or source.shape[1] not in (1, 3, 4):
            raise ValueError(f"expected an Nx3xHxW image tensor, got shape {tuple(source.shape)}")
        t = source.detach().cpu()
        if t.is_floating_point():
            t = (t * 255.0).round().clamp(0, 255).to(torch.uint8)
        t = t[:, :3]
    else:
        return None
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    return t


class _ImageSet(Dataset):
    """Any supported image source as ``(uint8 3xSxS tensor, label)`` items."""

    def __init__(
        self,
        source: Any,
        labels: np.ndarray | None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> None:
        self.source = source
        self.labels = labels
        self.transform = transform
        # Only a Dataset may carry its own labels, as (image, label) items.
        self.unpack = not isinstance(source, (list, tuple, np.ndarray, torch.Tensor))

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        item = self.source[i]
        label = None
        if self.unpack and isinstance(item, (tuple, list)):
            item, label = item[0], item[1]
        if self.labels is not None:
            label = self.labels[i]
        x = _to_uint8_chw(item)
        if self.transform is not None:
            x = self.transform(x)
        return x, -1 if label is None else int(label)


def _fit_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to ``size``, then centre crop: keeps the aspect ratio of odd-sized images."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    x = TF.resize(x, [size], antialias=True)
    return TF.center_crop(x, [size, size])


def _imagenet_eval_view(x: torch.Tensor, size: int) -> torch.Tensor:
    x = TF.resize(x, [round(size * 256 / 224)], antialias=True)
    return TF.center_crop(x, [size, size])


class _EvalView:
    # A class rather than a closure so DataLoader workers can pickle it.
    def __init__(self, variant: str, size: int) -> None:
        self.variant, self.size = variant, size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "cifar":
            return _fit_square(x, self.size)
        return _imagenet_eval_view(x, self.size)


def _source_len(source: Any) -> int:
    try:
        return len(source)
    except TypeError:
        raise TypeError(
            "images must be a list of file paths, an NxHxWx3 uint8 array, an Nx3xHxW tensor "
            "or a map-style Dataset"
        ) from None


def _as_labels(labels: Any, n: int, num_classes: int) -> np.ndarray | None:
    if labels is None:
        return None
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"expected {n} labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError("labels must be integer class indices")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return y.astype(np.int64)


def _gather_images(
    source: Any, labels: np.ndarray | None, view: _EvalView, num_workers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image once into a uint8 Nx3xSxS tensor (small images fit in memory)."""
    whole = _batch_array(source)
    if whole is not None:
        if labels is None:
            raise ValueError("labels are required with an image array")
        chunks = [view(whole[i : i + 1024]) for i in range(0, whole.shape[0], 1024)]
        x = torch.cat(chunks).contiguous() if chunks else whole
        return x, torch.from_numpy(labels)
    loader = DataLoader(
        _ImageSet(source, labels, view), batch_size=256, shuffle=False, num_workers=num_workers
    )
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    if bool((y < 0).any()):
        raise ValueError("labels are required: pass labels= or a Dataset of (image, label)")
    return x, y


def _crop_flip(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random ``pad``-padded crop and horizontal flip of a uint8 NxCxHxW batch, in one gather."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    flip = torch.rand(n, 1, generator=gen) < 0.5
    rows = oy + torch.arange(h)
    cols = ox + torch.arange(w)
    cols = torch.where(flip, cols.flip(1), cols)
    dev = x.device
    rows, cols = rows.to(dev), cols.to(dev)
    batch = torch.arange(n, device=dev)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # N x H x W x C
    return out.permute(0, 3, 1, 2)


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class _Normalizer:
    def __init__(self, variant: str, device: torch.device, channels_last: bool) -> None:
        mean, std = _MEAN_STD[variant]
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()


# --------------------------------------------------------------------------- trained model


class TrainedResNet:
    """A trained ResNet18 plus what is needed to use it again (variant, classes, image size)."""

    def __init__(
        self,
        model: nn.Module,
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
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def __repr__(self) -> str:
        return (
            f"TrainedResNet(variant={self.variant!r}, num_classes={self.num_classes}, "
            f"image_size={self.image_size}, device={str(self.device)!r})"
        )

    # ---- inference

    def _batches(self, images: ImageSource, batch_size: int) -> Iterator[torch.Tensor]:
        view = _EvalView(self.variant, self.image_size)
        norm = _Normalizer(self.variant, self.device, self.channels_last)
        whole = _batch_array(images)
        if whole is not None:
            for i in range(0, whole.shape[0], batch_size):
                x = whole[i : i + batch_size].to(self.device, non_blocking=True)
                yield norm(view(x))
            return
        _source_len(images)
        loader = DataLoader(
            _ImageSet(images, None, view),
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

        path = Path(path)
        if path.suffix == ".json":
            sidecar = path
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            path = sidecar.parent / meta.get("weights_file", sidecar.with_suffix("").name)
        else:
            sidecar = _sidecar_path(path)
            meta = None
            if sidecar.is_file():
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
        blob = path.read_bytes()
        if meta is None:
            # The weights carry a copy of the metadata, so a lost sidecar is not fatal.
            with safe_open(str(path), framework="pt") as f:
                embedded = (f.metadata() or {}).get("ralif")
            if embedded is None:
                raise ValueError(f"{path} is not a ralif ResNet checkpoint (no metadata)")
            meta = json.loads(embedded)
        elif meta.get("weights_sha256") not in (None, hashlib.sha256(blob).hexdigest()):
            raise ValueError(
                f"{path} does not match {sidecar.name} (an interrupted save?); retrain or "
                "restore both files together"
            )
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a ralif ResNet checkpoint")
        if int(meta.get("format_version", 0)) > CHECKPOINT_VERSION:
            raise ValueError(f"{path} was written by a newer ralif (format {meta['format_version']})")
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


# --------------------------------------------------------------------------- training


def _amp_settings(device: torch.device, enabled: bool) -> tuple[bool, torch.dtype | None]:
    if not enabled or device.type != "cuda":
        return False, None
    if torch.cuda.is_bf16_supported():
        return True, torch.bfloat16
    return True, torch.float16


def _lr_factor(variant: str, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, epochs * steps_per_epoch)
    if variant == "cifar":
        milestone = max(1, round(_STEP_AT * epochs)) * steps_per_epoch
        return lambda it: 0.1 if it >= milestone else 1.0
    return lambda it: 0.5 * (1.0 + math.cos(math.pi * min(it, total) / total))


def train_resnet(
    images: ImageSource,
    labels: Sequence[int] | np.ndarray | None,
    num_classes: int,
    config: TrainConfig | None = None,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    progress_every: int = 0,
) -> TrainedResNet:
    """Train a ResNet18 on labeled images and return it in eval mode.

    ``images``: a list of image file paths, an NxHxWx3 uint8 array, an Nx3xHxW uint8 tensor, or
    a map-style Dataset yielding images or ``(image, label)`` pairs (then ``labels`` may be None).
    ``progress`` gets ``{epoch, epochs, loss, accuracy, images_per_s, lr, seconds}`` after each
    epoch, and every ``progress_every`` batches the same keys plus ``batch`` and ``batches``
    (running means over the epoch so far).  ``should_stop`` is polled before every batch; when
    it returns true :class:`TrainingCancelled` is raised.  On the CPU, equal seeds give identical
    weights.  The caller's torch random state is left as it was.
    """
    cfg = config or TrainConfig()
    dev = resolve_device(device)
    on_cuda = dev.type == "cuda"
    n = _source_len(images)
    if n < 2:
        raise ValueError("need at least 2 labeled images to train")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    y_all = _as_labels(labels, n, num_classes)
    fork_devices: list[int] = []
    if on_cuda:
        fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(cfg.seed)
        model = build_resnet18(cfg.variant, num_classes, weights=cfg.weights)
        history = _fit(model, images, y_all, n, num_classes, cfg, dev, progress, should_stop,
                       progress_every)
    return TrainedResNet(
        model,
        variant=cfg.variant,
        num_classes=num_classes,
        image_size=int(cfg.image_size),
        config=cfg,
        class_names=class_names,
        history=history,
        device=dev,
    )


def _fit(
    model: nn.Module,
    images: ImageSource,
    y_all: np.ndarray | None,
    n: int,
    num_classes: int,
    cfg: TrainConfig,
    dev: torch.device,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
    progress_every: int,
) -> list[dict]:
    on_cuda = dev.type == "cuda"
    size, bs, epochs = int(cfg.image_size), int(cfg.batch_size), int(cfg.epochs)
    channels_last = on_cuda and cfg.channels_last
    use_amp, amp_dtype = _amp_settings(dev, cfg.amp)
    # Augmentation and shuffling draw from their own CPU generator, so the sequence of batches
    # does not depend on the device or on anything else touching the global RNG.
    gen = torch.Generator().manual_seed(cfg.seed)
    norm = _Normalizer(cfg.variant, dev, channels_last)

    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()

    # A trailing batch of one image would leave BatchNorm nothing to normalise over.
    steps = n // bs + (1 if n % bs > 1 else 0)
    used = min(n, steps * bs)

    if cfg.variant == "cifar":
        data, targets = _gather_images(images, y_all, _EvalView("cifar", size), cfg.num_workers)
        if on_cuda and data.numel() <= 2 << 30:
            data, targets = data.to(dev), targets.to(dev)
        pad = max(1, round(size / 8))

        def epoch_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            perm = torch.randperm(n, generator=gen)[:used].to(data.device)
            for s in range(steps):
                idx = perm[s * bs : (s + 1) * bs]
                x = data[idx].to(dev, non_blocking=True)
                yield _crop_flip(x, pad, gen), targets[idx].to(dev, non_blocking=True)
    else:
        crop = v2.RandomResizedCrop(size, antialias=True)
        loader = DataLoader(
            _ImageSet(images, y_all, crop),
            batch_size=bs,
            shuffle=True,
            drop_last=n % bs == 1,
            num_workers=cfg.num_workers,
            pin_memory=on_cuda,
            generator=torch.Generator().manual_seed(cfg.seed + 1),
            persistent_workers=cfg.num_workers > 0,
        )

        def epoch_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, y in loader:
                if bool((y < 0).any()):
                    raise ValueError(
                        "labels are required: pass labels= or a Dataset of (image, label)"
                    )
                if int(y.max()) >= num_classes:
                    raise ValueError(f"labels must lie in [0, {num_classes})")
                x = x.to(dev, non_blocking=True)
                yield _flip(x, gen), y.to(dev, non_blocking=True)

    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=float(cfg.lr),
        momentum=float(cfg.momentum),
        weight_decay=float(cfg.weight_decay),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(cfg.variant, epochs, steps)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss()
    bench = torch.backends.cudnn.flags(enabled=True, benchmark=True) if on_cuda else None

    history: list[dict] = []
    with bench or contextlib.nullcontext():
        for epoch in range(epochs):
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), device=dev, dtype=torch.long)
            seen = 0
            for b, (x, y) in enumerate(epoch_batches()):
                if should_stop is not None and should_stop():
                    raise TrainingCancelled(f"training cancelled in epoch {epoch + 1}/{epochs}")
                x = norm(x)
                with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                    logits = model(x)
                    loss = criterion(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                lr_used = optimizer.param_groups[0]["lr"]
                scheduler.step()
                loss_sum += loss.detach().float() * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()
                seen += int(y.shape[0])
                if progress is not None and progress_every > 0 and (b + 1) % progress_every == 0:
                    dt = time.perf_counter() - t0
                    progress({
                        "epoch": epoch + 1,
                        "epochs": epochs,
                        "batch": b + 1,
                        "batches": steps,
                        "loss": float(loss_sum) / seen,
                        "accuracy": float(correct) / seen,
                        "images_per_s": seen / dt if dt > 0 else 0.0,
                        "lr": lr_used,
                        "seconds": dt,
                    })
            if seen == 0:
                raise ValueError("no training batches: too few images for the batch size")
            epoch_loss = float(loss_sum) / seen  # one device sync per epoch
            dt = time.perf_counter() - t0
            if not math.isfinite(epoch_loss):
                raise RuntimeError(
                    f"training diverged in epoch {epoch + 1} (loss {epoch_loss}); "
                    "try a lower learning rate"
                )
            record = {
                "epoch": epoch + 1,
                "epochs": epochs,
                "loss": epoch_loss,
                "accuracy": float(correct) / seen,
                "images_per_s": seen / dt if dt > 0 else 0.0,
                "lr": lr_used,
                "seconds": dt,
            }
            history.append(record)
            if progress is not None:
                progress(dict(record))
    model.eval()
    return history
