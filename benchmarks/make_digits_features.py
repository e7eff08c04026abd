"""A second, small benchmark set: scikit-learn's handwritten digits (8×8 pixels as 64 features).

    python benchmarks/make_digits_features.py OUT.npz

1,300 training and 497 test images after a seeded shuffle; it ships with scikit-learn, so it needs
no download. Used to check that choices made on CIFAR-10 embeddings carry over to other data.
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.datasets import load_digits


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else "digits.npz"
    x, y = load_digits(return_X_y=True)
    p = np.random.default_rng(0).permutation(len(x))
    x, y = x[p].astype(np.float32), y[p]
    np.savez(out, x_train=x[:1300], y_train=y[:1300], x_test=x[1300:], y_test=y[1300:],
             classes=np.array([str(i) for i in range(10)]))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
