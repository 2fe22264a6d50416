"""Test problems: ridge regression trained by gradient descent (closed form) and a small MLP."""

import jax
import jax.numpy as jnp
import numpy as np

from hgrad.dynamics import Batches, GradientDescent, Momentum

N, D, T = 40, 6, 30


def ridge_data(seed=0):
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=D)
    x_tr, x_va = rng.normal(size=(N, D)), rng.normal(size=(N, D))
    y_tr = x_tr @ w_true + 0.5 * rng.normal(size=N)
    y_va = x_va @ w_true + 0.5 * rng.normal(size=N)
    return tuple(jnp.asarray(a) for a in (x_tr, y_tr, x_va, y_va))


class Ridge:
    """L(w) = |Xw - y|^2 / (2n) + exp(log_l2) |w|^2 / 2, trained by T steps of GD from w0."""

    def __init__(self, seed=0):
        self.x_tr, self.y_tr, self.x_va, self.y_va = ridge_data(seed)
        self.dynamics = GradientDescent(self.loss)
        self.w0 = jnp.asarray(np.random.default_rng(seed + 1).normal(size=D))

    def loss(self, w, h, t):
        r = self.x_tr @ w - self.y_tr
        return 0.5 * jnp.mean(r**2) + 0.5 * jnp.exp(h.loss) * jnp.sum(w**2)

    def plain_step(self, w, h, t):
        return w - jnp.exp(h.log_lr) * jax.grad(self.loss)(w, h, t)

    def outer(self, w, h):
        return 0.5 * jnp.mean((self.x_va @ w - self.y_va) ** 2)

    def hparams(self):
        return self.dynamics.init_hparams(lr=0.3, loss=jnp.log(jnp.float64(0.1)))

    def closed_form_wT(self, h, num_steps):
        """w_T = (I - eta A)^T w0 + (I - (I - eta A)^T) A^{-1} b, via A's eigendecomposition."""
        a = self.x_tr.T @ self.x_tr / N + jnp.exp(h.loss) * jnp.eye(D)
        b = self.x_tr.T @ self.y_tr / N
        lam, q = jnp.linalg.eigh(a)
        decay = (1.0 - jnp.exp(h.log_lr) * lam) ** num_steps
        return q @ (decay * (q.T @ self.w0) + (1.0 - decay) / lam * (q.T @ b))

    def closed_form_objective(self, h, num_steps=T):
        return self.outer(self.closed_form_wT(h, num_steps), h)


class SmallMLP:
    """A 5-8-3 tanh MLP trained by SGD with momentum on mini-batches, with per-step schedules,
    a log L2 strength, and a log init scale (the initial state is a function of hparams)."""

    def __init__(self, seed=0, num_steps=12, batch_size=16):
        rng = np.random.default_rng(seed)
        self.x = jnp.asarray(rng.normal(size=(64, 5)))
        self.y = jnp.asarray(rng.integers(0, 3, 64))
        self.x_va = jnp.asarray(rng.normal(size=(32, 5)))
        self.y_va = jnp.asarray(rng.integers(0, 3, 32))
        self.batches = Batches(self.x, self.y, batch_size=batch_size, num_steps=num_steps, seed=seed)
        self.noise = {
            "w1": jnp.asarray(rng.normal(size=(5, 8))),
            "b1": jnp.zeros(8),
            "w2": jnp.asarray(rng.normal(size=(8, 3))),
        }
        self.dynamics = Momentum(self.loss)
        self.num_steps = num_steps

    @staticmethod
    def apply(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]

    @staticmethod
    def xent(logits, y):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    def loss(self, p, h, t):
        xb, yb = self.batches(t)
        l2 = sum(jnp.sum(w**2) for w in jax.tree.leaves(p))
        return self.xent(self.apply(p, xb), yb) + 0.5 * jnp.exp(h.loss["log_l2"]) * l2

    def outer(self, state, h):
        return self.xent(self.apply(state.params, self.x_va), self.y_va)

    def init_state(self, h):
        scale = jnp.exp(h.loss["log_init_scale"])
        return Momentum.init(jax.tree.map(lambda n: scale * n, self.noise))

    def hparams(self):
        loss_h = {"log_l2": jnp.float64(-3.0), "log_init_scale": jnp.float64(np.log(0.5))}
        h = self.dynamics.init_hparams(lr=0.2, momentum=0.8, loss=loss_h, num_steps=self.num_steps)
        ramp = jnp.linspace(-0.3, 0.3, self.num_steps)
        return h._replace(log_lr=h.log_lr + ramp, logit_momentum=h.logit_momentum - ramp)
