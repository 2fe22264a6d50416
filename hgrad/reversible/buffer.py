r"""The information buffer: where exact reversal keeps the bits that momentum decay destroys.

Multiplying a fixed-point velocity by :math:`\gamma < 1` loses information: about
:math:`\log_2(1/\gamma)` bits per weight and step (Maclaurin, Duvenaud & Adams 2015, section 2.3).
To undo the multiplication exactly those bits have to be kept somewhere, and kept densely, or the
memory saved by not storing the trajectory is spent again on the buffer.

With :math:`\gamma = n / 2^k`, Maclaurin et al. keep one big integer :math:`B` per weight and do
the decay as a change of radix: split :math:`v = q 2^k + r` (:math:`0 \le r < 2^k`), append
:math:`r` to :math:`B` in base :math:`2^k` and take a digit back in base :math:`n`:

.. math:: X = B\, 2^k + r, \qquad p = X \bmod n, \qquad B' = \lfloor X / n \rfloor, \qquad v' = q n + p.

:math:`B` grows by exactly :math:`\log_2(2^k / n)` bits per step, the entropy bound. Their Python
big integers are exact but slow and cannot be traced. Here each :math:`B` is written as a 32-bit
*head* :math:`x` and a stack of 16-bit words below it, :math:`B = x \cdot 2^{16c} + \text{words}`,
in fixed-size arrays, so the whole loop jit-compiles and vectorizes over weights:

* the head stays below :math:`2^{32}`; an empty buffer is :math:`x = 2^{16}` with no words;
* before a step, if a head might reach :math:`n\, 2^{32-k}` (its new head would not fit in 32
  bits), *every* head of the buffer puts its low 16 bits onto the stack (one row of a
  ``[capacity, weights]`` array) and :math:`x \leftarrow \lfloor x / 2^{16} \rfloor`; the row
  records the step it was written at. "Might" is decided without reading the heads: a scalar bound
  :math:`\bar x \ge \max x` follows the recursion :math:`\bar x' = \lfloor (\bar x 2^k + 2^k - 1) / n_{\min} \rfloor`;
* the inverse computes :math:`X = x' n + p`, :math:`r = X \bmod 2^k`, :math:`x = \lfloor X / 2^k \rfloor`,
  and takes the top row back exactly when it was written at this step.

Spilling all weights together keeps the stack a dense array written one row at a time (no scatter,
no per-weight counts) and costs nothing in practice: with one momentum per buffer (hgrad keeps one
buffer per parameter group) all heads start at :math:`2^{16}` and grow by the same factor
:math:`2^k/n` each step, within :math:`1/x` of each other, so they cross the threshold on the same
step. (Different momenta per weight stay exact, only less dense.)

Both directions are exact on every state, whatever came before. The size,
:math:`16 c + \log_2 x - 16` bits, exceeds :math:`\sum_t \log_2(2^k / n_t)` by at most
:math:`\log_2(1 + 1/n_t)` per step (the floor, :func:`step_bits`). Since whether a step spills
depends only on the scalar bound, and the bound only on the numerators, the number of rows a run
writes is known before it starts: :func:`words_needed` runs the bound's recursion on the host and
allocates exactly that many (none while the heads alone hold the run, as at :math:`T = 100`,
:math:`\gamma = 0.9`: 15.2 bits on top of the empty head's 16), plus one scratch row when there are
any.

The velocities, like every intermediate here, are integers held in float64 (:mod:`hgrad.reversible.exact`
says why): :math:`X < 2^{48}` and :math:`x' n + p < 2^{48}`, and the quotients by :math:`n` come from
a float64 multiplication by :math:`1/n`, exact without a correction (:func:`divmod_floor`). The heads
are stored as ``uint32`` and the words as ``uint16``, their exact sizes.

Needs 64-bit types (``jax.enable_x64``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hgrad.reversible.materialize import materialized

__all__ = ["InfoBuffer", "empty", "decay", "undecay", "needs_spill", "spill", "size_in_bits", "memory_bytes", "step_bits",
           "words_needed", "divmod_floor", "HEAD_LOW", "WORD_BITS", "MIN_MOMENTUM_BITS", "MAX_MOMENTUM_BITS"]

WORD_BITS = 16
HEAD_LOW = 1 << WORD_BITS  # the head of an empty buffer
# k = 16: after a spill a head is below 2^16 <= n 2^(32-k) for every n >= 1, so the next head fits
# in 32 bits, and at least n 2^(16-k) = n, which keeps step_bits an upper bound. A larger k would
# need n >= 2^(k-16) and a looser bound; x 2^k + r < 2^48 is exact in float64.
MIN_MOMENTUM_BITS = MAX_MOMENTUM_BITS = WORD_BITS
_WORD_MASK = (1 << WORD_BITS) - 1


class InfoBuffer(NamedTuple):
    """One buffer per weight, spilling together.

    Attributes:
      head: ``uint32[n]``.
      words: ``uint16[capacity + 1, n]``, the stack of spilled rows (rows at or above ``count``
        are free; the last is scratch, written when no spill is due), or ``uint16[0, n]`` for a
        capacity of 0.
      written_at: ``int32[rows]``, the value of ``steps`` when each row was written.
      count: ``int32[]``, rows on the stack.
      steps: ``int32[]``, decays done so far (minus those undone).
      head_bound: ``int64[]``, an upper bound on every head, kept by :func:`decay` (after
        :func:`undecay` it is :math:`2^{32} - 1`, "unknown": a further decay then spills).
      overflow: ``bool[]``, set when a spill found the stack full (the result is then invalid;
        callers raise an error).
    """

    head: jax.Array
    words: jax.Array
    written_at: jax.Array
    count: jax.Array
    steps: jax.Array
    head_bound: jax.Array
    overflow: jax.Array


def empty(num_weights: int, capacity: int) -> InfoBuffer:
    """An empty buffer for ``num_weights`` weights with room for ``capacity`` 16-bit words each
    (and a scratch row when ``capacity > 0``; with none, a spill is an overflow)."""
    rows = capacity + 1 if capacity > 0 else 0
    return InfoBuffer(
        head=jnp.full((num_weights,), HEAD_LOW, jnp.uint32),
        words=jnp.zeros((rows, num_weights), jnp.uint16),
        written_at=jnp.full((rows,), -1, jnp.int32),
        count=jnp.zeros((), jnp.int32),
        steps=jnp.zeros((), jnp.int32),
        head_bound=jnp.asarray(HEAD_LOW, jnp.int64),
        overflow=jnp.zeros((), bool),
    )


def words_needed(n_min: np.ndarray, momentum_bits: int) -> int:
    r"""The capacity (16-bit words per weight) that a run of decays by :math:`n_t / 2^k` fills,
    ``n_min[t]`` the smallest numerator of step :math:`t`: the number of spills, counted by running
    the recursion of the heads' bound that :func:`decay` and :func:`needs_spill` run (in Python
    integers, so exactly). A run with these numerators writes exactly this many rows."""
    k, bound, rows = momentum_bits, HEAD_LOW, 0
    for n in np.asarray(n_min, np.float64).reshape(-1):
        n = int(n)
        if bound >= n << (32 - k):
            bound, rows = bound >> WORD_BITS, rows + 1
        bound = ((bound << k) + ((1 << k) - 1)) // n
    return rows


def step_bits(n: np.ndarray, momentum_bits: int) -> np.ndarray:
    r"""Upper bound on the bits one decay by :math:`n / 2^k` adds: :math:`\log_2(2^k/n) + \log_2(1 + 1/n)`."""
    n = np.asarray(n, np.float64)
    return np.log2(2.0 ** momentum_bits / n) + np.log2(1 + 1 / n)


def divmod_floor(x: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x // n, x % n)`` with floor semantics, for integers ``x`` held in float64 with
    :math:`|x| < 2^{51}` and integers :math:`2 \\le n < 2^{31}` (a scalar, or per element).

    Write :math:`x = q n + p` with :math:`0 \\le p < n`. Then :math:`y = (x + 1/2) / n = q + (p + 1/2) / n`
    lies at least :math:`1 / (2n)` from every integer, and its computed value
    :math:`\\mathrm{fl}((x + 1/2) \\cdot \\mathrm{fl}(1/n))` (the sum is exact) is within
    :math:`|y| (2^{-52} + 2^{-106})` of it, which is less than :math:`1 / (2n)` when
    :math:`|x + 1/2| < 2^{51} - 1/8`. So its floor is :math:`q` without a correction step, and
    :math:`p = x - q n` is an integer below :math:`2^{53}`, exact.
    """
    n = jnp.asarray(n, jnp.float64)
    q = jnp.floor((x + 0.5) * (1.0 / n))  # one division when n is a scalar (one per group)
    return q, x - q * n


def _split(x: jax.Array, bits: int) -> tuple[jax.Array, jax.Array]:
    """``(x // 2^bits, x % 2^bits)`` for integers held in float64 (exact: scaling by a power of
    two is exact, and so is the floor)."""
    q = jnp.floor(x * 2.0 ** -bits)
    return q, x - q * 2.0 ** bits


def _digit_below(x: jax.Array, n: jax.Array, y: jax.Array, bits: int) -> jax.Array:
    """The digit :math:`p \\in [0, n)` of :math:`X = x n + p`, given any :math:`y \\equiv X` modulo
    :math:`2^{bits}` and :math:`n \\le 2^{bits}` (integers held in float64, :math:`x n < 2^{48}`,
    :math:`|y| < 2^{52}`).

    :math:`p \\equiv y - x n` modulo :math:`2^{bits}`, and :math:`[0, n)` holds one number of each
    residue: :math:`p = (y - x n) \\bmod 2^{bits}` (the difference is below :math:`2^{53}`, exact). A
    decay knows such a :math:`y` (the velocity, whose low digits it appends to the head) and its new
    head :math:`x`; its inverse knows the restored velocity and the head it started from. Either way
    the digit comes from values that the update has already written, instead of from those it
    overwrites."""
    return _split(y - x * n, bits)[1]


def needs_spill(buf: InfoBuffer, n: jax.Array, momentum_bits: int) -> jax.Array:
    """Whether the heads could outgrow 32 bits at the next decay by ``n`` (their bound says so):
    then :func:`spill` must move their low 16 bits to the stack first (:func:`decay` does)."""
    n_min = jnp.min(jnp.asarray(n, jnp.float64)).astype(jnp.int64)
    return buf.head_bound >= n_min << (32 - momentum_bits)


def spill(buf: InfoBuffer, needed: jax.Array, *, ordered: jax.Array | None = None) -> InfoBuffer:
    """If ``needed`` (a scalar), move the low 16 bits of every head onto the stack as one row.

    The row is written either way, at ``count``: without a spill it lands in a free row (or the
    scratch row), which costs one write and saves reading the row back to keep it. ``ordered`` (a
    scalar true at run time, or ``None``) has the heads read back through the written stack
    (:func:`~hgrad.reversible.materialize.materialized`), so that in a loop XLA writes the row before
    it updates the heads in place, instead of copying the old heads at every step."""
    if buf.words.shape[0] == 0:  # no room allocated: a spill is an overflow
        return buf._replace(overflow=buf.overflow | needed)
    capacity = buf.words.shape[0] - 1
    index = jnp.minimum(buf.count, capacity)
    row = (buf.head & jnp.uint32(_WORD_MASK)).astype(jnp.uint16)
    words = jax.lax.dynamic_update_index_in_dim(buf.words, row, index, 0)
    head, words = materialized((buf.head, words), ordered)
    return buf._replace(
        head=jnp.where(needed, head >> jnp.uint32(WORD_BITS), head),
        words=words,
        written_at=buf.written_at.at[index].set(buf.steps),
        count=buf.count + needed.astype(jnp.int32),
        head_bound=jnp.where(needed, buf.head_bound >> WORD_BITS, buf.head_bound),
        overflow=buf.overflow | (needed & (buf.count >= capacity)),
    )


def decay(buf: InfoBuffer, v: jax.Array, n: jax.Array, momentum_bits: int, *,
          spilled: bool = False, ordered: jax.Array | None = None) -> tuple[InfoBuffer, jax.Array]:
    """Multiply the fixed-point integers ``v`` by :math:`n / 2^k` exactly, keeping the lost bits.

    Args:
      buf: the buffer, one entry per element of ``v`` (1-D).
      v: integers held in float64, below :math:`2^{52}` in magnitude; the result is no larger.
      n: numerators in :math:`[2, 2^k)`, per element or a scalar (one per buffer is what keeps
        the heads in step and the buffer dense), integers held in float64.
      momentum_bits: :math:`k` (16; see ``MIN_MOMENTUM_BITS``).
      spilled: the caller has already called ``spill(buf, needs_spill(buf, n, momentum_bits))``
        (so that the stack, written only there, can stay out of the rest).
      ordered: a boolean scalar true at run time, or ``None``. Given, the new heads are read through
        :func:`~hgrad.reversible.materialize.materialized` where the velocities' update needs them
        (see :func:`_digit_below`), so that in a loop XLA updates the heads and then the velocities
        in place, instead of copying both at every step. The result is the same either way.
    Returns:
      The buffer and :math:`q n + p` with :math:`q = \\lfloor v / 2^k \\rfloor` and :math:`p < n`
      taken from the buffer.
    """
    k = momentum_bits
    n = jnp.asarray(n, jnp.float64)
    n_min = jnp.min(n).astype(jnp.int64)
    if not spilled:
        buf = spill(buf, needs_spill(buf, n, k), ordered=ordered)
    q, r = _split(v, k)
    x, p = divmod_floor(buf.head.astype(jnp.float64) * 2.0 ** k + r, n)
    head = x.astype(jnp.uint32)
    if ordered is not None:
        # The same digit from the new head rather than the old (see _digit_below): the velocity's
        # update then reads the new head, so XLA updates the head and then the velocity in place.
        p = _digit_below(materialized(head, ordered).astype(jnp.float64), n, v, k)
    bound = ((buf.head_bound << k) + ((1 << k) - 1)) // n_min
    return buf._replace(head=head, steps=buf.steps + 1, head_bound=bound), q * n + p


def undecay(buf: InfoBuffer, v: jax.Array, n: jax.Array, momentum_bits: int, *,
            ordered: jax.Array | None = None) -> tuple[InfoBuffer, jax.Array]:
    """The inverse of :func:`decay`: the buffer before it and the velocities before the decay
    (all but ``head_bound``, which becomes "unknown"). ``ordered`` as for :func:`decay`, with the
    restored velocities read through the conditional where the heads' update needs them."""
    k = momentum_bits
    n = jnp.asarray(n, jnp.float64)
    q, p = divmod_floor(v, n)
    head = buf.head.astype(jnp.float64)
    x, r = _split(head * n + p, k)
    restored = q * 2.0 ** k + r
    if ordered is not None:
        # The same head from the restored velocity rather than from p (see _digit_below): the head's
        # update then reads the new velocity, so XLA updates the velocity and then the head in place.
        x = _split(head * n + _digit_below(head, n, materialized(restored, ordered), k), k)[0]
    steps = buf.steps - 1
    if buf.words.shape[0]:  # else nothing was spilled
        top = jnp.maximum(buf.count - 1, 0)
        refill = (buf.count > 0) & (buf.written_at[top] == steps)
        x = jnp.where(refill, x * 2.0 ** WORD_BITS + buf.words[top].astype(jnp.float64), x)
        buf = buf._replace(count=buf.count - refill.astype(jnp.int32))
    buf = buf._replace(head=x.astype(jnp.uint32), steps=steps, head_bound=jnp.asarray((1 << 32) - 1, jnp.int64))
    return buf, restored


def size_in_bits(buf: InfoBuffer) -> jax.Array:
    """Information held, per weight: :math:`16 c + \\log_2(\\text{head}) - 16`."""
    return (WORD_BITS * buf.count.astype(jnp.float64) + jnp.log2(buf.head.astype(jnp.float64))
            - WORD_BITS)


def memory_bytes(buf: InfoBuffer) -> int:
    """Bytes the buffer's arrays occupy."""
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in buf)
