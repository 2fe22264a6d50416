"""Small classifiers and losses used by the hypergradient experiments.

The models are written with Flax NNX (``from flax import nnx``) because that is a convenient way to
declare layers and initialise them, but **hypergradient code never touches a module object**. It
works on the pair returned by :func:`functional`:

* ``params`` -- a plain nested ``dict`` of arrays (a pytree; ``jax.tree_util.tree_map``, ``optax``
  and :func:`cast` work on it directly), and
* ``apply(params, x) -> logits`` -- a *pure* function. Each call rebuilds a throw-away module from
  the static graph definition and the given arrays (``nnx.merge``), so ``apply`` can be ``jax.jit``-ed,
  differentiated to any order (``jax.grad``, ``jax.jvp`` of ``jax.grad``, ``jax.hessian``), ``vmap``-ed
  and placed inside ``lax.scan`` like any other JAX function. Tracing cost is paid once per input
  shape/dtype under ``jax.jit``.

All models cast their input to the dtype of their parameters before the first layer, so the model
runs in the parameters' precision (``cast(params, jnp.float64)`` gives a float64 model even for
float32 or ``uint8`` data). This is an explicit cast, hence also valid under
``jax_numpy_dtype_promotion='strict'``.

Models:

* :class:`SoftmaxRegression` -- multinomial logistic regression, ``logits = x W + b``.
* :class:`MLP` -- fully connected network with a fixed activation between layers.
* :class:`LeNet` -- LeNet-5-style convolutional network (LeCun et al., 1998).

Losses and metrics: :func:`softmax_cross_entropy`, :func:`accuracy`.

References:
    Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. "Gradient-based learning applied to document
    recognition". Proceedings of the IEEE, 86(11), 1998.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "SoftmaxRegression",
    "MLP",
    "LeNet",
    "functional",
    "cast",
    "softmax_cross_entropy",
    "accuracy",
]

Array = jax.Array
PyTree = Any

# ``nnx.List`` (flax >= 0.12) marks a list attribute as a container of sub-modules; older NNX
# versions accepted plain Python lists for the same purpose.
_ModuleList = getattr(nnx, "List", list)


def _variable_value(variable: Any) -> Array:
    """Return the array held by an NNX variable (``.value`` is deprecated in flax >= 0.12)."""
    if hasattr(variable, "get_value"):
        return variable.get_value()
    return variable.value  # pragma: no cover - flax < 0.12


def _to_pure_dict(state: Any) -> dict:
    """Convert an ``nnx.State`` into a nested ``dict`` of arrays (version independent)."""
    if hasattr(nnx, "to_pure_dict"):
        return nnx.to_pure_dict(state)
    return state.to_pure_dict()  # pragma: no cover - older flax


def _input_as(x: Array, dtype: Any) -> Array:
    """Explicitly cast the model input to the parameter dtype (strict-promotion safe)."""
    x = jnp.asarray(x)
    return x if x.dtype == dtype else x.astype(dtype)


def _avg_pool_2x2(x: Array) -> Array:
    """2x2 average pooling with stride 2 on an ``(N, H, W, C)`` array ('VALID' padding).

    Implemented as a reshape and a mean (an odd trailing row/column is dropped, as with 'VALID'),
    which is differentiable to any order. ``nnx.avg_pool`` (re-exported from ``flax.linen``) is
    not used because it divides by a NumPy ``int64`` window size, which strict dtype promotion
    rejects.
    """
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, : 2 * h2, : 2 * w2, :].reshape((n, h2, 2, w2, 2, c))
    return jnp.mean(x, axis=(2, 4))


class SoftmaxRegression(nnx.Module):
    """Multinomial logistic regression: ``logits = x @ W + b``.

    Args:
        in_features: number of input features ``d`` (inputs are flattened to ``(N, d)``).
        num_classes: number of classes ``K``.
        zero_init: if ``True`` initialise ``W`` and ``b`` to zero (the convex problem then starts at
            the uniform predictor, a common choice in hyperparameter-optimisation benchmarks);
            otherwise ``W`` uses Flax's default LeCun-normal initialisation.
        param_dtype: dtype of the parameters (default ``float32``).
        rngs: ``nnx.Rngs`` used for initialisation.

    Call:
        ``model(x)`` with ``x`` of shape ``(N, d)`` or ``(N, ...)`` with ``prod(...) = d``; returns
        logits of shape ``(N, K)``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        zero_init: bool = False,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kwargs = {}
        if zero_init:
            kwargs["kernel_init"] = nnx.initializers.zeros
        self.in_features = int(in_features)
        self.num_classes = int(num_classes)
        self.linear = nnx.Linear(
            in_features, num_classes, param_dtype=param_dtype, rngs=rngs, **kwargs
        )

    def __call__(self, x: Array) -> Array:
        x = _input_as(x, _variable_value(self.linear.kernel).dtype)
        x = x.reshape((x.shape[0], -1))
        return self.linear(x)


class MLP(nnx.Module):
    """Fully connected network ``Linear -> act -> ... -> act -> Linear`` (no activation at the end).

    Args:
        sizes: layer widths including input and output, e.g. ``(784, 100, 10)`` gives two ``Linear``
            layers ``784 -> 100 -> 10`` with one activation in between. Needs at least two entries.
        activation: element-wise nonlinearity applied between layers (default ``jnp.tanh``; a
            smooth activation keeps Hessian-vector products informative).
        param_dtype: dtype of the parameters (default ``float32``).
        rngs: ``nnx.Rngs`` used for initialisation.

    Call:
        ``model(x)`` with ``x`` of shape ``(N, sizes[0])`` (or ``(N, ...)``, flattened); returns
        ``(N, sizes[-1])`` logits.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        activation: Callable[[Array], Array] = jnp.tanh,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least an input and an output size, got sizes={sizes}")
        if any(s <= 0 for s in sizes):
            raise ValueError(f"MLP sizes must be positive, got sizes={sizes}")
        self.sizes = sizes
        self.activation = activation
        self.layers = _ModuleList(
            [
                nnx.Linear(a, b, param_dtype=param_dtype, rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:])
            ]
        )

    def __call__(self, x: Array) -> Array:
        x = _input_as(x, _variable_value(self.layers[0].kernel).dtype)
        x = x.reshape((x.shape[0], -1))
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < n - 1:
                x = self.activation(x)
        return x


class LeNet(nnx.Module):
    """LeNet-5-style convolutional network (LeCun et al., 1998).

    Architecture (for ``image_size = 28``)::

        conv 6@5x5 ('SAME')  -> relu -> avgpool 2x2   28x28x1 -> 28x28x6 -> 14x14x6
        conv 16@5x5 ('VALID') -> relu -> avgpool 2x2  -> 10x10x16 -> 5x5x16
        flatten (400) -> dense 120 -> relu -> dense 84 -> relu -> dense num_classes

    The first convolution uses 'SAME' padding, which on 28x28 MNIST images is the usual
    equivalent of LeCun et al.'s zero-padding of the digits to 32x32. For other image sizes the
    flattened width is ``16 * s * s`` with ``s = (image_size // 2 - 4) // 2``.

    Args:
        num_classes: number of output classes (default 10).
        in_channels: number of input channels ``C`` (default 1).
        image_size: input height = width ``H`` (default 28); must be at least 12.
        param_dtype: dtype of the parameters (default ``float32``).
        rngs: ``nnx.Rngs`` used for initialisation.

    Call:
        ``model(x)`` with ``x`` of shape ``(N, H, W, C)`` or flat ``(N, H*W*C)`` (reshaped, row-major
        ``H, W, C`` order, i.e. the layout of ``x.reshape(N, -1)``); returns ``(N, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        in_channels: int = 1,
        image_size: int = 28,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        image_size = int(image_size)
        if image_size < 12:
            raise ValueError(f"LeNet needs image_size >= 12, got {image_size}")
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.image_size = image_size
        side = (image_size // 2 - 4) // 2
        self.flat_features = 16 * side * side
        self.conv1 = nnx.Conv(
            in_channels, 6, (5, 5), padding="SAME", param_dtype=param_dtype, rngs=rngs
        )
        self.conv2 = nnx.Conv(6, 16, (5, 5), padding="VALID", param_dtype=param_dtype, rngs=rngs)
        self.fc1 = nnx.Linear(self.flat_features, 120, param_dtype=param_dtype, rngs=rngs)
        self.fc2 = nnx.Linear(120, 84, param_dtype=param_dtype, rngs=rngs)
        self.fc3 = nnx.Linear(84, num_classes, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = _input_as(x, _variable_value(self.conv1.kernel).dtype)
        h, c = self.image_size, self.in_channels
        if x.ndim == 2:
            if x.shape[1] != h * h * c:
                raise ValueError(
                    f"flat LeNet input must have {h}*{h}*{c}={h * h * c} features, got {x.shape}"
                )
            x = x.reshape((x.shape[0], h, h, c))
        elif x.ndim != 4:
            raise ValueError(f"LeNet expects input (N, H, W, C) or (N, H*W*C), got shape {x.shape}")
        x = _avg_pool_2x2(jax.nn.relu(self.conv1(x)))
        x = _avg_pool_2x2(jax.nn.relu(self.conv2(x)))
        x = x.reshape((x.shape[0], -1))
        x = jax.nn.relu(self.fc1(x))
        x = jax.nn.relu(self.fc2(x))
        return self.fc3(x)


def functional(model: nnx.Module) -> tuple[Callable[[PyTree, Array], Array], dict]:
    """Split an NNX model into a pure ``apply`` function and a parameter pytree.

    Uses ``nnx.split(model, nnx.Param, ...)``: the static graph definition and any non-parameter
    state (none for the models in this module) are captured by the closure; only the
    ``nnx.Param`` leaves become ``params``.

    Args:
        model: an ``nnx.Module`` whose ``__call__`` maps inputs to logits. The module itself is not
            modified and is not referenced by ``apply`` (later changes to it do not leak in).

    Returns:
        ``(apply, params)`` where

        * ``params`` is a nested ``dict`` of ``jax.Array`` (e.g.
          ``{'linear': {'kernel': (d, K), 'bias': (K,)}}``; list entries such as ``MLP.layers``
          appear under integer keys). It is an ordinary pytree.
        * ``apply(params, x) -> logits`` is pure: it merges the graph definition with ``params`` on
          every call and runs the model. It is ``jax.jit``-able (the graph definition is a
          closure constant, so repeated calls with same-shaped inputs reuse one compilation) and
          differentiable to any order with respect to ``params`` (and ``x``).
    """
    graphdef, param_state, rest = nnx.split(model, nnx.Param, ...)
    params = _to_pure_dict(param_state)

    def apply(params: PyTree, x: Array) -> Array:
        """Run the model with the given parameters: ``apply(params, x) -> logits``."""
        module = nnx.merge(graphdef, params, rest)
        return module(x)

    return apply, params


def cast(params: PyTree, dtype: Any) -> PyTree:
    """Cast every floating-point leaf of a pytree to ``dtype``; other leaves are left unchanged.

    Args:
        params: any pytree of arrays (e.g. the ``params`` of :func:`functional`).
        dtype: target floating dtype, e.g. ``jnp.float64`` (needs ``jax_enable_x64``).

    Returns:
        A pytree with the same structure where each leaf ``a`` with
        ``jnp.issubdtype(a.dtype, jnp.floating)`` became ``a.astype(dtype)``.
    """

    def _cast(leaf):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(dtype)
        return leaf

    return jax.tree_util.tree_map(_cast, params)


def softmax_cross_entropy(
    logits: Array, labels: Array, weights: Array | None = None
) -> Array:
    r"""Mean (optionally per-example weighted) softmax cross-entropy with integer labels.

    For logits :math:`z_i \in \mathbb{R}^K` and label :math:`y_i`,

    .. math::
        \ell_i = \operatorname{logsumexp}(z_i) - z_{i, y_i},

    computed with a max-shifted log-sum-exp, so it is finite for any finite logits. The result is

    .. math::
        L = \frac{1}{n} \sum_{i=1}^n \ell_i
        \quad\text{or, with weights,}\quad
        L_w = \frac{1}{n} \sum_{i=1}^n w_i \ell_i ,

    i.e. the weighted loss is divided by the **number of examples** ``n``, not by
    :math:`\sum_i w_i`. This is the training objective of data hyper-cleaning (Franceschi et al.,
    2017), where :math:`w \in [0, 1]^n` are hyperparameters; it is linear in ``w`` and well
    defined at ``w = 0``.

    Args:
        logits: ``(..., K)`` floating array.
        labels: integer array of shape ``logits.shape[:-1]`` with values in ``[0, K)``.
        weights: optional array of shape ``logits.shape[:-1]``; cast to ``logits.dtype``.

    Returns:
        Scalar of dtype ``logits.dtype``.

    References:
        L. Franceschi, M. Donini, P. Frasconi, M. Pontil. "Forward and Reverse Gradient-Based
        Hyperparameter Optimization". ICML 2017.
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels shape {labels.shape} does not match logits batch shape {logits.shape[:-1]}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    losses = lse - picked
    n = losses.size
    if weights is None:
        return jnp.sum(losses) / n
    weights = jnp.asarray(weights)
    if weights.shape != losses.shape:
        raise ValueError(f"weights shape {weights.shape} does not match labels shape {labels.shape}")
    return jnp.sum(weights.astype(losses.dtype) * losses) / n


def accuracy(logits: Array, labels: Array) -> Array:
    """Fraction of examples whose arg-max logit equals the label.

    Args:
        logits: ``(..., K)`` floating array.
        labels: integer array of shape ``logits.shape[:-1]``.

    Returns:
        Scalar in ``[0, 1]`` of dtype ``logits.dtype`` (ties go to the lowest class index).
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels shape {labels.shape} does not match logits batch shape {logits.shape[:-1]}"
        )
    correct = jnp.argmax(logits, axis=-1) == labels
    return jnp.mean(correct.astype(logits.dtype))
