"""He et al. 2015, Figure 3: a 30-layer ReLU network trains from He's initialization and stalls
from Xavier's (SGD with momentum, MNIST-1D in place of ImageNet)."""
import ml_collections

EXPERIMENT = "sweep"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.inits = ["he_normal", "xavier_normal"]
  c.archs = ["mlp"]
  c.depths = [30]
  c.widths = [100]
  c.activations = ["relu"]
  c.optimizers = ["momentum"]
  c.learning_rates = ["momentum:0.01"]
  c.num_seeds = 8
  c.steps = 1000
  c.eval_every = 100
  c.stats_every = 250
  c.loss_threshold = 1.5
  if variant == "quick":
    c.num_seeds = 4
    c.steps = 400
    c.stats_every = 200
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of he2015_fig3.py; known: quick")
  return c
