"""Solvers for FaLA's personal matrix.

The personalized logit is ``z = E @ theta + offset`` with rows ``e_i = u_i ⊙ v_i`` (news,
offset 0) or ``w_c ⊙ h_i`` (classification, offset ``b_c``) and ``Λ = diag(theta)``;
``theta = 1`` is exactly the global model. After a swap the device refits theta on a handful
of examples (n ≪ d), so the default is ridge anchored at theta0 solved in the dual (an n×n
Cholesky): plain ridge toward 0 would throw away the uᵀv structure the global model already
has.

FLOP convention (``solver_flops_``): 2 FLOPs per multiply-add, dense kernels counted
analytically (Gram ``2·n²·d``, Cholesky ``n³/3``, triangular solve pair ``2·n²`` per right-hand
side, LU ``2·n³/3``, matrix-vector ``2·n·d``, symmetric eigendecomposition ``9·n³``);
elementwise work is left out. torch's FlopCounterMode does not see these, so they are reported
separately.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import LinAlgError, cho_factor, cho_solve, lstsq, solve
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

# ----------------------------------------------------------------------------- validation


def _choose(value: str, choices: dict, name: str):
    try:
        return choices[value]
    except (KeyError, TypeError):
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}") from None


def _check_matrix(X: np.ndarray, name: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) array, got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got {X.shape}")
    X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or inf")
    return X


def _check_vector(v: np.ndarray | None, length: int, name: str) -> np.ndarray | None:
    if v is None:
        return None
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf")
    return v


def _check_lam(lam: float, name: str = "lam") -> float:
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {lam!r}") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {lam!r}")
    return value


def _check_lam_grid(lam_grid: Sequence[float] | None) -> list[float] | None:
    if lam_grid is None:
        return None
    grid = [_check_lam(lam, "every lam_grid value") for lam in lam_grid]
    if not grid:
        raise ValueError("lam_grid must be None or a non-empty sequence of lambdas")
    return grid


# ----------------------------------------------------------------------------- linear algebra


def _solve_shifted(gram: np.ndarray, rhs: np.ndarray, alpha: float) -> np.ndarray:
    """Solve (gram + alpha·I) x = rhs by Cholesky; the minimum-norm least-squares solution
    when the system is singular (alpha = 0 on rank-deficient data, the λ → 0 limit)."""
    system = gram + alpha * np.eye(gram.shape[0], dtype=gram.dtype)
    try:
        return cho_solve(
            cho_factor(system, lower=True, check_finite=False), rhs, check_finite=False
        )
    except LinAlgError:
        return lstsq(system, rhs, check_finite=False)[0]


def _solve_square(system: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """LU solve of a general square system; minimum-norm least squares if it is singular."""
    try:
        return solve(system, rhs, check_finite=False)
    except LinAlgError:
        return lstsq(system, rhs, check_finite=False)[0]


def _newton_direction(
    E: np.ndarray,
    gram: np.ndarray | None,
    first: np.ndarray,
    second: np.ndarray,
    offset: np.ndarray,
    alpha: float,
) -> tuple[np.ndarray, float]:
    """Newton direction x for mean loss + λ‖θ − c‖² from the Newton system scaled by n/2:
    (EᵀSE + αI) x = −(Eᵀℓ'/2 + α·offset) with S = diag(ℓ''/2), offset = θ − c, α = nλ.

    With ``gram`` = EEᵀ (n ≤ d) it is solved in the dual: x = −offset + Eᵀw with
    (SK + αI) w = −ℓ'/2 + S·E·offset, an n×n system that neither divides by α nor needs
    S⁻¹ (saturated sigmoids give S ≈ 0). Otherwise the d×d primal system, in float64.
    Returns (x, flops)."""
    n, d = E.shape
    half_curvature = second / 2.0
    if gram is not None:
        system = half_curvature[:, None] * gram
        system[np.diag_indices(n)] += alpha
        rhs = (-first / 2.0 + half_curvature * (E @ offset)).astype(gram.dtype)
        weights = _solve_square(system, rhs).astype(np.float64)
        return -offset + E.T @ weights, 4 * n * d + n * n + 2 * n**3 / 3 + 2 * n * n
    hessian = E.T @ (half_curvature[:, None] * E)
    rhs = -(E.T @ first / 2.0 + alpha * offset)
    return _solve_shifted(hessian, rhs, alpha), 2 * n * d * d + d**3 / 3 + 2 * d * d + 2 * n * d


def _closed_form_ridge(
    E: np.ndarray, z: np.ndarray, center: np.ndarray, alpha: float, dtype: type
) -> tuple[np.ndarray, float]:
    """argmin ‖Eθ − z‖² + alpha‖θ − center‖², dual θ = c + Eᵀ(EEᵀ + αI)⁻¹(z − Ec) when n ≤ d,
    primal (float64) when n > d. Returns (θ, flops)."""
    n, d = E.shape
    residual = z - E @ center
    if n <= d:
        Ew = E.astype(dtype)
        dual = _solve_shifted(Ew @ Ew.T, residual.astype(dtype), alpha)
        theta = center + E.T @ dual.astype(np.float64)
        return theta, 2 * n * n * d + n**3 / 3 + 2 * n * n + 4 * n * d
    theta = center + _solve_shifted(E.T @ E, E.T @ residual, alpha)
    return theta, 2 * n * d * d + d**3 / 3 + 2 * d * d + 4 * n * d


def loo_mean_squared_errors(
    K: np.ndarray, target: np.ndarray, alphas: Sequence[float]
) -> tuple[np.ndarray, float]:
    """Closed-form leave-one-out MSE of kernel ridge for each penalty alpha (= n·λ).

    r = (I − H)t / diag(I − H) with H = K(K + αI)⁻¹, written through the eigendecomposition
    K = Q diag(ℓ) Qᵀ as I − H = Q diag(α/(ℓ + α)) Qᵀ, which avoids the cancellation of
    1 − diag H when H is close to I. An α whose residuals are undefined (α = 0 with K
    invertible) gets an infinite error. Returns (errors, flops)."""
    n = K.shape[0]
    eigenvalues, Q = np.linalg.eigh(K)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    projected = Q.T @ target
    Q_squared = Q * Q
    errors = np.empty(len(alphas))
    with np.errstate(divide="ignore", invalid="ignore"):
        for position, alpha in enumerate(alphas):
            denominator = eigenvalues + alpha
            shrink = np.divide(alpha, denominator, out=np.ones(n), where=denominator > 0)
            residuals = (Q @ (shrink * projected)) / (Q_squared @ shrink)
            mse = float(np.mean(residuals**2))
            errors[position] = mse if np.isfinite(mse) else np.inf
    flops = 9 * n**3 + 2 * n * n + len(alphas) * 4 * n * n
    return errors, flops


# ----------------------------------------------------------------------------- objectives


def _bce_terms(logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-example BCE-with-logits (log-sigmoid form, stable) and its two derivatives."""
    probability = expit(logits)
    loss = np.logaddexp(0.0, logits) - target * logits
    return loss, probability - target, probability * (1.0 - probability)


def _squared_terms(logits: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, ...]:
    difference = logits - target
    return difference**2, 2.0 * difference, np.full_like(logits, 2.0)


def _sum_terms(*terms: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    return tuple(sum(parts) for parts in zip(*terms, strict=True))


def parse_lam_grid(text: str) -> list[float] | None:
    """A λ grid option (``"0.0001 0.001, 0.01"``) as numbers; None for an empty grid (a
    fixed λ)."""
    if not text.strip():
        return None
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError as err:
        raise ValueError(f"lam-grid must be numbers, got {text!r}") from err


@dataclass(frozen=True)
class Objective:
    """A per-example loss on the logits: what targets it needs and its derivatives.

    ``terms(logits, z, y)`` returns per-example (loss, dloss/dlogit, d²loss/dlogit²); the
    fitted criterion is mean(loss) + λ‖θ − center‖². ``squared_error`` marks the one loss
    with a closed form."""

    needs_z: bool
    needs_y: bool
    squared_error: bool
    terms: Callable[[np.ndarray, np.ndarray | None, np.ndarray | None], tuple[np.ndarray, ...]]


OBJECTIVES: dict[str, Objective] = {
    "mse": Objective(True, False, True, lambda p, z, y: _squared_terms(p, z)),
    "ce-labels": Objective(False, True, False, lambda p, z, y: _bce_terms(p, y)),
    "ce-distill": Objective(True, False, False, lambda p, z, y: _bce_terms(p, expit(z))),
    "mse+ce": Objective(
        True, True, False, lambda p, z, y: _sum_terms(_squared_terms(p, z), _bce_terms(p, y))
    ),
}


ANCHORS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "ones": lambda d, rng: np.ones(d),  # the global model
    "zeros": lambda d, rng: np.zeros(d),
    # random-init ablation: standard normal, i.e. no knowledge of the global model at all
    "random": lambda d, rng: rng.standard_normal(d),
}

_DTYPES: dict[str, type] = {"float64": np.float64, "float32": np.float32}


# ----------------------------------------------------------------------------- solvers


@dataclass(frozen=True)
class _Problem:
    E: np.ndarray
    z: np.ndarray | None
    y: np.ndarray | None
    theta0: np.ndarray
    center: np.ndarray
    lam: float
    objective: Objective
    dtype: type
    offset: np.ndarray  # fixed part of each logit (a class bias b_c), not fitted

    def logits(self, theta: np.ndarray) -> np.ndarray:
        return self.E @ theta + self.offset

    def criterion(self, theta: np.ndarray) -> float:
        loss = self.objective.terms(self.logits(theta), self.z, self.y)[0]
        return float(np.mean(loss) + self.lam * np.sum((theta - self.center) ** 2))

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        first = self.objective.terms(self.logits(theta), self.z, self.y)[1]
        return self.E.T @ first / len(first) + 2.0 * self.lam * (theta - self.center)


def _newton(problem: _Problem, max_steps: int) -> tuple[np.ndarray, int, float]:
    """Damped Newton (IRLS) on mean loss + λ‖θ − center‖², started at θ0; the n×n dual
    system when n ≤ d (see ``_newton_direction``). Armijo backtracking keeps every step a
    descent step; it stops when θ stops moving."""
    E, n, d = problem.E, *problem.E.shape
    alpha = n * problem.lam
    gram, flops = None, 0.0
    if n <= d:
        work = E.astype(problem.dtype)
        gram, flops = work @ work.T, 2.0 * n * n * d
    theta = problem.theta0.copy()
    value = problem.criterion(theta)
    steps = 0
    while steps < max_steps:
        steps += 1
        _, first, second = problem.objective.terms(problem.logits(theta), problem.z, problem.y)
        offset = theta - problem.center
        direction, step_flops = _newton_direction(E, gram, first, second, offset, alpha)
        slope = float((E.T @ first / n + 2.0 * problem.lam * offset) @ direction)
        flops += step_flops + 4 * n * d
        if slope >= 0:  # no descent left at machine precision: θ is the optimum
            break
        step = 1.0
        while True:
            candidate = theta + step * direction
            candidate_value = problem.criterion(candidate)
            flops += 2 * n * d
            if candidate_value <= value + 1e-4 * step * slope or step < 1e-12:
                break
            step /= 2.0
        moved = np.max(np.abs(candidate - theta))
        theta, value = candidate, candidate_value
        if moved <= 1e-10 * (1.0 + np.max(np.abs(theta))):
            break
    return theta, steps, flops


def _solve_ridge(problem: _Problem, estimator: PersonalMatrix) -> tuple[np.ndarray, int, float]:
    """Closed form for the squared error, Newton otherwise; the center decides the anchor."""
    if problem.objective.squared_error:
        n = problem.E.shape[0]
        theta, flops = _closed_form_ridge(
            problem.E, problem.z - problem.offset, problem.center, n * problem.lam,
            problem.dtype,
        )
        return theta, 1, flops
    return _newton(problem, estimator.newton_steps)


def _solve_adam(problem: _Problem, estimator: PersonalMatrix) -> tuple[np.ndarray, int, float]:
    """Full-batch torch Adam from θ0 (the paper's iterative procedure); the gradient comes from
    the same objective terms as the closed form and Newton solvers."""
    torch_dtype = torch.float64 if problem.dtype is np.float64 else torch.float32
    theta = torch.tensor(problem.theta0, dtype=torch_dtype, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=estimator.lr)
    for _ in range(estimator.n_steps):
        optimizer.zero_grad()
        current = theta.detach().numpy().astype(np.float64)
        theta.grad = torch.as_tensor(problem.gradient(current), dtype=torch_dtype)
        optimizer.step()
    n, d = problem.E.shape
    flops = estimator.n_steps * (4 * n * d + 10 * d)  # forward, backward, Adam update
    return theta.detach().numpy().astype(np.float64), estimator.n_steps, flops


@dataclass(frozen=True)
class _Solver:
    center: Callable[[np.ndarray], np.ndarray]  # where the L2 penalty pulls θ
    solve: Callable[[_Problem, PersonalMatrix], tuple[np.ndarray, int, float]]


SOLVERS: dict[str, _Solver] = {
    "anchored": _Solver(lambda theta0: theta0, _solve_ridge),
    "plain": _Solver(np.zeros_like, _solve_ridge),
    "adam": _Solver(lambda theta0: theta0, _solve_adam),
}


# ----------------------------------------------------------------------------- estimators


def _mean_bce(logits: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, logits) - target * logits))


class PersonalMatrix(BaseEstimator):
    """Fit θ = diag(Λ) so that E @ θ matches the old personalized logits z (or labels y).

    Criterion: mean loss + λ‖θ − c‖², with c = θ0 for the ``anchored`` and ``adam`` solvers
    and c = 0 for ``plain``. ``anchor`` picks θ0: ``ones`` (the global model), ``zeros`` or
    ``random`` (standard normal from ``random_state``); a ``theta0`` passed to ``fit`` wins
    (warm start / chained swaps). With ``lam_grid`` the λ with the smallest closed-form
    leave-one-out MSE is used (squared-error objective only). ``dtype`` is the precision of the
    n×n dual solve, of Adam and of ``coef_``; d×d systems are always float64. Inputs may be
    float32 (as produced on device); they are promoted before any Gram is formed.
    """

    def __init__(
        self,
        lam: float = 0.1,
        anchor: str = "ones",
        solver: str = "anchored",
        objective: str = "mse",
        lam_grid: Sequence[float] | None = None,
        n_steps: int = 200,
        lr: float = 1e-3,
        newton_steps: int = 20,
        random_state: int | np.random.Generator | None = None,
        dtype: str = "float64",
    ):
        self.lam = lam
        self.anchor = anchor
        self.solver = solver
        self.objective = objective
        self.lam_grid = lam_grid
        self.n_steps = n_steps
        self.lr = lr
        self.newton_steps = newton_steps
        self.random_state = random_state
        self.dtype = dtype

    def fit(
        self,
        E: np.ndarray,
        z: np.ndarray | None = None,
        y: np.ndarray | None = None,
        theta0: np.ndarray | None = None,
        offset: np.ndarray | None = None,
    ) -> PersonalMatrix:
        """Learn ``coef_`` from rows e_i (news: u_i ⊙ v_i; classification: w_c ⊙ h_i), old
        logits z and/or 0/1 targets y; ``offset`` is a fixed part of each logit (the class
        bias b_c; logits are ``E θ + offset``), zero by default."""
        solver = _choose(self.solver, SOLVERS, "solver")
        objective = _choose(self.objective, OBJECTIVES, "objective")
        anchor = _choose(self.anchor, ANCHORS, "anchor")
        dtype = _choose(self.dtype, _DTYPES, "dtype")
        lam = _check_lam(self.lam)
        lam_grid = _check_lam_grid(self.lam_grid)
        for name in ("n_steps", "newton_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        E = _check_matrix(E, "E")
        n, d = E.shape
        z = _check_vector(z, n, "z")
        y = _check_vector(y, n, "y")
        offset = np.zeros(n) if offset is None else _check_vector(offset, n, "offset")
        if objective.needs_z and z is None:
            raise ValueError(f"objective {self.objective!r} needs z (the old logits)")
        if objective.needs_y and y is None:
            raise ValueError(f"objective {self.objective!r} needs y (binary labels)")
        if objective.needs_y and np.any((y < 0) | (y > 1)):
            raise ValueError("y must hold labels in [0, 1]")
        if lam_grid is not None and not objective.squared_error:
            raise ValueError(
                "lam_grid picks λ by the closed-form squared-error leave-one-out; it needs "
                f"objective 'mse', got {self.objective!r}"
            )
        if theta0 is None:
            theta0 = anchor(d, np.random.default_rng(self.random_state))
        theta0 = _check_vector(theta0, d, "theta0")
        center = solver.center(theta0)

        loo_errors: dict[float, float] = {}
        loo_flops = 0.0
        if lam_grid is not None:
            errors, loo_flops = loo_mean_squared_errors(
                E @ E.T, z - offset - E @ center, [n * value for value in lam_grid]
            )
            loo_flops += 2 * n * n * d + 2 * n * d
            loo_errors = dict(zip(lam_grid, errors.tolist(), strict=True))
            lam = lam_grid[int(np.argmin(errors))]

        problem = _Problem(E, z, y, theta0, center, lam, objective, dtype, offset)
        theta, n_iter, flops = solver.solve(problem, self)
        if not np.all(np.isfinite(theta)):
            raise FloatingPointError(
                f"solver {self.solver!r} produced a non-finite θ (lam={lam}); raise lam"
            )
        self.coef_ = theta.astype(dtype)
        self.theta0_ = theta0
        self.lam_ = lam
        self.loo_errors_ = loo_errors
        self.n_iter_ = n_iter
        self.solver_flops_ = float(flops + loo_flops)
        self.n_features_in_ = d
        logits = E @ self.coef_.astype(np.float64) + offset
        self.fit_error_ = (
            float(np.mean((logits - z) ** 2)) if z is not None else _mean_bce(logits, y)
        )
        return self

    def predict(self, E: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        """Personalized logits E @ coef_ (+ offset)."""
        check_is_fitted(self, "coef_")
        E = np.asarray(E)
        if E.ndim != 2 or E.shape[1] != self.coef_.shape[0]:
            raise ValueError(f"E must have shape (n, {self.coef_.shape[0]}), got {E.shape}")
        return E @ self.coef_ if offset is None else E @ self.coef_ + offset


class FullRankPersonalMatrix(BaseEstimator):
    """Full-rank ablation: Λ = I + Δ with Δ a full d×d matrix, fitted by kernel ridge.

    z_i = u_iᵀ(I + Δ)v_i = u_iᵀv_i + ⟨Δ, u_i v_iᵀ⟩, so Δ is ridge regression on the d²
    features vec(u_i v_iᵀ) with penalty nλ‖Δ‖²_F, solved in the dual with the kernel
    k_ij = (u_iᵀu_j)(v_iᵀv_j) (never forming d² features)."""

    def __init__(self, lam: float = 0.1, lam_grid: Sequence[float] | None = None):
        self.lam = lam
        self.lam_grid = lam_grid

    def fit(self, U: np.ndarray, V: np.ndarray, z: np.ndarray) -> FullRankPersonalMatrix:
        """Learn ``dual_coef_`` from user vectors U, item vectors V (both (n, d)) and logits z."""
        lam = _check_lam(self.lam)
        lam_grid = _check_lam_grid(self.lam_grid)
        U, V = _check_matrix(U, "U"), _check_matrix(V, "V")
        if U.shape != V.shape:
            raise ValueError(f"U and V must have the same shape, got {U.shape} and {V.shape}")
        n, d = U.shape
        z = _check_vector(z, n, "z")
        base = np.sum(U * V, axis=1)
        residual = z - base
        kernel = (U @ U.T) * (V @ V.T)
        flops = 4 * n * n * d
        loo_errors: dict[float, float] = {}
        if lam_grid is not None:
            errors, loo_flops = loo_mean_squared_errors(
                kernel, residual, [n * value for value in lam_grid]
            )
            flops += loo_flops
            loo_errors = dict(zip(lam_grid, errors.tolist(), strict=True))
            lam = lam_grid[int(np.argmin(errors))]
        self.dual_coef_ = _solve_shifted(kernel, residual, n * lam)
        flops += n**3 / 3 + 2 * n * n
        self.U_, self.V_ = U, V
        self.lam_ = lam
        self.loo_errors_ = loo_errors
        self.solver_flops_ = float(flops)
        self.fit_error_ = float(np.mean((base + kernel @ self.dual_coef_ - z) ** 2))
        return self

    def predict(self, U: np.ndarray, V: np.ndarray) -> np.ndarray:
        """Personalized logits uᵀv + Σ_j α_j (uᵀu_j)(vᵀv_j) over the stored training pairs."""
        check_is_fitted(self, "dual_coef_")
        U = np.asarray(U, dtype=np.float64)
        V = np.asarray(V, dtype=np.float64)
        support_u = np.asarray(self.U_, dtype=np.float64)
        support_v = np.asarray(self.V_, dtype=np.float64)
        if U.shape != V.shape or U.ndim != 2 or U.shape[1] != support_u.shape[1]:
            raise ValueError(
                f"U and V must both have shape (n, {support_u.shape[1]}), got {U.shape}, {V.shape}"
            )
        kernel = (U @ support_u.T) * (V @ support_v.T)
        return np.sum(U * V, axis=1) + kernel @ np.asarray(self.dual_coef_, dtype=np.float64)
