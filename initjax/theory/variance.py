"""The slides' derivation as code: per-layer variance predictions for random MLPs.

For f' = beta + Omega h with zero-mean weights of variance sigma2_Omega, independent of h, and
zero-mean biases of variance sigma2_beta (slides: "Initialization", He derivation):

    E[f'_i] = 0
    sigma2_f' = sigma2_beta + sigma2_Omega * sum_j E[h_j^2]
              = sigma2_beta + D_h sigma2_Omega E[a[f]^2],          f ~ N(0, sigma2_f)
    ReLU:       E[ReLU[f]^2] = sigma2_f / 2   =>   sigma2_f' = D_h sigma2_Omega sigma2_f / 2

so He initialization sigma2_Omega = 2 / D_h keeps the forward variance constant. Backwards
(the backprop summary) with the gradient-independence assumption:

    E[(dl/dh_k)^2]     = D_{f_k} sigma2_Omega_k E[(dl/df_k)^2]       (dl/dh_k = Omega_k^T dl/df_k)
    E[(dl/df_{k-1})^2] = E[a'[f_{k-1}]^2] E[(dl/dh_k)^2]              (ReLU: E[I[f > 0]] = 1/2)

and the per-example weight gradient dl/dOmega_k = dl/df_k h_k^T has mean square
E[(dl/df_k)^2] E[h_k^2]. The least-squares loss l = sum (f_K - y)^2 starts the backward pass
with dl/df_K = 2 (f_K - y).

All predictions are returned as log10 values computed in float64, so they stay exact where the
variances themselves would overflow (about 1e170 for sigma2_Omega = 1 after 50 layers).
Expectations over a Gaussian pre-activation are closed form for ReLU, leaky ReLU and identity,
and quadrature (`initjax.gaussian_expectations`) for every other activation. Every `activation`
argument is a registered name, an `initjax.activations.Activation` or a JAX-traceable callable.

The mean-field theory of deep random networks (the q- and c-maps, their fixed points from the
actual input, chi_1, chi_c, the depth scales xi_q, xi_c, the phases and the critical line) is in
`initjax.mean_field` and `initjax.theory.phases`; the spread of one finite-width
network around these predictions is in `initjax.finite_width`. `initjax.theory` exports
all of them.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from initjax.nn import activations
from initjax.nn.gaussian_expectations import gaussian_expectation

_LOG10_2 = math.log10(2.0)


def activation_moments(activation: activations.ActivationLike, variance: float) -> dict[str, float]:
  """Moments of h = a[f] and a'[f] for f ~ N(0, variance).

  Returns {"mean_h": E[a[f]], "second_moment_h": E[a[f]^2], "var_h": Var[a[f]],
  "second_moment_da": E[a'[f]^2]}. ReLU: E[h^2] = variance / 2, E[h] = sqrt(variance / (2 pi)),
  E[a'^2] = 1/2 (closed form; likewise leaky ReLU and identity), others by quadrature.
  """
  record = activations.get(activation)
  closed = record.gaussian_moments(variance)
  if closed is not None:
    return closed
  a, da = record.np_fn, record.np_derivative
  mean_h = gaussian_expectation(a, variance)
  m2 = gaussian_expectation(lambda f: a(f) ** 2, variance)
  return {"mean_h": mean_h, "second_moment_h": m2, "var_h": max(m2 - mean_h ** 2, 0.0),
          "second_moment_da": gaussian_expectation(lambda f: da(f) ** 2, variance)}


# ------------------------------------------------------------------------------------------------
# One layer, as on the slides.

def preactivation_mean() -> float:
  """E[f'_i] = E[beta_i] + sum_j E[Omega_ij] E[h_j] = 0 for zero-mean weights and biases."""
  return 0.0


def preactivation_variance(sigma2_omega: float, second_moments_h: Sequence[float] | float,
                           fan_in: int | None = None, sigma2_beta: float = 0.0) -> float:
  """sigma2_f' = sigma2_beta + sigma2_Omega * sum_j E[h_j^2].

  `second_moments_h` is either the list of E[h_j^2] over the D_h inputs, or one value shared by
  all `fan_in` of them.
  """
  if np.ndim(second_moments_h) == 0:
    if fan_in is None:
      raise ValueError("fan_in is required when one second moment is given for all inputs")
    total = fan_in * float(second_moments_h)
  else:
    total = float(np.sum(second_moments_h))
  return sigma2_beta + sigma2_omega * total


def relu_next_variance(sigma2_f: float, width: int, sigma2_omega: float) -> float:
  """sigma2_f' = D_h sigma2_Omega sigma2_f / 2 (ReLU, zero bias)."""
  return width * sigma2_omega * sigma2_f / 2.0


# ------------------------------------------------------------------------------------------------
# Initialization conditions.

def he_forward_variance(fan_in: int, negative_slope: float = 0.0) -> float:
  """He forward condition (He et al. eq. 10): 1/2 (1 + a^2) n_l Var[w] = 1."""
  return 2.0 / ((1.0 + negative_slope ** 2) * fan_in)


def he_backward_variance(fan_out: int, negative_slope: float = 0.0) -> float:
  """He backward condition (eq. 14): 1/2 (1 + a^2) n^_l Var[w] = 1, n^_l = units of layer k+1."""
  return 2.0 / ((1.0 + negative_slope ** 2) * fan_out)


def xavier_forward_variance(fan_in: int) -> float:
  """Glorot & Bengio forward condition n_in Var[W] = 1 (LeCun; Caffe's "xavier")."""
  return 1.0 / fan_in


def xavier_variance(fan_in: int, fan_out: int) -> float:
  """Glorot & Bengio compromise Var[W] = 2 / (n_in + n_out)."""
  return 2.0 / (fan_in + fan_out)


# ------------------------------------------------------------------------------------------------
# Whole-network predictions.

@dataclasses.dataclass(frozen=True)
class MLPPrediction:
  """Predicted per-layer log10 variances of an MLP at initialization (float64).

  Layer indices follow the book: f_0..f_K (K+1 values, f_K the output), h_1..h_K (K values),
  Omega_0..Omega_K (K+1 values).
  """
  log10_var_f: np.ndarray         # Var[f_k], k = 0..K
  log10_var_h: np.ndarray         # Var[h_k] = E[h^2] - E[h]^2, k = 1..K
  log10_second_moment_h: np.ndarray  # E[h_k^2], k = 1..K
  log10_var_dl_df: np.ndarray     # E[(dl/df_k)^2], k = 0..K
  log10_var_dl_dh: np.ndarray     # E[(dl/dh_k)^2], k = 1..K
  log10_var_dl_domega: np.ndarray  # mean square of per-example dl/dOmega_k, k = 0..K

  def as_dict(self) -> dict[str, np.ndarray]:
    return {"var_f": self.log10_var_f, "var_h": self.log10_var_h,
            "var_dl_df": self.log10_var_dl_df, "var_dl_dh": self.log10_var_dl_dh,
            "var_dl_domega": self.log10_var_dl_domega}


def _per_layer(value: float | Sequence[float], n: int, name: str) -> np.ndarray:
  arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()
  if np.any(arr < 0):
    raise ValueError(f"{name} must be >= 0; got {value}")
  return arr


def _log10(x: float) -> float:
  return math.log10(x) if x > 0 else -math.inf


def predict_mlp(*, input_dim: int, width: int, depth: int, output_dim: int = 1,
                sigma2_omega: float | Sequence[float], sigma2_beta: float | Sequence[float] = 0.0,
                activation: activations.ActivationLike = "relu",
                input_second_moment: float = 1.0,
                target_second_moment: float = 0.0) -> MLPPrediction:
  """Per-layer forward and backward variance predictions for an MLP at initialization.

  Args:
    input_dim, width, depth, output_dim: D_in, D_h, K hidden layers, D_out.
    sigma2_omega: weight variance, one value or K+1 values (Omega_0..Omega_K).
    sigma2_beta: bias variance, one value or K+1 values.
    activation: a registered name, an `Activation` or a JAX-traceable callable.
    input_second_moment: E[x_j^2] (1 for a standard normal input).
    target_second_moment: E[y^2] of the least-squares target (0 in the book's experiment).

  Returns:
    An `MLPPrediction`. Homogeneous activations (ReLU, leaky ReLU, identity) with zero bias are
    propagated in log space, so nothing overflows at any depth.
  """
  record = activations.get(activation)
  if depth < 1 or width < 1 or input_dim < 1 or output_dim < 1:
    raise ValueError("input_dim, width, depth and output_dim must be >= 1")
  s2w = _per_layer(sigma2_omega, depth + 1, "sigma2_omega")
  s2b = _per_layer(sigma2_beta, depth + 1, "sigma2_beta")
  fan_in = np.array([input_dim] + [width] * depth, dtype=np.float64)
  fan_out = np.array([width] * depth + [output_dim], dtype=np.float64)
  homogeneous = record.positively_homogeneous and not np.any(s2b > 0)
  unit = record.gaussian_moments(1.0)  # moments per unit of variance (homogeneous case)

  log_f = np.empty(depth + 1)
  log_h = np.empty(depth)
  log_m2h = np.empty(depth)
  log_da2 = np.empty(depth)
  log_f[0] = _log10(s2b[0] + s2w[0] * input_dim * input_second_moment)
  for k in range(1, depth + 1):
    if homogeneous:
      log_m2h[k - 1] = log_f[k - 1] + math.log10(unit["second_moment_h"])
      log_h[k - 1] = log_f[k - 1] + math.log10(unit["var_h"])
      log_da2[k - 1] = math.log10(unit["second_moment_da"])
      log_f[k] = _log10(s2w[k] * fan_in[k]) + log_m2h[k - 1]
    else:
      var_prev = 10.0 ** log_f[k - 1]
      m = activation_moments(activation, var_prev)
      log_m2h[k - 1] = _log10(m["second_moment_h"])
      log_h[k - 1] = _log10(m["var_h"])
      log_da2[k - 1] = _log10(m["second_moment_da"])
      log_f[k] = _log10(s2b[k] + s2w[k] * fan_in[k] * m["second_moment_h"])

  # Backward: dl/df_K = 2 (f_K - y), so E[(dl/df_K)^2] = 4 (Var[f_K] + E[y^2]).
  log_df = np.empty(depth + 1)
  log_dh = np.empty(depth)
  if target_second_moment > 0:
    log_df[depth] = 2 * _LOG10_2 + _log10(10.0 ** log_f[depth] + target_second_moment)
  else:
    log_df[depth] = 2 * _LOG10_2 + log_f[depth]
  for k in range(depth, 0, -1):
    log_dh[k - 1] = _log10(fan_out[k] * s2w[k]) + log_df[k]
    log_df[k - 1] = log_da2[k - 1] + log_dh[k - 1]
  log_m2_inputs = np.concatenate([[_log10(input_second_moment)], log_m2h])
  log_domega = log_df + log_m2_inputs
  return MLPPrediction(log10_var_f=log_f, log10_var_h=log_h, log10_second_moment_h=log_m2h,
                       log10_var_dl_df=log_df, log10_var_dl_dh=log_dh,
                       log10_var_dl_domega=log_domega)


def decades_per_layer(activation: activations.ActivationLike, width: int, sigma2_omega: float,
                      sigma2_beta: float = 0.0, input_variance: float = 1.0,
                      depth: int = 50) -> dict[str, float]:
  """Predicted mean change of log10 Var per hidden layer, forward (f_k) and backward (dl/dh_k).

  For ReLU with zero bias both are log10(D_h sigma2_Omega / 2) exactly (+1.70 for D_h = 100,
  sigma2 = 1; -1.30 for sigma2 = 0.001). Otherwise the average over `depth` layers.
  """
  p = predict_mlp(input_dim=width, width=width, depth=depth, sigma2_omega=sigma2_omega,
                  sigma2_beta=sigma2_beta, activation=activation,
                  input_second_moment=input_variance)
  fwd = (p.log10_var_f[depth - 1] - p.log10_var_f[0]) / (depth - 1)
  bwd = (p.log10_var_dl_dh[0] - p.log10_var_dl_dh[depth - 1]) / (depth - 1)
  return {"forward": float(fwd), "backward": float(bwd)}
