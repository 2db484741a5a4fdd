"""Activation functions a[.] by name, with their derivatives a'[.].

The names are the ones accepted everywhere in initjax (networks, theory, propagation, flags).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LEAKY_RELU_SLOPE = 0.01  # torch.nn.LeakyReLU / jax.nn.leaky_relu default


def _leaky_relu(f):
  return jnp.where(f > 0, f, LEAKY_RELU_SLOPE * f)


def _leaky_relu_grad(f):
  return jnp.where(f > 0, 1.0, LEAKY_RELU_SLOPE).astype(f.dtype)


def _softsign(f):
  return f / (1.0 + jnp.abs(f))


def _gelu(f):
  return jax.nn.gelu(f, approximate=False)


ACTIVATIONS: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "leaky_relu": _leaky_relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softsign": _softsign,
    "gelu": _gelu,
    "selu": jax.nn.selu,
    "identity": lambda f: f,
}

# Closed-form derivatives where the autodiff one is ambiguous at 0 (ReLU: a'(0) = 0, as the
# book's indicator I[f > 0]).
_DERIVATIVES: dict[str, Callable] = {
    "relu": lambda f: (f > 0).astype(f.dtype),
    "leaky_relu": _leaky_relu_grad,
    "identity": jnp.ones_like,
}

# a[c f] = c a[f] for c > 0: with zero biases the whole network is positively homogeneous,
# which the propagation module uses to renormalize exactly in log space.
POSITIVELY_HOMOGENEOUS = frozenset({"relu", "leaky_relu", "identity"})


def activation_names() -> list[str]:
  return sorted(ACTIVATIONS)


def check_activation(name: str) -> str:
  if name not in ACTIVATIONS:
    raise ValueError(
        f"Unknown activation {name!r}; valid choices: {', '.join(activation_names())}")
  return name


def get_activation(name: str) -> Callable:
  """Returns a[.] for `name` (elementwise)."""
  return ACTIVATIONS[check_activation(name)]


def get_activation_derivative(name: str) -> Callable:
  """Returns a'[.] for `name` (elementwise), I[f > 0] for ReLU as in the book."""
  check_activation(name)
  if name in _DERIVATIVES:
    return _DERIVATIVES[name]
  fn = ACTIVATIONS[name]
  return jnp.vectorize(jax.grad(fn))
