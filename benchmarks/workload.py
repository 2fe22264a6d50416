"""The benchmark workload of the core issue, shared by the benchmark scripts.

MLP 784-100-10 tanh on mnist5k (5,000 real MNIST digits), T steps of SGD with momentum on
mini-batches, validation cross-entropy as the outer objective; hyperparameters: per-step log step
size, per-step logit momentum and a log L2 strength. float32.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import hgrad.data
from hgrad.dynamics import Batches, Momentum

SIZES = (784, 100, 10)


def init_params(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {}
    for i, (m, n) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        params[f"w{i}"] = jnp.asarray(rng.normal(size=(m, n)) / np.sqrt(m), jnp.float32)
        params[f"b{i}"] = jnp.zeros(n, jnp.float32)
    return params


def apply(params, x):
    h = x
    for i in range(len(SIZES) - 1):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < len(SIZES) - 2:
            h = jnp.tanh(h)
    return h


def xent(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


class Workload:
    """Everything one benchmark needs: data, the loss, the step, hyperparameters, the outer."""

    def __init__(self, num_steps: int = 100, batch_size: int = 500, seed: int = 0):
        ds = hgrad.data.mnist5k()
        train, val = hgrad.data.split(ds, (4000, 1000), seed=seed)
        self.batches = Batches(train.x, train.y, batch_size=batch_size, num_steps=num_steps, seed=seed)
        self.x_val, self.y_val = jnp.asarray(val.x), jnp.asarray(val.y)
        self.num_steps, self.batch_size = num_steps, batch_size
        self.dynamics = Momentum(self.loss)
        self.state0 = Momentum.init(init_params(seed))
        self.hparams = Momentum.init_hparams(
            lr=0.1, momentum=0.9, loss=jnp.float32(np.log(1e-4)), num_steps=num_steps,
            dtype=jnp.float32,
        )

    def loss(self, params, hparams, t):
        xb, yb = self.batches(t)
        l2 = sum(jnp.sum(w**2) for w in jax.tree.leaves(params))
        return xent(apply(params, xb), yb) + 0.5 * jnp.exp(hparams.loss) * l2

    def outer(self, state, hparams):
        return xent(apply(state.params, self.x_val), self.y_val)


def tree_vdot(a, b, vdot: Callable = jnp.vdot) -> jax.Array:
    """The dot product of two pytrees of arrays with the same structure, ``vdot`` per leaf."""
    return sum(vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def median_time(fn: Callable, *args, repeats: int = 7) -> float:
    """Median wall time of ``fn(*args)`` (blocked until ready) after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def interleaved_times(fns: dict, args: tuple, repeats: int = 7) -> dict:
    """Median times of several functions measured in turn (round-robin), so that a change in the
    machine's load hits all of them alike. Each is warmed up (compiled) first."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            samples[name].append(time.perf_counter() - start)
    return {name: float(np.median(s)) for name, s in samples.items()}


def warm_time(fn: Callable, *args) -> float:
    """Seconds of one call of ``fn`` right after an untimed one, so that every timing finds the
    caches as a training loop that keeps calling the same step leaves them."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def paired_ratio(fn: Callable, base: Callable, args: tuple, repeats: int = 9) -> dict:
    """The time of ``fn`` over that of ``base``, each repeat timed base, fn, fn, base (ABBA), so a
    load that rises or falls steadily over the four timings cancels out of that repeat's ratio;
    each timing is of a second call in a row (:func:`warm_time`).

    Returns the median and quartiles of the per-repeat ratios, and the median times (seconds).
    """
    ratios, t_fn, t_base = [], [], []
    for _ in range(repeats):
        times = [warm_time(f, *args) for f in (base, fn, fn, base)]
        ratios.append((times[1] + times[2]) / (times[0] + times[3]))
        t_fn += times[1:3]
        t_base += [times[0], times[3]]
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return {"ratio": float(median), "q1": float(q1), "q3": float(q3),
            "time": float(np.median(t_fn)), "base_time": float(np.median(t_base))}


def compiled_memory(fn: Callable, *args) -> dict:
    """XLA's own account of a jitted function's memory: temporaries, arguments and outputs."""
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    return {
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
    }
