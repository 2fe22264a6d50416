"""The information buffer: push and pop are exact inverses, and it stores close to the entropy."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hgrad.reversible import buffer as B

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def programs(draw):
    n = draw(st.integers(1, 5))
    steps = draw(st.integers(1, 60))
    bits = draw(st.integers(2, 32))  # gamma = n / 2^bits with 2 <= n < 2^bits
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return n, steps, bits, seed


def _as_tuple(buf):
    return (np.asarray(buf.head), np.asarray(buf.words), np.asarray(buf.count), bool(buf.overflow))


@SETTINGS
@given(programs())
def test_momentum_like_program_reverses_bit_for_bit(program):
    """Forward: push r over 2^k, pop p over n (the velocity decay); reverse: the exact inverses,
    in reverse order, restore every buffer state and return the same symbols."""
    n_weights, steps, bits, seed = program
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        buf = B.empty(n_weights, capacity=steps * bits // 32 + 4)
        history, symbols = [_as_tuple(buf)], []
        ns = rng.integers(2, min(2 ** bits, 2 ** 31 + 1), size=(steps, n_weights))
        for t in range(steps):
            r = jnp.asarray(rng.integers(0, 2 ** bits, size=n_weights, dtype=np.uint64))
            buf = B.push_uniform(buf, r, bits)
            buf, p = B.pop_near_uniform(buf, jnp.asarray(ns[t], jnp.uint64))
            assert np.all(np.asarray(p) < ns[t])
            symbols.append((np.asarray(r), np.asarray(p)))
            history.append(_as_tuple(buf))
        assert not bool(buf.overflow)
        for t in reversed(range(steps)):
            r, p = symbols[t]
            buf = B.push_near_uniform(buf, jnp.asarray(p), jnp.asarray(ns[t], jnp.uint64))
            buf, r_back = B.pop_uniform(buf, bits)
            np.testing.assert_array_equal(np.asarray(r_back), r)
            head, words, count, overflow = history[t]
            np.testing.assert_array_equal(np.asarray(buf.head), head)
            np.testing.assert_array_equal(np.asarray(buf.count), count)
            live = np.arange(words.shape[0])[:, None] < count[None, :]
            np.testing.assert_array_equal(np.asarray(buf.words)[live], words[live])
        assert np.all(np.asarray(buf.head) == B.HEAD_LOW) and np.all(np.asarray(buf.count) == 0)


@SETTINGS
@given(st.integers(0, 2 ** 31 - 1), st.integers(2, 2 ** 31))
def test_pop_then_push_is_identity_on_any_nonempty_state(seed, n):
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        buf = B.empty(8, capacity=4)
        for _ in range(3):
            buf = B.push_uniform(buf, jnp.asarray(rng.integers(0, 2 ** 32, size=8, dtype=np.uint64)), 32)
        before = _as_tuple(buf)
        popped, s = B.pop_near_uniform(buf, jnp.uint64(n))
        back = B.push_near_uniform(popped, s, jnp.uint64(n))
        np.testing.assert_array_equal(np.asarray(back.head), before[0])
        np.testing.assert_array_equal(np.asarray(back.count), before[2])


def test_stored_bits_meet_the_entropy_bound():
    """Decay by gamma = n/2^24 stores log2(1/gamma) bits per weight and step, within 0.01 (the
    size's accounting, 32 words + log2(head), is exact to within a bit or so over the whole run)."""
    rng = np.random.default_rng(0)
    k, steps, weights = 24, 400, 64
    with jax.enable_x64(True):
        for gamma in [0.5, 0.9, 0.98, 0.99]:
            n = round(gamma * 2 ** k)
            buf = B.empty(weights, capacity=steps * 2)
            step = jax.jit(lambda b, r: B.pop_near_uniform(B.push_uniform(b, r, k), jnp.uint64(n))[0])
            for _ in range(steps):
                buf = step(buf, jnp.asarray(rng.integers(0, 2 ** k, size=weights, dtype=np.uint64)))
            per_step = float(jnp.mean(B.size_in_bits(buf))) / steps
            bound = np.log2(2 ** k / n)
            assert bound - 2 / steps <= per_step <= bound + 0.01, (gamma, per_step, bound)


def test_overflow_and_underflow_are_flagged():
    with jax.enable_x64(True):
        buf = B.empty(2, capacity=1)
        for _ in range(3):
            buf = B.push_uniform(buf, jnp.zeros(2, jnp.uint64), 32)
        assert bool(buf.overflow)
        buf, _ = B.pop_uniform(B.empty(2, capacity=1), 32)
        assert bool(buf.overflow)
