"""The exceptions initjax raises for settings and files it cannot use.

Every message is one line that names the problem, so that an entry point can print it as is.
"""
from __future__ import annotations


class ConfigError(ValueError):
  """A setting of a config is not allowed; `field` names it (the same name as its flag)."""

  def __init__(self, field: str, message: str):
    super().__init__(f"{field}: {message}")
    self.field = field
    self.message = message


def check_choice(kind: str, name, choices) -> str:
  """`name` if it is one of `choices`, else ValueError "Unknown <kind> 'name'; valid choices: ..."
  (every registry of initjax reports an unknown name this way)."""
  if name not in choices:
    raise ValueError(f"Unknown {kind} {name!r}; valid choices: {', '.join(choices)}")
  return name


class ModelError(ValueError):
  """A model, a call argument or an initializer that initjax cannot use with it; one line that
  names the model (or parameter paths) and what is wrong, raised before anything compiles."""
