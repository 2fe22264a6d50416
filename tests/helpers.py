"""Shared numerical helpers for the tests: central finite differences and tree comparisons."""

import jax
import jax.numpy as jnp
import numpy as np


def fd_epsilon(dtype=jnp.float64) -> float:
    """Step for central differences: eps_machine**(1/3) balances truncation and rounding error."""
    return float(jnp.finfo(dtype).eps) ** (1.0 / 3.0)


def central_difference(f, x, direction, eps=None):
    """``(f(x + eps d) - f(x - eps d)) / (2 eps)`` for pytrees ``x`` and ``d``."""
    eps = fd_epsilon() if eps is None else eps
    plus = jax.tree.map(lambda a, d: a + eps * d, x, direction)
    minus = jax.tree.map(lambda a, d: a - eps * d, x, direction)
    return (float(f(plus)) - float(f(minus))) / (2 * eps)


def derivative(f, eps=None) -> float:
    """``f'(0)`` of a scalar function of a real shift by the fourth-order central difference,
    ``(8 (f(e) - f(-e)) - (f(2e) - f(-2e))) / (12 e)``: truncation error O(e^4), rounding error about
    eps_machine |f| / e, balanced at e = eps_machine**(1/5) (about 1e-13 relative, against 1e-11 for
    the two-point difference, whose error alone can exceed a 1e-6 tolerance on a small derivative)."""
    eps = float(jnp.finfo(jnp.float64).eps) ** 0.2 if eps is None else eps
    return (8 * (float(f(eps)) - float(f(-eps))) - (float(f(2 * eps)) - float(f(-2 * eps)))) / (12 * eps)


def random_direction(tree, seed):
    """A random unit-norm pytree shaped like ``tree``."""
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=np.shape(x)) for x in leaves]
    norm = np.sqrt(sum(np.sum(p**2) for p in parts))
    return jax.tree.unflatten(treedef, [jnp.asarray(p / norm, jnp.result_type(x)) for p, x in zip(parts, leaves)])


def tree_dot(a, b) -> float:
    return float(sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def assert_trees_close(a, b, rtol=1e-10, atol=1e-12):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def hlo_computation(text: str, name: str) -> str:
    """The body of computation ``name`` in XLA's compiled text ``text``."""
    import re

    return re.search(r"\n%?" + re.escape(name) + r" [^\n]*\{\n(.*?)\n\}", text, re.S).group(1)


def hlo_loop_body(text: str) -> str:
    """The body of the (first) while loop in XLA's compiled text ``text``."""
    import re

    return hlo_computation(text, re.search(r"body=%?([\w.\-]+)", text).group(1))
