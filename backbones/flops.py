"""FLOP counting, in one convention: 2 FLOPs per multiply-add (torch's ``FlopCounterMode``
convention; a (m, k) @ (k, n) matmul is 2·m·k·n FLOPs).

Measured ops come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matmuls
(mm/addmm/bmm), convolutions and scaled-dot-product attention, and nothing else: element-wise
ops, softmax, layer norms and embedding lookups count as 0. torch 2.13's counter has no
formula for the fused CPU attention kernel (``_scaled_dot_product_flash_attention_for_cpu``,
which every eval-mode or dropout-free BERT/RoBERTa forward on CPU uses), so it would count
attention as 0 there (-2.7 % of a BERT-base forward at 128 tokens); ``flop_counter()`` adds
torch's own SDPA formulas for it. Use it, never a bare ``FlopCounterMode``.

Factorizations and triangular solves are not counted either; add them with the analytic
helpers below (LAPACK operation counts, which count multiplications and additions separately
and so follow the same convention).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

T = TypeVar("T")


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


CPU_ATTENTION_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}
"""torch's SDPA formulas for the fused CPU attention kernel its counter leaves out."""


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` (no display) that also counts the fused CPU attention kernel."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FORMULAS)


def count_flops(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, int]:
    """Run ``fn(*args, **kwargs)``; return its result and the FLOPs of the torch ops it ran.

    FLOPs are FlopCounterMode's total (2 per multiply-add), forward and, if ``fn`` calls
    ``backward``, backward ops alike.
    """
    with flop_counter() as counter:
        result = fn(*args, **kwargs)
    return result, int(counter.get_total_flops())


def cholesky_flops(n: int) -> int:
    """Cholesky factorization of an n×n SPD matrix: n(n+1)(2n+1)/6 ≈ n³/3 FLOPs.

    LAPACK ``potrf`` count: n³/6 + n²/2 + n/3 multiplications, n³/6 − n/6 additions.
    """
    _check_size("n", n)
    return n * (n + 1) * (2 * n + 1) // 6


def triangular_solve_flops(n: int, k: int = 1) -> int:
    """One triangular solve with an n×n factor and k right-hand sides: n²·k FLOPs.

    LAPACK ``trsm`` count: k·n(n+1)/2 multiplications, k·n(n−1)/2 additions. A solve with a
    Cholesky factor (forward then back substitution) is two of these.
    """
    _check_size("n", n)
    _check_size("k", k)
    return n * n * k


def _check_size(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
