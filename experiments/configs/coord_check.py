"""The coordinate check of Tensor Programs V (Yang et al. 2022, Fig. 5) at MNIST-1D scale: a
ReLU MLP with 3 hidden layers, widths 64..2048, 4 Adam steps at lr 0.01: under sp the hidden
and output layers' activations grow with width after the first step, under mup they stay flat.

    python -m experiments.coord_check --config=experiments/configs/coord_check.py
"""
import ml_collections

EXPERIMENT = "coord_check"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.widths = [64, 128, 256, 512, 1024, 2048]
  c.parametrizations = ["sp", "mup"]
  c.optimizer = "adam"
  c.learning_rate = 0.01
  c.steps = 4
  c.num_seeds = 4
  c.depth = 3
  if variant == "quick":
    c.widths = [32, 64, 128, 256]
    c.num_seeds = 2
    c.steps = 2
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of coord_check.py; known: quick")
  return c
