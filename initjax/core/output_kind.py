"""Which kind of results an output directory holds, so that a command of another kind refuses it
instead of writing its own files over them.

The first run into a directory records its kind in `<dir>/initjax_output.json`
({"kind": "sweep"}; written atomically, before any result). A run of another kind is refused
with `WrongKind`, whose one-line message names the kind found. A directory without that file
(written before it existed) is judged by what it holds: `phase_diagram.png` is a phase diagram,
`propagation.png` a propagation figure, `loss_curves.png` a sweep; a `sweep_config.json` is a
sweep unless all its inits are `sigma2_w=...` (the phase diagram's, whose unfinished runs look
alike: either command may then take it). An empty directory, or one of other files, takes any
kind.
"""
from __future__ import annotations

import json
import os

from initjax.core.results import atomic_write_json

MARKER = "initjax_output.json"
KINDS = {
    "sweep": "a training sweep (experiments.sweep)",
    "phase_diagram": "a phase diagram (experiments.phase_diagram)",
    "propagation_figure": "a propagation figure (experiments.propagation)",
    "zoo": "a model-zoo study (experiments.zoo)",
    "isometry": "a Jacobian spectra run (experiments.isometry)",
    "norm_spread": "a norm-spread run (experiments.norm_spread)",
    "saturation": "a saturation run (experiments.saturation)",
    "coord_check": "a coordinate check (experiments.coord_check)",
}
_FIGURES = {"phase_diagram.png": "phase_diagram", "propagation.png": "propagation_figure",
            "loss_curves.png": "sweep", "zoo_transformer.png": "zoo", "zoo_rnn.png": "zoo",
            "zoo_resnet.png": "zoo", "spectra.png": "isometry",
            "norm_spread.png": "norm_spread", "saturation.png": "saturation",
            "coord_check.png": "coord_check"}


class WrongKind(ValueError):
  """The directory holds results of another kind; the message is one line naming it."""


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"unknown output kind {kind!r}; known: {', '.join(KINDS)}")


def _recorded(directory: str) -> str | None:
  try:
    with open(os.path.join(directory, MARKER), encoding="utf-8") as fh:
      kind = json.load(fh).get("kind")
  except (OSError, ValueError, AttributeError):
    return None
  return kind if kind in KINDS else None


def _inferred(directory: str) -> str | None:
  for name, kind in _FIGURES.items():
    if os.path.exists(os.path.join(directory, name)):
      return kind
  try:
    with open(os.path.join(directory, "sweep_config.json"), encoding="utf-8") as fh:
      inits = json.load(fh).get("inits") or []
  except (OSError, ValueError, AttributeError):
    return None
  if inits and all(str(i).startswith("sigma2_w=") for i in inits):
    return None   # a phase diagram's grid, or a sweep over sigma2_w: either may take it
  return "sweep"


def kind_of(directory: str) -> str | None:
  """The kind of results `directory` holds (a key of `KINDS`), or None when it holds none that
  tell (see the module docstring)."""
  return _recorded(directory) or _inferred(directory)


def check(directory: str, kind: str) -> None:
  """Raises WrongKind unless `directory` may hold results of `kind`; writes nothing."""
  _check_kind(kind)
  found = kind_of(directory)
  if found is not None and found != kind:
    raise WrongKind(f"{directory} holds the results of {KINDS[found]}, not of {KINDS[kind]}; "
                    "refusing to write over them: use another directory")


def claim(directory: str, kind: str) -> None:
  """`check`, then records `kind` in the directory (once; an existing record stays)."""
  check(directory, kind)
  if _recorded(directory) != kind:
    atomic_write_json(os.path.join(directory, MARKER), {"kind": kind})
