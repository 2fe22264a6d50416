"""Bad input is a clear error before any computation; a diverging inner loop names its step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hgrad
from hgrad.dynamics import Batches, GradientDescent, Momentum
from problems import T, Ridge


@pytest.fixture(scope="module")
def ridge():
    return Ridge()


def _never_called(*args):
    raise AssertionError("the computation started although the input was bad")


@pytest.mark.parametrize("num_steps", [0, -3])
def test_non_positive_num_steps(ridge, num_steps):
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        hgrad.hypergrad(ridge.dynamics, ridge.outer, ridge.w0, ridge.hparams(), num_steps)


def test_non_integer_num_steps(ridge):
    with pytest.raises(TypeError, match="num_steps must be a Python int"):
        hgrad.hypergrad(ridge.dynamics, ridge.outer, ridge.w0, ridge.hparams(), 10.0)


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5, float("nan")])
def test_momentum_outside_unit_interval(momentum):
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        Momentum.init_hparams(lr=0.1, momentum=momentum)


def test_zero_momentum_gets_advice():
    with pytest.raises(ValueError, match="GradientDescent"):
        Momentum.init_hparams(lr=0.1, momentum=0.0)


@pytest.mark.parametrize("lr", [0.0, -1.0, float("inf")])
def test_non_positive_step_size(lr):
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        GradientDescent.init_hparams(lr=lr)


def test_nan_in_hparams(ridge):
    h = ridge.hparams()._replace(loss=jnp.float64(jnp.nan))
    with pytest.raises(ValueError, match=r"hparams.*non-finite"):
        hgrad.hypergrad(ridge.dynamics, _never_called, ridge.w0, h, T)


def test_nan_in_initial_state(ridge):
    w0 = ridge.w0.at[2].set(jnp.inf)
    with pytest.raises(ValueError, match=r"state0.*non-finite"):
        hgrad.hypergrad(ridge.dynamics, ridge.outer, w0, ridge.hparams(), T)


def test_nan_in_data():
    x = np.ones((10, 3))
    x[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"data array 0.*1 non-finite"):
        Batches(x, np.zeros(10), batch_size=5, num_steps=3)


def test_mismatched_data_rows():
    with pytest.raises(ValueError, match="same number of rows, got 10, 9"):
        Batches(np.ones((10, 3)), np.zeros(9), batch_size=5, num_steps=3)


def test_integer_hparams(ridge):
    with pytest.raises(TypeError, match="must be floating point"):
        hgrad.hypergrad(ridge.plain_step, ridge.outer, ridge.w0, jnp.int32(1), T)


def test_schedule_of_the_wrong_length(ridge):
    h = ridge.dynamics.init_hparams(lr=0.1, loss=jnp.float64(0.0), num_steps=T - 1)
    with pytest.raises(ValueError, match=rf"log_lr has shape \({T - 1},\).*\({T},\)"):
        hgrad.hypergrad(ridge.dynamics, ridge.outer, ridge.w0, h, T)


def test_step_changing_the_state_shape(ridge):
    step = lambda w, h, t: jnp.concatenate([w, w])
    with pytest.raises(ValueError, match=r"changed state.*float64\[6\] to float64\[12\]"):
        hgrad.hypergrad(step, ridge.outer, ridge.w0, ridge.hparams(), T)


def test_initial_state_of_the_wrong_shape(ridge):
    with pytest.raises(TypeError, match="step.*failed while checking shapes"):
        hgrad.hypergrad(ridge.dynamics, ridge.outer, jnp.zeros(5), ridge.hparams(), T)


def test_outer_not_a_scalar(ridge):
    with pytest.raises(ValueError, match="real floating-point scalar"):
        hgrad.hypergrad(ridge.dynamics, lambda w, h: w, ridge.w0, ridge.hparams(), T)


def test_per_group_step_sizes_that_do_not_fit_the_parameters():
    params = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    dyn = GradientDescent(lambda p, h, t: sum(jnp.sum(x**2) for x in jax.tree.leaves(p)))
    h = dyn.init_hparams(lr={"a": 0.1, "c": 0.1})
    with pytest.raises(ValueError, match="prefix of the parameters"):
        hgrad.hypergrad(dyn, lambda p, h: jnp.sum(p["a"]), params, h, 5)


def test_unknown_method(ridge):
    with pytest.raises(TypeError, match="hgrad.Reverse"):
        hgrad.hypergrad(ridge.dynamics, ridge.outer, ridge.w0, ridge.hparams(), T, method="reverse")


def test_bad_method_settings(ridge):
    for method in (hgrad.Checkpointed(every=0), hgrad.Truncated(steps=0), hgrad.Forward(chunk_size=-1)):
        with pytest.raises(ValueError, match="must be a positive integer"):
            hgrad.hypergrad(ridge.dynamics, ridge.outer, ridge.w0, ridge.hparams(), T, method=method)


# -- divergence: w_{t+1} = 1e100 w_t from w_0 = 1 overflows float64 at step 3 (1e400 > 1.8e308) --

def _explode(w, h, t):
    return w * jnp.exp(h)


EXPLODE = jnp.log(jnp.float64(1e100))


@pytest.mark.parametrize("method", [hgrad.Reverse(), hgrad.Forward(), hgrad.Checkpointed(every=2),
                                    hgrad.Truncated(steps=2)], ids=str)
def test_divergence_names_the_step(method):
    with pytest.raises(hgrad.DivergenceError, match="non-finite.*at step 3 of 10") as info:
        hgrad.hypergrad(_explode, lambda w, h: w, jnp.float64(1.0), EXPLODE, 10, method=method)
    assert info.value.step == 3


def test_divergence_under_jit_still_raises():
    f = jax.jit(lambda h: hgrad.hypergrad(_explode, lambda w, h: w, jnp.float64(1.0), h, 10))
    with pytest.raises(Exception, match="diverged.*at step 3 of 10"):
        jax.block_until_ready(f(EXPLODE))


@pytest.mark.parametrize("dynamics", [GradientDescent, Momentum])
def test_dynamics_divergence_from_a_huge_step_size(dynamics):
    dyn = dynamics(lambda w, h, t: 0.5 * jnp.sum(w**2))
    kwargs = {"momentum": 0.5} if dynamics is Momentum else {}
    h = dyn.init_hparams(lr=1e60, **kwargs)
    state0 = dyn.init(jnp.ones(3)) if dynamics is Momentum else jnp.ones(3)
    outer = lambda s, h: jnp.sum(dyn.params_of(s))
    with pytest.raises(hgrad.DivergenceError, match="at step [0-9]+ of 50"):
        hgrad.hypergrad(dyn, outer, state0, h, 50)


def test_rtho_divergence_names_the_step():
    import optax

    with pytest.raises(hgrad.DivergenceError, match="at step 3 of 10"):
        hgrad.rtho(_explode, lambda w, h: w, jnp.float64(1.0), EXPLODE, 10, optimizer=optax.sgd(0.0))
