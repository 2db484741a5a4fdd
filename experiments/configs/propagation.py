"""The book's weight-initialization figure (`python -m experiments.propagation` with no flags):
50 hidden ReLU layers of 100 units, sigma2_Omega in {0.001, 0.01, 0.02, 0.1, 1}, He and Xavier,
200 networks per setting."""
import ml_collections

EXPERIMENT = "propagation"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.arch = "mlp"
  c.sigma2 = [0.001, 0.01, 0.02, 0.1, 1.0]
  c.inits = ["he_normal", "xavier_normal"]
  c.depth = 50
  c.width = 100
  c.input_dim = 100
  c.activation = "relu"
  c.bias_variance = 0.0
  c.num_seeds = 200
  c.batch_size = 100
  c.seed = 0
  if variant == "quick":
    c.num_seeds = 50
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of propagation.py; known: quick")
  return c
