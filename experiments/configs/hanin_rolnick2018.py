"""Hanin & Rolnick 2018: the spread of log ||h_L||^2 follows the sum of 1/width (five width
profiles of 16 ReLU layers, three of them with the same sum)."""
import ml_collections

EXPERIMENT = "norm_spread"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.num_networks = 4000
  c.input_dim = 64
  c.seed = 0
  if variant == "quick":
    c.num_networks = 1000
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of hanin_rolnick2018.py; known: quick")
  return c
