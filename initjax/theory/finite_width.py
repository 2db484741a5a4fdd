"""The spread of one finite-width network around the mean-field prediction (Hanin & Rolnick 2018).

`initjax.theory.predict_mlp` gives the variance of each layer *averaged over initializations*;
a single network of finite width n wanders around it, and `initjax.propagation.measure` draws the
distribution of that wandering across seeds. This module predicts that distribution for the
quantity `measure` reports: per network, V_k = the variance of f_k pooled over its units and the
N inputs of the network (book notation: f_0 = beta_0 + Omega_0 x, h_{k+1} = a[f_k],
f_{k+1} = beta_{k+1} + Omega_{k+1} h_{k+1}; Gaussian weights, standard-normal inputs).

Derivation (to first order in 1/n, every layer's own sampling exact). Let M_k = the mean over
units and inputs of h_k^2 (M_0 that of x) and q_k = sigma2_k fan_in_k M_k + sigma2_b,k, the
mean-field variance of f_k given layer k's input. Given h_k the n_k units of f_k are independent,
each a Gaussian vector over the N inputs with covariance q_k ((1 - c_k) I + c_k 1 1^T), c_k the
correlation of two different inputs (the c-map, from `input_correlation`). Hence, exactly,

    V_k = q_k L_k,     n N L_k = lambda chi2_{n-1} + (1 - c_k) chi2_{n (N - 1)},
    lambda = 1 + (N - 1) c_k

(the pooled variance subtracts the grand mean, which removes one chi2 degree along 1 1^T: with one
output unit V_K keeps only the (1 - c_K) part, see the caveat below), and the next layer's input
moment

    M_{k+1} = M(q_k) Y_k,   E[Y_k] = 1,   Var[Y_k] = kappa_k / n_k,
    kappa_k = (1/N) kappa(q_k, 1) + (1 - 1/N) kappa(q_k, c_k),
    kappa(q, c) = E[a(u_a)^2 a(u_b)^2] / M(q)^2 - 1,      M(q) = E[a(u)^2],

(u_a, u_b) of variance q and correlation c. A relative change of M_k moves ln q_k by
alpha_k = sigma2_k fan_in_k M_k / q_k times it (biases dilute it) and ln M(q_k) by
beta_k = d ln M / d ln q = E[u a(u) a'(u)] / M(q_k) times that. The Y_k of different layers are
independent (each comes from its own weights), so A_k = ln M_k - ln(mean-field M_k) obeys

    A_0 = ln Y_in,   A_{k+1} = alpha_k beta_k A_k + ln Y_k,
    ln V_k = ln q_k + alpha_k A_k + ln L_k.

Each Y (and M_0 / E[M_0], a mean of N D_in squared normals) is taken as a Gamma variable of its
mean and variance (exact for a linear layer: chi2_n / n), so E[ln Y] = psi(s) - ln s and
Var[ln Y] = psi'(s), s = 1 / Var[Y]; L_k is the Gamma of its two chi2 terms' mean and variance
(exact for one unit). A_k, a sum of many small terms, is taken as normal (the log-normal
approximation), and the quantiles of ln V_k are those of that normal plus ln L_k.

For a positively homogeneous activation with zero bias alpha = beta = 1 and the variances of ln
add up layer by layer: Hanin & Rolnick's sum of 1/width. ReLU: kappa(q, 1) = E[relu(u)^4] /
E[relu(u)^2]^2 - 1 = (3/2) / (1/4) - 1 = 5, i.e. Var[ln V] grows by about 5/n per layer once the
inputs are strongly correlated (ReLU's c-map drives c_k -> 1); identity: kappa(q, c) = 2 c^2, 2/n
per layer. The median falls below the mean by E[ln V_k] - ln E[V_k] ~ -Var[ln V_k] / 2.

For Var[h_k] (h_{k+1} = a[f_k], `quantity="var_h"`) the accumulated part is the same A_k carried
through d ln Var[a(u)] / d ln q, and the layer's own factor is the delta-method variance of
mean(h^2) - mean(h)^2 over its units, X_i = mean_e h_ie^2, Z_i = mean_e h_ie (i.i.d. given h_k):
Var = (Var X - 4 E[Z] Cov(X, Z) + 4 E[Z]^2 Var Z) / n, with the pair moments at c_k.

Caveat: with one output unit the pooled Var[f_K] over the N inputs measures how decorrelated the
inputs still are, (1 - c_K); at finite width the correlation wanders from its mean-field value
(for ReLU c_k -> 1, where it is marginally stable), so that layer's level and spread are not
predicted well (measured: about 0.6 decades above the mean field at depth 30, width 64). Hidden
layers are.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import optimize, special

from initjax.core import progress
from initjax.nn import activations
from initjax.nn import gaussian_expectations as gauss
from initjax.nn.activations import ActivationLike
from initjax.theory import mean_field, phases

_LN10 = math.log(10.0)
_GAMMA_NODES = 2000
EXACT_QUANTILE_LAYERS = 2000   # deeper: the quantiles' root search at this many layers
QUANTITIES = ("var_f", "var_h")


@dataclasses.dataclass(frozen=True)
class LogVarianceSpread:
  """Predicted distribution across initializations of one layer quantity V_k: Var[f_k] for
  k = 0..K (f_K the output) or Var[h_k] for k = 1..K (`layers`)."""
  quantity: str
  layers: np.ndarray
  log10_mean_field: np.ndarray  # log10 of the mean-field value (= predict_mlp's)
  log10_mean: np.ndarray        # log10 E[V_k] (the pooled variance subtracts the mean)
  mean_ln: np.ndarray           # E[ln V_k]
  var_ln: np.ndarray            # Var[ln V_k]
  correlation: np.ndarray       # c of the pre-activations feeding V_k, for two different inputs
  accumulated_mean: np.ndarray  # E and Var of the accumulated part (normal)
  accumulated_var: np.ndarray
  own_shape: np.ndarray         # the layer's own factor: own_mean * Gamma(own_shape) / own_shape
  own_mean: np.ndarray

  @property
  def sd_log10(self) -> np.ndarray:
    return np.sqrt(self.var_ln) / _LN10

  @property
  def log10_median(self) -> np.ndarray:
    return self.log10_quantile(0.5)

  def log10_quantile(self, p: float) -> np.ndarray:
    """The p-quantile of log10 V_k: normal (accumulated) plus ln Gamma (own), by averaging the
    normal CDF over 2000 Gamma quantiles and a root search (see `log10_quantiles`)."""
    return self.log10_quantiles((p,))[0]

  def log10_quantiles(self, ps: Sequence[float]) -> list[np.ndarray]:
    """`log10_quantile(p)` for each p in `ps`, the Gamma quantiles of a layer computed once for
    all of them (they are most of the time).

    Up to `EXACT_QUANTILE_LAYERS` layers every layer gets its root search. A deeper network
    gets it at that many layers (the first half of them, then the rest spaced evenly in
    log layer, and the last): elsewhere the offset of the quantile from the log-normal
    approximation mean_ln + z_p sd_ln, a slowly varying function of the layer, is interpolated
    linearly in log layer (measured at 20000 ReLU layers of width 100: within 1e-11 decades of
    the root search at every layer; `tests/test_theory.py` checks 1e-6 at 300 layers with the
    threshold at 60). Logs its progress when it takes long.
    """
    for p in ps:
      if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1); got {p}")
    n = self.mean_ln.size
    if n <= EXACT_QUANTILE_LAYERS:
      return self._quantiles_at(ps, np.arange(n))
    half = EXACT_QUANTILE_LAYERS // 2
    at = np.unique(np.concatenate([np.arange(half), np.round(np.geomspace(
        half, n - 1, EXACT_QUANTILE_LAYERS - half)).astype(int)]))
    exact = self._quantiles_at(ps, at)
    out = []
    log_v = self.log10_mean_field * _LN10
    for p, values in zip(ps, exact):
      base = self.mean_ln - log_v + special.ndtri(p) * np.sqrt(self.var_ln)
      offset = (values - self.log10_mean_field[at]) * _LN10 - base[at]
      x = base + np.interp(np.log1p(np.arange(n)), np.log1p(at), offset)
      x = np.where(self.own_mean == 0.0, -math.inf, x)
      x[at] = (values - self.log10_mean_field[at]) * _LN10
      out.append(self.log10_mean_field + x / _LN10)
    return out

  def _quantiles_at(self, ps: Sequence[float], layers: np.ndarray) -> list[np.ndarray]:
    """The root search of `log10_quantile` at the positions `layers`, for each p."""
    u = (np.arange(_GAMMA_NODES) + 0.5) / _GAMMA_NODES
    out = [[] for _ in ps]
    tracker = progress.Progress(f"finite-width theory, quantiles {', '.join(map(str, ps))}",
                                len(layers), "layers")
    for i, k in enumerate(layers):
      tracker.update(i)
      shape = self.own_shape[k]
      if self.own_mean[k] == 0.0:
        for values in out:
          values.append(-math.inf)
        continue
      b = np.log(self.own_mean[k] * special.gammaincinv(shape, u) / shape)
      mu, sd = self.accumulated_mean[k], math.sqrt(self.accumulated_var[k])
      for p, values in zip(ps, out):
        cdf = lambda x, p=p: float(np.mean(special.ndtr((x - mu - b) / sd))) - p
        x = optimize.brentq(cdf, mu + b[0] - 12 * sd, mu + b[-1] + 12 * sd, xtol=1e-10)
        values.append(self.log10_mean_field[k] + x / _LN10)
    return [np.array(values) for values in out]


def _per_layer(value, n: int, name: str) -> np.ndarray:
  arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()
  if np.any(~np.isfinite(arr)) or np.any(arr < 0):
    raise ValueError(f"{name} must be finite and >= 0; got {value}")
  return arr


def _log_gamma_moments(shape):
  """(E[ln G], Var[ln G]) for G ~ Gamma(shape) / shape (mean 1, variance 1 / shape)."""
  return special.digamma(shape) - np.log(shape), special.polygamma(1, shape)


def _pooled_f_factor(units: float, batch: float, c: float) -> tuple[float, float]:
  """(E[L], Gamma shape of L) for n N L = lambda chi2_{n-1} + (1 - c) chi2_{n (N - 1)}."""
  lam, rest = 1.0 + (batch - 1.0) * c, max(1.0 - c, 0.0)
  dof_1, dof_2 = units - 1.0, units * (batch - 1.0)
  mean = lam * dof_1 + rest * dof_2
  var = 2.0 * (lam ** 2 * dof_1 + rest ** 2 * dof_2)
  if mean <= 0:   # one unit and one input: the pooled variance is exactly 0
    return 0.0, math.nan
  return mean / (units * batch), mean ** 2 / var


@dataclasses.dataclass(frozen=True)
class _Layer:
  """h = a(f) for f of variance q and inputs correlated c. For a positively homogeneous a
  everything but m is a ratio that does not depend on q."""
  m: float           # M(q) = E[a(u)^2]
  var: float         # Var[a(u)]
  beta: float        # d ln M / d ln q
  beta_h: float      # d ln Var[a(u)] / d ln q
  kappa: float       # n Var[Y] = (1/N) kappa(q, 1) + (1 - 1/N) kappa(q, c)
  ratio: float       # E[a(u_a) a(u_b)] / M
  h_mean: float      # E[pooled Var[h]] / Var[a(u)]
  h_rel_var: float   # Var[pooled Var[h]] / Var[a(u)]^2


def _layer(record, q: float, c: float, units: float, batch: float,
           same_at_unit_q: dict[str, float] | None = None) -> _Layer:
  """The moments of one layer (module docstring), by quadrature at (q, c) and (q, 1);
  `same_at_unit_q`, for a positively homogeneous activation, is `phases.pair_moments(record,
  1, 1)` computed once for every layer."""
  homogeneous = record.positively_homogeneous
  q_eval = 1.0 if homogeneous else q
  m = float(mean_field.second_moments(record, q_eval)[0])
  mean = gauss.gaussian_expectation(record.np_fn, q_eval)
  var = m - mean ** 2
  beta = mean_field.q_map_slope(record, 1.0, q_eval) * q_eval / m   # q M'(q) / M
  # q d E[a] / dq = E[u a'(u)] / 2 (Stein), so q dVar/dq = beta M - E[a] E[u a'(u)].
  u_da = gauss.gaussian_expectation(lambda u: u * record.np_derivative(u), q_eval)
  same = (same_at_unit_q if homogeneous and same_at_unit_q is not None
          else phases.pair_moments(record, q_eval, 1.0))
  pair = phases.pair_moments(record, q_eval, c)
  w1, wc = 1.0 / batch, 1.0 - 1.0 / batch
  cov = lambda key, sub: w1 * (same[key] - sub) + wc * (pair[key] - sub)
  var_x, var_z, cov_xz = cov("phi2_phi2", m * m), cov("phi_phi", mean * mean), cov(
      "phi2_phi", m * mean)
  scale = q if homogeneous else 1.0
  return _Layer(
      m=m * scale, var=var * scale, beta=beta,
      beta_h=1.0 if homogeneous else (beta * m - mean * u_da) / var,
      kappa=var_x / m ** 2, ratio=pair["phi_phi"] / m, h_mean=1.0 - var_z / (units * var),
      h_rel_var=(var_x - 4 * mean * cov_xz + 4 * mean ** 2 * var_z) / (units * var ** 2))


def log_variance_spread(*, input_dim: int, width: int, depth: int, output_dim: int = 1,
                        sigma2_omega: float | Sequence[float],
                        sigma2_beta: float | Sequence[float] = 0.0,
                        activation: ActivationLike = "relu",
                        batch_size: int = 1000, input_second_moment: float = 1.0,
                        input_correlation: float = 0.0,
                        quantity: str = "var_f") -> LogVarianceSpread:
  """The distribution across initializations of log10 of one layer's pooled variance.

  Args as `initjax.theory.predict_mlp` (sigma2_omega: the raw weight variance, one value or
  K+1), plus batch_size N (inputs per network), input_correlation (the cosine of two different
  inputs: 0 for independent random inputs; its O(1/sqrt(D_in)) scatter is neglected) and
  quantity "var_f" (f_0..f_K) or "var_h" (h_1..h_K). Equations: the module docstring.
  """
  record = activations.get(activation)
  for name, value in (("input_dim", input_dim), ("width", width), ("depth", depth),
                      ("output_dim", output_dim), ("batch_size", batch_size)):
    if not (isinstance(value, (int, np.integer)) and value >= 1):
      raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
  if not -1.0 <= input_correlation <= 1.0:
    raise ValueError(f"input_correlation must be in [-1, 1]; got {input_correlation}")
  if quantity not in QUANTITIES:
    raise ValueError(f"quantity must be one of {', '.join(QUANTITIES)}; got {quantity!r}")
  s2w = _per_layer(sigma2_omega, depth + 1, "sigma2_omega")
  s2b = _per_layer(sigma2_beta, depth + 1, "sigma2_beta")
  fan_in = np.array([input_dim] + [width] * depth, np.float64)
  fan_out = np.array([width] * depth + [output_dim], np.float64)
  n = float(batch_size)

  m_k = input_second_moment
  mean_a, var_a = _log_gamma_moments(n * input_dim / 2.0)   # A_0: M_0 / E[M_0]
  rows_f, rows_h = [], []
  same = phases.pair_moments(record, 1.0, 1.0) if record.positively_homogeneous else None
  tracker = progress.Progress("finite-width theory, the layers' moments", depth + 1, "layers")
  for k in range(depth + 1):
    tracker.update(k)
    q_k = s2w[k] * fan_in[k] * m_k + s2b[k]
    if not 0 < q_k < math.inf:
      raise ValueError(f"the mean-field variance of f_{k} is {q_k}: no spread to predict")
    alpha = s2w[k] * fan_in[k] * m_k / q_k
    cosine = input_correlation if k == 0 else ratio   # of layer k's inputs
    c_k = min(max((s2w[k] * fan_in[k] * m_k * cosine + s2b[k]) / q_k, -1.0), 1.0)
    rows_f.append((math.log(q_k), c_k, alpha * mean_a, alpha ** 2 * var_a,
                   *_pooled_f_factor(fan_out[k], n, c_k)))
    if k == depth:
      break
    lay = _layer(record, q_k, c_k, fan_out[k], n, same)
    g = alpha * lay.beta_h
    rows_h.append((math.log(lay.var), c_k, g * mean_a, g ** 2 * var_a, lay.h_mean,
                   1.0 / lay.h_rel_var))
    e_y, v_y = _log_gamma_moments(fan_out[k] / lay.kappa)
    mean_a, var_a = alpha * lay.beta * mean_a + e_y, (alpha * lay.beta) ** 2 * var_a + v_y
    m_k, ratio = lay.m, lay.ratio
  rows = rows_f if quantity == "var_f" else rows_h
  log_v, c, acc_mean, acc_var, own_mean, own_shape = (np.array(col) for col in zip(*rows))
  own_e, own_v = _log_gamma_moments(own_shape)
  with np.errstate(divide="ignore"):
    log_own_mean = np.log(own_mean)
  return LogVarianceSpread(
      quantity=quantity,
      layers=np.arange(depth + 1) if quantity == "var_f" else np.arange(1, depth + 1),
      log10_mean_field=log_v / _LN10, log10_mean=(log_v + log_own_mean) / _LN10,
      mean_ln=log_v + acc_mean + log_own_mean + own_e, var_ln=acc_var + own_v,
      correlation=c, accumulated_mean=acc_mean, accumulated_var=acc_var, own_shape=own_shape,
      own_mean=own_mean)


@dataclasses.dataclass(frozen=True)
class LogNormMoments:
  """Moments of ln ||h_L||^2 - ln ||x||^2 over random He-initialized ReLU networks."""
  widths: tuple[int, ...]
  input_dim: int
  mean: float              # E[ln ||h_L||^2 / ||x||^2]
  variance: float          # Var[ln ||h_L||^2], exact
  beta: float              # sum over layers of 1 / width (Hanin & Rolnick's beta)
  first_order: float       # 5 beta, Hanin & Rolnick's leading term


def relu_log_norm_moments(widths: Sequence[int], input_dim: int) -> LogNormMoments:
  """The exact mean and variance of ln ||h_L||^2 for a ReLU MLP with zero biases and He weights
  (N(0, 2 / fan_in)), hidden widths n_1..n_L, input x of dimension n_0 (any x != 0).

  Given h_{k-1}, the units of f = Omega h_{k-1} are independent N(0, 2 ||h_{k-1}||^2 / n_{k-1});
  B_k ~ Binomial(n_k, 1/2) of them are positive, so ||h_k||^2 = (2 ||h_{k-1}||^2 / n_{k-1})
  chi^2_{B_k}, independently of h_{k-1}'s direction. The layers' log-factors are independent:
      E[ln ||h_L||^2 / ||x||^2] = sum_k ln(2 / n_{k-1}) + ln 2 + E_B[psi(B_k / 2)],
      Var[ln ||h_L||^2]         = sum_k E_B[psi'(B_k / 2)] + Var_B[psi(B_k / 2)],
  B_k conditioned on B_k >= 1 (B_k = 0, probability 2^-n_k, is a dead network). To first order
  in 1 / n_k each layer adds 5 / n_k (the factor's variance: E[(2/n sum relu(g)^2)^2] - 1 =
  6/n + (n - 1)/n - 1), Hanin & Rolnick 2018's Var ~ 5 beta, beta = sum_k 1 / n_k.
  """
  widths = tuple(int(n) for n in widths)
  if input_dim < 1 or not widths or min(widths) < 1:
    raise ValueError(f"widths and input_dim must be >= 1; got {widths}, {input_dim}")
  mean = variance = 0.0
  fan_in = input_dim
  for n in widths:
    b = np.arange(1, n + 1)
    log_p = (special.gammaln(n + 1) - special.gammaln(b + 1) - special.gammaln(n - b + 1)
             - n * math.log(2.0))
    p = np.exp(log_p)
    p /= p.sum()
    psi, psi1 = special.digamma(b / 2.0), special.polygamma(1, b / 2.0)
    e_psi = float(np.sum(p * psi))
    mean += math.log(2.0 / fan_in) + math.log(2.0) + e_psi
    variance += float(np.sum(p * psi1) + np.sum(p * (psi - e_psi) ** 2))
    fan_in = n
  beta = sum(1.0 / n for n in widths)
  return LogNormMoments(widths, int(input_dim), mean, variance, beta, 5.0 * beta)
