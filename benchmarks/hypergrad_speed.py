"""Hypergradient speed on the core workload, as ratios measured in one run.

Prints, for batch sizes 100 and 500:
  * the generic hgrad.hypergrad (a plain step function, Reverse(structured=False)) against a
    hand-written jax.value_and_grad through lax.scan of the same step  (target: <= 1.10);
  * the ready-made Momentum dynamics (structured reverse sweep) against the training run alone
    (target at batch 500: <= 3.5), beside the naive scan's ratio.

Usage: python benchmarks/hypergrad_speed.py [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp

import hgrad
from workload import Workload, interleaved_times


def measure(batch_size: int, repeats: int) -> dict:
    w = Workload(num_steps=100, batch_size=batch_size)
    step = w.dynamics.__call__  # a plain function: the generic path cannot see the structure
    T = w.num_steps

    def hand_written(h):
        def f(h):
            def body(s, t):
                return step(s, h, t), None

            s, _ = jax.lax.scan(body, w.state0, jnp.arange(T, dtype=jnp.int32))
            return w.outer(s, h)

        return jax.value_and_grad(f)(h)

    def train_only(h):
        s, _ = jax.lax.scan(lambda s, t: (step(s, h, t), None), w.state0, jnp.arange(T, dtype=jnp.int32))
        return s

    fns = {
        "train": jax.jit(train_only),
        "hand_written_grad": jax.jit(hand_written),
        "hgrad_generic": lambda h: hgrad.hypergrad(step, w.outer, w.state0, h, T,
                                                   method=hgrad.Reverse(structured=False)),
        "hgrad_momentum": lambda h: hgrad.hypergrad(w.dynamics, w.outer, w.state0, h, T),
    }
    times = interleaved_times(fns, (w.hparams,), repeats=repeats)
    return {
        "batch_size": batch_size,
        "times_s": times,
        "generic_over_hand_written": times["hgrad_generic"] / times["hand_written_grad"],
        "naive_scan_over_training": times["hand_written_grad"] / times["train"],
        "momentum_over_training": times["hgrad_momentum"] / times["train"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, float32")
    rows = [measure(b, args.repeats) for b in (100, 500)]
    for r in rows:
        t = r["times_s"]
        print(f"\nbatch {r['batch_size']}: training {t['train']*1e3:.1f} ms, hand-written grad "
              f"{t['hand_written_grad']*1e3:.1f} ms, hgrad generic {t['hgrad_generic']*1e3:.1f} ms, "
              f"hgrad Momentum {t['hgrad_momentum']*1e3:.1f} ms")
        print(f"  generic / hand-written      = {r['generic_over_hand_written']:.3f}  (target <= 1.10)")
        print(f"  naive scan / training      = {r['naive_scan_over_training']:.2f}")
        print(f"  hgrad Momentum / training  = {r['momentum_over_training']:.2f}"
              + ("  (target <= 3.5)" if r["batch_size"] == 500 else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
