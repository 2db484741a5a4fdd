"""Every published claim initjax reproduces, by name: the experiment and named configuration
that measure it (`experiments/configs/<config>.py`), the paper's number or shape, and a check
of the measured outputs against a stated criterion that can fail.

    from initjax.studies import reproductions
    r = reproductions.REPRODUCTIONS["he2015_fig3"]
    verdict = r.check(output_dir)          # reads what the experiment wrote there
    verdict["held"], verdict["why"]

`python -m experiments.reproduce NAME` runs the experiment and writes the verdict. A check reads
the files the experiment wrote (summary.json, results.csv) and raises `MissingOutput` if they
are not there or not what it needs; it never guesses a number.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Any, Callable

import numpy as np


class MissingOutput(ValueError):
  """The experiment's output is missing or lacks what the check reads (one line)."""


@dataclasses.dataclass(frozen=True)
class Reproduction:
  name: str
  paper: str
  claim: str
  paper_result: str           # the paper's number or shape
  experiment: str             # experiments.<experiment>
  config: str                 # experiments/configs/<config>.py
  criterion: str
  figure: str                 # the initjax figure in the output directory
  evaluate: Callable[[str], tuple[bool, dict, str]]

  def check(self, output_dir: str) -> dict[str, Any]:
    """The verdict on the outputs in `output_dir`: {"name", "claim", "paper", "paper_result",
    "criterion", "held", "measured", "why", "figure"}."""
    held, measured, why = self.evaluate(output_dir)
    return {"name": self.name, "paper": self.paper, "claim": self.claim,
            "paper_result": self.paper_result, "criterion": self.criterion,
            "held": bool(held), "verdict": "held" if held else "did not hold",
            "measured": measured, "why": why,
            "figure": os.path.join(output_dir, self.figure)}


# ------------------------------------------------------------------------------------------------
# Reading outputs.

def _summary(output_dir: str) -> dict:
  path = os.path.join(output_dir, "summary.json")
  try:
    with open(path, encoding="utf-8") as fh:
      return json.load(fh)
  except (OSError, ValueError) as e:
    raise MissingOutput(f"cannot read {path}: {e}") from None


def _rows(output_dir: str) -> list[dict]:
  path = os.path.join(output_dir, "results.csv")
  try:
    with open(path, encoding="utf-8", newline="") as fh:
      return list(csv.DictReader(fh))
  except OSError as e:
    raise MissingOutput(f"cannot read {path}: {e}") from None


def _points(output_dir: str) -> dict[str, dict]:
  """The sweep's per-point summaries by init name."""
  listed = _summary(output_dir).get("summary", [])
  if not listed:
    raise MissingOutput(f"{output_dir}/summary.json has no sweep summary")
  points: dict[str, dict] = {}
  for p in listed:
    if p["init"] in points:   # which one the claim is about is not for the check to guess
      raise MissingOutput(f"the sweep in {output_dir} has more than one point for "
                          f"{p['init']} ({points[p['init']]['point_id']}, {p['point_id']}); "
                          "the check reads one per init: run the reproduction's config")
    points[p["init"]] = p
  return points


def _need(points: dict, *inits: str) -> None:
  missing = [i for i in inits if i not in points]
  if missing:
    raise MissingOutput(f"the sweep has no point for {', '.join(missing)}")


def _steps(p: dict) -> float:
  s = p.get("median_steps_to_threshold")
  return math.inf if s is None else float(s)


# ------------------------------------------------------------------------------------------------
# Checks.

SLOPE_TOLERANCE = 0.02   # decades of variance per layer


def _slopes_hold(output_dir: str) -> tuple[bool, dict, str]:
  settings = _summary(output_dir).get("settings")
  if not settings:
    raise MissingOutput(f"{output_dir}/summary.json has no propagation settings")
  measured, worst = {}, ("", 0.0)
  for name, s in settings.items():
    c = s["log10_change_per_layer"]
    measured[name] = {k: round(float(v), 4) for k, v in c.items()}
    for way in ("forward", "backward"):
      gap = abs(c[f"{way}_measured"] - c[f"{way}_theory"])
      if gap > worst[1]:
        worst = (f"{name} {way}", gap)
  held = worst[1] <= SLOPE_TOLERANCE
  why = (f"largest gap between measured and predicted slope: {worst[1]:.4f} decades per layer "
         f"({worst[0]}), {'within' if held else 'beyond'} {SLOPE_TOLERANCE}")
  return held, measured, why


def _book_figure(output_dir: str) -> tuple[bool, dict, str]:
  held, measured, why = _slopes_hold(output_dir)
  he = measured.get("he_normal")
  if he is None:
    raise MissingOutput("the propagation run has no he_normal setting")
  flat = abs(he["forward_measured"]) <= SLOPE_TOLERANCE and abs(
      he["backward_measured"]) <= SLOPE_TOLERANCE
  return held and flat, measured, why + f"; He's slopes {he['forward_measured']:+.3f} forward, " \
      f"{he['backward_measured']:+.3f} backward ({'flat' if flat else 'not flat'} within " \
      f"{SLOPE_TOLERANCE})"


def _mean_slope(rows: list[dict], init: str, quantity: str, column: str) -> float:
  picked = [(int(r["layer"]), float(r[column])) for r in rows
            if r["init"] == init and r["quantity"] == quantity]
  if len(picked) < 2:
    raise MissingOutput(f"results.csv has no {quantity} rows for {init}")
  layers, values = np.array(picked).T
  return float(np.polyfit(layers, values, 1)[0])


def _cnn_slopes(output_dir: str) -> tuple[bool, dict, str]:
  # The theory predicts the mean over networks; at 32 channels the median drifts about 0.03
  # decades per layer below it (finite width), so the slope is fitted to log10 of the mean.
  rows = _rows(output_dir)
  measured, worst = {}, ("", 0.0)
  for init in ("he_normal", "xavier_normal"):
    m = _mean_slope(rows, init, "var_h", "log10_mean")
    t = _mean_slope(rows, init, "var_h", "log10_theory")
    measured[init] = {"forward_mean_measured": round(m, 4), "forward_theory": round(t, 4)}
    if abs(m - t) >= worst[1]:
      worst = (init, abs(m - t))
  held = worst[1] <= SLOPE_TOLERANCE
  return held, measured, (f"largest gap of the log-mean's slope from theory: {worst[1]:.4f} "
                          f"decades per layer ({worst[0]}), "
                          f"{'within' if held else 'beyond'} {SLOPE_TOLERANCE}")


def _finite_width_band(output_dir: str) -> tuple[bool, dict, str]:
  rows = [r for r in _rows(output_dir) if r["init"] == "he_normal" and r["quantity"] == "var_h"]
  if not rows:
    raise MissingOutput("results.csv has no he_normal var_h rows")
  depth = max(int(r["layer"]) for r in rows)
  n = int(rows[0]["num_seeds"])
  # The 5-95% range of n samples of a normal law has a relative standard error of about
  # 0.91 / sqrt(n) (each quantile's is 2.11 sigma / sqrt(n) of a 3.29 sigma range).
  tolerance = 3 * 0.91 / math.sqrt(n)
  measured, worst = {}, 0.0
  for r in rows:
    if int(r["layer"]) not in (depth // 2, depth):
      continue
    got = float(r["log10_q95"]) - float(r["log10_q05"])
    want = float(r["log10_theory_q95"]) - float(r["log10_theory_q05"])
    measured[f"layer {r['layer']}"] = {"band_decades_measured": round(got, 3),
                                       "band_decades_theory": round(want, 3)}
    worst = max(worst, abs(got / want - 1))
  held = worst <= tolerance
  return held, measured, (f"largest relative gap of the 5-95% band's width from the log-normal "
                          f"theory: {worst:.1%}, {'within' if held else 'beyond'} "
                          f"{tolerance:.1%} (3 standard errors for {n} networks)")


def _he_fig3(output_dir: str) -> tuple[bool, dict, str]:
  points = _points(output_dir)
  _need(points, "he_normal", "xavier_normal")
  he, xa = points["he_normal"], points["xavier_normal"]
  n = he["num_seeds"]
  he_trains = he["num_reached_threshold"] * 2 >= n and he["num_stalled"] == 0
  xavier_stalls = xa["num_stalled"] * 2 > xa["num_seeds"]
  measured = {i: {k: p[k] for k in ("num_seeds", "num_reached_threshold", "num_stalled",
                                    "median_final_train_loss", "median_steps_to_threshold")}
              for i, p in (("he_normal", he), ("xavier_normal", xa))}
  why = (f"He: {he['num_reached_threshold']}/{n} reached the loss threshold, "
         f"{he['num_stalled']} stalled; Xavier: {xa['num_stalled']}/{xa['num_seeds']} stalled "
         f"(final loss {xa['median_final_train_loss']:.3f})")
  return he_trains and xavier_stalls, measured, why


def _he_fig2(output_dir: str) -> tuple[bool, dict, str]:
  points = _points(output_dir)
  _need(points, "he_normal", "xavier_normal")
  he, xa = points["he_normal"], points["xavier_normal"]
  both = all(p["num_reached_threshold"] * 2 >= p["num_seeds"] for p in (he, xa))
  earlier = _steps(he) < _steps(xa)
  measured = {i: {k: p[k] for k in ("num_seeds", "num_reached_threshold", "num_stalled",
                                    "median_steps_to_threshold")}
              for i, p in (("he_normal", he), ("xavier_normal", xa))}
  why = (f"reached the threshold: He {he['num_reached_threshold']}/{he['num_seeds']}, Xavier "
         f"{xa['num_reached_threshold']}/{xa['num_seeds']}; median steps He {_steps(he):g}, "
         f"Xavier {_steps(xa):g}")
  return both and earlier, measured, why


def _glorot_bengio(output_dir: str) -> tuple[bool, dict, str]:
  points = _points(output_dir)
  standard = next((i for i in points if i.startswith("he_uniform:gain=0.577")), None)
  if standard is None or "xavier_uniform" not in points:
    raise MissingOutput("the sweep needs the standard (he_uniform:gain=1/sqrt(3)) and the "
                        "normalized (xavier_uniform) inits")
  st, no = points[standard], points["xavier_uniform"]
  err_st, err_no = 1 - st["test_accuracy_mean"], 1 - no["test_accuracy_mean"]
  se = math.sqrt(st["test_accuracy_std"] ** 2 / st["num_seeds"]
                 + no["test_accuracy_std"] ** 2 / no["num_seeds"])
  held = err_st - err_no > 2 * se
  measured = {"standard_test_error": round(err_st, 4), "normalized_test_error": round(err_no, 4),
              "standard_error_of_difference": round(se, 4),
              "standard_final_train_loss": st["median_final_train_loss"],
              "normalized_final_train_loss": no["median_final_train_loss"]}
  why = (f"test error standard {err_st:.3f} vs normalized {err_no:.3f}: difference "
         f"{err_st - err_no:+.3f}, {'more' if held else 'not more'} than 2 standard errors "
         f"({2 * se:.3f})")
  return held, measured, why


def _hanin_rolnick(output_dir: str) -> tuple[bool, dict, str]:
  var = _summary(output_dir).get("var_log_norm")
  if not var:
    raise MissingOutput(f"{output_dir}/summary.json has no var_log_norm")
  off = {k: (v["measured"] - v["theory"]) / v["standard_error"] for k, v in var.items()}
  same = [k for k, v in var.items() if abs(v["beta"] - 0.25) < 1e-9]
  pairs = [(a, b) for i, a in enumerate(same) for b in same[i + 1:]]
  apart = {f"{a} vs {b}": (var[a]["measured"] - var[b]["measured"]) / math.hypot(
      var[a]["standard_error"], var[b]["standard_error"]) for a, b in pairs}
  worst_theory = max(abs(z) for z in off.values())
  worst_pair = max((abs(z) for z in apart.values()), default=0.0)
  held = worst_theory <= 4 and worst_pair <= 4 and len(same) >= 2
  measured = {k: {"beta": round(v["beta"], 4), "measured": round(v["measured"], 4),
                  "standard_error": round(v["standard_error"], 4),
                  "theory": round(v["theory"], 4), "five_beta": round(v["first_order"], 4)}
              for k, v in var.items()}
  why = (f"every profile within {worst_theory:.1f} standard errors of the exact variance; "
         f"the {len(same)} profiles of beta = 0.25 within {worst_pair:.1f} of each other "
         "(criterion: 4)")
  return held, measured, why


ENVELOPE = (3.0, 12.0)   # a factor of two either side of Schoenholz et al.'s 6 xi_c


def _phase_envelope(output_dir: str) -> tuple[bool, dict, str]:
  s = _summary(output_dir)
  need = ("sigma2_w", "depths", "xi_c", "fitting_depth", "first_unfitted_depth",
          "critical_sigma2_w")
  missing = [k for k in need if k not in s]
  if missing:
    raise MissingOutput(f"{output_dir}/summary.json is not a phase diagram's (no "
                        f"{', '.join(missing)})")
  lo_c, hi_c = ENVELOPE
  measured, inconsistent, inside = {}, [], {"ordered": 0, "chaotic": 0}
  lrs = s.get("learning_rate") or [None] * len(s["sigma2_w"])
  for w, xi, fit, fail, lr in zip(s["sigma2_w"], s["xi_c"], s["fitting_depth"],
                                  s["first_unfitted_depth"], lrs):
    xi = math.inf if xi is None else float(xi)
    hi = math.inf if fail is None else float(fail)
    # The edge lies between `fit` (trains) and `hi` (fails); the claim puts it at 6 xi_c.
    consistent = fit <= hi_c * xi and hi >= lo_c * xi
    edge_inside = fit > 0 and fail is not None
    side = "ordered" if w < s["critical_sigma2_w"] else "chaotic"
    if edge_inside and consistent:
      inside[side] += 1
    if not consistent:
      inconsistent.append(f"sigma2_w={w:g} (edge {fit:g}-{'inf' if fail is None else fail} "
                          f"layers, {lo_c:g}-{hi_c:g} xi_c = {lo_c * xi:.1f}-{hi_c * xi:.1f})")
    measured[f"sigma2_w={w:g}"] = {
        "side": side, "xi_c": round(xi, 2) if math.isfinite(xi) else None,
        "fitting_depth": fit, "first_unfitted_depth": fail, "learning_rate": lr,
        "edge_over_xi_c": [round(fit / xi, 2), round(hi / xi, 2) if math.isfinite(hi / xi)
                           else None] if math.isfinite(xi) else None,
        "consistent": consistent}
  both = inside["ordered"] > 0 and inside["chaotic"] > 0
  held = not inconsistent and both
  why = (f"{len(s['sigma2_w']) - len(inconsistent)}/{len(s['sigma2_w'])} columns' training-loss "
         f"edge consistent with {lo_c:g}-{hi_c:g} xi_c; edges inside the grid and consistent: "
         f"{inside['ordered']} ordered, {inside['chaotic']} chaotic")
  if inconsistent:
    why += "; not consistent: " + ", ".join(inconsistent)
  elif not both:
    why += " (the claim needs one on each side)"
  return held, measured, why


GB_GAP = 0.5 * math.log10(3)   # half the linear-regime gap between n Var = 1/3 and 1, per layer
GB_WEIGHT_SPREAD = math.log10(3)
GB_SATURATED = 0.1             # the top sigmoid layer's mean activation (0.5 at initialization)


def _saturation_settings(output_dir: str, activation: str) -> tuple[dict, dict]:
  s = _summary(output_dir)
  settings = s.get("settings")
  if not settings or "standard_init" not in s:
    raise MissingOutput(f"{output_dir}/summary.json is not a saturation run's")
  picked = {v["init"]: v for v in settings.values() if v["activation"] == activation}
  for init in (s["standard_init"], s["normalized_init"]):
    if init not in picked:
      raise MissingOutput(f"the saturation run has no {activation} network with {init}")
  return picked[s["standard_init"]], picked[s["normalized_init"]]


def _glorot_bengio_tanh(output_dir: str) -> tuple[bool, dict, str]:
  st, no = _saturation_settings(output_dir, "tanh")
  forward_gap = no["forward_slope_at_init"] - st["forward_slope_at_init"]
  backward_gap = st["backward_slope_at_init"] - no["backward_slope_at_init"]
  spreads = (st["hidden_weight_grad_log10_spread_at_init"],
             no["hidden_weight_grad_log10_spread_at_init"])
  held = forward_gap > GB_GAP and backward_gap > GB_GAP and max(spreads) < GB_WEIGHT_SPREAD
  measured = {name: {k: round(v[k], 4) for k in (
      "forward_slope_at_init", "backward_slope_at_init",
      "hidden_weight_grad_log10_spread_at_init")} for name, v in (("standard", st),
                                                                   ("normalized", no))}
  why = (f"decades per layer at initialization, standard vs normalized: activations "
         f"{st['forward_slope_at_init']:+.3f} vs {no['forward_slope_at_init']:+.3f}, gradients "
         f"{st['backward_slope_at_init']:+.3f} vs {no['backward_slope_at_init']:+.3f} (gaps "
         f"{forward_gap:.3f}, {backward_gap:.3f}; criterion > {GB_GAP:.3f}); hidden weight "
         f"gradients spread {spreads[0]:.3f} and {spreads[1]:.3f} decades (criterion < "
         f"{GB_WEIGHT_SPREAD:.3f})")
  return held, measured, why


def _glorot_bengio_sigmoid(output_dir: str) -> tuple[bool, dict, str]:
  st, no = _saturation_settings(output_dir, "sigmoid")
  steps = _summary(output_dir)["steps"]
  means = [math.nan if m is None else m for m in st["top_layer_mean_activation"]]
  lowest = min(range(len(means)), key=lambda i: means[i] if math.isfinite(means[i]) else 9)
  held = math.isfinite(means[lowest]) and means[lowest] < GB_SATURATED
  measured = {"standard_top_layer_mean": [round(m, 4) for m in means],
              "normalized_top_layer_mean": [round(m, 4) for m in
                                            no["top_layer_mean_activation"]],
              "steps": steps}
  why = (f"standard init: the top hidden layer's mean sigmoid activation starts at "
         f"{means[0]:.3f} and is lowest at step {steps[lowest]}, {means[lowest]:.3f} (criterion: "
         f"below {GB_SATURATED}); normalized init: lowest "
         f"{min(no['top_layer_mean_activation']):.3f}")
  return held, measured, why


REPRODUCTIONS: dict[str, Reproduction] = {r.name: r for r in (
    Reproduction(
        "book_figure", "Prince, Understanding Deep Learning, Figure 7.7 (slides Figure 7.4)",
        "In a 50-layer ReLU MLP of width 100 the variance changes by log10(D sigma2 / 2) "
        "decades per layer, forward and backward; He (sigma2 = 2/D) keeps it flat.",
        "slopes +1.70, +0.70, 0, -0.30, -1.30 decades per layer for sigma2 = 1, 0.1, 0.02, "
        "0.01, 0.001 (the printed figure shows about half: standard deviations)",
        "propagation", "propagation",
        f"every setting's measured slope (median over networks) within {SLOPE_TOLERANCE} "
        "decades per layer of the theory, forward and backward, and He's within "
        f"{SLOPE_TOLERANCE} of 0", "propagation.png", _book_figure),
    Reproduction(
        "finite_width_band", "Hanin & Rolnick 2018 (finite width), in the book's setting",
        "Single width-100 He networks spread around the mean field by a log-normal band that "
        "initjax.finite_width predicts.", "the spread grows with the sum of 1/width",
        "propagation", "propagation",
        "the 5-95% band of log10 Var[h_k] across networks at layers K/2 and K within 3 standard "
        "errors of the predicted width", "propagation.png", _finite_width_band),
    Reproduction(
        "he2015_fig3", "He et al. 2015, Figure 3",
        "A 30-layer ReLU network converges from He's initialization; from Xavier's it "
        "completely stalls.", "He converges; Xavier stalls (ImageNet, 30 layers)",
        "sweep", "he2015_fig3",
        "at least half of the He seeds reach the loss threshold and none stalls; more than half "
        "of the Xavier seeds stall (final loss within 1% of ln 10)", "loss_curves.png", _he_fig3),
    Reproduction(
        "he2015_fig2", "He et al. 2015, Figure 2",
        "A 22-layer ReLU network converges from both initializations; He starts reducing the "
        "error earlier.", "both converge, He earlier (ImageNet, 22 layers)",
        "sweep", "he2015_fig2",
        "at least half of the seeds of each init reach the loss threshold, and He's median "
        "steps to it are fewer than Xavier's", "loss_curves.png", _he_fig2),
    Reproduction(
        "glorot_bengio2010_table1", "Glorot & Bengio 2010, Table 1",
        "With 5 hidden tanh layers the normalized initialization gives a lower test error than "
        "the standard U[-1/sqrt(n), 1/sqrt(n)].",
        "test error 1.76% (standard) vs 1.64% (normalized) on MNIST, 27.15% vs 15.60% on "
        "Shapeset-3x2", "sweep", "glorot_bengio2010",
        "the standard init's mean test error exceeds the normalized one's by more than 2 "
        "standard errors of the difference (over seeds)", "loss_curves.png", _glorot_bengio),
    Reproduction(
        "resmlp_slopes", "initjax.theory.residual (He: every block doubles the variance)",
        "A residual MLP of pre-activation blocks (branch scale 1) gains log10 2 decades per "
        "block with He, forward and backward; Xavier log10 1.5.", "+0.301 and +0.176 decades "
        "per block", "propagation", "resmlp",
        f"measured slopes within {SLOPE_TOLERANCE} decades per block of the theory",
        "propagation.png", _slopes_hold),
    Reproduction(
        "cnn_slopes", "initjax.theory.convolutional (fan_in = kernel x channels)",
        "A 1-D CNN with circular padding follows the MLP's recursion per position: He flat, "
        "Xavier -0.30 decades per layer.", "0 and -0.301 decades per layer",
        "propagation", "cnn",
        f"the slope of log10 of the mean Var[h_k] within {SLOPE_TOLERANCE} decades per layer of "
        "the theory's", "propagation.png", _cnn_slopes),
    Reproduction(
        "hanin_rolnick2018", "Hanin & Rolnick 2018",
        "The variance of log ||h_L||^2 over random ReLU networks is set by beta, the sum of "
        "1/width: profiles with the same beta spread alike, and Var is about 5 beta.",
        "Var[log M_L] ~ 5 beta", "norm_spread", "hanin_rolnick2018",
        "each profile's measured variance within 4 standard errors of the exact law, and the "
        "three profiles with beta = 0.25 within 4 standard errors of each other",
        "norm_spread.png", _hanin_rolnick),
    Reproduction(
        "glorot_bengio2010_fig6_7", "Glorot & Bengio 2010, Figures 6 and 7 (and eq. 14)",
        "With 5 hidden tanh layers the standard init U[-1/sqrt(n), 1/sqrt(n)] shrinks the "
        "activations towards the output and the back-propagated gradients towards the input; "
        "the normalized init does not; weight gradients stay about equal across layers.",
        "histograms: the peak at zero grows in higher layers (activations) and lower layers "
        "(gradients) under the standard init only; linear regime: 1/3 vs 1 per layer",
        "saturation", "glorot_bengio2010_tanh",
        f"at initialization the standard init's activation-variance decay and gradient-variance "
        f"growth per layer each exceed the normalized init's by more than half of log10 3 "
        f"({GB_GAP:.3f} decades per layer), and under both the hidden weights' gradient "
        f"variances lie within a factor 3", "saturation.png", _glorot_bengio_tanh),
    Reproduction(
        "glorot_bengio2010_fig2", "Glorot & Bengio 2010, Figure 2",
        "In a deep sigmoid MLP under the standard init the top hidden layer saturates at 0 "
        "early in training, then slowly desaturates.",
        "top hidden layer's mean activation from 0.5 to about 0 within the first epochs "
        "(Shapeset-3x2, 4 hidden layers)", "saturation", "glorot_bengio2010_sigmoid",
        f"under the standard init the top hidden layer's mean activation (median over seeds) "
        f"falls below {GB_SATURATED} at a recorded step", "saturation.png",
        _glorot_bengio_sigmoid),
    Reproduction(
        "schoenholz2017_envelope", "Schoenholz et al. 2017, Figure 5 (the phase diagram)",
        "Random tanh networks train up to a depth of about 6 xi_c on both sides of the "
        "order-to-chaos transition, xi_c the depth scale of correlations.",
        "the trainable region's edge follows 6 xi_c (MNIST, CIFAR-10; SGD and RMSProp, tuned "
        "learning rates)", "phase_diagram", "schoenholz2017",
        f"every sigma2_w column's training-loss edge (between the deepest depth that fits and "
        f"the next, that does not) meets {ENVELOPE[0]:g}-{ENVELOPE[1]:g} xi_c, and at least one "
        f"column on each side has its edge inside the grid", "phase_diagram.png",
        _phase_envelope),
)}


def collect_verdicts(output_dir: str) -> dict[str, Any]:
  """Every verdict.json one level under `output_dir` that reads back as a verdict, sorted by
  name; unreadable ones are listed under "unreadable", never merged."""
  verdicts, unreadable = [], []
  for entry in sorted(os.listdir(output_dir)):
    path = os.path.join(output_dir, entry, "verdict.json")
    if not os.path.isfile(path):
      continue
    try:
      with open(path, encoding="utf-8") as fh:
        v = json.load(fh)
      if not isinstance(v, dict) or not {"name", "held", "verdict", "why"} <= set(v):
        raise ValueError("not a verdict")
    except (OSError, ValueError) as e:
      unreadable.append(f"{path}: {e}")
      continue
    verdicts.append(v)
  return {"verdicts": verdicts, "unreadable": unreadable}
