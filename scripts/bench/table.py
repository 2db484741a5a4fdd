"""The printed table: every section's rows, then the ratios against their targets."""
from __future__ import annotations

import math

from bench.report import OURS, TARGETS


def _f(v, fmt: str = "8.2f") -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return f"{'n/a':>{fmt.split('.')[0]}}"
  return format(v, fmt)


def _stopped(r: dict) -> str:
  if "stopped_at_budget_s" not in r:
    return ""
  return (f" (stopped at {r['stopped_at_budget_s']:.1f} s, 3x its 1-thread twin"
          f"{': warm-up only' if r.get('excluded_after_warmup') else ''})")


def header(res: dict) -> None:
  m, v = res["machine"], res["versions"]
  print(f"\ninitjax benchmark ({res['mode']}): {m.get('cpu_model', '?')}, "
        f"{m.get('cpus_usable', m.get('cpu_count'))} cores, jax {v['jax']} "
        f"({v['jax_backend']}), torch {v.get('torch') or res.get('torch')}; load average "
        f"{m.get('load_average_at_start')} at start, {m.get('load_average_at_end')} at end")
  mm = res.get("matmul", {})
  if mm.get("gflops"):
    print(f"dense float32 matmul {mm['n']}^2 (jit): {mm['gflops']:.1f} GFLOP/s "
          f"(after propagation: {_f(mm.get('gflops_after_propagation'), '.1f')})")


def propagation(res: dict) -> None:
  p = res["config"]["propagation"]
  for n, rows in res.get("propagation", {}).items():
    if "error" in rows:
      print(f"\nPropagation N={n}: {rows['error'][:300]}")
      continue
    print(f"\nPropagation, {p['depth']} x {p['width']} ReLU, N={n} inputs/network "
          f"({rows['_flops_per_network'] / 1e9:.3f} GFLOP/network); torch: {rows['_torch']}")
    print(f"  {'contender':44s} {'ms/net':>9s} {'nets/s':>8s} {'GFLOP/s':>7s} {'initjax x':>9s}"
          f" {'cpu/wall':>8s} {'1st call':>8s}")
    ours = rows["initjax.measure"]["items_per_s"]
    for name, r in rows.items():
      if name.startswith("_"):
        continue
      note = _stopped(r)
      print(f"  {name:44s} {r['ms_per_item']:9.2f} {r['items_per_s']:8.1f} {r['gflops']:7.1f} "
            f"{ours / r['items_per_s']:9.2f} {_f(r.get('cpu_over_wall'))} "
            f"{r['first_call_s']:7.2f}s{note}")


def training_rows(title: str, rows: dict) -> None:
  if "error" in rows:
    print(f"\n{title}: {rows['error'][-1500:]}")
    return
  w = rows["_workload"]
  print(f"\n{title}: {w['arch']} depth {w['depth']} width {w['width']}, minibatch {w['batch']}, "
        f"{w['networks']} networks x {w['steps']} steps, "
        f"{w['flops_per_network_step'] / 1e6:.1f} MFLOP/network-step; torch: {rows['_torch']}")
  print(f"  {'contender':46s} {'net-steps/s':>11s} {'GFLOP/s':>7s} {'initjax x':>9s} "
        f"{'cpu/wall':>8s} {'1st call':>8s} {'loss 0 -> end':>14s}")
  ours = rows.get(OURS, {}).get("network_steps_per_s")
  for name, r in rows.items():
    if name.startswith("_"):
      continue
    rel = ours / r["network_steps_per_s"] if ours else None
    note = _stopped(r)
    print(f"  {name:46s} {r['network_steps_per_s']:11.1f} {r['gflops']:7.1f} {_f(rel, '9.2f')} "
          f"{_f(r.get('cpu_over_wall'))} {r['first_call_s']:7.2f}s "
          f"{_f(r.get('loss_first_step'), '6.3f')} -> {_f(r.get('loss_last_steps'), '5.3f')}"
          f"{note}")


def _slots(res: dict, section: str, title: str) -> None:
  """The rows of each slot of a section with slots (training widths, recurrent cells)."""
  rows = res.get(section)
  if rows and "error" in rows:
    print(f"\n{title}: {rows['error'][-1500:]}")
  elif rows:
    for slot, slot_rows in rows.items():
      training_rows(f"{title} {slot}", slot_rows)


def training(res: dict) -> None:
  _slots(res, "training", "Training")
  if res.get("cnn"):
    training_rows("CNN training", res["cnn"])
  if res.get("cnn_batchnorm"):
    training_rows("CNN training, batchnorm", res["cnn_batchnorm"])
  _slots(res, "recurrent", "Recurrent training (depth = time steps):")


def model_rows(res: dict) -> None:
  m = res.get("models")
  if not m:
    return
  if "error" in m:
    print(f"\nModels: {m['error'][-1500:]}")
    return
  p = res["config"]["models"]["probe"]
  print(f"\nProbe, Flax linen MLP {p['depth']} x {p['width']}, N={p['batch']}; torch: "
        f"{m['probe']['_torch']}")
  for name, r in m["probe"].items():
    if not name.startswith("_"):
      print(f"  {name:46s} {r['networks_per_s']:9.1f} networks/s {_stopped(r)}")
  c = m["comparison"]
  print(f"Comparing {len(c['initializers'])} initializers on a transformer block: "
        f"{c['compiles_one_call']} compile(s), {c['seconds_one_call']:.1f} s in one call; "
        f"{c['compiles_separate_calls']} compile(s), {c['seconds_separate_calls']:.1f} s in one "
        "call each")
  print("nn.RNN probe, first call (s) by time steps: " + ", ".join(
      f"{k}: {v['median_s']:.2f}" for k, v in m["rnn_compile"].items()))
  bn = m["bn_resnet"]
  w = bn["_workload"]
  print(f"BatchNorm ResNet training, {w['networks']} networks x {w['steps']} steps, "
        f"{w['channels']} channels; torch: {bn['_torch']}")
  for name, r in bn.items():
    if not name.startswith("_"):
      print(f"  {name:46s} {r['network_steps_per_s']:9.1f} network-steps/s {_stopped(r)}")


def others(res: dict) -> None:
  comp = res.get("compile", {})
  if comp and "error" not in comp:
    print("\nCompile time (s) by depth:   " + "  ".join(f"{d:>6s}" for d in comp["propagation"]))
    for section in ("propagation", "training"):
      print(f"  {section:26s} " + "  ".join(f"{v['median_s']:6.2f}"
                                             for v in comp[section].values()))
  mem = res.get("memory", {})
  if mem and "error" not in mem:
    print(f"\nMemory: {mem['num_seeds']} seeds (N={mem['batch_size']}, chunk {mem['seed_chunk']},"
          f" {mem['devices']} devices): peak RSS {mem['peak_rss_gb']:.2f} GB "
          f"({mem['peak_rss_gb_after_imports']:.2f} GB after imports), "
          f"{mem['wall_s_including_compile']:.1f} s including compile")
  sw = res.get("sweep_start", {})
  if sw and "error" not in sw:
    print(f"\nSweep start (python -m experiments.sweep {sw['flags']}): cold {sw['cold_s']:.1f} s,"
          f" warm {sw['warm_s']:.1f} s ({sw['cache_entries_after_cold']} cache entries)")
  for name in ("compile", "memory", "sweep_start"):
    if "error" in res.get(name, {}):
      print(f"\n{name}: {res[name]['error'][-1500:]}")


def isometry(res: dict) -> None:
  rows = res.get("isometry")
  if not rows:
    return
  if "error" in rows:
    print(f"\nisometry: {rows['error'][-1500:]}")
    return
  w = rows["_workload"]
  print(f"\nJacobian spectra, tanh at criticality, depth {w['depth']} x width {w['width']} "
        f"({w['flops_per_network'] / 1e9:.2f} GFLOP/network), {w['networks']} networks "
        f"(loops: {w['loop_networks']})")
  print(f"  {'contender':44s} {'ms/net':>9s} {'nets/s':>8s} {'GFLOP/s':>7s} {'cpu/wall':>8s}"
        f" {'1st call':>8s}")
  for name, r in rows.items():
    if not name.startswith("_"):
      print(f"  {name:44s} {r['ms_per_network']:9.1f} {r['networks_per_s']:8.2f} "
            f"{r['gflops']:7.1f} {_f(r.get('cpu_over_wall'))} {r['first_call_s']:7.2f}s"
            f"{_stopped(r)}")


def ratios(res: dict) -> None:
  print("\nRatios (target):")
  for k, v in res["ratios"].items():
    target = TARGETS.get(k)
    tgt = f"{target[0]} {target[1]}" if target else ""
    met = res["targets"].get(k, {}).get("met")
    verdict = {True: "met", False: "MISSED", None: "" if not target else "not measured"}[met]
    print(f"  {k:48s} {_f(v, '8.3f')}  {tgt:8s} {verdict}")


def print_table(res: dict) -> None:
  header(res)
  propagation(res)
  training(res)
  model_rows(res)
  others(res)
  isometry(res)
  ratios(res)
