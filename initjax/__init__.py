"""initjax: weight initialization in JAX, from the He/Xavier derivations to measured sweeps.

Modules (import what you need; nothing here holds state; the README's "Layout" lists all):
  initjax.activations   one record per activation: a[.], a'[.], gain, closed-form moments
  initjax.initializers  jax.nn.initializers-style factories and a registry (get_initializer)
  initjax.networks      pure-function MLPs in the book's notation (init_mlp, apply_mlp, trace_mlp)
  initjax.gradients     per-layer gradients from jax.grad and the book's hand-written backprop
  initjax.theory        variance predictions per layer, He/Xavier conditions, edge of chaos
  initjax.propagation   per-layer statistics of thousands of random networks, exact in log space
  initjax.training      a vmapped, jit-compiled Optax training loop
  initjax.parallel      one way to spread networks or seeds over the local devices
  initjax.sweep         training sweeps: config, grid, groups, point store, tasks, report
"""
from initjax.activations import activation_names, get_activation
from initjax.initializers import (INITIALIZERS, compute_fans, expected_variance, gain,
                                  get_initializer, initializer_names)
from initjax.networks import apply_mlp, init_mlp, least_squares_loss, trace_mlp
from initjax.gradients import backprop_reference, layer_gradients

__version__ = "0.1.0"

__all__ = [
    "INITIALIZERS", "activation_names", "apply_mlp", "backprop_reference", "compute_fans",
    "expected_variance", "gain", "get_activation", "get_initializer", "init_mlp",
    "initializer_names", "layer_gradients", "least_squares_loss", "trace_mlp",
]
