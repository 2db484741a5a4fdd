"""initjax.measurement: per-layer statistics of many random networks at once.

Modules:
  layer_statistics  one MLP's exact per-layer statistics in log space (the propagation kernel)
  propagation       `measure`: many random networks of a built-in architecture at once;
                    summaries, slopes, the theory per initializer
  isometry          Jacobian spectra of many random MLPs at once: moments, largest singular
                    value, condition number, histograms
  probe             `probe.measure`: the same for any model (Flax linen, nnx, pure functions
                    with `probe.tap`); `probe.jacobian_spectra`

Measurement imports theory, `initjax.nn` and `initjax.core`, never training or the studies
(README, "Layout").
"""
