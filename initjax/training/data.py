"""Data sets for the training experiments, generated locally and kept on the device.

Two data sets, both returned as a dict of device arrays plus metadata:

  * `load_mnist1d`: MNIST-1D (Greydanus 2020), 4000 training and 1000 test sequences of length 40,
    10 classes. Generated from the package's own recipe
    (`mnist1d.data.make_dataset(get_dataset_args())`, about 2 s), never downloaded, then cached
    as .npz. Inputs are standardized per feature with the training mean and standard deviation.
    **The cache is verified on every load** (`verify_mnist1d`): the four arrays' shapes and
    dtypes, finite inputs, labels in 0..9, the row counts and sequence length the generator's
    settings give, those settings themselves (recorded in the file) and a sha256 of each array
    recorded when it was generated. A cache that fails (damaged, edited, cut, written by other
    generator settings or by an older initjax without the record) is generated again, which
    gives the same arrays (the generator is deterministic), with a log line saying why.
  * `teacher_student`: a regression set whose targets come from a random "teacher" MLP
    (`initjax.networks`), plus Gaussian label noise.

Every dict has: x_train (N, D_in) float32, y_train, x_test, y_test (device arrays), task
("classification" or "regression"), output_dim (number of classes, or of regression targets),
and num_classes (an int for classification, None for regression). `device_arrays(data)` picks
out the four arrays, which is what the training loop takes: they go to the device once.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from initjax.core.errors import check_choice
from initjax.core.results import atomic_write_bytes
from initjax.nn.networks import apply_mlp, init_mlp

MNIST1D_NUM_CLASSES = 10
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
CACHE_RECORD = "initjax_record"   # the npz entry holding the generator settings and checksums
_DTYPES = {"x_train": np.float32, "y_train": np.int32, "x_test": np.float32, "y_test": np.int32}


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


def mnist1d_settings(seed: int) -> dict[str, Any]:
  """The generator's settings for `seed` (`mnist1d.data.get_dataset_args()`, without its url),
  as plain JSON values: what the cached arrays depend on."""
  from mnist1d.data import get_dataset_args  # pylint: disable=import-outside-toplevel
  args = dict(vars(get_dataset_args()))
  args.pop("url", None)
  args["seed"] = seed
  return json.loads(json.dumps(args))


def _generate_mnist1d(seed: int) -> dict[str, np.ndarray]:
  """Raw MNIST-1D arrays from the package's local generator (no network access)."""
  from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=import-outside-toplevel
  args = get_dataset_args()
  args.seed = seed
  raw = make_dataset(args)
  return {"x_train": np.asarray(raw["x"], np.float32), "y_train": np.asarray(raw["y"], np.int32),
          "x_test": np.asarray(raw["x_test"], np.float32),
          "y_test": np.asarray(raw["y_test"], np.int32)}


def _array_sha256(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _cache_record(raw: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
  return {"settings": mnist1d_settings(seed),
          "arrays": {k: {"shape": list(raw[k].shape), "dtype": raw[k].dtype.str,
                         "sha256": _array_sha256(raw[k])} for k in ARRAY_KEYS}}


class DamagedCache(ValueError):
  """A cached data set that fails verification; the message is one line: the file and why."""


def verify_mnist1d(raw: dict[str, np.ndarray], record: dict[str, Any] | None,
                   seed: int = 42) -> None:
  """Checks MNIST-1D arrays (as cached) against what the generator makes for `seed`.

  Checked: the four arrays exist with their dtypes; x has the generator's sequence length and
  finite values; the rows are num_samples split by train_split, the same in x and y; labels are
  integers in 0..9; `record` (stored with the arrays) holds exactly the generator's current
  settings and the sha256 of each array.

  Raises:
    ValueError: one line saying what is wrong (without the file name).
  """
  settings = mnist1d_settings(seed)
  n_train = int(round(settings["num_samples"] * settings["train_split"]))
  rows = {"train": n_train, "test": int(settings["num_samples"]) - n_train}
  length = int(settings["final_seq_length"])
  missing = [k for k in ARRAY_KEYS if k not in raw]
  if missing:
    raise ValueError(f"lacks {', '.join(missing)}")
  for k in ARRAY_KEYS:
    a, part = raw[k], k.split("_")[1]
    if a.dtype != _DTYPES[k]:
      raise ValueError(f"{k} is {a.dtype}, not {np.dtype(_DTYPES[k])}")
    want = (rows[part], length) if k.startswith("x") else (rows[part],)
    if a.shape != want:
      raise ValueError(f"{k} has shape {a.shape} where the generator makes {want}")
    if k.startswith("x") and not np.isfinite(a).all():
      raise ValueError(f"{k} holds {int(np.sum(~np.isfinite(a)))} values that are not finite")
    if k.startswith("y") and (a.min() < 0 or a.max() >= MNIST1D_NUM_CLASSES):
      raise ValueError(f"{k} holds labels from {a.min()} to {a.max()}, outside 0.."
                       f"{MNIST1D_NUM_CLASSES - 1}")
  if record is None:
    raise ValueError("has no record of its generator settings and checksums (written by an "
                     "older initjax), so it cannot be verified")
  if record.get("settings") != settings:
    diff = sorted(k for k in set(settings) | set(record.get("settings") or {})
                  if (record.get("settings") or {}).get(k) != settings.get(k))
    raise ValueError(f"was generated with other settings ({', '.join(diff)} differ from the "
                     "generator's now)")
  for k in ARRAY_KEYS:
    if (record.get("arrays") or {}).get(k, {}).get("sha256") != _array_sha256(raw[k]):
      raise ValueError(f"{k} does not match the sha256 recorded when it was generated")


def _read_cache(path: str, seed: int) -> dict[str, np.ndarray]:
  """The verified arrays of the cache file `path`.

  Raises:
    DamagedCache: one line naming the file and why it cannot be used.
  """
  try:
    with np.load(path, allow_pickle=False) as npz:
      raw = {k: npz[k] for k in ARRAY_KEYS if k in npz.files}
      record = json.loads(str(npz[CACHE_RECORD])) if CACHE_RECORD in npz.files else None
  except Exception as e:  # pylint: disable=broad-except  (zip, JSON and OS errors alike)
    raise DamagedCache(f"the cached data set {path} cannot be read ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else 'damaged'})") from None
  try:
    verify_mnist1d(raw, record if isinstance(record, dict) else None, seed)
  except ValueError as e:
    raise DamagedCache(f"the cached data set {path} {e}") from None
  return raw


def mnist1d_cache_path(data_dir: str | None = None, seed: int = 42) -> str:
  return os.path.join(data_dir or default_data_dir(), f"mnist1d_seed{seed}.npz")


def check_data_dir(data_dir: str | None = None, seed: int = 42) -> str:
  """Checks that MNIST-1D can be loaded from, or cached into, `data_dir` before anything runs:
  a cached file that verifies (`verify_mnist1d`) is used as it is; otherwise (none, or one that
  fails and will be generated again) the directory must be creatable and writable. Returns the
  cache path.

  Raises:
    ValueError: one line naming the file or directory and why it cannot be used.
  """
  path = mnist1d_cache_path(data_dir, seed)
  damage = None
  if os.path.exists(path):
    try:
      _read_cache(path, seed)
      return path
    except DamagedCache as e:
      damage = str(e)
  directory = os.path.dirname(path)
  try:
    os.makedirs(directory, exist_ok=True)
    probe = os.path.join(directory, f".write_probe.{os.getpid()}")
    with open(probe, "wb"):
      pass
    os.unlink(probe)
  except OSError as e:
    if damage:
      raise ValueError(f"{damage}, and it cannot be generated again in {directory!r} "
                       f"({e.strerror or e}): delete it, or use another data directory") from None
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
    num_classes=output_dim=10. The cache is verified first (`verify_mnist1d`); one that fails is
    generated again with a log line saying why (the same arrays: the generator is
    deterministic, and they are verified before they are cached).
  """
  path = mnist1d_cache_path(data_dir, seed)
  raw = None
  if os.path.exists(path):
    try:
      raw = _read_cache(path, seed)
    except DamagedCache as e:
      logging.warning("%s; generating it again (about 2 s)", e)
  if raw is None:
    raw = _generate_mnist1d(seed)
    record = _cache_record(raw, seed)
    verify_mnist1d(raw, record, seed)   # what the generator made is what a reader will check
    _atomic_save_npz(path, {**raw, CACHE_RECORD: np.array(json.dumps(record))})
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
  """task, num_classes, n_train and input_size (values per example) of a named data set (with
  `get_dataset`'s defaults), known without building it."""
  check_dataset(name)
  if name == "mnist1d":
    return {"task": "classification", "num_classes": MNIST1D_NUM_CLASSES, "n_train": 4000,
            "input_size": 40}
  return {"task": "regression", "num_classes": None, "n_train": 4000, "input_size": 40}


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
