r"""Named reproductions of the published claims initjax rests on, each checked.

    python -m experiments.reproduce --list
    python -m experiments.reproduce he2015_fig3 hanin_rolnick2018 --output_dir=out/reproduce
    python -m experiments.reproduce --all --quick          # the small variants (CI)

Each NAME runs its experiment with its named configuration (`python -m experiments.<experiment>
--config=experiments/configs/<config>.py[:quick] --output_dir=<output_dir>/<NAME>[_quick]`:
resumable and splittable as that experiment is; rerun to resume), then checks the claim
against the outputs (`initjax.studies.reproductions`) and writes the verdict (claim, the
paper's result, the criterion, held / did not hold, why, the figure) to verdict.json in that
directory, and every verdict found under --output_dir to reproductions.json. Exit status 0
when every claim checked held, 1 when one did not hold or its run failed, 2 for bad flags.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from absl import flags

from experiments import cli

_LIST = flags.DEFINE_bool("list", False, "List the reproductions and exit.")
_ALL = flags.DEFINE_bool("all", False, "Run every reproduction.")
_QUICK = flags.DEFINE_bool("quick", False, "The configurations' quick variants (small, for CI; "
                           "a claim may not show at that size, and the verdict says so).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/reproduce", "Where the runs go, one "
                                  "directory per reproduction.")

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _names(argv: list[str], known) -> list[str]:
  names = list(dict.fromkeys(argv[1:]))
  if _ALL.value and names:
    raise cli.UsageError("all", "give reproduction names or --all, not both")
  if _ALL.value:
    return list(known)
  if not names:
    raise cli.UsageError("all", "name one or more reproductions (--list shows them: "
                         f"{', '.join(known)}) or pass --all")
  unknown = [n for n in names if n not in known]
  if unknown:
    raise cli.UsageError("all", f"unknown reproduction {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(known)}")
  return names


def _run_experiment(r, run_dir: str) -> tuple[int, str]:
  config = os.path.join(CONFIG_DIR, f"{r.config}.py") + (":quick" if _QUICK.value else "")
  command = [sys.executable, "-m", f"experiments.{r.experiment}", f"--config={config}",
             f"--output_dir={run_dir}"]
  print(f"[{r.name}] {' '.join(command[1:])}", flush=True)
  proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
  with open(os.path.join(run_dir, "reproduce.log"), "w", encoding="utf-8") as fh:
    fh.write(proc.stdout + proc.stderr)
  lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
  return proc.returncode, lines[-1] if lines else ""


def main(argv):
  from initjax.core import results  # pylint: disable=import-outside-toplevel
  from initjax.studies import reproductions  # pylint: disable=import-outside-toplevel
  known = reproductions.REPRODUCTIONS
  if _LIST.value:
    for r in known.values():
      print(f"{r.name:26s} {r.paper}\n{'':26s} {r.claim}\n{'':26s} python -m experiments."
            f"{r.experiment} --config=experiments/configs/{r.config}.py")
    return
  names = _names(argv, known)
  output_dir = cli.output_dir("output_dir", _OUTPUT_DIR.value)
  failed = []
  for name in names:
    r = known[name]
    run_dir = os.path.join(output_dir, name + ("_quick" if _QUICK.value else ""))
    os.makedirs(run_dir, exist_ok=True)
    start = time.perf_counter()
    status, last = _run_experiment(r, run_dir)
    if status:
      verdict = {"name": name, "claim": r.claim, "paper": r.paper, "held": False,
                 "verdict": "not run", "why": f"experiments.{r.experiment} exited with "
                 f"{status}: {last} (see {run_dir}/reproduce.log)"}
    else:
      try:
        verdict = r.check(run_dir)
      except reproductions.MissingOutput as e:
        verdict = {"name": name, "claim": r.claim, "paper": r.paper, "held": False,
                   "verdict": "not checked", "why": str(e)}
    verdict.update(quick=_QUICK.value, seconds=round(time.perf_counter() - start, 1),
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   command=f"python -m experiments.{r.experiment} --config=experiments/"
                   f"configs/{r.config}.py{':quick' if _QUICK.value else ''}")
    results.atomic_write_json(os.path.join(run_dir, "verdict.json"), verdict)
    print(f"[{name}] {verdict['verdict'].upper()}: {verdict['why']} ({verdict['seconds']} s)",
          flush=True)
    if not verdict["held"]:
      failed.append(name)
  everything = reproductions.collect_verdicts(output_dir)
  results.atomic_write_json(os.path.join(output_dir, "reproductions.json"), everything)
  held = sum(v["held"] for v in everything["verdicts"])
  print(f"{len(names) - len(failed)}/{len(names)} held this run; {held}/"
        f"{len(everything['verdicts'])} in {output_dir}/reproductions.json")
  if failed:
    raise SystemExit(1)


if __name__ == "__main__":
  cli.run(main, positional=True)
