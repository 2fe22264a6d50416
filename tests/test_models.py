"""Tests for hgrad.models: shapes, the functional (pure) interface, derivatives, dtypes, losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hgrad import models as M

N = 4


def _make(name, dtype=jnp.float32):
    rngs = nnx.Rngs(0)
    if name == "softmax":
        return M.SoftmaxRegression(20, 5, param_dtype=dtype, rngs=rngs), (N, 20), 5
    if name == "softmax_zero":
        return M.SoftmaxRegression(20, 5, zero_init=True, param_dtype=dtype, rngs=rngs), (N, 20), 5
    if name == "mlp":
        return M.MLP((20, 16, 8, 5), param_dtype=dtype, rngs=rngs), (N, 20), 5
    if name == "lenet":
        return M.LeNet(10, param_dtype=dtype, rngs=rngs), (N, 28, 28, 1), 10
    if name == "lenet_small":  # cheaper to compile for second-order tests
        return M.LeNet(3, image_size=12, param_dtype=dtype, rngs=rngs), (2, 12, 12, 1), 3
    if name == "lenet_flat":
        return M.LeNet(10, param_dtype=dtype, rngs=rngs), (N, 784), 10
    if name == "lenet_rgb32":
        return M.LeNet(7, in_channels=3, image_size=32, param_dtype=dtype, rngs=rngs), (N, 32, 32, 3), 7
    raise KeyError(name)


ALL = ["softmax", "softmax_zero", "mlp", "lenet", "lenet_flat", "lenet_rgb32"]
# Models used for (more expensive) second-order checks.
SMALL = ["softmax", "mlp", "lenet_small"]


def _data(shape, num_classes, dtype=jnp.float64, seed=0):
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(kx, shape, dtype)
    y = jax.random.randint(ky, (shape[0],), 0, num_classes)
    return x, y


@pytest.mark.parametrize("name", ALL)
def test_output_shapes(name):
    model, shape, k = _make(name)
    x, _ = _data(shape, k, jnp.float32)
    assert model(x).shape == (N, k)
    assert model(x).dtype == jnp.float32


def test_mlp_structure():
    model = M.MLP((784, 100, 10), rngs=nnx.Rngs(0))
    _, params = M.functional(model)
    assert set(params["layers"].keys()) == {0, 1}
    assert params["layers"][0]["kernel"].shape == (784, 100)
    assert params["layers"][1]["kernel"].shape == (100, 10)
    # no activation after the last layer: output is affine in the last hidden layer => can be > 1
    x = jnp.ones((2, 784), jnp.float32)
    apply, params = M.functional(model)
    big = jax.tree_util.tree_map(lambda a: a, params)
    big["layers"][1]["bias"] = jnp.full((10,), 5.0, jnp.float32)
    assert jnp.all(apply(big, x) > 3.0)
    with pytest.raises(ValueError):
        M.MLP((10,), rngs=nnx.Rngs(0))


def test_lenet_param_shapes_and_bad_input():
    model = M.LeNet(rngs=nnx.Rngs(0))
    _, params = M.functional(model)
    assert params["conv1"]["kernel"].shape == (5, 5, 1, 6)
    assert params["conv2"]["kernel"].shape == (5, 5, 6, 16)
    assert params["fc1"]["kernel"].shape == (400, 120)
    assert params["fc2"]["kernel"].shape == (120, 84)
    assert params["fc3"]["kernel"].shape == (84, 10)
    with pytest.raises(ValueError):
        model(jnp.ones((2, 100), jnp.float32))
    with pytest.raises(ValueError):
        M.LeNet(rngs=nnx.Rngs(0), image_size=8)


def test_lenet_flat_equals_image_input():
    model, _, k = _make("lenet")
    x, _ = _data((N, 28, 28, 1), k, jnp.float32)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(model(x.reshape(N, -1))))


def test_softmax_zero_init():
    model, shape, k = _make("softmax_zero")
    _, params = M.functional(model)
    for leaf in jax.tree_util.tree_leaves(params):
        assert not np.any(np.asarray(leaf))
    x, _ = _data(shape, k, jnp.float32)
    np.testing.assert_array_equal(np.asarray(model(x)), np.zeros((N, k)))


@pytest.mark.parametrize("name", ALL)
def test_functional_matches_module(name):
    model, shape, k = _make(name)
    apply, params = M.functional(model)
    x, _ = _data(shape, k, jnp.float32)
    np.testing.assert_allclose(np.asarray(apply(params, x)), np.asarray(model(x)), rtol=0, atol=0)
    np.testing.assert_allclose(
        np.asarray(jax.jit(apply)(params, x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6
    )


def test_params_are_plain_pytree_and_apply_is_pure():
    model, shape, k = _make("mlp")
    apply, params = M.functional(model)
    assert isinstance(params, dict)
    leaves = jax.tree_util.tree_leaves(params)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    doubled = jax.tree_util.tree_map(lambda a: 2.0 * a, params)
    summed = jax.tree_util.tree_map(lambda a, b: a + b, params, doubled)
    assert jax.tree_util.tree_structure(summed) == jax.tree_util.tree_structure(params)
    x, _ = _data(shape, k, jnp.float32)
    before = np.asarray(model(x))
    out_doubled = apply(doubled, x)
    # apply neither reads nor mutates the original module
    np.testing.assert_array_equal(np.asarray(model(x)), before)
    assert not np.allclose(np.asarray(out_doubled), before)
    np.testing.assert_array_equal(np.asarray(apply(params, x)), before)


@pytest.mark.parametrize("name", ALL)
def test_cast_float64(name):
    model, shape, k = _make(name)
    apply, params = M.functional(model)
    p64 = M.cast(params, jnp.float64)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree_util.tree_leaves(p64))
    x32, _ = _data(shape, k, jnp.float32)
    out64 = apply(p64, x32)  # float32 input is cast explicitly to the parameter dtype
    assert out64.dtype == jnp.float64
    with jax.default_matmul_precision("float32"):  # a GPU's default for float32 products is TF32
        out32 = apply(params, x32)
    np.testing.assert_allclose(np.asarray(out64), np.asarray(out32), rtol=1e-4, atol=1e-4)
    back = M.cast(p64, jnp.float32)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(back))


def test_cast_leaves_non_float_alone():
    tree = {"a": jnp.ones(3, jnp.float32), "b": jnp.arange(3), "c": (jnp.zeros(2, jnp.float64),)}
    out = M.cast(tree, jnp.float64)
    assert out["a"].dtype == jnp.float64
    assert out["b"].dtype == jnp.arange(3).dtype
    assert out["c"][0].dtype == jnp.float64
    out32 = M.cast(tree, jnp.float32)
    assert out32["c"][0].dtype == jnp.float32


def test_param_dtype_float64_model():
    model, shape, k = _make("mlp", jnp.float64)
    apply, params = M.functional(model)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree_util.tree_leaves(params))
    x, _ = _data(shape, k)
    assert apply(params, x).dtype == jnp.float64


@pytest.mark.parametrize("name", ALL)
def test_grads_finite(name):
    model, shape, k = _make(name)
    apply, params = M.functional(model)
    params = M.cast(params, jnp.float64)
    x, y = _data(shape, k)
    loss = lambda p: M.softmax_cross_entropy(apply(p, x), y)
    grads = jax.jit(jax.grad(loss))(params)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    for g in jax.tree_util.tree_leaves(grads):
        assert g.dtype == jnp.float64
        assert np.all(np.isfinite(np.asarray(g)))
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(grads))


def _tree_vdot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("name", SMALL)
def test_hessian_vector_product(name):
    """jvp-of-grad HVP through apply equals a central finite difference of the gradient.

    For the ReLU network (LeNet) the finite difference is only valid where no ReLU switches, so
    the direction is restricted to the last layer (the pre-activations do not move); its
    full-direction HVP is checked against reverse-over-reverse instead.
    """
    model, shape, k = _make(name)
    apply, params = M.functional(model)
    params = M.cast(params, jnp.float64)
    x, y = _data(shape, k)
    loss = lambda p: M.softmax_cross_entropy(apply(p, x), y)
    grad = jax.jit(jax.grad(loss))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    v = jax.tree_util.tree_unflatten(
        treedef, [jax.random.normal(kk, leaf.shape, leaf.dtype) for kk, leaf in zip(keys, leaves)]
    )
    hvp_fn = jax.jit(lambda p, v: jax.jvp(jax.grad(loss), (p,), (v,))[1])
    hvp = hvp_fn(params, v)
    for h in jax.tree_util.tree_leaves(hvp):
        assert np.all(np.isfinite(np.asarray(h)))
    # reverse-over-reverse agrees with forward-over-reverse
    hvp_rr = jax.jit(jax.grad(lambda p, v: _tree_vdot(jax.grad(loss)(p), v)))(params, v)
    for a, b in zip(jax.tree_util.tree_leaves(hvp), jax.tree_util.tree_leaves(hvp_rr)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-10)

    if name.startswith("lenet"):
        v = {key: (val if key == "fc3" else jax.tree_util.tree_map(jnp.zeros_like, val)) for key, val in v.items()}
        hvp = hvp_fn(params, v)
    eps = 1e-5
    gp = grad(jax.tree_util.tree_map(lambda p, d: p + eps * d, params, v))
    gm = grad(jax.tree_util.tree_map(lambda p, d: p - eps * d, params, v))
    fd = jax.tree_util.tree_map(lambda a, b: (a - b) / (2 * eps), gp, gm)
    for h, f in zip(jax.tree_util.tree_leaves(hvp), jax.tree_util.tree_leaves(fd)):
        np.testing.assert_allclose(np.asarray(h), np.asarray(f), rtol=1e-5, atol=1e-7)


def test_full_hessian_softmax_regression():
    """jax.hessian through apply matches the closed form (1/n) sum_i kron(x_i x_i^T, diag(s)-s s^T)."""
    d, k = 3, 4
    model = M.SoftmaxRegression(d, k, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    apply, params = M.functional(model)
    x, y = _data((5, d), k)
    kernel_loss = lambda w: M.softmax_cross_entropy(
        apply({"linear": {"kernel": w, "bias": params["linear"]["bias"]}}, x), y
    )
    hess = jax.hessian(kernel_loss)(params["linear"]["kernel"])  # (d, k, d, k)
    assert hess.shape == (d, k, d, k)
    s = np.asarray(jax.nn.softmax(apply(params, x)))
    xn = np.asarray(x)
    ref = np.zeros((d, k, d, k))
    for i in range(xn.shape[0]):
        ref += np.einsum("a,b,jl->ajbl", xn[i], xn[i], np.diag(s[i]) - np.outer(s[i], s[i]))
    ref /= xn.shape[0]
    np.testing.assert_allclose(np.asarray(hess), ref, rtol=1e-10, atol=1e-12)
    # jax.hessian over the whole params dict also works
    full = jax.hessian(lambda p: M.softmax_cross_entropy(apply(p, x), y))(params)
    np.testing.assert_allclose(np.asarray(full["linear"]["kernel"]["linear"]["kernel"]), ref, rtol=1e-10, atol=1e-12)


def test_jit_apply_does_not_retrace():
    model, shape, k = _make("mlp")
    apply, params = M.functional(model)
    traces = []

    def counted(p, x):
        traces.append(1)  # Python side effect: runs only while tracing
        return apply(p, x)

    jitted = jax.jit(counted)
    x, _ = _data(shape, k, jnp.float32)
    jitted(params, x).block_until_ready()
    params2 = jax.tree_util.tree_map(lambda a: a + 1.0, params)
    x2 = x + 1.0
    jitted(params2, x2).block_until_ready()
    jitted(params, x2).block_until_ready()
    assert len(traces) == 1
    if hasattr(jitted, "_cache_size"):
        assert jitted._cache_size() == 1
    # a jitted apply used directly also compiles once
    japply = jax.jit(apply)
    japply(params, x)
    japply(params2, x2)
    if hasattr(japply, "_cache_size"):
        assert japply._cache_size() == 1


def test_apply_vmap_and_scan():
    # float64: in float32 a batched matmul may sum in another order than the plain one, and
    # logits near zero (cancellation) then differ by more than any relative tolerance can say.
    model, shape, k = _make("softmax", jnp.float64)
    apply, params = M.functional(model)
    x, _ = _data(shape, k, jnp.float64)
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2.0 * a]), params)
    out = jax.vmap(apply, in_axes=(0, None))(stacked, x)
    assert out.shape == (2, N, k)
    np.testing.assert_allclose(np.asarray(out[0]), np.asarray(apply(params, x)), rtol=1e-12, atol=1e-14)
    second = jax.tree_util.tree_map(lambda a: a[1], stacked)
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(apply(second, x)), rtol=1e-12, atol=1e-14)

    def body(p, _):
        return jax.tree_util.tree_map(lambda a: 0.5 * a, p), apply(p, x)

    _, outs = jax.lax.scan(body, params, None, length=3)
    assert outs.shape == (3, N, k)


# ----------------------------------------------------------------------------- losses


def _np_cross_entropy(logits, labels, weights=None):
    logits = np.asarray(logits, np.float64)
    m = logits.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))[..., 0]
    ce = lse - logits[np.arange(logits.shape[0]), labels]
    if weights is None:
        return ce.mean()
    return (np.asarray(weights) * ce).sum() / ce.shape[0]


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 5)) * 3
    labels = rng.integers(0, 5, size=7)
    weights = rng.uniform(size=7)
    out = M.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(float(out), _np_cross_entropy(logits, labels), rtol=1e-12)
    outw = M.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
    np.testing.assert_allclose(float(outw), _np_cross_entropy(logits, labels, weights), rtol=1e-12)
    # weighted mean divides by n, not by sum(w)
    half = M.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.full(7, 0.5))
    np.testing.assert_allclose(float(half), 0.5 * float(out), rtol=1e-12)
    zero = M.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.zeros(7))
    assert float(zero) == 0.0


def test_cross_entropy_stable_and_dtypes():
    logits = jnp.array([[1000.0, 0.0, -1000.0], [-1000.0, 1000.0, 0.0]], jnp.float32)
    labels = jnp.array([0, 2])
    out = M.softmax_cross_entropy(logits, labels)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(float(out), 500.0, rtol=1e-6)
    # float64 weights with float32 logits: weights are cast explicitly (strict promotion)
    outw = M.softmax_cross_entropy(logits, labels, jnp.array([1.0, 0.0], jnp.float64))
    assert outw.dtype == jnp.float32
    np.testing.assert_allclose(float(outw), 0.0, atol=1e-6)
    # gradient w.r.t. the weights is linear: d/dw_i = ce_i / n
    g = jax.grad(lambda w: M.softmax_cross_entropy(logits.astype(jnp.float64), labels, w))(jnp.ones(2))
    np.testing.assert_allclose(np.asarray(g), [0.0, 500.0], atol=1e-9)
    with pytest.raises(ValueError):
        M.softmax_cross_entropy(logits, jnp.array([0, 1, 2]))
    with pytest.raises(TypeError):
        M.softmax_cross_entropy(logits, jnp.array([0.0, 1.0]))


def test_accuracy():
    logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    labels = jnp.array([0, 1, 1, 0])
    acc = M.accuracy(logits, labels)
    assert acc.dtype == jnp.float64
    assert float(acc) == 0.5
    assert float(jax.jit(M.accuracy)(logits, jnp.array([0, 1, 0, 1]))) == 1.0
