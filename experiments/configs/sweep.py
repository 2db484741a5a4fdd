"""The default He vs Xavier sweep (`python -m experiments.sweep` with no flags)."""
import ml_collections

EXPERIMENT = "sweep"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.inits = ["he_normal", "xavier_normal"]
  c.archs = ["mlp"]
  c.depths = [10, 30]
  c.widths = [100]
  c.activations = ["relu"]
  c.optimizers = ["momentum", "adam"]
  c.learning_rates = ["momentum:0.01", "adam:0.001"]
  c.num_seeds = 8
  c.steps = 1000
  c.batch_size = 100
  c.dataset = "mnist1d"
  c.seed = 0
  c.log_every = 10
  c.eval_every = 100
  c.stats_every = 250
  c.stats_batch_size = 256
  c.loss_threshold = 1.5
  c.bias_variance = 0.0
  if variant == "quick":
    c.depths = [10]
    c.optimizers = ["momentum"]
    c.learning_rates = ["momentum:0.01"]
    c.num_seeds = 2
    c.steps = 200
    c.stats_every = 100
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of sweep.py; known: quick")
  return c
