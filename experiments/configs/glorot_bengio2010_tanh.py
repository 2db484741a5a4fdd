"""Glorot & Bengio 2010, Figures 6 and 7: with 5 hidden tanh layers the standard init
U[-1/sqrt(n), 1/sqrt(n)] shrinks the activations towards the output and the back-propagated
gradients towards the input; the normalized init does not; the weight gradients stay about the
same across layers under either (MNIST-1D; their widths were 1000, 256 here)."""
import ml_collections

EXPERIMENT = "saturation"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.activations = ["tanh"]
  c.inits = ["he_uniform:gain=0.5773502691896258", "xavier_uniform"]
  c.depth = 5
  c.width = 256
  c.num_seeds = 4
  c.steps = 2000
  c.stats_every = 100
  c.learning_rate = 0.01
  c.optimizer = "momentum"
  if variant == "quick":
    c.width = 64
    c.num_seeds = 2
    c.steps = 300
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of glorot_bengio2010_tanh.py; known: quick")
  return c
