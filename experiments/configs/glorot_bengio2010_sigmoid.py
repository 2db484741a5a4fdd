"""Glorot & Bengio 2010, Figure 2: in a deep sigmoid MLP under the standard init
U[-1/sqrt(n), 1/sqrt(n)] the top hidden layer saturates at 0 early in training (and recovers
slowly); the normalized init for comparison (MNIST-1D, 5 hidden layers; their widths were 1000,
256 here).

Glorot & Bengio tuned the learning rate per setting. At 0.01 (the Table 1 setting) the top
layer's mean activation only falls from 0.50 to 0.35 in 2000 steps (measured, README); at 0.1 it
saturates (0.14 at step 100) and the loss stays at ln 10."""
import ml_collections

EXPERIMENT = "saturation"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.activations = ["sigmoid"]
  c.inits = ["he_uniform:gain=0.5773502691896258", "xavier_uniform"]
  c.depth = 5
  c.width = 256
  c.num_seeds = 4
  c.steps = 2000
  c.stats_every = 100
  c.learning_rate = 0.1
  c.optimizer = "momentum"
  if variant == "quick":
    c.width = 64
    c.num_seeds = 2
    c.steps = 300
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of glorot_bengio2010_sigmoid.py; known: "
                     "quick")
  return c
