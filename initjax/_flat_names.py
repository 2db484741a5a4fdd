"""The short public paths `initjax.<module>`: the same module objects as the grouped paths.

Users import `from initjax import propagation, probe, theory, training, sweep, ...` (the README's
examples do); the code lives in the group folders (`initjax.measurement.propagation`, ...). A
short path is not a copy: `initjax.propagation is initjax.measurement.propagation`, and
`import initjax.sweep.config` gives `initjax.studies.sweep.config` itself, so module state,
classes and monkeypatching are shared. `initjax.theory` and `initjax.training` are group
packages that export their modules' names, so they need no entry here.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# short name -> grouped path (a package maps its submodules too: initjax.sweep.store ->
# initjax.studies.sweep.store). `depth_scales` was renamed `phases` when it moved: the module
# would otherwise share its name with `initjax.theory.depth_scales`, the function.
FLAT_NAMES = {
    "errors": "initjax.core.errors",
    "results": "initjax.core.results",
    "parallel": "initjax.core.parallel",
    "distributed": "initjax.core.distributed",
    "lock": "initjax.core.lock",
    "activations": "initjax.nn.activations",
    "gaussian_expectations": "initjax.nn.gaussian_expectations",
    "fans": "initjax.nn.fans",
    "initializers": "initjax.nn.initializers",
    "networks": "initjax.nn.networks",
    "residual": "initjax.nn.residual",
    "convolutional": "initjax.nn.convolutional",
    "gradients": "initjax.nn.gradients",
    "models": "initjax.nn.models",
    "mean_field": "initjax.theory.mean_field",
    "depth_scales": "initjax.theory.phases",
    "finite_width": "initjax.theory.finite_width",
    "architectures": "initjax.theory.architectures",
    "layer_statistics": "initjax.measurement.layer_statistics",
    "propagation": "initjax.measurement.propagation",
    "isometry": "initjax.measurement.isometry",
    "probe": "initjax.measurement.probe",
    "batch_training": "initjax.training.batch_training",
    "checkpoints": "initjax.training.checkpoints",
    "optimizers": "initjax.training.optimizers",
    "parametrization": "initjax.training.parametrization",
    "data": "initjax.training.data",
    "sweep": "initjax.studies.sweep",
    "propagation_figure": "initjax.studies.propagation_figure",
    "phase_diagram": "initjax.studies.phase_diagram",
    "isometry_spectra": "initjax.studies.isometry_spectra",
    "coord_check": "initjax.studies.coord_check",
    "lr_transfer": "initjax.studies.lr_transfer",
}


def grouped_name(fullname: str) -> str | None:
  """'initjax.sweep.store' -> 'initjax.studies.sweep.store'; None if not a short path."""
  parts = fullname.split(".")
  if len(parts) < 2 or parts[0] != "initjax" or parts[1] not in FLAT_NAMES:
    return None
  return ".".join([FLAT_NAMES[parts[1]], *parts[2:]])


class _ShortPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Imports `initjax.<short>` as the grouped module: one module object under both names."""

  def __init__(self):
    self._real_specs = {}

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if grouped_name(fullname) is None:
      return None
    return importlib.util.spec_from_loader(fullname, self)

  def create_module(self, spec):
    module = importlib.import_module(grouped_name(spec.name))
    self._real_specs[spec.name] = module.__spec__
    return module

  def exec_module(self, module):
    # The import system has just set module.__spec__ to the short path's spec; the module keeps
    # its own (its name, file and loader stay those of the grouped path).
    module.__spec__ = self._real_specs.pop(module.__spec__.name)


def install() -> None:
  if not any(isinstance(f, _ShortPathFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _ShortPathFinder())
