"""Values that XLA must store once and read, instead of recomputing them inside every reader.

XLA fuses a cheap element-wise producer into each fusion that reads it, duplicating the computation.
In a loop that updates its state in place this costs more than the duplicated arithmetic: when two
carried arrays are each updated from both (the information buffer's head and the velocity exchange
digits at every decay), every fusion then reads both old arrays, so neither may be overwritten
before the other is computed, and XLA copies both at every step. On a CPU (XLA:CPU, jax 0.10) such a
copy costs about ten times an element-wise pass over the same array (a copy of 78,400 float64
values in a loop: 115 us; a fused update of two such arrays: 10 us each). Computing the second
array from the first one's *new* value, read through :func:`materialized`, orders the two fusions
by a data dependence, and XLA then updates both in place without a copy.

:func:`materialized` passes a pytree through a conditional, which XLA never fuses across. Both
branches are the identity (one written as an exclusive-or with a zero that XLA only recognizes as
zero after it has kept the conditional), so the conditional's result is its operand's own buffer:
no copy, no arithmetic, and the branch taken does not matter. On an accelerator a conditional reads
its predicate on the host, so there it is not used and the value passes straight through. Its
derivative is the identity's (JAX would differentiate the bit-level identity to 0), so a value
differentiated through it, as a tower's kept derivatives are (:mod:`hgrad.towers.tower`), keeps its
derivative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["materialized"]


def _identity_bits(x: jax.Array, zero: jax.Array) -> jax.Array:
    """``x``, bit for bit, through an exclusive-or of its bits with ``zero``."""
    if x.dtype == jnp.bool_:
        return x ^ (zero != 0)
    bits = jnp.dtype(f"uint{8 * x.dtype.itemsize}")
    mixed = jax.lax.bitcast_convert_type(x, bits) ^ zero.astype(bits)
    return jax.lax.bitcast_convert_type(mixed, x.dtype)


def materialized(tree, true: jax.Array | None):
    """``tree`` unchanged, stored in memory once for every operation that reads it (see the module).

    Args:
      tree: a pytree of arrays (booleans, or of 8-, 16-, 32- or 64-bit types).
      true: a boolean scalar known only at run time (a loop's counter compared with a bound it always
        meets, say); the result does not depend on it. ``None`` passes ``tree`` straight through:
        callers take it as an argument (``ordered``) and pass ``None`` where the conditional does
        not pay, as inside the branches of the one-loop program.
    """
    if true is None or jax.default_backend() != "cpu":
        return tree
    return _through_conditional(tree, true)


@jax.custom_jvp
def _through_conditional(tree, true):
    zero = jnp.asarray(true, jnp.int32) * 0
    return jax.lax.cond(true, lambda t: jax.tree.map(lambda x: _identity_bits(x, zero), t), lambda t: t, tree)


@_through_conditional.defjvp
def _through_conditional_jvp(primals, tangents):
    return _through_conditional(*primals), tangents[0]  # the identity's derivative
