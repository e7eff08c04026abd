"""Collect benchmark runs into one results structure and write it as JSON, CSV, Markdown and plots.

The structure returned by :func:`build_results` is the single source for every output format, so
the table, the CSV and the curves can never disagree with ``results.json``.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ralif.atomic import atomic_write_via_path
from ralif.evaluation import auca, auca_ratio, cycles_below, mean_interval, paired_permutation_test, paired_seed_test

__all__ = ["RANDOM", "build_results", "write_results"]

RANDOM = "random"
SIGNIFICANCE = 0.05


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays nested in ``value`` to built-in types so json can encode them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _matrix(name: str, what: str, rows: Sequence[Sequence[float]]) -> np.ndarray:
    m = np.asarray(rows, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError(
            f"{what} for strategy {name!r} must be a non-empty list of equal-length lists per seed"
        )
    return m


def _strategy_seed(seed: int, name: str) -> list[int]:
    # A per-strategy stream keyed by the name keeps each p-value reproducible regardless of which
    # other strategies are in the run or in which order they are listed.
    return [int(seed), zlib.crc32(name.encode("utf-8"))]


def build_results(
    config: dict,
    accuracy: dict[str, list[list[float]]],
    select_seconds: dict[str, list[list[float]]],
    correct_last: dict[str, list[np.ndarray]] | None = None,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> dict:
    """Summarise per-seed accuracy curves of several strategies against Random.

    ``accuracy[name]`` holds, per seed, the C+1 test accuracies (cycle 0 then cycles 1..C);
    ``select_seconds[name]`` holds, per seed, the C selection times; ``correct_last[name]`` holds,
    per seed, the boolean correctness of each test sample at the last cycle. Seed ``i`` of every
    strategy must share its initial labeled set with seed ``i`` of Random, since ratios, cycle
    counts and the permutation test are all paired by seed.
    """
    if RANDOM not in accuracy:
        raise ValueError(f"the strategies must include {RANDOM!r}, the baseline every metric is relative to")
    rand = _matrix(RANDOM, "accuracy", accuracy[RANDOM])
    n_seeds, n_points = rand.shape
    if n_points < 3:
        raise ValueError("curves need cycle 0 plus at least 2 active-learning cycles")
    if correct_last is not None:
        if RANDOM not in correct_last:
            raise ValueError(f"correct_last has no entry for {RANDOM!r}")
        rand_correct = [np.asarray(c, dtype=bool).ravel() for c in correct_last[RANDOM]]
        if len(rand_correct) != n_seeds:
            raise ValueError(f"correct_last[{RANDOM!r}] has {len(rand_correct)} seeds, expected {n_seeds}")
        rand_pooled = np.concatenate(rand_correct)

    strategies: dict[str, dict] = {}
    for name, rows in accuracy.items():
        acc = _matrix(name, "accuracy", rows)
        if acc.shape != rand.shape:
            raise ValueError(
                f"accuracy for {name!r} has shape {acc.shape} (seeds, cycles), Random has {rand.shape}"
            )
        if name not in select_seconds:
            raise ValueError(f"select_seconds has no entry for {name!r}")
        secs = _matrix(name, "select_seconds", select_seconds[name])
        if secs.shape != (n_seeds, n_points - 1):
            raise ValueError(
                f"select_seconds for {name!r} has shape {secs.shape}, expected {(n_seeds, n_points - 1)} "
                "(one time per seed and active-learning cycle)"
            )

        if name == RANDOM:
            ratios = np.ones(n_seeds)
            seed_test = None
        else:
            ratios = np.array([auca_ratio(acc[s], rand[s]) for s in range(n_seeds)])
            # Paired across seeds: each seed's AUCA against Random's on the same initial set.
            seed_test = paired_seed_test([auca(a) for a in acc], [auca(r) for r in rand])
        lo, hi = mean_interval(ratios)

        p_value: float | None = None
        if correct_last is not None and name != RANDOM:
            if name not in correct_last:
                raise ValueError(f"correct_last has no entry for {name!r}")
            mine = [np.asarray(c, dtype=bool).ravel() for c in correct_last[name]]
            if [c.size for c in mine] != [c.size for c in rand_correct]:
                raise ValueError(
                    f"correct_last for {name!r} must cover the same test samples as Random on every seed"
                )
            p_value = paired_permutation_test(
                np.concatenate(mine),
                rand_pooled,
                n_permutations=n_permutations,
                rng=np.random.default_rng(_strategy_seed(seed, name)),
            )

        strategies[name] = {
            "accuracy": acc.tolist(),
            "auca_ratio": ratios.tolist(),
            "auca_ratio_mean": float(ratios.mean()),
            # Sample standard deviation over seeds (ddof 1, as the interval uses); None with one seed.
            "auca_ratio_std": _sample_std(ratios),
            # 95 % Student-t interval of the mean ratio over seeds (None with a single seed).
            "auca_ratio_ci95": None if not np.isfinite(lo) else [lo, hi],
            "seed_test": None if seed_test is None else {k: _finite_or_none(v) for k, v in seed_test.items()},
            "cycles_below_random": cycles_below(acc, rand),
            "cycles_compared": int(n_seeds * (n_points - 1)),
            "select_seconds": secs.tolist(),
            "p_value": None if p_value is None else float(p_value),
        }
    return {"config": _plain(dict(config)), "strategies": strategies}


def _sample_std(values: np.ndarray) -> float | None:
    """Standard deviation over seeds with the n − 1 denominator; undefined (None) for a single seed."""
    return float(values.std(ddof=1)) if values.size > 1 else None


def _finite_or_none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _seed_labels(config: Mapping[str, Any], n_seeds: int) -> list:
    seeds = config.get("seeds")
    if isinstance(seeds, (list, tuple)) and len(seeds) == n_seeds:
        return list(seeds)
    return list(range(n_seeds))


def _x_axis(config: Mapping[str, Any], n_points: int) -> tuple[np.ndarray, str]:
    cycles = np.arange(n_points)
    if "initial" in config and "budget" in config:
        return config["initial"] + config["budget"] * cycles, "Number of labeled images"
    return cycles, "Cycle"


def _write_json(path: Path, results: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        # allow_nan=False: NaN is not valid JSON and would break strict readers downstream.
        json.dump(results, f, indent=2, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _write_csv(path: Path, results: dict) -> None:
    import pandas as pd

    frames = []
    seeds_cfg = results.get("config", {})
    for name, s in results["strategies"].items():
        acc = np.asarray(s["accuracy"], dtype=np.float64)
        n_seeds, n_points = acc.shape
        secs = np.full((n_seeds, n_points), np.nan)
        secs[:, 1:] = np.asarray(s["select_seconds"], dtype=np.float64)
        frames.append(
            pd.DataFrame(
                {
                    "strategy": name,
                    "seed": np.repeat(np.asarray(_seed_labels(seeds_cfg, n_seeds), dtype=object), n_points),
                    "cycle": np.tile(np.arange(n_points), n_seeds),
                    "accuracy": acc.ravel(),
                    "select_seconds": secs.ravel(),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    # Cycle 0 has no selection step, so its time is written as an empty field rather than 0.
    table.to_csv(path, index=False, na_rep="", float_format="%.10g")


def _pm(values: np.ndarray, scale: float, digits: int) -> str:
    """Mean ± sample standard deviation (ddof 1, as in results.json); the mean alone for one seed."""
    mean = f"{scale * values.mean():.{digits}f}"
    return mean if values.size < 2 else f"{mean} ± {scale * values.std(ddof=1):.{digits}f}"


def _format_p(p: float | None) -> str:
    if p is None:
        return "—"
    text = f"{p:.2g}" if p < 0.001 else f"{p:.3f}"
    return text + ("*" if p < SIGNIFICANCE else "")


def _format_ci(ci: Sequence[float] | None) -> str:
    return "—" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _format_seed_test(test: Mapping[str, float | None] | None) -> str:
    if not test:
        return "—"
    return f"{_format_p(test.get('sign_flip'))} / {_format_p(test.get('t'))}"


def _markdown(results: dict) -> str:
    strategies = results["strategies"]
    n_seeds = len(next(iter(strategies.values()))["accuracy"]) if strategies else 0
    lines = [
        (
            "| Strategy | First cycle acc. (%) | Last cycle acc. (%) | AUCA ratio | 95 % CI | "
            "Seeds paired p (sign-flip / t) | Cycles below Random | p-value vs Random |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in strategies.items():
        acc = np.asarray(s["accuracy"], dtype=np.float64)
        ratios = np.asarray(s["auca_ratio"], dtype=np.float64)
        lines.append(
            f"| {name} | {_pm(acc[:, 1], 100.0, 2)} | {_pm(acc[:, -1], 100.0, 2)} | {_pm(ratios, 1.0, 3)} "
            f"| {_format_ci(s.get('auca_ratio_ci95'))} | {_format_seed_test(s.get('seed_test'))} "
            f"| {s['cycles_below_random']} of {s.get('cycles_compared', '?')} | {_format_p(s['p_value'])} |"
        )
    spread = (f"Mean ± sample standard deviation (n − 1 denominator) over {n_seeds} seeds"
              if n_seeds > 1 else "Mean over 1 seed (a standard deviation needs at least 2)")
    lines += [
        "",
        (
            f"{spread}. AUCA ratio: area under the accuracy "
            "curve over the active-learning cycles, relative to Random on the same seed; 95 % CI: Student-t "
            "interval of its mean over seeds. Seeds paired p: two-sided tests of the per-seed AUCA against "
            "Random's on the same seed (exact sign-flip permutation / paired t). Cycles below "
            "Random: (seed, cycle) pairs where the strategy's accuracy is strictly below Random's. "
            "p-value: paired permutation test on last-cycle test predictions pooled over seeds; "
            f"* marks p < {SIGNIFICANCE}."
        ),
    ]
    partial = results.get("partial")
    if partial:
        done, asked = partial.get("seeds_done", []), partial.get("seeds_requested", [])
        lines[:0] = [
            f"**Partial result**: the simulation was interrupted after {len(done)} of {len(asked)} seeds; "
            f"every figure covers only the finished seeds ({', '.join(map(str, done))}).",
            "",
        ]
    return "\n".join(lines) + "\n"


def _curve_stats(results: dict) -> tuple[np.ndarray, str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    stats = {}
    n_points = 0
    for name, s in results["strategies"].items():
        acc = 100.0 * np.asarray(s["accuracy"], dtype=np.float64)
        # Sample standard deviation, as in the table; no band with a single seed.
        std = acc.std(axis=0, ddof=1) if acc.shape[0] > 1 else np.zeros(acc.shape[1])
        stats[name] = (acc.mean(axis=0), std)
        n_points = acc.shape[1]
    x, label = _x_axis(results.get("config", {}), n_points)
    return x, label, stats


def _write_html(path: Path, results: dict) -> None:
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    x, xlabel, stats = _curve_stats(results)
    palette = qualitative.Plotly
    fig = go.Figure()
    for i, (name, (mean, std)) in enumerate(stats.items()):
        color = palette[i % len(palette)]
        r, g, b = (int(color[j : j + 2], 16) for j in (1, 3, 5))
        # The band is one closed polygon (upper edge forward, lower edge back) so it toggles with
        # its curve through the shared legend group.
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([x, x[::-1]]),
                y=np.concatenate([mean + std, (mean - std)[::-1]]),
                fill="toself",
                fillcolor=f"rgba({r},{g},{b},0.18)",
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=name,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=mean,
                mode="lines+markers",
                name=name,
                legendgroup=name,
                line={"color": color},
                customdata=std,
                hovertemplate=f"{name}<br>%{{x}}: %{{y:.2f}} ± %{{customdata:.2f}}%<extra></extra>",
            )
        )
    fig.update_layout(
        title="Test accuracy per cycle (mean ± std over seeds)",
        xaxis_title=xlabel,
        yaxis_title="Test accuracy (%)",
        template="plotly_white",
    )
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)


def _write_png(path: Path, results: dict) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x, xlabel, stats = _curve_stats(results)
    # A bare Figure on an Agg canvas avoids pyplot's global backend state, which would clash with
    # whatever backend the caller (e.g. the app) has configured.
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, (mean, std) in stats.items():
        (line,) = ax.plot(x, mean, marker="o", markersize=3, label=name)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.18, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Test accuracy (%)")
    ax.set_title("Test accuracy per cycle (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_results(out_dir: str | os.PathLike, results: dict) -> dict[str, Path]:
    """Write ``results`` to ``out_dir`` as results.json/.csv/.md, curves.html and curves.png.

    Returns the written paths keyed by ``json``, ``csv``, ``md``, ``html`` and ``png``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not results.get("strategies"):
        raise ValueError("results contain no strategies")
    markdown = _markdown(results)
    writers: dict[str, tuple[str, Callable[[Path], object]]] = {
        "json": ("results.json", lambda p: _write_json(p, results)),
        "csv": ("results.csv", lambda p: _write_csv(p, results)),
        "md": ("results.md", lambda p: p.write_text(markdown, encoding="utf-8")),
        "html": ("curves.html", lambda p: _write_html(p, results)),
        "png": ("curves.png", lambda p: _write_png(p, results)),
    }
    return {key: atomic_write_via_path(out / filename, write) for key, (filename, write) in writers.items()}
