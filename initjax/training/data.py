"""Data sets for the training experiments, generated locally and kept on the device.

Two data sets, both returned as a dict of device arrays plus metadata:

  * `load_mnist1d`: MNIST-1D (Greydanus 2020), 4000 training and 1000 test sequences of length 40,
    10 classes. Generated from the package's own recipe
    (`mnist1d.data.make_dataset(get_dataset_args())`, about 2 s), never downloaded, then cached
    as .npz. Inputs are standardized per feature with the training mean and standard deviation.
  * `teacher_student`: a regression set whose targets come from a random "teacher" MLP
    (`initjax.networks`), plus Gaussian label noise.

Every dict has: x_train (N, D_in) float32, y_train, x_test, y_test (device arrays), task
("classification" or "regression"), output_dim (number of classes, or of regression targets),
and num_classes (an int for classification, None for regression). `device_arrays(data)` picks
out the four arrays, which is what the training loop takes: they go to the device once.
"""
from __future__ import annotations

import functools
import io
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initjax.core.errors import check_choice
from initjax.core.results import atomic_write_bytes
from initjax.nn.networks import apply_mlp, init_mlp

MNIST1D_NUM_CLASSES = 10
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


def default_data_dir() -> str:
  """`$INITJAX_DATA_DIR` if set, else `~/.cache/initjax`."""
  return os.environ.get("INITJAX_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "initjax")


def _atomic_save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Writes an .npz atomically (temporary file in the same directory, then a rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  atomic_write_bytes(path, buf.getvalue())


def _generate_mnist1d(seed: int) -> dict[str, np.ndarray]:
  """Raw MNIST-1D arrays from the package's local generator (no network access)."""
  from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=import-outside-toplevel
  args = get_dataset_args()
  args.seed = seed
  raw = make_dataset(args)
  return {"x_train": np.asarray(raw["x"], np.float32), "y_train": np.asarray(raw["y"], np.int32),
          "x_test": np.asarray(raw["x_test"], np.float32),
          "y_test": np.asarray(raw["y_test"], np.int32)}


def mnist1d_cache_path(data_dir: str | None = None, seed: int = 42) -> str:
  return os.path.join(data_dir or default_data_dir(), f"mnist1d_seed{seed}.npz")


def check_data_dir(data_dir: str | None = None, seed: int = 42) -> str:
  """Checks that MNIST-1D can be loaded from, or cached into, `data_dir` before anything runs:
  the cached file, when present, must be a readable .npz with the four arrays; otherwise the
  directory must be creatable and writable. Returns the cache path.

  Raises:
    ValueError: one line naming the file or directory and why it cannot be used.
  """
  path = mnist1d_cache_path(data_dir, seed)
  if os.path.exists(path):
    try:
      with np.load(path) as npz:
        missing = [k for k in ARRAY_KEYS if k not in npz.files]
        if not missing:
          for k in ARRAY_KEYS:
            npz[k]  # pylint: disable=pointless-statement  (reads and checks every array)
    except Exception as e:  # pylint: disable=broad-except  (zip, pickle and OS errors alike)
      raise ValueError(f"the cached data set {path} cannot be read ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else 'damaged'}); delete it to "
                       "generate it again") from None
    if missing:
      raise ValueError(f"the cached data set {path} lacks {', '.join(missing)}; delete it to "
                       "generate it again")
    return path
  directory = os.path.dirname(path)
  try:
    os.makedirs(directory, exist_ok=True)
    probe = os.path.join(directory, f".write_probe.{os.getpid()}")
    with open(probe, "wb"):
      pass
    os.unlink(probe)
  except OSError as e:
    raise ValueError(f"cannot cache the data set in {directory!r}: {e.strerror or e}") from None
  return path


def standardize(x_train_NxD: np.ndarray, x_test_MxD: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature standardization with the TRAINING mean and std: x' = (x - mu_d) / s_d."""
  mu_D = x_train_NxD.mean(axis=0)
  s_D = x_train_NxD.std(axis=0)
  s_D = np.where(s_D > 0, s_D, 1.0)
  return ((x_train_NxD - mu_D) / s_D).astype(np.float32), ((x_test_MxD - mu_D) / s_D).astype(
      np.float32)


def load_mnist1d(data_dir: str | None = None, seed: int = 42) -> dict[str, Any]:
  """MNIST-1D, generated locally on first use and cached as `<data_dir>/mnist1d_seed<seed>.npz`.

  Args:
    data_dir: cache directory; default `$INITJAX_DATA_DIR` or `~/.cache/initjax`.
    seed: the generator seed (42 reproduces the published frozen copy).

  Returns:
    x_train (4000, 40) float32, y_train (4000,) int32, x_test (1000, 40), y_test (1000,), as jnp
    arrays, inputs standardized per feature with the training statistics; task="classification",
    num_classes=output_dim=10.
  """
  path = mnist1d_cache_path(data_dir, seed)
  if os.path.exists(path):
    with np.load(path) as npz:
      raw = {k: npz[k] for k in ARRAY_KEYS}
  else:
    raw = _generate_mnist1d(seed)
    _atomic_save_npz(path, raw)
  x_train, x_test = standardize(raw["x_train"], raw["x_test"])
  return {"x_train": jnp.asarray(x_train), "y_train": jnp.asarray(raw["y_train"], jnp.int32),
          "x_test": jnp.asarray(x_test), "y_test": jnp.asarray(raw["y_test"], jnp.int32),
          "task": "classification", "num_classes": MNIST1D_NUM_CLASSES,
          "output_dim": MNIST1D_NUM_CLASSES}


def teacher_student(key: jax.Array, *, n_train: int = 4000, n_test: int = 1000,
                    input_dim: int = 40, output_dim: int = 1, teacher_width: int = 64,
                    teacher_depth: int = 2, noise: float = 0.1,
                    activation: str = "relu") -> dict[str, Any]:
  """A regression set labelled by a random teacher MLP.

  x ~ N(0, I_{D_in}); the teacher is `init_mlp(..., weight_init="he_normal")` with biases zero;
  its outputs are rescaled by one scalar so that their variance over the training inputs is 1,
  then y = teacher(x) + noise * eps, eps ~ N(0, 1). So `noise**2` is the irreducible mean squared
  error relative to a unit-variance signal.

  Returns:
    x_train (n_train, input_dim), y_train (n_train, output_dim), x_test, y_test (float32 jnp
    arrays), task="regression", num_classes=None, output_dim.
  """
  for name, value in (("n_train", n_train), ("n_test", n_test)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
  if not noise >= 0:
    raise ValueError(f"noise must be >= 0; got {noise!r}")
  x_NxD, y_NxO = _teacher_student_arrays(key, n_train + n_test, n_train, input_dim, output_dim,
                                         teacher_width, teacher_depth, float(noise), activation)
  return {"x_train": x_NxD[:n_train], "y_train": y_NxO[:n_train],
          "x_test": x_NxD[n_train:], "y_test": y_NxO[n_train:],
          "task": "regression", "num_classes": None, "output_dim": output_dim}


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6, 8))  # noise is data
def _teacher_student_arrays(key, n, n_train, input_dim, output_dim, teacher_width, teacher_depth,
                            noise, activation):
  k_teacher, k_x, k_noise = jax.random.split(key, 3)
  teacher = init_mlp(k_teacher, input_dim=input_dim, width=teacher_width, depth=teacher_depth,
                     output_dim=output_dim, weight_init="he_normal")
  x_NxD = jax.random.normal(k_x, (n, input_dim), jnp.float32)
  f_NxO = apply_mlp(teacher, x_NxD, activation)
  scale = jnp.std(f_NxO[:n_train])
  f_NxO = f_NxO / jnp.where(scale > 0, scale, 1.0)
  return x_NxD, f_NxO + noise * jax.random.normal(k_noise, f_NxO.shape, jnp.float32)


DATASETS = ("mnist1d", "teacher_student")


def dataset_names() -> list[str]:
  return list(DATASETS)


def dataset_info(name: str) -> dict[str, Any]:
  """task, num_classes and n_train of a named data set (with `get_dataset`'s defaults), known
  without building it."""
  check_dataset(name)
  if name == "mnist1d":
    return {"task": "classification", "num_classes": MNIST1D_NUM_CLASSES, "n_train": 4000}
  return {"task": "regression", "num_classes": None, "n_train": 4000}


def check_dataset(name: str) -> str:
  return check_choice("dataset", name, DATASETS)


def get_dataset(name: str, *, key: jax.Array | None = None, data_dir: str | None = None,
                **kwargs: Any) -> dict[str, Any]:
  """A data set by name: "mnist1d" (`load_mnist1d(data_dir, **kwargs)`) or "teacher_student"
  (`teacher_student(key, **kwargs)`, key default PRNGKey(0)).

  Raises:
    ValueError: for an unknown name, listing the valid ones.
  """
  check_dataset(name)
  if name == "mnist1d":
    return load_mnist1d(data_dir, **kwargs)
  return teacher_student(jax.random.PRNGKey(0) if key is None else key, **kwargs)


def device_arrays(data: dict[str, Any]) -> dict[str, jax.Array]:
  """The four arrays of a data dict (x_train, y_train, x_test, y_test), as device arrays."""
  return {k: jnp.asarray(data[k]) for k in ARRAY_KEYS}
