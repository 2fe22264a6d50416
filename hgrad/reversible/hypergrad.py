r"""Hypergradients by reversible learning (Maclaurin, Duvenaud & Adams, ICML 2015, Algorithm 2).

The inner loop is SGD with momentum in the paper's convention,

.. math:: v_{t+1} = \gamma_t v_t - (1 - \gamma_t) \nabla_w L(w_t, \lambda, t), \qquad
          w_{t+1} = w_t + \alpha_t v_{t+1}, \qquad v_0 = 0,

run in exact fixed-point arithmetic (:mod:`hgrad.reversible.exact`). The reverse sweep starts from
:math:`w_T, v_T` and the information buffer and walks back, restoring :math:`w_t, v_t` bit for bit
while it accumulates, with :math:`\bar w = \nabla_w E(w_T)`, :math:`\bar v = 0`,

.. math::
   \bar\alpha_t = \bar w \cdot v_{t+1}, \quad \bar v \mathrel{+}= \alpha_t \bar w, \quad
   \bar\gamma_t = \bar v \cdot (v_t + \nabla L_t), \quad
   \bar w \mathrel{-}= (1 - \gamma_t) H_t \bar v, \quad
   \bar\lambda \mathrel{-}= (1 - \gamma_t) (\partial_\lambda \nabla_w L_t)^\top \bar v, \quad
   \bar v \leftarrow \gamma_t \bar v,

and finally :math:`\bar\lambda \mathrel{+}= (\partial_\lambda w_0)^\top \bar w` for initialization
hyperparameters. :math:`H_t \bar v` and the mixed term come from one forward-over-reverse product,
whose primal output is the gradient the reversal needs. Memory holds the current state, the
adjoints and the buffer: it does not grow with a stored trajectory, only with the buffer, by about
:math:`\log_2(1/\gamma)` bits per weight and step.

Exact reversal needs the gradient recomputed at :math:`w_t` in the reverse sweep to equal the forward
sweep's bit for bit. XLA compiles a computation by its context (what it fuses with, how it tiles a
sum), so two loops, one per sweep, need not compute the same gradient in the last bit: on an H100
10 of 32 small MLPs (float32 and float64) did not reverse exactly that way. With ``single_loop`` both
sweeps are the iterations of one loop whose body evaluates the gradient once for either direction,
which makes the two equal by construction (see :func:`_sweeps`); it is the default on accelerators.
On a CPU, where the two-loop program has reversed every model tried and costs less, two loops are
the default. Either way the result is checked, and an inexact reversal raises :class:`ReversalError`.

The hyperparameters (:class:`ReversibleHparams`): log step sizes and logit momenta, each a scalar, a
per-step schedule, or a pytree prefix of the parameters (per parameter group, e.g. per layer and
separately for weights and biases) of either; the training loss's hyperparameters (per-weight L2
strengths, the training data itself); and those of the initialization (``params0`` may be a
function of the hyperparameters: init scales).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hgrad import _checks
from hgrad.dynamics.base import at_step, broadcast_to_params
from hgrad.dynamics.hparams import log_positive, logit_unit
from hgrad.reversible import buffer as B
from hgrad.reversible import exact as E
from hgrad.reversible.materialize import materialized

__all__ = ["ReversibleHparams", "ReversibleResult", "FixedPointOverflowError", "ReversalError", "init_hparams",
           "reversible_hypergrad"]


class FixedPointOverflowError(OverflowError):
    """A weight, velocity or gradient term left the fixed-point range, or the buffer was full."""


class ReversalError(RuntimeError):
    """The reverse sweep did not end at the initial state bit for bit, so the hypergradient is not
    exact: the gradient it recomputed differed from the forward sweep's at some step."""


class ReversibleHparams(NamedTuple):
    """Hyperparameters of reversible SGD with momentum (see the module docstring)."""

    log_lr: Any
    logit_momentum: Any
    loss: Any = ()
    init: Any = ()


class ReversibleResult(NamedTuple):
    """What :func:`reversible_hypergrad` returns.

    Attributes:
      value: the outer objective :math:`E(w_T, \\lambda)`.
      grads: its gradient, a :class:`ReversibleHparams` like the input.
      final_params: :math:`w_T` (float, the parameters' structure and dtype).
      buffer_bits: information held in the buffer after the forward run, summed over weights.
      bits_per_weight_per_step: ``buffer_bits / (num_weights * num_steps)``; the entropy bound
        is :math:`\\log_2(1/\\gamma)` averaged over steps.
      buffer_capacity_bits: the memory allocated to the buffer (fixed-size arrays), in bits.
      exact: whether the reverse sweep ended exactly at :math:`w_0`, :math:`v_0 = 0` and an empty
        buffer: always ``True`` in a result that is returned (``False`` raises :class:`ReversalError`).
    """

    value: jax.Array
    grads: ReversibleHparams
    final_params: Any
    buffer_bits: jax.Array
    bits_per_weight_per_step: jax.Array
    buffer_capacity_bits: int
    exact: jax.Array


def init_hparams(lr, momentum, *, loss: Any = (), init: Any = (), num_steps: int | None = None,
                 dtype=None) -> ReversibleHparams:
    """Hyperparameters from step sizes > 0 and momenta in (0, 1), checked and stored as log / logit.

    Args:
      lr: :math:`\\alpha`: a number or a pytree of numbers (per parameter group).
      momentum: :math:`\\gamma`, strictly inside (0, 1) (exact reversal divides by it).
      loss, init: the training loss's and the initialization's hyperparameters, kept as given.
      num_steps: if given, make both schedules of that many (equal) entries.
    """
    for leaf in jax.tree.leaves(momentum):
        g = np.asarray(leaf, np.float64)
        if not np.all((g > 0) & (g < 1)):
            raise ValueError(f"momentum must lie strictly between 0 and 1 for exact reversal "
                             f"(the reverse step divides by it), got {g}")
    return ReversibleHparams(log_positive(lr, "lr", num_steps, dtype),
                             logit_unit(momentum, "momentum", num_steps, dtype), loss, init)


def _check_schedules(hparams: ReversibleHparams, params: Any, num_steps: int) -> None:
    for name in ("log_lr", "logit_momentum"):
        tree = getattr(hparams, name)
        broadcast_to_params(tree, params, name)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            if jnp.shape(leaf) not in ((), (num_steps,)):
                raise ValueError(f"hparams.{name}{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; "
                                 f"it must be a scalar or a schedule of shape ({num_steps},)")


def buffer_words_needed(hparams: ReversibleHparams, params: Any, num_steps: int, momentum_bits: int) -> int:
    """16-bit words per weight that the buffers fill: the most spills of any parameter group's
    buffer, counted from its momentum schedule by :func:`~hgrad.reversible.buffer.words_needed`.

    The count takes each numerator one lower than the momentum rounds to: the program computes its
    momenta in the hyperparameters' own precision, whose last bit may round a numerator the other
    way, and lower numerators never need fewer words (``tests/test_reversible_buffer.py``)."""
    broadcast_to_params(hparams.logit_momentum, params, "logit_momentum")
    logits = [np.broadcast_to(np.asarray(leaf, np.float64), (num_steps,))
              for leaf in jax.tree.leaves(hparams.logit_momentum)]
    with jax.enable_x64(True):  # also when called on its own, outside reversible_hypergrad
        numerators = [np.asarray(E.momentum_numerator(1 / (1 + np.exp(-x)), momentum_bits)) for x in logits]
    distinct = {n.tobytes(): n for n in numerators}.values()  # groups often share a schedule
    return max((B.words_needed(np.maximum(n - 1, 2), momentum_bits) for n in distinct), default=0)


DEFAULT_RADIX_BITS = {64: 41, 32: 28}  # the weights' fractional bits by storage width (ranges 1024 and 8)


def reversible_hypergrad(loss: Callable, outer: Callable, params0: Any, hparams: ReversibleHparams,
                         num_steps: int, *, radix_bits: int | None = None, velocity_radix_bits: int = 47,
                         momentum_bits: int = 16, buffer_words: int | None = None, weight_bits: int = 64,
                         single_loop: bool | None = None) -> ReversibleResult:
    """The hypergradient of ``outer(w_T, hparams)`` through reversible SGD with momentum.

    Args:
      loss: ``loss(params, hparams, t)``, the training loss at step ``t`` (pick the mini-batch
        from ``t``).
      outer: ``outer(params, hparams)``, a real scalar.
      params0: the initial parameters (a pytree of float arrays), or a function of ``hparams``
        returning them (initialization hyperparameters in ``hparams.init``).
      hparams: a :class:`ReversibleHparams` (see :func:`init_hparams`).
      num_steps: :math:`T`.
      radix_bits: :math:`R_w`, fractional bits of the fixed-point weights; every weight must stay
        below :math:`2^{51-R_w}` in magnitude (:math:`2^{31-R_w}` with ``weight_bits=32``). By
        default 41 (a range of 1024, a grid of :math:`2^{-41} \\approx 5 \\cdot 10^{-13}`), or
        28 with ``weight_bits=32`` (a range of 8, a grid of :math:`3.7 \\cdot 10^{-9}`, float32's
        spacing at 0.03).
      velocity_radix_bits: :math:`R_v`, fractional bits of the velocities; every velocity, and
        :math:`(1-\\gamma)` times every gradient entry, must stay below :math:`2^{51-R_v}` in magnitude
        (16 at the default). The exact run differs from the float one by up to
        :math:`\\gamma 2^{16-R_v}` per step in the velocity (:mod:`hgrad.reversible.exact`).
      momentum_bits: :math:`k`: momenta are rounded to multiples of :math:`2^{-k}` (16, the
        only value the buffer's bounds allow).
      buffer_words: 16-bit words per weight for the buffer's stack; by default the number the
        momenta need, counted from them (which must then be concrete; see :func:`buffer_words_needed`).
      weight_bits: 64 keeps the fixed-point weights between steps as integers held in float64; 32
        stores them as ``int32``, 4 bytes per weight instead of 8 (the state is then 12 bytes per
        weight with the 64-bit velocity), for a narrower range (:mod:`hgrad.reversible.exact`).
      single_loop: run both sweeps as one loop whose body evaluates the loss's gradient once for
        both directions, so that the reverse sweep recomputes it bit for bit by construction
        (:func:`_sweeps`), or as two loops, one per sweep, which XLA compiles separately. By default
        one loop on an accelerator and two on a CPU. Two loops rely on XLA compiling the gradient
        alike in both; on an H100 (jax 0.11.2) 10 of 32 small MLPs tried, float32 and float64, did
        not reverse exactly that way (``ReversalError``), and none in one loop. On a CPU no model
        tried has failed with two loops, and one loop costs more there: every iteration evaluates
        the linearized gradient and passes all carried values through a switch between the
        directions (benchmarks/reversible.py's workload, jitted: 5.1x the training run against 4.0x
        for two loops on a 2-core CPU; on an H100, measured before the last changes, 9.0-9.4x
        against 5.2-5.5x).

    Raises:
      hgrad.DivergenceError: the loss or its gradient became non-finite (naming the step).
      FixedPointOverflowError: a value left the fixed-point range (naming the step).
      ReversalError: the reverse sweep did not restore the initial state bit for bit (the loss's
        gradient was not recomputed identically: the loss must be deterministic).
      TypeError: the call is differentiated (``jax.grad``, ``jax.jvp``) with respect to ``hparams`` or
        ``params0``: the exact arithmetic's rounding has no useful derivative, so a derivative of
        the hypergradient needs :func:`hgrad.hypergrad` instead.
    """
    num_steps = _checks.check_num_steps(num_steps)
    _checks.check_floating(hparams, "hparams")
    _checks.check_finite(hparams, "hparams")
    if not isinstance(hparams, ReversibleHparams):
        raise TypeError("hparams must be a hgrad.reversible.ReversibleHparams (see init_hparams)")
    hparams = _without_derivative(hparams)
    if not callable(params0):
        params0 = _without_derivative(params0)
    if not B.MIN_MOMENTUM_BITS <= momentum_bits <= B.MAX_MOMENTUM_BITS:
        raise ValueError(f"momentum_bits must be in [{B.MIN_MOMENTUM_BITS}, {B.MAX_MOMENTUM_BITS}] (the "
                         f"buffer's bounds hold there), got {momentum_bits}")
    if weight_bits not in (32, 64):
        raise ValueError(f"weight_bits must be 32 or 64, got {weight_bits!r}")
    if radix_bits is None:
        radix_bits = DEFAULT_RADIX_BITS[weight_bits]
    if weight_bits == 32 and not radix_bits <= E.COMPACT_LIMIT_BITS - 1:
        raise ValueError(f"with weight_bits=32, radix_bits must be at most {E.COMPACT_LIMIT_BITS - 1} (weights "
                         f"are stored below 2^{E.COMPACT_LIMIT_BITS}), got {radix_bits}")
    for name, bits in (("radix_bits", radix_bits), ("velocity_radix_bits", velocity_radix_bits)):
        if not 8 <= bits <= E.LIMIT_BITS - 1:
            raise ValueError(f"{name} must be between 8 and {E.LIMIT_BITS - 1} (values are held below "
                             f"2^{E.LIMIT_BITS}), got {bits}")
    with jax.enable_x64(True):
        template = params0(hparams) if callable(params0) else params0
        _checks.check_finite(template, "params0")
        _check_schedules(hparams, template, num_steps)
        if buffer_words is None:
            if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(hparams.logit_momentum)):
                raise ValueError("the buffer's size is computed from the momenta, which are traced here "
                                 "(under jit or grad): pass buffer_words (see buffer_words_needed)")
            buffer_words = buffer_words_needed(hparams, template, num_steps, momentum_bits)
        config = (loss, outer, params0 if callable(params0) else None, num_steps, radix_bits,
                  velocity_radix_bits, momentum_bits, int(buffer_words), weight_bits)
        init = None if callable(params0) else params0
        if single_loop is None:
            single_loop = jax.default_backend() != "cpu"
        if single_loop:
            result, failed = _sweeps(config, hparams, init)
        else:
            state, failed = _forward(config, hparams, init)
        if isinstance(failed, jax.core.Tracer):
            no_failure = (jnp.asarray(_checks.NO_DIVERGENCE, jnp.int32),) * 2
            diverged, overflowed = jax.lax.cond(failed, lambda: _diagnose(config, hparams, init),
                                                lambda: no_failure)
        elif bool(failed):
            diverged, overflowed = (int(x) for x in _diagnose(config, hparams, init))
            if diverged == overflowed == _checks.NO_DIVERGENCE:  # the two sweeps disagree: a bug
                raise RuntimeError("the forward sweep failed, but its per-step rerun found no failing step")
        else:
            diverged = overflowed = _checks.NO_DIVERGENCE
        _checks.raise_if_diverged(diverged, num_steps, "training loss or gradient")
        _raise_if_overflowed(overflowed, num_steps, radix_bits, velocity_radix_bits, weight_bits)
        if not single_loop:
            result = _reverse(config, hparams, init, state)
        _checks.on_host(_check_exact, result.exact)
        capacity = sum(_allocated_bits(int(np.size(x)), int(buffer_words)) for x in jax.tree.leaves(template))
        return result._replace(buffer_capacity_bits=capacity)


@jax.custom_jvp
def _without_derivative(tree):
    """``tree``; differentiating through it raises (see the error) instead of returning wrong
    derivatives: the exact arithmetic rounds at every step, and the rounding's derivative is 0."""
    return tree


@_without_derivative.defjvp
def _without_derivative_jvp(primals, tangents):
    raise TypeError(
        "hgrad.reversible_hypergrad cannot be differentiated (under jax.grad, jax.jvp, ...): its exact "
        "fixed-point arithmetic rounds at every step, so JAX would differentiate the rounding (to 0) and "
        "return a wrong derivative of the hypergradient. For derivatives of a hypergradient, write the "
        "training step for hgrad.hypergrad (method=hgrad.Reverse() or hgrad.Forward()), which JAX can "
        "differentiate")


@functools.lru_cache(maxsize=256)
def _allocated_bits(num_weights: int, words: int) -> int:
    """Bits a buffer for ``num_weights`` weights with ``words`` words each occupies (cached: tracing
    :func:`~hgrad.reversible.buffer.empty` costs milliseconds on every call otherwise)."""
    return 8 * B.memory_bytes(jax.eval_shape(functools.partial(B.empty, num_weights, words)))


def _check_exact(exact) -> None:
    if not bool(np.asarray(exact)):
        raise ReversalError(
            "the reverse sweep did not restore w_0, v_0 = 0 and an empty buffer bit for bit, so the "
            "hypergradient is not exact: the gradient recomputed at some step differed from the forward "
            "sweep's. The loss must be a deterministic function of (params, hparams, t): no randomness "
            "drawn anew on each call (from a host callback, say), and on a GPU no nondeterministic "
            "reductions (scatter-add, as in an embedding's gradient: set "
            "XLA_FLAGS=--xla_gpu_deterministic_ops=true). With single_loop=False (the default on a CPU), "
            "XLA may also have compiled the gradient differently in the two sweeps: pass single_loop=True.")


def _raise_if_overflowed(step, num_steps: int, radix_bits: int, velocity_radix_bits: int, weight_bits: int) -> None:
    limit = E.WEIGHT_LIMIT_BITS[weight_bits]

    def check(step):
        step = int(np.asarray(step))
        if step >= 0:
            raise FixedPointOverflowError(
                f"fixed-point overflow at step {step} of {num_steps}: a weight exceeded "
                f"2^{limit - radix_bits} in magnitude (radix_bits={radix_bits}, weight_bits={weight_bits}), or a velocity or "
                f"gradient term 2^{E.LIMIT_BITS - velocity_radix_bits} (velocity_radix_bits="
                f"{velocity_radix_bits}), or the information buffer was full. Lower radix_bits or "
                "velocity_radix_bits (or, with weight_bits=32, use 64), or the step size, or pass a larger "
                "buffer_words.")

    _checks.on_host(check, step)


class _Problem(NamedTuple):
    """What both sweeps derive from the configuration: the initial parameters and their layout."""

    params0: Any
    treedef: Any
    shapes: list
    dtype: Any


def _setup(config, hparams, init) -> _Problem:
    params0_fn = config[2]
    params0 = params0_fn(hparams) if params0_fn is not None else init
    leaves, treedef = jax.tree.flatten(params0)
    dtype = jnp.result_type(*leaves)
    return _Problem(params0, treedef, [jnp.shape(x) for x in leaves], dtype)


def _model_float_parts(problem: _Problem, x: jax.Array, radix_bits: int) -> tuple[jax.Array, jax.Array]:
    """A fixed-point array as ``(y, scale)`` in the model's dtype, ``y * scale`` its float value.

    Where the dtype's range holds every integer below :math:`2^{52}` and :math:`2^{-R}` as a normal
    number (float32, bfloat16, float64), ``y`` is the integer converted and ``scale`` is
    :math:`2^{-R}`: a power of two commutes with rounding there, so ``y * scale`` has the same bits
    as scaling in float64 first, with the multiplication in the narrower type, or taken out of a
    reduction (XLA otherwise writes out a float64 broadcast of the scale at every step). Elsewhere
    ``y`` is the scaled value and ``scale`` is 1."""
    info = jnp.finfo(problem.dtype)
    if info.maxexp > E.LIMIT_BITS + 1 and radix_bits < -info.minexp:
        return x.astype(problem.dtype), jnp.asarray(2.0 ** -radix_bits, problem.dtype)
    return E.to_float(x, radix_bits).astype(problem.dtype), jnp.asarray(1, problem.dtype)


def _model_float(problem: _Problem, x: jax.Array, radix_bits: int) -> jax.Array:
    """A fixed-point array as a float array of the model's dtype."""
    y, scale = _model_float_parts(problem, x, radix_bits)
    return y * scale


def _as_params(problem: _Problem, states, radix_bits: int):
    """The float parameters of the fixed-point weights, one state per leaf."""
    return jax.tree.unflatten(problem.treedef, [
        _model_float(problem, s.w, radix_bits).reshape(shape) for s, shape in zip(states, problem.shapes)])


def _rates(h: ReversibleHparams, problem: _Problem, t) -> tuple[list, list]:
    """Step size and momentum of each parameter leaf at step ``t`` (scalars: they are per group)."""
    lr = jax.tree.leaves(broadcast_to_params(h.log_lr, problem.params0, "log_lr"))
    mom = jax.tree.leaves(broadcast_to_params(h.logit_momentum, problem.params0, "logit_momentum"))
    return [jnp.exp(at_step(x, t)) for x in lr], [jax.nn.sigmoid(at_step(x, t)) for x in mom]


def _flat(tree) -> list:
    return [x.reshape(-1) for x in jax.tree.leaves(tree)]


def _initial_weights(problem: _Problem, radix_bits: int, weight_bits: int) -> tuple[list, jax.Array]:
    """The fixed-point :math:`w_0`, flat per leaf, stored in ``weight_bits``, and whether it
    overflowed the fixed-point range."""
    def fixed(x):
        w, bad = E.to_fixed(x, radix_bits)
        if weight_bits == 32:
            w, narrow = E.compact(w)
            bad = bad | narrow
        return w, bad

    pairs = [fixed(x) for x in _flat(problem.params0)]
    return [w for w, _ in pairs], functools.reduce(jnp.logical_or, [bad for _, bad in pairs])


def _initial_states(problem: _Problem, radix_bits: int, words: int, weight_bits: int) -> tuple[list, list, jax.Array]:
    """The fixed-point :math:`w_0` per leaf, the exact states at step 0 (:math:`v_0 = 0`, empty
    buffers) and whether :math:`w_0` overflowed the fixed-point range."""
    w0, bad = _initial_weights(problem, radix_bits, weight_bits)
    return w0, [E.ExactState(w, jnp.zeros(w.shape, jnp.float64), B.empty(w.size, words)) for w in w0], bad


def _buffer_bits(states) -> jax.Array:
    """The information held in the buffers of ``states``, summed over weights."""
    return sum(jnp.sum(B.size_in_bits(s.buffer)) for s in states)


def _rates_table(hparams: ReversibleHparams, problem: _Problem, num_steps: int):
    """Every step's step sizes and momenta (per leaf, shape ``[T]``), and their VJP back to the
    hyperparameters, which pulls back the adjoints of all steps at once (per step it would cost
    O(T) each step for schedules). Every sweep reads its rates from this table, so the forward
    and reverse steps use the same bits however XLA compiles them."""
    ts = jnp.arange(num_steps, dtype=jnp.int32)
    return jax.vjp(lambda h: jax.vmap(lambda t: _rates(h, problem, t))(ts), hparams)


def _numerators(gammas: list, momentum_bits: int) -> list:
    """The momenta as numerators over :math:`2^k` (:func:`~hgrad.reversible.exact.momentum_numerator`), per leaf."""
    return [E.momentum_numerator(g, momentum_bits) for g in gammas]


def _finish(problem: _Problem, params0_fn, hparams, *, states, w0, value, final_params, buffer_bits,
            w_bar, h_bar, rates_vjp, rate_bars, num_steps: int) -> ReversibleResult:
    """What both programs do once the reverse sweep has ended at ``states``: add the step sizes'
    and momenta's share (``rate_bars``, per leaf ``[T]``, pulled back by ``rates_vjp``) and the
    initialization's (:math:`(\\partial_\\lambda w_0)^\\top \\bar w`) to ``h_bar``, and check that the
    sweep restored :math:`w_0`, :math:`v_0 = 0` and an empty buffer bit for bit."""
    (h_rates,) = rates_vjp(rate_bars)
    h_bar = jax.tree.map(jnp.add, h_bar, h_rates)
    if params0_fn is not None:
        _, init_vjp = jax.vjp(lambda h: _flat(params0_fn(h)), hparams)
        (h_init,) = init_vjp(w_bar)
        h_bar = jax.tree.map(jnp.add, h_bar, h_init)
    exact = jnp.all(jnp.stack([
        jnp.all(s.w == w) & jnp.all(s.v == 0) & jnp.all(s.buffer.count == 0) & jnp.all(s.buffer.head == B.HEAD_LOW)
        for s, w in zip(states, w0)]))
    num_weights = sum(w.size for w in w0)
    return ReversibleResult(
        value=value, grads=h_bar, final_params=final_params, buffer_bits=buffer_bits,
        bits_per_weight_per_step=buffer_bits / (num_weights * num_steps),
        buffer_capacity_bits=0, exact=exact,  # set outside jit, where it stays a Python int
    )


def _step_back(problem: _Problem, states, w_bar, v_bar, h_bar, alphas, gammas, numerators, derivatives, *,
               momentum_bits: int, velocity_radix_bits: int, ordered: jax.Array | None = None):
    """One step of the reverse sweep's recursion (the module docstring), shared by both programs.

    Args:
      states: the exact states holding the restored :math:`w_t` and :math:`v_{t+1}`.
      w_bar, v_bar, h_bar: the adjoints after step :math:`t`.
      alphas, gammas, numerators: step :math:`t`'s step sizes, momenta and momentum numerators, per leaf.
      derivatives: ``derivatives(states, tangent)`` gives, at :math:`w_t` (held in ``states``), the
        gradient (flat, per leaf: the one the forward sweep used, bit for bit), :math:`H_t` times
        ``tangent`` and the mixed term.
      ordered: a boolean scalar, true but known only at run time, or ``None``. Given, the states,
        the updated :math:`\\bar v` and :math:`\\bar\\alpha_t` pass through one
        :func:`~hgrad.reversible.materialize.materialized`. Every derivative, and so the updates of
        :math:`v` and :math:`\\bar w`, then depends on :math:`\\bar\\alpha_t = \\bar w \\cdot v_{t+1}`;
        the parameters are converted from the restored weights as stored, not recomputed from the
        overwritten ones; and no update of :math:`\\bar v` reads the old :math:`\\bar w`. So XLA
        updates the weights, :math:`v`, :math:`\\bar v` and :math:`\\bar w` in place after the
        operations that read their old values, instead of copying them at every step.
    Returns:
      The states holding :math:`w_t` and :math:`v_t` with the buffer before step :math:`t`, the
      per-weight overflow masks, the adjoints before step :math:`t`, and step :math:`t`'s
      :math:`\\bar\\alpha_t` and :math:`\\bar\\gamma_t` (per leaf).
    """
    as_float = functools.partial(_model_float, problem, radix_bits=velocity_radix_bits)  # velocities
    def alpha_bar_of(wb, v, a):  # the velocity's scale out of the reduction
        y, scale = _model_float_parts(problem, v, velocity_radix_bits)
        return (jnp.vdot(wb, y) * scale).astype(a.dtype)

    alpha_bar = [alpha_bar_of(wb, s.v, a) for wb, s, a in zip(w_bar, states, alphas)]
    alphas_, gammas_ = ([x.astype(problem.dtype) for x in xs] for xs in (alphas, gammas))
    v_bar = [vb + a * wb for vb, a, wb in zip(v_bar, alphas_, w_bar)]
    if ordered is not None:
        states, v_bar, alpha_bar = materialized((states, v_bar, alpha_bar), ordered)
    tangent = jax.tree.unflatten(problem.treedef, [
        (-(1 - m) * vb).reshape(shape) for m, vb, shape in zip(gammas_, v_bar, problem.shapes)])
    grads, hvp, mixed = derivatives(states, tangent)
    unstepped = [E.unstep_velocity(s, g, n, momentum_bits=momentum_bits, velocity_radix_bits=velocity_radix_bits,
                                   ordered=ordered) for s, g, n in zip(states, grads, numerators)]
    states = [s for s, _ in unstepped]
    gamma_bar = [jnp.vdot(vb, as_float(s.v) + g).astype(m.dtype) for vb, s, g, m in zip(v_bar, states, grads, gammas)]
    return (states, [bad for _, bad in unstepped], [wb + hv for wb, hv in zip(w_bar, _flat(hvp))],
            [m * vb for m, vb in zip(gammas_, v_bar)], jax.tree.map(jnp.add, h_bar, mixed), alpha_bar, gamma_bar)


def _run_forward(config, hparams, init, *, per_step: bool):
    """The forward sweep. Each exact step returns a mask of overflowed weights; ``per_step=False``
    ORs the masks over the run and reduces once at the end (a reduction over every weight at every
    step would cost as much as the integer step itself on a CPU), ``per_step=True`` reduces each
    step's masks to name the first failing step (:func:`_diagnose`, run only after a failure)."""
    loss, outer, params0_fn, num_steps, radix_bits, velocity_radix_bits, momentum_bits, words, weight_bits = config
    problem = _setup(config, hparams, init)
    kw = dict(momentum_bits=momentum_bits, radix_bits=radix_bits, velocity_radix_bits=velocity_radix_bits)
    _, states0, bad0 = _initial_states(problem, radix_bits, words, weight_bits)
    (alphas, gammas), _ = _rates_table(hparams, problem, num_steps)
    ts = jnp.arange(num_steps, dtype=jnp.int32)
    xs = (ts, alphas, _numerators(gammas, momentum_bits))

    def step(states, x):
        t, alphas, numerators = x
        # The parameters converted once and stored, for both the model's forward product and its
        # transpose in the backward pass to read: XLA otherwise converts them in each, and the
        # second conversion, which the update of the weights does not wait for, has XLA copy the
        # old weights at every step (see hgrad.reversible.materialize).
        params = materialized(_as_params(problem, states, radix_bits), t >= 0)
        value, grads = jax.value_and_grad(loss)(params, hparams, t)
        stepped = [E.step(s, g, a, n, ordered=t >= 0, **kw)
                   for s, g, a, n in zip(states, _flat(grads), alphas, numerators)]
        return [s for s, _ in stepped], value, grads, [bad for _, bad in stepped]

    if per_step:
        def body(states, x):
            states, value, grads, bad = step(states, x)
            finite = jnp.isfinite(value) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in _flat(grads)]))
            return states, (finite, ~jnp.any(jnp.stack([jnp.any(m) for m in bad])))

        _, (finite, fits) = jax.lax.scan(body, states0, xs)
        fits = fits.at[0].set(fits[0] & ~bad0)
        return _first_false(finite, ts), _first_false(fits, ts)

    def body(carry, x):
        states, finite, masks = carry
        states, value, _, bad = step(states, x)
        return (states, finite & jnp.isfinite(value), [m | b for m, b in zip(masks, bad)]), None

    masks0 = [jnp.zeros(s.w.shape, bool) for s in states0]
    (states, finite, masks), _ = jax.lax.scan(body, (states0, jnp.asarray(True), masks0), xs)
    failed = ~finite | bad0 | jnp.any(jnp.stack([jnp.any(m) for m in masks]))
    return states, failed


def _first_false(ok: jax.Array, ts: jax.Array) -> jax.Array:
    """The first ``ts[i]`` with ``ok[i]`` False, else ``NO_DIVERGENCE`` (``int32``).

    A masked minimum rather than ``argmin`` (:func:`hgrad._checks.first_nonfinite_step`): this
    sweep is traced with 64-bit types on, and when the caller's ``jax.jit`` was traced with them
    off, an ``argmin`` traced here lowers with an index type that disagrees with its signature."""
    last = jnp.iinfo(jnp.int32).max
    first = jnp.min(jnp.where(ok, last, ts.astype(jnp.int32)))
    return jnp.where(first == last, _checks.NO_DIVERGENCE, first).astype(jnp.int32)


_forward = jax.jit(functools.partial(_run_forward, per_step=False), static_argnums=0)
_diagnose = jax.jit(functools.partial(_run_forward, per_step=True), static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _reverse(config, hparams, init, final_states):
    loss, outer, params0_fn, num_steps, radix_bits, velocity_radix_bits, momentum_bits, words, weight_bits = config
    problem = _setup(config, hparams, init)
    radices = dict(radix_bits=radix_bits, velocity_radix_bits=velocity_radix_bits)
    final_params = _as_params(problem, final_states, radix_bits)
    value, (w_bar_tree, h_bar) = jax.value_and_grad(outer, argnums=(0, 1))(final_params, hparams)
    grad_loss = jax.grad(loss, argnums=(0, 1))
    (alphas, gammas), rates_vjp = _rates_table(hparams, problem, num_steps)
    ts = jnp.arange(num_steps, dtype=jnp.int32)

    def body(carry, x):
        states, w_bar, v_bar, h_bar = carry
        t, alphas, gammas, numerators = x
        states = [E.unstep_position(s, a, **radices) for s, a in zip(states, alphas)]

        def derivatives(states, tangent):
            # One forward-over-reverse product: the gradient (needed bit for bit to undo the velocity
            # update), H v_bar and the mixed term, all at the restored w_t.
            params = _as_params(problem, states, radix_bits)
            (grads, _), (hvp, mixed) = jax.jvp(lambda w: grad_loss(w, hparams, t), (params,), (tangent,))
            return _flat(grads), hvp, mixed

        states, _, w_bar, v_bar, h_bar, alpha_bar, gamma_bar = _step_back(
            problem, states, w_bar, v_bar, h_bar, alphas, gammas, numerators, derivatives,
            momentum_bits=momentum_bits, velocity_radix_bits=velocity_radix_bits, ordered=t >= 0)
        return (states, w_bar, v_bar, h_bar), (alpha_bar, gamma_bar)

    w_bar0 = [x.astype(problem.dtype) for x in _flat(w_bar_tree)]
    carry0 = (final_states, w_bar0, [jnp.zeros_like(x) for x in w_bar0], h_bar)
    (states, w_bar, _, h_bar), rate_bars = jax.lax.scan(
        body, carry0, (ts, alphas, gammas, _numerators(gammas, momentum_bits)), reverse=True)
    w0, _ = _initial_weights(problem, radix_bits, weight_bits)
    return _finish(problem, params0_fn, hparams, states=states, w0=w0, value=value, final_params=final_params,
                   buffer_bits=_buffer_bits(final_states),
                   w_bar=w_bar, h_bar=h_bar, rates_vjp=rates_vjp, rate_bars=rate_bars, num_steps=num_steps)


class _Carry(NamedTuple):
    """What the loop of :func:`_sweeps` carries: the exact state, the forward sweep's failure flags,
    and what the reverse sweep accumulates (zeros until the turn)."""

    states: list  # one ExactState per parameter leaf
    finite: jax.Array  # every training loss so far was finite
    masks: list  # per weight: some step overflowed there
    value: jax.Array  # E(w_T)
    final_params: Any  # w_T
    buffer_bits: jax.Array  # held in the buffer at the turn
    w_bar: list
    v_bar: list
    h_bar: Any


@functools.partial(jax.jit, static_argnums=0)
def _sweeps(config, hparams, init):
    """Both sweeps, as the 2T iterations of one loop whose body evaluates the training loss (``single_loop``).

    Exact reversal needs the gradient recomputed at :math:`w_t` in the reverse sweep to equal the
    forward sweep's bit for bit. Nothing promises that of two differently compiled programs, or of
    two places in one: XLA fuses and tiles a computation by its context, which changes the order of
    its sums (on a GPU a third of small float32 and float64 MLPs tried did not reverse exactly with
    one loop per sweep). So the loss and its gradient appear once in the program, at the top of the
    loop body, linearized (:func:`jax.linearize`) so that the reverse sweep gets :math:`H_t \bar v`
    and the mixed term from the same evaluation without recomputing it; a switch then takes the
    forward step (iterations :math:`i < T`, step :math:`t = i`; the last one also takes the outer
    gradient and restores :math:`w_{T-1}`) or the reverse step (:math:`t = 2T - 1 - i`, which ends by
    restoring :math:`w_{t-1}`, so that the next iteration's gradient is taken at the restored
    weights). The step sizes and momenta of all steps are computed once, before the loop, for the
    same reason. Returns the result and whether the forward sweep failed (a non-finite loss or a
    fixed-point overflow)."""
    loss, outer, params0_fn, num_steps, radix_bits, velocity_radix_bits, momentum_bits, words, weight_bits = config
    problem = _setup(config, hparams, init)
    kw = dict(radix_bits=radix_bits, velocity_radix_bits=velocity_radix_bits)
    (alphas, gammas), rates_vjp = _rates_table(hparams, problem, num_steps)
    numerators = _numerators(gammas, momentum_bits)
    w0, states0, bad0 = _initial_states(problem, radix_bits, words, weight_bits)
    zeros = [jnp.zeros(w.shape, problem.dtype) for w in w0]

    def restore_position(states, t, where=True):
        """``states`` with :math:`w_t` restored from :math:`w_{t+1}` and :math:`v_{t+1}` (where ``where``)."""
        return [s._replace(w=jnp.where(where, E.unstep_position(s, a[t], **kw).w, s.w))
                for s, a in zip(states, alphas)]

    def forward(c: _Carry, t, value, grads, lin) -> tuple[_Carry, list]:
        stepped = [E.step(s, g, a[t], n[t], momentum_bits=momentum_bits, spilled=True, **kw)
                   for s, g, a, n in zip(c.states, grads, alphas, numerators)]
        return c._replace(states=[s for s, _ in stepped], finite=c.finite & jnp.isfinite(value)), \
            [bad for _, bad in stepped]

    def turn(c: _Carry, t, value, grads, lin) -> tuple[_Carry, list]:
        c, bad = forward(c, t, value, grads, lin)
        final_params = _as_params(problem, c.states, radix_bits)
        value, (w_bar, h_bar) = jax.value_and_grad(outer, argnums=(0, 1))(final_params, hparams)
        return c._replace(states=restore_position(c.states, num_steps - 1), value=value,
                          final_params=final_params, buffer_bits=_buffer_bits(c.states),
                          w_bar=[x.astype(problem.dtype) for x in _flat(w_bar)], h_bar=h_bar), bad

    def reverse(c: _Carry, t, value, grads, lin) -> tuple[_Carry, list, tuple]:
        # c.states holds w_t (restored) and v_{t+1}; grads is the gradient at w_t
        states, bad, w_bar, v_bar, h_bar, alpha_bar, gamma_bar = _step_back(
            problem, c.states, c.w_bar, c.v_bar, c.h_bar, [a[t] for a in alphas], [g[t] for g in gammas],
            [n[t] for n in numerators], lambda _, tangent: (grads, *lin(tangent)[1]),
            momentum_bits=momentum_bits, velocity_radix_bits=velocity_radix_bits)
        c = c._replace(states=restore_position(states, jnp.maximum(t - 1, 0), where=t > 0),
                       w_bar=w_bar, v_bar=v_bar, h_bar=h_bar)
        return c, bad, (alpha_bar, gamma_bar)

    no_rate_bars = ([jnp.zeros((), a.dtype) for a in alphas], [jnp.zeros((), g.dtype) for g in gammas])

    def without_stacks(c: _Carry) -> _Carry:
        """``c`` without the buffers' stacks and the overflow masks: the switch neither writes nor
        returns them, so XLA need not copy them into its result at each step (the stack is
        written only by the spill before the switch, and read there by the reverse step)."""
        return c._replace(states=[s._replace(buffer=s.buffer._replace(words=None, written_at=None))
                                  for s in c.states], masks=None)

    def body(c: _Carry, i):
        forward_ = i < num_steps
        t = jnp.where(forward_, i, 2 * num_steps - 1 - i)
        params = _as_params(problem, c.states, radix_bits)
        (value, (grads, _)), lin = jax.linearize(
            lambda w: jax.value_and_grad(loss, argnums=(0, 1))(w, hparams, t), params)
        # Computed once, before the switch: the barrier keeps XLA from moving any part of it into
        # the branches (where each branch would compute that part its own way).
        value, grads, lin = jax.lax.optimization_barrier((value, _flat(grads), lin))
        c = c._replace(states=[s._replace(buffer=B.spill(s.buffer, forward_ & B.needs_spill(s.buffer, n[t], momentum_bits)))
                               for s, n in zip(c.states, numerators)])
        def branch(take):
            def run(c):
                c, bad, *rate_bars = take(c, t, value, grads, lin)
                return without_stacks(c), bad, (rate_bars[0] if rate_bars else no_rate_bars)
            return run

        index = jnp.where(i < num_steps - 1, 0, jnp.where(i == num_steps - 1, 1, 2))
        light, bad, rate_bars = jax.lax.switch(index, [branch(forward), branch(turn), branch(reverse)], c)
        states = [s._replace(buffer=s.buffer._replace(words=old.buffer.words, written_at=old.buffer.written_at))
                  for s, old in zip(light.states, c.states)]
        masks = [m | (forward_ & b) for m, b in zip(c.masks, bad)]
        return light._replace(states=states, masks=masks), rate_bars

    outer_shape = jax.eval_shape(outer, problem.params0, hparams)
    carry0 = _Carry(
        states=states0, finite=jnp.asarray(True), masks=[jnp.zeros(w.shape, bool) for w in w0],
        value=jnp.zeros(outer_shape.shape, outer_shape.dtype),
        final_params=jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), problem.dtype), problem.params0),
        buffer_bits=jnp.zeros((), jnp.float64),  # B.size_in_bits's type
        w_bar=zeros, v_bar=zeros, h_bar=jax.tree.map(jnp.zeros_like, hparams))
    c, (alpha_bars, gamma_bars) = jax.lax.scan(body, carry0, jnp.arange(2 * num_steps, dtype=jnp.int32))
    failed = ~c.finite | bad0 | jnp.any(jnp.stack([jnp.any(m) for m in c.masks]))
    # the adjoints of every step's rates come from the reverse iterations, last step first
    rate_bars = ([x[num_steps:][::-1] for x in alpha_bars], [x[num_steps:][::-1] for x in gamma_bars])
    return _finish(problem, params0_fn, hparams, states=c.states, w0=w0, value=c.value,
                   final_params=c.final_params, buffer_bits=c.buffer_bits, w_bar=c.w_bar, h_bar=c.h_bar,
                   rates_vjp=rates_vjp, rate_bars=rate_bars, num_steps=num_steps), failed
