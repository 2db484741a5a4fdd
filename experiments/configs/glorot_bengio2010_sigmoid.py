"""Glorot & Bengio 2010, Figure 2: in a deep sigmoid MLP under the standard init
U[-1/sqrt(n), 1/sqrt(n)] the top hidden layer saturates at 0 early in training (and recovers
slowly); the normalized init for comparison (MNIST-1D, 5 hidden layers; their widths were 1000,
256 here).

Glorot & Bengio tuned the learning rate per setting. At 0.01 (the Table 1 setting) the top
layer's mean activation only falls from 0.50 to 0.35 in 2000 steps (measured, README); at 0.1 it
saturates (0.14 at step 100) and the loss stays at ln 10."""
from experiments.configs import glorot_bengio2010_tanh

EXPERIMENT = "saturation"


def get_config(variant: str = ""):
  if variant not in ("", "quick"):
    raise ValueError(f"unknown variant {variant!r} of glorot_bengio2010_sigmoid.py; known: "
                     "quick")
  c = glorot_bengio2010_tanh.get_config(variant)
  c.activations = ["sigmoid"]
  c.learning_rate = 0.1
  if variant == "quick":   # 300 steps at width 64 reach 0.15 (measured): not yet saturated
    c.steps = 1000
  return c
