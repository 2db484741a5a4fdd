"""The mean-field theory of a batch-normalized MLP at initialization (Yang, Pennington, Rao,
Sohl-Dickstein & Schoenholz, ICLR 2019, "A Mean Field Theory of Batch Normalization").

The network is `initjax.nn.normalization`'s: f_k = Omega_k h_k (+ beta_k), z_k = BN(f_k) over a
batch of B examples (scale 1, shift 0 at initialization), h_{k+1} = a[z_k], with zero-mean weights
of per-fan-in variance sigma2_w = fan_in Var[Omega].

Forward: the variance is reset every layer. Per unit, the B-vector z_k of its normalized
pre-activations has batch mean 0 and batch variance 1: it lies on the sphere of radius sqrt(B)
in the (B-1)-dimensional subspace orthogonal to (1, ..., 1). At infinite width, f_{k+1} of a unit
is Gaussian over the weights with a batch covariance that is permutation symmetric, so z_{k+1}
is uniform on that sphere, already after the first layer for independent inputs (the "BSB1"
fixed point of the paper). Var[h_k] is then E[a(z)^2] - E[a(z)]^2 with z uniform on the sphere,
whatever sigma2_w (-> z ~ N(0, 1) as B -> infinity).

Backward (under the gradient-independence assumption, which the paper checks holds): with
u_k = dl/dh_k (a B-vector per unit), A = diag(a'(z)) and P_z = I - 11^T/B - zz^T/B (the
derivative of the normalization times the unit's batch std sigma),

    dl/dh_k = Omega_k^T (1/sigma) P_z A dl/dh_{k+1}.

At infinite width a unit's f is Gaussian over the batch with a permutation-symmetric covariance
sigma2_w (alpha I + beta 11^T): its direction z and its batch variance sigma^2 = sigma2_w alpha
chi2_{B-1} / B are independent, so E[1/sigma^2] = B / (sigma2_w alpha (B - 3)), with
alpha = v B / (B - 1), v = E[batch variance of a(z)]; sigma2_w cancels, and

    E[u_k u_k^T] = (B - 1) / ((B - 3) v) E_z[P_z A E[u_{k+1} u_{k+1}^T] A P_z].

The covariance is mapped onto multiples of C = I - 11^T/B (P_z removes the batch mean;
permutation symmetry does the rest), so the gradient variance grows by

    lambda(B) = E_z[tr(P_z A C A)] / ((B - 3) v)          per layer, towards the input (B > 3)

    tr(P_z A C A) = (1 - 1/B) S2 - (S2 - S1^2/B)/B - (Z2 - Z1^2/B)/B,
    S1 = sum_b a'(z_b), S2 = sum_b a'(z_b)^2, Z1 = sum_b z_b a'(z_b), Z2 = sum_b z_b^2 a'(z_b)^2,

estimated by Monte Carlo over z on the sphere (`growth_factor(activation, B)`). For B <= 3
E[1/sigma^2] diverges (the chi-square of B - 1 <= 2 degrees of freedom has mass near 0): no
finite factor; ValueError. Small batches explode faster (ReLU: 1.79 per layer at B = 8).
As B -> infinity, lambda -> E[a'(z)^2] / Var[a(z)], z ~ N(0, 1) (Gaussian quadrature): ReLU's is
(1/2) / (1/2 - 1/(2 pi)) = pi / (pi - 1) = 1.467, the paper's closed form, 0.166 decades of
variance per layer, whatever the initialization; tanh's is E[tanh'(z)^2] / E[tanh(z)^2] = 1.178
(0.071 decades). The normalization fixes the forward scale at q = 1, where the activation's
gain E[a'^2] / Var[a] is what it is: sigma2_w no longer sets it. For ReLU the batch centring
removes the mean of a(z) from sigma^2 (Var, not E[a^2]); layer normalization keeps it,
lambda_LN = E[a'^2] / E[a^2] (`layernorm_growth_factor`): exactly 1 for ReLU.

The least-squares probe against y = 0 starts the backward pass at Var[dl/dh_K] =
4 D_out sigma2_out^2 E[h_K^2] / D_h; its first step back is treated as any other (the top
layer's gradient covariance is not yet of the form C, a small offset of the line's level).
`eps` of the normalization is neglected (relative 1e-5 / (sigma2_w v)).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from initjax.nn import activations
from initjax.nn.gaussian_expectations import gaussian_expectation

MC_VALUES = 4_000_000   # sphere samples x B: standard error of lambda ~ 1e-3 relative


def sphere_batch(batch_size: int, num_samples: int, seed: int = 0) -> np.ndarray:
  """(num_samples, B) vectors uniform on the sphere of radius sqrt(B) in the subspace of zero
  batch mean: what batch normalization makes of every unit at the fixed point."""
  if batch_size < 2:
    raise ValueError(f"batch normalization needs a batch of at least 2; got {batch_size}")
  z = np.random.default_rng(seed).standard_normal((num_samples, batch_size))
  z -= z.mean(axis=1, keepdims=True)
  return z * np.sqrt(batch_size) / np.linalg.norm(z, axis=1, keepdims=True)


def _fns(activation: str):
  record = activations.get(activation)
  return record.np_fn, record.np_derivative


@functools.lru_cache(maxsize=64)
def batch_moments(activation: str, batch_size: int | None,
                  num_samples: int | None = None, seed: int = 0) -> dict[str, float]:
  """{"var_h": Var[h] pooled over units and examples, "v": E[batch variance of a(z)],
  "second_moment": E[h^2], "growth": lambda(B)} at the fixed point; batch_size None: B -> inf.
  Monte Carlo over `num_samples` sphere points (default MC_VALUES / B, at least 20,000), with a
  fixed seed: the same numbers every call."""
  fn, dfn = _fns(activation)
  if batch_size is None:
    m1 = gaussian_expectation(fn, 1.0)
    m2 = gaussian_expectation(lambda z: fn(z) ** 2, 1.0)
    d2 = gaussian_expectation(lambda z: dfn(z) ** 2, 1.0)
    return {"var_h": m2 - m1 ** 2, "v": m2 - m1 ** 2, "second_moment": m2,
            "growth": d2 / (m2 - m1 ** 2)}
  b = int(batch_size)
  if b <= 3:
    raise ValueError(f"the mean-field gradient growth of batchnorm is infinite for a batch of "
                     f"{b} <= 3 (E[1/sigma^2] of a unit's batch variance diverges)")
  z = sphere_batch(b, num_samples or max(MC_VALUES // b, 20_000), seed)
  h, d = fn(z), dfn(z)
  m1, m2 = h.mean(), (h ** 2).mean()
  v = np.mean(np.var(h, axis=1))
  s1, s2 = d.sum(1), (d ** 2).sum(1)
  z1, z2 = (z * d).sum(1), (z ** 2 * d ** 2).sum(1)
  tr = (1 - 1 / b) * s2 - (s2 - s1 ** 2 / b) / b - (z2 - z1 ** 2 / b) / b
  return {"var_h": float(m2 - m1 ** 2), "v": float(v), "second_moment": float(m2),
          "growth": float(tr.mean() / ((b - 3) * v))}


def growth_factor(activation: str = "relu", batch_size: int | None = None,
                  num_samples: int | None = None, seed: int = 0) -> float:
  """lambda(B): the factor by which Var[dl/dh_k] grows per layer towards the input in a
  batch-normalized MLP at initialization (None: the large-batch limit)."""
  return batch_moments(activation, batch_size, num_samples, seed)["growth"]


def relu_growth_limit() -> float:
  """The paper's closed form for ReLU as B -> infinity: pi / (pi - 1)."""
  return math.pi / (math.pi - 1)


def layernorm_growth_factor(activation: str = "relu") -> float:
  """The same factor under layer normalization (wide layers): E[a'(z)^2] / E[a(z)^2]."""
  fn, dfn = _fns(activation)
  return (gaussian_expectation(lambda z: dfn(z) ** 2, 1.0)
          / gaussian_expectation(lambda z: fn(z) ** 2, 1.0))


def layernorm_moments(activation: str) -> dict[str, float]:
  """Var[h] and E[h^2] of a layer-normalized MLP at initialization (z ~ N(0, 1) per unit)."""
  fn, _ = _fns(activation)
  m1 = gaussian_expectation(fn, 1.0)
  m2 = gaussian_expectation(lambda z: fn(z) ** 2, 1.0)
  return {"var_h": m2 - m1 ** 2, "second_moment": m2, "growth": layernorm_growth_factor(activation)}


def predict_normalized_mlp(*, width: int, depth: int, output_dim: int, sigma2_out: float,
                           activation: str = "relu", norm: str = "batchnorm",
                           batch_size: int | None = None) -> dict[str, np.ndarray]:
  """log10 Var[h_k] and log10 Var[dl/dh_k], k = 1..K, of a normalized MLP at initialization
  (least squares against y = 0, zero biases): Var[h_k] constant, Var[dl/dh_k] =
  Var[dl/dh_K] lambda^(K - k). `sigma2_out`: the output layer's per-fan-in weight variance (the
  hidden layers' cancels)."""
  if norm == "batchnorm":
    m = batch_moments(activation, batch_size)
  elif norm == "layernorm":
    m = layernorm_moments(activation)
  else:
    raise ValueError(f"predict_normalized_mlp: norm must be batchnorm or layernorm; got {norm!r}")
  k = np.arange(1, depth + 1)
  top = 4.0 * output_dim * sigma2_out ** 2 * m["second_moment"] / width
  return {"var_h": np.full(depth, np.log10(m["var_h"])),
          "var_dl_dh": np.log10(top) + (depth - k) * np.log10(m["growth"])}
