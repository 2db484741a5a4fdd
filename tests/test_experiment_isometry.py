"""`python -m experiments.isometry` and its library part `initjax.studies.isometry_spectra`."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from initjax.core.errors import ConfigError
from initjax.studies import isometry_spectra as study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*flags, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "experiments.isometry", *flags], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout, env=env)


def test_config_checks_itself_and_names_the_field():
  for field, value in (("activations", ("swish",)), ("weights", ("haar",)), ("depths", (0,)),
                       ("density_depths", (3,)), ("width", 0), ("num_seeds", 1),
                       ("tanh_sigma2_b", 0.0), ("tanh_sigma2_b", float("nan")),
                       ("seed", -1), ("depths", (4, 4))):
    with pytest.raises(ConfigError) as e:
      study.SpectraConfig(**{field: value})
    assert e.value.field == field


def test_critical_cases():
  # chi_1 = 1 for each: linear 1, ReLU 2 (He), tanh with sigma2_b = 1e-3: 1.189 at q* = 0.107.
  cases = {c.label: c for c in study.cases(study.SpectraConfig())}
  assert len(cases) == 6
  assert cases["identity/gaussian"].sigma2_w == pytest.approx(1.0)
  assert cases["relu/orthogonal"].sigma2_w == pytest.approx(2.0)
  tanh = cases["tanh/orthogonal"]
  assert (tanh.sigma2_w, tanh.q_star) == (pytest.approx(1.1892, abs=1e-4),
                                          pytest.approx(0.1073, abs=1e-4))
  assert tanh.input_variance == pytest.approx((tanh.q_star - 1e-3) / tanh.sigma2_w)


def test_slope_is_fitted_through_the_origin():
  depths, values = np.array([1, 2, 4, 8, 64]), np.array([2.0, 4.0, 8.0, 16.0, 999.0])
  assert study.variance_slope(depths, values, max_depth=8) == pytest.approx(2.0)


@pytest.mark.slow  # 8-20 s: six cases of 8 small networks, compiled
def test_quick_run_writes_tidy_results_densities_summary_and_figures(tmp_path):
  out = tmp_path / "iso"
  proc = _run("--quick", f"--output_dir={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "slope measured" in proc.stdout and "tanh/orthogonal" in proc.stdout
  with open(out / "results.csv") as fh:
    rows = list(csv.DictReader(fh))
  assert set(rows[0]) == set(study.RESULT_COLUMNS)
  assert len(rows) == 6 * 5 * len(study.QUANTITIES)       # cases x depths x quantities
  orth = [r for r in rows if r["activation"] == "identity" and r["weights"] == "orthogonal"
          and r["quantity"] == "normalized_var"]
  assert all(abs(float(r["measured"])) < 1e-8 for r in orth)   # an exact isometry
  with open(out / "densities.csv") as fh:
    dens = list(csv.DictReader(fh))
  assert set(dens[0]) == set(study.DENSITY_COLUMNS) and len(dens) == 6 * 2 * 100
  summary = json.loads((out / "summary.json").read_text())
  assert summary["config"]["width"] == 32
  slope = summary["cases"]["relu/gaussian"]["variance_slope"]
  assert slope["theory"] == pytest.approx(2.0)
  for name in ("spectra.png", "moments.png"):
    assert (out / name).stat().st_size > 10_000
  assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


@pytest.mark.slow  # a few seconds per case: a Python start with JAX, nothing compiled
@pytest.mark.parametrize("flag, needle", [
    ("--activations=swish", "--activations: unknown value 'swish'; allowed: identity, relu, tanh"),
    ("--weights=haar", "--weights: unknown value 'haar'; allowed: gaussian, orthogonal"),
    ("--depths=0", "--depths"),
    ("--density_depths=3", "--density_depths: must be among --depths"),
    ("--width=0", "--width: must be >= 1"),
    ("--tanh_sigma2_b=0", "--tanh_sigma2_b"),
    ("--num_seeds=abc", "num_seeds"),
    ("--output_dir=/proc/initjax_cannot_write_here", "--output_dir"),
])
def test_bad_flags_fail_with_one_line(tmp_path, flag, needle):
  args = [flag] if flag.startswith("--output_dir") else [flag, f"--output_dir={tmp_path / 'o'}"]
  proc = _run(*args, timeout=120)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and needle in lines[0], proc.stderr
  assert not (tmp_path / "o" / "results.csv").exists()


@pytest.mark.slow
def test_help_exits_zero():
  proc = _run("--help", timeout=120)
  assert proc.returncode == 0 and "--tanh_sigma2_b" in proc.stdout + proc.stderr
