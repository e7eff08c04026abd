"""Frozen image encoders that turn images into feature vectors for the linear head.

Every encoder has a stable ``id`` naming the architecture and the exact weights (it keys the
feature cache), a feature ``dim``, a ``transform`` from a PIL image to a tensor and ``encode``
from a batch to features. Weights never download silently from an unreachable network: missing
weights raise a ``RuntimeError`` that says how to provide them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ralif.compute import resolve_device
from ralif.features import is_object_array_error, object_array_message, read_npz_array
from ralif.images import ImageDataset, ImageList, hash_file
from ralif.weights import (
    RESNET18_URL,
    WeightsUnavailable,
    download,
    hf_hub_cache_dir,
    openclip_source,
    resnet18_checkpoint_path,
    terminal_download_progress,
)

RANDOM_INIT_SEED = 0
_NETWORK_TIMEOUT_S = 3.0
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_RANDOM_WORDS = ("none", "random")


def _sha256_prefix(path: str, n: int = 16) -> str:
    return hash_file(path)[:n]


def _is_truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _hub_offline() -> bool:
    return _is_truthy(os.environ.get("HF_HUB_OFFLINE")) or _is_truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def _host_reachable(host: str, port: int = 443, timeout: float = _NETWORK_TIMEOUT_S) -> bool:
    # A short connect probe: the hub client otherwise retries for most of a minute before failing.
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hf_hub_cache_dir() -> str:
    return str(hf_hub_cache_dir())


def _seeded_build(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    # Random weights come from a fixed seed so a "random" encoder gives the same features in every
    # run (its features are cached under one id) without disturbing the caller's RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return build()


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    # open_clip logs a warning on the root logger for random weights, which here are intended.
    def drop(record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


class Encoder:
    """Common interface: ``id``, ``dim``, ``device``, ``transform`` and ``encode``."""

    id: str
    dim: int
    device: torch.device
    transform: Callable[[Image.Image], torch.Tensor] | None
    model: torch.nn.Module | None = None
    # Shortest side the transform needs before resizing; lets JPEGs decode at reduced scale.
    decode_size: int | None = None

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Features (B x dim) for a batch produced by stacking ``transform`` outputs."""
        raise NotImplementedError

    def to(self, device: str | torch.device) -> Encoder:
        self.device = torch.device(device)
        if self.model is not None:
            self.model.to(self.device)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, dim={self.dim}, device={self.device})"


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _missing_clip_weights(model_name: str, tag: str, detail: str) -> RuntimeError:
    return RuntimeError(
        f"open_clip weights '{tag}' for {model_name} are not available on this machine ({detail}). "
        f"In the app: open the project's encoder settings on the Projects page and download them "
        f"there, choose another encoder, or give the path of a weights file you have. From a "
        f"terminal: `ralif weights download clip:{model_name}:{tag}` where the hub is reachable, or "
        f"a local checkpoint as the encoder spec clip:{model_name}:/path/to/open_clip_model.safetensors "
        f"(`ralif embed` also takes it as --pretrained). "
        f"The files live in the Hugging Face hub cache ({_hf_hub_cache_dir()}; HF_HOME or HF_HUB_CACHE "
        f"move it), so a cache filled on a machine with internet access can be copied here."
    )


def _cached_openclip_file(cfg: dict, cache_dir: str | None) -> str | None:
    """The local file for a pretrained tag, looked up in the caches only (no network)."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return cfg["file"]
    hub = cfg.get("hf_hub", "")
    if hub:
        repo_id, filename = os.path.split(hub)
        filename = filename or HF_WEIGHTS_NAME
        candidates = [filename]
        if filename == HF_WEIGHTS_NAME:
            candidates.insert(0, HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        for name in candidates:
            found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir or _hf_hub_cache_dir())
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = cfg.get("url", "")
    if url:
        legacy = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(legacy):
            return legacy
    return None


class OpenClipEncoder(Encoder):
    """The image tower of an open_clip model, with L2-normalised features by default.

    ``pretrained`` is an open_clip tag (e.g. ``"openai"``), a local checkpoint file, or ``None``
    for random weights from a fixed seed (useful for tests and benchmarks). Tags are looked up in
    the local caches first; a download is tried only when the hub is reachable and
    ``HF_HUB_OFFLINE`` is not set. A checkpoint file of OpenAI's weights needs the ``-quickgelu``
    model name (e.g. ``ViT-B-16-quickgelu``), as the ``openai`` tag implies it.
    """

    model: torch.nn.Module

    def __init__(self, model_name: str = "ViT-B-16", pretrained: str | None = "openai",
                 device: str | torch.device | None = None, normalize: bool = True,
                 cache_dir: str | None = None) -> None:
        import open_clip

        if isinstance(pretrained, str) and pretrained.strip().lower() in _RANDOM_WORDS:
            pretrained = None
        if open_clip.get_model_config(model_name) is None:
            raise ValueError(f"unknown open_clip model '{model_name}'; known models include "
                             f"{', '.join(open_clip.list_models()[:12])}, ...")
        kwargs: dict = {}
        if pretrained is None:
            weights_path, weights_id = None, f"random{RANDOM_INIT_SEED}"
        elif os.path.isfile(os.path.expanduser(pretrained)):
            weights_path = os.path.abspath(os.path.expanduser(pretrained))
            weights_id = f"sha256-{_sha256_prefix(weights_path)}"
        else:
            cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
            if not cfg:
                tags = open_clip.list_pretrained_tags_by_model(model_name)
                raise RuntimeError(
                    f"'{pretrained}' is neither a checkpoint file nor an open_clip tag for {model_name} "
                    f"(tags: {', '.join(tags) or 'none'})")
            weights_path = self._resolve_tag(model_name, pretrained, cfg, cache_dir)
            weights_id = pretrained
            # Loading a tag's file by path loses the tag's preprocessing and activation settings,
            # so they are passed on explicitly.
            kwargs = {"force_quick_gelu": bool(cfg.get("quick_gelu", False)),
                      "image_mean": cfg.get("mean"), "image_std": cfg.get("std"),
                      "image_interpolation": cfg.get("interpolation"),
                      "image_resize_mode": cfg.get("resize_mode")}

        def build() -> torch.nn.Module:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=weights_path, device="cpu",
                pretrained_image=False, pretrained_text=False, **kwargs)
            self.transform = preprocess
            return model

        try:
            with _quiet_random_init_warning():
                clip = _seeded_build(build) if weights_path is None else build()
        except RuntimeError as exc:
            raise RuntimeError(f"could not load open_clip {model_name} weights "
                               f"({weights_path}): {exc}") from exc
        # Only the image tower is needed; dropping the text tower frees about half the memory.
        visual = clip.visual
        if not isinstance(visual, torch.nn.Module):
            raise RuntimeError(f"open_clip {model_name} has no image tower")
        self.model = _freeze(visual)
        del clip
        self.normalize = normalize
        input_size = getattr(self.model, "image_size", None)
        if input_size is not None:
            self.decode_size = int(max(input_size) if isinstance(input_size, (tuple, list)) else input_size)
        self.dim = int(getattr(self.model, "output_dim", 0) or
                       open_clip.get_model_config(model_name)["embed_dim"])
        self.id = f"open_clip:{model_name}:{weights_id}" + ("" if normalize else ":raw")
        self.to(device or resolve_device())

    @staticmethod
    def _resolve_tag(model_name: str, tag: str, cfg: dict, cache_dir: str | None) -> str:
        local = _cached_openclip_file(cfg, cache_dir)
        if local:
            return local
        if _hub_offline():
            raise _missing_clip_weights(model_name, tag, "not in the local cache and HF_HUB_OFFLINE is set")
        endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        host = endpoint.hostname or "huggingface.co"
        port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
        if not _host_reachable(host, port):
            raise _missing_clip_weights(model_name, tag, f"not in the local cache and {host} is unreachable")
        if cache_dir is not None:
            from open_clip.pretrained import download_pretrained

            try:
                return download_pretrained(cfg, cache_dir=cache_dir)
            except Exception as exc:  # the hub client raises many error types; all mean "no weights"
                raise _missing_clip_weights(model_name, tag, f"download failed: {exc}") from exc
        source = openclip_source(model_name, tag)
        try:
            return str(download(source, progress=terminal_download_progress(source.title)))
        except WeightsUnavailable as exc:
            raise _missing_clip_weights(model_name, tag, f"download failed: {exc}") from exc

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        feats = self.model(batch.to(self.device, non_blocking=True))
        if self.normalize:
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats


def _resize_side(image_size: int) -> int:
    # The usual ImageNet evaluation crop (resize to 8/7 of the crop) at 224 px; at small sizes the
    # whole image is kept, as CIFAR-sized images are usually already framed.
    return round(image_size * 256 / 224) if image_size >= 128 else image_size


def _imagenet_transform(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(_resize_side(image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(_IMAGENET_MEAN, _IMAGENET_STD),
    ])


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        loaded: Any = load_file(path, device="cpu")
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise RuntimeError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in loaded.items()}


class TorchvisionResNet18Encoder(Encoder):
    """torchvision ResNet-18 without its classifier: 512-d pooled features.

    ``weights`` is ``"imagenet"`` (the torchvision IMAGENET1K_V1 file, looked up in the torch hub
    cache and never downloaded), a local state-dict file, or ``None`` for fixed-seed random weights.
    """

    model: torch.nn.Module

    def __init__(self, weights: str | None = "imagenet", image_size: int = 224,
                 device: str | torch.device | None = None) -> None:
        from torchvision.models import resnet18

        if isinstance(weights, str) and weights.strip().lower() in _RANDOM_WORDS:
            weights = None
        if weights is None:
            model = _seeded_build(lambda: resnet18(weights=None))
            weights_id = f"random{RANDOM_INIT_SEED}"
        else:
            if weights.lower() in ("imagenet", "imagenet1k_v1"):
                url = RESNET18_URL
                path = str(resnet18_checkpoint_path())
                if not os.path.isfile(path):
                    raise RuntimeError(
                        f"ImageNet weights for resnet18 are not available on this machine: {path} "
                        f"does not exist. Download them with `ralif weights download resnet18:imagenet` "
                        f"(or the download button of the encoder choice), or copy "
                        f"{os.path.basename(url)} (from {url}, or from "
                        f"~/.cache/torch/hub/checkpoints on a machine where torchvision downloaded "
                        f"it) to that folder (TORCH_HOME moves it), or pass a local file "
                        f"(spec resnet18:/path/to/resnet18.pth). Use resnet18:none for random weights.")
                weights_id = "imagenet"
            else:
                path = os.path.abspath(os.path.expanduser(weights))
                if not os.path.isfile(path):
                    raise RuntimeError(f"resnet18 weights file not found: {path} (use 'imagenet', "
                                       f"'none' or a path to a state-dict file)")
                weights_id = f"sha256-{_sha256_prefix(path)}"
            model = resnet18(weights=None)
            state = {k: v for k, v in _load_state_dict(path).items() if not k.startswith("fc.")}
            try:
                missing, unexpected = model.load_state_dict(state, strict=False)
            except RuntimeError as exc:
                raise RuntimeError(f"{path} does not hold resnet18 weights: {exc}") from exc
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise RuntimeError(f"{path} does not match resnet18 (missing: {missing[:3]}, "
                                   f"unexpected: {unexpected[:3]})")
        model.fc = torch.nn.Identity()
        self.model = _freeze(model)
        self.dim = 512
        self.image_size = int(image_size)
        self.transform = _imagenet_transform(self.image_size)
        self.decode_size = _resize_side(self.image_size)
        self.id = f"torchvision:resnet18:{weights_id}:{self.image_size}px"
        self.to(device or resolve_device())

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch.to(self.device, non_blocking=True))


class PrecomputedEmbeddings(Encoder):
    """Features computed elsewhere: an .npy (N x D) or an .npz with ``features`` and optional ``paths``.

    Rows are matched to an ImageList by path when the file stores paths (relative ones are taken
    from the file's folder), otherwise by position, which requires the same number of rows.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"embeddings file not found: {self.path}")
        self.paths: list[str] | None = None
        try:
            if self.path.endswith(".npz"):
                with np.load(self.path, allow_pickle=False) as data:
                    if "features" not in data:
                        raise ValueError(f"{self.path} has no 'features' array (arrays: {', '.join(data.files)})")
                    feats = read_npz_array(data, "features", self.path)
                    if "paths" in data:
                        self.paths = [str(p) for p in read_npz_array(data, "paths", self.path).reshape(-1)]
            else:
                feats = np.load(self.path, allow_pickle=False)
        except ValueError as exc:
            if is_object_array_error(exc):
                raise ValueError(object_array_message(self.path, None)) from exc
            raise
        if feats.ndim != 2:
            raise ValueError(f"{self.path}: features must be a 2-D array (N x D), got shape {feats.shape}")
        if self.paths is not None and len(self.paths) != len(feats):
            raise ValueError(f"{self.path}: {len(self.paths)} paths for {len(feats)} feature rows")
        self.features = np.ascontiguousarray(feats, dtype=np.float32)
        self.dim = int(self.features.shape[1])
        self.id = f"precomputed:sha256-{_sha256_prefix(self.path)}"
        self.device = torch.device("cpu")
        self.transform = None

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("precomputed embeddings are looked up with features_for(), not encoded")

    def features_for(self, images: ImageList) -> np.ndarray:
        """The rows aligned with ``images``; ``ValueError`` when they cannot be matched or hold
        NaN or inf values (naming the file and the images)."""
        if self.paths is None:
            if len(self.features) != len(images):
                raise ValueError(
                    f"{self.path} has {len(self.features)} rows but there are {len(images)} images; "
                    f"store a 'paths' array in an .npz so rows can be matched by file")
            return self._finite(self.features.copy(), images)
        base = os.path.dirname(self.path)
        lookup: dict[str, int] = {}
        for i, p in enumerate(self.paths):
            lookup.setdefault(p, i)
            lookup.setdefault(os.path.realpath(os.path.join(base, p)), i)
        rows = np.array([lookup.get(p, lookup.get(os.path.realpath(p), -1)) for p in images.paths],
                        dtype=np.int64)
        missing = np.flatnonzero(rows < 0)
        if missing.size:
            names = ", ".join(images.paths[i] for i in missing[:3])
            raise ValueError(f"{missing.size} of {len(images)} images have no row in {self.path} "
                             f"(paths do not match), e.g. {names}")
        return self._finite(self.features[rows], images)

    def _finite(self, feats: np.ndarray, images: ImageList) -> np.ndarray:
        # Checked here, where the file and the images are known, rather than deep in training.
        bad = np.flatnonzero(~np.isfinite(feats).all(axis=1))
        if bad.size:
            names = ", ".join(images.paths[i] for i in bad[:3])
            raise ValueError(f"{self.path} holds NaN or inf values for {bad.size} of {len(images)} images, "
                             f"e.g. {names}; re-extract those embeddings")
        return feats


def build_encoder(spec: str, device: str | torch.device | None = None) -> Encoder:
    """An encoder from a spec string.

    ``clip:<model>:<tag|none|/path/ckpt>`` (e.g. ``clip:ViT-B-16:openai``),
    ``resnet18:<imagenet|none|/path>`` (224 px), ``resnet18-32:<...>`` (32 px) and
    ``precomputed:/path/file.npz``. The weights part may itself contain ':' (Windows paths).
    """
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind in ("clip", "open_clip", "openclip"):
        model_name, _, weights = rest.partition(":")
        if not model_name:
            raise ValueError(f"encoder spec '{spec}' needs a model name, e.g. clip:ViT-B-16:openai")
        return OpenClipEncoder(model_name, weights or "openai", device=device)
    if kind.startswith("resnet18"):
        size = kind.removeprefix("resnet18").lstrip("-_") or "224"
        if not size.isdigit():
            raise ValueError(f"encoder spec '{spec}': expected resnet18 or resnet18-<size>, e.g. resnet18-32")
        return TorchvisionResNet18Encoder(rest or "imagenet", image_size=int(size), device=device)
    if kind == "precomputed":
        if not rest:
            raise ValueError(f"encoder spec '{spec}' needs a file, e.g. precomputed:/path/features.npz")
        return PrecomputedEmbeddings(rest)
    raise ValueError(f"unknown encoder spec '{spec}'; use clip:<model>:<weights>, resnet18:<weights>, "
                     f"resnet18-32:<weights> or precomputed:<file>")


def default_num_workers(device: torch.device) -> int:
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        # The GPU outpaces decoding, so most cores decode.
        return min(8, max(0, cpus - 1))
    # On CPU the model needs the cores; a few decoding workers keep it fed.
    return 0 if cpus < 2 else min(4, max(1, cpus // 4))


@contextlib.contextmanager
def _cpu_threads(n: int) -> Iterator[None]:
    # More compute threads than free cores makes OpenMP spin against the decoding workers, which
    # slowed CPU extraction by several times in measurements; the setting is restored afterwards.
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def iter_feature_batches(encoder: Encoder, images: ImageList, batch_size: int = 64,
                         num_workers: int | None = None,
                         device: str | torch.device | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(indices into ``images``, float32 features) one batch at a time, in list order."""
    if device is not None:
        encoder.to(device)
    dev = encoder.device
    if num_workers is None:
        num_workers = default_num_workers(dev)
    loader = DataLoader(
        ImageDataset(images, encoder.transform, min_side=encoder.decode_size),
        batch_size=batch_size, shuffle=False, num_workers=num_workers,
        pin_memory=dev.type == "cuda",
    )
    threads = torch.get_num_threads()
    if dev.type == "cpu" and num_workers > 0:
        threads = min(threads, max(1, (os.cpu_count() or 1) - num_workers))
    with _cpu_threads(threads):
        for batch, idx in loader:
            if dev.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    feats = encoder.encode(batch.to(dev, non_blocking=True))
            else:
                feats = encoder.encode(batch)
            yield idx.numpy(), feats.float().cpu().numpy()


def terminal_progress(total: int, desc: str) -> Callable[[int, int], None] | None:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="img")

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)
        if done >= _total:
            bar.close()

    return update


def extract_features(encoder: Encoder, images: ImageList, batch_size: int = 64,
                     num_workers: int | None = None, device: str | torch.device | None = None,
                     progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Features (N x dim, float32) for every image, in list order.

    Uses bf16 autocast on CUDA and plain float32 on CPU. ``progress(done, total)`` is called after
    each batch; without it a tqdm bar is shown when stderr is a terminal.
    """
    if isinstance(encoder, PrecomputedEmbeddings):
        return encoder.features_for(images)
    total = len(images)
    out = np.empty((total, encoder.dim), dtype=np.float32)
    report = progress or terminal_progress(total, "features")
    done = 0
    for idx, feats in iter_feature_batches(encoder, images, batch_size, num_workers, device):
        out[idx] = feats
        done += len(idx)
        if report:
            report(done, total)
    return out
