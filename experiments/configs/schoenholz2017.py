"""Schoenholz et al. 2017: the trainable depth follows 6 xi_c on both sides of the order-to-chaos
transition (tanh, sigma_b^2 = 0.05, MNIST-1D): the phase diagram with a learning rate searched
per sigma_w^2 (`phase_diagram.py:both_sides`; quick: `both_sides_quick`)."""
from experiments.configs import phase_diagram

EXPERIMENT = "phase_diagram"


def get_config(variant: str = ""):
  if variant not in ("", "quick"):
    raise ValueError(f"unknown variant {variant!r} of schoenholz2017.py; known: quick")
  return phase_diagram.get_config("both_sides_quick" if variant == "quick" else "both_sides")
