"""Honest model quality without a held-out set: a random audit share of every batch.

A strategy picks the images it ranks best, which are not typical of the pool (often the hardest), so
the model's accuracy on them says little about its accuracy on the rest. A small share of each batch
(default 10 %, at least one image once the batch has 5) is instead drawn uniformly at random from the
whole unlabeled pool, before the strategy fills the rest. The model's guess for an audit image at
selection time, compared with the label the user then gives, is an unbiased sample of the current
model's accuracy on the pool; :func:`estimate_accuracy` turns those answers into an estimate with a
95 % Wilson interval. :func:`trust_warnings` says when the model is not yet trustworthy, and
:func:`accept_allowed` decides whether accepting the model's guess (the ``a`` key) is allowed, asks
for confirmation, or is off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_AUDIT_SHARE = 0.10
MIN_BATCH_FOR_AUDIT = 5
MIN_AUDITS = 10                 # fewer answers than this: the interval is too wide to act on
ACCEPT_MIN_LOWER = 0.80         # the interval's lower end needed to accept guesses without asking
DOMINANT_SHARE = 0.60
LOSS_RISE_FACTOR = 1.5
_Z95 = 1.959963984540054


# ----------------------------------------------------------------------------- drawing the audit


def audit_count(batch_size: int, share: float = DEFAULT_AUDIT_SHARE) -> int:
    """How many of a batch are audit images: ``round(share * batch)``, at least 1 once the batch
    has ``MIN_BATCH_FOR_AUDIT`` images, never the whole batch."""
    if not 0 <= share < 1:
        raise ValueError(f"the audit share must be in [0, 1), got {share}")
    if share == 0 or batch_size < MIN_BATCH_FOR_AUDIT:
        return 0
    return min(batch_size - 1, max(1, round(share * batch_size)))


@dataclass(frozen=True)
class BatchSplit:
    """A batch: ``picks`` from the strategy's ranking and ``audit`` drawn uniformly from the pool."""

    picks: np.ndarray
    audit: np.ndarray
    share: float

    @property
    def batch(self) -> np.ndarray:
        """Strategy picks then audit images (a page may interleave them; it should not mark them)."""
        return np.concatenate([self.picks, self.audit])


def split_batch(budget: int, ranked: Sequence[int] | np.ndarray, pool: Sequence[int] | np.ndarray,
                rng: np.random.Generator, share: float = DEFAULT_AUDIT_SHARE) -> BatchSplit:
    """Split a budget into audit images and strategy picks.

    The audit part is drawn first, uniformly without replacement from the whole unlabeled ``pool``
    (the strategy's favourites included, so the sample stays unbiased); the strategy part is then the
    best of ``ranked`` (ids, best first) that are not audit images. Pure: the same ``rng`` state
    gives the same split.
    """
    pool = np.asarray(pool, dtype=np.int64).reshape(-1)
    ranked = np.asarray(ranked, dtype=np.int64).reshape(-1)
    budget = int(min(budget, len(pool)))
    if budget < 0:
        raise ValueError("the budget cannot be negative")
    n_audit = audit_count(budget, share)
    audit = rng.choice(pool, size=n_audit, replace=False) if n_audit else np.empty(0, dtype=np.int64)
    rest = ranked[~np.isin(ranked, audit)]
    _, first = np.unique(rest, return_index=True)
    rest = rest[np.sort(first)]                   # a ranking listing an id twice counts it once
    return BatchSplit(rest[: budget - n_audit], audit.astype(np.int64), share)


# ----------------------------------------------------------------------------- the estimate


def wilson_interval(correct: np.ndarray | int, n: np.ndarray | int,
                    z: float = _Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion (vectorised; n = 0 gives [0, 1])."""
    k = np.asarray(correct, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    safe = np.maximum(n_arr, 1.0)
    p = k / safe
    denom = 1.0 + z * z / safe
    centre = (p + z * z / (2 * safe)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe))
    lo = np.where(n_arr > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    hi = np.where(n_arr > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    return lo, hi


@dataclass(frozen=True)
class AuditAnswer:
    """One audit image: the model's guess when it was picked and the class the user gave (None when
    the user skipped it). ``predicted`` is None when there was no model yet (a cold start)."""

    round: int
    image_id: int
    predicted: int | None
    label: int | None


@dataclass(frozen=True)
class AccuracyEstimate:
    accuracy: float | None          # None without answers
    low: float
    high: float
    correct: int
    n: int
    num_classes: int
    rounds: tuple[int, ...]         # the rounds whose answers were used
    skipped: int = 0                # audit images the user skipped (not counted)

    @property
    def chance(self) -> float:
        return 1.0 / max(self.num_classes, 1)

    def text(self) -> str:
        """``"72% (95% CI 58–83%, 40 audit answers)"``."""
        if self.accuracy is None:
            return "not measured yet (no audit answers)"
        return (f"{self.accuracy:.0%} (95% CI {self.low:.0%}–{self.high:.0%}, "
                f"{self.n} audit answer{'s' if self.n != 1 else ''})")


def estimate_accuracy(answers: Sequence[AuditAnswer], num_classes: int, *,
                      min_answers: int = 30) -> AccuracyEstimate:
    """Accuracy of the current model from audit answers, with a 95 % Wilson interval.

    The newest rounds are used, going back until ``min_answers`` answers are counted, so the estimate
    follows the model as it improves (older rounds' models were weaker, which would bias it low).
    Answers without a model guess or without a label are left out (skips are counted).
    """
    usable = [a for a in answers if a.predicted is not None]
    skipped = sum(a.label is None for a in usable)
    labeled = [a for a in usable if a.label is not None]
    rounds: list[int] = []
    chosen: list[AuditAnswer] = []
    for r in sorted({a.round for a in labeled}, reverse=True):
        if len(chosen) >= min_answers:
            break
        rounds.append(r)
        chosen += [a for a in labeled if a.round == r]
    n = len(chosen)
    k = sum(a.predicted == a.label for a in chosen)
    lo, hi = wilson_interval(k, n)
    return AccuracyEstimate(k / n if n else None, float(lo), float(hi), int(k), n, int(num_classes),
                            tuple(sorted(rounds)), skipped)


# ----------------------------------------------------------------------------- warnings


@dataclass(frozen=True)
class TrustWarning:
    code: str                       # near_chance, few_audits, dominant_class, loss_rising, loss_diverged
    text: str
    data: dict = field(default_factory=dict)


def dominant_class(pool_predictions: np.ndarray | Sequence[int], num_classes: int,
                   share: float = DOMINANT_SHARE) -> tuple[int, float] | None:
    """(class index, share) when one class takes more than ``share`` of the pool's predictions and
    there are at least 3 classes; else None."""
    preds = np.asarray(pool_predictions, dtype=np.int64).reshape(-1)
    if num_classes < 3 or preds.size == 0:
        return None
    counts = np.bincount(preds, minlength=num_classes)
    top = int(counts.argmax())
    frac = float(counts[top] / preds.size)
    return (top, frac) if frac > share else None


def loss_problem(losses: Sequence[float], factor: float = LOSS_RISE_FACTOR) -> str | None:
    """``"diverged"`` when a training loss is NaN or inf, ``"rising"`` when the last epoch's loss is
    more than ``factor`` times the lowest earlier one, else None."""
    arr = np.asarray(losses, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        return None
    if not np.isfinite(arr).all():
        return "diverged"
    if arr.size >= 3 and arr[-1] > factor * arr[:-1].min():
        return "rising"
    return None


def trust_warnings(estimate: AccuracyEstimate | None, *, pool_predictions: np.ndarray | None = None,
                   losses: Sequence[float] | None = None,
                   class_names: Sequence[str] | None = None) -> list[TrustWarning]:
    """Why the model should not be trusted yet (empty when nothing is wrong that can be seen)."""
    out: list[TrustWarning] = []
    if estimate is not None:
        if estimate.n < MIN_AUDITS:
            out.append(TrustWarning("few_audits", f"only {estimate.n} audit answers so far: the accuracy is "
                                                  f"not known yet (at least {MIN_AUDITS} are needed)",
                                    {"n": estimate.n}))
        elif estimate.low <= estimate.chance:
            out.append(TrustWarning(
                "near_chance", f"the model may be no better than guessing: accuracy {estimate.text()}, "
                               f"chance is {estimate.chance:.0%}", {"chance": estimate.chance}))
    k = estimate.num_classes if estimate is not None else len(class_names or [])
    if pool_predictions is not None and k:
        dom = dominant_class(pool_predictions, k)
        if dom is not None:
            name = class_names[dom[0]] if class_names is not None else str(dom[0])
            out.append(TrustWarning("dominant_class", f"the model predicts {name} for {dom[1]:.0%} of the "
                                                      f"unlabeled images", {"class": dom[0], "share": dom[1]}))
    if losses is not None:
        problem = loss_problem(losses)
        if problem == "diverged":
            out.append(TrustWarning("loss_diverged", "training diverged (the loss became NaN or infinite); "
                                                     "the model is unusable"))
        elif problem == "rising":
            out.append(TrustWarning("loss_rising", f"the training loss rose to {losses[-1]:.3g} (lowest "
                                                   f"{min(losses[:-1]):.3g}): training is unstable",
                                    {"last": float(losses[-1])}))
    return out


@dataclass(frozen=True)
class AcceptDecision:
    mode: str                       # "allow", "confirm" or "off"
    reason: str

    @property
    def allowed(self) -> bool:
        return self.mode == "allow"


def accept_allowed(estimate: AccuracyEstimate | None, *, min_lower: float = ACCEPT_MIN_LOWER,
                   warnings: Sequence[TrustWarning] = ()) -> AcceptDecision:
    """Whether accepting the model's guess (the ``a`` key) may write labels without asking.

    ``off`` while the model may be no better than chance or training diverged; ``confirm`` while
    the accuracy is unmeasured (fewer than ``MIN_AUDITS`` answers), its interval's lower end is below
    ``min_lower``, or another warning stands; ``allow`` otherwise.
    """
    codes = {w.code for w in warnings}
    if "loss_diverged" in codes:
        return AcceptDecision("off", "training diverged: the model's guesses are meaningless")
    if estimate is None or estimate.accuracy is None or estimate.n < MIN_AUDITS:
        n = 0 if estimate is None else estimate.n
        return AcceptDecision("confirm", f"the model's accuracy is not measured yet ({n} of {MIN_AUDITS} "
                                         f"audit answers): check each guess")
    if estimate.low <= estimate.chance:
        return AcceptDecision("off", f"the model may be no better than chance ({estimate.text()})")
    if estimate.low < min_lower:
        return AcceptDecision("confirm", f"the model may be wrong often: accuracy {estimate.text()}")
    if codes - {"few_audits"}:
        return AcceptDecision("confirm", "; ".join(w.text for w in warnings))
    return AcceptDecision("allow", f"accuracy {estimate.text()}")


def expected_width(p: float, n: int) -> float:
    """Width of the 95 % interval for accuracy ``p`` after ``n`` answers (planning the audit share)."""
    lo, hi = wilson_interval(round(p * n), n)
    return float(hi - lo)
