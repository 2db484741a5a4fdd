"""The 1-D CNN's signal propagation (30 circular convolutions of kernel 5 over 32 channels on
length-40 inputs, the shape of MNIST-1D; He and Xavier)."""
import ml_collections

EXPERIMENT = "propagation"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.arch = "cnn"
  c.padding = "circular"
  c.kernel_size = 5
  c.sigma2 = []
  c.inits = ["he_normal", "xavier_normal"]
  c.depth = 30
  c.width = 32
  c.input_dim = 40
  c.num_seeds = 100
  if variant == "quick":
    c.num_seeds = 32
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of cnn.py; known: quick")
  return c
