"""The information buffer: decay and its inverse are exact on every state, and the buffer stores
the entropy bound to within the floor's rounding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hgrad.reversible import buffer as B

SETTINGS = settings(max_examples=40, deadline=None)
decay = jax.jit(B.decay, static_argnums=3)
undecay = jax.jit(B.undecay, static_argnums=3)
# As the two-loop program runs them: each takes its digit, or its head, from what the other half of
# the update has written (``ordered``, a predicate true at run time), which must change no bit.
ordered_decay = jax.jit(lambda b, v, n, k, true: B.decay(b, v, n, k, ordered=true), static_argnums=3)
ordered_undecay = jax.jit(lambda b, v, n, k, true: B.undecay(b, v, n, k, ordered=true), static_argnums=3)


def _as_tuple(buf):
    return (np.asarray(buf.head), np.asarray(buf.words), int(buf.count), bool(buf.overflow))


@SETTINGS
@given(n_weights=st.integers(1, 5), steps=st.integers(1, 80), k=st.integers(B.MIN_MOMENTUM_BITS, B.MAX_MOMENTUM_BITS),
       scale=st.integers(0, 51), seed=st.integers(0, 2 ** 31 - 1), ordered=st.booleans())
def test_decay_then_undecay_restores_every_state_bit_for_bit(n_weights, steps, k, scale, seed, ordered):
    """Random velocities (integers held in float64, any sign, magnitudes up to 2^51) and momenta n/2^k per weight and step
    (so heads grow at different rates and some spill early): undoing the decays in reverse order
    restores every buffer state and velocity, and the run fills exactly the capacity that
    words_needed counted. Both ways of computing the digits (ordered or not) are checked."""
    rng = np.random.default_rng(seed)
    true = jnp.asarray(True)
    forward, backward = ((lambda *a: ordered_decay(*a, true)), (lambda *a: ordered_undecay(*a, true))) if ordered \
        else (decay, undecay)
    with jax.enable_x64(True):
        ns = rng.integers(2, 2 ** k, size=(steps, n_weights)).astype(np.float64)
        capacity = B.words_needed(np.min(ns, axis=1), k)
        buf = B.empty(n_weights, capacity)
        v = jnp.asarray(rng.integers(-2 ** scale, 2 ** scale, size=n_weights, endpoint=True), jnp.float64)
        history = [(_as_tuple(buf), np.asarray(v))]
        for t in range(steps):
            buf, v = forward(buf, v, jnp.asarray(ns[t]), k)
            history.append((_as_tuple(buf), np.asarray(v)))
        assert not bool(buf.overflow), "the capacity from words_needed was too small"
        assert int(buf.count) == capacity, (int(buf.count), capacity)
        for t in reversed(range(steps)):
            buf, v = backward(buf, v, jnp.asarray(ns[t]), k)
            (head, words, count, overflow), v_then = history[t]
            np.testing.assert_array_equal(np.asarray(v), v_then)
            np.testing.assert_array_equal(np.asarray(buf.head), head)
            np.testing.assert_array_equal(np.asarray(buf.count), count)
            np.testing.assert_array_equal(np.asarray(buf.words)[:count], words[:count])
        assert np.all(np.asarray(buf.head) == B.HEAD_LOW) and int(buf.count) == 0 and int(buf.steps) == 0
        assert not bool(buf.overflow)


@SETTINGS
@given(st.integers(0, 2 ** 31 - 1), st.integers(2, 2 ** 31 - 1))
def test_divmod_floor_equals_integer_division(seed, n):
    """Integers below 2^51 held in float64 (the documented range, which every caller keeps), against
    NumPy's int64 floor division, including the ends of the range and the values next to multiples
    of n."""
    rng = np.random.default_rng(seed)
    top = 2 ** 51 - 1
    with jax.enable_x64(True):
        x = np.concatenate([rng.integers(-top, top, size=50, endpoint=True, dtype=np.int64),
                            rng.integers(-2 ** 40, 2 ** 40, size=50, dtype=np.int64),
                            (top // n) * n + np.arange(-2, 2), -(top // n) * n + np.arange(-2, 2),
                            np.asarray([-top, top, 0, -1, n, -n, n - 1, 1 - n], np.int64)])
        for divisor in (jnp.float64(n), jnp.full(x.shape, float(n))):  # a scalar, or per element
            q, r = B.divmod_floor(jnp.asarray(x, jnp.float64), divisor)
            np.testing.assert_array_equal(np.asarray(q).astype(np.int64), x // n)
            np.testing.assert_array_equal(np.asarray(r).astype(np.int64), x % n)


def test_stored_bits_meet_the_entropy_bound():
    """Decay by gamma = n/2^16 stores log2(1/gamma) bits per weight and step: never more than the
    bound plus the floor's log2(1 + 1/n), never less than the bound minus the head's last bit."""
    rng = np.random.default_rng(0)
    k, steps, weights = 16, 400, 64
    with jax.enable_x64(True):
        for gamma in [0.5, 0.9, 0.98, 0.99]:
            n = round(gamma * 2 ** k)
            buf = B.empty(weights, B.words_needed(np.full(steps, n), k))
            v = jnp.asarray(rng.integers(-2 ** 50, 2 ** 50, size=weights), jnp.float64)
            step = jax.jit(lambda b, v: B.decay(b, v, jnp.float64(n), k))
            for _ in range(steps):
                buf, v = step(buf, v)
            per_step = np.asarray(B.size_in_bits(buf)) / steps
            bound = np.log2(2 ** k / n)
            assert not bool(buf.overflow)
            assert np.all(per_step <= B.step_bits(n, k) + 1e-12), (gamma, per_step.max(), bound)
            assert np.all(per_step >= bound - 1 / steps), (gamma, per_step.min(), bound)


@pytest.mark.parametrize("capacity", [0, 1])
def test_a_full_stack_is_flagged(capacity):
    with jax.enable_x64(True):
        buf, v = B.empty(2, capacity=capacity), jnp.zeros(2, jnp.float64)
        for _ in range(100):  # 100 bits at gamma = 1/2 need 6 words
            buf, v = decay(buf, v, jnp.float64(2 ** 15), 16)
        assert bool(buf.overflow)


def test_no_rows_while_the_heads_hold_the_run():
    """At gamma = 0.9 a head holds 16 bits on top of the empty buffer's 2^16: 100 decays (15.2 bits)
    need no row, and a buffer without rows reverses them exactly; 106 decays need one."""
    n = round(0.9 * 2 ** 16)
    assert B.words_needed(np.full(100, n), 16) == 0 and B.words_needed(np.full(106, n), 16) == 1
    with jax.enable_x64(True):
        buf = B.empty(3, 0)
        assert buf.words.shape == (0, 3) and B.memory_bytes(buf) == 3 * 4 + 4 + 4 + 8 + 1
        v0 = jnp.asarray([-(2 ** 40) - 3, 0, 2 ** 45 + 7], jnp.float64)
        v = v0
        for _ in range(100):
            buf, v = decay(buf, v, jnp.float64(n), 16)
        assert not bool(buf.overflow) and int(buf.count) == 0
        for _ in range(100):
            buf, v = undecay(buf, v, jnp.float64(n), 16)
        np.testing.assert_array_equal(np.asarray(v), np.asarray(v0))
        assert np.all(np.asarray(buf.head) == B.HEAD_LOW)


@SETTINGS
@given(steps=st.integers(1, 600), low=st.sampled_from([2, 1000, 30000, 60000]), seed=st.integers(0, 2 ** 31 - 1))
def test_lower_numerators_never_need_fewer_words(steps, low, seed):
    """Faster-growing heads spill no later: the margin hgrad.reversible.buffer_words_needed relies on."""
    rng = np.random.default_rng(seed)
    n = rng.integers(low, 2 ** 16, size=steps)
    lower = np.maximum(n - rng.integers(0, 3, size=steps), 2)
    assert B.words_needed(lower, 16) >= B.words_needed(n, 16)
