"""initjax.theory: what mean-field theory predicts for deep random networks, per layer.

Modules (this package exports the names users call, as `initjax.theory.<name>`):
  variance       the slides' derivation: per-layer variance predictions of the book's MLP
                 (`predict_mlp`), the He and Xavier conditions, activation moments
  mean_field     the q-map and its fixed points reached from the input, chi_1
  phases         the correlation map, the depth scales xi_q and xi_c, the phases and the
                 order-to-chaos critical line (Schoenholz et al. 2017)
  finite_width   the spread of one finite-width network around the mean field (Hanin & Rolnick)
  residual       the residual MLP's variance recursion (`predict_resmlp`)
  convolutional  the 1-D CNN's variance recursion (`predict_cnn`)
  recurrent      a vanilla RNN's recursion over time steps (`predict_rnn`)
  batchnorm      the batch-normalized MLP at initialization (Yang et al. 2019): Var[h_k] reset
                 every layer, the gradient's growth per layer against the batch size
                 (`predict_normalized_mlp`, `initjax.theory.batchnorm.growth_factor`)
  spectra        free probability for the input-output Jacobian: moments and density of
                 J J^T (`initjax.theory.spectra.moments`, `.density`)
  architectures  the built-in architectures by name: each record ties a network of
                 `initjax.nn` to its prediction

Theory imports `initjax.nn` (activations, networks) and `initjax.core`, never measurement,
training or the studies (README, "Layout").
"""
from initjax.nn.gaussian_expectations import gaussian_expectation
from initjax.theory.batchnorm import predict_normalized_mlp
from initjax.theory.convolutional import predict_cnn
from initjax.theory.finite_width import LogVarianceSpread, log_variance_spread
from initjax.theory.mean_field import (FixedPoint, chi_1, fixed_point_q, q_fixed_points, q_map,
                                       reached_fixed_point)
from initjax.theory.phases import (DepthScales, PhaseBoundary, c_map, critical_line,
                                   critical_weight_variance, depth_scales, phase_boundary)
from initjax.theory.recurrent import predict_rnn
from initjax.theory.residual import predict_resmlp
from initjax.theory.variance import (MLPPrediction, activation_moments, decades_per_layer,
                                     he_backward_variance, he_forward_variance,
                                     preactivation_mean, preactivation_variance, predict_mlp,
                                     relu_next_variance, xavier_forward_variance, xavier_variance)

__all__ = [
    "DepthScales", "FixedPoint", "LogVarianceSpread", "MLPPrediction", "PhaseBoundary",
    "activation_moments", "c_map", "chi_1", "critical_line", "critical_weight_variance",
    "decades_per_layer", "depth_scales", "fixed_point_q", "gaussian_expectation",
    "he_backward_variance", "he_forward_variance", "log_variance_spread", "phase_boundary",
    "preactivation_mean", "preactivation_variance", "predict_cnn", "predict_mlp",
    "predict_normalized_mlp",
    "predict_resmlp", "predict_rnn", "q_fixed_points", "q_map", "reached_fixed_point",
    "relu_next_variance",
    "xavier_forward_variance", "xavier_variance",
]
