r"""The information buffer: where exact reversal keeps the bits that momentum decay destroys.

Multiplying a fixed-point velocity by :math:`\gamma < 1` loses information: about
:math:`\log_2(1/\gamma)` bits per weight and step (Maclaurin, Duvenaud & Adams 2015, section 2.3).
To undo the multiplication exactly those bits have to be kept somewhere, and kept densely, or the
memory saved by not storing the trajectory is spent again on the buffer.

With :math:`\gamma = n / 2^k` the multiplication :math:`v \mapsto \gamma v` is done exactly as

.. math:: r = v \bmod 2^k, \quad q = \lfloor v / 2^k \rfloor, \quad
          \text{push}(r \text{ over } 2^k), \quad p = \text{pop}(\text{over } n), \quad v' = q n + p,

so the buffer gains :math:`k` bits and gives back :math:`\log_2 n`: :math:`\log_2(1/\gamma)` net. The
reverse step reads :math:`p = v' \bmod n`, :math:`q = \lfloor v'/n \rfloor`, pushes :math:`p` back and
pops :math:`r`. Maclaurin et al. keep the buffer as one Python big integer per weight (exact but
slow, and not traceable). Here it is a *range-ANS* coder (Duda 2013) per weight, in fixed-size
arrays, so the whole loop jit-compiles:

* a 64-bit head :math:`x \in [2^{32}, 2^{64})` and a stack of 32-bit words with a pointer; an empty
  buffer is :math:`x = 2^{32}` with no words;
* pushing symbol :math:`s` with frequency :math:`f_s` and cumulative frequency :math:`c_s` out of
  :math:`M = 2^K` first moves the low 32 bits of the head to the stack if
  :math:`x \ge f_s 2^{64-K}`, then sets :math:`x \leftarrow 2^K \lfloor x / f_s \rfloor + (x \bmod f_s) + c_s`;
* popping is the exact inverse: :math:`y = x \bmod 2^K` picks :math:`s`, then
  :math:`x \leftarrow f_s \lfloor x / 2^K \rfloor + y - c_s`, and a word comes back from the stack
  if :math:`x < 2^{32}`.

Push and pop are mutual inverses on every buffer state, whatever was pushed before, which is all that
exact reversal needs. The pushed remainder :math:`r` is uniform over :math:`2^k` (:math:`f = 1`,
:math:`K = k`); the popped :math:`p` is drawn from the near-uniform table
:math:`c_s = \lfloor s 2^K / n \rfloor` over :math:`n` symbols with :math:`K = 32`, whose cost differs
from :math:`\log_2 n` bits by at most :math:`\log_2(1 + n/2^{32})` — for :math:`k = 24`, under 0.006
bits. A buffer's size is :math:`32 \times` (words) :math:`+ \log_2 x - 32` bits.

All functions are element-wise over arrays of weights and need 64-bit integers
(``jax.enable_x64``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "InfoBuffer",
    "empty",
    "push_uniform",
    "pop_uniform",
    "push_near_uniform",
    "pop_near_uniform",
    "size_in_bits",
    "TABLE_BITS",
]

HEAD_LOW = 1 << 32  # the head stays in [2^32, 2^64)
TABLE_BITS = 32  # K of the near-uniform table: frequencies out of 2^32
_WORD = (1 << 32) - 1


class InfoBuffer(NamedTuple):
    """One range-ANS buffer per weight.

    Attributes:
      head: ``uint64[n]``, each in :math:`[2^{32}, 2^{64})`.
      words: ``uint32[capacity, n]``, the stack of spilled words (entries at or above ``count``
        are free).
      count: ``int32[n]``, the number of words on each weight's stack.
      overflow: ``bool[]``, set when a push needed a word beyond ``capacity`` or a pop needed a
        word from an empty stack (the result is then invalid; callers raise an error).
    """

    head: jax.Array
    words: jax.Array
    count: jax.Array
    overflow: jax.Array


def empty(num_weights: int, capacity: int) -> InfoBuffer:
    """An empty buffer for ``num_weights`` weights with room for ``capacity`` words each."""
    return InfoBuffer(
        head=jnp.full((num_weights,), HEAD_LOW, jnp.uint64),
        words=jnp.zeros((capacity, num_weights), jnp.uint32),
        count=jnp.zeros((num_weights,), jnp.int32),
        overflow=jnp.zeros((), bool),
    )


def _u64(x) -> jax.Array:
    return jnp.asarray(x, jnp.uint64)


def _spill(buf: InfoBuffer, needed: jax.Array) -> InfoBuffer:
    """Move the low word of the head to the stack where ``needed``."""
    capacity = buf.words.shape[0]
    columns = jnp.arange(buf.head.shape[0])
    room = buf.count < capacity
    index = jnp.minimum(buf.count, capacity - 1)
    low = (buf.head & _u64(_WORD)).astype(jnp.uint32)
    write = needed & room
    words = buf.words.at[index, columns].set(jnp.where(write, low, buf.words[index, columns]))
    return InfoBuffer(
        head=jnp.where(needed, buf.head >> _u64(32), buf.head),
        words=words,
        count=buf.count + needed.astype(jnp.int32),
        overflow=buf.overflow | jnp.any(needed & ~room),
    )


def _refill(buf: InfoBuffer) -> InfoBuffer:
    """Bring a word back from the stack where the head fell below :math:`2^{32}`."""
    needed = buf.head < _u64(HEAD_LOW)
    columns = jnp.arange(buf.head.shape[0])
    index = jnp.clip(buf.count - 1, 0, buf.words.shape[0] - 1)
    word = buf.words[index, columns].astype(jnp.uint64)
    return buf._replace(
        head=jnp.where(needed, (buf.head << _u64(32)) | word, buf.head),
        count=buf.count - needed.astype(jnp.int32),
        overflow=buf.overflow | jnp.any(needed & (buf.count <= 0)),
    )


def _push(buf: InfoBuffer, freq, cum, table_bits: int) -> InfoBuffer:
    freq, cum = _u64(freq), _u64(cum)
    buf = _spill(buf, buf.head >= (freq << _u64(64 - table_bits)))
    x = buf.head
    return buf._replace(head=((x // freq) << _u64(table_bits)) + (x % freq) + cum)


def _pop(buf: InfoBuffer, y, freq, cum, table_bits: int) -> InfoBuffer:
    freq, cum = _u64(freq), _u64(cum)
    x = buf.head
    return _refill(buf._replace(head=freq * (x >> _u64(table_bits)) + _u64(y) - cum))


def push_uniform(buf: InfoBuffer, r: jax.Array, bits: int) -> InfoBuffer:
    """Push ``r`` in :math:`[0, 2^{bits})` (``bits`` <= 32) at a cost of ``bits`` bits."""
    return _push(buf, 1, r, bits)


def pop_uniform(buf: InfoBuffer, bits: int) -> tuple[InfoBuffer, jax.Array]:
    """The inverse of :func:`push_uniform`: returns the buffer before it and ``r``."""
    y = buf.head & _u64((1 << bits) - 1)
    return _pop(buf, y, 1, y, bits), y


def _near_uniform_cum(s: jax.Array, n: jax.Array) -> jax.Array:
    return (_u64(s) << _u64(TABLE_BITS)) // _u64(n)


def push_near_uniform(buf: InfoBuffer, s: jax.Array, n: jax.Array) -> InfoBuffer:
    """Push ``s`` in :math:`[0, n)` (:math:`2 \\le n \\le 2^{31}`) at a cost of about :math:`\\log_2 n` bits."""
    cum = _near_uniform_cum(s, n)
    freq = _near_uniform_cum(_u64(s) + _u64(1), n) - cum
    return _push(buf, freq, cum, TABLE_BITS)


def pop_near_uniform(buf: InfoBuffer, n: jax.Array) -> tuple[InfoBuffer, jax.Array]:
    """Pop a symbol in :math:`[0, n)`, the inverse of :func:`push_near_uniform`."""
    n = _u64(n)
    y = buf.head & _u64(_WORD)
    s = ((y + _u64(1)) * n - _u64(1)) >> _u64(TABLE_BITS)
    cum = _near_uniform_cum(s, n)
    freq = _near_uniform_cum(s + _u64(1), n) - cum
    return _pop(buf, y, freq, cum, TABLE_BITS), s


def size_in_bits(buf: InfoBuffer) -> jax.Array:
    """Information held, per weight: :math:`32 \\cdot` words :math:`+ \\log_2(\\text{head}) - 32`."""
    return 32.0 * buf.count.astype(jnp.float64) + jnp.log2(buf.head.astype(jnp.float64)) - 32.0
