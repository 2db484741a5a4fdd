"""The `python -m experiments.propagation` entry point, run as a user runs it (subprocess)."""
import csv
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--depth=6", "--width=16", "--input_dim=8", "--num_seeds=4", "--batch_size=8"]


def _run(*flags, timeout=240):
  return subprocess.run([sys.executable, "-m", "experiments.propagation", *flags], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # end to end, several seconds: runs in the slow pass
def test_small_run_writes_tidy_results_summary_and_figure(tmp_path):
  out = tmp_path / "fig"
  proc = _run(*SMALL, "--sigma2=0.01,1.0", "--inits=he_normal", f"--output_dir={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "fwd measured" in proc.stdout and "he_normal" in proc.stdout
  with open(out / "results.csv") as fh:
    rows = list(csv.DictReader(fh))
  required = {"init", "sigma2", "activation", "depth", "width", "layer", "quantity", "mean",
              "median", "q05", "q95", "log10_mean", "theory", "log10_theory", "num_seeds",
              "flagged"}
  assert required <= set(rows[0])
  # 3 settings x (f: 7 + h: 6 + dl/dh: 6 + dl/df: 7 + dl/dOmega: 7 layers).
  assert len(rows) == 3 * 33
  assert {r["quantity"] for r in rows} == {"var_f", "var_h", "var_dl_dh", "var_dl_df",
                                           "var_dl_domega"}
  assert all(r["flagged"] == "False" for r in rows)
  summary = json.loads((out / "summary.json").read_text())
  assert summary["config"]["depth"] == 6 and summary["config"]["inits"] == ["he_normal"]
  slope = summary["settings"]["sigma2=1"]["log10_change_per_layer"]
  assert slope["forward_theory"] == pytest.approx(0.903, abs=1e-3)  # log10(16 / 2)
  assert (out / "propagation.png").stat().st_size > 10_000
  assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


@pytest.mark.slow  # end to end, several seconds: runs in the slow pass
def test_overflow_outside_log_space_is_flagged_not_written(tmp_path):
  # Identity activation with random biases is not exactly rescalable: float32 overflows and
  # those rows must be flagged with empty values, never 'inf' or 'nan' in the file.
  out = tmp_path / "flag"
  proc = _run("--depth=30", "--width=100", "--input_dim=100", "--num_seeds=2",
              "--batch_size=4", "--sigma2=1.0", "--inits=", "--activation=identity",
              "--bias_variance=0.1", f"--output_dir={out}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  text = (out / "results.csv").read_text()
  assert "inf" not in text.lower() and "nan" not in text.lower()
  rows = list(csv.DictReader(text.splitlines()))
  assert any(r["flagged"] == "True" and r["median"] == "" for r in rows)
  assert "could not be measured" in proc.stderr


@pytest.mark.parametrize("flag, needle", [
    ("--sigma2=0", "--sigma2"),
    ("--sigma2=-1,0.1", "--sigma2"),
    pytest.param("--depth=0", "--depth", marks=pytest.mark.slow),
    pytest.param("--width=0", "--width", marks=pytest.mark.slow),
    pytest.param("--inits=nope", "--inits", marks=pytest.mark.slow),
    pytest.param("--activation=swish", "--activation", marks=pytest.mark.slow),
    pytest.param("--dtype=float16", "--dtype", marks=pytest.mark.slow),
    pytest.param("--output_dir=/proc/initjax_cannot_write_here", "--output_dir",
                 marks=pytest.mark.slow),
    pytest.param("--num_seeds=abc", "num_seeds", marks=pytest.mark.slow),
    ("--sigma2=inf", "--sigma2: values must be finite numbers > 0"),      # all-NaN output before
    pytest.param("--bias_variance=inf", "--bias_variance: must be a finite number",
                 marks=pytest.mark.slow),  # a traceback before
    pytest.param("--bias_variance=nan", "--bias_variance: must be a finite number",
                 marks=pytest.mark.slow),
])
def test_bad_flags_fail_with_one_line(tmp_path, flag, needle):
  args = list(SMALL)
  if flag.startswith("--output_dir"):
    args.append(flag)
  else:
    args += [flag, f"--output_dir={tmp_path / 'o'}"]
  proc = _run(*args, timeout=60)
  assert proc.returncode != 0
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and needle in lines[0], proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "o" / "results.csv").exists()


def test_config_checks_itself_and_names_the_field():
  from initjax.core.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from initjax.studies.propagation_figure import FigureConfig  # pylint: disable=import-outside-toplevel
  for field, value in (("sigma2", (float("inf"),)), ("sigma2", (float("nan"),)),
                       ("sigma2", (0.1, 0.1)), ("inits", ("he_normal", "he_normal")),
                       ("bias_variance", float("nan")), ("bias_variance", float("inf")),
                       ("bias_variance", -1.0), ("seed", 2 ** 32)):
    with pytest.raises(ConfigError) as e:
      FigureConfig(**{field: value})
    assert e.value.field == field
