"""The package layout: imports only go down the stack of groups that the README's Layout draws,
without cycles, the picture lists every module, and the short public paths are the grouped
modules themselves.

The group order is read from the README (the fenced block in "## Layout"), so the picture and the
code cannot drift apart: an import from a lower group into a higher one, a module missing from
the picture, or a cycle of module-level imports fails here with the file and line.
"""
import ast
import importlib
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "initjax"


def readme_groups() -> list[tuple[str, list[str]]]:
  """[(group, [module names])] from the top of the README's picture down."""
  text = (ROOT / "README.md").read_text()
  section = text[text.index("\n## Layout\n"):]
  block = section.split("```")[1]
  groups: list[tuple[str, list[str]]] = []
  for line in block.splitlines():
    m = re.match(r"initjax/(\w+)/\s+(.*)", line)
    rest = m.group(2) if m else line.strip().lstrip("|").strip()
    if m:
      groups.append((m.group(1), []))
    if groups and rest:
      groups[-1][1].extend(n.strip().rstrip("/") for n in rest.split(",") if n.strip())
  return groups


GROUPS = readme_groups()
RANK = {name: len(GROUPS) - i for i, (name, _) in enumerate(GROUPS)}   # core lowest


def module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(ROOT).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def library_files() -> list[pathlib.Path]:
  return sorted(PACKAGE.rglob("*.py"))


def is_module(dotted: str) -> bool:
  base = ROOT.joinpath(*dotted.split("."))
  return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports_of(path: pathlib.Path, top_level_only: bool = False):
  """(line, imported module) for every initjax import in a file; `from A import b` names the
  module A.b where b is one, else A."""
  tree = ast.parse(path.read_text(), str(path))
  name = module_name(path)
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  nodes = tree.body if top_level_only else ast.walk(tree)
  for node in nodes:
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] == "initjax":
          yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parent = package.split(".")
        parent = parent[:len(parent) - (node.level - 1)]
        base = ".".join(parent + ([base] if base else []))
      if base.split(".")[0] != "initjax":
        continue
      for alias in node.names:
        name = f"{base}.{alias.name}"
        yield node.lineno, (name if is_module(name) or base == "initjax" else base)


def group_of(dotted: str) -> str | None:
  parts = dotted.split(".")
  return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_the_readme_draws_every_group_folder_with_its_modules():
  folders = sorted(p.name for p in PACKAGE.iterdir()
                   if p.is_dir() and (p / "__init__.py").exists())
  assert sorted(RANK) == folders, "the README's picture and initjax/'s folders differ"
  for name, listed in GROUPS:
    folder = PACKAGE / name
    present = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    present += sorted(p.name for p in folder.iterdir()
                      if p.is_dir() and (p / "__init__.py").exists())
    assert sorted(listed) == sorted(present), f"initjax/{name}/ in the README's Layout"
  loose = sorted(p.name for p in PACKAGE.glob("*.py")
                 if p.name not in ("__init__.py", "_flat_names.py"))
  assert not loose, f"modules outside every group: {loose}"


def upward_imports(files) -> list[str]:
  """'file:line imports X (why)' for every import that goes up the stack or uses a short path."""
  found = []
  for path in files:
    here = group_of(module_name(path))
    if here is None:        # initjax/__init__.py and _flat_names.py: the facade over all groups
      continue
    for line, target in imports_of(path):
      there = group_of(target)
      where = f"{path.relative_to(ROOT)}:{line} imports {target}"
      if there is None:
        found.append(f"{where} (not in a group: a short path or the package facade)")
      elif RANK[there] > RANK[here]:
        found.append(f"{where} ({there} is above {here})")
  return found


def test_no_import_goes_up_the_stack():
  upward = upward_imports(library_files())
  assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of the import graph (module -> modules it imports at module level), or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if nxt not in graph:
        continue
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_module_level_imports_have_no_cycle():
  graph = {module_name(p): {t for _, t in imports_of(p, top_level_only=True)}
           for p in library_files()}
  assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
  """The check above can fail: an nn module importing the sweep inside a function, a theory
  module importing a short path are reported; an import from a lower group is not."""
  for folder in ("initjax/nn", "initjax/theory", "initjax/studies/sweep"):
    (tmp_path / folder).mkdir(parents=True)
    (tmp_path / folder / "__init__.py").write_text("")
  (tmp_path / "initjax/nn/bad.py").write_text(
      "import math\nfrom initjax.core import errors\n\ndef f():\n"
      "  from initjax.studies import sweep\n")
  (tmp_path / "initjax/theory/short.py").write_text("from initjax import propagation\n")
  (tmp_path / "initjax/theory/fine.py").write_text("from initjax.nn import bad\n")
  monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
  found = upward_imports(sorted((tmp_path / "initjax").rglob("*.py")))
  assert found == [
      "initjax/nn/bad.py:5 imports initjax.studies.sweep (studies is above nn)",
      "initjax/theory/short.py:1 imports initjax.propagation (not in a group: a short path or "
      "the package facade)",
  ], found


def test_entry_points_and_scripts_import_the_grouped_paths():
  from initjax import _flat_names  # pylint: disable=import-outside-toplevel
  short = set(_flat_names.FLAT_NAMES)
  found = []
  for folder in ("experiments", "scripts"):
    for path in sorted((ROOT / folder).rglob("*.py")):
      for line, target in imports_of(path):
        parts = target.split(".")
        if len(parts) > 1 and parts[1] in short:
          found.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
  assert not found, "\n".join(found)


@pytest.mark.parametrize("short", sorted(importlib.import_module("initjax._flat_names").FLAT_NAMES))
def test_a_short_path_is_the_grouped_module(short):
  import initjax  # pylint: disable=import-outside-toplevel
  from initjax import _flat_names  # pylint: disable=import-outside-toplevel
  grouped = importlib.import_module(_flat_names.FLAT_NAMES[short])
  assert importlib.import_module(f"initjax.{short}") is grouped
  assert getattr(initjax, short) is grouped
  assert grouped.__spec__.name == grouped.__name__ == _flat_names.FLAT_NAMES[short]


def test_the_public_imports_users_write_keep_working():
  """The README's imports and the names users call, in a fresh interpreter (so nothing is
  imported yet), including a submodule of a short path and an attribute without an import."""
  code = """
import initjax
assert callable(initjax.get_initializer) and callable(initjax.init_mlp)
assert initjax.propagation.measure is initjax.measurement.propagation.measure
from initjax import (architectures, batch_training, data, models, probe, propagation, sweep,
                     theory, training)
from initjax.sweep.config import SweepConfig
import initjax.studies.sweep.config as grouped
assert SweepConfig is grouped.SweepConfig
from initjax.probe import recorder, tap
import initjax.measurement.probe.recorder
assert recorder is initjax.measurement.probe.recorder
assert theory.predict_mlp and theory.depth_scales("relu", 2.0).phase == "critical"
assert training.TrainSpec is initjax.training.loop.TrainSpec
assert batch_training.run_networks and data.load_mnist1d and models.Model and architectures.get
import sys
assert not [m for m in sys.modules if m.startswith("initjax.") and m.count(".") > 1
            and sys.modules[m].__name__ != m and not m.startswith(("initjax.sweep.",
                                                                  "initjax.probe."))]
print("ok")
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def _public_top_level_names(path: pathlib.Path) -> set[str]:
  names = set()
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, ast.Assign):
      names.update(t.id for t in node.targets if isinstance(t, ast.Name))
  return {n for n in names if not n.startswith("_") and n != "Params"}


@pytest.mark.parametrize("package, module", [("training", "loop"), ("theory", "variance")])
def test_a_group_package_exports_the_module_it_replaced(package, module):
  """`initjax.training` was the loop's module and `initjax.theory` the variance module's: every
  public name they defined is still there."""
  pkg = importlib.import_module(f"initjax.{package}")
  names = _public_top_level_names(PACKAGE / package / f"{module}.py")
  assert names and names <= set(pkg.__all__) and all(hasattr(pkg, n) for n in names), (
      sorted(names - set(pkg.__all__)))


def test_import_initjax_stays_light():
  """`import initjax` loads the initializers and networks, not the training or the sweep."""
  code = ("import sys, initjax; print(','.join(sorted(m for m in sys.modules "
          "if m.startswith(('initjax.', 'optax', 'orbax', 'matplotlib')))))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  loaded = out.stdout.strip().split(",")
  assert not [m for m in loaded if m.startswith(("optax", "orbax", "matplotlib",
                                                 "initjax.studies", "initjax.training"))], loaded
