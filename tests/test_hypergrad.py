"""Every hypergradient method against closed forms, finite differences and each other (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hgrad
import hgrad.dynamics
from helpers import assert_trees_close, central_difference, random_direction, tree_dot
from problems import T, Ridge, SmallMLP

EXACT_METHODS = [
    hgrad.Reverse(),
    hgrad.Reverse(structured=False),
    hgrad.Checkpointed(),
    hgrad.Checkpointed(every=7),  # 30 = 4 * 7 + 2: a remainder segment
    hgrad.Checkpointed(every=4, structured=False),
    hgrad.Forward(),
    hgrad.Forward(chunk_size=1),
    hgrad.Truncated(steps=10_000),  # longer than the loop: exactly Reverse
]


@pytest.fixture(scope="module")
def ridge():
    return Ridge()


@pytest.fixture(scope="module")
def mlp():
    return SmallMLP()


@pytest.mark.parametrize("method", EXACT_METHODS, ids=str)
@pytest.mark.parametrize("generic_step", [False, True], ids=["dynamics", "plain-step"])
def test_ridge_matches_closed_form(ridge, method, generic_step):
    h = ridge.hparams()
    step = ridge.plain_step if generic_step else ridge.dynamics
    value, grads = hgrad.hypergrad(step, ridge.outer, ridge.w0, h, T, method=method)
    ref_value, ref_grads = jax.value_and_grad(ridge.closed_form_objective)(h)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    assert_trees_close(grads, ref_grads, rtol=1e-9, atol=1e-13)
    assert abs(float(grads.log_lr)) > 1e-4 and abs(float(grads.loss)) > 1e-4  # not trivially zero


def test_ridge_closed_form_matches_finite_differences(ridge):
    h = ridge.hparams()
    grads = jax.grad(ridge.closed_form_objective)(h)
    for seed in range(3):
        d = random_direction(h, seed)
        fd = central_difference(ridge.closed_form_objective, h, d)
        np.testing.assert_allclose(tree_dot(grads, d), fd, rtol=1e-7)


def test_ridge_reverse_matches_finite_differences_of_the_loop(ridge):
    h = ridge.hparams()
    f = lambda h: hgrad.hypergrad(ridge.dynamics, ridge.outer, ridge.w0, h, T)[0]
    _, grads = hgrad.hypergrad(ridge.dynamics, ridge.outer, ridge.w0, h, T)
    for seed in range(3):
        d = random_direction(h, seed)
        np.testing.assert_allclose(tree_dot(grads, d), central_difference(f, h, d), rtol=1e-7)


@pytest.mark.parametrize("method", EXACT_METHODS, ids=str)
def test_mlp_momentum_methods_agree(mlp, method):
    h = mlp.hparams()
    ref = hgrad.hypergrad(mlp.dynamics, mlp.outer, mlp.init_state, h, mlp.num_steps,
                          method=hgrad.Reverse(structured=False))
    value, grads = hgrad.hypergrad(mlp.dynamics, mlp.outer, mlp.init_state, h, mlp.num_steps,
                                   method=method)
    np.testing.assert_allclose(value, ref[0], rtol=1e-13)
    assert_trees_close(grads, ref[1], rtol=1e-8, atol=1e-13)


def test_mlp_momentum_matches_finite_differences(mlp):
    h = mlp.hparams()
    f = lambda h: hgrad.hypergrad(mlp.dynamics, mlp.outer, mlp.init_state, h, mlp.num_steps)[0]
    _, grads = hgrad.hypergrad(mlp.dynamics, mlp.outer, mlp.init_state, h, mlp.num_steps)
    # every kind of hyperparameter gets a non-trivial gradient
    for leaf in (grads.log_lr, grads.logit_momentum[1:], grads.loss["log_l2"], grads.loss["log_init_scale"]):
        assert jnp.all(jnp.abs(leaf) > 1e-7)
    for seed in range(4):
        d = random_direction(h, seed)
        np.testing.assert_allclose(tree_dot(grads, d), central_difference(f, h, d), rtol=1e-6)
    # and along single coordinates of the schedules
    for name, index in (("log_lr", 0), ("log_lr", 7), ("logit_momentum", 5)):
        d = jax.tree.map(jnp.zeros_like, h)
        d = d._replace(**{name: getattr(d, name).at[index].set(1.0)})
        np.testing.assert_allclose(getattr(grads, name)[index], central_difference(f, h, d), rtol=1e-6)


def test_truncated_is_reverse_through_the_last_steps(ridge):
    h = ridge.hparams()
    k = 5
    _, grads = hgrad.hypergrad(ridge.dynamics, ridge.outer, ridge.w0, h, T,
                               method=hgrad.Truncated(steps=k))
    w_mid, _ = hgrad.unroll(ridge.dynamics, ridge.w0, h, T - k)

    def last_k(h):
        w, _ = hgrad.unroll(ridge.dynamics, w_mid, h, k, T - k)
        return ridge.outer(w, h)

    assert_trees_close(grads, jax.grad(last_k)(h), rtol=1e-12)
    full = jax.grad(ridge.closed_form_objective)(h)
    assert abs(float(grads.log_lr - full.log_lr)) > 1e-6  # truncation is biased, as documented


def test_truncated_schedule_gradient_vanishes_before_the_window(mlp):
    h = mlp.hparams()
    k = 4
    _, grads = hgrad.hypergrad(mlp.dynamics, mlp.outer, mlp.init_state, h, mlp.num_steps,
                               method=hgrad.Truncated(steps=k))
    assert jnp.all(grads.log_lr[: mlp.num_steps - k] == 0)
    assert jnp.all(grads.log_lr[mlp.num_steps - k:] != 0)
    assert grads.loss["log_init_scale"] == 0


def test_vmap_over_hparams(ridge):
    h = ridge.hparams()
    batch = jax.tree.map(lambda x: x + jnp.linspace(-0.2, 0.2, 3), h)
    f = lambda h: hgrad.hypergrad(ridge.dynamics, ridge.outer, ridge.w0, h, T)
    values, grads = jax.vmap(f)(batch)
    for i in range(3):
        hi = jax.tree.map(lambda x: x[i], batch)
        vi, gi = f(hi)
        np.testing.assert_allclose(values[i], vi, rtol=1e-13)
        assert_trees_close(jax.tree.map(lambda x: x[i], grads), gi, rtol=1e-12)


@pytest.mark.parametrize("method", [hgrad.Reverse(), hgrad.Forward(), hgrad.Checkpointed()], ids=str)
def test_second_jitted_call_does_not_recompile(ridge, method):
    traces = []

    def step(w, h, t):
        traces.append(1)
        return ridge.plain_step(w, h, t)

    f = jax.jit(lambda h: hgrad.hypergrad(step, ridge.outer, ridge.w0, h, T, method=method))
    h = ridge.hparams()
    jax.block_until_ready(f(h))
    count = len(traces)
    assert count > 0
    jax.block_until_ready(f(jax.tree.map(lambda x: x + 0.1, h)))
    assert len(traces) == count


def test_second_plain_call_reuses_the_compiled_code(ridge):
    import sys

    module = sys.modules["hgrad.hypergrad"]

    h = ridge.hparams()
    hgrad.hypergrad(ridge.dynamics, ridge.outer, ridge.w0, h, T)
    size = module._run._cache_size()
    hgrad.hypergrad(ridge.dynamics, ridge.outer, ridge.w0, jax.tree.map(lambda x: x * 1.1, h), T)
    assert module._run._cache_size() == size


def test_rtho_first_hyper_step_is_the_forward_hypergradient(ridge):
    h = ridge.hparams()
    k, lr = 10, 0.05
    result = hgrad.rtho(ridge.dynamics, ridge.outer, ridge.w0, h, 2 * k,
                        optimizer=optax.sgd(lr), hyper_every=k)
    value, grads = hgrad.hypergrad(ridge.dynamics, ridge.outer, ridge.w0, h, k, method=hgrad.Forward())
    first = jax.tree.map(lambda x: x[0], result.hparams_history)
    assert_trees_close(first, jax.tree.map(lambda a, g: a - lr * g, h, grads), rtol=1e-12)
    np.testing.assert_allclose(result.outer_history[0], value, rtol=1e-12)
    assert result.outer_history.shape == (2,)


def test_rtho_learns_step_size_and_momentum_from_poor_values(ridge):
    """One run from a far too small step size and momentum ends far lower than without RTHO."""
    num_steps = 100
    dyn = hgrad.dynamics.Momentum(ridge.loss)
    h = dyn.init_hparams(lr=1e-3, momentum=0.1, loss=jnp.log(jnp.float64(0.1)))
    s0 = dyn.init(ridge.w0)
    outer = lambda s, h: ridge.outer(s.params, h)
    fixed, _ = hgrad.unroll(dyn, s0, h, num_steps)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int32 counts with floats
        result = hgrad.rtho(dyn, outer, s0, h, num_steps, optimizer=optax.adam(0.1), hyper_every=5)
    assert result.hparams.log_lr > h.log_lr + 1.0
    assert result.hparams.logit_momentum > h.logit_momentum
    assert outer(result.state, h) < 0.5 * outer(fixed, h)
    assert result.outer_history[-1] < result.outer_history[0]
