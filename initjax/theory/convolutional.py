"""The mean-field variance recursion of the 1-D CNN (`initjax.convolutional`).

    f_0 = conv(x; Omega_0) + beta_0,  h_k = a[f_{k-1}],  f_k = conv(h_k; Omega_k) + beta_k
    (k = 1..K-1, K convolutional layers of C channels, kernel size s, stride 1, length L kept),
    f_out = Omega_out flatten(h_K) + beta_out

Padding (`initjax.convolutional.PADDINGS`) and the theory: with "circular" padding every output
position sums exactly s C_in inputs, so the variance recursion is the MLP's, q_{k+1} = sigma2_w
E[a[f]^2] + sigma2_b (sigma2_w = fan_in Var[W]). With "zero" padding ('SAME') the r = (s - 1) / 2
positions at each edge see fewer inputs: the mean-field variance becomes a profile over positions,
q_{k+1}(i) = sigma2_w mean_{|d| <= r} m_k(i + d) + sigma2_b with m_k = E[a[f_k]^2] and m = 0
outside the sequence, so signal is lost at the edges and the loss creeps inwards by r positions per
layer. `predict_cnn` iterates that profile (and its transpose for the gradients) and reports the
pooled variance, the mean over positions.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from initjax.theory.variance import activation_moments


def _window_mean(v_L: np.ndarray, kernel_size: int, padding: str) -> np.ndarray:
  """mean over d = -r..s-1-r of v[i + d], wrapped (circular) or zero outside (zero)."""
  r = (kernel_size - 1) // 2
  if padding == "circular":
    return np.mean([np.roll(v_L, -d) for d in range(-r, kernel_size - r)], axis=0)
  padded = np.concatenate([np.zeros(r), v_L, np.zeros(kernel_size - 1 - r)])
  return np.mean([padded[d:d + v_L.size] for d in range(kernel_size)], axis=0)


def _window_mean_transposed(v_L: np.ndarray, kernel_size: int, padding: str) -> np.ndarray:
  """The transpose of `_window_mean` (how the gradients flow back through a convolution)."""
  r = (kernel_size - 1) // 2
  if padding == "circular":
    return np.mean([np.roll(v_L, d) for d in range(-r, kernel_size - r)], axis=0)
  padded = np.concatenate([np.zeros(kernel_size - 1 - r), v_L, np.zeros(r)])
  return np.mean([padded[d:d + v_L.size] for d in range(kernel_size)], axis=0)


def predict_cnn(*, length: int, channels: int, depth: int, output_dim: int = 1,
                kernel_size: int = 5, sigma2_w: float | Sequence[float], sigma2_b: float = 0.0,
                activation: str = "relu", padding: str = "circular",
                input_second_moment: float = 1.0) -> dict[str, np.ndarray]:
  """Mean-field log10 variances pooled over positions: {"var_f": f_0..f_{K-1},
  "var_h": h_1..h_K, "var_dl_dh": dl/dh_1..dl/dh_K, "var_out"} for the least-squares loss
  against y = 0 (see the module docstring). `sigma2_w` is per fan-in (fan_in Var[W]), one value
  or K + 1 values (Omega_0..Omega_{K-1}, Omega_out)."""
  s2 = np.broadcast_to(np.asarray(sigma2_w, np.float64), (depth + 1,))
  q = [s2[0] * _window_mean(np.full(length, input_second_moment), kernel_size, padding)
       + sigma2_b]                                          # q_0(i): Var[f_0] by position
  m1, m2, da2 = [], [], []
  for k in range(depth):
    moments = [activation_moments(activation, float(v)) for v in q[k]]
    m1.append(np.array([m["mean_h"] for m in moments]))
    m2.append(np.array([m["second_moment_h"] for m in moments]))
    da2.append(np.array([m["second_moment_da"] for m in moments]))
    if k + 1 < depth:
      q.append(s2[k + 1] * _window_mean(m2[k], kernel_size, padding) + sigma2_b)
  var_out = s2[-1] * float(np.mean(m2[-1])) + sigma2_b
  # Backward: dl/dh_K(i) = Omega_out^T dl/df_out: fan_in of the head is L C.
  g_h = [np.full(length, 4.0 * var_out * output_dim * s2[-1] / (length * channels))]
  for k in range(depth - 1, 0, -1):       # dl/dh_k from dl/dh_{k+1} through a'[f_k], Omega_k
    g_f = da2[k] * g_h[-1]
    g_h.append(s2[k] * _window_mean_transposed(g_f, kernel_size, padding))
  g_h = g_h[::-1]
  pooled = lambda arrays: np.log10([float(np.mean(a)) for a in arrays])
  # Var[h_k] pooled over positions: the mean square minus the square of the pooled mean.
  var_h = np.log10([float(np.mean(m2[k]) - np.mean(m1[k]) ** 2) for k in range(depth)])
  return {"var_f": pooled(q), "var_h": var_h, "var_dl_dh": pooled(g_h),
          "var_out": math.log10(var_out)}
