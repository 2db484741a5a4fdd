"""initjax.studies: the experiments' library parts, on top of everything else.

Modules:
  sweep               training sweeps: config, grid, compile groups, the verified point store,
                      batch tasks, the report
  propagation_figure  the book's weight-initialization figure as data: settings, tidy rows,
                      summary, plot
  phase_diagram       the order-to-chaos phase diagram of trainability: a sweep over
                      sigma_w^2 x depth against xi_c
  isometry_spectra    dynamical isometry: Jacobian spectra of critical networks, Gaussian vs
                      orthogonal weights, against free probability
  coord_check         the coordinate check: every layer's activation size against width over
                      a few training steps, per parametrization (sp, ntk, mup)
  lr_transfer         learning-rate transfer across widths, on the sweep

Studies may import every other part of initjax; nothing in initjax imports them. The flags,
printing and exit codes are in `experiments/` (README, "Layout").
"""
