"""initjax: weight initialization in JAX, from the He/Xavier derivations to measured sweeps.

The code is grouped by what it holds, each group importing only the groups below it (the
README's "Layout"):

  initjax.studies      the experiments' library parts: sweep/, propagation_figure, phase_diagram,
                       isometry_spectra
  initjax.training     loop, batch_training, checkpoints, optimizers, data
  initjax.measurement  layer_statistics, propagation, isometry, probe/
  initjax.theory       variance, mean_field, phases, finite_width, residual, convolutional,
                       spectra, architectures
  initjax.nn           activations, gaussian_expectations, fans, initializers, networks,
                       residual, convolutional, gradients, models
  initjax.core         errors, results, output_kind, progress, parallel, distributed, lock

The modules users import have short paths too, the same module objects: `from initjax import
propagation, probe, theory, models, batch_training, training, data, architectures, sweep`
(`initjax._flat_names` lists them). Nothing here holds state.
"""
from initjax import _flat_names
from initjax.nn.activations import activation_names, get_activation
from initjax.nn.gradients import backprop_reference, layer_gradients
from initjax.nn.initializers import (INITIALIZERS, compute_fans, expected_variance, gain,
                                     get_initializer, initializer_names)
from initjax.nn.networks import apply_mlp, init_mlp, least_squares_loss, trace_mlp

_flat_names.install()

__version__ = "0.1.0"

__all__ = [
    "INITIALIZERS", "activation_names", "apply_mlp", "backprop_reference", "compute_fans",
    "expected_variance", "gain", "get_activation", "get_initializer", "init_mlp",
    "initializer_names", "layer_gradients", "least_squares_loss", "trace_mlp",
]


def __getattr__(name: str):
  """`initjax.<short>` without an import statement (`initjax.propagation.measure`), loaded on
  first use so that `import initjax` stays light."""
  if name in _flat_names.FLAT_NAMES or name in ("theory", "training"):
    import importlib  # pylint: disable=import-outside-toplevel
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_flat_names.FLAT_NAMES) | {"theory", "training"})
