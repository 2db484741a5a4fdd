"""The README is the front door: its code runs as written and its commands are the CI's."""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()


def _blocks(lang):
  return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


@pytest.mark.slow  # about 30 s: every README example runs as a script
def test_python_examples_run_as_written(tmp_path):
  blocks = _blocks("python")
  assert blocks, "the README has no python example"
  for i, code in enumerate(blocks):
    script = tmp_path / f"readme_{i}.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), "an example printed nothing"
  # The first example's output shown in the README: theory values are exact.
  assert "theory +0.30" in README


def test_readme_shows_the_two_setup_commands_and_ci_runs_the_test_one():
  commands = [b.strip() for b in _blocks("bash")]
  assert 'pip install -e . && python -m experiments.sweep' in commands
  test_cmd = 'pip install -e ".[test]" && python -m pytest'
  assert test_cmd in commands
  ci = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
  assert test_cmd in ci.splitlines()
