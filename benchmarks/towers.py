"""Hypergradient descent and optimizer towers: cost per training step against plain optax.

Workloads (float32, mnist5k, mini-batches drawn in advance):
  * Baydin et al.'s MNIST MLP: 784-1000-1000-10 ReLU, batch 128 (1.79M weights);
  * Chandra et al.'s MNIST MLP: 784-128-10 tanh, batch 300 (102k weights).

A training step is the gradient of the mini-batch cross-entropy, the optimizer's update and
optax.apply_updates; 30 steps run in one jitted lax.scan per timing, each timing of a second
call in a row (caches as a training loop leaves them). Timings on a shared machine
drift, so each ratio is taken within a repeat: the plain optimizer, the variant, the variant, the
plain optimizer (a steady drift cancels), and the median over repeats is printed with its
quartiles; towers are timed up and back down the heights in each repeat.

Prints, per workload:
  * SGD-HD / optax.sgd and Adam-HD / optax.adam (target <= 1.05), and beside them the same ratio
    for a hand-written minimal version of each (the previous direction in the state, one dot
    product per step, each leaf summed flat with hgrad's flat_vdot as the library sums it: what the
    algorithm cannot do without), as the floor for this machine, and for hgrad's with the
    learning rate stored as it is (storage="linear", the paper's additive rule);
  * towers of height 0 (plain) to 5, SGD/SGD/... and Adam(lr, b1, b2)/SGD/...: the time per step,
    what each extra level adds as a fraction of the plain optimizer's step (target <= 0.10), and
    the slope of time against height above the first level, per repeat.

Usage: python benchmarks/towers.py [--steps 30] [--repeats 9] [--max-height 5]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hgrad.data
import hgrad.towers as ht
from hgrad.towers.tower import flat_vdot
from workload import paired_ratio, tree_vdot, warm_time, xent

WORKLOADS = {
    "Baydin MLP 784-1000-1000-10 ReLU, batch 128": ((784, 1000, 1000, 10), jax.nn.relu, 128),
    "Chandra MLP 784-128-10 tanh, batch 300": ((784, 128, 10), jnp.tanh, 300),
}


def init_mlp(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {"w": jnp.asarray(rng.normal(size=(m, n)) / np.sqrt(m), jnp.float32),
         "b": jnp.zeros(n, jnp.float32)}
        for m, n in zip(sizes[:-1], sizes[1:])
    ]


def mlp(params, x, activation):
    for i, layer in enumerate(params):
        x = x @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            x = activation(x)
    return x


def trainer(tx, activation, xs, ys):
    """A jitted function: ``len(xs)`` training steps of ``tx`` from ``params``."""

    def loss(params, x, y):
        return xent(mlp(params, x, activation), y)

    def step(carry, batch):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params, *batch)
        updates, state = tx.update(grads, state)
        return (optax.apply_updates(params, updates), state), value

    @jax.jit
    def train(params):
        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), (xs, ys))
        return params, losses

    return train


def minimal_sgd_hd(lr, beta):
    """Baydin et al.'s SGD-HD written directly: the state is the rate and the last gradient."""

    def init(params):
        return jnp.asarray(lr, jnp.float32), jax.tree.map(jnp.zeros_like, params)

    def update(grads, state, params=None):
        rate, prev = state
        rate = rate + beta * tree_vdot(grads, prev, flat_vdot)
        return jax.tree.map(lambda g: -rate * g, grads), (rate, grads)

    return optax.GradientTransformation(init, update)


def minimal_adam_hd(lr, beta, b1=0.9, b2=0.999, eps=1e-8):
    """Baydin et al.'s Adam-HD written directly: Adam's state, the rate and the last direction."""

    def init(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return jnp.zeros([], jnp.int32), zeros(), zeros(), jnp.asarray(lr, jnp.float32), zeros()

    def update(grads, state, params=None):
        count, mu, nu, rate, prev = state
        rate = rate + beta * tree_vdot(grads, prev, flat_vdot)
        count = count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, grads)
        t = count.astype(jnp.float32) + 0 * rate  # D after the rate: no copies (hgrad's adam)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        direction = jax.tree.map(lambda m, v: (m / c1) / (jnp.sqrt(v / c2) + eps), mu, nu)
        return jax.tree.map(lambda d: -rate * d, direction), (count, mu, nu, rate, direction)

    return optax.GradientTransformation(init, update)


def sgd_tower(height):
    """Plain optax.sgd at height 0, else SGD with ``height`` SGD levels above it."""
    if height == 0:
        return optax.sgd(0.01)
    return ht.tower(ht.sgd(0.01), *[ht.sgd(1e-3) for _ in range(height)])


def adam_tower(height):
    """Plain optax.adam at height 0, else Adam(lr, b1, b2) with ``height`` SGD levels above it."""
    if height == 0:
        return optax.adam(1e-3)
    bottom = ht.adam(1e-3, tune=("learning_rate", "b1", "b2"))
    return ht.tower(bottom, *[ht.sgd(1e-6) for _ in range(height)])


def level_costs(fns: list, args: tuple, repeats: int) -> dict:
    """Times of towers of height 0, 1, ... (``fns[h]``), each round timed up and back down the
    heights (0..H, H..0) so that a steady change of load hits every height alike; each timing is
    of a second call in a row (:func:`~workload.warm_time`: timed once in a round, the two ends
    would otherwise be the only heights called twice in a row, and ran faster).

    Returns the median time per height, each level's cost from those medians as a fraction of
    the plain step, and the per-round least-squares slope over heights 1..H (the average cost of
    a level above the first, as a fraction of that round's plain step): median and quartiles.
    """
    heights = list(range(len(fns)))
    rounds = []
    for _ in range(repeats):
        times = np.zeros(len(fns))
        for h in heights + heights[::-1]:
            times[h] += warm_time(fns[h], *args) / 2
        rounds.append(times)
    rounds = np.array(rounds)
    median = np.median(rounds, axis=0)
    slopes = [np.polyfit(heights[1:], r[1:], 1)[0] / r[0] for r in rounds] if len(fns) > 2 else [np.nan]
    q1, mid, q3 = np.percentile(slopes, [25, 50, 75])
    return {"time": median, "cost": np.diff(median) / median[0], "slope": (q1, mid, q3)}


def _verdict(ok: bool) -> str:
    return "holds" if ok else "NOT MET"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--max-height", type=int, default=5)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, float32; {args.steps} steps per "
          f"timing; ratios: median over {args.repeats} repeats of base, variant, variant, base "
          "(quartiles in brackets); towers: each repeat up and back down the heights")
    data = hgrad.data.mnist5k()
    rng = np.random.default_rng(0)
    for title, (sizes, activation, batch) in WORKLOADS.items():
        idx = rng.integers(0, len(data.y), size=(args.steps, batch))
        xs, ys = jnp.asarray(data.x[idx]), jnp.asarray(data.y[idx])
        params = init_mlp(sizes)
        variants = {
            "optax.sgd": optax.sgd(0.01),
            "sgd_hd": ht.sgd_hd(0.01, 1e-3),
            "optax.adam": optax.adam(1e-3),
            "adam_hd": ht.adam_hd(1e-3, 1e-7),
            "minimal sgd_hd": minimal_sgd_hd(0.01, 1e-3),
            "minimal adam_hd": minimal_adam_hd(1e-3, 1e-7),
            "linear sgd_hd": ht.sgd_hd(0.01, 1e-3, storage="linear"),
            "linear adam_hd": ht.adam_hd(1e-3, 1e-7, storage="linear"),
        }
        for h in range(args.max_height + 1):
            variants[f"sgd height {h}"] = sgd_tower(h)
            variants[f"adam height {h}"] = adam_tower(h)
        fns = {name: trainer(tx, activation, xs, ys) for name, tx in variants.items()}
        for name, fn in fns.items():  # every variant trains without NaN
            _, losses = fn(params)
            if not np.all(np.isfinite(np.asarray(losses))):
                raise FloatingPointError(f"{name} produced a non-finite loss")
        print(f"\n## {title}: {sum(x.size for x in jax.tree.leaves(params)):,} weights")
        ms = lambda t: t / args.steps * 1e3  # noqa: E731
        for hd, plain in (("sgd_hd", "optax.sgd"), ("adam_hd", "optax.adam")):
            r = paired_ratio(fns[hd], fns[plain], (params,), args.repeats)
            m = paired_ratio(fns[f"minimal {hd}"], fns[plain], (params,), args.repeats)
            lin = paired_ratio(fns[f"linear {hd}"], fns[plain], (params,), args.repeats)
            print(f"{hd:8s} / {plain:10s}: {r['ratio']:.3f} [{r['q1']:.3f}, {r['q3']:.3f}]  "
                  f"({ms(r['time']):.3f} / {ms(r['base_time']):.3f} ms per step; target <= 1.05: "
                  f"{_verdict(r['ratio'] <= 1.05)}); hand-written minimal {hd}: {m['ratio']:.3f} "
                  f"[{m['q1']:.3f}, {m['q3']:.3f}]; with the paper's rule (storage='linear'): "
                  f"{lin['ratio']:.3f} [{lin['q1']:.3f}, {lin['q3']:.3f}]")
        for kind in ("sgd", "adam"):
            c = level_costs([fns[f"{kind} height {h}"] for h in range(args.max_height + 1)], (params,),
                            args.repeats)
            print(f"{kind} towers (bottom {'SGD' if kind == 'sgd' else 'Adam(lr, b1, b2)'}, "
                  f"SGD levels above): ms per step, and each level's cost / plain step")
            for h, t in enumerate(c["time"]):
                print(f"  height {h}: {ms(t):7.3f} ms" + (f"  {c['cost'][h - 1]:+.3f}" if h else ""))
            first, above = c["cost"][0], float(np.max(c["cost"][1:], initial=-np.inf))
            q1, mid, q3 = c["slope"]
            print(f"  first level: {first:+.3f} (target <= 0.10: {_verdict(first <= 0.10)}); levels above "
                  f"it: largest {above:+.3f} (target <= 0.10: {_verdict(above <= 0.10)}), per-round "
                  f"slope over heights 1-{args.max_height}: {mid:+.4f} [{q1:+.4f}, {q3:+.4f}] per level")


if __name__ == "__main__":
    main()
