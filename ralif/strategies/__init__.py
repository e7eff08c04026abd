"""Query strategies and their registry.

A strategy is named by a spec: ``ralif``, ``gradnorm(loss=expected)``,
``ralif(rule=single,diversity=none)``. ``make_strategy(spec)`` builds it.
"""

from __future__ import annotations

import dataclasses
import re

from ralif.strategies.base import Strategy, check_request
from ralif.strategies.baselines import (
    BadgeStrategy,
    CoresetStrategy,
    GradNormStrategy,
    RandomStrategy,
    UncertaintyStrategy,
)
from ralif.strategies.ralif import RalifStrategy
from ralif.strategies.strong import MarginStrategy, TypiClustStrategy

REGISTRY: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        RandomStrategy, UncertaintyStrategy, MarginStrategy, CoresetStrategy, BadgeStrategy, GradNormStrategy,
        TypiClustStrategy, RalifStrategy,
    )
}

_SPEC = re.compile(r"^\s*([A-Za-z][\w-]*)\s*(?:\((.*)\))?\s*$")


def _coerce(value: str, default):
    v = value.strip()
    if default is None and v.lower() in ("none", "null"):
        return None
    if isinstance(default, bool):
        return v.lower() in ("1", "true", "yes")
    if isinstance(default, int) and not isinstance(default, bool):
        return int(v)
    if isinstance(default, float) or default is None:
        return float(v)
    return v


def make_strategy(spec: str) -> Strategy:
    """Build a strategy from ``name`` or ``name(key=value,...)``."""
    m = _SPEC.match(spec)
    if not m:
        raise ValueError(f"cannot parse strategy spec {spec!r}; expected name or name(key=value,...)")
    name, args = m.group(1).lower(), m.group(2)
    if name not in REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; available: {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for part in filter(None, (args or "").split(",")):
        if "=" not in part:
            raise ValueError(f"option {part!r} in {spec!r} must be key=value")
        key, value = (s.strip() for s in part.split("=", 1))
        if key not in defaults:
            raise ValueError(f"strategy {name!r} has no option {key!r}; options: {', '.join(defaults) or 'none'}")
        try:
            kwargs[key] = _coerce(value, defaults[key])
        except ValueError:
            raise ValueError(f"option {key}={value!r} of strategy {name!r} is not a valid value") from None
    return cls(**kwargs)


def warm_up(spec: str, device: str | None = None) -> None:
    """Run ``spec`` once on a tiny problem, with many and with few labels per class, so that a
    long-running process pays the lazy set-up of the first torch operations (and of a cold-start
    path) before its first real selection."""
    import numpy as np

    from ralif.head import fit_head

    rng = np.random.default_rng(0)
    # Wider than typicality's 64 reduced dimensions, so that the cold start's reduction runs too.
    x = rng.standard_normal((256, 80)).astype(np.float32)
    for n_labeled in (24, 6):  # 8 and 2 labels per class over 3 classes
        labeled = np.arange(n_labeled)
        head = fit_head(x, labeled, labeled % 3, 3, device=device)
        make_strategy(spec).select(head, x, labeled, np.arange(n_labeled, len(x)), 4, rng)


def split_specs(text: str) -> list[str]:
    """Split a comma-separated list of specs, keeping commas inside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


__all__ = ["REGISTRY", "Strategy", "check_request", "make_strategy", "split_specs", "warm_up"]
