"""The options of SNS, validated once into a frozen record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .linalg import newton_direction

__all__ = ["SNSOptions"]


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _number(x, name: str, lo: float, *, integer=False, inclusive=True) -> float | int:
    """``x`` as a finite number ``>= lo`` (``> lo`` unless ``inclusive``), or a ValueError naming ``name``."""
    ok = _is_int(x) or (isinstance(x, (float, np.floating)) and (not integer or float(x).is_integer()))
    ok = ok and np.isfinite(x) and (x >= lo if inclusive else x > lo)
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name}: must be {kind} {'>=' if inclusive else '>'} {lo:g}; got {x!r}")
    return int(x) if integer else float(x)


@dataclass(frozen=True)
class SNSOptions:
    """Every option of :func:`~snsot.solvers.sns.solve_sns`, checked (see its docstring for their meaning).

    Build it with :meth:`from_user`, which validates each option with a
    message naming it and fills in the variant's defaults; the fields are
    then final (``frozen``), so a stage cannot change what the user asked.
    """

    variant: str = "adaptive"
    eps_scaling: object = "auto"  # "auto", True or False
    eps_factor: float = 10.0
    n_warmup: int | None = None
    sparsity: float | None = None
    kappa: float = 1.0
    switch_horizon: int | None = None
    max_row_entries: int | None = None
    max_cg: int = 500
    hessian: str = "auto"
    direction: Callable = newton_direction

    @classmethod
    def from_user(cls, n_rows: int, *, variant="adaptive", eps_scaling="auto", eps_factor=10.0, n_warmup=None,
                  sparsity=None, kappa=1.0, switch_horizon=None, max_row_entries=None, max_cg=500,
                  hessian="auto", direction=None) -> "SNSOptions":
        """Validate the user's options for a problem with ``n_rows`` rows; raises ValueError naming the bad one.

        Longer than a screen on purpose: one flat check per option, in the
        order of the signature, so that each message sits beside its test.
        """
        if variant not in ("adaptive", "paper"):
            raise ValueError(f"variant: must be 'adaptive' or 'paper'; got {variant!r}")
        if hessian not in ("auto", "sparse", "dense"):
            raise ValueError(f"hessian: must be 'auto', 'sparse' or 'dense'; got {hessian!r}")
        if eps_scaling not in ("auto", True, False) or isinstance(eps_scaling, (int, float)) and not isinstance(
                eps_scaling, bool):
            raise ValueError(f"eps_scaling: must be 'auto', True or False; got {eps_scaling!r}")
        if not (isinstance(eps_factor, (int, float, np.number)) and not isinstance(eps_factor, bool)
                and np.isfinite(eps_factor) and eps_factor > 1):
            raise ValueError(f"eps_factor: must be a number > 1; got {eps_factor!r}")
        if n_warmup is not None:
            n_warmup = _number(n_warmup, "n_warmup", 0, integer=True)
        kappa = _number(kappa, "kappa", 0, inclusive=False)
        if switch_horizon is not None:
            switch_horizon = _number(switch_horizon, "switch_horizon", 0, integer=True)
        max_cg = _number(max_cg, "max_cg", 1, integer=True)
        if direction is None:
            direction = newton_direction
        elif not callable(direction):
            raise ValueError(f"direction: must be a callable like snsot.solvers.linalg.newton_direction; got {direction!r}")
        if variant == "paper":
            if hessian == "dense":
                raise ValueError("hessian: the paper variant sparsifies the Hessian; 'dense' needs variant='adaptive'")
            n_warmup = 20 if n_warmup is None else n_warmup
            sparsity = 2.0 / n_rows if sparsity is None else sparsity
            if not (isinstance(sparsity, (int, float, np.number)) and not isinstance(sparsity, bool)
                    and 0 < sparsity <= 1):
                raise ValueError(f"sparsity: must be in (0, 1]; got {sparsity!r}")
            sparsity = float(sparsity)
            hessian = "sparse"
            if eps_scaling == "auto":
                eps_scaling = False
        elif sparsity is not None:
            raise ValueError("sparsity: sets the paper variant's fixed sparsity; it needs variant='paper'")
        if max_row_entries is not None:
            max_row_entries = _number(max_row_entries, "max_row_entries", 1, integer=True)
            if hessian == "dense":
                raise ValueError("max_row_entries: caps the sparse Hessian's rows; it cannot go with hessian='dense'")
            hessian = "sparse"  # a cap on kept entries asks for the sparse Hessian
        return cls(variant=variant, eps_scaling=eps_scaling, eps_factor=float(eps_factor), n_warmup=n_warmup,
                   sparsity=sparsity, kappa=kappa, switch_horizon=switch_horizon, max_row_entries=max_row_entries,
                   max_cg=max_cg, hessian=hessian, direction=direction)
