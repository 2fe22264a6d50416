"""hgrad.reversible.materialize.materialized: the same values, bit for bit, and the identity's derivative."""

import jax
import jax.numpy as jnp
import numpy as np

from hgrad.reversible.materialize import materialized


def test_values_pass_through_bit_for_bit():
    tree = {"x": jnp.asarray([1.5, -0.0, jnp.inf, jnp.nan], jnp.float64), "i": jnp.asarray([3, -7], jnp.int32),
            "b": jnp.asarray([True, False])}
    out = jax.jit(lambda t, p: materialized(t, p))(tree, jnp.asarray(True))
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(tree)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))


def test_derivative_is_the_identitys():
    # The conditional's identity is an exclusive-or of the bits, which JAX differentiates to 0; a
    # value differentiated through it (a tower's kept derivatives) must keep its derivative.
    x = jnp.asarray([0.3, -1.2, 2.0], jnp.float64)

    def f(x):
        y, n = materialized((jnp.sin(x), jnp.asarray([1, 2], jnp.int32)), jnp.all(x == x))
        return jnp.sum(y * x) + jnp.sum(n).astype(x.dtype)

    expected = jnp.sin(x) + x * jnp.cos(x)
    np.testing.assert_allclose(jax.grad(f)(x), expected, rtol=1e-14)
    np.testing.assert_allclose(jax.jvp(f, (x,), (jnp.ones_like(x),))[1], jnp.sum(expected), rtol=1e-14)
    eps = 1e-6
    fd = [(f(x.at[i].add(eps)) - f(x.at[i].add(-eps))) / (2 * eps) for i in range(3)]
    np.testing.assert_allclose(jax.grad(f)(x), fd, rtol=1e-8)
