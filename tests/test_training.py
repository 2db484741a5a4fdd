"""The training loop: vmapped == per-network, divergence isolation, one compile, optimizers."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from initjax import training
from initjax.core import parallel
from initjax.nn import models
from initjax.training import batch_training
from initjax.training.optimizers import get_optimizer, optimizer_names

INPUT_DIM, WIDTH, DEPTH, CLASSES = 6, 8, 3, 4


def _data(key, n_train=64, n_test=32):
  k1, k2, k3, k4 = jax.random.split(key, 4)
  return {"x_train": jax.random.normal(k1, (n_train, INPUT_DIM)),
          "y_train": jax.random.randint(k2, (n_train,), 0, CLASSES),
          "x_test": jax.random.normal(k3, (n_test, INPUT_DIM)),
          "y_test": jax.random.randint(k4, (n_test,), 0, CLASSES)}


DATA = _data(jax.random.PRNGKey(0))
MODEL = models.mlp("relu")
SPEC = training.TrainSpec(optimizer="momentum", steps=12, batch_size=16,
                          eval_every=5, stats_every=6, stats_batch_size=32)


def _networks(inits, seed=1):
  keys = jax.random.split(jax.random.PRNGKey(seed), len(inits))
  return [training.init_networks(k[None], init, input_dim=INPUT_DIM, width=WIDTH, depth=DEPTH,
                                 output_dim=CLASSES) for k, init in zip(keys, inits)]


def _stack(nets):
  return jax.tree.map(lambda *a: jnp.concatenate(a), *nets)


def _one(tree, i=0):
  return jax.tree.map(lambda a: a[i], tree)


def _assert_records_close(a, b, **tol):
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_allclose(np.asarray(a[k], np.float64), np.asarray(b[k], np.float64),
                               err_msg=k, **tol)


INITS = ["he_normal", "xavier_normal", "he_normal", "lecun_normal"]
LRS = jnp.array([0.01, 0.05, 1e6, 0.03])  # network 2 diverges
DIVERGING = 2


@pytest.fixture(scope="module")
def batched():
  """Four networks (different inits and learning rates, one diverging) trained in one vmap.

  Every test here reuses SPEC and B = 4, so the module compiles the vmapped and the
  single-network program once each.
  """
  nets = _networks(INITS)
  keys = jax.random.split(jax.random.PRNGKey(5), len(INITS))
  out = training.train_networks(MODEL, _stack(nets), keys, LRS, DATA, SPEC)
  return nets, keys, jax.tree.map(np.asarray, out)


def test_record_shapes_and_schedules(batched):
  _, _, out = batched
  np.testing.assert_array_equal(training.eval_steps(SPEC), [0, 5, 10, 12])
  np.testing.assert_array_equal(training.stats_steps(SPEC), [0, 6, 12])
  assert out["train_loss"].shape == (4, SPEC.steps + 1)
  assert out["test_loss"].shape == (4, 4) and out["test_accuracy"].shape == (4, 4)
  for name in ("var_h", "var_dl_dh", "var_dl_df"):
    assert out[name].shape == (4, 3, DEPTH)
  assert np.all(np.isfinite(out["var_dl_dh"][:2]))


def test_vmapped_training_equals_per_network_loop(batched):
  nets, keys, out = batched
  for i in range(len(INITS)):
    alone = training.train_network_jit(MODEL, _one(nets[i]), keys[i], LRS[i], DATA, SPEC)
    _assert_records_close({k: v[i] for k, v in out.items()}, alone, rtol=2e-4, atol=1e-6)


def test_diverging_network_is_marked_and_isolated(batched):
  _, _, out = batched
  step = int(out["diverged_step"][DIVERGING])
  assert 0 < step <= SPEC.steps
  loss = out["train_loss"][DIVERGING]
  assert np.all(np.isfinite(loss[:step])) and np.all(np.isnan(loss[step:]))
  eval_at, stats_at = training.eval_steps(SPEC), training.stats_steps(SPEC)
  assert np.all(np.isnan(out["test_loss"][DIVERGING][eval_at >= step]))
  assert np.all(np.isfinite(out["test_loss"][DIVERGING][eval_at < step]))
  assert np.all(np.isnan(out["var_dl_dh"][DIVERGING][stats_at >= step]))
  # The others are unaffected: test_vmapped_training_equals_per_network_loop compares each of
  # them with training it alone.
  others = [i for i in range(len(INITS)) if i != DIVERGING]
  np.testing.assert_array_equal(out["diverged_step"][others], -1)
  assert np.all(np.isfinite(out["train_loss"][others]))


def test_layer_statistics_at_step_zero_match_direct_computation(batched):
  nets, _, out = batched
  net = _one(nets[0])
  x, y = DATA["x_train"][:32], DATA["y_train"][:32]
  loss_fn = lambda f, y: training.batch_loss(f, y, "classification")
  stats = jax.jit(models.mlp_layer_statistics, static_argnums=(3, 4))(net, x, y, loss_fn, "relu")
  for name in ("var_h", "var_dl_dh", "var_dl_df"):
    np.testing.assert_allclose(out[name][0, 0], stats[name], rtol=1e-5)
  # dl/dh_K of the mean cross-entropy, by hand: Omega_K^T (softmax - onehot) / N.
  from initjax.nn.networks import trace_mlp  # pylint: disable=import-outside-toplevel
  tr = jax.jit(trace_mlp)(net, x)
  g_NxO = (jax.nn.softmax(tr["f_out"]) - jax.nn.one_hot(y, CLASSES)) / x.shape[0]
  np.testing.assert_allclose(stats["var_dl_dh"][-1], jnp.var(g_NxO @ net["omega_out"]),
                             rtol=1e-4)
  np.testing.assert_allclose(stats["var_h"], jnp.var(tr["h"], axis=(1, 2)), rtol=1e-5)


def test_minibatches_are_epochs_without_replacement():
  key = jax.random.PRNGKey(7)
  idx = np.concatenate([np.asarray(training.minibatch_indices(key, s, 64, 16)) for s in range(4)])
  np.testing.assert_array_equal(np.sort(idx), np.arange(64))
  nxt = np.concatenate([np.asarray(training.minibatch_indices(key, s, 64, 16))
                        for s in range(4, 8)])
  assert not np.array_equal(idx, nxt)


def test_one_compiled_program_for_inits_learning_rates_and_seeds(batched):
  size = training.train_networks._cache_size()  # pylint: disable=protected-access
  for inits, lrs, seed in ((["he_uniform", "xavier_uniform", "he_uniform", "xavier_uniform"],
                            [0.3, 1e-4, 0.02, 0.01], 1),
                           (["xavier_normal"] * 4, [5e-3] * 4, 2)):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    out = training.train_networks(MODEL, _stack(_networks(inits, seed)), keys, jnp.array(lrs),
                                  DATA, SPEC)
    jax.block_until_ready(out)
  assert training.train_networks._cache_size() == size  # pylint: disable=protected-access


def test_pad_leading():
  nets = _stack(_networks(["he_normal", "xavier_normal", "he_normal"]))
  lrs = jnp.array([0.01, 0.02, 0.03])
  (padded, padded_lrs), b = parallel.pad_leading((nets, lrs), 2)
  assert b == 3 and padded_lrs.shape == (4,) and float(padded_lrs[3]) == pytest.approx(0.03)
  np.testing.assert_array_equal(padded["omega_0"][3], nets["omega_0"][2])
  same, b = parallel.pad_leading((nets, lrs), 3)
  assert b == 3 and same[1].shape == (3,)


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_run_networks_matches_train_networks(batched):
  nets, keys, out = batched
  ran = batch_training.run_networks(MODEL, _stack(nets), keys, LRS, DATA, SPEC)
  _assert_records_close(ran, out, rtol=1e-6, atol=1e-7)


def test_regression_task_records_no_accuracy():
  data = dict(DATA, y_train=jnp.ones((64, 2)), y_test=jnp.ones((32, 2)))
  spec = training.TrainSpec(optimizer="adam", steps=5, batch_size=16, task="regression",
                            eval_every=5, stats_every=5, stats_batch_size=16)
  net = training.init_networks(jax.random.PRNGKey(0)[None], "he_normal", input_dim=INPUT_DIM,
                               width=WIDTH, depth=2, output_dim=2)
  out = training.train_network_jit(MODEL, _one(net), jax.random.PRNGKey(1), 1e-2, data, spec)
  assert "test_accuracy" not in out
  assert out["train_loss"][-1] < out["train_loss"][0]


def test_bad_train_spec():
  with pytest.raises(ValueError, match="valid choices"):
    training.TrainSpec(optimizer="nope")
  with pytest.raises(ValueError, match="steps"):
    training.TrainSpec(steps=0)


@pytest.mark.parametrize("name", optimizer_names())
def test_every_optimizer_takes_a_traced_learning_rate(name):
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.full(3, 0.5)}

  def step(lr):
    opt = get_optimizer(name, lr)
    updates, _ = opt.update(grads, opt.init(params), params)
    return optax.apply_updates(params, updates)["w"]

  moved = jax.jit(jax.vmap(step))(jnp.array([1e-3, 1e-2]))
  assert moved.shape == (2, 3) and np.all(np.asarray(moved) < 1.0)
  assert float(moved[1, 0]) < float(moved[0, 0])


def test_get_optimizer_errors():
  with pytest.raises(ValueError, match="valid choices: sgd, momentum"):
    get_optimizer("nope", 0.1)
  for lr in (0.0, -1.0, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="> 0"):
      get_optimizer("adam", lr)
  assert isinstance(get_optimizer("momentum", 0.1), optax.GradientTransformation)


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_train_step_is_one_optax_update_and_freezes_after_a_non_finite_loss():
  net = _one(_networks(["he_normal"])[0])
  optimizer = get_optimizer("sgd", 0.1)
  state = training.TrainState(net, optimizer.init(net), jnp.arange(64, dtype=jnp.int32),
                              jnp.array(-1, jnp.int32), {})
  key = jax.random.PRNGKey(3)
  spec = training.TrainSpec(optimizer="sgd", steps=12, batch_size=16)
  step = jax.jit(lambda s, i: training.train_step(s, i, 0.1, key, model=MODEL, data=DATA,
                                                  spec=spec))
  new, loss = step(state, jnp.int32(1))   # step 1: not an epoch start, keeps the given order
  x, y = DATA["x_train"][16:32], DATA["y_train"][16:32]
  manual_loss, grads = jax.value_and_grad(training.minibatch_loss)(net, x, y, MODEL, spec)
  np.testing.assert_allclose(loss, manual_loss, rtol=1e-6)
  for name in net:
    np.testing.assert_allclose(new.params[name], net[name] - 0.1 * grads[name], rtol=1e-5,
                               atol=1e-7)
  assert int(new.diverged_step) == -1
  bad = state._replace(params={**net, "omega_out": net["omega_out"] * jnp.inf})
  frozen, loss = step(bad, jnp.int32(1))
  assert not np.isfinite(float(loss)) and int(frozen.diverged_step) == 1
  for name in net:
    np.testing.assert_array_equal(frozen.params[name], bad.params[name])
