"""k-nearest-neighbour classification of MNIST digits: entropic W2 against the Euclidean distance.

The test digits are classified by a majority vote of their k nearest
training digits, once under the entropic 2-Wasserstein cost between the
images (``snsot.distances``: each test digit against each training digit,
pixels on the unit square, cost |x - y|^2) and once under the Euclidean
distance between the normalised pixel vectors. Both accuracies are printed
and the transport distance matrix is pictured.

    python examples/mnist_knn.py                       # 300 training and 100 test digits
    python examples/mnist_knn.py --train 40 --test 20 --reg 0.01 --out knn.png   # a quick run (CI)

A run is resumable: ``--cache D.npy`` keeps the matrix on disk as it is
computed, and the same command continues after an interruption.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import snsot
from snsot import datasets


def knn_predict(D, train_labels, k):
    """Majority label among the k smallest entries of each row of D (ties go to the nearest)."""
    nearest = np.argsort(D, axis=1, kind="stable")[:, :k]
    votes = train_labels[nearest]
    predictions = []
    for row in votes:
        counts = np.bincount(row, minlength=10)
        best = np.flatnonzero(counts == counts.max())
        predictions.append(next(label for label in row if label in best))  # nearest among the tied labels
    return np.array(predictions)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=300, help="training digits (default 300)")
    parser.add_argument("--test", type=int, default=100, help="test digits (default 100)")
    parser.add_argument("--k", type=int, default=3, help="neighbours (default 3)")
    parser.add_argument("--reg", type=float, default=1 / 1200, help="entropic regularisation (default 1/1200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=("threads", "dask"), default="threads")
    parser.add_argument("--cache", help="an .npy file that keeps the matrix (resumable)")
    parser.add_argument("--out", default="mnist_knn.png", help="picture of the distance matrix ('' for none)")
    args = parser.parse_args(argv)

    images, labels = datasets.mnist_images()
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(len(images), size=args.train + args.test, replace=False)
    train, test = chosen[:args.train], chosen[args.train:]
    train, test = train[np.argsort(labels[train], kind="stable")], test[np.argsort(labels[test], kind="stable")]
    X_train, X_test = images[train].astype(float), images[test].astype(float)

    t = time.perf_counter()
    W, info = snsot.distances(X_test, X_train, reg=args.reg, engine=args.engine, out=args.cache, return_info=True)
    seconds = time.perf_counter() - t
    H_train = X_train.reshape(len(train), -1)
    H_test = X_test.reshape(len(test), -1)
    H_train, H_test = H_train / H_train.sum(1, keepdims=True), H_test / H_test.sum(1, keepdims=True)
    E = np.sqrt(((H_test[:, None, :] - H_train[None, :, :]) ** 2).sum(-1))

    print(f"{len(test)} test digits against {len(train)} training digits, k = {args.k}, reg = {args.reg:.4g}")
    print(f"entropic W2: {info.n_solved} transport problems in {seconds:.1f} s "
          f"({info.n_solved / max(seconds, 1e-9):.1f} per second, {info.engine} x {info.n_workers}); "
          f"{int(info.converged.sum())}/{info.converged.size} converged")
    for name, D in (("entropic W2", W), ("Euclidean", E)):
        accuracy = float((knn_predict(D, labels[train], args.k) == labels[test]).mean())
        print(f"accuracy, {name:>11}: {accuracy:.3f}")

    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), constrained_layout=True)
        for ax, D, title in ((axes[0], W, "entropic W2 cost"), (axes[1], E, "Euclidean distance")):
            im = ax.imshow(D, aspect="auto", cmap="viridis")
            ax.set_title(f"{title} (rows: test, columns: train, sorted by digit)")
            fig.colorbar(im, ax=ax, shrink=0.8)
        fig.savefig(args.out, dpi=100)
        plt.close(fig)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
