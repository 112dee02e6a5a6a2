"""Entropic optimal transport inside PyTorch, with exact gradients (``pip install snsot[torch]``).

Every function here solves with :func:`snsot.solve` to its tolerance and
differentiates the optimality conditions, not the iterations:

* :func:`ot_loss`: the OT value; gradients ``dC = P``, ``da = f``, ``db = g``
  (envelope theorem).
* :func:`ot_plan`: the plan; gradients by implicit differentiation through
  the Newton system of the dual (dense or, for sparse plans, CSR, as SNS's
  Newton step).
* :func:`sinkhorn_divergence` and :class:`SinkhornLoss`: the debiased
  Sinkhorn divergence between point clouds, batched (the solves of a batch
  run on a thread pool).

Each takes ``reg_m`` for unbalanced OT (KL-relaxed marginals).
* :func:`pairwise_cost`: costs between clouds, in the graph.

Solves run in float64 on the CPU; results and gradients come back in the
input's dtype and on its device. ``import snsot`` does not import torch;
this subpackage does.
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("snsot.torch needs PyTorch: pip install 'snsot[torch]'") from exc

from ._autograd import ot_loss, ot_plan
from ._divergence import SinkhornLoss, pairwise_cost, sinkhorn_divergence

__all__ = ["ot_loss", "ot_plan", "sinkhorn_divergence", "SinkhornLoss", "pairwise_cost"]
