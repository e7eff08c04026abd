"""The model's quality as the pages show it: the audit estimate (accuracy with its 95 % interval, the
warnings, what the accept key may do) and the plain-words explanation of the Random comparison.

Every text that can hold a user's words (class names inside warnings) goes through
:func:`ralif.ui.literal.lit`, so it shows as typed and never as Markdown.
"""

from __future__ import annotations

import streamlit as st

from ralif.audit import AccuracyEstimate
from ralif.map.baseline import RandomComparison
from ralif.project import Project
from ralif.project.audits import AuditSummary
from ralif.project.records import Progress
from ralif.ui.text import counted, lit

_ACCEPT_WORDS = {"allow": "on", "confirm": "allowed only after a confirmation", "off": "off"}


def audit_caption(summary: AuditSummary) -> str:
    """One paragraph saying what the estimate is and how it is measured (plain text, no user words)."""
    est = summary.estimate
    share = (f"{summary.share:.0%} of every batch is drawn at random from the unlabeled images, never picked "
             f"by the strategy" if summary.share > 0 else "the audit share is off (0 %), so no new audit images "
                                                           "are drawn")
    if est.accuracy is None:
        return (f"Not measured yet: no audit image has been answered. To measure the model without a held-out "
                f"set, {share}; the model's guess for each is kept and compared with your label.")
    rounds = (f"round {est.rounds[0]}" if len(est.rounds) == 1
              else f"rounds {est.rounds[0]}–{est.rounds[-1]}")
    return (f"{est.correct} of {est.n} audit images labeled so far matched the model's guess ({rounds}); the "
            f"true accuracy lies between {est.low:.0%} and {est.high:.0%} with 95 % confidence (Wilson "
            f"interval). It is unbiased because {share}; those images show no guess of the model, so the "
            f"answer is yours alone (labels given on the Map, where guesses show, are left out). Chance is "
            f"{est.chance:.0%}.")


# The widest 95 % interval (in accuracy) under which the estimate is shown as a number.
SHOWN_WIDTH = 0.5


def shown_accuracy(est: AccuracyEstimate) -> str:
    """The estimate as the page's big number: "—" until its interval is narrower than SHOWN_WIDTH,
    since with a handful of answers a point estimate (0 % from 2) reads as a verdict; the caption
    gives the interval either way."""
    if est.accuracy is None or est.high - est.low > SHOWN_WIDTH:
        return "—"
    return f"{est.accuracy:.0%}"


def render_audit(project: Project, *, heading: bool = True, compact: bool = False) -> AuditSummary:
    """The audit estimate with its warnings and the accept rule; returns what it showed. ``compact``
    (the Label page's sidebar): warnings as plain captions, not boxes that draw the eye off the grid."""
    summary = project.audit_estimate()
    est = summary.estimate
    if heading:
        st.subheader("Model accuracy, measured on random audit images")
    left, right = (st.container(), st.container()) if compact else st.columns([1, 3])
    left.metric("Estimated accuracy", shown_accuracy(est),
                help="From the random audit images of the latest rounds: how often the model's guess at the "
                     "time it was picked matched the label you gave.")
    right.caption(lit(audit_caption(summary)))
    for warning in summary.warnings:
        if compact:
            st.caption(f"⚠ {lit(warning.text)}")
        else:
            st.warning(lit(warning.text))
    mode = summary.accept.mode
    text = f"Accepting the model's guess (the a key) is {_ACCEPT_WORDS[mode]}: {summary.accept.reason}."
    if mode == "allow" or compact:
        st.caption(lit(text))
    else:
        st.info(lit(text))
    return summary


def comparison_caption(c: RandomComparison) -> str:
    """What the AUCA ratio compares, over how many seeds, and what its 95 % interval means."""
    return (f"What is compared: this project's accuracy on the held-out set after each of its {c.rounds} "
            f"trained rounds, against Random: the same {c.start:,} starting labels, then images drawn at random "
            f"from the pool (answered by their hidden true labels) up to the same label counts, with the same "
            f"model and the same held-out images. The ratio is the area under this project's curve divided by "
            f"Random's (the first round left out, as it is shared); above 1.00 means better than random "
            f"picking. Random was run with {c.seeds} seeds (different random orders), giving "
            f"{', '.join(f'{v:.3f}' for v in c.per_seed)}; their 95 % interval for the ratio is "
            f"{c.low:.3f} to {c.high:.3f}: {c.verdict}. With few rounds the interval is wide, so a ratio a "
            f"little under or over 1 is not yet a verdict either way.")


def no_accuracy_reason(progress: Progress) -> str:
    """Why the Progress page has no held-out accuracy yet, in the words of what the user can do."""
    if progress.test == 0:
        return ("No held-out accuracy: this project sets no images aside to test the model on. Where the audit "
                "is on, its random images (above) estimate the accuracy instead.")
    if progress.test_labeled == 0:
        unlabeled = "the held-out image has no label" if progress.test == 1 else \
            f"none of the {progress.test:,} held-out images has a label"
        return (f"No held-out accuracy yet: {unlabeled}, so there is nothing to score the model against. Label "
                f"them with the button below (or Label page → Relabel earlier images → Browse all → Split: "
                f"test); the next round that trains a model is measured on them.")
    scored = counted(progress.test_labeled, "labeled held-out image")
    return (f"No held-out accuracy yet: it is measured on the {scored} after each round that trains a model, "
            f"which needs labels of at least two classes.")
