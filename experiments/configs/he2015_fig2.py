"""He et al. 2015, Figure 2: a 22-layer ReLU network converges from both initializations, He's
reducing the error earlier (SGD with momentum, MNIST-1D in place of ImageNet)."""
import ml_collections

from experiments.configs import he2015_fig3

EXPERIMENT = "sweep"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = he2015_fig3.get_config(variant)
  c.depths = [22]
  return c
