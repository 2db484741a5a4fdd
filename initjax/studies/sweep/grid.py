"""The grid of a sweep: its points, the groups that share a compiled program, their PRNG keys,
and how the grid is split into batch tasks.

Randomness (paired comparisons): from `--seed` and only the parameters that should matter,
  * initial weights of seed index i: (seed, arch, depth, width, activation, i), so every
    initializer, optimizer and learning rate starts from the same underlying draws (He, Xavier
    and sigma2_w=... are all plain normals: their weights differ only by a constant factor);
  * minibatch order of seed index i: (seed, i), the same for every grid point;
  * teacher-student data: (seed).
A grid point's results therefore do not depend on which other points are in the sweep, nor on
which points share its compiled program, its task or its devices.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from initjax.core import distributed
from initjax.studies.sweep.config import SweepConfig


@dataclasses.dataclass(frozen=True)
class GridPoint:
  init: str
  depth: int
  width: int
  activation: str
  optimizer: str
  learning_rate: float
  arch: str = "mlp"
  recurrent_init: str = ""    # rnn/lstm/gru: the recurrent kernels' initializer
  norm: str = "none"
  parametrization: str = "sp"

  @property
  def point_id(self) -> str:
    """Stable, file-name-safe id, e.g. he_normal-d30-w100-relu-momentum-lr0.01 (an architecture
    other than the MLP is its first part: cnn-he_normal-d6-w32-...; a normalization other than
    none comes next: batchnorm-he_normal-...; a recurrent initializer follows the init:
    rnn-lecun_normal-rec_identity-d40-...; a parametrization other than sp is its last part:
    ...-adam-lr0.01-mup)."""
    head = "" if self.arch == "mlp" else f"{self.arch}-"
    head += "" if self.norm == "none" else f"{self.norm}-"
    rec = f"-rec_{self.recurrent_init}" if self.recurrent_init else ""
    tail = "" if self.parametrization == "sp" else f"-{self.parametrization}"
    return (f"{head}{self.init}{rec}-d{self.depth}-w{self.width}-{self.activation}"
            f"-{self.optimizer}-lr{self.learning_rate:g}{tail}")

  @property
  def init_label(self) -> str:
    """The init, and the recurrent one where there is one (tables and legends)."""
    return f"{self.init}, rec {self.recurrent_init}" if self.recurrent_init else self.init

  @property
  def group_key(self) -> tuple:
    """Points with the same group_key share one compiled training program."""
    return (self.arch, self.depth, self.width, self.activation, self.optimizer, self.norm,
            self.parametrization)

  def as_dict(self) -> dict:
    """The fields, without norm when it is "none", recurrent_init when there is none and
    parametrization when it is sp (so that points of sweeps from before those existed keep
    their configuration and fingerprint)."""
    d = dataclasses.asdict(self)
    if d["norm"] == "none":
      del d["norm"]
    if not d["recurrent_init"]:
      del d["recurrent_init"]
    if d["parametrization"] == "sp":
      del d["parametrization"]
    return d


def expand_grid(config: SweepConfig) -> list[GridPoint]:
  """All grid points, ordered arch, norm, depth, width, activation, optimizer, learning rate,
  recurrent init (recurrent architectures only), init, parametrization."""
  return [GridPoint(init, depth, width, activation, optimizer, float(lr), arch, rec, norm,
                    parametrization)
          for arch in config.archs for norm in config.norms for depth in config.depths
          for width in config.widths
          for activation in config.activations for optimizer in config.optimizers
          for lr in config.grid_learning_rates(optimizer)
          for rec in config.recurrent_inits_for(arch) for init in config.inits
          for parametrization in config.parametrizations
          if lr in config.grid_learning_rates(optimizer, init)]


def group_points(points: Sequence[GridPoint]) -> list[list[GridPoint]]:
  """Groups points sharing a compiled program (same depth/width/activation/optimizer), in order."""
  groups: dict[tuple, list[GridPoint]] = {}
  for p in points:
    groups.setdefault(p.group_key, []).append(p)
  return list(groups.values())


def stable_int(text: str) -> int:
  """A 32-bit integer from a string, the same in every process (unlike `hash`)."""
  return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")


def point_keys(key: jax.Array, point: GridPoint, num_seeds: int) -> tuple[jax.Array, jax.Array]:
  """(init keys, data keys), num_seeds each, for a grid point (see the module docstring; the
  normalization does not enter: a batch-normalized network starts from the weights of the plain
  one, paired)."""
  arch = "" if point.arch == "mlp" else f"/arch={point.arch}"
  k_init = jax.random.fold_in(key, stable_int(
      f"init/depth={point.depth}/width={point.width}/activation={point.activation}{arch}"))
  k_data = jax.random.fold_in(key, stable_int("minibatch_order"))
  return _fold_in_range(k_init, num_seeds), _fold_in_range(k_data, num_seeds)


@functools.partial(jax.jit, static_argnums=1)
def _fold_in_range(key: jax.Array, n: int) -> jax.Array:
  """[fold_in(key, 0), ..., fold_in(key, n - 1)]: seed i's key does not depend on n."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def group_cost(points: Sequence[GridPoint], config: SweepConfig) -> float:
  """Relative cost of a group: networks x (depth x width^2 + width) x steps."""
  p = points[0]
  return len(points) * config.num_seeds * (p.depth * p.width ** 2 + p.width) * config.steps


def work_units(config: SweepConfig, num_tasks: int) -> list[tuple[GridPoint, ...]]:
  """The grid cut into work units for `num_tasks` batch tasks, in grid order.

  A unit is a whole compile group, or a contiguous piece of one: a group that is a fraction f of
  the total cost is cut into ceil(num_tasks x f) pieces (at most one per grid point). Groups
  are kept whole when there are enough of them to keep every task busy (one compilation per
  group); big groups are cut when there are not, so no task idles while another trains a
  group that is most of the sweep (each piece costs one more compilation of that group).
  """
  groups = group_points(expand_grid(config))
  costs = [group_cost(g, config) for g in groups]
  total = sum(costs)
  units = []
  for group, cost in zip(groups, costs):
    pieces = min(len(group), max(1, -(-num_tasks * cost // total)))
    for idx in np.array_split(np.arange(len(group)), pieces):
      units.append(tuple(group[i] for i in idx))
  return units


def task_points(config: SweepConfig, task_index: int,
                num_tasks: int) -> list[list[GridPoint]]:
  """Task `task_index`'s share of the grid, grouped by compiled program, in grid order.

  The `work_units` are dealt to the tasks by `distributed.split_for_task` with their cost
  (longest first, to the least-loaded task): deterministic, every point in exactly one task.
  A task trains all of its points of one group together (one compilation per group per task).
  """
  units = distributed.split_for_task(work_units(config, num_tasks), task_index, num_tasks,
                                     cost=lambda unit: group_cost(unit, config))
  mine = {p.point_id for unit in units for p in unit}
  return group_points([p for p in expand_grid(config) if p.point_id in mine])
