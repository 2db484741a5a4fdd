"""Hanin & Rolnick 2018: the spread of log ||h_L||^2 over random ReLU networks is set by the sum
of 1/width over the layers (beta), not by the widths' order or the depth alone.

`run(config)` measures ln ||h_L||^2 of `num_networks` He-initialized ReLU MLPs (zero biases)
for each width profile, against the exact theory (`initjax.theory.finite_width.
relu_log_norm_moments`) and Hanin & Rolnick's first-order 5 beta: tidy rows, a summary, a figure.
Profiles with equal beta (constant 64, alternating 48/96, 32 then 96) should spread alike.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initjax.core.errors import ConfigError
from initjax.theory import finite_width

# 16 hidden layers each; the first three share beta = 0.25.
PROFILES = {
    "constant 64": (64,) * 16,
    "alternating 48/96": (48, 96) * 8,
    "32 then 96": (32,) * 4 + (96,) * 12,
    "constant 32": (32,) * 16,
    "constant 128": (128,) * 16,
}
COLUMNS = ("profile", "depth", "beta", "num_networks", "quantity", "measured", "standard_error",
           "theory", "first_order")


@dataclasses.dataclass(frozen=True)
class SpreadConfig:
  num_networks: int = 4000
  input_dim: int = 64
  seed: int = 0
  chunk: int = 500

  def __post_init__(self):
    for name in ("num_networks", "input_dim", "chunk"):
      if getattr(self, name) < 2:
        raise ConfigError(name, f"must be an integer >= 2; got {getattr(self, name)}")


@functools.lru_cache(maxsize=16)
def _program(widths: tuple[int, ...], input_dim: int):
  def one(key):
    h = jnp.ones((input_dim,), jnp.float32)     # any x != 0: the law does not depend on it
    fan_in = input_dim
    for k, n in zip(jax.random.split(key, len(widths)), widths):
      w = jax.random.normal(k, (n, fan_in), jnp.float32) * math.sqrt(2.0 / fan_in)
      h = jax.nn.relu(w @ h)
      fan_in = n
    return jnp.log(jnp.sum(jnp.square(h))) - math.log(input_dim)
  return jax.jit(jax.vmap(one))


def log_norms(widths, input_dim: int, key: jax.Array, num_networks: int,
              chunk: int = 500) -> np.ndarray:
  """ln ||h_L||^2 - ln ||x||^2 of `num_networks` random networks (float64, -inf: dead)."""
  keys = jax.random.split(key, num_networks)
  program = _program(tuple(int(n) for n in widths), int(input_dim))
  return np.concatenate([np.asarray(program(keys[i:i + chunk]), np.float64)
                         for i in range(0, num_networks, chunk)])


def _variance_se(v: np.ndarray) -> float:
  c = v - v.mean()
  return float(math.sqrt(max(np.mean(c ** 4) - np.mean(c ** 2) ** 2, 0.0) / v.size))


def run(config: SpreadConfig) -> dict[str, Any]:
  """{"rows": tidy rows (COLUMNS), "profiles": {name: widths}, "dead": {name: count}}."""
  rows, dead = [], {}
  root = jax.random.key(config.seed)
  for i, (name, widths) in enumerate(PROFILES.items()):
    v = log_norms(widths, config.input_dim, jax.random.fold_in(root, i), config.num_networks,
                  config.chunk)
    alive = v[np.isfinite(v)]
    dead[name] = int(v.size - alive.size)
    theory = finite_width.relu_log_norm_moments(widths, config.input_dim)
    common = dict(profile=name, depth=len(widths), beta=theory.beta, num_networks=alive.size)
    rows.append(dict(common, quantity="var_log_norm", measured=float(alive.var(ddof=1)),
                     standard_error=_variance_se(alive), theory=theory.variance,
                     first_order=theory.first_order))
    rows.append(dict(common, quantity="mean_log_norm", measured=float(alive.mean()),
                     standard_error=float(alive.std(ddof=1) / math.sqrt(alive.size)),
                     theory=theory.mean, first_order=float("nan")))
  return {"rows": rows, "profiles": {k: list(v) for k, v in PROFILES.items()}, "dead": dead}


def summary(config: SpreadConfig, result: dict) -> dict[str, Any]:
  return {"config": dataclasses.asdict(config), "profiles": result["profiles"],
          "dead_networks": result["dead"],
          "var_log_norm": {r["profile"]: {k: r[k] for k in ("beta", "measured", "standard_error",
                                                            "theory", "first_order")}
                           for r in result["rows"] if r["quantity"] == "var_log_norm"}}


def plot(result: dict):
  """Var[ln ||h_L||^2] against beta: measured (with 2 standard errors), exact, 5 beta."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(5.5, 4.0))
  ax = fig.add_subplot()
  rows = [r for r in result["rows"] if r["quantity"] == "var_log_norm"]
  betas = np.linspace(0, max(r["beta"] for r in rows) * 1.1, 50)
  ax.plot(betas, 5 * betas, "k:", label="5 beta (first order)")
  for r in rows:
    ax.errorbar(r["beta"], r["measured"], yerr=2 * r["standard_error"], fmt="o", capsize=3,
                label=f"{r['profile']} (measured)")
    ax.plot(r["beta"], r["theory"], "kx")
  ax.plot([], [], "kx", label="exact theory")
  ax.set_xlabel("beta = sum of 1 / width over the layers")
  ax.set_ylabel("Var[ln ||h_L||^2] over networks")
  ax.set_title("Hanin & Rolnick 2018: the spread follows beta")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return fig
