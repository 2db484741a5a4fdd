"""initjax.training: Optax training of one network or of many initializations at once.

Modules:
  loop            one network's training loop in pieces (`TrainSpec`, `init_state`,
                  `train_step`, `record`, `finish`), for any `initjax.nn.models.Model`; this
                  package exports its names, so `initjax.training.TrainSpec` is
                  `initjax.training.loop.TrainSpec`
  batch_training  `run_networks`: a batch of networks vmapped, in blocks over the devices, in
                  checkpointable segments
  checkpoints     mid-group Orbax checkpoints, restored by a rerun
  optimizers      optimizers by name, learning rates traceable (vmapped)
  parametrization abc-parametrizations (sp, ntk, mup): per-leaf init, multiplier and
                  learning-rate scales by which dims grow with width
  data            MNIST-1D generated locally and cached; a teacher-student regression set

Training imports measurement, theory, `initjax.nn` and `initjax.core`, never the studies
(README, "Layout").
"""
from initjax.training.loop import (TASKS, TrainSpec, TrainState, batch_loss, epoch_order,
                                   epoch_permutation, eval_steps, evaluate, finish, init_networks,
                                   init_records, init_state, layer_statistics, loss_and_state,
                                   mask_after_divergence, minibatch, minibatch_indices,
                                   minibatch_loss, record, record_chunk, spec_optimizer,
                                   stack_params, step_rng, stats_steps, train_chunk,
                                   train_network,
                                   train_network_jit, train_networks, train_step)

__all__ = [
    "TASKS", "TrainSpec", "TrainState", "batch_loss", "epoch_order", "epoch_permutation",
    "eval_steps", "evaluate", "finish", "init_networks", "init_records", "init_state",
    "layer_statistics", "loss_and_state", "mask_after_divergence", "minibatch",
    "minibatch_indices", "minibatch_loss", "record", "record_chunk", "spec_optimizer",
    "stack_params",
    "stats_steps", "step_rng", "train_chunk", "train_network", "train_network_jit",
    "train_networks", "train_step",
]
