"""Building unconstrained hyperparameters (log step sizes, logit momenta) from their values.

Hyperparameters are optimized in an unconstrained space so that no gradient step can make a step
size negative or a momentum leave [0, 1): ``lr = exp(log_lr)``, ``momentum = sigmoid(logit)``.
These helpers check the constrained values and convert them, raising a clear error before any
computation for values outside their domain.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["log_positive", "logit_unit"]


def _schedule(x: np.ndarray, num_steps: int | None) -> np.ndarray:
    if num_steps is None:
        return x
    if x.ndim == 0:
        return np.full((num_steps,), x)
    if x.shape != (num_steps,):
        raise ValueError(f"a schedule must have shape ({num_steps},), got {x.shape}")
    return x


def log_positive(value: Any, name: str, num_steps: int | None = None, dtype=None) -> Any:
    """``log(value)`` leaf by leaf, after checking every value is finite and > 0."""

    def one(v):
        v = np.asarray(v, dtype=np.float64)
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"{name} must be finite and > 0 (it is stored as its log), got {v}")
        return jnp.asarray(np.log(_schedule(v, num_steps)), dtype or jnp.result_type(float))

    return jax.tree.map(one, value)


def logit_unit(value: Any, name: str, num_steps: int | None = None, dtype=None) -> Any:
    """``logit(value)`` leaf by leaf, after checking every value lies in [0, 1).

    A value of exactly 0 has no finite logit; it is rejected with advice rather than stored as
    ``-inf`` (which would freeze it: its hypergradient is 0).
    """

    def one(v):
        v = np.asarray(v, dtype=np.float64)
        if not np.all(np.isfinite(v)) or np.any(v < 0) or np.any(v >= 1):
            raise ValueError(f"{name} must lie in [0, 1), got {v}")
        if np.any(v == 0):
            raise ValueError(
                f"{name} = 0 has no finite logit (the stored, unconstrained value); use a small "
                f"positive value such as 1e-3 to learn it, or hgrad.dynamics.GradientDescent for "
                f"no momentum at all"
            )
        v = _schedule(v, num_steps)
        return jnp.asarray(np.log(v) - np.log1p(-v), dtype or jnp.result_type(float))

    return jax.tree.map(one, value)
