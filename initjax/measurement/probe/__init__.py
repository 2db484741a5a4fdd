"""initjax.probe (initjax.measurement.probe): per-layer statistics of any model over many random
initializations.

    from initjax import probe
    stats = probe.measure(model, x, key=jax.random.key(0), num_seeds=500,
                          weight_init=["he_normal", "xavier_normal", None])
    stats["layers"], stats["var_out"], stats["var_grad"]   # names; (3, 500, num_layers) arrays

`model` is a `flax.linen.Module`, a `flax.nnx.Module` class or factory `rngs -> module`,
`initjax.models.equinox(make)` (or an `eqx.Module`), or a pair `(init_fn, apply_fn)` of pure
functions whose layers are marked with `tap(name, value)`. Flax and Equinox layers are found
without changing the user's module (every submodule `__call__`), inside `nn.RNN`, `nn.scan`,
`jax.lax.scan` and `jax.vmap` too (per time step for an RNN). Kernels are redrawn with the fans
of what their layer contracts (`initjax.nn.layer_axes`). Modules: `recorder` (`tap`: marking
and recording layer outputs, the scan and vmap wrappers), `models` (what counts as a layer),
`prepare` (a model checked against x and the initializers before anything compiles),
`measurement` (`measure`: one compiled call over seeds and devices; `trace`: one network;
`layers`; `describe_init`), `jacobians` (`jacobian_spectra`: the singular values of every
layer's Jacobian with respect to the input).
"""
from initjax.measurement.probe.jacobians import jacobian_spectra
from initjax.measurement.probe.measurement import (STATISTICS, default_seed_chunk, describe_init,
                                                   entries, layer_statistics, layers,
                                                   least_squares, measure, trace, trace_count)
from initjax.measurement.probe.prepare import FanAxesWarning
from initjax.measurement.probe.recorder import ProbeError, tap
from initjax.nn.adapters import equinox
from initjax.nn.kernel_axes import KernelAxes
from initjax.nn.redraw import BIAS_NAMES, KERNEL_NAMES

__all__ = ["BIAS_NAMES", "FanAxesWarning", "KERNEL_NAMES", "KernelAxes", "ProbeError",
           "STATISTICS", "default_seed_chunk", "describe_init", "entries", "equinox",
           "jacobian_spectra", "layer_statistics", "layers", "least_squares", "measure", "tap",
           "trace", "trace_count"]
