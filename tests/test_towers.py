"""Hypergradient descent and optimizer towers (hgrad.towers).

The hypergradient each level receives is checked against central finite differences of the loss
after the step, in float64, for every tuned hyperparameter of every level; a tower whose top step
size is zero must equal the plain optax optimizer bit for bit; and the transformations must behave
like optax's own (jit without recompilation, inject_hyperparams, flax nnx).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import hgrad.towers as ht
from hgrad.towers.adam import AdamState
from hgrad.towers.level import Level
from tests.helpers import derivative, hlo_computation, hlo_loop_body, random_direction

# A smooth, non-quadratic loss with a pytree of weights.
_A = jnp.asarray(np.random.default_rng(0).normal(size=(7, 3)))
_B = jnp.asarray(np.random.default_rng(1).normal(size=(7,)))


def loss(params):
    r = _A @ params["w"] + params["b"] - _B
    return jnp.sum(jnp.log(jnp.cosh(r))) + 0.05 * jnp.sum(params["w"] ** 4)


def params0(dtype=jnp.float64):
    return {"w": jnp.asarray([0.3, -0.2, 0.5], dtype), "b": jnp.asarray(0.1, dtype)}


def run(tx, params, num_steps, state=None):
    """``num_steps`` steps of ``tx`` on :func:`loss`; returns the params and state after them."""
    state = tx.init(params) if state is None else state
    update = jax.jit(tx.update)
    for _ in range(num_steps):
        updates, state = update(jax.grad(loss)(params), state)
        params = optax.apply_updates(params, updates)
    return params, state


def shifted(level: Level, name: str, eps: float) -> Level:
    """``level`` whose update of the hyperparameter ``name`` below it is shifted by ``eps``."""

    def update(grads, state, values):
        updates, state = level.update(grads, state, values)
        return {**updates, name: updates[name] + eps}, state

    return level._replace(update=update)


def loss_after_step(levels, k, name, eps, params, state):
    """The loss after one step from ``(params, state)`` with level ``k``'s ``name`` moved by eps."""
    levels = list(levels)
    levels[k + 1] = shifted(levels[k + 1], name, eps)
    tx = ht.tower(*levels)
    updates, _ = tx.update(jax.grad(loss)(params), state)
    return loss(optax.apply_updates(params, updates))


TOWERS = {
    "sgd/sgd": (ht.sgd(0.05), ht.sgd(0.02)),
    "sgdn/sgd (lr, momentum)": (
        ht.sgd(0.05, momentum=0.8, nesterov=True, tune=("learning_rate", "momentum")),
        ht.sgd(0.01),
    ),
    "adam(lr, b1, b2)/adam/sgd": (
        ht.adam(0.05, b1=0.8, b2=0.9, tune=("learning_rate", "b1", "b2")),
        ht.adam(0.01),
        ht.sgd(0.001),
    ),
    "sgd/sgd/sgd/sgd": (ht.sgd(0.05), ht.sgd(0.5), ht.sgd(0.5), ht.sgd(0.5)),
    "linear: sgd(lr, momentum)/sgd": (
        ht.sgd(0.05, momentum=0.6, tune=("learning_rate", "momentum"), storage="linear"),
        ht.sgd(0.01),
    ),
    "linear: adam(lr, b1, b2)/sgd(lr)/sgd": (
        ht.adam(0.05, b1=0.8, b2=0.9, tune=("learning_rate", "b1", "b2"), storage="linear"),
        ht.sgd(0.01, storage="linear"),
        ht.sgd(0.001),
    ),
    "adam(lr, b1, b2)/sgd_per_hyperparameter/sgd": (
        ht.adam(0.05, b1=0.8, b2=0.9, tune=("learning_rate", "b1", "b2")),
        ht.sgd_per_hyperparameter({"learning_rate": 0.01, "b1": 0.3, "b2": 0.1}),
        ht.sgd(0.001),
    ),
    "linear: adam(lr, b1, b2)/sgd_per_hyperparameter(lr, b1)/sgd": (
        ht.adam(0.05, b1=0.8, b2=0.9, tune=("learning_rate", "b1", "b2"), storage="linear"),
        ht.sgd_per_hyperparameter({"learning_rate": 0.01, "b1": 0.03, "b2": 0.02},
                                  tune=("learning_rate", "b1"), storage="linear"),
        ht.sgd(0.001),
    ),
    "adam(lr, b1, b2; rebuilding its direction)/sgd": (
        ht.adam(0.05, b1=0.8, b2=0.9, tune=("learning_rate", "b1", "b2"), rebuild_direction=True),
        ht.sgd(0.01),
    ),
    "adam(lr, b1, b2; initial second moment 0.01)/sgd": (
        ht.adam(0.05, b1=0.8, b2=0.9, tune=("learning_rate", "b1", "b2"), initial_second_moment=0.01),
        ht.sgd(0.01),
    ),
    "linear: adam(lr; rebuilding its direction)/sgd": (
        ht.adam(0.05, b1=0.8, b2=0.9, storage="linear", rebuild_direction=True),
        ht.sgd(0.01),
    ),
    "sgd(momentum)/adam(lr, b1)/sgd": (
        ht.sgd(0.05, momentum=0.5),
        ht.adam(0.01, tune=("learning_rate", "b1")),
        ht.sgd(0.003),
    ),
    # eps of the size of the gradients' roots, so that its derivative is far from 0
    "adam(lr, b1, b2, eps)/adam/sgd": (
        ht.adam(0.05, b1=0.8, b2=0.9, eps=0.1, tune=("learning_rate", "b1", "b2", "eps")),
        ht.adam(0.01),
        ht.sgd(0.001),
    ),
    "linear: adam(lr, b1, b2, eps)/sgd_per_hyperparameter/sgd": (
        ht.adam(0.05, b1=0.8, b2=0.9, eps=0.1, tune=("learning_rate", "b1", "b2", "eps"),
                storage="linear"),
        ht.sgd_per_hyperparameter({"learning_rate": 0.01, "b1": 0.03, "b2": 0.02, "eps": 0.05},
                                  storage="linear"),
        ht.sgd(0.001),
    ),
    "adam(eps; rebuilding its direction)/sgd": (
        ht.adam(0.05, b1=0.8, b2=0.9, eps=0.1, tune=("eps",), rebuild_direction=True),
        ht.sgd(0.01),
    ),
}


@pytest.mark.parametrize("name", list(TOWERS))
def test_each_level_receives_the_derivative_of_the_loss_after_the_step(name):
    levels = TOWERS[name]
    tx = ht.tower(*levels)
    params, state = run(tx, params0(), 4)  # state before step t - 1 = 4
    updates, after = tx.update(jax.grad(loss)(params), state)  # step t - 1
    params_t = optax.apply_updates(params, updates)
    _, received = tx.update(jax.grad(loss)(params_t), after)  # step t: hypergradients arrive
    checked = 0
    for k in range(len(levels) - 1):
        for hp, got in received.levels[k].hypergrad.items():
            fd = derivative(lambda eps: loss_after_step(levels, k, hp, eps, params, state))
            assert abs(float(fd)) > 1e-6, (k, hp, fd)  # the check must be able to fail
            np.testing.assert_allclose(float(got), float(fd), rtol=1e-6, err_msg=f"level {k} {hp}")
            checked += 1
    assert checked == sum(len(lv.hyperparameters) for lv in levels[:-1])


@pytest.mark.parametrize("name", list(TOWERS))
def test_a_training_run_differentiates_through_the_tower(name):
    # Differentiating through training (meta-learning the tower's own settings, or a hypergradient
    # of the whole run) must see every derivative the tower keeps, including those it stores
    # through a conditional for XLA's sake (`hgrad.reversible.materialize.materialized`).
    tx = ht.tower(*TOWERS[name])
    direction = random_direction(params0(), 0)

    def final_loss(eps):
        params = jax.tree.map(lambda p, d: p + eps * d, params0(), direction)
        return loss(run(tx, params, 5)[0])

    fd = derivative(final_loss)
    assert abs(fd) > 1e-3, fd  # the check must be able to fail
    np.testing.assert_allclose(float(jax.grad(final_loss)(0.0)), fd, rtol=1e-7)


def test_sgd_hd_hypergradient_is_baydins_dot_product_in_log_space():
    # d L(w_t) / d log(alpha) = -alpha_{t-1} g_t . g_{t-1} (Baydin et al. 2018, Sec. 2, in log space)
    tx = ht.sgd_hd(0.05, 0.02)
    params, state = run(tx, params0(), 3)
    g_prev = jax.grad(loss)(params)
    updates, state = tx.update(g_prev, state)
    alpha = ht.hyperparameters(state)[0]["learning_rate"]
    params = optax.apply_updates(params, updates)
    g = jax.grad(loss)(params)
    _, state = tx.update(g, state)
    dot = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_prev)))
    np.testing.assert_allclose(float(state.levels[0].hypergrad["learning_rate"]),
                               float(-alpha * dot), rtol=1e-12)


PLAIN = {
    "sgd/sgd(0)": (ht.tower(ht.sgd(0.1), ht.sgd(0.0)), optax.sgd(0.1)),
    "sgd_hd(beta=0)": (ht.sgd_hd(0.1, 0.0), optax.sgd(0.1)),
    "sgdn_hd(beta=0)": (ht.sgdn_hd(0.1, 0.0), optax.sgd(0.1, momentum=0.9, nesterov=True)),
    "sgd(lr, momentum)/sgd(0)": (
        ht.tower(ht.sgd(0.1, 0.9, tune=("learning_rate", "momentum")), ht.sgd(0.0)),
        optax.sgd(0.1, momentum=0.9),
    ),
    "adam_hd(beta=0)": (ht.adam_hd(1e-3, 0.0), ht.tower(ht.adam(1e-3))),
    "linear: sgdn_hd(beta=0)": (ht.sgdn_hd(0.1, 0.0, storage="linear"),
                                optax.sgd(0.1, momentum=0.9, nesterov=True)),

    "adam(lr, b1, b2)/sgd(0)": (
        ht.tower(ht.adam(1e-3, tune=("learning_rate", "b1", "b2")), ht.sgd(0.0)),
        ht.tower(ht.adam(1e-3)),
    ),
    "linear: adam(lr, b1, b2, eps)/sgd(0)": (
        ht.tower(ht.adam(1e-3, eps=1e-3, tune=("learning_rate", "b1", "b2", "eps"), storage="linear"),
                 ht.sgd(0.0)),
        ht.tower(ht.adam(1e-3, eps=1e-3)),
    ),
}


def updates_of(tx, dtype, num_steps=25):
    """The updates of ``tx`` along its own run from fixed weights, with one row never updated."""
    rng = np.random.default_rng(3)
    p = {"w": jnp.asarray(rng.normal(size=(5, 4)), dtype), "b": jnp.zeros(4, dtype)}
    state, update, out = tx.init(p), jax.jit(tx.update), []
    for t in range(num_steps):
        g = jax.tree.map(lambda x: jnp.sin(3.0 * x + t) + 0.1 * t, p)
        g["w"] = g["w"].at[0].set(0.0)  # a row that never gets a gradient
        u, state = update(g, state)
        out.append(u)
        p = optax.apply_updates(p, u)
    return out


# float32 runs as users run it, without x64 (with x64 on, optax computes Adam's bias correction
# in float64 from Python floats); optax.adam also mixes int32 and float scalars, which the strict
# promotion of these tests rejects.
def _as_users_run(dtype):
    return jax.enable_x64(dtype == jnp.float64), jax.numpy_dtype_promotion("standard")


@pytest.mark.parametrize("name", list(PLAIN))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_a_tower_with_zero_hyper_step_size_is_the_plain_optimizer_bit_for_bit(name, dtype):
    # The plain optimizer is optax's for SGD; for Adam it is hgrad's one-level Adam, which
    # matches optax.adam to rounding (next test): XLA compiles the two programs' divisions and
    # square roots into different fusions, and their results can differ in the last bit.
    tx, plain = PLAIN[name]
    x64, promotion = _as_users_run(dtype)
    with x64, promotion:
        got, want = updates_of(tx, dtype), updates_of(plain, dtype)
    for u, v in zip(got, want):
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("tx, dtype, rtol", [
    (ht.tower(ht.adam(1e-3)), jnp.float32, 1e-6),
    (ht.tower(ht.adam(1e-3)), jnp.float64, 1e-14),
    # linear storage differentiates the learning rate in forward mode, a different XLA program
    # whose last-bit differences Adam's normalization carries from step to step: float64 only
    (ht.tower(ht.adam(1e-3, tune=("learning_rate", "b1", "b2"), storage="linear"), ht.sgd(0.0)),
     jnp.float64, 1e-12),
], ids=["adam-float32", "adam-float64", "linear adam(lr, b1, b2)/sgd(0)-float64"])
def test_adam_level_matches_optax_adam_to_rounding(tx, dtype, rtol):
    x64, promotion = _as_users_run(dtype)
    with x64, promotion:
        got, want = updates_of(tx, dtype), updates_of(optax.adam(1e-3), dtype)
    for u, v in zip(got, want):
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=0)


def test_jit_does_not_recompile():
    tx = ht.tower(ht.adam(1e-3, tune=("learning_rate", "b1")), ht.sgd(1e-2), ht.sgd(1e-3))
    params = params0()
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(3):
        updates, state = update(jax.grad(loss)(params), state)
        params = optax.apply_updates(params, updates)
    assert update._cache_size() == 1


def test_inject_hyperparams():
    injected = optax.inject_hyperparams(ht.sgd_hd)(learning_rate=0.05, hyper_learning_rate=0.02)
    p_inj, s_inj = run(injected, params0(), 6)
    p_ref, s_ref = run(ht.sgd_hd(0.05, 0.02), params0(), 6)
    np.testing.assert_allclose(np.asarray(p_inj["w"]), np.asarray(p_ref["w"]), rtol=1e-12)
    lr_inj = ht.hyperparameters(s_inj.inner_state)[0]["learning_rate"]
    assert float(lr_inj) == pytest.approx(float(ht.hyperparameters(s_ref)[0]["learning_rate"]),
                                          rel=1e-12)
    assert float(lr_inj) != pytest.approx(0.05, rel=1e-6)  # it did adapt
    # the hyper step size is a hyperparameter an outer loop may change: 0 freezes the rate
    s_inj.hyperparams["hyper_learning_rate"] = jnp.zeros_like(s_inj.hyperparams["hyper_learning_rate"])
    _, s_frozen = run(injected, p_inj, 3, s_inj)
    assert float(ht.hyperparameters(s_frozen.inner_state)[0]["learning_rate"]) == float(lr_inj)


def test_flax_nnx_optimizer_trains_like_the_functional_loop():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(32, 6)))
    y = jnp.asarray(np.random.default_rng(5).integers(0, 3, size=32))

    def xent(logits):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    def linear():
        return nnx.Linear(6, 3, param_dtype=jnp.float64, rngs=nnx.Rngs(0))

    tx = ht.adam_hd(0.05, 1e-2)
    graphdef, params = nnx.split(linear(), nnx.Param)  # the functional loop: pure pytrees

    def pure_loss(p):
        return xent(nnx.merge(graphdef, p)(x))

    initial_loss = float(pure_loss(params))
    state = tx.init(params)
    for _ in range(8):
        updates, state = tx.update(jax.grad(pure_loss)(params), state)
        params = optax.apply_updates(params, updates)

    model = linear()  # the nnx loop: a module updated in place by nnx.Optimizer
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, opt):
        opt.update(model, nnx.grad(lambda m: xent(m(x)))(model))

    for _ in range(8):
        nnx_step(model, opt)
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    assert float(pure_loss(params)) < initial_loss


def rates_on_a_quadratic(tx, num_steps):
    """The learning rate after each of ``num_steps`` steps of ``tx`` on a quadratic, and the weights."""
    params = {"w": jnp.asarray([1.0, -2.0]), "b": jnp.asarray(0.5)}
    state, rates = tx.init(params), []
    for _ in range(num_steps):
        grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2) + p["b"] ** 2)(params)
        updates, state = tx.update(grads, state)
        params = optax.apply_updates(params, updates)
        rates.append(float(ht.hyperparameters(state)[0]["learning_rate"]))
    return rates, params


@pytest.mark.parametrize("hyper_lr", [1e6, 1e12, 1e30])
def test_learning_rate_stays_positive_under_huge_hyper_step_sizes(hyper_lr):
    # Above the stable step size consecutive gradients point against each other, so the
    # hypergradient pushes the rate down; Baydin et al.'s additive rule would make it negative.
    rates, params = rates_on_a_quadratic(ht.sgd_hd(1.5, hyper_lr), 10)
    assert all(r > 0 and math.isfinite(r) for r in rates), rates
    assert min(rates) < 1e-3  # it was pushed down hard, and stayed positive
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_learning_rate_stays_finite_when_pushed_up():
    tx = ht.sgd_hd(1e-4, 1e30)
    params = {"w": jnp.asarray([1.0, -2.0]), "b": jnp.asarray(0.5)}
    state = tx.init(params)
    for _ in range(2):  # the second step sees two aligned gradients
        updates, state = tx.update(jax.grad(lambda p: jnp.sum(p["w"] ** 2) + p["b"] ** 2)(params),
                                   state)
        params = optax.apply_updates(params, updates)
    lr = float(ht.hyperparameters(state)[0]["learning_rate"])
    assert 1e-4 < lr < float(jnp.finfo(jnp.float64).max)


def test_adam_tuning_b2_gives_no_nan_where_the_second_moment_is_zero():
    tx = ht.tower(ht.adam(1e-2, tune=("learning_rate", "b1", "b2")), ht.adam(1e-2), ht.sgd(1e-3))
    params = {"w": jnp.ones(4), "dead": jnp.ones(3)}  # "dead" never gets a gradient
    state = tx.init(params)
    for t in range(6):
        grads = {"w": jnp.cos(params["w"] * (t + 1)), "dead": jnp.zeros(3)}
        updates, state = tx.update(grads, state)
        params = optax.apply_updates(params, updates)
    for leaf in jax.tree.leaves(state):
        assert np.isfinite(np.asarray(leaf)).all()
    assert float(state.levels[0].hypergrad["b2"]) != 0.0
    np.testing.assert_array_equal(np.asarray(params["dead"]), np.ones(3))


def test_safe_sqrt_value_and_derivative():
    x = jnp.asarray([0.0, 0.25, 4.0])
    np.testing.assert_array_equal(np.asarray(ht.safe_sqrt(x)), np.sqrt(np.asarray(x)))
    d = jax.vmap(jax.grad(ht.safe_sqrt))(x)
    np.testing.assert_allclose(np.asarray(d), [0.0, 1.0, 0.25])


def _training_loop_hlo(tx, shape=(48, 40)):
    """XLA's compiled text of a jitted scan of training steps of ``tx``, and its loop body."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, shape[0])), jnp.float32)

    def step(carry, xi):
        p, s = carry
        g = jax.grad(lambda p: jnp.sum(jnp.tanh(xi @ p)))(p)
        u, s = tx.update(g, s)
        return (optax.apply_updates(p, u), s), None

    def train(p):
        return jax.lax.scan(step, (p, tx.init(p)), x)[0]

    text = jax.jit(train).lower(jnp.ones(shape, jnp.float32)).compile().as_text()
    return text, hlo_loop_body(text)


_CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu",
                               reason="a property of XLA:CPU's compiled program")


@_CPU_ONLY
@pytest.mark.parametrize("tx", [
    ht.adam_hd(1e-3, 1e-7),
    ht.adam_hd(1e-3, 1e-7, storage="linear"),
    ht.tower(ht.adam(1e-3, tune=("learning_rate", "b1", "b2")), ht.sgd(1e-7)),
    ht.tower(ht.adam(1e-3, tune=("learning_rate", "b1", "b2", "eps"), storage="linear"), ht.sgd(1e-7)),
    ht.sgd_hd(0.01, 1e-3),
    ht.sgd_hd(0.01, 1e-3, storage="linear"),
    ht.sgdn_hd(0.01, 1e-3, storage="linear"),
    ht.tower(*[ht.sgd(0.01, storage="linear")] * 3),
    ht.tower(ht.sgd(0.01, 0.9, tune=("learning_rate", "momentum")), ht.sgd(1e-7)),
    ht.tower(ht.sgd(0.01, 0.9, tune=("learning_rate", "momentum"), storage="linear"), ht.sgd(1e-7, storage="linear")),
    ht.tower(ht.sgd(0.01, 0.9, nesterov=True, tune=("learning_rate", "momentum")), ht.sgd(1e-7)),
], ids=["adam_hd log", "adam_hd linear", "adam(lr, b1, b2)", "linear adam(lr, b1, b2, eps)", "sgd_hd log", "sgd_hd linear", "sgdn_hd linear",
        "sgd/sgd/sgd linear", "sgd(lr, momentum) log", "sgd(lr, momentum) linear", "sgdn(lr, momentum)"])
def test_levels_write_their_state_in_place_without_copies(tx):
    # A kept derivative is written where the last one was, after the contraction has read it;
    # were it computed before (Adam's direction, or -g for a learning rate stored as it is, do not
    # otherwise depend on the new rate), XLA would copy the old one out and the new one in at every
    # step (adam's `direction`, the tower's `_step`). The b1 and b2 derivatives take m_{t-1} - g
    # from the new moment, so the step writes the new moments where the old ones were; read from
    # the old ones, XLA copied both at every step (adam's `tangents`). A momentum's derivative reads
    # the old velocity: the new one is written after it (the tower's `_step`), else XLA copied it.
    _, body = _training_loop_hlo(tx)
    assert "f32[48,40]{1,0} copy(" not in body


@_CPU_ONLY
@pytest.mark.parametrize("tune", [("learning_rate", "b1", "b2"), ("learning_rate", "b1", "b2", "eps")])
def test_adams_b1_and_b2_derivatives_write_no_shared_square_root(tune):
    # Each derivative computes its own root of the second moment; a root shared by both is
    # written as a weight-sized array and read back (adam's `tangents`).
    import re

    tx = ht.tower(ht.adam(1e-3, tune=tune), ht.sgd(1e-7))
    text, body = _training_loop_hlo(tx)
    roots = [re.search(r"ROOT [^=]+= \S+ (\w+)\(", hlo_computation(text, name)).group(1)
             for name in re.findall(r"f32\[48,40\]\{1,0\} fusion\(.*?calls=%?([\w.\-]+)", body)]
    assert roots and "sqrt" not in roots, roots


@pytest.mark.parametrize("b1", [0.9, 0.01])
def test_adams_float32_b1_and_b2_derivatives_agree_with_float64(b1):
    rng = np.random.default_rng(0)
    g = rng.normal(size=10_000)
    m0, v0 = 0.9 * g + 0.3 * rng.normal(size=g.size), g**2 + 0.1 * rng.random(g.size)
    level = ht.adam(1e-3, b1=b1, tune=("learning_rate", "b1", "b2"))
    got = {}
    with jax.enable_x64(True):
        for dtype in (jnp.float32, jnp.float64):
            state = AdamState(count=jnp.asarray(5, jnp.int32), mu=jnp.asarray(m0, dtype),
                              nu=jnp.asarray(v0, dtype))
            values = {"learning_rate": jnp.asarray(1e-3, dtype), "b1": jnp.asarray(b1, dtype),
                      "b2": jnp.asarray(0.999, dtype)}
            got[dtype] = level.tangents(jnp.asarray(g, dtype), state, values)
    for name in ("b1", "b2"):
        single, double = (np.asarray(got[d][name], np.float64) for d in (jnp.float32, jnp.float64))
        assert abs(g @ single - g @ double) <= 1e-4 * abs(g @ double), name


def test_adams_b1_derivative_is_zero_not_nan_where_b1_is_zero():
    # At b1 = 0 (the bottom of its window in the working precision) the new moment is the
    # gradient and keeps nothing of the old one: its derivative m_{t-1} - g is taken as 0 (and
    # past the first step, so is the bias correction's, t b1^(t-1) m / c1^2)
    level = ht.adam(1e-3, tune=("learning_rate", "b1", "b2"))
    state = AdamState(count=jnp.asarray(3, jnp.int32), mu=jnp.asarray([0.5, -1.0]),
                      nu=jnp.asarray([0.2, 0.0]))
    out = level.tangents(jnp.asarray([1.0, 0.0]), state,
                         {"learning_rate": 1e-3, "b1": jnp.asarray(0.0), "b2": jnp.asarray(0.999)})
    assert np.array_equal(np.asarray(out["b1"]), [0.0, 0.0])
    assert np.all(np.isfinite(np.asarray(out["b2"])))


@pytest.mark.parametrize("shape", [(), (7,), (784, 1000), (3, 4, 5)])
def test_flat_vdot_is_the_dot_product_of_the_flattened_arrays(shape):
    from hgrad.towers.tower import flat_vdot

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=shape), rng.normal(size=shape)
    with jax.enable_x64(True):
        got = jax.jit(flat_vdot)(jnp.asarray(a), jnp.asarray(b))
        assert got.dtype == jnp.float64
    np.testing.assert_allclose(float(got), math.fsum((a * b).ravel()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ht.sgd(0.1, momentum=1.0), r"momentum must be in \[0, 1\)"),
        (lambda: ht.sgd(0.1, momentum=-0.1), r"momentum must be in \[0, 1\)"),
        (lambda: ht.sgd(-0.1), "learning_rate must be finite and >= 0"),
        (lambda: ht.sgd(float("nan")), "learning_rate must be finite and >= 0"),
        (lambda: ht.adam(1e-3, b2=1.0), r"b2 must be in \[0, 1\)"),
        (lambda: ht.adam(1e-3, eps=-1.0), "eps must be finite and >= 0"),
        (lambda: ht.adam(1e-3, eps=float("inf")), "eps must be finite and >= 0"),
        (lambda: ht.adam(1e-3, initial_second_moment=-1e-8), "initial_second_moment must be finite and >= 0"),
        (lambda: ht.adam(1e-3, initial_second_moment=float("nan")),
         "initial_second_moment must be finite and >= 0"),
        (lambda: ht.sgd(0.1, tune=("lr",)), "sgd can tune 'learning_rate' and 'momentum'"),
        (lambda: ht.adam(0.1, tune=("beta1",)), "adam can tune 'learning_rate', 'b1', 'b2' and 'eps'"),
        (lambda: ht.sgd(0.1, tune=("momentum",)), "momentum is None"),
        (lambda: ht.sgd(0.1, nesterov=True), "nesterov=True needs a momentum"),
        (lambda: ht.tower(ht.sgd(0.0), ht.sgd(0.1)), r"level 0 \(sgd\): learning_rate must be > 0"),
        (lambda: ht.tower(ht.sgd(0.1, 0.0, tune=("momentum",)), ht.sgd(0.1)),
         r"momentum must be in \(0, 1\) to be tuned"),
        (lambda: ht.tower(ht.sgd(0.1, tune=()), ht.sgd(0.1)), "level 0 \\(sgd\\) tunes no"),
        (lambda: ht.tower(optax.sgd(0.1), ht.sgd(0.1)), "not an hgrad.towers.Level"),
        (lambda: ht.tower(), "at least one level"),
        (lambda: ht.sgd_per_hyperparameter({}), "at least one step size"),
        (lambda: ht.sgd_per_hyperparameter({"learning_rate": 0.1}, tune=("b1",)),
         r"tune names \['b1'\], which have no step size"),
        (lambda: ht.sgd_per_hyperparameter({"b1": -0.1}), "learning_rate_b1 must be finite and >= 0"),
        (lambda: ht.tower(ht.adam(0.1, tune=("learning_rate", "b1")),
                          ht.sgd_per_hyperparameter({"learning_rate": 0.0, "b1": 0.1}), ht.sgd(0.1)),
         "learning_rate_learning_rate must be > 0"),
    ],
)
def test_bad_input_is_a_clear_error(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_integer_params_are_a_clear_error():
    with pytest.raises(ValueError, match="floating-point"):
        ht.sgd_hd(0.1, 0.01).init({"w": jnp.arange(3)})


@pytest.mark.parametrize("storage", ["unconstrained", "linear"])
def test_adams_hand_written_tangents_equal_forward_mode(storage):
    adam = ht.adam(0.05, b1=0.8, b2=0.9, eps=0.1, tune=("learning_rate", "b1", "b2", "eps"), storage=storage)
    by_hand = ht.tower(adam, ht.sgd(0.01))
    forward = ht.tower(adam._replace(tangents=None), ht.sgd(0.01))
    _, s_hand = run(by_hand, params0(), 5)
    _, s_fwd = run(forward, params0(), 5)
    for a, b in zip(jax.tree.leaves(s_hand.levels[0].tangents),
                    jax.tree.leaves(s_fwd.levels[0].tangents)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-14)
    assert all(float(jnp.abs(t["w"]).max()) > 0 for t in s_hand.levels[0].tangents[1:])


def test_linear_storage_is_baydins_additive_rule_kept_nonnegative():
    # alpha_t = alpha_{t-1} + beta g_t . g_{t-1} (Baydin et al. 2018, Eq. for SGD-HD)
    beta = 0.02
    tx = ht.sgd_hd(0.05, beta, storage="linear")
    params, state = run(tx, params0(), 3)
    g_prev = jax.grad(loss)(params)
    updates, state = tx.update(g_prev, state)
    alpha = float(ht.hyperparameters(state)[0]["learning_rate"])
    params = optax.apply_updates(params, updates)
    g = jax.grad(loss)(params)
    _, state = tx.update(g, state)
    dot = float(sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_prev))))
    assert float(ht.hyperparameters(state)[0]["learning_rate"]) == pytest.approx(
        alpha + beta * dot, rel=1e-12)
    # a huge beta on an oscillating problem would make the original rule's rate negative
    rates, _ = rates_on_a_quadratic(ht.sgd_hd(1.5, 1e6, storage="linear"), 5)
    assert min(rates) == 0.0 and all(r >= 0 for r in rates)


def test_log10_storage_is_chandras_log_eps():
    # Chandra et al.'s code keeps Adam's epsilon as log10(eps) and steps that value itself
    from hgrad.towers.hyperparameter import positive

    h = positive(1e-8, "eps", "log10")
    u0 = h.unconstrained(jnp.float64)
    assert float(u0) == pytest.approx(-8.0, abs=1e-14)
    assert float(h.constrain(u0)) == 1e-8  # the initial value exactly
    assert float(h.constrain(jnp.asarray(-7.5))) == pytest.approx(10**-7.5, rel=1e-13)
    for far in (1e6, -1e6):  # the window keeps the value positive and finite
        x = float(h.constrain(h.project(jnp.asarray(far))))
        assert 0 < x < math.inf
    beta = 0.05
    tx = ht.tower(ht.adam(0.05, eps=0.1, tune=("eps",), storage="linear"), ht.sgd(beta))
    params, state = run(tx, params0(), 3)
    updates, after = tx.update(jax.grad(loss)(params), state)
    stored = float(after.levels[0].params["eps"])
    assert stored == pytest.approx(float(state.levels[0].params["eps"])
                                   - beta * float(after.levels[0].hypergrad["eps"]), rel=1e-12)
    assert float(ht.hyperparameters(after)[0]["eps"]) == pytest.approx(10**stored, rel=1e-12)


def test_unknown_storage_is_a_clear_error():
    with pytest.raises(ValueError, match="storage must be"):
        ht.sgd(0.1, storage="log")
    with pytest.raises(ValueError, match="storage must be"):
        ht.adam(0.1, storage="tanh")
    with pytest.raises(ValueError, match="storage must be"):
        ht.sgd(0.1, momentum=0.9, storage="log10")  # a decay rate has no log10 storage


def test_sgd_per_hyperparameter_with_equal_step_sizes_is_sgd():
    adam = ht.adam(0.05, b1=0.8, b2=0.9, tune=("learning_rate", "b1", "b2"))
    p_one, s_one = run(ht.tower(adam, ht.sgd(0.01)), params0(), 6)
    p_each, _ = run(ht.tower(adam, ht.sgd_per_hyperparameter(dict.fromkeys(adam.hyperparameters, 0.01))),
                    params0(), 6)
    for a, b in zip(jax.tree.leaves(p_one), jax.tree.leaves(p_each)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(s_one.levels[0].params["b1"] - s_one.levels[0].params["b2"])) > 0


def test_sgd_per_hyperparameter_tunes_each_step_size_on_its_own():
    adam = ht.adam(0.05, b1=0.8, b2=0.9, tune=("learning_rate", "b1", "b2"))
    _, state = run(ht.tower(adam, ht.sgd_per_hyperparameter(dict.fromkeys(adam.hyperparameters, 0.01)),
                            ht.sgd(0.001)), params0(), 6)
    rates = ht.hyperparameters(state)[1]
    assert set(rates) == {"learning_rate_learning_rate", "learning_rate_b1", "learning_rate_b2"}
    assert len({float(v) for v in rates.values()}) == 3


def test_sgd_per_hyperparameter_names_a_mismatch_with_the_level_below():
    tx = ht.tower(ht.adam(0.05, tune=("learning_rate", "b1")),
                  ht.sgd_per_hyperparameter({"learning_rate": 0.01, "b2": 0.01}))
    with pytest.raises(ValueError, match=r"step sizes for \['b2', 'learning_rate'\], but the level "
                                         r"below tunes \['b1', 'learning_rate'\]"):
        tx.update(jax.grad(loss)(params0()), tx.init(params0()))


def _rebuilding(level):
    return ht.tower(level._replace(rebuild_direction=True), ht.sgd(0.01, tune=()))


@pytest.mark.parametrize("tx", [_rebuilding(ht.adam(0.05)), ht.sgd_hd(0.05, 0.01, momentum=0.5),
                                _rebuilding(ht.adam(0.05, storage="linear"))],
                         ids=["adam rebuilding", "sgd_hd(momentum)", "adam linear rebuilding"])
def test_a_rebuilt_learning_rate_derivative_keeps_no_array_and_starts_at_zero(tx):
    # Adam's and momentum SGD's update is -lr * D with D in their state: nothing weight-sized is kept
    state = tx.init(params0())
    assert state.levels[0].tangents == (None,)
    _, state = tx.update(jax.grad(loss)(params0()), state)  # D of the initial state is 0, not 0/0
    assert float(state.levels[0].hypergrad["learning_rate"]) == 0.0


def test_adam_keeps_its_direction_unless_asked_to_rebuild_it():
    assert ht.adam(0.05).rebuild_direction is False and ht.adam(0.05, rebuild_direction=True).rebuild_direction
    assert ht.sgd(0.05, momentum=0.5).rebuild_direction  # a velocity is read back at no cost
    for tx in (ht.adam_hd(0.05, 0.01), ht.adam_hd(0.05, 0.01, storage="linear")):
        state = tx.init(params0())
        assert jax.tree.structure(state.levels[0].tangents[0]) == jax.tree.structure(params0())


@pytest.mark.parametrize("bottom", [ht.adam(0.05, b1=0.8, b2=0.9, tune=("learning_rate", "b1")),
                                    ht.sgd(0.05, momentum=0.6), ht.adam(0.05, storage="linear"),
                                    ht.sgd(0.05, momentum=0.6, storage="linear")],
                         ids=["adam(lr, b1)", "sgd(momentum)", "adam linear", "sgd(momentum) linear"])
def test_rebuilt_learning_rate_derivative_equals_the_stored_update(bottom):
    # the same towers rebuilding D from the state, keeping D from the step, and keeping the
    # update (log storage) or its forward-mode derivative (linear storage): one hypergradient
    variants = [bottom._replace(rebuild_direction=True), bottom._replace(rebuild_direction=False),
                bottom._replace(direction=None)]
    states = [run(ht.tower(lv, ht.sgd(0.01)), params0(), 6)[1] for lv in variants]
    assert states[0].levels[0].tangents[0] is None
    assert all(s.levels[0].tangents[0] is not None for s in states[1:])
    want = states[2].levels[0].hypergrad
    assert abs(float(want["learning_rate"])) > 0
    for got in (states[0].levels[0].hypergrad, states[1].levels[0].hypergrad):
        for name in want:
            np.testing.assert_allclose(float(got[name]), float(want[name]), rtol=1e-12, err_msg=name)


def test_adam_hand_tangents_equal_forward_mode_with_layers_named_like_them():
    # the pass that gives both tangents returns {"b1": ..., "b2": ...} per weight array; parameters
    # whose own names are "b1" and "b2" (biases) must not be taken for that container
    params = {"b1": jnp.asarray([1.0, -2.0]), "b2": {"w": jnp.asarray([[0.5, 0.3]])}}
    level = ht.adam(0.05, b1=0.8, b2=0.9, tune=("learning_rate", "b1", "b2"))
    values = {"learning_rate": 0.05, "b1": 0.8, "b2": 0.9}
    grads = jax.tree.map(lambda x: 0.3 * x + 0.1, params)
    state = level.update(grads, level.init(params), values)[1]  # a second step: m, v nonzero
    by_hand = level.tangents(grads, state, values)
    for name in ("b1", "b2"):
        def update(b, name=name):
            return level.update(grads, state, {**values, name: b})[0]

        forward = jax.jvp(update, (jnp.float64(values[name]),), (jnp.float64(1.0),))[1]
        assert jax.tree.structure(by_hand[name]) == jax.tree.structure(params)
        for a, b in zip(jax.tree.leaves(by_hand[name]), jax.tree.leaves(forward)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=name)


def test_adam_with_an_initial_second_moment_is_adam_started_there():
    # Kingma & Ba's recursion, written out in NumPy, with v_0 = 0.01 instead of 0 (Chandra et al.'s
    # v1 code starts at 1e-8); the bias corrections are unchanged
    lr, b1, b2, eps, v0 = 0.05, 0.8, 0.9, 1e-8, 0.01
    tx = ht.tower(ht.adam(lr, b1, b2, eps, initial_second_moment=v0))
    params = params0()
    w = {k: np.asarray(v) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.full_like(x, v0) for k, x in w.items()}
    state = tx.init(params)
    for t in range(1, 6):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state)
        params = optax.apply_updates(params, updates)
        g = jax.grad(loss)({k: jnp.asarray(x) for k, x in w.items()})
        for k in w:
            gk = np.asarray(g[k])
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk**2
            if t == 1:  # the first step's corrected moment is g^2 + b2 v0 / (1 - b2)
                np.testing.assert_allclose(v[k] / (1 - b2), gk**2 + b2 * v0 / (1 - b2), rtol=1e-12)
            w[k] = w[k] - lr * (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
        for k in w:
            np.testing.assert_allclose(np.asarray(params[k]), w[k], rtol=1e-12, atol=1e-15)
    # and it is not the default Adam: v_0 moves the trajectory
    default = run(ht.tower(ht.adam(lr, b1, b2, eps)), params0(), 5)[0]
    assert abs(float(default["b"]) - float(params["b"])) > 1e-4


def test_adam_initial_second_moment_zero_is_the_default_and_may_be_traced():
    def make(v0):
        return ht.tower(ht.adam(0.05, tune=("learning_rate", "b1"), initial_second_moment=v0), ht.sgd(0.01))

    default = ht.tower(ht.adam(0.05, tune=("learning_rate", "b1")), ht.sgd(0.01))
    for a, b in zip(jax.tree.leaves(run(make(0.0), params0(), 4)), jax.tree.leaves(run(default, params0(), 4))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # under vmap the initial moment is a tracer (no check, no error); each row equals its own run
    v0s = jnp.asarray([0.0, 1e-3, 0.1])

    batched = jax.vmap(lambda v0: run(make(v0), params0(), 4)[0]["b"])(v0s)
    for v0, got in zip([0.0, 1e-3, 0.1], batched):
        np.testing.assert_allclose(float(got), float(run(make(v0), params0(), 4)[0]["b"]), rtol=1e-12)
    assert len({round(float(x), 8) for x in batched}) == 3
