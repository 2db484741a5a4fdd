"""Per-layer forward and backward statistics of one MLP, exact at any depth.

For one network (from `initjax.networks.init_mlp`) and a batch of N inputs, with the book's
least-squares loss against y = 0, `network_statistics` reduces every layer to one log10 number
per quantity:

    var_f          Var[f_k]        k = 0..K     (f_K is the output)
    var_h          Var[h_k]        k = 1..K
    var_dl_df      Var[dl/df_k]    k = 0..K
    var_dl_dh      Var[dl/dh_k]    k = 1..K
    var_dl_domega  mean square of the per-example weight gradient dl/dOmega_k = dl/df_k h_k^T
                   (h_0 = x), k = 0..K: E_i[mean_j (dl/df_k,ij)^2 mean_m h_k,im^2]

Variances are pooled over units and examples (as the book's notebook does) and kept as log10
values, so nothing overflows or underflows in float32:

* Backward, always: dl/df_{k-1} = a'[f_{k-1}] * (Omega_k^T dl/df_k) is linear in dl/df_k, so the
  gradient is rescaled to unit RMS after every layer and its scale carried in log10.
* Forward, with `log_space` (exact when the activation is positively homogeneous and the biases
  are zero: a[c f] = c a[f] for c > 0): f_k is rescaled to unit RMS after every layer and its
  scale carried in log10; a'[f] (a sign) does not change.
* Otherwise the forward pass runs directly; a variance that overflows, underflows to zero or is
  NaN comes back non-finite, and the caller flags it.

Every step is exact in real arithmetic and costs no extra pass over the (N x D) activations: a
layer's 1/RMS is folded into the next (D x D) weight matrix; the sum of a layer's outputs comes
from the column sums of its input (f is linear in it); the per-example squares of h_k and dl/df_k
give both the pooled variances and the weight-gradient statistic; for a positively homogeneous
activation the backward pass keeps only the sign of f_k (one byte per unit).

Notation of the helpers: `u_k` is the raw (rescaled) input of layer k (u_0 = x, u_k = h_k up to
a scale), `mult` the 1/RMS folded into the next weights, `sig` the log10 scale of f_k,
`g` the raw dl/df_k and `gam` its log10 scale.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from initjax.nn import activations

QUANTITIES = ("var_f", "var_h", "var_dl_dh", "var_dl_df", "var_dl_domega")


@dataclasses.dataclass(frozen=True)
class Rule:
  """What `network_statistics` does for an activation (static)."""
  activation: activations.Activation
  log_space: bool

  @property
  def homogeneous(self) -> bool:
    return self.activation.positively_homogeneous

  @property
  def fold(self) -> bool:
    """Fold 1/RMS into the next weights (a[c f] = c a[f]) instead of rescaling f itself."""
    return self.log_space and self.homogeneous


def uses_log_space(activation: str, bias_variance: float) -> bool:
  """Whether the forward rescaling is exact: positively homogeneous activation, zero biases."""
  return activations.get(activation).positively_homogeneous and bias_variance == 0.0


# ------------------------------------------------------------------------------------------------
# Reductions.

def log10_inv_rms(ms):
  """(1 / sqrt(ms), log10 sqrt(ms)) for ms > 0; (1, 0) for ms == 0 (an all-zero array)."""
  ok = ms > 0
  safe = jnp.where(ok, ms, 1.0)
  return jax.lax.rsqrt(safe), jnp.where(ok, 0.5 * jnp.log10(safe), 0.0)


def log10_var(total, total_sq, count, log10_scale):
  """log10 of the pooled variance from the sum and the sum of squares of `count` entries."""
  # The barrier keeps XLA from rewriting (total / count)**2 as total**2 / count**2, which
  # overflows on the direct (not rescaled) path long before the variance does.
  mean, mean_sq = jax.lax.optimization_barrier((total / count, total_sq / count))
  var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
  return jnp.log10(var) + 2.0 * log10_scale


def _barrier(x):
  """Keeps XLA's simplifier from turning a sum of per-example (or per-unit) sums back into a
  second full pass over the (N, D) array."""
  return jax.lax.optimization_barrier(x)


def _linear(u, mult, omega, beta):
  return u @ (omega * mult).T + beta


def _sum_of_linear(u_colsum, omega, mult, beta, n):
  """Sum over all entries of u @ (mult * omega)^T + beta, from the column sums of u."""
  return mult * jnp.dot(u_colsum, jnp.sum(omega, axis=0)) + n * jnp.sum(beta)


# ------------------------------------------------------------------------------------------------
# Forward.
#
# f_raw_k = u_k @ (m_k Omega_k^T) + beta_k: the true f_k is f_raw_k * 10**sig_k, where sig_k is the
# log10 of the product of the RMS of f_0..f_{k-1} (0 without log_space). With the rescaling
# folded (homogeneous a), u_{k+1} = a[f_raw_k] has the scale sig_k and m_{k+1} = 1 / rms(f_raw_k);
# otherwise u_{k+1} = a[f_raw_k / rms(f_raw_k)] (the scale moves on by the rms) and m_{k+1} = 1.

def forward_layer(rule: Rule, u, u_colsum, mult, sig, omega, beta):
  """Layer k: f_k from u_k and its log10 variance, then u_{k+1} = a[f_k] and its statistics.

  Returns ((u_{k+1}, its column sums, m_{k+1}, sig_{k+1}),
           (what the backward pass needs of f_k, per-example sums of squares of u_{k+1},
            log10 scale of u_{k+1}, log10 Var[f_k], log10 Var[h_{k+1}])).
  """
  dtype = u.dtype
  n = u.shape[0]
  f_raw = _linear(u, mult, omega, beta)
  d = f_raw.shape[-1]
  f_sum = _sum_of_linear(u_colsum, omega, mult, beta, n)
  f_sq = jnp.sum(jnp.square(f_raw))
  log_var_f = log10_var(f_sum, f_sq, n * d, sig)
  if rule.log_space:
    inv_rms, step = log10_inv_rms(f_sq / (n * d))
  else:
    inv_rms, step = jnp.ones((), dtype), jnp.zeros((), dtype)
  a = rule.activation.fn
  if rule.fold or not rule.log_space:
    u_next = a(f_raw)
    u_sig, mult_next = sig, inv_rms
  else:
    u_next = a(f_raw * inv_rms)
    u_sig, mult_next = sig + step, jnp.ones((), dtype)
  if rule.homogeneous:
    saved = f_raw > 0                       # a'[f] depends only on the sign: a bool mask
  else:
    saved = rule.activation.derivative(f_raw * inv_rms if rule.log_space else f_raw)
  colsum = _barrier(jnp.sum(u_next, axis=0))
  sq_N = _barrier(jnp.sum(jnp.square(u_next), axis=1))
  log_var_h = log10_var(jnp.sum(colsum), jnp.sum(sq_N), n * d, u_sig)
  return (u_next, colsum, mult_next, sig + step), (saved, sq_N, u_sig, log_var_f, log_var_h)


def forward(rule: Rule, params: dict, x_NxD):
  """The forward pass over f_0..f_K: per-layer statistics and what the backward pass needs."""
  zero = jnp.zeros((), x_NxD.dtype)
  carry0, first = forward_layer(rule, x_NxD, jnp.sum(x_NxD, axis=0), jnp.ones((), x_NxD.dtype),
                                zero, params["omega_0"], params["beta_0"])
  carry, rest = jax.lax.scan(lambda c, xs: forward_layer(rule, *c, *xs), carry0,
                             (params["omega_hidden"], params["beta_hidden"]))
  # first: layer 0 (saved_0, |h_1|^2, scale of h_1, Var f_0, Var h_1); rest: layers 1..K-1.
  u_K, u_K_colsum, mult_K, sig_out = carry
  f_out = _linear(u_K, mult_K, params["omega_out"], params["beta_out"])
  n, d_out = f_out.shape
  f_out_sum = _sum_of_linear(u_K_colsum, params["omega_out"], mult_K, params["beta_out"], n)
  log_var_f_out = log10_var(f_out_sum, jnp.sum(jnp.square(f_out)), n * d_out, sig_out)
  return first, rest, f_out, sig_out, log_var_f_out


# ------------------------------------------------------------------------------------------------
# Backward.
#
# G_k raw: the true dl/df_k is G_k * 10**gam_k. dl/dh_k = (G_k / rms(G_k)) Omega_k has the scale
# gam_k + log10 rms(G_k) (the rescaling, folded into Omega_k), and so has
# G_{k-1} = a'[f_{k-1}] * dl/dh_k. The sum of dl/dh_k comes from the column sums of G_k.

def backward_matmul(g, g_colsum, g_sq, gam, omega):
  """dl/dh_k = rescaled G_k @ Omega_k, its log10 scale and log10 variance."""
  inv_rms, step = log10_inv_rms(g_sq / g.size)
  dl_dh = g @ (omega * inv_rms)
  dh_sum = inv_rms * jnp.dot(g_colsum, jnp.sum(omega, axis=1))
  log_var_dh = log10_var(dh_sum, jnp.sum(jnp.square(dl_dh)), dl_dh.size, gam + step)
  return dl_dh, gam + step, log_var_dh


def backward_mask(rule: Rule, saved, dl_dh, gam):
  """G_{k-1} = a'[f_{k-1}] * dl/dh_k, its column sums, total and per-example sums of squares,
  and its log10 variance."""
  if rule.homogeneous:  # saved is the sign of f: a'(1) or a'(0), the derivative's two values
    g = rule.activation.derivative(saved.astype(dl_dh.dtype)) * dl_dh
  else:
    g = saved * dl_dh
  colsum = _barrier(jnp.sum(g, axis=0))
  sq_N = _barrier(jnp.sum(jnp.square(g), axis=1))
  sq = jnp.sum(sq_N)
  log_var_df = log10_var(jnp.sum(colsum), sq, g.size, gam)
  return (g, colsum, sq, gam), sq_N, log_var_df


def backward_layer(rule: Rule, dl_dh, gam, saved, omega):
  """From dl/dh_{k+1} (scale gam) to dl/dh_k through a'[f_k] and Omega_k."""
  g_carry, sq_N, log_var_df = backward_mask(rule, saved, dl_dh, gam)
  dl_dh_k, gam_k, log_var_dh = backward_matmul(*g_carry, omega)
  return (dl_dh_k, gam_k), (log_var_df, sq_N, gam, log_var_dh)


def backward(rule: Rule, params: dict, saved_0, saved_rest, f_out, sig_out):
  """The backward pass from dl/df_K = 2 f_K (y = 0) to dl/df_0."""
  g_out = 2.0 * f_out
  go_sq_N = jnp.sum(jnp.square(g_out), axis=1)
  go_sq = jnp.sum(go_sq_N)
  go_colsum = jnp.sum(g_out, axis=0)
  log_var_df_out = log10_var(jnp.sum(go_colsum), go_sq, g_out.size, sig_out)
  dl_dh_K, gam_K, log_var_dh_K = backward_matmul(g_out, go_colsum, go_sq, sig_out,
                                                 params["omega_out"])
  (dl_dh_1, gam_1), rest = jax.lax.scan(
      lambda c, xs: backward_layer(rule, *c, *xs), (dl_dh_K, gam_K),
      (saved_rest, params["omega_hidden"]), reverse=True)
  # rest: (Var dl/df_k, |dl/df_k|^2 per example, its scale, Var dl/dh_k) for k = K-1..1.
  _, g_sq_0, log_var_df_0 = backward_mask(rule, saved_0, dl_dh_1, gam_1)
  return {"out": (go_sq_N, log_var_df_out, log_var_dh_K), "rest": rest,
          "first": (g_sq_0, gam_1, log_var_df_0)}


# ------------------------------------------------------------------------------------------------
# Weight gradients.

def weight_gradient_log10(in_sq_LxN, in_log_scale_L, g_sq_LxN, g_log_scale_L, log_widths_L, *,
                          log_space: bool):
  """log10 E_i[mean_j G_k,ij^2 mean_m u_k,im^2] per layer, with the layers' scales added.

  `in_sq`/`g_sq` are per-example sums of squares of each layer's input and output gradient,
  `log_widths` the log10 of (fan_in x fan_out) that turns those sums into means.
  """
  log_scale = 2.0 * (in_log_scale_L + g_log_scale_L) - log_widths_L
  if log_space:
    # Rescaled values are O(1): take the mean of the products directly, each factor divided
    # by its mean over examples (so every factor is <= N: nothing overflows).
    def normalized(sq_LxN):
      m = jnp.mean(sq_LxN, axis=1, keepdims=True)
      m = jnp.where(m > 0, m, 1.0)
      return sq_LxN / m, jnp.log10(m[:, 0])
    in_norm, in_log_m = normalized(in_sq_LxN)
    g_norm, g_log_m = normalized(g_sq_LxN)
    return jnp.log10(jnp.mean(in_norm * g_norm, axis=1)) + in_log_m + g_log_m + log_scale
  # The direct path may hold huge values: a log-sum-exp over examples.
  log_terms = jnp.log10(g_sq_LxN) + jnp.log10(in_sq_LxN)
  peak = jnp.max(log_terms, axis=1, keepdims=True)
  peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
  return (peak[:, 0] + jnp.log10(jnp.mean(10.0 ** (log_terms - peak), axis=1))
          + log_scale)


# ------------------------------------------------------------------------------------------------
# One network.

def network_statistics(params: dict, x_NxD: jax.Array, activation: str = "relu", *,
                       log_space: bool) -> dict[str, jax.Array]:
  """log10 per-layer statistics of one network for the least-squares loss with y = 0.

  Args:
    params: from `initjax.networks.init_mlp`.
    x_NxD: the batch of inputs.
    activation: activation name.
    log_space: rescale the forward pass and carry its scale in log10. Exact only for positively
      homogeneous activations with zero biases; the caller decides (`uses_log_space`).

  Returns:
    {quantity: log10 values per layer} with the layer ranges of the module docstring. Non-finite
    entries (-inf for a variance that is exactly zero or underflowed, +inf/NaN for overflow) mark
    values that could not be measured.
  """
  rule = Rule(activations.get(activation), log_space)
  dtype = x_NxD.dtype
  first, rest, f_out, sig_out, lvf_out = forward(rule, params, x_NxD)
  saved_0, u_sq_1, u_sig_1, lvf_0, lvh_1 = first
  saved_s, u_sq_s, u_sig_s, lvf_s, lvh_s = rest    # layers 1..K-1; u: h_2..h_K
  bwd = backward(rule, params, saved_0, saved_s, f_out, sig_out)
  go_sq_N, lvdf_out, lvdh_K = bwd["out"]
  lvdf_s, g_sq_s, gam_s, lvdh_s = bwd["rest"]      # dl/df_1..dl/df_{K-1}; dl/dh_1..dl/dh_{K-1}
  g_sq_0, gam_1, lvdf_0 = bwd["first"]

  x_sq_N = jnp.sum(jnp.square(x_NxD), axis=-1)
  in_sq = jnp.concatenate([x_sq_N[None], u_sq_1[None], u_sq_s])                  # (K+1, N)
  in_log_scale = jnp.concatenate([jnp.zeros((1,), dtype), u_sig_1[None], u_sig_s])  # (K+1,)
  g_sq = jnp.concatenate([g_sq_0[None], g_sq_s, go_sq_N[None]])                  # (K+1, N)
  g_log_scale = jnp.concatenate([gam_1[None], gam_s, sig_out[None]])
  num_layers = in_sq.shape[0]
  width, d_out = params["omega_0"].shape[0], f_out.shape[-1]
  log_widths = np.log10(np.array([x_NxD.shape[-1]] + [width] * (num_layers - 1), np.float64)
                        * np.array([width] * (num_layers - 1) + [d_out], np.float64))
  log_domega = weight_gradient_log10(in_sq, in_log_scale, g_sq, g_log_scale,
                                     log_widths.astype(dtype), log_space=log_space)
  return {
      "var_f": jnp.concatenate([lvf_0[None], lvf_s, lvf_out[None]]),
      "var_h": jnp.concatenate([lvh_1[None], lvh_s]),
      "var_dl_dh": jnp.concatenate([lvdh_s, lvdh_K[None]]),
      "var_dl_df": jnp.concatenate([lvdf_0[None], lvdf_s, lvdf_out[None]]),
      "var_dl_domega": log_domega,
  }
