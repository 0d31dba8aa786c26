"""Personal-matrix solvers against independent references (sklearn, explicit refits)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge

from strategies.fala.ridge import FullRankPersonalMatrix, PersonalMatrix

SHAPES = [(8, 20), (30, 6)]  # n < d (dual form) and n > d (primal form)


def problem(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows e_i = u_i ⊙ v_i, a non-trivial θ* and logits z = E θ* + noise."""
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(n, d)) * rng.normal(size=(n, d))
    theta_star = 1.0 + 0.5 * rng.normal(size=d)
    z = E @ theta_star + 0.1 * rng.normal(size=n)
    return E, z, theta_star


def criterion_gradient(E, theta, center, lam, first_derivative) -> np.ndarray:
    return E.T @ first_derivative / len(E) + 2 * lam * (theta - center)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("lam", [1e-3, 0.1, 3.0])
def test_plain_ridge_equals_sklearn(n: int, d: int, lam: float) -> None:
    E, z, _ = problem(n, d)
    fitted = PersonalMatrix(lam=lam, solver="plain").fit(E, z)
    reference = Ridge(alpha=n * lam, fit_intercept=False, solver="cholesky").fit(E, z)
    np.testing.assert_allclose(fitted.coef_, reference.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fitted.predict(E), reference.predict(E), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("lam", [1e-3, 0.1, 3.0])
def test_anchored_ridge_equals_sklearn_on_the_residual(n: int, d: int, lam: float) -> None:
    E, z, _ = problem(n, d)
    theta0 = np.random.default_rng(1).normal(size=d)
    fitted = PersonalMatrix(lam=lam).fit(E, z, theta0=theta0)
    reference = Ridge(alpha=n * lam, fit_intercept=False, solver="cholesky").fit(E, z - E @ theta0)
    np.testing.assert_allclose(fitted.coef_, theta0 + reference.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(fitted.theta0_, theta0)


@pytest.mark.parametrize("n,d", SHAPES)
def test_default_anchor_is_the_global_model(n: int, d: int) -> None:
    E, z, _ = problem(n, d)
    default = PersonalMatrix(lam=0.1).fit(E, z)
    explicit = PersonalMatrix(lam=0.1).fit(E, z, theta0=np.ones(d))
    np.testing.assert_array_equal(default.theta0_, np.ones(d))
    np.testing.assert_allclose(default.coef_, explicit.coef_, rtol=1e-12)


@pytest.mark.parametrize("n,d", SHAPES)
def test_huge_lambda_returns_the_anchor(n: int, d: int) -> None:
    E, z, _ = problem(n, d)
    theta0 = np.random.default_rng(2).normal(size=d)
    fitted = PersonalMatrix(lam=1e12).fit(E, z, theta0=theta0)
    np.testing.assert_allclose(fitted.coef_, theta0, atol=1e-9)
    plain = PersonalMatrix(lam=1e12, solver="plain").fit(E, z)
    np.testing.assert_allclose(plain.coef_, 0.0, atol=1e-9)


@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("lam", [0.0, 1e-6, 1.0])
def test_logits_already_explained_by_the_anchor_leave_it_unchanged(
    n: int, d: int, lam: float
) -> None:
    E, _, _ = problem(n, d)
    theta0 = np.random.default_rng(3).normal(size=d)
    fitted = PersonalMatrix(lam=lam).fit(E, E @ theta0, theta0=theta0)
    np.testing.assert_allclose(fitted.coef_, theta0, atol=1e-10)
    assert fitted.fit_error_ < 1e-18


def test_zero_lambda_interpolates_with_the_minimum_change() -> None:
    """λ → 0 with n < d: the anchored solution interpolates z and moves θ0 least."""
    E, z, _ = problem(8, 20)
    fitted = PersonalMatrix(lam=0.0).fit(E, z)
    np.testing.assert_allclose(E @ fitted.coef_, z, atol=1e-9)
    np.testing.assert_allclose(fitted.coef_, 1.0 + np.linalg.pinv(E) @ (z - E.sum(1)), atol=1e-9)


def test_solver_flops_follow_the_documented_convention() -> None:
    n, d = 8, 20
    E, z, _ = problem(n, d)
    fitted = PersonalMatrix(lam=0.1).fit(E, z)
    gram, cholesky, solve, products = 2 * n * n * d, n**3 / 3, 2 * n * n, 4 * n * d
    assert fitted.solver_flops_ == pytest.approx(gram + cholesky + solve + products)
    assert fitted.n_iter_ == 1


# ----------------------------------------------------------------------------- leave-one-out


@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("solver", ["anchored", "plain"])
def test_loo_shortcut_equals_explicit_refits(n: int, d: int, solver: str) -> None:
    """The shortcut holds the penalty α = nλ fixed while dropping a row, so each explicit
    refit uses Ridge(alpha = n·λ) on the remaining n − 1 rows."""
    E, z, _ = problem(n, d, seed=4)
    theta0 = np.random.default_rng(5).normal(size=d)
    grid = [1e-3, 1e-2, 0.1, 1.0]
    fitted = PersonalMatrix(solver=solver, lam_grid=grid).fit(E, z, theta0=theta0)
    target = z - E @ (theta0 if solver == "anchored" else np.zeros(d))
    for lam in grid:
        residuals = []
        for i in range(n):
            keep = np.arange(n) != i
            refit = Ridge(alpha=n * lam, fit_intercept=False, solver="cholesky")
            refit.fit(E[keep], target[keep])
            residuals.append(target[i] - refit.predict(E[i : i + 1])[0])
        assert fitted.loo_errors_[lam] == pytest.approx(np.mean(np.square(residuals)), rel=1e-8)
    best = min(grid, key=fitted.loo_errors_.get)
    assert fitted.lam_ == best
    again = PersonalMatrix(solver=solver, lam=best).fit(E, z, theta0=theta0)
    np.testing.assert_allclose(fitted.coef_, again.coef_, rtol=1e-12)


def test_loo_needs_the_squared_error_objective() -> None:
    E, z, _ = problem(8, 20)
    with pytest.raises(ValueError, match="needs objective 'mse'"):
        PersonalMatrix(lam_grid=[0.1], objective="ce-distill").fit(E, z)


# ----------------------------------------------------------------------------- iterative solvers


def test_adam_converges_near_the_closed_form() -> None:
    E, z, _ = problem(12, 6, seed=6)
    exact = PersonalMatrix(lam=0.05).fit(E, z)
    adam = PersonalMatrix(lam=0.05, solver="adam", lr=0.01, n_steps=1000).fit(E, z)
    np.testing.assert_allclose(adam.coef_, exact.coef_, atol=1e-6)
    assert adam.n_iter_ == 1000
    short = PersonalMatrix(lam=0.05, solver="adam", lr=0.01, n_steps=5).fit(E, z)
    assert np.max(np.abs(short.coef_ - exact.coef_)) > 10 * np.max(np.abs(adam.coef_ - exact.coef_))


def test_adam_starts_from_theta0_and_random_anchor_is_seeded() -> None:
    E, z, _ = problem(12, 6)
    one_step = PersonalMatrix(solver="adam", anchor="random", n_steps=1, random_state=3).fit(E, z)
    theta0 = np.random.default_rng(3).standard_normal(6)
    np.testing.assert_array_equal(one_step.theta0_, theta0)
    assert np.max(np.abs(one_step.coef_ - theta0)) <= 1e-3 * (1 + 1e-9)  # one Adam step is ≤ lr
    again = PersonalMatrix(solver="adam", anchor="random", n_steps=1, random_state=3).fit(E, z)
    np.testing.assert_array_equal(one_step.coef_, again.coef_)


@pytest.mark.parametrize("n,d", SHAPES)
def test_ce_labels_plain_equals_sklearn_logistic_regression(n: int, d: int) -> None:
    """mean BCE + λ‖θ‖² is sklearn's C·ΣBCE + ½‖w‖² with C = 1 / (2nλ)."""
    E, z, _ = problem(n, d, seed=7)
    y = (z + np.random.default_rng(0).normal(size=n) > 0).astype(float)
    lam = 0.05
    fitted = PersonalMatrix(lam=lam, solver="plain", objective="ce-labels").fit(E, y=y)
    reference = LogisticRegression(
        C=1 / (2 * n * lam), fit_intercept=False, solver="newton-cholesky", tol=1e-12
    ).fit(E, y)
    np.testing.assert_allclose(fitted.coef_, reference.coef_[0], atol=1e-6)


@pytest.mark.parametrize("objective", ["ce-labels", "ce-distill", "mse+ce"])
@pytest.mark.parametrize("n,d", SHAPES)
def test_ce_objectives_reach_a_stationary_point_better_than_theta0(
    objective: str, n: int, d: int
) -> None:
    E, z, _ = problem(n, d, seed=8)
    y = (z > np.median(z)).astype(float)
    lam = 0.02
    fitted = PersonalMatrix(lam=lam, objective=objective).fit(E, z=z, y=y)
    theta, theta0 = fitted.coef_, fitted.theta0_

    def criterion(t: np.ndarray) -> float:
        p = E @ t
        terms = {
            "ce-labels": np.logaddexp(0, p) - y * p,
            "ce-distill": np.logaddexp(0, p) - sigmoid(z) * p,
            "mse+ce": (p - z) ** 2 + np.logaddexp(0, p) - y * p,
        }[objective]
        return float(np.mean(terms) + lam * np.sum((t - theta0) ** 2))

    assert criterion(theta) < criterion(theta0)
    p = E @ theta
    first = {
        "ce-labels": sigmoid(p) - y,
        "ce-distill": sigmoid(p) - sigmoid(z),
        "mse+ce": 2 * (p - z) + sigmoid(p) - y,
    }[objective]
    np.testing.assert_allclose(criterion_gradient(E, theta, theta0, lam, first), 0, atol=1e-8)
    assert 1 <= fitted.n_iter_ <= 20


@pytest.mark.parametrize("objective", ["ce-labels", "ce-distill", "mse+ce"])
def test_ce_objectives_stay_at_theta0_for_huge_lambda(objective: str) -> None:
    E, z, _ = problem(10, 16, seed=9)
    y = (z > 0).astype(float)
    fitted = PersonalMatrix(lam=1e10, objective=objective).fit(E, z=z, y=y)
    np.testing.assert_allclose(fitted.coef_, np.ones(16), atol=1e-8)


def test_ce_distill_recovers_theta_when_logits_are_exact() -> None:
    E, _, theta_star = problem(10, 16, seed=10)
    fitted = PersonalMatrix(lam=1e-3, objective="ce-distill").fit(
        E, z=E @ theta_star, theta0=theta_star
    )
    np.testing.assert_allclose(fitted.coef_, theta_star, atol=1e-10)


def test_ce_is_stable_on_extreme_logits() -> None:
    E, z, _ = problem(10, 16, seed=11)
    fitted = PersonalMatrix(lam=1e-4, objective="ce-labels").fit(1e3 * E, y=(z > 0).astype(float))
    assert np.all(np.isfinite(fitted.coef_)) and np.isfinite(fitted.fit_error_)


# ----------------------------------------------------------------------------- precision


@pytest.mark.parametrize("n,d", [(20, 64), (80, 16)])
def test_float32_inputs_with_tiny_lambda_stay_finite_and_close(n: int, d: int) -> None:
    E, z, _ = problem(n, d, seed=12)
    E32, z32 = E.astype(np.float32), z.astype(np.float32)
    reference = PersonalMatrix(lam=1e-9).fit(E32.astype(np.float64), z32.astype(np.float64))
    default = PersonalMatrix(lam=1e-9).fit(E32, z32)
    assert default.coef_.dtype == np.float64
    np.testing.assert_array_equal(default.coef_, reference.coef_)
    single = PersonalMatrix(lam=1e-9, dtype="float32").fit(E32, z32)
    assert single.coef_.dtype == np.float32 and np.all(np.isfinite(single.coef_))
    scale = np.max(np.abs(reference.predict(E)))
    np.testing.assert_allclose(single.predict(E), reference.predict(E), atol=1e-3 * scale)


@pytest.mark.parametrize("n,d", [(20, 64), (80, 16)])
def test_float32_newton_with_tiny_lambda_stays_close_to_float64(n: int, d: int) -> None:
    E, z, _ = problem(n, d, seed=16)
    y = (z > np.median(z)).astype(float)
    double = PersonalMatrix(lam=1e-6, objective="mse+ce").fit(E, z=z, y=y)
    single = PersonalMatrix(lam=1e-6, objective="mse+ce", dtype="float32").fit(
        E.astype(np.float32), z=z.astype(np.float32), y=y
    )
    assert np.all(np.isfinite(single.coef_))
    scale = np.max(np.abs(double.predict(E)))
    np.testing.assert_allclose(single.predict(E), double.predict(E), atol=1e-3 * scale)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "params,match",
    [
        ({"solver": "lbfgs"}, r"solver must be one of \['adam', 'anchored', 'plain'\]"),
        ({"objective": "hinge"}, "objective must be one of"),
        ({"anchor": "twos"}, r"anchor must be one of \['ones', 'random', 'zeros'\]"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"lam": -1.0}, "lam must be"),
        ({"lam_grid": [0.1, -2]}, "lam_grid"),
        ({"lam_grid": []}, "non-empty"),
        ({"newton_steps": 0}, "newton_steps"),
        ({"lr": 0.0}, "lr must be"),
    ],
)
def test_invalid_settings_raise_clear_errors(params: dict, match: str) -> None:
    E, z, _ = problem(8, 20)
    with pytest.raises(ValueError, match=match):
        PersonalMatrix(**params).fit(E, z)


def test_invalid_data_raise_clear_errors() -> None:
    E, z, _ = problem(8, 20)
    with pytest.raises(ValueError, match="objective 'ce-labels' needs y"):
        PersonalMatrix(objective="ce-labels").fit(E, z)
    with pytest.raises(ValueError, match="objective 'mse' needs z"):
        PersonalMatrix().fit(E)
    with pytest.raises(ValueError, match=r"z must have shape \(8,\)"):
        PersonalMatrix().fit(E, z[:5])
    with pytest.raises(ValueError, match="theta0 must have shape"):
        PersonalMatrix().fit(E, z, theta0=np.ones(3))
    bad = E.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="E contains NaN"):
        PersonalMatrix().fit(bad, z)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 1\]"):
        PersonalMatrix(objective="ce-labels").fit(E, y=np.full(8, 2.0))


def test_estimator_follows_sklearn_conventions() -> None:
    estimator = PersonalMatrix(lam=0.3, solver="plain")
    assert clone(estimator).get_params() == estimator.get_params()
    assert not hasattr(estimator, "coef_")  # __init__ learns nothing


# ----------------------------------------------------------------------------- full rank


def test_full_rank_with_nothing_to_learn_has_zero_dual_coef() -> None:
    rng = np.random.default_rng(13)
    U, V = rng.normal(size=(10, 5)), rng.normal(size=(10, 5))
    fitted = FullRankPersonalMatrix(lam=0.1).fit(U, V, np.sum(U * V, axis=1))
    np.testing.assert_allclose(fitted.dual_coef_, 0.0, atol=1e-12)
    U_new, V_new = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    np.testing.assert_allclose(fitted.predict(U_new, V_new), np.sum(U_new * V_new, axis=1))


@pytest.mark.parametrize("n", [6, 25])  # fewer and more examples than the d² = 9 features
def test_full_rank_equals_explicit_ridge_on_outer_product_features(n: int) -> None:
    rng = np.random.default_rng(14)
    d, lam = 3, 0.05
    U, V = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    delta = 0.3 * rng.normal(size=(d, d))
    z = np.einsum("ni,ij,nj->n", U, np.eye(d) + delta, V) + 0.01 * rng.normal(size=n)
    fitted = FullRankPersonalMatrix(lam=lam).fit(U, V, z)

    def features(U: np.ndarray, V: np.ndarray) -> np.ndarray:
        return np.einsum("ni,nj->nij", U, V).reshape(len(U), -1)

    reference = Ridge(alpha=n * lam, fit_intercept=False, solver="cholesky").fit(
        features(U, V), z - np.sum(U * V, axis=1)
    )
    U_new, V_new = rng.normal(size=(7, d)), rng.normal(size=(7, d))
    expected = np.sum(U_new * V_new, axis=1) + reference.predict(features(U_new, V_new))
    np.testing.assert_allclose(fitted.predict(U_new, V_new), expected, rtol=1e-8, atol=1e-10)
    assert fitted.fit_error_ == pytest.approx(
        np.mean((np.sum(U * V, 1) + reference.predict(features(U, V)) - z) ** 2), rel=1e-6
    )


def test_full_rank_lam_grid_picks_the_loo_best() -> None:
    rng = np.random.default_rng(15)
    U, V = rng.normal(size=(12, 4)), rng.normal(size=(12, 4))
    z = np.sum(U * V, axis=1) + rng.normal(size=12)
    fitted = FullRankPersonalMatrix(lam_grid=[1e-3, 0.1, 10.0]).fit(U, V, z)
    assert fitted.lam_ == min(fitted.loo_errors_, key=fitted.loo_errors_.get)
    assert fitted.solver_flops_ > 0


def test_full_rank_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        FullRankPersonalMatrix().fit(np.ones((3, 2)), np.ones((3, 4)), np.ones(3))
