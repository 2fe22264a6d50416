"""Time and peak memory of checkpointed reverse mode for T in {100, 1000, 10000}.

Workload: the core MLP (784-100-10 tanh, mnist5k, SGD with momentum, batch 100, float32), with the
hypergradient w.r.t. per-step log step size and logit momentum and log L2. Memory is XLA's own
account of the compiled computation (temporary buffers, from ``memory_analysis()``; arguments and
outputs excluded), so it is exact and repeatable; plain reverse mode is compiled, not run, at every
T, to show what checkpointing saves. Time is the median of a few runs (one at T=10000).

Usage: python benchmarks/checkpoint_memory.py [--steps 100 1000 10000]
"""

from __future__ import annotations

import argparse

import jax

import hgrad
from workload import Workload, compiled_memory, median_time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, batch {args.batch}, float32")
    print(f"{'T':>6} {'method':>22} {'temp MiB':>10} {'time s':>8}")
    for T in args.steps:
        w = Workload(num_steps=T, batch_size=args.batch)
        state_mib = sum(x.nbytes for x in jax.tree.leaves(w.state0)) / 2**20
        for method in (hgrad.Reverse(), hgrad.Checkpointed()):
            fn = lambda h, m=method: m.value_and_grad(w.dynamics, w.outer, w.state0, h, T)
            mem = compiled_memory(fn, w.hparams)["temp_bytes"] / 2**20
            run = isinstance(method, hgrad.Checkpointed)
            if run:
                seconds = median_time(jax.jit(fn), w.hparams, repeats=1 if T >= 10000 else 3)
                timing = f"{seconds:>8.2f}"
            else:
                timing = f"{'(compiled, not run)':>20}"
            print(f"{T:>6} {str(method):>22} {mem:>10.1f} {timing}")
        print(f"{'':>6} (one state, parameters + velocity: {state_mib:.2f} MiB)")


if __name__ == "__main__":
    main()
