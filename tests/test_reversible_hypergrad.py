"""Reversible-learning hypergradients against reverse mode through the same loop in floating point,
and against central finite differences, in float64."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hgrad
from hgrad.reversible.hypergrad import (FixedPointOverflowError, ReversibleHparams, buffer_words_needed, init_hparams,
                                        reversible_hypergrad)
from helpers import central_difference, hlo_loop_body, random_direction

K = 16  # momentum bits: momenta below are multiples of 2^-16, so the exact loop uses them as given
T = 12


def _data(seed=0, n=10, d=4, c=3):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.integers(0, c, size=n)),
            jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.integers(0, c, size=n)))


X, Y, XV, YV = _data()


def _apply(params, x):
    return jnp.tanh(x @ params["w"] + params["b"])


def _xent(logits, y):
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])


def loss(params, hparams, t):
    idx = (jnp.arange(5, dtype=t.dtype) + 3 * t) % X.shape[0]  # a mini-batch chosen by the step
    l2 = jnp.sum(jnp.exp(hparams.loss) * params["w"] ** 2)  # per-weight L2 strengths
    return _xent(_apply(params, X[idx]), Y[idx]) + 0.5 * l2


def outer(params, hparams):
    return _xent(_apply(params, XV), YV)


def params0(hparams):
    base = jax.random.normal(jax.random.key(0), (4, 3), jnp.float64)
    return {"w": jnp.exp(hparams.init) * base, "b": jnp.zeros(3, jnp.float64)}


def _hparams():
    gammas = np.round(np.linspace(0.5, 0.95, T) * 2 ** K) / 2 ** K
    return init_hparams({"w": np.linspace(0.3, 0.1, T), "b": 0.2}, {"w": gammas, "b": 0.75},
                        loss=jnp.full((4, 3), -3.0, jnp.float64), init=jnp.asarray(-1.0, jnp.float64))


def _float_step(state, h, t):
    """The same update in floating point, written independently: a plain hgrad step function."""
    w, v = state
    g = jax.grad(loss)(w, h, t)
    rate = lambda tree, name: jax.tree.map(lambda x, p: jnp.broadcast_to(x if jnp.ndim(x) == 0 else x[t], p.shape),
                                           jax.tree.broadcast(tree, w), w)
    alpha = jax.tree.map(jnp.exp, rate(h.log_lr, "lr"))
    gamma = jax.tree.map(jax.nn.sigmoid, rate(h.logit_momentum, "mom"))
    v = jax.tree.map(lambda v, g, m: m * v - (1 - m) * g, v, g, gamma)
    w = jax.tree.map(lambda w, v, a: w + a * v, w, v, alpha)
    return w, v


def _float_hypergrad(h):
    state0 = lambda h: (params0(h), jax.tree.map(jnp.zeros_like, params0(h)))
    return hgrad.hypergrad(_float_step, lambda s, h: outer(s[0], h), state0, h, T,
                           method=hgrad.Reverse(structured=False))


@pytest.mark.parametrize("single_loop", [False, True], ids=["two_loops", "one_loop"])
@pytest.mark.parametrize("velocity_radix_bits, rtol", [(50, 1e-8), (47, 8e-8)])
def test_equals_reverse_mode_through_the_float_loop(velocity_radix_bits, rtol, single_loop):
    """The exact loop differs from the float one by up to n velocity grid units per step (gamma
    2^(16-R_v): 6e-11 at R_v = 50, the finest grid this problem's velocities fit, and 5e-10 at the
    default 47); the tolerance scales with the grid, 2^(50-R_v) times 1e-8 (measured: 4e-9 and 5e-8)."""
    h = _hparams()
    result = reversible_hypergrad(loss, outer, params0, h, T, momentum_bits=K, single_loop=single_loop,
                                  velocity_radix_bits=velocity_radix_bits)
    value, grads = _float_hypergrad(h)
    assert bool(result.exact)
    np.testing.assert_allclose(result.value, value, rtol=1e-10)
    for got, want in zip(jax.tree.leaves(result.grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("single_loop", [False, True], ids=["two_loops", "one_loop"])
def test_int32_weights_equal_reverse_mode_to_their_grid(single_loop):
    """Weights stored as int32 with 28 fractional bits: each step rounds the position update to
    2^-28 (up to half a unit, 1.9e-9, where the float64-held default rounds to 2^-41), 12 steps
    of it on weights of order 0.1-1. Measured, two loops and one loop alike: hypergradients within
    1.0e-7 (the default: 5.1e-8, from the velocity grid), the value within 8.2e-10 (5.4e-11); the
    tolerances are 4x these."""
    h = _hparams()
    result = reversible_hypergrad(loss, outer, params0, h, T, momentum_bits=K, single_loop=single_loop,
                                  weight_bits=32)
    value, grads = _float_hypergrad(h)
    assert bool(result.exact)
    np.testing.assert_allclose(result.value, value, rtol=3.3e-9)
    for got, want in zip(jax.tree.leaves(result.grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(got, want, rtol=4e-7, atol=1e-12)


@pytest.mark.parametrize("single_loop", [False, True], ids=["two_loops", "one_loop"])
def test_int32_weights_past_their_range_name_it(single_loop):
    """At the default R_w = 28 int32 weights stay below 8: an initial scale of e^2.5 (weights up to
    about 22 here) overflows at once, and the error names weight_bits; held in float64 it runs."""
    h = _hparams()._replace(init=jnp.asarray(2.5, jnp.float64))
    with pytest.raises(FixedPointOverflowError, match="exceeded 2\\^3 .*weight_bits=32"):
        reversible_hypergrad(loss, outer, params0, h, T, momentum_bits=K, single_loop=single_loop, weight_bits=32)
    assert bool(reversible_hypergrad(loss, outer, params0, h, T, momentum_bits=K, single_loop=single_loop).exact)


def test_weight_bits_other_than_32_or_64_are_rejected():
    with pytest.raises(ValueError, match="weight_bits must be 32 or 64"):
        reversible_hypergrad(loss, outer, params0, _hparams(), T, momentum_bits=K, weight_bits=16)
    with pytest.raises(ValueError, match="radix_bits must be at most 30"):
        reversible_hypergrad(loss, outer, params0, _hparams(), T, momentum_bits=K, weight_bits=32, radix_bits=41)


@pytest.mark.parametrize("weight_bits", [64, 32])
@pytest.mark.parametrize("single_loop", [False, True], ids=["two_loops", "one_loop"])
def test_matches_central_differences(single_loop, weight_bits):
    h = _hparams()
    result = reversible_hypergrad(loss, outer, params0, h, T, momentum_bits=K, single_loop=single_loop,
                                  weight_bits=weight_bits)
    direction = random_direction(h, seed=3)
    f = lambda hh: float(_float_hypergrad(hh)[0])
    fd = central_difference(f, h, direction)
    ours = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(result.grads), jax.tree.leaves(direction)))
    np.testing.assert_allclose(ours, fd, rtol=1e-6)


@pytest.mark.parametrize("single_loop", [False, True], ids=["two_loops", "one_loop"])
def test_buffer_is_near_the_entropy_bound(single_loop):
    h = init_hparams(0.1, 0.9, loss=jnp.full((4, 3), -3.0, jnp.float64), init=jnp.asarray(-1.0, jnp.float64))
    result = reversible_hypergrad(loss, outer, params0, h, 200, momentum_bits=K, single_loop=single_loop)
    bound = np.log2(1 / 0.9)
    assert bool(result.exact)
    assert float(result.bits_per_weight_per_step) <= 1.1 * bound + 0.01
    assert type(result.buffer_capacity_bits) is int and result.buffer_capacity_bits >= float(result.buffer_bits)


def test_momentum_outside_the_open_unit_interval_is_rejected():
    for g in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            init_hparams(0.1, g)


@pytest.mark.parametrize("name, bits", [("radix_bits", 51), ("velocity_radix_bits", 7), ("radix_bits", 60)])
def test_radix_outside_the_exact_range_is_rejected(name, bits):
    with pytest.raises(ValueError, match=f"{name} must be between 8 and 50"):
        reversible_hypergrad(loss, outer, params0, _hparams(), T, momentum_bits=K, **{name: bits})


@pytest.mark.parametrize("single_loop", [False, True], ids=["two_loops", "one_loop"])
def test_a_velocity_past_its_range_names_the_step_and_the_radix(single_loop):
    """Velocity terms are held below 2^(51 - R_v) = 2 at R_v = 50: gradient entries of about 8 at
    momentum 0.5 make (1 - gamma) grad about 4 at the first step, and the error says which radix to lower."""
    h = _hparams()
    with pytest.raises(FixedPointOverflowError, match="step 0 of .*velocity_radix_bits=50"):
        reversible_hypergrad(lambda p, hh, t: 4.0 * jnp.sum(p["w"]) / 0.5 + loss(p, hh, t), outer, params0, h, T,
                             momentum_bits=K, single_loop=single_loop, velocity_radix_bits=50)


@pytest.mark.parametrize("single_loop", [False, True], ids=["two_loops", "one_loop"])
def test_fixed_point_overflow_is_reported_with_its_step(single_loop):
    h = init_hparams(50.0, 0.5, loss=jnp.full((4, 3), 6.0, jnp.float64), init=jnp.asarray(0.0, jnp.float64))
    with pytest.raises((FixedPointOverflowError, hgrad.DivergenceError), match="step"):
        reversible_hypergrad(loss, outer, params0, h, 40, momentum_bits=K, single_loop=single_loop)


@pytest.mark.parametrize("single_loop", [False, True], ids=["two_loops", "one_loop"])
def test_nonfinite_loss_names_its_step(single_loop):
    def bad_loss(params, hparams, t):
        return loss(params, hparams, t) + jnp.where(t == 5, jnp.nan, 0.0)

    with pytest.raises(hgrad.DivergenceError, match="step 5"):
        reversible_hypergrad(bad_loss, outer, params0, _hparams(), T, momentum_bits=K, single_loop=single_loop)


def _loss_with_fresh_noise():
    """A loss whose gradient differs between the forward and the reverse evaluation at the same
    weights: a tilt drawn anew on the host at every call, as a loss drawing fresh randomness, or a
    nondeterministic GPU reduction, would differ."""
    rng = np.random.default_rng(0)

    def noisy(params, hparams, t):
        tilt = jax.pure_callback(lambda t: np.float64(1e-9 * rng.normal()), jax.ShapeDtypeStruct((), jnp.float64), t)
        return loss(params, hparams, t) + tilt * jnp.sum(params["w"])

    return noisy


@pytest.mark.parametrize("single_loop", [False, True], ids=["two_loops", "one_loop"])
def test_a_reversal_that_is_not_exact_is_an_error(single_loop):
    h = _hparams()
    with pytest.raises(hgrad.ReversalError, match="not restore w_0.*deterministic"):
        reversible_hypergrad(_loss_with_fresh_noise(), outer, params0, h, T, momentum_bits=K, single_loop=single_loop)
    words = buffer_words_needed(h, params0(h), T, K)
    run = jax.jit(lambda hh: reversible_hypergrad(_loss_with_fresh_noise(), outer, params0, hh,
                                                  T, momentum_bits=K, single_loop=single_loop, buffer_words=words).grads)
    with pytest.raises(Exception, match="not restore w_0"):
        jax.block_until_ready(run(h))


def test_traced_momenta_need_an_explicit_buffer_size():
    h = _hparams()
    with pytest.raises(ValueError, match="pass buffer_words"):
        jax.jit(lambda hh: reversible_hypergrad(loss, outer, params0, hh, T, momentum_bits=K).value)(h)


def test_differentiating_the_hypergradient_is_a_clear_error():
    # Rounding at every step has derivative 0: JAX would return a wrong second derivative silently
    # (before the check, d/dh of sum(dE/dlog lr) came out with a zero momentum part).
    h = _hparams()
    words = buffer_words_needed(h, params0(h), T, K)

    def total(hh):
        return sum(jnp.sum(x) for x in jax.tree.leaves(
            reversible_hypergrad(loss, outer, params0, hh, T, momentum_bits=K, buffer_words=words).grads.log_lr))

    assert np.isfinite(float(total(h)))
    for differentiate in (jax.grad, lambda f: jax.jit(jax.grad(f)), lambda f: lambda x: jax.jvp(f, (x,), (x,))):
        with pytest.raises(TypeError, match="cannot be differentiated.*hgrad.hypergrad"):
            differentiate(total)(h)


@pytest.mark.parametrize("single_loop", [False, True], ids=["two_loops", "one_loop"])
def test_under_jit_with_an_explicit_buffer_size(single_loop):
    h = _hparams()
    words = buffer_words_needed(h, params0(h), T, K)
    run = jax.jit(lambda hh, fn: reversible_hypergrad(fn, outer, params0, hh, T, momentum_bits=K, single_loop=single_loop,
                                                       buffer_words=words)[:2], static_argnums=1)
    eager = reversible_hypergrad(loss, outer, params0, h, T, momentum_bits=K, single_loop=single_loop)
    value, grads = run(h, loss)
    np.testing.assert_array_equal(value, eager.value)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(eager.grads)):
        np.testing.assert_array_equal(a, b)

    def bad_loss(params, hparams, t):  # the failure is found by the per-step rerun inside the jit
        return loss(params, hparams, t) + jnp.where(t == 5, jnp.nan, 0.0)

    with pytest.raises(Exception, match="step 5"):
        jax.block_until_ready(run(h, bad_loss))


@pytest.mark.parametrize("single_loop", [False, True], ids=["two_loops", "one_loop"])
def test_under_jit_traced_with_64_bit_types_off(single_loop):
    """The sweeps switch 64-bit types on inside a caller's jit traced with them off (a float32
    problem): same result as the plain call, and a failure still names its step (the per-step
    rerun that finds the step once failed to lower there)."""
    if not single_loop and jax.default_backend() != "cpu":
        pytest.skip("two loops did not reverse this float32 problem exactly on an H100 (why single_loop "
                    "defaults to True there)")
    with jax.enable_x64(False):
        x, y = jnp.asarray(np.asarray(X), jnp.float32), jnp.asarray(np.asarray(Y), jnp.int32)
        p32 = {"w": jnp.asarray(np.linspace(-1, 1, 12).reshape(4, 3), jnp.float32), "b": jnp.zeros(3, jnp.float32)}
        h = init_hparams(0.1, 0.9, loss=jnp.float32(-2.0), num_steps=T, dtype=jnp.float32)
        words = buffer_words_needed(h, p32, T, K)

        def loss32(params, hparams, t):
            return _xent(_apply(params, x), y) + 0.5 * jnp.exp(hparams.loss) * jnp.sum(params["w"] ** 2)

        def outer32(params, hparams):
            return _xent(_apply(params, x[:5]), y[:5])

        def bad_loss(params, hparams, t):
            return loss32(params, hparams, t) + jnp.where(t == 5, jnp.nan, 0.0)

        run = jax.jit(lambda hh, fn: reversible_hypergrad(fn, outer32, p32, hh, T, momentum_bits=K, single_loop=single_loop,
                                                           buffer_words=words)[:2], static_argnums=1)
        eager = reversible_hypergrad(loss32, outer32, p32, h, T, momentum_bits=K, single_loop=single_loop)
        value, grads = run(h, loss32)
        assert value.dtype == jnp.float32
        np.testing.assert_array_equal(value, eager.value)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(eager.grads)):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(Exception, match="step 5"):
            jax.block_until_ready(run(h, bad_loss))


def _conv_net(params, x):
    h = jax.lax.conv_general_dilated(x, params["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.softplus(h + params["c"])
    h = (h - h.mean(axis=(1, 2, 3), keepdims=True)) * jax.lax.rsqrt(h.var(axis=(1, 2, 3), keepdims=True) + 1e-5)
    return h.reshape(h.shape[0], -1) @ params["w"]


@pytest.mark.parametrize("single_loop", [False, True], ids=["two_loops", "one_loop"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_a_convolutional_float_model_reverses_exactly(dtype, single_loop):
    """Exact reversal needs the reverse sweep's gradient (the primal of a forward-over-reverse product)
    to equal the forward sweep's bit for bit, which nothing in XLA promises for a model more varied than
    an MLP: a convolution, softplus and a normalization, in float32 and float64, with an L2 term and
    mini-batches picked by the step. A difference would raise ReversalError."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(12, 6, 6, 2)), dtype)
    y = jnp.asarray(rng.integers(0, 3, size=12))
    p0 = {"k": jnp.asarray(rng.normal(size=(3, 3, 2, 4)) / 4, dtype), "c": jnp.zeros(4, dtype),
          "w": jnp.asarray(rng.normal(size=(144, 3)) / 12, dtype)}

    def conv_loss(params, hparams, t):
        idx = (jnp.arange(4, dtype=t.dtype) + 4 * t) % 12
        l2 = sum(jnp.sum(v ** 2) for v in jax.tree.leaves(params))
        return _xent(_conv_net(params, x[idx]), y[idx]) + 0.5 * jnp.exp(hparams.loss) * l2

    def conv_outer(params, hparams):
        return _xent(_conv_net(params, x), y)

    h = init_hparams(0.3, 0.9, loss=jnp.asarray(-4.0, dtype), num_steps=T, dtype=dtype)
    result = reversible_hypergrad(conv_loss, conv_outer, p0, h, T, momentum_bits=K, single_loop=single_loop)
    assert bool(result.exact) and np.isfinite(float(result.value))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(result.grads))


def test_one_loop_and_two_loops_agree():
    """Both programs run the same exact arithmetic; they may differ only where XLA compiles the
    gradient differently (in its last bits), which moves the exact trajectory by a grid unit or so."""
    h = _hparams()
    two = reversible_hypergrad(loss, outer, params0, h, T, momentum_bits=K, single_loop=False)
    one = reversible_hypergrad(loss, outer, params0, h, T, momentum_bits=K, single_loop=True)
    default = reversible_hypergrad(loss, outer, params0, h, T, momentum_bits=K)
    assert bool(one.exact) and bool(two.exact)
    assert float(one.buffer_bits) == float(two.buffer_bits) and one.buffer_capacity_bits == two.buffer_capacity_bits
    np.testing.assert_allclose(one.value, two.value, rtol=1e-12)
    for a, b, c in zip(jax.tree.leaves(one.grads), jax.tree.leaves(two.grads), jax.tree.leaves(default.grads)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
        if jax.default_backend() == "cpu":  # the default there is two loops
            np.testing.assert_array_equal(b, c)


def test_one_loop_traces_the_loss_once_for_both_sweeps():
    """A loss that reads Python state while it is traced still reverses exactly in one loop: the
    gradient is traced, and compiled, once for both directions."""
    traces = []

    def changing(params, hparams, t):
        traces.append(t)
        return loss(params, hparams, t) + (1e-9 if len(traces) > 1 else 0.0) * jnp.sum(params["w"])

    assert bool(reversible_hypergrad(changing, outer, params0, _hparams(), T, momentum_bits=K, single_loop=True).exact)
    assert len(traces) == 1


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64])
@pytest.mark.parametrize("radix_bits", [41, 47])
def test_fixed_point_to_model_float_has_the_bits_of_scaling_in_float64_first(dtype, radix_bits):
    """The conversion to the model's dtype converts first and scales in that dtype where its range
    allows it (float16's does not: it keeps scaling first); either way, the same bits as scaling
    the integer in float64 and rounding once, for integers up to the exact range's 2^51."""
    from hgrad.reversible import hypergrad as R
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = np.concatenate([rng.integers(-2 ** 51, 2 ** 51, size=2000), rng.integers(-2 ** 12, 2 ** 12, size=2000),
                            [0, 1, -1, 2 ** 51 - 1, -(2 ** 51 - 1)]]).astype(np.float64)
        problem = R._Problem(None, None, [], jnp.dtype(dtype))
        got = R._model_float(problem, jnp.asarray(x), radix_bits)
        want = jnp.asarray(x * 2.0 ** -radix_bits).astype(dtype)
        np.testing.assert_array_equal(np.asarray(got.astype(jnp.float64)), np.asarray(want.astype(jnp.float64)))
        y, scale = R._model_float_parts(problem, jnp.asarray(x), radix_bits)
        assert (float(scale) == 1.0) == (jnp.dtype(dtype) == jnp.float16)


def _two_layer(params, x):
    return jnp.tanh(x @ params["w0"]) @ params["w1"] + params["b"]


def _two_layer_loss(params, hparams, t):
    idx = (jnp.arange(5, dtype=t.dtype) + 3 * t) % X.shape[0]
    return _xent(_two_layer(params, X[idx]), Y[idx]) + 0.5 * jnp.exp(hparams.loss) * jnp.sum(params["w0"] ** 2)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a property of XLA:CPU's compiled program")
@pytest.mark.parametrize("weight_bits", [64, 32])
@pytest.mark.parametrize("steps, momentum", [(T, 0.9), (40, 0.5)], ids=["heads only", "with a stack"])
def test_the_two_loops_update_their_state_in_place_without_copies(weight_bits, steps, momentum):
    """Each step of either sweep writes the weights, velocities, heads and adjoints where the old ones
    were, with no copy of any array: the decay's digit comes from the new head and its inverse's
    head from the restored velocity, and the values that several operations read pass through
    hgrad.reversible.materialize, so that XLA orders those reads before the writes (a copy costs
    about ten element-wise passes on a CPU). Copies of scalars (counters) are allowed."""
    from hgrad.reversible import hypergrad as R

    rng = np.random.default_rng(0)
    p0 = {"w0": jnp.asarray(rng.normal(size=(4, 6)) / 2), "w1": jnp.asarray(rng.normal(size=(6, 3)) / 3),
          "b": jnp.zeros(3, jnp.float64)}
    h = init_hparams(0.1, momentum, loss=jnp.asarray(-3.0, jnp.float64), num_steps=steps)
    words = buffer_words_needed(h, p0, steps, K)
    assert (words > 0) == (momentum == 0.5)
    with jax.enable_x64(True):
        config = (_two_layer_loss, lambda p, hh: _xent(_two_layer(p, XV), YV), None, steps,
                  R.DEFAULT_RADIX_BITS[weight_bits], 47, K, words, weight_bits)
        forward = R._forward.lower(config, h, p0).compile()  # noqa: SLF001
        states, _ = forward(h, p0)
        reverse = R._reverse.lower(config, h, p0, states).compile()  # noqa: SLF001
    for name, compiled in (("forward", forward), ("reverse", reverse)):
        copied = re.findall(r"= (\w+\[[\d,]+\])\S* copy\(", hlo_loop_body(compiled.as_text()))
        assert not copied, f"the {name} sweep copies {copied} at every step"
