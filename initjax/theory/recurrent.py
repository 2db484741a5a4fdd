"""The mean-field recursion of a vanilla RNN over time steps, forward and backward.

A vanilla RNN cell (Flax's `nn.SimpleCell`, Elman's network) with H hidden units, inputs x_t of
D components and second moment q_x = E[x_t^2]:

    f_t = W_h h_{t-1} + W_x x_t + b,    h_t = a[f_t],    h_0 = 0,    t = 1..T

with zero-mean weights, per-fan-in variances sigma2_h = H Var[W_h], sigma2_x = D Var[W_x] and
sigma2_b = Var[b] (an orthogonal W_h of gain g has sigma2_h = g^2: it keeps ||h|| exactly,
which is what the mean field assumes of it on average). Unrolled in time it is a deep network
whose layers share their weights and each receive a fresh input; under the mean-field
assumptions (wide layers, weights independent of the signal, and for the backward pass the
gradient-independence assumption of Schoenholz et al. 2017) the variances follow

    forward:   q_t = sigma2_h E[a(sqrt(q_{t-1}) z)^2] + sigma2_x q_x + sigma2_b,
               q_1 = sigma2_x q_x + sigma2_b,                             Var[f_t] = q_t
               Var[h_t] = E[a(sqrt(q_t) z)^2] - E[a(sqrt(q_t) z)]^2
    backward:  dL/dh_{t-1} = W_h^T (a'[f_t] * dL/dh_t), so
               Var[dL/dh_{t-1}] = sigma2_h E[a'(sqrt(q_t) z)^2] Var[dL/dh_t]
               = chi_t Var[dL/dh_t]

for a loss on the last output only. The least squares of initjax's probe against y = 0, L = sum
h_T^2, starts with Var[dL/dh_T] = 4 E[h_T^2], and its first step back is not independent of the
forward pass: dL/dh_{T-1} = W_h^T (a'[f_T] * 2 a[f_T]), so Var[dL/dh_{T-1}] = 4 sigma2_h E[(a'(f_T)
a(f_T))^2] (for tanh, a' = 1 - a^2 is a function of a: at the orthogonal kernel's q* = 1.46 the
product of the two moments would overestimate it by 0.43 decades). The input drive sigma2_x q_x
keeps q_t away from 0, so unlike a deep feed-forward net at its critical point a tanh RNN settles
at a fixed point q* > 0 where chi = sigma2_h E[a'^2] < sigma2_h: with an orthogonal (or identity)
recurrent kernel, sigma2_h = 1, chi < 1 and the gradient vanishes geometrically towards the first
step (the vanishing gradient through time of Bengio et al. 1994); a larger sigma2_h (He's 2) slows
the decay at the price of a chaotic forward map. The same recursion is the q-map of
`initjax.theory.mean_field` with an extra, constant input term.
"""
from __future__ import annotations

import math

import numpy as np

from initjax.nn import activations
from initjax.nn.activations import ActivationLike
from initjax.nn.gaussian_expectations import gaussian_expectation
from initjax.theory.variance import activation_moments

LOSSES = ("last_least_squares", "readout_least_squares")


def predict_rnn(*, steps: int, sigma2_h: float, sigma2_x: float, sigma2_b: float = 0.0,
                input_second_moment: float = 1.0, activation: ActivationLike = "tanh",
                loss: str = "last_least_squares", width: int | None = None,
                output_dim: int = 1, sigma2_out: float = 1.0,
                sigma2_b_out: float = 0.0) -> dict[str, np.ndarray]:
  """Mean-field log10 variances of a vanilla RNN, per time step t = 1..steps (module docstring):
  {"var_f": Var[f_t], "var_h": Var[h_t], "var_dl_dh": Var[dL/dh_t], "chi": the backward factor
  of each step, chi_t = sigma2_h E[a'(f_t)^2] (not log)}.

  `loss`: "last_least_squares", L = sum h_T^2 (the probe's default on a model that returns the
  last hidden state), or "readout_least_squares", L = sum f_out^2 of a dense readout of h_T
  with `output_dim` outputs, per-fan-in weight variance `sigma2_out` and bias variance
  `sigma2_b_out`, from `width` hidden units (`initjax.nn.recurrent`).
  """
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
  if loss == "readout_least_squares" and not (isinstance(width, int) and width >= 1):
    raise ValueError(f"the readout loss needs width (hidden units) >= 1; got {width!r}")
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
  for name, value in (("sigma2_h", sigma2_h), ("sigma2_x", sigma2_x), ("sigma2_b", sigma2_b),
                      ("input_second_moment", input_second_moment)):
    if not (math.isfinite(value) and value >= 0):
      raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
  drive = sigma2_x * input_second_moment + sigma2_b
  if drive <= 0:
    raise ValueError("the input drive sigma2_x * input_second_moment + sigma2_b must be > 0 "
                     "(with h_0 = 0 a network without it stays at 0)")
  record = activations.get(activation)
  q, var_h, chi, second = [], [], [], []
  previous = 0.0                                     # E[h_0^2]
  for _ in range(steps):
    q_t = sigma2_h * previous + drive
    m = activation_moments(activation, q_t)
    q.append(q_t)
    var_h.append(m["var_h"])
    second.append(m["second_moment_h"])
    chi.append(sigma2_h * m["second_moment_da"])
    previous = m["second_moment_h"]
  if loss == "readout_least_squares":
    g = [4.0 * output_dim * sigma2_out / width * (sigma2_out * second[-1] + sigma2_b_out)]
    for t in range(steps - 1, 0, -1):                 # dL/dh_{t-1} = chi_t dL/dh_t
      g.append(g[-1] * chi[t])
    return {"var_f": np.log10(q), "var_h": np.log10(var_h), "var_dl_dh": np.log10(g[::-1]),
            "chi": np.asarray(chi)}
  g = [4.0 * second[-1]]                              # Var[dL/dh_T]
  if steps > 1:                                       # through f_T, with dL/dh_T = 2 a(f_T)
    joint = gaussian_expectation(
        lambda f: (record.np_derivative(f) * record.np_fn(f)) ** 2, q[-1])
    g.append(4.0 * sigma2_h * joint)
  for t in range(steps - 2, 0, -1):                   # dL/dh_{t-1} from dL/dh_t through f_t
    g.append(g[-1] * chi[t])
  return {"var_f": np.log10(q), "var_h": np.log10(var_h), "var_dl_dh": np.log10(g[::-1]),
          "chi": np.asarray(chi)}
