"""One table of rules for every public argument, and the checks that apply them.

Every public entry point (:func:`snsot.solve`, :class:`snsot.OTProblem`,
:func:`snsot.sinkhorn`, :mod:`snsot.costs`) checks its arguments here, once,
where they enter, so a bad value fails at once with a message that names it::

    eps_factor: must be a number > 1; got 'abc'

rather than mid-solve, deep in a kernel, or not at all (``kappa=nan`` used
to be accepted and then waste thousands of Newton steps).

A wrong *type* raises :class:`ArgumentTypeError`, which is both a
``TypeError`` and a ``ValueError``: callers that catch either (the command
line catches ``ValueError``) keep working.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["ArgumentTypeError", "Rule", "RULES", "check", "check_options", "real_array"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a string where a number belongs, a complex array...)."""


def _show(value) -> str:
    """``repr`` of a value for a message, short and without numpy's ``np.float64(...)`` wrapper."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Rule:
    """What one argument may be.

    Attributes
    ----------
    kind : {"real", "int", "choice", "callable", "bool"}
        ``"real"``: a real number (bools refused); ``"int"``: an integer
        (an integral float such as ``5.0`` is accepted and converted);
        ``"choice"``: one of ``choices``; ``"callable"``; ``"bool"``.
    low, high : float
        Bounds for numbers; ``low_open``/``high_open`` say whether they are excluded.
    optional : bool
        ``None`` is allowed (it means "the default").
    choices : tuple
        Allowed values of a ``"choice"``.
    words : str
        The rule in words, when the generated wording will not do.
    """

    kind: str
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    choices: tuple = ()
    words: str = ""

    def describe(self) -> str:
        """The rule in words, for the message: ``"in (0, 1]"``, ``"a number > 1"``, ``"'auto' or 'dense'"``."""
        if self.words:
            return self.words + (" or None" if self.optional else "")
        if self.kind == "choice":
            shown = [_show(c) for c in self.choices]
            return ", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else shown[0]
        if self.kind == "callable":
            return "a callable" + (" or None" if self.optional else "")
        if self.kind == "bool":
            return "True or False"
        noun = "a number" if self.kind == "real" else "an integer"
        lo, hi = self.low, self.high
        if lo == 0 and self.low_open and hi == math.inf:
            text = f"a positive {'finite number' if self.kind == 'real' else 'integer'}"
        elif hi == math.inf and lo == -math.inf:
            text = f"a finite {noun[2:].lstrip()}" if self.kind == "real" else noun
        elif hi == math.inf:
            text = f"{noun} {'>' if self.low_open else '>='} {lo:g}"
        else:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{'' if self.kind == 'real' else 'an integer '}in {left}{lo:g}, {hi:g}{right}"
        return text + (" or None" if self.optional else "")


def _positive(kind="real", **kw):
    return Rule(kind, low=0, low_open=True, **kw)


#: The rules, by argument name. Solver options, :func:`snsot.solve`'s own
#: arguments and the POT-compatible names share the table.
RULES: dict[str, Rule] = {
    # the problem and the stopping rule
    "reg": _positive(),
    "tol": _positive(),
    "max_iter": _positive("int", optional=True),
    "n_threads": _positive("int", optional=True),
    "callback": Rule("callable", optional=True),
    "warn": Rule("bool"),
    "stop_at_floor": Rule("bool"),
    # SNS options (snsot.solvers.sns.solve_sns)
    "variant": Rule("choice", choices=("adaptive", "paper")),
    "hessian": Rule("choice", choices=("auto", "sparse", "dense")),
    "eps_scaling": Rule("choice", choices=("auto", True, False)),
    "eps_factor": Rule("real", low=1, low_open=True),
    "n_warmup": Rule("int", low=0, optional=True),
    "sparsity": Rule("real", low=0, high=1, low_open=True, optional=True),
    "kappa": Rule("real", low=0, low_open=True, words="a number > 0"),
    "switch_horizon": Rule("int", low=0, optional=True),
    "max_row_entries": Rule("int", low=1, optional=True),
    "max_cg": Rule("int", low=1),
    "direction": Rule("callable", optional=True),
    "extrapolate": Rule("int", low=1),
    # POT's names (snsot.sinkhorn)
    "numItermax": _positive("int", optional=True),
    "stopThr": Rule("real", low=0),
}


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


def check(name: str, value, rule: Rule | None = None):
    """``value`` checked against ``RULES[name]`` (or ``rule``), normalised.

    Numbers come back as Python ``float``/``int``; ``None`` stays ``None``
    where the rule allows it. Names with no rule pass through unchanged.

    Raises
    ------
    ArgumentTypeError
        ``value`` has the wrong type (``"eps_factor: must be a number > 1; got 'abc'"``).
    ValueError
        ``value`` has the right type but is out of range, NaN or infinite.
    """
    rule = RULES.get(name) if rule is None else rule
    if rule is None:
        return value
    if value is None:
        if rule.optional:
            return None
        raise ArgumentTypeError(f"{name}: must be {rule.describe()}; got None")
    if rule.kind == "choice":
        # bools compare equal to 0/1 and a string is never equal to True: match on type too
        for choice in rule.choices:
            if type(choice) is bool:
                if _is_bool(value) and bool(value) is choice:
                    return choice
            elif not _is_bool(value) and isinstance(value, type(choice)) and value == choice:
                return choice
        raise ValueError(f"{name}: must be {rule.describe()}; got {_show(value)}")
    if rule.kind == "callable":
        if callable(value):
            return value
        raise ArgumentTypeError(f"{name}: must be {rule.describe()}; got {_show(value)} of type {type(value).__name__}")
    if rule.kind == "bool":
        if _is_bool(value):
            return bool(value)
        raise ArgumentTypeError(f"{name}: must be True or False; got {_show(value)}")

    # numbers: refuse bools, strings, arrays and complex values before comparing
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name}: must be {rule.describe()}; got {_show(value)}")
    if rule.kind == "int":
        if isinstance(value, numbers.Integral):
            value = int(value)
        elif math.isfinite(value) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name}: must be {rule.describe()}; got {_show(value)}")
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name}: must be {rule.describe()}; got {_show(value)}")
    too_low = value <= rule.low if rule.low_open else value < rule.low
    too_high = value >= rule.high if rule.high_open else value > rule.high
    if too_low or too_high:
        raise ValueError(f"{name}: must be {rule.describe()}; got {_show(value)}")
    return value


def check_options(options: dict) -> dict:
    """Every entry of ``options`` checked against its rule (names without one pass through)."""
    return {name: check(name, value) for name, value in options.items()}


def real_array(x, name: str, *, what: str = "values", dtype=np.float64, reject_nan: bool = True) -> np.ndarray:
    """``x`` as a real ``dtype`` array, or an error naming ``name``.

    Refuses what ``np.asarray(x, dtype=float)`` would silently mangle or
    fail on obscurely: complex values (numpy drops the imaginary part with
    only a warning), strings (numeric strings would be parsed), object
    arrays, ragged lists, and (unless ``reject_nan=False``, for callers
    whose own range check reports it) NaN. Infinities are left to the
    caller (a cost may be ``+inf``; weights may not). ``dtype=None`` keeps
    a real floating dtype (e.g. float32) and makes anything else float64.

    Raises
    ------
    ArgumentTypeError
        Complex, string, object or otherwise non-numeric input.
    ValueError
        Ragged input or NaN (the message gives the first NaN's index).
    """
    try:
        raw = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged nesting under numpy >= 1.24
        raise ValueError(f"{name}: {what} must be a rectangular numeric array ({exc})") from None
    if np.iscomplexobj(raw):
        raise ArgumentTypeError(f"{name}: {what} must be real; got a complex array")
    if raw.dtype == object or not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
        raise ArgumentTypeError(f"{name}: {what} must be numeric; got dtype {raw.dtype}")
    if dtype is None:
        dtype = raw.dtype if raw.dtype.kind == "f" else np.float64
    out = np.asarray(raw, dtype=dtype)
    if reject_nan and out.size and np.isnan(out.min() if out.dtype.kind == "f" else 0.0):
        index = np.unravel_index(int(np.flatnonzero(np.isnan(out.ravel()))[0]), out.shape)
        index = int(index[0]) if len(index) == 1 else tuple(int(i) for i in index)
        raise ValueError(f"{name}: {what} must not be NaN; found nan at index {index}")
    return out
