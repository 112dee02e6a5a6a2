"""Gradient flow of a point cloud onto a target shape with the Sinkhorn divergence.

The source points move by gradient descent on ``S(x, y)``, the debiased
Sinkhorn divergence of :func:`snsot.torch.sinkhorn_divergence`, whose
gradients are exact (solved to ``tol``, differentiated by the envelope
theorem). The figure shows a few snapshots.

    python examples/gradient_flow.py                  # 300 points, 30 steps
    python examples/gradient_flow.py --n 50 --steps 3 --out /tmp/flow.png   # the CI size
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

import snsot.torch as st


def target_shape(n, rng):
    """A noisy heart in the unit square."""
    t = rng.random(n) * 2 * math.pi
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    pts = np.stack([x, y], 1) / 40 + 0.5 + 0.01 * rng.standard_normal((n, 2))
    return np.clip(pts, 0, 1)


def flow(n=300, steps=30, reg=1e-3, lr=None, snapshots=4, seed=0):
    """Run the flow; returns ([(step, points)], target, [divergence per step])."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(0.15 + 0.2 * rng.random((n, 2)), requires_grad=True)
    y = torch.tensor(target_shape(n, rng))
    # With uniform weights the gradient of S at x_i scales like 1/n: step n * lr so that
    # each point moves by lr times its own displacement (a Wasserstein gradient step).
    lr = 0.5 if lr is None else lr
    keep = set(np.linspace(0, steps, snapshots).round().astype(int))
    shots, values = [], []
    for step in range(steps + 1):
        if step in keep:
            shots.append((step, x.detach().numpy().copy()))
        if step == steps:
            break
        loss = st.sinkhorn_divergence(x, y, reg=reg)
        values.append(float(loss.detach()))
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x -= lr * n * grad / 2  # grad of |x-y|^2 is 2 (x - y): halve for a unit step
    return shots, y.numpy(), values


def plot(shots, target, values, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(shots) + 1, figsize=(3 * (len(shots) + 1), 3))
    for ax, (step, pts) in zip(axes, shots):
        ax.scatter(target[:, 0], target[:, 1], s=4, c="tab:orange", alpha=0.4, label="target")
        ax.scatter(pts[:, 0], pts[:, 1], s=4, c="tab:blue", label="flow")
        ax.set_title(f"step {step}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].semilogy(values)
    axes[-1].set_xlabel("step")
    axes[-1].set_title("Sinkhorn divergence")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--reg", type=float, default=1e-3)
    parser.add_argument("--lr", type=float, default=None, help="fraction of the displacement moved per step (0.5)")
    parser.add_argument("--out", default="gradient_flow.png")
    args = parser.parse_args(argv)
    shots, target, values = flow(args.n, args.steps, args.reg, args.lr)
    plot(shots, target, values, args.out)
    print(f"divergence: {values[0]:.3e} -> {values[-1]:.3e} after {args.steps} steps; figure: {args.out}")
    return values


if __name__ == "__main__":
    main()
