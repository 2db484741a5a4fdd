"""Models written the way the Flax examples write them, shared by the tests that take a user's
model (the parametrization classifier, the coordinate check, learning-rate transfer)."""
import flax.linen as nn


class MLP(nn.Module):
  """Two hidden Dense layers of `width` units and a 10-way readout."""
  width: int

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.width)(x))
    x = nn.relu(nn.Dense(self.width)(x))
    return nn.Dense(10)(x)
