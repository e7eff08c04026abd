"""What each strategy's batches hold, cycle by cycle: how often the head was wrong on the picks.

    python benchmarks/batch_error.py FEATURES --strategies 'random,ralif,margin' [--pool-size N]
        [--pool-classes a,b] --initial 1000 --budget 1000 --cycles 5 --seeds 5 --first-seed 100

A pick the head already predicts right mostly confirms it; a pick it gets wrong corrects it. Per
strategy and cycle (mean over seeds): the test accuracy before the batch, the share of the batch the
head mispredicts (its error on the picks), and the batch's class balance (effective classes over K,
exp(H)/K of the true labels). The initial sets, pools and per-cycle random streams are those of
`ralif simulate` with the same flags, so the picks are the ones its curves come from.
"""

from __future__ import annotations

import argparse

import numpy as np

from ralif.features import load_feature_splits
from ralif.head import LinearHead
from ralif.learners import LinearProbeLearner
from ralif.pools import PoolRecipe, build_pool
from ralif.simulation import SimulationConfig, initial_labeled_set, run_one
from ralif.strategies import split_specs
from ralif.strategies.ralif import class_balance as balance


def batch_rows(learner: LinearProbeLearner, y: np.ndarray, spec: str, initial: np.ndarray, budget: int,
               cycles: int, seed: int) -> list[tuple[float, float, float]]:
    """(test accuracy, head's error on the batch, batch balance) for each cycle of one run."""
    heads: list[LinearHead] = []
    cfg = SimulationConfig(strategies=[spec], initial=len(initial), budget=budget, cycles=cycles, seeds=[seed])
    # `simulate`'s own loop: each cycle's head is kept (a fit makes a new one) to read its error on the picks.
    record = run_one(learner, y, spec, initial, cfg, seed,
                     on_cycle=lambda: heads.append(learner.selection_inputs()[0]))
    features = learner.selection_inputs()[1]
    # The last fit (after the last batch) picks nothing.
    return [(acc, float(np.mean(head.predict(features, batch) != y[batch])), balance(y[batch], learner.num_classes))
            for acc, head, batch in zip(record.accuracy[:-1], heads[:-1], record.selected, strict=True)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("features")
    ap.add_argument("--strategies", default="random,ralif,margin")
    ap.add_argument("--pool-size", type=int, default=0)
    ap.add_argument("--pool-classes", default="")
    ap.add_argument("--initial", type=int, default=100)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    args = ap.parse_args(argv)
    recipe = PoolRecipe(classes=tuple(c.strip() for c in args.pool_classes.split(",") if c.strip()),
                        pool_size=args.pool_size)
    try:
        data = build_pool(load_feature_splits(args.features), recipe, source=args.features)
    except (OSError, ValueError) as err:
        ap.error(str(err))
    y = data.y_train
    if args.initial + args.budget * args.cycles > len(y):
        ap.error(f"initial {args.initial} + {args.cycles} cycles × {args.budget} exceeds the pool of {len(y)} images")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print("| strategy | cycle | labels | test accuracy before (%) | head's error on the batch (%) | batch balance |")
    print("|---|---:|---:|---:|---:|---:|")
    for spec in split_specs(args.strategies):
        runs = np.array([
            batch_rows(LinearProbeLearner(data), y, spec, initial_labeled_set(len(y), args.initial, seed),
                       args.budget, args.cycles, seed)
            for seed in seeds
        ])  # seeds × cycles × 3
        for cycle, (acc, wrong, bal) in enumerate(runs.mean(0)):
            print(f"| {spec} | {cycle + 1} | {args.initial + cycle * args.budget} | {100 * acc:.1f} | "
                  f"{100 * wrong:.1f} | {bal:.2f} |")


if __name__ == "__main__":
    main()
