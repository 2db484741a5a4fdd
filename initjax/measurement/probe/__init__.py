"""initjax.probe (initjax.probe): per-layer statistics of any model over many random
initializations.

    from initjax import probe
    stats = probe.measure(model, x, key=jax.random.key(0), num_seeds=500,
                          weight_init="he_normal")
    stats["layers"], stats["var_out"], stats["var_grad"]   # names; (500, num_layers) arrays

`model` is a `flax.linen.Module`, a `flax.nnx.Module` class or factory `rngs -> module`, or a
pair `(init_fn, apply_fn)` of pure functions whose layers are marked with `tap(name, value)`.
Flax layers are found without changing the user's module (every submodule `__call__`).
Modules: `recorder` (`tap`: marking and recording layer outputs), `models` (the three kinds
made pure), `redraw` (kernels and biases redrawn by an initjax initializer), `measurement`
(`measure`: one compiled call over seeds and devices; `trace`: one network; `layers`),
`jacobians` (`jacobian_spectra`: singular values of every layer's input-output Jacobian).
"""
from initjax.measurement.probe.jacobians import jacobian_spectra
from initjax.measurement.probe.measurement import (STATISTICS, default_seed_chunk, layer_statistics,
                                                   layers, least_squares, measure, trace,
                                                   trace_count)
from initjax.measurement.probe.recorder import ProbeError, tap
from initjax.measurement.probe.redraw import BIAS_NAMES, KERNEL_NAMES

__all__ = ["BIAS_NAMES", "KERNEL_NAMES", "ProbeError", "STATISTICS", "default_seed_chunk",
           "jacobian_spectra", "layer_statistics", "layers", "least_squares", "measure", "tap", "trace", "trace_count"]
