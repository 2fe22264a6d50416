"""Tests for hgrad.projections.project_capped_simplex (projection onto {w in [0,1]^n : sum w <= R})."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from hgrad.projections import capped_simplex_threshold, project_capped_simplex


def _reference(w, radius):
    """Float64 NumPy reference: bisection on tau to below machine precision, then clip."""
    w = np.asarray(w, np.float64)
    p0 = np.clip(w, 0.0, 1.0)
    if p0.sum() <= radius:
        return p0
    lo, hi = 0.0, max(float(w.max()), 0.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.clip(w - mid, 0.0, 1.0).sum() > radius:
            lo = mid
        else:
            hi = mid
    return np.clip(w - 0.5 * (lo + hi), 0.0, 1.0)


def _slsqp(w, radius):
    """Independent reference: generic constrained solver (small n only)."""
    w = np.asarray(w, np.float64)
    res = minimize(
        lambda z: 0.5 * np.sum((z - w) ** 2),
        x0=np.full(w.shape, min(radius / w.size, 1.0) * 0.5),
        jac=lambda z: z - w,
        bounds=[(0.0, 1.0)] * w.size,
        constraints=[{"type": "ineq", "fun": lambda z: radius - z.sum(), "jac": lambda z: -np.ones_like(z)}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert res.success, res.message
    return res.x


def _random_case(rng):
    n = int(rng.choice([1, 2, 7, 33, 60]))  # a few sizes: one compilation each
    scale = float(rng.choice([0.3, 1.0, 3.0]))
    w = rng.normal(loc=float(rng.uniform(-0.5, 1.5)), scale=scale, size=n)
    if rng.uniform() < 0.2:  # ties and values exactly at the box edges
        w = np.round(w * 2) / 2
    radius = float(rng.uniform(0.0, 1.2 * n))
    if rng.uniform() < 0.1:
        radius = float(rng.integers(0, n + 1))
    return w, radius


def _check_kkt(w, radius, p, tau, tol):
    w, p = np.asarray(w, np.float64), np.asarray(p, np.float64)
    assert tau >= 0.0
    np.testing.assert_allclose(p, np.clip(w - tau, 0.0, 1.0), atol=tol)
    assert np.all(p >= 0.0) and np.all(p <= 1.0)
    assert p.sum() <= radius + tol * max(1, w.size)
    # complementary slackness: tau > 0 only if the budget is used up
    assert tau * abs(radius - p.sum()) <= tol * max(1.0, tau) * max(1, w.size)


def test_small_example_by_hand():
    w = jnp.array([0.5, 1.2, -0.3, 0.9, 0.7])
    # budget 1: tau = 0.6, p = [0, 0.6, 0, 0.3, 0.1]
    np.testing.assert_allclose(np.asarray(project_capped_simplex(w, 1.0)), [0, 0.6, 0, 0.3, 0.1], atol=1e-14)
    np.testing.assert_allclose(float(capped_simplex_threshold(w, 1.0)), 0.6, atol=1e-14)
    # budget 2.5: tau = 0.2, the 1.2 entry stays capped at 1
    np.testing.assert_allclose(np.asarray(project_capped_simplex(w, 2.5)), [0.3, 1.0, 0, 0.7, 0.5], atol=1e-14)


@pytest.mark.parametrize("seed", range(5))
def test_matches_bisection_reference(seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(0.5, 1.0, size=200)
    for radius in [0.0, 0.3, 5.0, 37.5, 80.0, 150.0, 200.0, 1e6]:
        p = project_capped_simplex(jnp.asarray(w), radius)
        assert p.dtype == jnp.float64 and p.shape == w.shape
        np.testing.assert_allclose(np.asarray(p), _reference(w, radius), atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_matches_scipy_slsqp(seed):
    rng = np.random.default_rng(100 + seed)
    n = 8
    w = rng.normal(0.5, 0.8, size=n)
    for radius in [0.5, 2.0, 4.5]:
        p = np.asarray(project_capped_simplex(jnp.asarray(w), radius))
        np.testing.assert_allclose(p, _slsqp(w, radius), atol=1e-6)


def test_inactive_constraint_is_box_clip():
    w = jnp.array([-0.5, 0.2, 0.4, 1.7, 0.9])
    box = np.clip(np.asarray(w), 0, 1)  # sum = 2.5
    for radius in [2.5, 3.0, 5.0, 100.0]:  # radius >= n is allowed
        np.testing.assert_array_equal(np.asarray(project_capped_simplex(w, radius)), box)
        assert float(capped_simplex_threshold(w, radius)) == 0.0
    # already feasible points are fixed points
    z = jnp.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_array_equal(np.asarray(project_capped_simplex(z, 1.75)), np.asarray(z))


def test_zero_radius_gives_zeros():
    w = jnp.array([3.0, -1.0, 0.5, 0.5])
    np.testing.assert_array_equal(np.asarray(project_capped_simplex(w, 0.0)), np.zeros(4))


def test_idempotent_and_feasible():
    rng = np.random.default_rng(1)
    for _ in range(10):
        w, radius = _random_case(rng)
        p = project_capped_simplex(jnp.asarray(w), radius)
        pp = project_capped_simplex(p, radius)
        np.testing.assert_allclose(np.asarray(pp), np.asarray(p), atol=1e-12)
        pn = np.asarray(p)
        assert np.all(pn >= 0) and np.all(pn <= 1)
        assert pn.sum() <= radius + 1e-12 * max(1, pn.size)


def test_kkt_and_variational_inequality():
    """p = clip(w - tau, 0, 1), tau >= 0, complementary slackness, and <w - p, z - p> <= 0 for z in the set."""
    rng = np.random.default_rng(2)
    for _ in range(10):
        w, radius = _random_case(rng)
        p = np.asarray(project_capped_simplex(jnp.asarray(w), radius))
        tau = float(capped_simplex_threshold(jnp.asarray(w), radius))
        _check_kkt(w, radius, p, tau, 1e-12)
        for _ in range(20):  # random feasible points of the capped simplex
            z = rng.uniform(size=w.size)
            if z.sum() > radius:
                z *= radius / z.sum()
            assert np.dot(w - p, z - p) <= 1e-10


def test_randomized_50_cases():
    rng = np.random.default_rng(12345)
    for _ in range(50):
        w, radius = _random_case(rng)
        p = project_capped_simplex(jnp.asarray(w), radius)
        ref = _reference(w, radius)
        np.testing.assert_allclose(np.asarray(p), ref, atol=1e-11)
        tau = float(capped_simplex_threshold(jnp.asarray(w), radius))
        _check_kkt(w, radius, np.asarray(p), tau, 1e-11)


def test_jit_with_traced_radius_and_float32():
    rng = np.random.default_rng(3)
    w = rng.normal(0.5, 1.0, size=100)
    proj = jax.jit(project_capped_simplex)
    for radius in [1.0, 20.0, 70.0]:
        np.testing.assert_allclose(np.asarray(proj(jnp.asarray(w), radius)), _reference(w, radius), atol=1e-12)
    w32 = jnp.asarray(w, jnp.float32)
    p32 = proj(w32, jnp.float32(20.0))
    assert p32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(p32), _reference(np.asarray(w32), 20.0), atol=1e-5)
    assert float(jnp.sum(p32)) <= 20.0 + 1e-4
    # float64 radius with float32 w is cast explicitly (strict promotion)
    assert project_capped_simplex(w32, jnp.float64(20.0)).dtype == jnp.float32
    # vmap over a batch of vectors and radii
    batch = jnp.asarray(rng.normal(0.5, 1.0, size=(3, 10)))
    radii = jnp.array([0.5, 2.0, 9.0])
    out = jax.vmap(project_capped_simplex)(batch, radii)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(out[i]), _reference(np.asarray(batch[i]), float(radii[i])), atol=1e-12)


def test_multidimensional_input_shares_the_budget():
    rng = np.random.default_rng(4)
    w = rng.normal(0.6, 0.5, size=(4, 5))
    p = project_capped_simplex(jnp.asarray(w), 3.0)
    assert p.shape == (4, 5)
    np.testing.assert_allclose(np.asarray(p).ravel(), _reference(w.ravel(), 3.0), atol=1e-12)


def test_gradient_is_finite_and_budget_preserving():
    w = jnp.array([0.5, 1.2, -0.3, 0.9, 0.7])
    # active constraint: sum(p) == R for nearby w, so d sum(p) / dw = 0
    g = jax.grad(lambda v: jnp.sum(project_capped_simplex(v, 1.0)))(w)
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-12)
    # d sum(p) / dR = 1 on the active branch
    dr = jax.grad(lambda r: jnp.sum(project_capped_simplex(w, r)))(1.0)
    np.testing.assert_allclose(float(dr), 1.0, atol=1e-12)


def test_errors():
    w = jnp.ones(3)
    with pytest.raises(ValueError, match="radius"):
        project_capped_simplex(w, -0.1)
    with pytest.raises(ValueError, match="radius"):
        project_capped_simplex(w, float("nan"))
    with pytest.raises(ValueError, match="scalar"):
        project_capped_simplex(w, jnp.ones(2))
    with pytest.raises(TypeError):
        project_capped_simplex(jnp.arange(3), 1.0)
    # empty input is fine
    assert project_capped_simplex(jnp.zeros((0,)), 1.0).shape == (0,)
