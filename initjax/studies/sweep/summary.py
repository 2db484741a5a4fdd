"""What a sweep's numbers mean: per-seed summaries of the training records, per-point summaries
over seeds, the summary table and the definitions written next to it."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from initjax.studies.sweep.grid import GridPoint

# "Stalled": the final training loss fell by less than STALL_TOLERANCE (1%) relative to a
# reference: ln(num_classes) for classification (the loss of the uniform prediction, where a
# deep network whose signal vanished sits), the initial training loss for regression.
STALL_TOLERANCE = 0.01
# The final training loss is the mean minibatch loss over the last 5% of the steps (at least one
# step, always including the final step S), which averages out minibatch noise.
FINAL_LOSS_FRACTION = 0.05
# Steps to reach a loss threshold are read off a trailing mean of this many minibatch losses.
THRESHOLD_WINDOW = 10


# ----------------------------------------------------------------------------------------------
# One network's records (host side, NumPy).

def final_train_loss(train_loss_S: np.ndarray) -> float:
  """Mean minibatch loss over the last FINAL_LOSS_FRACTION of the steps (NaN if diverged)."""
  train_loss_S = np.asarray(train_loss_S, np.float64)
  window = max(1, int(math.ceil(FINAL_LOSS_FRACTION * (train_loss_S.shape[0] - 1))))
  return float(np.mean(train_loss_S[-window:]))


def stall_reference(task: str, num_classes: int | None, initial_loss: float) -> float:
  """The loss a stalled network sits at: ln(num_classes) (classification) or the initial loss."""
  if task == "classification":
    return math.log(num_classes)
  return float(initial_loss)


def is_stalled(final_loss: float, reference: float, diverged: bool) -> bool:
  """Stalled: not diverged, and the final loss is above (1 - STALL_TOLERANCE) * reference, i.e.
  the loss fell by less than 1% from the reference (see `stall_reference`)."""
  return (not diverged) and bool(final_loss > (1.0 - STALL_TOLERANCE) * reference)


def steps_to_threshold(train_loss_S: np.ndarray, threshold: float,
                       window: int = THRESHOLD_WINDOW) -> int | None:
  """First step s whose trailing mean of `window` minibatch losses (steps s-window+1..s) is at
  most `threshold`; None if never (NaN losses never count)."""
  loss = np.asarray(train_loss_S, np.float64)
  if loss.shape[0] < window:
    window = loss.shape[0]
  csum = np.concatenate([[0.0], np.cumsum(loss)])
  mean = (csum[window:] - csum[:-window]) / window  # mean[j] = mean of loss[j..j+window-1]
  hits = np.nonzero(mean <= threshold)[0]
  return int(hits[0] + window - 1) if hits.size else None


def seed_summaries(records: dict[str, np.ndarray], loss_threshold: float, task: str,
                   num_classes: int | None) -> dict[str, np.ndarray]:
  """Per seed: final_train_loss, diverged_step, stalled (0/1), steps_to_threshold (NaN = never),
  final_test_accuracy (classification)."""
  n = records["train_loss"].shape[0]
  final = np.array([final_train_loss(records["train_loss"][s]) for s in range(n)])
  diverged = records["diverged_step"].astype(np.int64)
  stalled = np.array([
      is_stalled(final[s], stall_reference(task, num_classes, records["stats_loss"][s, 0]),
                 bool(diverged[s] >= 0))
      for s in range(n)], np.int64)
  reach = [steps_to_threshold(records["train_loss"][s], loss_threshold) for s in range(n)]
  out = {"final_train_loss": final, "diverged_step": diverged, "stalled": stalled,
         "steps_to_threshold": np.array([np.nan if r is None else r for r in reach], np.float64)}
  if "test_accuracy" in records:
    out["final_test_accuracy"] = records["test_accuracy"][:, -1].astype(np.float64)
  return out


# ----------------------------------------------------------------------------------------------
# One grid point, and the table.

def point_summary(point: GridPoint, per_seed: dict[str, np.ndarray]) -> dict[str, Any]:
  """Summary numbers of one grid point over its seeds.

  median_final_train_loss and test accuracy mean/std are over the seeds that did not diverge;
  median_steps_to_threshold counts "never" (and diverged seeds) as infinitely many steps, and is
  None ("never") when that median is infinite.
  """
  n = per_seed["final_train_loss"].shape[0]
  alive = per_seed["diverged_step"] < 0

  def nan_stat(fn, x):
    x = x[alive & np.isfinite(x)]
    return float(fn(x)) if x.size else float("nan")

  reach = np.where(np.isnan(per_seed["steps_to_threshold"]), np.inf, per_seed["steps_to_threshold"])
  median_reach = float(np.median(reach))
  summary = {"point_id": point.point_id, **point.as_dict(), "num_seeds": n,
             "median_final_train_loss": nan_stat(np.median, per_seed["final_train_loss"]),
             "median_steps_to_threshold": median_reach if math.isfinite(median_reach) else None,
             "num_reached_threshold": int(np.isfinite(reach).sum()),
             "num_stalled": int(per_seed["stalled"].sum()),
             "num_diverged": int((~alive).sum())}
  if "final_test_accuracy" in per_seed:
    summary["test_accuracy_mean"] = nan_stat(np.mean, per_seed["final_test_accuracy"])
    summary["test_accuracy_std"] = nan_stat(np.std, per_seed["final_test_accuracy"])
  return summary


def format_summary_table(table: Sequence[dict[str, Any]]) -> str:
  """Plain-text table: median final train loss, test accuracy mean +- std, median steps to the
  loss threshold, seeds stalled and diverged."""
  header = ("init", "depth", "width", "activation", "optimizer", "lr", "final loss",
            "test acc", "steps to thr", "stalled", "diverged")
  with_arch = any(row.get("arch", "mlp") != "mlp" for row in table)
  with_norm = any(row.get("norm", "none") != "none" for row in table)
  lines = []
  for row in table:
    acc = ("-" if "test_accuracy_mean" not in row else
           f"{row['test_accuracy_mean']:.3f} +- {row['test_accuracy_std']:.3f}")
    reach = row["median_steps_to_threshold"]
    init = (f"{row['init']}, rec {row['recurrent_init']}" if row.get("recurrent_init")
            else row["init"])
    lines.append((init, str(row["depth"]), str(row["width"]), row["activation"],
                  row["optimizer"], f"{row['learning_rate']:g}",
                  f"{row['median_final_train_loss']:.3f}", acc,
                  "never" if reach is None else f"{reach:.0f}",
                  f"{row['num_stalled']}/{row['num_seeds']}",
                  f"{row['num_diverged']}/{row['num_seeds']}"))
    if with_norm:
      lines[-1] = (row.get("norm", "none"),) + lines[-1]
    if with_arch:
      lines[-1] = (row.get("arch", "mlp"),) + lines[-1]
  if with_norm:
    header = ("norm",) + header
  if with_arch:
    header = ("arch",) + header
  widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h)
            for i, h in enumerate(header)]
  fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
  return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(l) for l in lines])


def definitions(loss_threshold: float, stats_batch_size: int) -> dict[str, str]:
  """What the summary numbers mean (written into summary.json)."""
  return {
      "final_train_loss": f"mean minibatch loss over the last {FINAL_LOSS_FRACTION:.0%} "
                          "of the steps",
      "stalled": f"not diverged and final train loss > (1 - {STALL_TOLERANCE}) x "
                 "reference; reference = ln(num_classes) for classification, the initial loss "
                 "on the statistics batch for regression",
      "diverged_step": "first step whose minibatch loss is NaN/inf (-1: never); the network is "
                       "frozen from then on and its later metrics are NaN",
      "steps_to_threshold": f"first step at which the mean of the last "
                            f"{THRESHOLD_WINDOW} minibatch losses is <= "
                            f"{loss_threshold}; median over seeds with never = infinity",
      "test_accuracy": "on the whole test set at the final step; mean and std over the seeds "
                       "that did not diverge",
      "var_h, var_dl_dh, var_dl_df": "variance pooled over units and examples of h_k (layer "
                                     "k=1..K), dl/dh_k (k=1..K), dl/df_k (k=0..K-1), on the first "
                                     f"{stats_batch_size} training examples, loss = mean "
                                     "over them; resmlp: of the block outputs h_k and dl/dh_k, "
                                     "k=0..K; cnn: also over positions and channels, with "
                                     "var_f (f_k, k=0..K-1) and Brock et al.'s channel_sq_mean "
                                     "and channel_var of h_k",
      "signal_at_init": "from initjax.propagation over num_seeds random networks of the grid "
                        "point's shape and initializer, in the book's setting (standard-normal "
                        "inputs, least squares with y = 0): change of log10 variance per layer, "
                        "forward along h_k and backward along dl/dh_k towards the input, measured "
                        "(median over networks) and predicted by initjax.theory; negative "
                        "backward = vanishing gradients",
  }
