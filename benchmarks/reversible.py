"""Reversible learning on the core workload: time against training, memory against the trajectory,
and the buffer against the entropy bound.

Workload: MLP 784-100-10 tanh on mnist5k, batch 100, SGD with momentum in Maclaurin's convention
(v <- g v - (1-g) grad, w <- w + a v), step size 0.1, log L2 1e-4, the model in float32. The
reversible state itself cannot be float32: weights and velocities are fixed-point integers held in
float64 (weights with 41 fractional bits, velocities with 47; float64 holds integers exactly below
2^53, float32 only below 2^24), the buffer a 32-bit head and 16-bit words per weight.

Prints, in one run:
  * time of hgrad.reversible_hypergrad / time of the training run alone (float32 scan, same loss,
    same convention), within each repeat (training, reversible, reversible, training; the median
    over repeats; target <= 4): as a plain call, and inside jax.jit with the buffer's size given
    (no host work between the sweeps), as the jitted training run is timed, with the program that
    is the default on this backend (two loops on a CPU, one on an accelerator) and with the other;
    and beside it the
    float work alone (training plus the reverse sweep's gradients, Hessian-vector products, dot
    products and adjoint updates in float32, without exact arithmetic), the floor of any reversal;
  * memory: the reversible run's state (weights + velocities: 64 bits each by default, or the weights
    stored in 32 bits, weight_bits=32) and buffer (allocated, and the information it holds) against
    storing the trajectory (T states of weights + velocities, in float32 as the workload trains, and
    in float64, the precision the exact state keeps), for T in --steps; XLA's compiled peak for the
    whole forward and reverse sweeps (adjoints included) beside it; ratio target >= 50; and the
    time of the jitted hypergradient with 32-bit weights against training and against 64-bit weights;
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
from hgrad.reversible import buffer as B
from hgrad.reversible import hypergrad as R
from workload import Workload, apply, init_params, paired_ratio, tree_vdot, xent


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


def float_reverse_run(w: Workload, params0, h, T: int):
    """The reverse sweep's float work alone, in float32: at each step back the gradient and the
    Hessian-vector product at the step's weights (one forward-over-reverse product, as the reversible
    sweep computes them), the two dot products of the step size's and momentum's adjoints, and the
    adjoint updates, with the weights stepped back in float (inexactly: no fixed point, no buffer).
    Training plus this is what a reversal costs before its exact arithmetic."""
    grad_loss = jax.grad(w.loss, argnums=(0, 1))
    tmap = jax.tree.map

    @jax.jit
    def run(params, h):
        def body(carry, t):
            p, v, w_bar, v_bar = carry
            a, m = jnp.exp(h.log_lr[t]), jax.nn.sigmoid(h.logit_momentum[t])
            alpha_bar = tree_vdot(w_bar, v)
            p = tmap(lambda p, v: p - a * v, p, v)
            v_bar = tmap(lambda vb, wb: vb + a * wb, v_bar, w_bar)
            (g, _), (hvp, _) = jax.jvp(lambda q: grad_loss(q, h, t), (p,), (tmap(lambda x: -(1 - m) * x, v_bar),))
            v = tmap(lambda v, g: (v + (1 - m) * g) / m, v, g)
            gamma_bar = tree_vdot(v_bar, tmap(jnp.add, v, g))
            return (p, v, tmap(jnp.add, w_bar, hvp), tmap(lambda x: m * x, v_bar)), (alpha_bar, gamma_bar)

        ones = tmap(jnp.ones_like, params)
        return jax.lax.scan(body, (params, ones, ones, tmap(jnp.zeros_like, params)), jnp.arange(T),
                            reverse=True)[1]

    return run


def memory(w, params0, h, outer, T: int, weight_bits: int):
    """Bytes of the reversible run's state and buffer (the shapes the forward pass returns) and of a
    stored trajectory of weights + velocities; XLA's peak over the compiled forward and reverse passes
    (two loops), and over the one loop that runs both (``single_loop=True``)."""
    with jax.enable_x64(True):
        words = R.buffer_words_needed(h, params0, T, 16)
        config = (w.loss, outer, None, T, R.DEFAULT_RADIX_BITS[weight_bits], 47, 16, words, weight_bits)
        fwd = R._forward.lower(config, h, params0).compile().memory_analysis()  # noqa: SLF001
        states = jax.eval_shape(lambda: R._forward(config, h, params0)[0])  # noqa: SLF001
        rev = R._reverse.lower(config, h, params0, states).compile().memory_analysis()  # noqa: SLF001
        one = R._sweeps.lower(config, h, params0).compile().memory_analysis()  # noqa: SLF001
    n = sum(x.size for x in jax.tree.leaves(params0))
    weights_bytes = sum(s.w.size * s.w.dtype.itemsize + s.v.size * s.v.dtype.itemsize for s in states)
    buffer_bytes = sum(B.memory_bytes(s.buffer) for s in states)
    peak = lambda *analyses: max(a.temp_size_in_bytes + a.argument_size_in_bytes + a.output_size_in_bytes  # noqa: E731
                                 - a.alias_size_in_bytes for a in analyses)
    return dict(n=n, weights=weights_bytes, buffer=buffer_bytes, peak=peak(fwd, rev), peak_one=peak(one),
                words=words, trajectory32=T * 2 * 4 * n, trajectory64=T * 2 * 8 * n)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--run-up-to", type=int, default=1000, help="run (not only compile) up to this T")
    parser.add_argument("--momenta", type=float, nargs="+", default=[0.5, 0.9, 0.98, 0.99])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, batch {args.batch}; "
          "model float32, reversible state fixed point held in float64 (weights 41 and velocities 47 "
          "fractional bits, momentum bits 16; or, with weight_bits=32, weights stored as int32 with 28), "
          "buffer 32-bit heads + 16-bit words")

    T = 100
    w, params0, h, outer = problem(T, args.batch, 0.9)
    train = training_run(w, params0, h, T)
    rev = lambda p, hh: hgrad.reversible_hypergrad(w.loss, outer, p, hh, T).grads  # noqa: E731
    with jax.enable_x64(True):
        words = R.buffer_words_needed(h, params0, T, 16)
    # traced with 64-bit types off, as a user's float32 hyper-step is: the sweeps switch them on inside
    rev_jit = lambda one, bits=64: jax.jit(lambda p, hh: hgrad.reversible_hypergrad(  # noqa: E731
        w.loss, outer, p, hh, T, buffer_words=words, single_loop=one, weight_bits=bits).grads)
    default_one = jax.default_backend() != "cpu"  # reversible_hypergrad's default

    plain = paired_ratio(rev, train, (params0, h), repeats=args.repeats)
    default_jit, compact_jit = rev_jit(default_one), rev_jit(default_one, 32)
    jitted = paired_ratio(default_jit, train, (params0, h), repeats=args.repeats)
    other = paired_ratio(rev_jit(not default_one), train, (params0, h), repeats=args.repeats)
    compact = paired_ratio(compact_jit, train, (params0, h), repeats=args.repeats)
    widths = paired_ratio(compact_jit, default_jit, (params0, h), repeats=args.repeats)
    floor = paired_ratio(float_reverse_run(w, params0, h, T), train, (params0, h), repeats=args.repeats)
    result = hgrad.reversible_hypergrad(w.loss, outer, params0, h, T)
    print(f"\nT={T}, momentum 0.9: training {plain['base_time'] * 1e3:.1f} ms, reversible hypergradient "
          f"{plain['time'] * 1e3:.1f} ms (a plain call: its checks and the buffer's size on the host) and "
          f"{jitted['time'] * 1e3:.1f} ms (the call inside jax.jit with buffer_words given, as a jitted "
          f"hyper-step runs it); exact reversal: {bool(result.exact)}")
    print(f"  reversible / training = {plain['ratio']:.2f} [{plain['q1']:.2f}, {plain['q3']:.2f}] (plain call), "
          f"{jitted['ratio']:.2f} [{jitted['q1']:.2f}, {jitted['q3']:.2f}] (jitted)  (target <= 4; median "
          f"and quartiles over {args.repeats} repeats of training, reversible, reversible, training)")
    names = {True: "one loop", False: "two loops"}
    print(f"  the default here is {names[default_one]} (single_loop={default_one}); with {names[not default_one]} "
          f"(single_loop={not default_one}), jitted: {other['ratio']:.2f} [{other['q1']:.2f}, {other['q3']:.2f}]")
    print(f"  with the weights stored in 32 bits (weight_bits=32), jitted: {compact['ratio']:.2f} "
          f"[{compact['q1']:.2f}, {compact['q3']:.2f}]; against the 64-bit weights directly (the same ABBA "
          f"pairing), {widths['ratio']:.3f} [{widths['q1']:.3f}, {widths['q3']:.3f}]")
    print(f"  the float work alone: training + the reverse sweep's float work = 1 + {floor['ratio']:.2f} "
          f"[{floor['q1']:.2f}, {floor['q3']:.2f}] = {1 + floor['ratio']:.2f} x training; the exact arithmetic "
          f"adds the rest, {jitted['ratio'] - 1 - floor['ratio']:.2f} (jitted)")

    print(f"\n{'T':>6} {'w bits':>6} {'w+v MiB':>8} {'buffer MiB':>10} {'words':>5} {'held bits/w/step':>18} "
          f"{'XLA peak':>8} {'1 loop':>7} {'traj f32':>9} {'ratio':>6} {'traj f64':>9} {'ratio':>6}")
    for T in args.steps:
        w, params0, h, outer = problem(T, args.batch, 0.9)
        for bits in (64, 32):
            m = memory(w, params0, h, outer, T, bits)
            held = "(compiled only)"
            if T <= args.run_up_to:
                start = time.perf_counter()
                r = hgrad.reversible_hypergrad(w.loss, outer, params0, h, T, weight_bits=bits)
                held = f"{float(r.bits_per_weight_per_step):.4f} ({time.perf_counter() - start:.0f} s)"
                assert bool(r.exact)
            ours = m["weights"] + m["buffer"]
            mib = lambda b: f"{b / 2**20:.2f}"  # noqa: E731
            print(f"{T:>6} {bits:>6} {mib(m['weights']):>8} {mib(m['buffer']):>10} {m['words']:>5} {held:>18} "
                  f"{mib(m['peak']):>8} {mib(m['peak_one']):>7} {mib(m['trajectory32']):>9} "
                  f"{m['trajectory32'] / ours:>6.1f} {mib(m['trajectory64']):>9} {m['trajectory64'] / ours:>6.1f}")
    print("  MiB; ratio = trajectory / (w+v + buffer), target >= 50; w bits: how the fixed-point weights are "
          "stored between steps (velocities: 64); words = 16-bit words per weight, counted from the momenta "
          "(none while the 32-bit heads hold the run); XLA peak: two loops (the larger sweep), 1 loop: "
          f"single_loop=True. log2(1/0.9) = {np.log2(1 / 0.9):.4f} bits")

    print(f"\n{'momentum':>9} {'bits/w/step':>12} {'log2(1/g)':>10} {'ratio':>6}")
    for g in args.momenta:
        w, params0, h, outer = problem(100, args.batch, g)
        r = hgrad.reversible_hypergrad(w.loss, outer, params0, h, 100)
        bound = np.log2(2 ** 16 / round(g * 2 ** 16))
        bits = float(r.bits_per_weight_per_step)
        print(f"{g:>9} {bits:>12.4f} {bound:>10.4f} {bits / bound:>6.3f}")


if __name__ == "__main__":
    main()
