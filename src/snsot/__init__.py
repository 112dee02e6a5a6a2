"""snsot: entropic optimal transport with Sinkhorn-Newton-Sparse.

>>> import snsot
>>> res = snsot.solve(C, a, b, reg=1e-3)             # doctest: +SKIP
>>> res.plan, res.cost, res.converged                 # doctest: +SKIP
"""

from . import costs
from .batch import BatchResult, solve_batch
from .compat import sinkhorn, sinkhorn2
from .distances import DistanceInfo, distances
from .geometry import PointCloud
from .problem import OTProblem
from .result import ConvergenceWarning, History, OTResult
from .solvers import available_methods, register, solve

__version__ = "0.1.0"

__all__ = [
    "solve",
    "solve_batch",
    "distances",
    "BatchResult",
    "DistanceInfo",
    "sinkhorn",
    "sinkhorn2",
    "OTProblem",
    "PointCloud",
    "OTResult",
    "History",
    "ConvergenceWarning",
    "available_methods",
    "register",
    "costs",
    "__version__",
]
