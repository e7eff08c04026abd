"""The encoder and model choices a new project offers, each with what it needs and what it will do.

Every :class:`EncoderChoice` says whether its weights are on this machine (looked up in the
Hugging Face hub cache, torch's hub ``checkpoints/`` folder or the named file, never over the
network), how large the download is when that is known, and one line on what will happen.
``choice.create_kwargs()`` gives the ``model``, ``encoder`` and ``resnet`` arguments of
``Project.create`` (and of ``Project.update_settings``); ``choice.weights`` is the
:class:`~ralif.weights.WeightsSource` to pass to :func:`ralif.weights.download` when
``choice.needs_download``.

The figures quoted come from docs/BENCHMARKS.md (a linear head on pretrained CIFAR-10 embeddings:
59 % test accuracy at 200 labels, 70 % at 1,000; extraction on a 2-core CPU: ViT-B-16 1.6 images/s,
ViT-B-32 6.7, ResNet18 at 224 px 24.6; ResNet18 from scratch 35 s per epoch per 1,000 images) and
from the RALIF paper's from-scratch setting (1,000 labels to start, 1,000 more per round, 200 epochs).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

from ralif.models.advice import SCRATCH_MIN_LABELS, scratch_advice
from ralif.weights import (
    RESNET18_MB,
    WeightsSource,
    local_file,
    openclip_source,
    partial_bytes,
    resnet18_checkpoint_path,
    resnet18_source,
    source_for_spec,
)

DEFAULT_CLIP = ("ViT-B-16", "openai")


@dataclass(frozen=True)
class EncoderChoice:
    """One entry of the encoder choice. ``spec`` is None until a needed file path is given."""

    key: str
    title: str
    model: str                              # Project model kind: "clip-linear" or "resnet18"
    spec: str | None
    what_happens: str
    weights: WeightsSource | None = None    # the download, for pretrained choices
    weights_present: bool | None = None     # None: no weights file is involved
    weights_path: str | None = None
    download_bytes: int | None = None
    size_is_estimate: bool = False
    resumable_bytes: int = 0                # an interrupted download waiting to be resumed
    warning: str | None = None
    resnet: dict[str, Any] = field(default_factory=dict)
    needs_file: bool = False                # precomputed / checkpoint without a path yet

    @property
    def needs_download(self) -> bool:
        return self.weights is not None and not self.weights_present

    @property
    def ready(self) -> bool:
        """Usable now: a spec, and the weights (if any) on this machine."""
        return self.spec is not None and not self.needs_download

    def size_text(self) -> str:
        if self.download_bytes is None:
            return "size unknown until the download starts" if self.weights else ""
        mb = self.download_bytes / 1e6
        return f"{'about ' if self.size_is_estimate else ''}{mb:,.0f} MB" if mb >= 10 else f"{mb:.1f} MB"

    def status_text(self) -> str:
        """One line: where the weights are, or what the download costs."""
        if self.spec is None and self.needs_file:
            return "type an encoder spec first" if self.key == "spec" else "give the file's path first"
        if self.weights is None:
            return "no download needed"
        if self.weights_present:
            return f"weights on this machine ({self.weights_path})"
        resume = f", {self.resumable_bytes / 1e6:,.0f} MB already downloaded" if self.resumable_bytes else ""
        size = self.size_text()
        return f"weights not on this machine: download {size}{resume}" if size else \
            f"weights not on this machine: download needed{resume}"

    def create_kwargs(self) -> dict[str, Any]:
        """``model``, ``encoder`` and ``resnet`` for ``Project.create`` / ``update_settings``."""
        if self.spec is None:
            raise ValueError(f"{self.title}: choose a file first")
        out: dict[str, Any] = {"model": self.model, "encoder": self.spec}
        if self.model == "resnet18":
            out["resnet"] = dict(self.resnet)
        return out


# ----------------------------------------------------------------------------- sizes


def _block_params(width: int, mlp_ratio: float) -> int:
    hidden = int(width * mlp_ratio)
    return 4 * width * width + 9 * width + 2 * width * hidden + hidden


@functools.lru_cache(maxsize=256)
def estimate_clip_bytes(model_name: str) -> int | None:
    """float32 size of an open_clip ViT model (image and text towers, as the hub files hold them),
    counted from its config without building it; None for other architectures. Exact for
    ViT-B-16 (598.5 MB) and ViT-L-14 (1,710.5 MB)."""
    import open_clip

    cfg = open_clip.get_model_config(model_name)
    if not cfg:
        return None
    v, t, embed = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {}), int(cfg.get("embed_dim", 512))
    if (not isinstance(v.get("layers", 12), int) or v.get("timm_model_name") or t.get("hf_model_name")
            or not isinstance(v.get("patch_size", 16), int)):
        return None
    w, patch = int(v.get("width", 768)), int(v["patch_size"]) if "patch_size" in v else 16
    size = v.get("image_size", 224)
    size = int(size if isinstance(size, int) else size[0])
    grid = size // patch
    n = (3 * patch * patch * w + w + (grid * grid + 1) * w + 4 * w + w * embed
         + int(v.get("layers", 12)) * _block_params(w, float(v.get("mlp_ratio", 4.0))))
    tw = int(t.get("width", 512))
    n += (int(t.get("vocab_size", 49408)) * tw + int(t.get("context_length", 77)) * tw + 2 * tw
          + tw * embed + 1 + int(t.get("layers", 12)) * _block_params(tw, float(t.get("mlp_ratio", 4.0))))
    return 4 * n


def _has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


# ----------------------------------------------------------------------------- choices


def clip_models() -> list[str]:
    """open_clip architectures that have at least one pretrained tag."""
    import open_clip

    return sorted({m for m, _ in open_clip.list_pretrained()})


def clip_tags(model_name: str) -> list[str]:
    import open_clip

    return list(open_clip.list_pretrained_tags_by_model(model_name))


def _with_weights(source: WeightsSource, **kwargs: Any) -> dict[str, Any]:
    found = local_file(source)
    return {"weights": source, "weights_present": found is not None,
            "weights_path": str(found) if found else None, "resumable_bytes": 0 if found else partial_bytes(source),
            **kwargs}


def clip_choice(model_name: str = DEFAULT_CLIP[0], tag: str = DEFAULT_CLIP[1]) -> EncoderChoice:
    """A CLIP image encoder (frozen) with a linear head; ``tag`` from :func:`clip_tags`."""
    source = openclip_source(model_name, tag)
    estimate = estimate_clip_bytes(model_name)
    return EncoderChoice(
        "clip", f"CLIP {model_name} ({tag})", "clip-linear", f"clip:{model_name}:{tag}",
        "Image features are computed once by the frozen CLIP network and cached (on a 2-core CPU "
        "ViT-B-16 embeds about 100 images a minute and ViT-B-32 about 400; a GPU is far faster); each "
        "round then trains only a linear head, in seconds. A good default: useful from a few labels "
        "per class.",
        **_with_weights(source, download_bytes=estimate, size_is_estimate=estimate is not None))


def resnet18_frozen_choice(image_size: int = 224) -> EncoderChoice:
    """ImageNet ResNet18 as a frozen feature extractor with a linear head."""
    spec = "resnet18:imagenet" if image_size == 224 else f"resnet18-{image_size}:imagenet"
    return EncoderChoice(
        "resnet18-imagenet-frozen", "ResNet18 ImageNet, frozen + linear head", "clip-linear", spec,
        "512-d ImageNet features are computed once and cached (about 1,500 images a minute on a 2-core "
        "CPU); each round trains only a linear head, in seconds. On CIFAR-10, a linear head on "
        "pretrained ImageNet features reached 59% accuracy with 200 labels and 70% with 1,000.",
        **_with_weights(resnet18_source(), download_bytes=round(RESNET18_MB * 1e6)))


def resnet18_finetune_choice(*, has_gpu: bool | None = None) -> EncoderChoice:
    """ImageNet ResNet18 fine-tuned end to end each round (224 px)."""
    gpu = _has_gpu() if has_gpu is None else has_gpu
    return EncoderChoice(
        "resnet18-imagenet-finetune", "ResNet18 ImageNet, fine-tuned", "resnet18", "pixels:8",
        "Every round retrains the whole network from ImageNet weights at 224 px, over every label so "
        "far: better than a frozen encoder once there are thousands of labels, but each round "
        "takes minutes on a GPU and hours on a CPU.",
        warning=None if gpu else "No GPU found: each round will take hours; choose the frozen ResNet18 "
                                 "or CLIP for a CPU.",
        resnet={"variant": "imagenet"},
        **_with_weights(resnet18_source(), download_bytes=round(RESNET18_MB * 1e6)))


def resnet18_scratch_choice(labels: int | None = None, *, has_gpu: bool | None = None) -> EncoderChoice:
    """ResNet18 trained from random weights (the paper's CIFAR variant, 32 px)."""
    gpu = _has_gpu() if has_gpu is None else has_gpu
    advice = scratch_advice(labels, gpu=gpu)
    text = advice.text
    warnings = []
    if labels is not None and advice.recommend_pretrained:
        warnings.append(f"{labels:,} labels is far below the {SCRATCH_MIN_LABELS:,} a from-scratch network "
                        f"needs: choose a pretrained encoder")
    if not gpu:
        warnings.append("no GPU found: rounds will take hours")
    return EncoderChoice(
        "resnet18-scratch", "ResNet18 from scratch", "resnet18", "pixels:8", text,
        warning="; ".join(warnings) + "." if warnings else None, resnet={"variant": "cifar"})


def precomputed_choice(path: str | os.PathLike[str] | None = None) -> EncoderChoice:
    """Features computed elsewhere: an .npz with ``features`` and ``paths`` (or an .npy)."""
    text = ("Uses your own feature file (an .npz with 'features' and the image 'paths'); nothing is "
            "downloaded or computed, and each round trains a linear head in seconds.")
    if path is None:
        return EncoderChoice("precomputed", "Precomputed embeddings file", "clip-linear", None, text,
                             needs_file=True)
    full = os.path.abspath(os.path.expanduser(os.fspath(path)))
    present = os.path.isfile(full)
    return EncoderChoice("precomputed", "Precomputed embeddings file", "clip-linear",
                         f"precomputed:{full}", text, weights_present=present, weights_path=full,
                         warning=None if present else f"file not found: {full}")


def checkpoint_choice(path: str | os.PathLike[str] | None = None, arch: str = "clip",
                      model_name: str = DEFAULT_CLIP[0]) -> EncoderChoice:
    """A local weights file: an open_clip checkpoint for ``model_name`` (``arch="clip"``) or a
    torchvision ResNet18 state dict (``arch="resnet18"``), used frozen with a linear head."""
    if arch not in ("clip", "resnet18"):
        raise ValueError(f"arch must be 'clip' or 'resnet18', not {arch!r}")
    what = (f"Loads the {model_name} weights from your file (OpenAI's weights need the -quickgelu model "
            f"name) and computes features once" if arch == "clip" else
            "Loads ResNet18 weights from your state-dict file and computes 512-d features once")
    text = f"{what}; nothing is downloaded, and each round trains a linear head in seconds."
    title = "Local checkpoint file"
    if path is None:
        return EncoderChoice("checkpoint", title, "clip-linear", None, text, needs_file=True)
    full = os.path.abspath(os.path.expanduser(os.fspath(path)))
    present = os.path.isfile(full)
    spec = f"clip:{model_name}:{full}" if arch == "clip" else f"resnet18:{full}"
    return EncoderChoice("checkpoint", title, "clip-linear", spec, text, weights_present=present,
                         weights_path=full, warning=None if present else f"file not found: {full}")


def spec_choice(spec: str, model: str = "clip-linear") -> EncoderChoice:
    """Any encoder spec the command line takes (``resnet18-32:none``, ``clip:ViT-B-32:laion2b_s34b_b79k``,
    ``pixels:8``, ...), for the cases the named choices do not cover. Raises ``ValueError`` for an
    open_clip tag that does not exist."""
    spec = spec.strip()
    text = ("The encoder spec as the command line takes it (see the README's encoder table); a spec "
            "ending in ':none' uses random weights, which is only useful to try the app out.")
    source = source_for_spec(spec) if spec else None
    extra: dict[str, Any] = {} if source is None else _with_weights(source, download_bytes=source.size_bytes)
    return EncoderChoice("spec", "Another encoder (spec)", model, spec or None, text, needs_file=not spec,
                         resnet={"variant": "cifar"} if model == "resnet18" else {}, **extra)


def encoder_choices(*, labels: int | None = None, has_gpu: bool | None = None,
                    clip_model: str = DEFAULT_CLIP[0], clip_tag: str = DEFAULT_CLIP[1],
                    embeddings: str | None = None, checkpoint: str | None = None,
                    checkpoint_arch: str = "clip") -> list[EncoderChoice]:
    """Every choice, in the order a form shows them. ``labels``: how many labels the source brings
    (from the import plan), so the from-scratch choice can warn."""
    gpu = _has_gpu() if has_gpu is None else has_gpu
    return [
        clip_choice(clip_model, clip_tag),
        resnet18_frozen_choice(),
        resnet18_finetune_choice(has_gpu=gpu),
        resnet18_scratch_choice(labels, has_gpu=gpu),
        precomputed_choice(embeddings),
        checkpoint_choice(checkpoint, checkpoint_arch, clip_model),
    ]


def recommended(choices: list[EncoderChoice], *, labels: int | None = None,
                has_gpu: bool | None = None) -> EncoderChoice:
    """The choice to preselect: the first frozen pretrained encoder whose weights are here, else CLIP
    (to download); fine-tuning or training from scratch only with a GPU and enough labels."""
    gpu = _has_gpu() if has_gpu is None else has_gpu
    by_key = {c.key: c for c in choices}
    if gpu and labels is not None and labels >= SCRATCH_MIN_LABELS * 5 and "resnet18-imagenet-finetune" in by_key:
        return by_key["resnet18-imagenet-finetune"]
    for key in ("precomputed", "checkpoint", "clip", "resnet18-imagenet-frozen"):
        c = by_key.get(key)
        if c is not None and c.ready:
            return c
    return by_key.get("clip") or choices[0]


def resnet18_weights_present() -> bool:
    return resnet18_checkpoint_path().is_file()
