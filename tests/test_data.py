"""Data sets: MNIST-1D generated locally and cached, teacher-student regression, names."""
import os

import jax
import numpy as np
import pytest

from initjax.training import data as data_lib


@pytest.fixture(scope="module")
def mnist1d_dir(tmp_path_factory):
  """A fresh cache directory, filled once per session by the first load (about 2 s)."""
  directory = str(tmp_path_factory.mktemp("mnist1d_cache"))
  data_lib.load_mnist1d(directory)
  return directory


def test_mnist1d_shapes_and_dtypes(mnist1d_dir):
  d = data_lib.load_mnist1d(mnist1d_dir)
  assert d["x_train"].shape == (4000, 40) and d["x_train"].dtype == np.float32
  assert d["x_test"].shape == (1000, 40) and d["x_test"].dtype == np.float32
  assert d["y_train"].shape == (4000,) and d["y_train"].dtype == np.int32
  assert d["y_test"].shape == (1000,) and d["y_test"].dtype == np.int32
  assert d["num_classes"] == 10 and d["task"] == "classification"
  assert set(np.unique(np.asarray(d["y_train"]))) == set(range(10))
  assert isinstance(d["x_train"], jax.Array)


def test_mnist1d_standardized_per_feature_with_train_statistics(mnist1d_dir):
  d = data_lib.load_mnist1d(mnist1d_dir)
  x_train = np.asarray(d["x_train"], np.float64)
  np.testing.assert_allclose(x_train.mean(axis=0), 0.0, atol=1e-4)
  np.testing.assert_allclose(x_train.std(axis=0), 1.0, atol=1e-4)
  # The test set uses the training statistics: close to, not exactly, standardized.
  x_test = np.asarray(d["x_test"], np.float64)
  assert np.abs(x_test.mean(axis=0)).max() < 0.2
  assert not np.allclose(x_test.std(axis=0), 1.0, atol=1e-4)


def test_mnist1d_is_cached_and_reloaded(mnist1d_dir, monkeypatch):
  path = data_lib.mnist1d_cache_path(mnist1d_dir)
  assert os.path.exists(path)
  assert not [f for f in os.listdir(mnist1d_dir) if f.endswith(".tmp")]
  first = data_lib.load_mnist1d(mnist1d_dir)

  def fail(seed):
    raise AssertionError("generated again instead of reading the cache")

  monkeypatch.setattr(data_lib, "_generate_mnist1d", fail)
  again = data_lib.load_mnist1d(mnist1d_dir)
  for k in data_lib.ARRAY_KEYS:
    np.testing.assert_array_equal(np.asarray(first[k]), np.asarray(again[k]))


def test_mnist1d_default_dir_from_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("INITJAX_DATA_DIR", str(tmp_path))
  assert data_lib.default_data_dir() == str(tmp_path)
  assert data_lib.mnist1d_cache_path().startswith(str(tmp_path))


def test_teacher_student_shapes_and_determinism():
  key = jax.random.PRNGKey(3)
  a = data_lib.teacher_student(key, n_train=64, n_test=16, input_dim=5, output_dim=2,
                               teacher_width=8, teacher_depth=2, noise=0.1)
  b = data_lib.teacher_student(key, n_train=64, n_test=16, input_dim=5, output_dim=2,
                               teacher_width=8, teacher_depth=2, noise=0.1)
  c = data_lib.teacher_student(jax.random.PRNGKey(4), n_train=64, n_test=16, input_dim=5,
                               output_dim=2, teacher_width=8, teacher_depth=2, noise=0.1)
  assert a["x_train"].shape == (64, 5) and a["y_train"].shape == (64, 2)
  assert a["x_test"].shape == (16, 5) and a["y_test"].shape == (16, 2)
  assert a["task"] == "regression" and a["output_dim"] == 2
  for k in data_lib.ARRAY_KEYS:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
  assert not np.allclose(np.asarray(a["y_train"]), np.asarray(c["y_train"]))


def test_teacher_student_signal_has_unit_variance_plus_noise():
  d = data_lib.teacher_student(jax.random.PRNGKey(0), n_train=64, n_test=16, input_dim=5,
                               output_dim=2, teacher_width=8, teacher_depth=2, noise=0.0)
  np.testing.assert_allclose(np.std(np.asarray(d["y_train"])), 1.0, rtol=1e-4)
  noisy = data_lib.teacher_student(jax.random.PRNGKey(0), n_train=64, n_test=16, input_dim=5,
                                   output_dim=2, teacher_width=8, teacher_depth=2, noise=0.5)
  np.testing.assert_allclose(np.std(np.asarray(noisy["y_train"] - d["y_train"])), 0.5, rtol=0.2)


def test_get_dataset_names():
  assert data_lib.dataset_names() == ["mnist1d", "teacher_student"]
  d = data_lib.get_dataset("teacher_student", n_train=64, n_test=16, input_dim=5, output_dim=2,
                           teacher_width=8)
  assert d["x_train"].shape == (64, 5)
  with pytest.raises(ValueError, match="mnist1d, teacher_student"):
    data_lib.get_dataset("cifar10")
