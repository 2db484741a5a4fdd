"""Glorot & Bengio 2010, Table 1 (5 hidden layers of tanh units): the "standard" initialization
U[-1/sqrt(n), 1/sqrt(n)] (Var = 1/(3 fan_in): he_uniform with gain 1/sqrt(3), PyTorch's
nn.Linear default) against their normalized one (xavier_uniform), SGD with momentum on MNIST-1D.
Their widths were 1000; 256 here."""
import ml_collections

EXPERIMENT = "sweep"
STANDARD = "he_uniform:gain=0.5773502691896258"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.inits = [STANDARD, "xavier_uniform"]
  c.archs = ["mlp"]
  c.depths = [5]
  c.widths = [256]
  c.activations = ["tanh"]
  c.optimizers = ["momentum"]
  c.learning_rates = ["momentum:0.01"]
  c.num_seeds = 8
  c.steps = 2000
  c.eval_every = 250
  c.stats_every = 500
  c.loss_threshold = 1.5
  if variant == "quick":
    c.widths = [64]
    c.num_seeds = 4
    c.steps = 400
    c.eval_every = 100
    c.stats_every = 200
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of glorot_bengio2010.py; known: quick")
  return c
