"""scripts/benchmark.py runs end to end (tiny sizes, in a subprocess) and writes valid JSON.

The benchmark is not a timed test: nothing here asserts anything about speed. PyTorch is an
optional extra (`pip install -e ".[bench]"`): where it is importable its rows are measured and
their ratios are numbers; where it is not, they are skipped with a note and their ratios are None.
The benchmark honours INITJAX_BENCH_NO_TORCH=1 by making `import torch` fail in its processes, so
`INITJAX_BENCH_NO_TORCH=1 python -m pytest tests/test_benchmark.py` runs this file as if torch
were not installed (as CI does, which installs only the test extra); `test_without_torch` checks
that switch with a run of a few seconds in any case.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, "scripts")
SCRIPT = os.path.join(SCRIPTS, "benchmark.py")
NO_TORCH = "INITJAX_BENCH_NO_TORCH"

TORCH_RATIOS = ("training_vs_torch_loop_w100", "training_vs_torch_vmap_w100",
                "training_vs_torch_loop_w32", "training_vs_torch_vmap_w32",
                "cnn_training_vs_torch_loop", "cnn_training_vs_torch_vmap",
                "cnn_training_vs_torch_best", "cnn_batchnorm_training_vs_torch_loop",
                "cnn_batchnorm_training_vs_torch_best", "rnn_training_vs_torch_loop",
                "lstm_training_vs_torch_loop", "rnn_training_vs_torch_vmap",
                "lstm_training_vs_torch_vmap",
                "propagation_vs_torch_loop")
RATIO_KEYS = TORCH_RATIOS + (
    "propagation_vs_numpy_loop", "propagation_vs_jit_loop", "propagation_fraction_of_matmul_peak",
    "training_fraction_of_matmul_peak", "training_vs_sequential", "cnn_training_vs_seed_loop",
    "compile_time_200_over_10_layers", "compile_time_200_over_10_layers_training",
    "peak_rss_gb_10000_seeds", "sweep_warm_over_cold", "isometry_vs_numpy_loop",
    "isometry_vs_jit_loop", "isometry_measure_s")
TARGET_KEYS = ("training_vs_torch_loop_w100", "training_vs_torch_vmap_w100",
               "training_vs_torch_loop_w32", "training_vs_torch_vmap_w32",
               "training_fraction_of_matmul_peak", "cnn_training_vs_torch_loop",
               "cnn_training_vs_torch_best", "cnn_batchnorm_training_vs_torch_best",
               "rnn_training_vs_torch_loop", "lstm_training_vs_torch_loop",
               "propagation_vs_numpy_loop", "propagation_vs_jit_loop",
               "propagation_fraction_of_matmul_peak", "isometry_vs_numpy_loop",
               "isometry_measure_s")


def torch_expected() -> bool:
  return (os.environ.get(NO_TORCH, "") in ("", "0")
          and importlib.util.find_spec("torch") is not None)


def run_benchmark(tmp_path, *flags, env=None):
  out = tmp_path / "bench.json"
  proc = subprocess.run([sys.executable, SCRIPT, "--tiny", f"--output={out}", *flags],
                        cwd=tmp_path, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, **(env or {})))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Ratios" in proc.stdout
  return json.loads(out.read_text())


def check_ratios_and_targets(res, torch_measured: bool):
  for key in RATIO_KEYS:
    assert key in res["ratios"], key
    value = res["ratios"][key]
    assert value is None or (isinstance(value, float) and math.isfinite(value) and value > 0), (
        key, value)
    if key in TORCH_RATIOS and not torch_measured:
      assert value is None, key
  for key in TARGET_KEYS:
    target = res["targets"][key]
    assert target["met"] in (True, False, None), (key, target)
    assert (target["met"] is None) == (target["value"] is None), (key, target)
  assert "training_vs_sequential" not in res["targets"]   # retired: information only


def torch_rows(rows) -> list:
  return [name for name in rows if name.startswith("torch")]


@pytest.mark.slow  # about 35 s: every section, several processes
def test_tiny_benchmark_writes_json_with_every_ratio(tmp_path):
  res = run_benchmark(tmp_path)
  measured = torch_expected()
  assert (res["torch"] == "measured") == measured, res["torch"]
  check_ratios_and_targets(res, measured)
  for key in ("machine", "versions", "flop_convention", "matmul", "propagation", "training",
              "cnn", "cnn_batchnorm", "recurrent", "compile", "memory", "sweep_start",
              "isometry"):
    assert key in res, key
    assert "error" not in res[key], res[key]["error"]
  for rows in (res["training"]["w100"], res["training"]["w32"], res["cnn"], res["cnn_batchnorm"],
               res["recurrent"]["rnn"], res["recurrent"]["lstm"], res["propagation"]["8"]):
    assert bool(torch_rows(rows)) == measured, list(rows)
    assert (rows["_torch"] == "measured") == measured, rows["_torch"]
  if measured:   # the loop and torch.func vmap (1 thread in --tiny) train like initjax
    for rows in (res["training"]["w100"], res["cnn"], res["cnn_batchnorm"],
                 res["recurrent"]["rnn"], res["recurrent"]["lstm"]):
      assert {"torch loop (1 thread)", "torch.func vmap (1 thread)"} <= set(rows)
      ours = rows["initjax run_networks"]
      for name in torch_rows(rows):
        for key in ("loss_first_step", "loss_last_steps"):
          assert math.isclose(rows[name][key], ours[key], rel_tol=1e-3), (name, key)
  for name in ("initjax run_networks", "initjax train_networks (1 device)",
               "initjax train_network_jit, network by network"):
    row = res["cnn"][name]
    assert row["network_steps_per_s"] > 0 and row["losses_finite"], (name, row)
  # Every timing reports its repeats and the median of them; compile time is separate.
  row = res["propagation"]["8"]["initjax.measure"]
  assert len(row["all_s"]) >= 1 and row["median_s"] > 0 and "first_call_s" in row
  assert res["memory"]["num_seeds"] == res["config"]["memory"]["num_seeds"]
  assert res["memory"]["all_finite"]
  assert set(res["compile"]["propagation"]) == {"2", "8"}
  sweep = res["sweep_start"]
  assert sweep["cold_s"] > 0 and sweep["warm_s"] > 0 and sweep["cache_entries_after_cold"] > 0


@pytest.mark.slow  # about 20 s: the tiny benchmark end to end, as if torch were absent
def test_without_torch(tmp_path):
  res = run_benchmark(tmp_path,
                      "--skip=propagation,training,cnn,cnn_batchnorm,compile,memory,sweep_start,"
                      "isometry",
                      env={NO_TORCH: "1"})
  assert res["torch"].startswith("skipped") and NO_TORCH in res["torch"], res["torch"]
  assert res["versions"]["torch"] is None
  check_ratios_and_targets(res, torch_measured=False)
  assert res["matmul"]["gflops"] > 0
  assert res["targets"]["training_vs_torch_loop_w100"]["met"] is None


def test_help():
  proc = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 0 and "--tiny" in proc.stdout, proc.stderr


def he_params(w, rng) -> dict:
  """S networks of workload `w` in initjax's layouts, He weights and zero biases, with NumPy."""
  def he(fan_in, *shape):
    return (rng.standard_normal((w.networks,) + shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

  def zeros(*shape):
    return np.zeros((w.networks,) + shape, np.float32)

  k, d, s = w.width, w.depth, w.kernel_size
  if w.arch in ("rnn", "lstm"):   # per gate: kernels (D, H) and (H, H), one bias each
    g, inputs = {"rnn": 1, "lstm": 4}[w.arch], w.length // w.depth
    return {"kernel_x": he(inputs, g, inputs, k), "kernel_h": he(k, g, k, k),
            "beta": (rng.standard_normal((w.networks, g * k)) * 0.1).astype(np.float32),
            "omega_out": he(k, w.classes, k), "beta_out": zeros(w.classes)}
  if w.arch == "mlp":   # Omega (out, in)
    first, hidden = {"omega_0": he(w.length, k, w.length)}, {"omega_hidden": he(k, d - 1, k, k)}
  else:                 # kernels (s, C_in, C_out)
    first, hidden = {"kernel_0": he(s, s, 1, k)}, {"kernel_hidden": he(s * k, d - 1, s, k, k)}
  fan_out = k if w.arch == "mlp" else w.length * k
  norm = ({"norm_scale_0": 1 + zeros(k), "norm_shift_0": zeros(k),
           "norm_scale_hidden": 1 + zeros(d - 1, k), "norm_shift_hidden": zeros(d - 1, k)}
          if w.norm == "batchnorm" else {})
  return {**first, **hidden, "beta_0": zeros(k), "beta_hidden": zeros(d - 1, k),
          "omega_out": he(fan_out, w.classes, fan_out), "beta_out": zeros(w.classes), **norm}


@pytest.mark.parametrize("arch,norm", [("mlp", "none"), ("cnn", "none"), ("cnn", "batchnorm"),
                                       ("rnn", "none"), ("lstm", "none")])
def test_torch_peers_train_alike(arch, norm):
  """The PyTorch loop and torch.func vmap train the same networks from the same weights on the
  same minibatches: the same losses."""
  if not torch_expected():
    pytest.skip("torch is not installed (or INITJAX_BENCH_NO_TORCH is set)")
  sys.path.insert(0, SCRIPTS)
  from bench import threads, torch_peers, workload  # pylint: disable=import-outside-toplevel
  w = workload.Workload(arch, length=8, width=6, depth=4 if arch in ("rnn", "lstm") else 3,
                        classes=3, networks=2, steps=10, batch=8, learning_rate=0.05,
                        kernel_size=3, norm=norm)
  data = workload.make_data(n_train=32, n_test=8, input_dim=8, classes=3)
  rng = np.random.default_rng(0)
  initial = torch_peers.state_dicts(w, he_params(w, rng))
  orders = np.stack([[rng.permutation(32) for _ in range(3)] for _ in range(w.networks)])
  run = torch_peers.TorchRun(w, data, initial, orders)
  with threads.library_threads(1):   # several threads on tiny layers mostly spin
    loop, vmap = run.loop(), run.vmap()
  assert loop.shape == (2, 10) and np.isfinite(loop).all()
  assert loop[:, -3:].mean() < loop[:, :3].mean()   # it learns
  np.testing.assert_allclose(vmap, loop, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["rnn", "lstm"])
def test_torch_recurrent_net_computes_initjax_network(arch):
  """The weights `state_dicts` hands to nn.RNN / nn.LSTM (gate order, transposes, the two
  biases) make PyTorch's network compute initjax's: the same outputs on the same inputs."""
  if not torch_expected():
    pytest.skip("torch is not installed (or INITJAX_BENCH_NO_TORCH is set)")
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, SCRIPTS)
  from bench import torch_peers, workload  # pylint: disable=import-outside-toplevel
  w = workload.Workload(arch, length=12, width=5, depth=6, classes=3, networks=2, steps=1,
                        batch=4, learning_rate=0.1)
  params = jax.tree.map(np.asarray, workload.initial_params(w))
  params["beta"] = np.random.default_rng(0).standard_normal(params["beta"].shape).astype(
      np.float32)                                   # every gate's bias counts
  x = np.random.default_rng(1).standard_normal((7, 12)).astype(np.float32)
  model = workload.initjax_model(w)
  for s, sd in enumerate(torch_peers.state_dicts(w, params)):
    net = torch_peers.build_module(w)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    with torch.no_grad():
      got = net(torch.from_numpy(x)).numpy()
    want = model.apply(jax.tree.map(lambda a, s=s: a[s], params), x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_torch_batchnorm_cnn_computes_initjax_network():
  """With the weights `state_dicts` hands over (kernels, the head's column order, batchnorm's
  scale and shift), PyTorch's Conv1d/BatchNorm1d network in training mode computes initjax's
  batch-normalized CNN with the batch's statistics: the same outputs on the same inputs."""
  if not torch_expected():
    pytest.skip("torch is not installed (or INITJAX_BENCH_NO_TORCH is set)")
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, SCRIPTS)
  from bench import torch_peers, workload  # pylint: disable=import-outside-toplevel
  w = workload.Workload("cnn", length=10, width=4, depth=3, classes=3, networks=2, steps=1,
                        batch=6, learning_rate=0.1, kernel_size=3, norm="batchnorm")
  params = jax.tree.map(np.asarray, workload.initial_params(w))
  rng = np.random.default_rng(0)
  for name in ("norm_scale_0", "norm_shift_0", "norm_scale_hidden", "norm_shift_hidden"):
    params[name] = (params[name] + rng.standard_normal(params[name].shape)).astype(np.float32)
  x = rng.standard_normal((6, 10)).astype(np.float32)
  model = workload.initjax_model(w)
  for s, sd in enumerate(torch_peers.state_dicts(w, params)):
    net = torch_peers.build_module(w).train()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    with torch.no_grad():
      got = net(torch.from_numpy(x[:, None, :])).numpy()
    want = model.apply(jax.tree.map(lambda a, s=s: a[s], params), x[:, :, None])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
