"""How confident the linear head is off its labels: the temperature ``ralif(calibration=cv)`` fits on
held-out folds of the labels against the one that would suit the test set best.

    python benchmarks/temperature.py FEATURES [--labels 30,100,300,1000] [--seeds 3]

For each label count and seed: a random labeled set, the head fitted on it (default L2), the
temperature from 3 held-out folds (``ralif.calibration.cv_temperature``) and the temperature that
minimises the test cross-entropy, with the test cross-entropy at T = 1 and at each. T > 1: the head
is overconfident; T < 1: underconfident.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ralif.calibration import best_temperature, cv_temperature
from ralif.features import load_feature_splits
from ralif.head import Standardizer, fit_head


def cross_entropy_at(logits: torch.Tensor, labels: np.ndarray, temperature: float) -> float:
    y = torch.as_tensor(labels, dtype=torch.long)
    return float(torch.nn.functional.cross_entropy(logits / temperature, y))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("features")
    ap.add_argument("--labels", default="30,100,300,1000")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    data = load_feature_splits(args.features)
    st = Standardizer.fit(data.x_train)
    test = np.arange(len(data.x_test))
    print("| labels | seed | test accuracy | T from held-out folds | T best on test | test CE at T=1 | at held-out T "
          "| at best T |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(v) for v in args.labels.split(",")):
        for seed in range(args.seeds):
            labeled = np.random.default_rng(seed).choice(len(data.x_train), n, replace=False)
            head = fit_head(data.x_train, labeled, data.y_train[labeled], data.num_classes, standardizer=st)
            logits = (head.design(data.x_test, test) @ head.weight.T).cpu()
            t_cv = cv_temperature(head, data.x_train)
            t_cv = 1.0 if t_cv is None else t_cv
            t_test = best_temperature(logits, data.y_test)
            acc = float((logits.argmax(1).numpy() == data.y_test).mean())
            ce = [cross_entropy_at(logits, data.y_test, t) for t in (1.0, t_cv, t_test)]
            print(f"| {n} | {seed} | {acc:.3f} | {t_cv:.2f} | {t_test:.2f} | {ce[0]:.3f} | {ce[1]:.3f} | {ce[2]:.3f} |")


if __name__ == "__main__":
    main()
