"""hgrad against PyTorch on the core workload, measured side by side in one run.

The same problem in each: MLP 784-100-10 tanh on mnist5k, T=100 steps of SGD with momentum
(v <- mu_t v + g, w <- w - eta_t v) on the same mini-batches from the same initial weights,
hypergradient of the validation cross-entropy w.r.t. the per-step log step size, the per-step logit
momentum and the log L2 strength. float32, on the CPU, with the same number of threads.

  * PyTorch autograd: the loop written by hand with torch.autograd.grad(create_graph=True);
  * PyTorch + higher: higher.innerloop_ctx with a differentiable SGD whose lr/momentum are
    overridden per step;
  * hgrad: hgrad.hypergrad with the ready-made Momentum dynamics (and the generic path).

The script also checks the three compute the same hypergradient (relative difference printed).
Needs the optional extra: pip install -e '.[bench]' (torch==2.13.0, higher).

Usage: python benchmarks/vs_pytorch.py [--batch 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import hgrad
from workload import SIZES, Workload, interleaved_times

try:
    import torch
except ImportError as err:  # pragma: no cover - depends on the optional extra
    raise SystemExit("this benchmark needs PyTorch: pip install -e '.[bench]'") from err


def torch_problem(w: Workload):
    params0 = [torch.tensor(np.asarray(w.state0.params[k])) for k in ("w0", "b0", "w1", "b1")]
    idx = np.asarray(w.batches.indices)
    x_tr = torch.tensor(np.asarray(w.batches.arrays[0]))
    y_tr = torch.tensor(np.asarray(w.batches.arrays[1]), dtype=torch.long)
    batches = [(x_tr[i], y_tr[i]) for i in torch.tensor(idx, dtype=torch.long)]
    x_val = torch.tensor(np.asarray(w.x_val))
    y_val = torch.tensor(np.asarray(w.y_val), dtype=torch.long)
    h = w.hparams
    hp0 = [torch.tensor(np.asarray(a)) for a in (h.log_lr, h.logit_momentum, h.loss)]
    return params0, batches, x_val, y_val, hp0


def mlp(p, x):
    return torch.tanh(x @ p[0] + p[1]) @ p[2] + p[3]


def autograd_hypergrad(params0, batches, x_val, y_val, hp0):
    log_lr, logit_mu, log_l2 = [a.clone().requires_grad_(True) for a in hp0]
    params = [p.clone().requires_grad_(True) for p in params0]
    vel = [torch.zeros_like(p) for p in params0]
    lr, mu, l2 = torch.exp(log_lr), torch.sigmoid(logit_mu), torch.exp(log_l2)
    for t, (xb, yb) in enumerate(batches):
        loss = torch.nn.functional.cross_entropy(mlp(params, xb), yb)
        loss = loss + 0.5 * l2 * sum((p**2).sum() for p in params)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        vel = [mu[t] * v + g for v, g in zip(vel, grads)]
        params = [p - lr[t] * v for p, v in zip(params, vel)]
    val = torch.nn.functional.cross_entropy(mlp(params, x_val), y_val)
    return val, torch.autograd.grad(val, (log_lr, logit_mu, log_l2))


def higher_hypergrad(params0, batches, x_val, y_val, hp0):
    import higher

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.ParameterList([torch.nn.Parameter(p.clone()) for p in params0])

        def forward(self, x):
            return mlp(list(self.w), x)

    log_lr, logit_mu, log_l2 = [a.clone().requires_grad_(True) for a in hp0]
    lr, mu, l2 = torch.exp(log_lr), torch.sigmoid(logit_mu), torch.exp(log_l2)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    with higher.innerloop_ctx(net, opt, copy_initial_weights=True) as (fnet, diffopt):
        for t, (xb, yb) in enumerate(batches):
            loss = torch.nn.functional.cross_entropy(fnet(xb), yb)
            loss = loss + 0.5 * l2 * sum((p**2).sum() for p in fnet.parameters())
            diffopt.step(loss, override={"lr": [lr[t]], "momentum": [mu[t]]})
        val = torch.nn.functional.cross_entropy(fnet(x_val), y_val)
        return val, torch.autograd.grad(val, (log_lr, logit_mu, log_l2))


def timed(fn, *args, repeats):
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    print(f"jax {jax.__version__}, torch {torch.__version__}, {threads} CPU threads, float32, "
          f"MLP {'-'.join(map(str, SIZES))}, T=100, batch {args.batch}")

    w = Workload(num_steps=100, batch_size=args.batch)
    problem = torch_problem(w)
    jax_fns = {
        "hgrad Momentum": lambda h: hgrad.hypergrad(w.dynamics, w.outer, w.state0, h, w.num_steps),
        "hgrad generic": lambda h: hgrad.hypergrad(w.dynamics.__call__, w.outer, w.state0, h,
                                                   w.num_steps, method=hgrad.Reverse(structured=False)),
    }
    ours = interleaved_times(jax_fns, (w.hparams,), repeats=args.repeats)
    theirs = {
        "torch autograd": timed(autograd_hypergrad, *problem, repeats=args.repeats),
        "torch + higher": timed(higher_hypergrad, *problem, repeats=args.repeats),
    }

    _, g_ours = jax_fns["hgrad Momentum"](w.hparams)
    ours_flat = np.concatenate([np.ravel(g_ours.log_lr), np.ravel(g_ours.logit_momentum), np.ravel(g_ours.loss)])
    for name, fn in (("torch autograd", autograd_hypergrad), ("torch + higher", higher_hypergrad)):
        _, g = fn(*problem)
        flat = np.concatenate([gi.detach().numpy().ravel() for gi in g])
        rel = np.linalg.norm(flat - ours_flat) / np.linalg.norm(ours_flat)
        print(f"  {name}: hypergradient relative difference to hgrad {rel:.1e}")

    times = {**ours, **theirs}
    for name, t in times.items():
        print(f"  {name:16s} {t * 1e3:8.1f} ms")
    for name in theirs:
        print(f"  speed-up of hgrad Momentum over {name}: {theirs[name] / ours['hgrad Momentum']:.2f}x")


if __name__ == "__main__":
    main()
