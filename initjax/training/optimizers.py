"""Optimizers by name, as optax GradientTransformations.

The learning rate may be a Python float or a traced JAX scalar, so that a training loop can
vmap over learning rates (one compiled program for every learning rate). A concrete learning
rate must be a finite number > 0; a traced one cannot be checked here (the caller validates).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import optax

from initjax.core.errors import check_choice

MOMENTUM = 0.9

_OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=MOMENTUM),
    "nesterov": lambda lr: optax.sgd(lr, momentum=MOMENTUM, nesterov=True),
    "adam": optax.adam,
    "adamw": optax.adamw,
    "rmsprop": optax.rmsprop,
    "adagrad": optax.adagrad,
    "lamb": optax.lamb,
}

# Learning rates that train a ReLU MLP on MNIST-1D from a He init; the sweep uses them for
# every optimizer the user does not give a learning rate for.
DEFAULT_LEARNING_RATES: dict[str, float] = {
    "sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adam": 1e-3, "adamw": 1e-3,
    "rmsprop": 1e-3, "adagrad": 1e-2, "lamb": 1e-3,
}


def optimizer_names() -> list[str]:
  return list(_OPTIMIZERS)


def check_optimizer(name: str) -> str:
  return check_choice("optimizer", name, optimizer_names())


def get_optimizer(name: str, learning_rate) -> optax.GradientTransformation:
  """The optax optimizer `name` with `learning_rate`.

  Names: sgd (plain), momentum (heavy ball, 0.9), nesterov (0.9), adam, adamw, rmsprop,
  adagrad, lamb, all with optax's default hyperparameters otherwise.

  Raises:
    ValueError: for an unknown name (listing the valid ones) or a concrete learning rate that is
      not a finite number > 0.
  """
  check_optimizer(name)
  if not isinstance(learning_rate, jax.core.Tracer):
    try:
      lr = float(learning_rate)
    except (TypeError, ValueError):
      raise ValueError(f"learning_rate must be a number; got {learning_rate!r}") from None
    if not (math.isfinite(lr) and lr > 0):
      raise ValueError(f"learning_rate must be a finite number > 0; got {learning_rate!r}")
  return _OPTIMIZERS[name](learning_rate)
