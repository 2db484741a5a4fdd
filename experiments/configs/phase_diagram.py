"""The order-to-chaos phase diagram of trainability (`python -m experiments.phase_diagram` with
no flags; its quick variant is the --quick grid)."""
import ml_collections

EXPERIMENT = "phase_diagram"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.sigma2_w = [0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0]
  c.depths = [2, 4, 8, 16, 32, 64]
  c.sigma2_b = 0.05
  c.activation = "tanh"
  c.width = 64
  c.num_seeds = 4
  c.steps = 1000
  c.optimizer = "momentum"
  c.learning_rate = 0.01
  c.seed = 0
  if variant == "quick":
    c.sigma2_w = [0.5, 1.0, 1.75, 2.5, 4.0]
    c.depths = [4, 16, 48]
    c.num_seeds = 2
    c.steps = 500
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of phase_diagram.py; known: quick")
  return c
