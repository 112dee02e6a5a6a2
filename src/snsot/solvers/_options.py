"""The options of SNS, validated once into a frozen record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .._validate import check
from .linalg import newton_direction

__all__ = ["SNSOptions"]


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
    extrapolate: int = 1

    @classmethod
    def from_user(cls, n_rows: int, *, variant="adaptive", eps_scaling="auto", eps_factor=10.0, n_warmup=None,
                  sparsity=None, kappa=1.0, switch_horizon=None, max_row_entries=None, max_cg=500,
                  hessian="auto", direction=None, extrapolate=1) -> "SNSOptions":
        """Validate the user's options for a problem with ``n_rows`` rows; raises ValueError naming the bad one.

        Each option is checked alone by :func:`snsot._validate.check` (the
        rules and their messages live in one table); the checks here are
        about how options combine.
        """
        # each option alone, from the one table of rules (snsot._validate.RULES); then how they combine
        variant, hessian, eps_scaling = check("variant", variant), check("hessian", hessian), check(
            "eps_scaling", eps_scaling)
        eps_factor, n_warmup, kappa = check("eps_factor", eps_factor), check("n_warmup", n_warmup), check(
            "kappa", kappa)
        switch_horizon, max_cg = check("switch_horizon", switch_horizon), check("max_cg", max_cg)
        max_row_entries, sparsity = check("max_row_entries", max_row_entries), check("sparsity", sparsity)
        direction, extrapolate = check("direction", direction), check("extrapolate", extrapolate)
        if direction is None:
            direction = newton_direction
        if variant == "paper":
            if hessian == "dense":
                raise ValueError("hessian: the paper variant sparsifies the Hessian; 'dense' needs variant='adaptive'")
            n_warmup = 20 if n_warmup is None else n_warmup
            sparsity = 2.0 / n_rows if sparsity is None else sparsity
            hessian = "sparse"
            if eps_scaling == "auto":
                eps_scaling = False
        elif sparsity is not None:
            raise ValueError("sparsity: sets the paper variant's fixed sparsity; it needs variant='paper'")
        if max_row_entries is not None:
            if hessian == "dense":
                raise ValueError("max_row_entries: caps the sparse Hessian's rows; it cannot go with hessian='dense'")
            hessian = "sparse"  # a cap on kept entries asks for the sparse Hessian
        return cls(variant=variant, eps_scaling=eps_scaling, eps_factor=float(eps_factor), n_warmup=n_warmup,
                   sparsity=sparsity, kappa=kappa, switch_horizon=switch_horizon, max_row_entries=max_row_entries,
                   max_cg=max_cg, hessian=hessian, direction=direction, extrapolate=extrapolate)
