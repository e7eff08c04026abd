"""Class names are user text: the Map shows them literally. Plotly reads a few HTML tags in trace
names and hover text (``<b>``, ``<a href>``, ...), so a class renamed to markup would otherwise be
drawn bold, with a live link, in the legend and the hover text."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from ralif import projection as proj

HOSTILE = '<b>Dog</b> <a href="http://evil.example/x">click</a>'
ESCAPED = '&lt;b&gt;Dog&lt;/b&gt; &lt;a href="http://evil.example/x"&gt;click&lt;/a&gt;'
NAMES = [HOSTILE, "cats & dogs", "plain"]


def small_map(n: int = 120) -> proj.MapData:
    rng = np.random.default_rng(0)
    state = np.zeros(n, dtype=np.int8)
    state[:60] = proj.LABELED
    class_id = np.where(state == proj.LABELED, np.arange(n) % 3 + 1, -1)
    return proj.MapData(image_ids=np.arange(1000, 1000 + n), x=rng.normal(size=n).astype(np.float32),
                        y=rng.normal(size=n).astype(np.float32), state=state, class_id=class_id,
                        true_class_id=np.arange(n) % 3 + 1)


def figure(mode: str) -> dict[str, Any]:
    data = small_map()
    probs = np.random.default_rng(1).dirichlet(np.ones(3), len(data.image_ids))
    cls, conf, ent = proj.predictions_from_proba(probs, [1, 2, 3])
    pred = proj.PoolPredictions(data.image_ids, cls, conf, ent, 1, "m")
    return dict(json.loads(proj.map_figure(data, [1, 2, 3], NAMES, color_by=mode, predictions=pred).to_json()))


def test_plot_text_escapes_markup_but_not_quotes() -> None:
    from ralif.map.figure import plot_text

    assert plot_text(HOSTILE) == ESCAPED
    assert plot_text("a & b") == "a &amp; b"
    # Plotly turns &lt; &gt; &amp; back into characters but knows no &quot;: it would show as typed.
    assert plot_text("it's \"x\"") == "it's \"x\""


@pytest.mark.parametrize("mode", ["labels", "truth", "predicted"])
def test_class_names_reach_plotly_escaped_in_legend_and_hover(mode: str) -> None:
    fig = figure(mode)
    names = [t["name"] for t in fig["data"]]
    assert ESCAPED in names and "cats &amp; dogs" in names and "plain" in names
    assert HOSTILE not in names and "cats & dogs" not in names
    texts = [str(s) for t in fig["data"] for s in t["text"]]
    for text in texts:
        # Only the figure's own line breaks are markup; every '<' of a name arrives as an entity.
        assert "<b>" not in text and "<a " not in text and "</a>" not in text, text
        assert "cats & dogs" not in text, text
    assert any(ESCAPED in text for text in texts)
    if mode == "predicted":
        assert any(f"model: {ESCAPED} (" in text for text in texts)
