"""Images for the ResNet18: any supported source (file paths, arrays, tensors, a Dataset) as uint8
tensors, the evaluation view of each variant, the training augmentations (random crop and flip done
as one gather on the whole batch) and the per-variant normalisation."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from ralif.images import load_rgb, to_rgb

# The cifar variant uses the usual CIFAR statistics (as the paper's code does); the imagenet
# variant uses ImageNet statistics because the pretrained filters expect them.
_MEAN_STD = {
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

ImageSource = Sequence[str | os.PathLike] | np.ndarray | torch.Tensor | Dataset


def load_image(path: str | os.PathLike) -> torch.Tensor:
    arr = np.asarray(load_rgb(path), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def array_to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    if a.dtype == np.uint16:
        return (a // 257).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {a.dtype}; use uint8 (or floats in [0, 1])")


def to_uint8_chw(img: Any) -> torch.Tensor:
    """One image of any supported kind as a uint8 3xHxW tensor."""
    if isinstance(img, (str, os.PathLike)):
        return load_image(img)
    if isinstance(img, Image.Image):
        arr = np.asarray(to_rgb(img), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    if isinstance(img, np.ndarray):
        a = array_to_uint8(img)
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


def batch_array(source: Any) -> torch.Tensor | None:
    """A whole N-image array as a uint8 Nx3xHxW tensor, or None if it is not one."""
    if isinstance(source, np.ndarray):
        if source.ndim == 3:
            source = source[..., None]
        if source.ndim != 4 or source.shape[3] not in (1, 3, 4):
            raise ValueError(f"expected an NxHxWx3 image array, got shape {source.shape}")
        t = torch.from_numpy(np.ascontiguousarray(array_to_uint8(source)[..., :3]))
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


class ImageSet(Dataset):
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
        x = to_uint8_chw(item)
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


class EvalView:
    # A class rather than a closure so DataLoader workers can pickle it.
    def __init__(self, variant: str, size: int) -> None:
        self.variant, self.size = variant, size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "cifar":
            return _fit_square(x, self.size)
        return _imagenet_eval_view(x, self.size)


def source_len(source: Any) -> int:
    try:
        return len(source)
    except TypeError:
        raise TypeError(
            "images must be a list of file paths, an NxHxWx3 uint8 array, an Nx3xHxW tensor "
            "or a map-style Dataset"
        ) from None


def as_labels(labels: Any, n: int, num_classes: int) -> np.ndarray | None:
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


def gather_images(
    source: Any, labels: np.ndarray | None, view: EvalView, num_workers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image once into a uint8 Nx3xSxS tensor (small images fit in memory)."""
    whole = batch_array(source)
    if whole is not None:
        if labels is None:
            raise ValueError("labels are required with an image array")
        chunks = [view(whole[i : i + 1024]) for i in range(0, whole.shape[0], 1024)]
        x = torch.cat(chunks).contiguous() if chunks else whole
        return x, torch.from_numpy(labels)
    loader = DataLoader(
        ImageSet(source, labels, view), batch_size=256, shuffle=False, num_workers=num_workers
    )
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    if bool((y < 0).any()):
        raise ValueError("labels are required: pass labels= or a Dataset of (image, label)")
    return x, y


def crop_flip(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
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


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class Normalizer:
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
