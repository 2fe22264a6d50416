"""Reversible learning on the core workload: time against training, memory against the trajectory,
and the buffer against the entropy bound.

Workload: MLP 784-100-10 tanh on mnist5k, batch 100, SGD with momentum in Maclaurin's convention
(v <- g v - (1-g) grad, w <- w + a v), step size 0.1, log L2 1e-4, the model in float32 (the
reversible state itself is 64-bit fixed point: weights, velocities and the buffer are integers).

Prints, in one run:
  * time of hgrad.reversible_hypergrad / time of the training run alone (float32 scan, same loss,
    same convention), interleaved (target <= 4);
  * memory: the reversible run's state (weights + velocities, int64) and buffer (allocated, and the
    information it holds) against storing the trajectory (T float32 states of weights + velocities),
    for T in --steps, from XLA's compiled memory analysis where it runs; ratio target >= 50;
  * bits per weight per step for momenta in --momenta against log2(1/g).

Usage: python benchmarks/reversible.py [--steps 100 1000 10000] [--momenta 0.5 0.9 0.98 0.99]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import hgrad
from hgrad.reversible import hypergrad as R
from workload import Workload, apply, init_params, interleaved_times, xent


def problem(T: int, batch: int, momentum: float):
    w = Workload(num_steps=T, batch_size=batch)
    params0 = init_params(0)
    h = hgrad.reversible.init_hparams(0.1, momentum, loss=jnp.float32(np.log(1e-4)), num_steps=T,
                                      dtype=jnp.float32)
    outer = lambda p, hh: xent(apply(p, w.x_val), w.y_val)  # noqa: E731
    return w, params0, h, outer


def training_run(w: Workload, params0, h, T: int):
    """The training run alone, in float32, same update convention."""

    @jax.jit
    def run(params, h):
        def body(carry, t):
            p, v = carry
            g = jax.grad(w.loss)(p, h, t)
            a, m = jnp.exp(h.log_lr[t]), jax.nn.sigmoid(h.logit_momentum[t])
            v = jax.tree.map(lambda v, g: m * v - (1 - m) * g, v, g)
            return (jax.tree.map(lambda p, v: p + a * v, p, v), v), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        return jax.lax.scan(body, (params, zeros), jnp.arange(T))[0][0]

    return run


def memory(w, params0, h, outer, T: int):
    """Bytes of the reversible run's state and buffer (from the compiled forward and reverse passes)
    and of a stored trajectory of float32 weights + velocities."""
    with jax.enable_x64(True):
        words = R.buffer_words_needed(h, params0, T, 16)
        config = (w.loss, outer, None, T, 52, 16, words)
        fwd = R._forward.lower(config, h, params0).compile().memory_analysis()  # noqa: SLF001
        state = jax.eval_shape(lambda: R._forward(config, h, params0)[0])  # noqa: SLF001
        rev = R._reverse.lower(config, h, params0, state).compile().memory_analysis()  # noqa: SLF001
    n = sum(x.size for x in jax.tree.leaves(params0))
    weights_bytes = 2 * 8 * n  # w and v as int64
    buffer_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.buffer))
    peak = max(a.temp_size_in_bytes + a.argument_size_in_bytes + a.output_size_in_bytes
               - a.alias_size_in_bytes for a in (fwd, rev))
    return dict(n=n, weights=weights_bytes, buffer=buffer_bytes, peak=peak, trajectory=T * 2 * 4 * n)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--run-up-to", type=int, default=1000, help="run (not only compile) up to this T")
    parser.add_argument("--momenta", type=float, nargs="+", default=[0.5, 0.9, 0.98, 0.99])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, batch {args.batch}; "
          "model float32, reversible state int64 fixed point (R=52, momentum bits 16)")

    T = 100
    w, params0, h, outer = problem(T, args.batch, 0.9)
    train = training_run(w, params0, h, T)
    rev = lambda p, hh: hgrad.reversible_hypergrad(w.loss, outer, p, hh, T).grads  # noqa: E731
    times = interleaved_times({"training": train, "reversible": rev}, (params0, h), repeats=args.repeats)
    result = hgrad.reversible_hypergrad(w.loss, outer, params0, h, T)
    print(f"\nT={T}, momentum 0.9: training {times['training'] * 1e3:.1f} ms, reversible hypergradient "
          f"{times['reversible'] * 1e3:.1f} ms; exact reversal: {bool(result.exact)}")
    print(f"  reversible / training = {times['reversible'] / times['training']:.2f}  (target <= 4)")

    print(f"\n{'T':>6} {'w+v MiB':>8} {'buffer MiB':>10} {'held bits/w/step':>16} {'XLA peak MiB':>12} "
          f"{'trajectory MiB':>14} {'ratio':>7}")
    for T in args.steps:
        w, params0, h, outer = problem(T, args.batch, 0.9)
        m = memory(w, params0, h, outer, T)
        held = "(compiled)"
        if T <= args.run_up_to:
            start = time.perf_counter()
            r = hgrad.reversible_hypergrad(w.loss, outer, params0, h, T)
            held = f"{float(r.bits_per_weight_per_step):.4f} ({time.perf_counter() - start:.0f} s)"
        ratio = m["trajectory"] / (m["weights"] + m["buffer"])
        print(f"{T:>6} {m['weights'] / 2**20:>8.2f} {m['buffer'] / 2**20:>10.2f} {held:>16} "
              f"{m['peak'] / 2**20:>12.1f} {m['trajectory'] / 2**20:>14.1f} {ratio:>7.1f}")
    print("  ratio = trajectory / (w+v + buffer); target >= 50. log2(1/0.9) = "
          f"{np.log2(1 / 0.9):.4f} bits")

    print(f"\n{'momentum':>9} {'bits/w/step':>12} {'log2(1/g)':>10} {'ratio':>6}")
    for g in args.momenta:
        w, params0, h, outer = problem(100, args.batch, g)
        r = hgrad.reversible_hypergrad(w.loss, outer, params0, h, 100)
        bound = np.log2(2 ** 16 / round(g * 2 ** 16))
        bits = float(r.bits_per_weight_per_step)
        print(f"{g:>9} {bits:>12.4f} {bound:>10.4f} {bits / bound:>6.3f}")


if __name__ == "__main__":
    main()
