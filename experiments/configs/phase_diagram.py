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
  c.learning_rates = []   # candidates of a per-sigma2_w learning-rate search (empty: none)
  c.tune_depth = 0        # depth of that search (0: the shallowest)
  c.seed = 0
  if variant == "quick":
    c.sigma2_w = [0.5, 1.0, 1.75, 2.5, 4.0]
    c.depths = [4, 16, 48]
    c.num_seeds = 2
    c.steps = 500
  elif variant in ("both_sides", "both_sides_quick"):
    # Schoenholz et al.'s envelope tested on both sides of the critical point (1.761): a
    # learning rate searched per sigma2_w, 3x the steps, depths to 128. The search runs at
    # depth 32: at the shallowest depth (4) every column picked the same rate, 0.03 (measured,
    # README), a rate that says nothing about the deep networks.
    c.sigma2_w = [0.5, 1.0, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0]
    c.depths = [4, 8, 16, 32, 48, 64, 96, 128]
    c.num_seeds = 2
    c.steps = 3000
    c.learning_rates = [0.001, 0.003, 0.01, 0.03]
    c.tune_depth = 32
    if variant == "both_sides_quick":
      c.sigma2_w = [1.0, 4.0]
      c.depths = [4, 16, 48]
      c.steps = 500
      c.learning_rates = [0.003, 0.03]
      c.tune_depth = 16
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of phase_diagram.py; known: quick, "
                     "both_sides, both_sides_quick")
  return c
