"""Does reversible learning reverse exactly on this machine? Both programs, over a grid of models.

Exact reversal needs the reverse sweep to recompute each step's gradient bit for bit. With two
loops (``single_loop=False``) that rests on XLA compiling the gradient alike in both; with one loop
(``single_loop=True``) both directions run the same compiled gradient. This script runs
``hgrad.reversible_hypergrad`` both ways on small tanh MLPs (float32 and float64 parameters, several
layer sizes and batch sizes, 12 steps of momentum 0.9, a cross-entropy loss with an L2 term) and
prints, for each model, whether each program reversed exactly (no ``ReversalError``), then the count
of failures. On a lent H100 (jax 0.11.2), a diagnostic over this same grid, which this script was
written from, found two loops inexact on 10 of the 32 models and the first version of one loop on
none; this script itself has not run on a GPU yet. On a CPU neither program has failed.

Usage: python benchmarks/reversal_exactness.py [--sizes 4,3 20,10 784,100,10 64,64,64,10] [--batches 5 10 100 300]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from hgrad.reversible import ReversalError, init_hparams, reversible_hypergrad

T = 12


def xent(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def mlp(params, x):
    n = len(params) // 2
    for i in range(n):
        x = x @ params[f"w{i}"] + params[f"b{i}"]
        if i < n - 1:
            x = jnp.tanh(x)
    return x


def problem(sizes, batch, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, sizes[0])), dtype)
    y = jnp.asarray(rng.integers(0, sizes[-1], size=batch), jnp.int32)
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"w{i}"] = jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), dtype)
        params[f"b{i}"] = jnp.zeros(b, dtype)
    hparams = init_hparams(0.1, 0.9, loss=jnp.asarray(-2.0, dtype), num_steps=T, dtype=dtype)
    half = max(1, batch // 2)

    def loss(p, h, t):
        l2 = sum(jnp.sum(p[k] ** 2) for k in p if k.startswith("w"))
        return xent(mlp(p, x), y) + 0.5 * jnp.exp(h.loss) * l2

    def outer(p, h):
        return xent(mlp(p, x[:half]), y[:half])

    return loss, outer, params, hparams


def reverses_exactly(sizes, batch, dtype, single_loop: bool) -> bool:
    loss, outer, params, hparams = problem(sizes, batch, dtype)
    try:
        return bool(reversible_hypergrad(loss, outer, params, hparams, T, single_loop=single_loop).exact)
    except ReversalError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["4,3", "20,10", "784,100,10", "64,64,64,10"])
    parser.add_argument("--batches", type=int, nargs="+", default=[5, 10, 100, 300])
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); "
          f"{T} steps, momentum 0.9; exact reversal per program")
    print(f"\n{'dtype':>8} {'sizes':>14} {'batch':>6} {'two loops':>10} {'one loop':>9}")
    failures = {False: 0, True: 0}
    total = 0
    for dtype in (jnp.float32, jnp.float64):
        for spec in args.sizes:
            sizes = tuple(int(s) for s in spec.split(","))
            for batch in args.batches:
                ok = {one: reverses_exactly(sizes, batch, dtype, one) for one in (False, True)}
                for one in ok:
                    failures[one] += not ok[one]
                total += 1
                print(f"{jnp.dtype(dtype).name:>8} {spec:>14} {batch:>6} {str(ok[False]):>10} {str(ok[True]):>9}")
    print(f"\nnot exact: two loops {failures[False]} of {total}, one loop {failures[True]} of {total}")


if __name__ == "__main__":
    main()
