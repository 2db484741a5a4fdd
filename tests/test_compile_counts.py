"""One compile per shape, counted through JAX's public monitoring events: configurations that
differ only in values (weight variances, initializers that draw plain normals, learning rates)
reuse the compiled programs; a new shape compiles."""
import collections
import contextlib

import jax
import pytest

from initjax.measurement import propagation
from initjax.studies import propagation_figure
from initjax.studies.sweep.grid import GridPoint
from initjax.studies.sweep.group import signal_at_init

_EVENTS = collections.Counter()
jax.monitoring.register_event_duration_secs_listener(
    lambda name, secs, **kw: _EVENTS.update([name]))
_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
  """Yields a dict whose "n" is the number of XLA compilations inside the block."""
  before = _EVENTS[_COMPILE]
  result = {}
  yield result
  result["n"] = _EVENTS[_COMPILE] - before


def _figure(sigma2, inits):
  return propagation_figure.FigureConfig(sigma2=sigma2, inits=inits, depth=5, width=12,
                                         input_dim=7, num_seeds=6, batch_size=8)


def test_figure_settings_share_one_program():
  # The book's fixed variances and named plain-normal initializers all run in one program:
  # seven other settings of the same shape (other variances, other initializers) compile
  # nothing more. Before, every named initializer compiled its own program.
  first = _figure((0.001, 0.01, 0.02, 0.1, 1.0), ("he_normal", "xavier_normal"))
  with count_compiles() as warm:
    propagation_figure.measure_settings(first, propagation_figure.settings_for(first))
  assert warm["n"] > 0
  other = _figure((0.003, 0.03, 0.3, 3.0, 0.05), ("lecun_normal", "glorot_normal"))
  with count_compiles() as again:
    out, _ = propagation_figure.measure_settings(other, propagation_figure.settings_for(other))
  assert again["n"] == 0, again
  assert len(out) == 7


@pytest.mark.slow  # several seconds: the default suite keeps under ~7 min
def test_measure_compiles_once_per_shape():
  spec = propagation.NetworkSpec(input_dim=5, width=9, depth=4, batch_size=6)
  propagation.measure(jax.random.key(0), spec, weight_init="he_normal", num_seeds=4)
  with count_compiles() as same_shape:
    for init in ("xavier_normal", "lecun_normal", "kaiming_normal"):
      propagation.measure(jax.random.key(1), spec, weight_init=init, scales=(0.5,), num_seeds=4)
  assert same_shape["n"] == 0, same_shape
  with count_compiles() as deeper:
    propagation.measure(jax.random.key(0), propagation.NetworkSpec(
        input_dim=5, width=9, depth=6, batch_size=6), weight_init="he_normal", num_seeds=4)
  assert deeper["n"] > 0


def test_signal_at_init_compiles_once_per_shape():
  he = GridPoint("he_normal", 3, 10, "relu", "momentum", 0.01)
  signal_at_init(he, input_dim=6, output_dim=4, num_seeds=3, seed=0)
  with count_compiles() as other_init:
    signal_at_init(GridPoint("xavier_normal", 3, 10, "relu", "adam", 0.001), input_dim=6,
                   output_dim=4, num_seeds=3, seed=0)
  assert other_init["n"] == 0, other_init
