"""The mean-field variance recursion of the residual MLP (`initjax.residual`).

    h_0     = Omega_in x + beta_in                      (D_h units; no activation)
    h_{k+1} = h_k + alpha_k (Omega_k a[h_k] + beta_k)   k = 0..K-1   (K blocks)
    f_out   = Omega_out a[h_K] + beta_out

Theory (mean field, per-fan-in sigma2 = fan_in Var[W], zero-mean weights independent of h):
Var[h_{k+1}] = Var[h_k] + alpha^2 (sigma2_w E[a[h_k]^2] + sigma2_b): a He-initialized ReLU
branch (sigma2_w = 2, E[a^2] = q/2) multiplies the variance by (1 + alpha^2) per block, i.e.
log10(2) = 0.30 decades per block at alpha = 1, and (1 + 1/K)^K ~ e over K blocks at
alpha = 1/sqrt(K). Backward, dl/dh_k = dl/dh_{k+1} + alpha a'[h_k] (Omega_k^T dl/dh_{k+1}) grows
by (1 + alpha^2 sigma2_w E[a'^2]) per block towards the input.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from initjax.nn.residual import branch_scale
from initjax.theory.variance import activation_moments


def predict_resmlp(*, input_dim: int, width: int, depth: int, output_dim: int = 1,
                   sigma2_w: float | Sequence[float], sigma2_b: float = 0.0,
                   activation: str = "relu", scale: str = "one",
                   input_second_moment: float = 1.0) -> dict[str, np.ndarray]:
  """Mean-field log10 variances: {"var_h": h_0..h_K, "var_dl_dh": dl/dh_0..dl/dh_K, "var_out"}
  for the least-squares loss against y = 0 (dl/df_out = 2 f_out).

  `sigma2_w` is per fan-in (fan_in Var[W]; He: 2 for ReLU), one value or K + 2 values (Omega_in,
  Omega_0..Omega_{K-1}, Omega_out)."""
  s2 = np.broadcast_to(np.asarray(sigma2_w, np.float64), (depth + 2,))
  alpha2 = branch_scale(scale, depth) ** 2
  q = [s2[0] * input_second_moment + sigma2_b]
  da2 = []
  for k in range(depth + 1):
    m = activation_moments(activation, q[-1])
    da2.append(m["second_moment_da"])
    if k < depth:
      q.append(q[-1] + alpha2 * (s2[k + 1] * m["second_moment_h"] + sigma2_b))
  m_K = activation_moments(activation, q[depth])
  var_out = s2[-1] * m_K["second_moment_h"] + sigma2_b
  g = [4.0 * var_out * output_dim * (s2[-1] / width) * da2[depth]]  # dl/dh_K
  for k in range(depth - 1, -1, -1):
    g.append(g[-1] * (1.0 + alpha2 * s2[k + 1] * da2[k]))
  return {"var_h": np.log10(q), "var_dl_dh": np.log10(g[::-1]), "var_out": math.log10(var_out)}
