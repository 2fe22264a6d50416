"""Exact reversal of fixed-point SGD with momentum: forward then backward returns the start bit for
bit, for random shapes, seeds, schedules and momenta."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hgrad.reversible import buffer as B
from hgrad.reversible import exact as E


def _problem(seed, n):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n)) / np.sqrt(n)
    return jnp.asarray(a @ a.T + 0.1 * np.eye(n)), jnp.asarray(rng.normal(size=n)), rng


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), n=st.integers(1, 12), steps=st.integers(1, 40),
       gamma_low=st.floats(0.01, 0.98), radix_bits=st.integers(20, 41), velocity_radix_bits=st.integers(20, 45),
       momentum_bits=st.integers(B.MIN_MOMENTUM_BITS, B.MAX_MOMENTUM_BITS), compact=st.booleans())
def test_forward_then_reverse_is_bit_exact(seed, n, steps, gamma_low, radix_bits, velocity_radix_bits, momentum_bits,
                                           compact):
    """Weights held in float64 or stored as int32 (``compact``, with at most 24 fractional bits: a range of 128)."""
    if compact:
        radix_bits = min(radix_bits, 24)
    hess, b, rng = _problem(seed, n)
    alphas = rng.uniform(0.01, 0.5, size=(steps, n))
    gammas = rng.uniform(gamma_low, 0.99, size=(steps, n))
    kw = dict(momentum_bits=momentum_bits, radix_bits=radix_bits, velocity_radix_bits=velocity_radix_bits)
    with jax.enable_x64(True):
        def grad_fn(w_int):
            w = E.to_float(w_int, radix_bits)
            return hess @ w + b + jnp.tanh(w)

        w0, _ = E.to_fixed(jnp.asarray(rng.normal(size=n)), radix_bits)
        if compact:
            w0, narrow = E.compact(w0)
            assert w0.dtype == jnp.int32 and not bool(narrow)
        v0, _ = E.to_fixed(jnp.asarray(rng.normal(size=n)) * 0.1, velocity_radix_bits)
        ns = [E.momentum_numerator(g, momentum_bits) for g in gammas]
        capacity = B.words_needed(np.min(np.asarray(ns), axis=1), momentum_bits)
        state = E.ExactState(w0, v0, B.empty(n, capacity))
        forward = jax.jit(lambda s, a, m: E.step(s, grad_fn(s.w), a, m, **kw))
        backward = jax.jit(lambda s, a, m: E.unstep(s, grad_fn, a, m, **kw))
        overflow = False
        for t in range(steps):
            state, bad = forward(state, alphas[t], ns[t])
            overflow |= bool(jnp.any(bad))
        assert not overflow
        for t in reversed(range(steps)):
            state, _, bad = backward(state, alphas[t], ns[t])
            assert not bool(jnp.any(bad))
        assert state.w.dtype == w0.dtype
        np.testing.assert_array_equal(np.asarray(state.w), np.asarray(w0))
        np.testing.assert_array_equal(np.asarray(state.v), np.asarray(v0))
        assert np.all(np.asarray(state.buffer.count) == 0)
        assert np.all(np.asarray(state.buffer.head) == B.HEAD_LOW)


def test_exact_step_follows_the_float_update_to_the_grid_resolution():
    """v' = g v - (1-g) grad, w' = w + a v' with g = n/2^k: the fixed-point result is within
    n + 2 grid units of the same update in float64 (the decay's low digits are taken from the
    buffer, up to n units; each rounding adds at most one)."""
    radix_bits, velocity_radix_bits, k = 41, 47, 16
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        w, v, grad = (jnp.asarray(rng.normal(size=50)) for _ in range(3))
        n = E.momentum_numerator(0.9, k)
        gamma = float(n) / 2 ** k
        state = E.ExactState(E.to_fixed(w, radix_bits)[0], E.to_fixed(v, velocity_radix_bits)[0], B.empty(50, 4))
        new, bad = E.step(state, grad, 0.3, n, momentum_bits=k, radix_bits=radix_bits,
                          velocity_radix_bits=velocity_radix_bits)
        v_ref = gamma * v - (1 - gamma) * grad
        tol_v = (float(n) + 2) * 2.0 ** -velocity_radix_bits
        np.testing.assert_allclose(E.to_float(new.v, velocity_radix_bits), v_ref, rtol=0, atol=tol_v)
        np.testing.assert_allclose(E.to_float(new.w, radix_bits), w + 0.3 * v_ref, rtol=0,
                                   atol=0.3 * tol_v + 2 * 2.0 ** -radix_bits)
        assert not bool(jnp.any(bad)) and abs(gamma - 0.9) < 2 ** -k


def test_fixed_point_overflow_is_flagged():
    with jax.enable_x64(True):
        state = E.ExactState(*(E.to_fixed(jnp.ones(3), 40)[0] for _ in range(2)), B.empty(3, 4))
        new, bad = E.step(state, jnp.full(3, 1e10), 1.0, E.momentum_numerator(0.5, 16),
                          momentum_bits=16, radix_bits=40, velocity_radix_bits=40)
        assert bool(jnp.all(bad))
        # the gradient term marks the velocity, not the weights: the next loss stays finite, so
        # the error raised names the overflow rather than a divergence
        assert bool(jnp.all(jnp.isnan(new.v))) and bool(jnp.all(jnp.isfinite(new.w)))
        assert bool(E.to_fixed(jnp.asarray([2.0 ** 30]), 40)[1])
        assert bool(E.to_fixed(jnp.asarray([np.nan]), 40)[1])


def test_int32_weights_step_like_float64_held_ones_and_flag_their_range():
    """The same step with the weights stored as int32 gives the same integers, and a weight that
    reaches 2^31 (8 at R_w = 28) is flagged, where held in float64 it would not be."""
    radix_bits, velocity_radix_bits, k = 28, 47, 16
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        w = jnp.asarray(np.concatenate([rng.normal(size=20), [7.99]]))
        v = jnp.asarray(np.concatenate([rng.normal(size=20) * 0.1, [0.0]]))
        grad = jnp.asarray(np.concatenate([rng.normal(size=20), [-1.0]]))
        held = E.ExactState(E.to_fixed(w, radix_bits)[0], E.to_fixed(v, velocity_radix_bits)[0], B.empty(21, 1))
        stored = held._replace(w=E.compact(held.w)[0])
        kw = dict(momentum_bits=k, radix_bits=radix_bits, velocity_radix_bits=velocity_radix_bits)
        n = E.momentum_numerator(0.9, k)
        new_held, bad_held = E.step(held, grad, 0.5, n, **kw)
        new_stored, bad_stored = E.step(stored, grad, 0.5, n, **kw)
        assert new_stored.w.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(new_stored.w)[:20], np.asarray(new_held.w)[:20])
        np.testing.assert_array_equal(np.asarray(new_stored.v), np.asarray(new_held.v))
        assert not bool(jnp.any(bad_held))
        np.testing.assert_array_equal(np.asarray(bad_stored), np.arange(21) == 20)  # 7.99 + 0.5 * 0.1 * 1
        assert bool(E.compact(E.to_fixed(jnp.asarray([8.0]), radix_bits)[0])[1])
        assert not bool(E.compact(E.to_fixed(jnp.asarray([-7.99]), radix_bits)[0])[1])
