"""ResNet18 from scratch in the encoder panel: one estimate of a round's cost, for the epochs the
project's rounds train, said the same way in the text and in the warning."""

from __future__ import annotations

import re

import pytest

from ralif.models.advice import SCRATCH_MIN_LABELS, scratch_advice
from ralif.project.rounds import DEFAULT_RESNET
from ralif.ui.encoder_picker import scratch_choice

EPOCHS = DEFAULT_RESNET["epochs"]


def _durations(text: str) -> list[str]:
    return re.findall(r"about [\d.]+ (?:s|min|h)\b", text)


def test_no_labels_on_a_cpu_says_one_consistent_cost():
    choice = scratch_choice(0, pool=23, gpu=False)
    assert choice.warning is not None
    both = f"{choice.what_happens} {choice.warning}"
    # The round that matters is one at the labels the network needs, 30 epochs over 1,000 images.
    seconds = scratch_advice(SCRATCH_MIN_LABELS, pool=23, epochs=EPOCHS, gpu=False).round_seconds_cpu
    assert seconds is not None and 60 * 21 < seconds < 60 * 23
    assert f"{EPOCHS} epochs over every label so far" in choice.what_happens
    assert "about 22 min at 1,000 labels" in choice.what_happens
    assert "no GPU found: at 1,000 labels a round takes about 22 min" in choice.warning
    assert set(_durations(both)) == {"about 22 min"}, both
    assert "hours" not in both and "200 epochs" not in both
    assert "With 0 labels" in choice.what_happens and "0 labels are far below" in choice.warning


@pytest.mark.parametrize(("labels", "now", "later"), [(150, "about 4 min", "about 22 min"),
                                                       (5000, None, "about 1.8 h")])
def test_the_cost_grows_with_the_labels_and_the_warning_repeats_it(labels, now, later):
    choice = scratch_choice(labels, pool=1500, gpu=False)
    assert choice.warning is not None
    if now is not None:
        assert f"{now} at {labels:,} labels and {later} at 1,000 labels" in choice.what_happens
    else:
        assert f"{later} at {labels:,} labels" in choice.what_happens
    assert f"a round takes {later} on this machine's CPU" in choice.warning
    assert set(_durations(choice.warning)) <= set(_durations(choice.what_happens))


def test_one_label_and_a_gpu():
    choice = scratch_choice(1, pool=10, gpu=True)
    assert choice.warning == "1 label is far below the 1,000 a from-scratch network needs: choose a pretrained encoder."
    assert "With 1 label it" in choice.what_happens and "CUDA GPU" in choice.what_happens
    assert scratch_choice(5000, pool=10, gpu=True).warning is None
    assert scratch_choice(5000, gpu=True).create_kwargs() == {"model": "resnet18", "encoder": "pixels:8",
                                                               "resnet": {"variant": "cifar"}}
