"""initjax.nn: networks and initializers, pure functions on plain pytrees.

Modules:
  activations            one record per activation: a[.], a'[.], NumPy twins, gain, moments
  gaussian_expectations  Gaussian expectations by quadrature that stays accurate at kinks (the
                         activations' gains and moments, and all of the theory, use it)
  fans, initializers     He/Xavier/LeCun/orthogonal/normal initializers in the
                         `jax.nn.initializers` protocol, gains, the registry; fans as JAX computes
  networks               the book's MLP: `init_mlp`, `apply_mlp`, `trace_mlp` (`lax.scan`)
  residual               a residual MLP of pre-activation blocks
  convolutional          a 1-D CNN (im2col convolutions)
  gradients              per-layer gradients from `jax.grad`, and the book's backprop by hand
  models                 a network as pure functions (`Model`) for training: the MLP,
                         `from_flax` (linen), `nnx_networks`, `from_functions`

nn imports only `initjax.core` (README, "Layout"); each network's theory is in `initjax.theory`.
"""
