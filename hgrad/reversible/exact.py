r"""SGD with momentum in exact fixed-point arithmetic, and its exact inverse.

The update, in Maclaurin, Duvenaud & Adams's (2015) convention, with per-step step size
:math:`\alpha_t` and momentum :math:`\gamma_t`:

.. math:: v_{t+1} = \gamma_t v_t - (1 - \gamma_t) \nabla L(w_t), \qquad w_{t+1} = w_t + \alpha_t v_{t+1}.

Weights and velocities are fixed-point integers: :math:`w = W / 2^{R_w}` and :math:`v = V / 2^{R_v}`,
with ``radix_bits`` :math:`R_w` and ``velocity_radix_bits`` :math:`R_v` fractional bits (velocities
are bounded by the gradients, weights are not, so the velocity can afford the finer grid). The
momentum is the rational :math:`\gamma = n / 2^k` nearest to the requested value (``momentum_bits``
:math:`= k`; :math:`2 \le n < 2^k`), and the decay :math:`\gamma V` is computed exactly with the
information buffer (:mod:`hgrad.reversible.buffer`). The gradient term and the position update are
rounded to the grid, but each is a function of values that are known again when stepping back
(:math:`\nabla L(w_t)` once :math:`w_t` is restored; :math:`V_{t+1}`), so subtracting the same
rounded number undoes it exactly:

.. math:: W_t = W_{t+1} - \mathrm{round}(\alpha_t V_{t+1} 2^{R_w - R_v}), \qquad
          \gamma_t V_t = V_{t+1} + \mathrm{round}\big((1 - \gamma_t) \nabla L(w_t)\, 2^{R_v}\big).

The decay :math:`V \mapsto \lfloor V / 2^k \rfloor n + p` takes its low digits :math:`p < n` from the
buffer, so the exact trajectory differs from the float one by up to :math:`n` velocity grid units per
step, :math:`\gamma 2^{k - R_v}`: with :math:`k = 16` and :math:`R_v = 47` about :math:`4 \cdot 10^{-10}`.

**The integers are held in float64.** Every integer this module computes stays below :math:`2^{52}`
in magnitude, where float64 represents integers exactly and adds, subtracts, multiplies (when the
product stays below :math:`2^{53}`) and floors them exactly. Float64 lanes are what a CPU's vector
units (AVX2 has no 64-bit integer multiply and no int64-to-float conversion) and a GPU do fast, so the
exact step costs a few float operations per weight; with 64-bit integers it cost several times more.
The price is range: every stored value and every term added to one must stay below :math:`2^{51}`
(so that sums stay below :math:`2^{52}`): :math:`|w| < 2^{51 - R_w}` and :math:`|v| < 2^{51 - R_v}`,
1024 and 16 at the defaults. :func:`step` and :func:`unstep` return a mask, one entry per weight, set
where a value does not fit (a fixed-point overflow, a non-finite gradient included), and the callers
raise an error naming the step.

**Weights may be stored in 32 bits.** Between steps the weights can also be kept as ``int32``
(:func:`compact`): the step computes in float64 as above and stores the new weights back, flagging
any that reach :math:`2^{31}` (:math:`|w| < 2^{31 - R_w}`, 8 with :math:`R_w = 28`, whose grid
:math:`2^{-28} \approx 3.7 \cdot 10^{-9}` is float32's spacing at 0.03). That halves the weights'
share of the state; the velocities keep their 64 bits, as the decay's rounding, :math:`\gamma
2^{k - R_v}`, needs a fine velocity grid.

Needs 64-bit types (``jax.enable_x64``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hgrad.reversible import buffer as B
from hgrad.reversible.materialize import materialized

__all__ = ["ExactState", "LIMIT_BITS", "COMPACT_LIMIT_BITS", "WEIGHT_LIMIT_BITS", "momentum_numerator",
           "to_fixed", "to_float", "compact", "limit_bits", "step", "unstep"]

LIMIT_BITS = 51  # every stored integer and every term added to one is below 2^51 in magnitude
_LIMIT = float(2 ** LIMIT_BITS)
COMPACT_LIMIT_BITS = 31  # weights stored as int32 stay below 2^31 in magnitude
WEIGHT_LIMIT_BITS = {64: LIMIT_BITS, 32: COMPACT_LIMIT_BITS}  # the weights' range by storage width


class ExactState(NamedTuple):
    """Weights and velocities as fixed-point integers (held in float64), and the information buffer.

    Attributes:
      w: ``float64[n]``, the weights times :math:`2^{R_w}`, integers (or ``int32[n]``, see
        :func:`compact`).
      v: ``float64[n]``, the velocities times :math:`2^{R_v}`, integers.
      buffer: the :class:`~hgrad.reversible.buffer.InfoBuffer` of the bits the decay destroyed.
    """

    w: jax.Array
    v: jax.Array
    buffer: B.InfoBuffer


def limit_bits(w: jax.Array) -> int:
    """The weights' range, :math:`2^{b}`, for their storage type: 31 for ``int32``, else 51."""
    return WEIGHT_LIMIT_BITS[32 if w.dtype == jnp.int32 else 64]


def compact(w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Fixed-point weights (integers held in float64) stored as ``int32``, and whether any entry
    is out of that range (at or past :math:`2^{31}` in magnitude)."""
    return w.astype(jnp.int32), jnp.any(~(jnp.abs(w) < 2.0 ** COMPACT_LIMIT_BITS))


def momentum_numerator(gamma: jax.Array, momentum_bits: int) -> jax.Array:
    """:math:`n` with :math:`n / 2^k` the representable momentum nearest to ``gamma`` (an integer
    held in float64)."""
    scaled = jnp.round(jnp.asarray(gamma, jnp.float64) * 2.0 ** momentum_bits)
    return jnp.clip(scaled, 2, 2 ** momentum_bits - 1)


def to_fixed(x: jax.Array, radix_bits: int) -> tuple[jax.Array, jax.Array]:
    """``round(x * 2^R)`` (float64), and whether any entry overflowed (a magnitude at or past
    :math:`2^{51}`, or NaN)."""
    scaled = jnp.asarray(x, jnp.float64) * 2.0 ** radix_bits
    return _round(scaled), jnp.any(~(jnp.abs(scaled) < _LIMIT))


def to_float(x: jax.Array, radix_bits: int) -> jax.Array:
    """The real value of a fixed-point integer, in float64."""
    return jnp.asarray(x, jnp.float64) * 2.0 ** -radix_bits


def _round(x: jax.Array, out_of_range: float = 0.0) -> jax.Array:
    """Round float64 ``x`` to an integer, ``out_of_range`` where it is out of range: 0 where the
    caller flags that itself, NaN to flag whatever the result is added to."""
    return jnp.round(jnp.where(jnp.abs(x) < _LIMIT, x, out_of_range))


def _gradient_term(grad, n, momentum_bits, velocity_radix_bits):
    """:math:`(1 - n/2^k) \\nabla L\\, 2^{R_v}`, before rounding."""
    one_minus = (2.0 ** momentum_bits - n) * 2.0 ** (velocity_radix_bits - momentum_bits)
    return one_minus * jnp.asarray(grad, jnp.float64)


def _position_term(v, alpha, radix_bits, velocity_radix_bits):
    """:math:`\\alpha V 2^{R_w - R_v}`, before rounding."""
    return (jnp.asarray(alpha, jnp.float64) * 2.0 ** (radix_bits - velocity_radix_bits)) * v


def _out_of_range(*values: jax.Array) -> jax.Array:
    """Per element: whether any of the float64 ``values`` is at or past :math:`2^{51}` in
    magnitude, or NaN (an element-wise mask, so that the check fuses into the update that
    produces the values instead of adding a reduction over all weights each step)."""
    return functools.reduce(jnp.logical_or, [~(jnp.abs(x) < _LIMIT) for x in values])


def step(state: ExactState, grad: jax.Array, alpha: jax.Array, n: jax.Array, *, momentum_bits: int,
         radix_bits: int, velocity_radix_bits: int, spilled: bool = False,
         ordered: jax.Array | None = None) -> tuple[ExactState, jax.Array]:
    """One exact step: decay the velocity by :math:`n / 2^k`, subtract the gradient term, move.

    Args:
      state: the state at step :math:`t`.
      grad: :math:`\\nabla L(w_t)`, float, one entry per weight.
      alpha: the step size per weight (or a scalar), float.
      n: the momentum numerators per weight (or a scalar), from :func:`momentum_numerator`.
      spilled: the buffer has already been spilled for this step (see
        :func:`hgrad.reversible.buffer.decay`).
      ordered: a boolean scalar true at run time, or ``None``: given in a loop, the step writes the
        state in place without copies (:func:`hgrad.reversible.buffer.decay`); the result is the same.
    Returns:
      The state at :math:`t + 1`, and a mask, one entry per weight, set where the step overflowed
      the fixed-point range (a non-finite gradient included) or the buffer was full.
    """
    buffer, v = B.decay(state.buffer, state.v, n, momentum_bits, spilled=spilled, ordered=ordered)
    dv = _gradient_term(grad, n, momentum_bits, velocity_radix_bits)
    v = v - _round(dv, jnp.nan)
    dw = _position_term(v, alpha, radix_bits, velocity_radix_bits)
    w, w_bad = _stored_weights(state.w.astype(jnp.float64) + _round(dw), state.w.dtype, ordered)
    # Each part is below 2^51 when it is not flagged, so the sums are exact (below 2^52) and the
    # new values are checked before the next step uses them. A gradient term out of range makes
    # the velocity NaN (the weights stay finite, so the loss does not turn NaN and the error names
    # the overflow), so the check reads only values this step writes: recomputing the gradient
    # term, or the weights before they are stored, would read the old weights after the new ones
    # are written, and XLA would copy the old weights at every step to allow that.
    bad = _out_of_range(dw, v) | w_bad | buffer.overflow
    return ExactState(w, v, buffer), bad


def _stored_weights(w: jax.Array, dtype, ordered: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """The new fixed-point weights ``w`` (float64) as stored in ``dtype``, and per weight whether
    they left the range. With ``int32`` storage the check reads the stored values (through
    :func:`~hgrad.reversible.materialize.materialized` with ``ordered``), where :math:`-2^{31}`,
    which no weight in range takes, marks an out-of-range weight (or NaN): checking the float64
    values instead, XLA recomputes them from the old weights in the check's own fusion."""
    if dtype == jnp.int32:
        marker = -(2.0 ** COMPACT_LIMIT_BITS)
        stored = jnp.where(jnp.abs(w) < 2.0 ** COMPACT_LIMIT_BITS, w, marker).astype(jnp.int32)
        return stored, materialized(stored, ordered) == jnp.int32(marker)
    return w.astype(dtype), ~(jnp.abs(w) < _LIMIT)


def unstep_position(state: ExactState, alpha: jax.Array, *, radix_bits: int,
                    velocity_radix_bits: int) -> ExactState:
    """Undo :math:`w_{t+1} = w_t + \\alpha_t v_{t+1}`: the state then holds :math:`w_t` and :math:`v_{t+1}`."""
    # jnp.round, not _round: the forward step checked this very term (the same bits of v_{t+1} and
    # alpha_t) against the range, so the range test would be redone for nothing.
    w = state.w.astype(jnp.float64) - jnp.round(_position_term(state.v, alpha, radix_bits, velocity_radix_bits))
    return state._replace(w=w.astype(state.w.dtype))


def unstep_velocity(state: ExactState, grad: jax.Array, n: jax.Array, *, momentum_bits: int,
                    velocity_radix_bits: int, ordered: jax.Array | None = None) -> tuple[ExactState, jax.Array]:
    """Undo the velocity update, given :math:`\\nabla L(w_t)` at the restored :math:`w_t` (``ordered``
    as for :func:`step`)."""
    dv = _gradient_term(grad, n, momentum_bits, velocity_radix_bits)
    buffer, v = B.undecay(state.buffer, state.v + jnp.round(dv), n, momentum_bits, ordered=ordered)  # checked forward
    return ExactState(state.w, v, buffer), _out_of_range(dv) | buffer.overflow


def unstep(state: ExactState, grad_fn, alpha, n, *, momentum_bits: int, radix_bits: int,
           velocity_radix_bits: int):
    """Both halves of the inverse of :func:`step`; ``grad_fn(w_t)`` gives :math:`\\nabla L(w_t)`
    from the restored fixed-point weights. Returns the state at :math:`t`, the gradient, and a mask
    of overflowed entries (see :func:`step`)."""
    state = unstep_position(state, alpha, radix_bits=radix_bits, velocity_radix_bits=velocity_radix_bits)
    grad = grad_fn(state.w)
    state, bad = unstep_velocity(state, grad, n, momentum_bits=momentum_bits,
                                 velocity_radix_bits=velocity_radix_bits)
    return state, grad, bad
