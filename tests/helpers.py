"""Data and waits shared by the tests: Gaussian blobs, small image folders, class-coloured image
arrays, the demo assets, and a poll-until-true wait. Fixtures built on them are in conftest.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "ralif/app/assets/demo"


def blobs(n: int, d: int, k: int, seed: int = 0, *, spread: float = 3.0, noise: float = 1.0,
          labels: Literal["random", "balanced", "blocks"] = "random", dtype: Any = np.float32,
          uneven_scales: bool = False, with_centers: bool = False) -> tuple[np.ndarray, ...]:
    """``n`` points in ``d`` dimensions around ``k`` Gaussian centres: ``(x, y)``, or
    ``(x, y, centers)`` with ``with_centers``.

    The centres are ``spread`` times standard normal draws; each point is its centre plus
    ``noise`` times standard normal noise. ``labels``: ``random`` draws each point's class
    uniformly, ``balanced`` gives classes in turn (``arange(n) % k``) then shuffles them,
    ``blocks`` puts ``n // k`` points of class 0 first, then class 1, and so on.
    ``uneven_scales`` multiplies each dimension by a random factor in [0.1, 10) and shifts it by
    one in [-5, 5), so that standardisation matters.
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * spread
    if labels == "random":
        y = rng.integers(0, k, n)
    elif labels == "balanced":
        y = np.arange(n) % k
        rng.shuffle(y)
    elif labels == "blocks":
        if n % k:
            raise ValueError(f"blocks need n divisible by k, got n={n}, k={k}")
        y = np.repeat(np.arange(k), n // k)
    else:
        raise ValueError(f"unknown labels {labels!r}")
    x = centers[y] + noise * rng.standard_normal((n, d))
    if uneven_scales:
        x = x * rng.uniform(0.1, 10.0, size=d) + rng.uniform(-5, 5, size=d)
    x = x.astype(dtype)
    return (x, y, centers) if with_centers else (x, y)


def make_images(root: Path, per_class: int = 8, classes: Sequence[str] = ("cat", "dog", "fox"),
                seed: int = 0) -> list[Path]:
    """Random small images (12-40 px a side, odd ones PNG, even ones JPEG) in one folder per
    class under ``root``; returns their paths in the order written."""
    rng = np.random.default_rng(seed)
    paths = []
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(12, 40, size=2)
            arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            path = root / c / f"{c}_{i:02d}.{'png' if i % 2 else 'jpg'}"
            Image.fromarray(arr).save(path)
            paths.append(path)
    return paths


def colour_images(n: int = 32, size: int = 16, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy uint8 images (N x size x size x 3) whose mean colour depends on the class
    (``arange(n) % k``, at most 4 classes), so a network has something to learn; ``(images, labels)``."""
    if not 1 <= k <= 4:
        raise ValueError("colour_images has colours for 1 to 4 classes")
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    palette = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220], [200, 200, 40]])[:k]
    noise = rng.normal(0, 40, (n, size, size, 3))
    images = np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels


def wait_until(check: Callable[[], Any], timeout: float = 120.0, what: str = "the condition",
               every: float = 0.05) -> Any:
    """Poll ``check`` every ``every`` seconds until it returns something true, and return that;
    an AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
