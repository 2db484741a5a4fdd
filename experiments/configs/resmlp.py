"""The residual MLP's signal propagation (50 pre-activation blocks of 100 ReLU units, He and
Xavier, branch scale 1): every He block doubles the variance, forward and backward."""
import ml_collections

EXPERIMENT = "propagation"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.arch = "resmlp"
  c.branch_scale = "one"
  c.sigma2 = []
  c.inits = ["he_normal", "xavier_normal"]
  c.depth = 50
  c.width = 100
  c.input_dim = 100
  c.num_seeds = 200
  if variant == "quick":
    c.num_seeds = 50
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of resmlp.py; known: quick")
  return c
