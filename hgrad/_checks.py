"""Input validation and divergence reporting shared by every hypergradient method.

Two kinds of problems are caught:

* bad input (a non-positive number of steps, NaN in a hyperparameter, a step function that changes
  the state's shapes) is reported *before* any long computation starts, from abstract evaluation
  (``jax.eval_shape``) and from the concrete values that are already on the host;
* a diverging inner loop is detected *during* the computation: the unrolled loop carries the index
  of the first step whose result is non-finite, and the caller turns it into a
  :class:`DivergenceError` naming that step. Under ``jax.jit`` (where no Python exception can be
  raised from traced values) the same check runs as a host callback, so the error still surfaces
  instead of silent NaNs.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DivergenceError",
    "check_num_steps",
    "check_finite",
    "check_floating",
    "check_step_shapes",
    "check_scalar_outer",
    "tree_all_finite",
    "first_nonfinite_step",
    "raise_if_diverged",
]

NO_DIVERGENCE = -1


class DivergenceError(FloatingPointError):
    """The inner loop produced a non-finite value (NaN or infinity)."""

    def __init__(self, step: int, num_steps: int, what: str = "state"):
        self.step = int(step)
        self.num_steps = int(num_steps)
        super().__init__(
            f"the inner loop diverged: its {what} became non-finite (NaN or inf) at step "
            f"{self.step} of {self.num_steps} (counting from 0). Reduce the step size (or its "
            "schedule), clip gradients, or shorten the inner loop; hypergradients through a "
            "diverged run are meaningless."
        )


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_num_steps(num_steps: Any, name: str = "num_steps") -> int:
    """Return ``num_steps`` as a Python int, or raise if it is not a positive integer."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (numbers.Integral, np.integer)):
        raise TypeError(
            f"{name} must be a Python int (it fixes the length of the unrolled loop and must be "
            f"known when tracing), got {type(num_steps).__name__}: {num_steps!r}"
        )
    if num_steps <= 0:
        raise ValueError(f"{name} must be a positive integer, got {num_steps}")
    return int(num_steps)


def check_floating(tree: Any, name: str) -> None:
    """Raise if a leaf of ``tree`` is not a floating-point array (hyperparameters must be)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            where = jax.tree_util.keystr(path) or "(root)"
            raise TypeError(
                f"{name}{where} has dtype {dtype}; hyperparameters must be floating point "
                "(store step sizes as log, momenta as logit)"
            )


def check_finite(tree: Any, name: str) -> None:
    """Raise ``ValueError`` if a concrete leaf of ``tree`` holds NaN or infinity.

    Traced leaves (inside ``jit``/``vmap``) are skipped: their values are not known yet.
    """
    concrete = [x for x in jax.tree.leaves(tree) if _is_concrete(x)]
    if not concrete:
        return
    with jax.ensure_compile_time_eval():  # concrete values, even while a caller is being traced
        if bool(tree_all_finite(concrete)):  # one reduction on the device, no copy to the host
            return
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not _is_concrete(leaf):
            continue
        arr = np.asarray(leaf)
        if arr.dtype.kind not in "fc":
            continue
        if not np.all(np.isfinite(arr)):
            where = jax.tree_util.keystr(path) or "(root)"
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(
                f"{name}{where} contains {bad} non-finite value(s) (NaN or inf); "
                "clean the input before computing hypergradients"
            )


def _describe(tree: Any) -> str:
    shapes = jax.tree.map(lambda x: f"{x.dtype}{list(x.shape)}", tree)
    return str(shapes)


def check_step_shapes(step, state0: Any, hparams: Any) -> None:
    """Abstractly evaluate one step and check it maps the state to the same structure and shapes."""
    t = jax.ShapeDtypeStruct((), jnp.int32)
    try:
        out = jax.eval_shape(step, state0, hparams, t)
    except Exception as err:  # re-raised with context: shapes are the usual culprit
        raise type(err)(
            f"calling step(state, hparams, t) failed while checking shapes: {err}"
        ) from err
    abstract_in = jax.eval_shape(lambda s: s, state0)
    if jax.tree.structure(out) != jax.tree.structure(abstract_in):
        raise ValueError(
            "step(state, hparams, t) must return a state with the same pytree structure as "
            f"state0:\n  state0: {jax.tree.structure(abstract_in)}\n  step(): {jax.tree.structure(out)}"
        )
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(abstract_in), jax.tree.leaves(out)
    ):
        if a.shape != b.shape or a.dtype != b.dtype:
            where = jax.tree_util.keystr(path) or "(root)"
            raise ValueError(
                f"step(state, hparams, t) changed state{where} from {a.dtype}{list(a.shape)} to "
                f"{b.dtype}{list(b.shape)}; the state must keep its shapes and dtypes "
                "(check the hyperparameters' shapes and the data's dtype)"
            )


def check_scalar_outer(outer, state: Any, hparams: Any) -> None:
    """Abstractly evaluate the outer objective and check it returns a real scalar."""
    out = jax.eval_shape(outer, state, hparams)
    if not hasattr(out, "shape") or out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(
            "outer(state, hparams) must return a real floating-point scalar, got "
            f"{_describe(out)}"
        )


def tree_all_finite(tree: Any) -> jax.Array:
    """True where every floating leaf of ``tree`` is finite (a scalar boolean).

    Uses ``max |x|`` per leaf, which is NaN or inf exactly when a value is (XLA's max propagates
    NaN) and never overflows; a single cheap reduction that XLA fuses with the update.
    """
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    if not leaves:
        return jnp.bool_(True)
    return jnp.all(jnp.stack([jnp.isfinite(jnp.max(jnp.abs(x))) for x in leaves]))


def first_nonfinite_step(finite: jax.Array, ts: jax.Array) -> jax.Array:
    """The first ``ts[i]`` whose step left a non-finite result (``finite[i]`` False), else ``-1``."""
    return jnp.where(jnp.all(finite), NO_DIVERGENCE, ts[jnp.argmin(finite)]).astype(jnp.int32)


def _host_raise(bad_step, num_steps: int, what: str) -> None:
    bad = np.asarray(bad_step).reshape(-1)
    diverged = bad[bad != NO_DIVERGENCE]
    if diverged.size:
        raise DivergenceError(int(diverged.min()), num_steps, what)


def on_host(check: Callable[..., None], *args) -> None:
    """``check(*args)``, which raises on a failure: now if the arguments are concrete, else as a
    host callback that raises when the compiled computation runs (the error then arrives wrapped in
    JAX's runtime error, with its message)."""
    if all(_is_concrete(x) for x in args):
        check(*args)
    else:
        jax.debug.callback(check, *args)


def raise_if_diverged(bad_step: jax.Array, num_steps: int, what: str = "state") -> None:
    """Raise :class:`DivergenceError` if ``bad_step`` records a diverged step.

    With concrete values this raises directly; with traced values it installs a host callback
    that raises when the compiled computation runs (the error then arrives wrapped in JAX's
    runtime error, with this message).
    """
    if _is_concrete(bad_step):
        _host_raise(bad_step, num_steps, what)
    else:
        jax.debug.callback(_host_raise, bad_step, num_steps, what)
