"""scripts/benchmark.py runs end to end (tiny sizes, in a subprocess) and writes valid JSON.

The benchmark is not a timed test: nothing here asserts anything about speed.
"""
import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATIO_KEYS = ("propagation_vs_numpy_loop", "propagation_vs_jit_loop",
              "propagation_fraction_of_matmul_peak", "training_vs_sequential",
              "compile_time_200_over_10_layers", "peak_rss_gb_10000_seeds")


def test_tiny_benchmark_writes_json_with_every_ratio(tmp_path):
  out = tmp_path / "bench.json"
  proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "benchmark.py"), "--tiny",
                         f"--output={out}"], cwd=tmp_path, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Ratios" in proc.stdout
  res = json.loads(out.read_text())
  for key in RATIO_KEYS:
    assert key in res["ratios"], key
    value = res["ratios"][key]
    assert value is None or (isinstance(value, float) and math.isfinite(value) and value > 0), (
        key, value)
  for key in ("machine", "versions", "flop_convention", "matmul", "propagation", "training",
              "compile", "memory"):
    assert key in res, key
  assert "error" not in res["training"] and "error" not in res["memory"]
  # Every timing reports its repeats and the median of them; compile time is separate.
  row = res["propagation"]["8"]["initjax.measure"]
  assert len(row["all_s"]) >= 1 and row["median_s"] > 0 and "first_call_s" in row
  assert res["memory"]["num_seeds"] == 10000 and res["memory"]["all_finite"]
  assert set(res["compile"]["propagation"]) == {"2", "8"}
