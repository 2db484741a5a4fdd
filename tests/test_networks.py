"""Tests for initjax.networks (book-notation MLPs) and initjax.gradients (per-layer gradients).

Notation as in the book / slides: f_0 = beta_0 + Omega_0 x, h_k = a[f_{k-1}],
f_k = beta_k + Omega_k h_k, K hidden layers, f_K the output. In `trace_mlp`, trace["f"][k] is f_k
(k = 0..K-1) and trace["h"][k] is h_{k+1} (k = 0..K-1).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax.nn import activations, gradients, networks
from initjax.nn.initializers import get_initializer

ACTS = activations.activation_names()

# Small problem: D_in = 5, D_h = 7, D_out = 3, N = 6 examples.
D_IN, D_H, D_OUT, N = 5, 7, 3, 6

DEPTHS = (1, 4)

NP_ACT = {"relu": lambda f: np.maximum(f, 0.0), "tanh": np.tanh}


def _problem(depth, dtype=np.float32, seed=0):
  """Params (He-scaled weights, nonzero N(0, 0.3^2) biases), an input batch, a nonzero target.

  Drawn with numpy so that no JAX random program has to be compiled for them; the structure is
  the one `init_mlp` returns (checked in test_problem_has_init_mlp_structure).
  """
  rng = np.random.default_rng(seed)
  def w(d_out, d_in, *lead):
    return rng.normal(size=(*lead, d_out, d_in)) * np.sqrt(2.0 / d_in)
  params = {"omega_0": w(D_H, D_IN), "beta_0": 0.3 * rng.normal(size=D_H),
            "omega_hidden": w(D_H, D_H, depth - 1),
            "beta_hidden": 0.3 * rng.normal(size=(depth - 1, D_H)),
            "omega_out": w(D_OUT, D_H), "beta_out": 0.3 * rng.normal(size=D_OUT)}
  params = {k: v.astype(dtype) for k, v in params.items()}
  return params, rng.normal(size=(N, D_IN)).astype(dtype), rng.normal(size=(N, D_OUT)).astype(dtype)


@pytest.fixture(scope="module")
def computed():
  """Every network and gradient function on the test problems, in one jit per dtype.

  (One compiled program per dtype instead of one per test keeps this file fast on 2 cores.)
  Keys are (dtype name, depth, activation); values are numpy arrays.
  """
  def all_results(problems):
    out = {}
    for depth, (p, x, y) in problems.items():
      for a in ACTS:
        trace = networks.trace_mlp(p, x, a)
        out[(depth, a)] = {"apply": networks.apply_mlp(p, x, a),
                           "trace": trace,
                           "a_of_f": activations.get_activation(a)(trace["f"]),
                           "grads": gradients.layer_gradients(p, x, y, a),
                           "ref": gradients.backprop_reference(p, x, y, a)}
    return out

  results = {}
  for dtype, seed in ((np.float32, 10), (np.float64, 20)):
    problems = {depth: _problem(depth, dtype, seed + depth) for depth in DEPTHS}
    with jax.enable_x64(dtype == np.float64):
      res = jax.device_get(jax.jit(all_results)(problems))
    for (depth, a), r in res.items():
      results[(np.dtype(dtype).name, depth, a)] = {**r, "problem": problems[depth]}
  return results


def _np_layers(params):
  """[Omega_0..Omega_K], [beta_0..beta_K] as float64 numpy arrays."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  omegas = [p["omega_0"]] + list(p["omega_hidden"]) + [p["omega_out"]]
  betas = [p["beta_0"]] + list(p["beta_hidden"]) + [p["beta_out"]]
  return omegas, betas


def _assert_tree_close(got, ref, rtol):
  """Leafwise |got - ref| <= rtol * (|ref| + max|ref|): relative to each array's scale."""
  flat_got, tree_got = jax.tree_util.tree_flatten(got)
  flat_ref, tree_ref = jax.tree_util.tree_flatten(ref)
  assert tree_got == tree_ref
  for g, r in zip(flat_got, flat_ref):
    g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
    assert g.shape == r.shape
    if r.size == 0:
      continue
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * np.max(np.abs(r)))


# ------------------------------------------------------------------------------------------------
# init_mlp


# Every test uses these dimensions, so JAX compiles the random draws for few shapes only.
KW = {"input_dim": D_IN, "width": D_H, "output_dim": D_OUT}


def test_init_mlp_shapes():
  params = networks.init_mlp(jax.random.key(0), depth=4, **KW)
  shapes = {k: v.shape for k, v in params.items()}
  assert shapes == {"omega_0": (7, 5), "beta_0": (7,), "omega_hidden": (3, 7, 7),
                    "beta_hidden": (3, 7), "omega_out": (3, 7), "beta_out": (3,)}
  assert networks.mlp_shape(params) == {"input_dim": 5, "width": 7, "depth": 4, "output_dim": 3}
  assert all(v.dtype == jnp.float32 for v in params.values())  # the default dtype
  # Every stacked layer gets its own key.
  oh = np.asarray(params["omega_hidden"])
  assert not np.allclose(oh[0], oh[1]) and not np.allclose(oh[1], oh[2])


def test_init_mlp_depth_one_has_no_stacked_layers():
  params = networks.init_mlp(jax.random.key(1), depth=1,
                             bias_init=get_initializer("constant", value=0.25), **KW)
  assert params["omega_hidden"].shape == (0, D_H, D_H)
  assert params["beta_hidden"].shape == (0, D_H)
  assert networks.mlp_shape(params)["depth"] == 1
  x = jax.random.normal(jax.random.key(2), (N, D_IN))
  omegas, betas = _np_layers(params)
  xn = np.asarray(x, np.float64)
  expected = np.maximum(xn @ omegas[0].T + betas[0], 0.0) @ omegas[1].T + betas[1]
  np.testing.assert_allclose(np.asarray(networks.apply_mlp(params, x)), expected,
                             rtol=1e-5, atol=1e-6)
  tr = networks.trace_mlp(params, x)
  assert tr["f"].shape == (1, N, D_H) and tr["h"].shape == (1, N, D_H)
  np.testing.assert_allclose(np.asarray(tr["f_out"]), expected, rtol=1e-5, atol=1e-6)


def test_init_mlp_dtype_respected(x64):
  # eval_shape runs init_mlp abstractly: the dtypes it produces, without compiling the draws.
  for dtype in (jnp.float64, jnp.float32, jnp.bfloat16):
    for bias_init in (None, "normal"):
      out = jax.eval_shape(
          lambda k: networks.init_mlp(k, depth=4, bias_init=bias_init, dtype=dtype, **KW),
          jax.random.key(0))
      assert {v.dtype for v in out.values()} == {jnp.dtype(dtype)}


@pytest.mark.parametrize("bad", [
    {"input_dim": 0}, {"width": -1}, {"depth": 0}, {"output_dim": 0}, {"width": 2.5},
    {"depth": True}, {"input_dim": "3"}, {"depth": None},
])
def test_init_mlp_bad_dims_raise(bad):
  kwargs = {"input_dim": 3, "width": 4, "depth": 2, "output_dim": 1, **bad}
  with pytest.raises(ValueError):
    networks.init_mlp(jax.random.key(0), **kwargs)


def test_string_and_callable_initializers_agree():
  key = jax.random.key(3)
  kw = {"depth": 4, **KW}
  by_name = networks.init_mlp(key, weight_init="lecun_normal", **kw)
  by_callable = networks.init_mlp(key, weight_init=get_initializer("lecun_normal"), **kw)
  for name in by_name:
    np.testing.assert_array_equal(np.asarray(by_name[name]), np.asarray(by_callable[name]))
  # The default is He normal: variance 2 / fan_in, so sqrt(2) x LeCun for the same key.
  by_default = networks.init_mlp(key, **kw)
  np.testing.assert_allclose(np.asarray(by_default["omega_hidden"]),
                             np.sqrt(2.0) * np.asarray(by_name["omega_hidden"]), rtol=1e-5)


def test_callable_initializer_called_on_kernel_shape_and_transposed():
  calls = []

  def arange_init(key, shape, dtype=jnp.float32):
    del key
    calls.append(tuple(shape))
    return jnp.arange(np.prod(shape), dtype=dtype).reshape(shape)

  params = networks.init_mlp(jax.random.key(0), input_dim=5, width=7, depth=3, output_dim=2,
                             weight_init=arange_init)
  # The (fan_in, fan_out) kernel layout of jax.nn.initializers / Flax.
  assert (5, 7) in calls and (7, 7) in calls and (7, 2) in calls
  np.testing.assert_array_equal(np.asarray(params["omega_0"]), np.arange(35.0).reshape(5, 7).T)
  np.testing.assert_array_equal(np.asarray(params["omega_out"]),
                                np.arange(14.0).reshape(7, 2).T)
  np.testing.assert_array_equal(np.asarray(params["omega_hidden"][1]),
                                np.arange(49.0).reshape(7, 7).T)


@pytest.mark.parametrize("bad_init", [3, "no_such_initializer"])
def test_bad_initializer_raises(bad_init):
  with pytest.raises(ValueError):
    networks.init_mlp(jax.random.key(0), depth=2, weight_init=bad_init, **KW)
  with pytest.raises(ValueError):
    networks.init_mlp(jax.random.key(0), depth=2, bias_init=bad_init, **KW)


def test_bias_init_used():
  kw = {"depth": 4, **KW}
  default = networks.init_mlp(jax.random.key(0), **kw)
  for name in ("beta_0", "beta_hidden", "beta_out"):
    np.testing.assert_array_equal(np.asarray(default[name]), 0.0)
  const = networks.init_mlp(jax.random.key(0), bias_init=get_initializer("constant", value=0.3),
                            **kw)
  for name in ("beta_0", "beta_hidden", "beta_out"):
    np.testing.assert_allclose(np.asarray(const[name]), 0.3, rtol=1e-7)
  # Weights do not depend on the bias initializer.
  np.testing.assert_array_equal(np.asarray(const["omega_hidden"]),
                                np.asarray(default["omega_hidden"]))
  rand = networks.init_mlp(jax.random.key(0), bias_init="normal", **kw)
  bh = np.asarray(rand["beta_hidden"])
  assert np.all(bh != 0.0) and not np.allclose(bh[0], bh[1])
  assert np.all(np.asarray(rand["beta_0"]) != 0.0) and np.all(np.asarray(rand["beta_out"]) != 0.0)


# ------------------------------------------------------------------------------------------------
# Forward pass


def test_problem_has_init_mlp_structure():
  for depth in DEPTHS:
    params, _, _ = _problem(depth)
    ref = jax.eval_shape(lambda k: networks.init_mlp(k, depth=depth, **KW), jax.random.key(0))
    assert {k: v.shape for k, v in params.items()} == {k: v.shape for k, v in ref.items()}
    assert networks.mlp_shape(params) == {"depth": depth, **KW}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("activation", ACTS)
def test_apply_equals_trace_output(computed, activation, depth, dtype):
  r = computed[(dtype, depth, activation)]
  assert r["apply"].shape == (N, D_OUT) and r["apply"].dtype == np.dtype(dtype)
  np.testing.assert_allclose(r["apply"], r["trace"]["f_out"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("activation", ACTS)
def test_trace_shapes_and_h_is_activation_of_f(computed, activation, depth):
  r = computed[("float32", depth, activation)]
  tr = r["trace"]
  assert tr["f"].shape == (depth, N, D_H)
  assert tr["h"].shape == (depth, N, D_H)
  assert tr["f_out"].shape == (N, D_OUT)
  np.testing.assert_allclose(tr["h"], r["a_of_f"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_trace_preactivations_follow_the_book(computed, activation, depth):
  """f_0 = beta_0 + Omega_0 x and f_k = beta_k + Omega_k h_k, per example, recomputed in numpy."""
  r = computed[("float64", depth, activation)]
  tr, (params, x, _) = r["trace"], r["problem"]
  f, h = tr["f"], tr["h"]  # h[k - 1] is h_k
  omegas, betas = _np_layers(params)
  tol = {"rtol": 1e-12, "atol": 1e-12}
  for i in range(N):
    np.testing.assert_allclose(f[0, i], betas[0] + omegas[0] @ x[i], **tol)
    for k in range(1, depth):
      np.testing.assert_allclose(f[k, i], betas[k] + omegas[k] @ h[k - 1, i], **tol)
    np.testing.assert_allclose(tr["f_out"][i], betas[depth] + omegas[depth] @ h[-1, i], **tol)
  # And h_k = a[f_{k-1}] in numpy.
  np.testing.assert_allclose(h, NP_ACT[activation](f), **tol)


def test_unknown_activation_raises():
  params, x, _ = _problem(2)
  with pytest.raises(ValueError):
    networks.apply_mlp(params, x, "swish_typo")
  with pytest.raises(ValueError):
    networks.trace_mlp(params, x, "swish_typo")


def _n_eqns(fn, depth, *extra):
  shapes = jax.eval_shape(lambda k: networks.init_mlp(k, depth=depth, **KW), jax.random.key(0))
  x = jax.ShapeDtypeStruct((N, D_IN), jnp.float32)
  jaxpr = jax.make_jaxpr(fn)(shapes, x, *extra).jaxpr
  return len(jaxpr.eqns), [e.primitive.name for e in jaxpr.eqns]


def test_compiled_program_does_not_grow_with_depth():
  """Hidden layers run in a lax.scan: the same jaxpr for 5 and 50 layers."""
  for fn in (networks.apply_mlp, lambda p, x: networks.trace_mlp(p, x)["f"]):
    n5, prims5 = _n_eqns(fn, 5)
    n50, prims50 = _n_eqns(fn, 50)
    assert n5 == n50
    assert prims5 == prims50
    assert "scan" in prims5
  y = jax.ShapeDtypeStruct((N, D_OUT), jnp.float32)
  grads = lambda p, x, y: gradients.layer_gradients(p, x, y)["dl_dh"]
  assert _n_eqns(grads, 5, y)[0] == _n_eqns(grads, 50, y)[0]
  # Sanity check of the measure itself: a Python loop over the layers does grow with depth.
  def unrolled(p, x):
    h = jnp.tanh(x @ p["omega_0"].T)
    for omega in p["omega_hidden"]:
      h = jnp.tanh(h @ omega.T)
    return h
  assert _n_eqns(unrolled, 50)[0] > _n_eqns(unrolled, 5)[0]


# ------------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("activation", ACTS)
def test_jax_grad_equals_book_backprop_float64(computed, activation, depth):
  r = computed[("float64", depth, activation)]
  assert r["grads"]["dl_df"].dtype == np.float64
  assert float(r["grads"]["loss"]) > 0.0
  # Double precision: the two computations differ only in rounding, ~1e-15 relative.
  _assert_tree_close(r["grads"], r["ref"], rtol=1e-10)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("activation", ACTS)
def test_jax_grad_equals_book_backprop_float32(computed, activation, depth):
  r = computed[("float32", depth, activation)]
  assert r["grads"]["dl_df"].dtype == np.float32
  # Single precision: rounding ~6e-8 per operation over a few dozen operations.
  _assert_tree_close(r["grads"], r["ref"], rtol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_gradients_follow_the_backprop_summary(computed, activation):
  """The book's backward pass, checked on the gradients `layer_gradients` returns (float64)."""
  depth = 4
  r = computed[("float64", depth, activation)]
  g, tr, (params, x, y) = r["grads"], r["trace"], r["problem"]
  f, h, f_out = tr["f"], tr["h"], tr["f_out"]  # h[k - 1] is h_k
  omegas, _ = _np_layers(params)
  dl_df = [g["dl_df"][k] for k in range(depth)] + [g["dl_df_out"]]
  dl_dh, dp = g["dl_dh"], g["dl_dparams"]
  tol = {"rtol": 1e-10, "atol": 1e-12}

  # Least squares l = sum_i (f_K,i - y_i)^2: dl/df_K = 2 (f_K - y).
  np.testing.assert_allclose(dl_df[depth], 2.0 * (f_out - y), **tol)
  np.testing.assert_allclose(float(g["loss"]), np.sum((f_out - y) ** 2), rtol=1e-12)

  # dl/dOmega_k = sum_i dl/df_k,i h_k,i^T (h_0 = x), dl/dbeta_k = sum_i dl/df_k,i.
  inputs = [x] + [h[k] for k in range(depth)]
  def outer_sum(k):
    return sum(np.outer(dl_df[k][i], inputs[k][i]) for i in range(N))
  np.testing.assert_allclose(dp["omega_0"], outer_sum(0), **tol)
  np.testing.assert_allclose(dp["beta_0"], dl_df[0].sum(axis=0), **tol)
  for k in range(1, depth):
    np.testing.assert_allclose(dp["omega_hidden"][k - 1], outer_sum(k), **tol)
    np.testing.assert_allclose(dp["beta_hidden"][k - 1], dl_df[k].sum(axis=0), **tol)
  np.testing.assert_allclose(dp["omega_out"], outer_sum(depth), **tol)
  np.testing.assert_allclose(dp["beta_out"], dl_df[depth].sum(axis=0), **tol)

  # dl/dh_k = Omega_k^T dl/df_k and dl/df_{k-1} = a'[f_{k-1}] * dl/dh_k, per example.
  a_prime = {"relu": lambda v: (v > 0).astype(float), "tanh": lambda v: 1.0 - np.tanh(v) ** 2}
  for k in range(depth, 0, -1):
    for i in range(N):
      np.testing.assert_allclose(dl_dh[k - 1, i], omegas[k].T @ dl_df[k][i], **tol)
    np.testing.assert_allclose(dl_df[k - 1], a_prime[activation](f[k - 1]) * dl_dh[k - 1], **tol)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_dl_dh_matches_finite_difference(computed, activation):
  """Central difference of the loss in one entry of h_k, with a hand-written numpy forward pass."""
  depth = 4
  r = computed[("float64", depth, activation)]
  g, tr, (params, _, y) = r["grads"], r["trace"], r["problem"]
  omegas, betas = _np_layers(params)
  act = NP_ACT[activation]

  def loss_from(h_k, k):
    h = h_k
    for m in range(k, depth):
      h = act(h @ omegas[m].T + betas[m])
    return np.sum((h @ omegas[depth].T + betas[depth] - y) ** 2)

  for k in (1, 2, 4):
    # The entry with the largest gradient (a ReLU network has exact zeros behind dead units).
    i, j = np.unravel_index(np.argmax(np.abs(g["dl_dh"][k - 1])), (N, D_H))
    h_k = np.array(tr["h"][k - 1])
    np.testing.assert_allclose(loss_from(h_k, k), float(g["loss"]), rtol=1e-12)
    eps = 1e-6
    hp, hm = h_k.copy(), h_k.copy()
    hp[i, j] += eps
    hm[i, j] -= eps
    fd = (loss_from(hp, k) - loss_from(hm, k)) / (2 * eps)
    # Central difference: truncation ~ eps^2 |l'''| ~ 1e-12; rounding ~ 1e-16 |l| / eps ~ 1e-10.
    np.testing.assert_allclose(g["dl_dh"][k - 1, i, j], fd, rtol=1e-6, atol=1e-8)
    assert abs(fd) > 1e-3  # a nontrivial entry, so the check means something
