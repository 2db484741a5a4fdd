"""abc-parametrizations (initjax.training.parametrization): the registry, the classification of
leaves by which dimensions grow with width (initjax's MLP and a Flax model written as Flax's
examples write them), the per-leaf multipliers against the `mup` package's rules and Tensor
Programs V's Table 3, and the optax transformation composing with optimizers."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import initjax
from initjax.training import parametrization as pz
from tests.flax_models import MLP


def _mlp_shapes(width, depth=3):
  return jax.eval_shape(lambda k: initjax.init_mlp(k, input_dim=40, width=width, depth=depth,
                                                   output_dim=10), jax.random.key(0))


def _flax_shapes(width):
  return jax.eval_shape(lambda k: MLP(width).init(k, jnp.zeros((1, 40)))["params"],
                        jax.random.key(0))


def test_the_short_path_is_the_module_and_the_registry_rejects_unknown_names():
  assert initjax.parametrization is pz
  assert pz.parametrization_names() == ["sp", "ntk", "mup"]
  with pytest.raises(ValueError, match="Unknown parametrization 'mu'; valid choices: sp, ntk"):
    pz.scalings("mu", "adam")
  assert pz.optimizer_family("rmsprop") == "adam" and pz.optimizer_family("momentum") == "sgd"
  with pytest.raises(ValueError, match="Unknown optimizer"):
    pz.optimizer_family("adafactor")


def test_classify_the_book_mlp_by_which_dims_grow():
  kinds = pz.classify(_mlp_shapes(8), _mlp_shapes(16))
  assert kinds == {"omega_0": "input", "beta_0": "bias", "omega_hidden": "hidden",
                   "beta_hidden": "bias", "omega_out": "output", "beta_out": "fixed"}


def test_classify_a_flax_model_and_overrides():
  kinds = pz.kinds_by_name(pz.classify(_flax_shapes(8), _flax_shapes(32)))
  assert kinds == {"Dense_0/bias": "bias", "Dense_0/kernel": "input", "Dense_1/bias": "bias",
                   "Dense_1/kernel": "hidden", "Dense_2/bias": "fixed",
                   "Dense_2/kernel": "output"}
  over = pz.kinds_by_name(pz.classify(_flax_shapes(8), _flax_shapes(32),
                                      overrides={"Dense_1/*": "fixed"}))
  assert over["Dense_1/kernel"] == over["Dense_1/bias"] == "fixed"
  with pytest.raises(ValueError, match="override 'Dense_9' matches no parameter"):
    pz.classify(_flax_shapes(8), _flax_shapes(32), overrides={"Dense_9": "hidden"})
  with pytest.raises(ValueError, match="Unknown kind 'readout'"):
    pz.classify(_flax_shapes(8), _flax_shapes(32), overrides={"Dense_2/kernel": "readout"})


def test_a_model_whose_layers_do_not_change_with_width_is_one_line():
  with pytest.raises(ValueError, match="layers do not change with width") as e:
    pz.classify(_flax_shapes(8), _flax_shapes(8))
  assert "\n" not in str(e.value)


def _plan(name, optimizer, m=4):
  kinds = pz.classify(_mlp_shapes(8), _mlp_shapes(16))
  return pz.plan(name, optimizer, kinds, width=16 * m, base_width=16)


def test_mup_multipliers_are_the_mup_packages_rules():
  # mup/optim.py MuAdam: matrix-like (2 infinite dims) lr / width_mult, vector-like unchanged;
  # MuSGD: vector-like lr * width_mult, matrix-like lr / (fanin_mult / fanout_mult) = 1 here,
  # fixed unchanged; mup/layer.py MuReadout: input / width_mult, SP init * width_mult^0.5.
  adam, sgd = _plan("mup", "adam"), _plan("mup", "sgd")
  assert adam.lr_scale == {"omega_0": 1, "beta_0": 1, "omega_hidden": 0.25, "beta_hidden": 1,
                           "omega_out": 1, "beta_out": 1}
  assert sgd.lr_scale == {"omega_0": 4, "beta_0": 4, "omega_hidden": 1, "beta_hidden": 4,
                          "omega_out": 4, "beta_out": 1}
  for p in (adam, sgd):
    assert p.multiplier["omega_out"] == 0.25 and p.init_scale["omega_out"] == 2.0
    assert all(v == 1 for k, v in p.multiplier.items() if k != "omega_out")


def test_mup_absorbed_is_tensor_programs_v_table_3():
  # Table 3 (no multipliers): output weights init Var 1/fan_in^2, i.e. the SP variance
  # 1/fan_in times 1/m; Adam lr: hidden and output 1/fan_in, input and biases 1; SGD lr:
  # input and biases fan_out, hidden 1, output 1/fan_in.
  adam, sgd = pz.absorbed(_plan("mup", "adam")), pz.absorbed(_plan("mup", "sgd"))
  for p in (adam, sgd):
    assert p.init_scale["omega_out"] ** 2 == pytest.approx(1 / 4)
    assert all(v == 1 for v in p.multiplier.values())
  assert adam.lr_scale["omega_hidden"] == adam.lr_scale["omega_out"] == 0.25
  assert adam.lr_scale["omega_0"] == adam.lr_scale["beta_0"] == 1
  assert sgd.lr_scale["omega_0"] == sgd.lr_scale["beta_hidden"] == 4
  assert sgd.lr_scale["omega_hidden"] == 1 and sgd.lr_scale["omega_out"] == 0.25


@pytest.mark.parametrize("name", ["sp", "ntk", "mup"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_every_parametrization_is_sp_at_the_base_width(name, optimizer):
  p = _plan(name, optimizer, m=1)
  for tree in (p.init_scale, p.multiplier, p.lr_scale):
    assert all(v == 1.0 for v in jax.tree.leaves(tree))


def test_ntk_keeps_the_effective_init_of_sp():
  p = _plan("ntk", "sgd")
  assert p.init_scale["omega_hidden"] * p.multiplier["omega_hidden"] == pytest.approx(1.0)
  assert p.init_scale["omega_out"] * p.multiplier["omega_out"] == pytest.approx(1.0)


def test_scale_updates_is_a_per_leaf_learning_rate():
  params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
  grads = {"a": jnp.arange(3.0), "b": jnp.full((2, 2), 2.0)}
  opt = optax.chain(optax.sgd(0.1), pz.scale_updates({"a": 4.0, "b": 0.5}))
  updates, _ = opt.update(grads, opt.init(params), params)
  np.testing.assert_allclose(updates["a"], -0.4 * np.arange(3.0))
  np.testing.assert_allclose(updates["b"], np.full((2, 2), -0.1))


@pytest.mark.parametrize("optimizer,rtol", [("sgd", 1e-5), ("adam", 1e-4)])
def test_absorbed_trains_the_same_network_as_the_multipliers(optimizer, rtol):
  # abc-symmetry: the network with forward multipliers and its multiplier-free equivalent give
  # the same outputs after training (exact for SGD up to float32 rounding; for Adam up to its
  # epsilon, 1e-8 against gradients of order 1e-3 here).
  x = jnp.asarray(np.random.default_rng(1).normal(size=(32, 40)), jnp.float32)
  y = jnp.arange(32) % 10
  rng = np.random.default_rng(0)   # NumPy draws: eager threefry would compile for seconds
  params0 = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(s.shape[-1]),
                                               jnp.float32), _mlp_shapes(32))
  kinds = pz.classify(_mlp_shapes(8), _mlp_shapes(16))

  @jax.jit
  def train_jit(p_lr, p_init, p_mult):
    import dataclasses
    return train(dataclasses.replace(with_multipliers, lr_scale=p_lr, init_scale=p_init,
                                     multiplier=p_mult))

  def train(p):
    params = pz.scale_init(params0, p)
    opt = pz.optimizer(optimizer, 0.01, p)
    state = opt.init(params)
    loss = lambda q: optax.softmax_cross_entropy_with_integer_labels(
        initjax.apply_mlp(pz.effective(q, p), x, "relu"), y).mean()
    for _ in range(2):
      updates, state = opt.update(jax.grad(loss)(params), state, params)
      params = optax.apply_updates(params, updates)
    return initjax.apply_mlp(pz.effective(params, p), x, "relu")

  with_multipliers = pz.plan("mup", optimizer, kinds, width=32, base_width=8)
  run = lambda p: train_jit(p.lr_scale, p.init_scale, p.multiplier)
  np.testing.assert_allclose(run(with_multipliers), run(pz.absorbed(with_multipliers)),
                             rtol=rtol, atol=1e-5)
