"""FLOP counting. Measured ops use torch's FlopCounterMode (2 FLOPs per multiply-add);
factorizations and triangular solves, which it does not count, are added analytically."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")


def count_flops(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, int]:
    """Run ``fn`` and return its result and the FLOPs of the torch ops it ran."""
    with FlopCounterMode(display=False) as counter:
        result = fn(*args, **kwargs)
    return result, int(counter.get_total_flops())


def cholesky_flops(n: int) -> int:
    """Cholesky of an n×n matrix: n³/3 multiply-adds -> 2n³/3 FLOPs."""
    return int(2 * n**3 // 3)


def triangular_solve_flops(n: int, k: int = 1) -> int:
    """Two triangular solves (forward + back) with k right-hand sides: 2·n²k FLOPs."""
    return int(2 * n * n * k)
