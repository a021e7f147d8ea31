"""The study's report: from per-run test metrics to per-version summaries and comparisons.

`summarize` is the whole analysis, one entry per group (version x backbone x train size): mean,
std, n and 95% CI of test accuracy and loss over seeds; every comparison of the family (each
version minus the baseline, each named contrast a - b, paired by seed) with its repeated
confidence interval from the group-sequential design (augvit/sequential.py: alpha spent over
the planned looks study.looks, Bonferroni over the family), the adjusted p-value that agrees
with it, the verdict read off it (augvit/stats.py `verdict`), the same at every earlier look,
and for an undecided comparison the seeds and minutes that the planning estimate needs to
decide it. The compare stage writes it to reports/comparison.json, and as a report to
reports/comparison.md. `summary_metrics` is what DVC shows as metrics: per version its mean
accuracy, per comparison its difference and interval, so that `dvc exp show` keeps the same
few columns however many seeds the study has.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from augvit.io import load_json
from augvit.layout import runs
from augvit.params import Params
from augvit.sequential import (look_sizes, repeated_interval, repeated_p_value,
                               seeds_to_decide, t_critical)
from augvit.stats import mean_ci, paired_difference, pooled_sd_upper, variance_components, verdict

ALPHA = 0.05
Table = dict[tuple[str, str, int], dict[int, dict]]


def collect(runs_dir: Path, p: Params) -> Table:
    """(version, backbone, size) -> seed -> that run's test metrics; a missing run is an error."""
    table: Table = {}
    for run in runs(p):
        path = run.path(runs_dir, ".json")
        if not path.is_file():
            raise FileNotFoundError(f"compare: missing run metrics {path}; "
                                    "run `dvc repro` to produce every run first.")
        table.setdefault((run.version, run.backbone, run.size), {})[run.seed] = load_json(path)
    return table


def summarize(table: Table, baseline: str, design: dict, losses: dict | None = None,
              contrasts: dict[str, tuple[str, str]] | None = None,
              correct: dict | None = None, run_seconds: dict | None = None) -> dict:
    """The whole analysis. `design`: {"seeds": the study's seeds in params order, "looks",
    "spending", "target"}. `losses` and `correct` (group -> (n_seeds, n_test) 0/1 array in
    seed order) are optional; `run_seconds` ({"median": seconds, "runs": n, ...}) turns
    the seeds an undecided comparison needs into minutes."""
    groups = {}
    for (v, b, n), seeds in table.items():
        entry = {"version": v, "backbone": b, "train_size": n, "seeds": sorted(seeds),
                 "test_acc": mean_ci([m["acc"] for m in seeds.values()])}
        if losses is not None:
            entry["test_loss"] = mean_ci(list(losses[(v, b, n)].values()))
        if b == "frozen" and (v, "finetuned", n) in table:   # same version, size and seed
            entry["acc_diff_frozen_vs_finetuned"] = paired_difference(
                _acc(table, (v, b, n)), _acc(table, (v, "finetuned", n)))
        groups[f"{v}/{b}/n{n}"] = entry
    family = _family(table, baseline, contrasts or {})
    m, n_now = len(family), len(design["seeds"])
    level = ALPHA / max(m, 1)                      # Bonferroni: each comparison's share
    plan = pooled_sd_upper([c["diff"]["std"] for c in family], [c["diff"]["n"] for c in family])
    for c in family:
        _judge(c, table, design, level, m, correct)
        if c["verdict"] == "not decided yet" and plan is not None:
            c["plan"] = seeds_to_decide(c["diff"]["mean"], plan["upper"], n_now,
                                        design["looks"], level, design["spending"],
                                        design["target"])
        if c["kind"] == "baseline":
            groups[f"{c['a']}/{c['backbone']}/n{c['train_size']}"]["acc_diff_vs_baseline"] = \
                c["diff"]
    return {"baseline": baseline, "alpha": ALPHA, "target": design["target"],
            "family_size": m, "groups": groups, "comparisons": family,
            "design": {"looks": sorted(design["looks"]), "spending": design["spending"],
                       "seeds": list(design["seeds"]), "n": n_now,
                       "looks_so_far": look_sizes(n_now, design["looks"]),
                       "level_per_comparison": level,
                       "t_critical": t_critical(n_now, design["looks"], level,
                                                design["spending"])},
            "planning": plan, "run_seconds": run_seconds,
            "runs_per_seed": len(table)}


def _acc(table: Table, key: tuple[str, str, int]) -> dict[int, float]:
    return {s: m["acc"] for s, m in table[key].items()}


def _family(table: Table, baseline: str, contrasts: dict) -> list[dict]:
    """The comparisons read together: each version minus the baseline, then each contrast."""
    pairs = [("baseline", f"{v} - {baseline}", v, baseline, b, n)
             for (v, b, n) in table if v != baseline and (baseline, b, n) in table]
    pairs += [("contrast", name, a, c, b, n) for name, (a, c) in contrasts.items()
              for (v, b, n) in table if v == a and (c, b, n) in table]
    return [{"kind": kind, "name": name, "a": a, "b": other, "backbone": b, "train_size": n,
             "diff": paired_difference(_acc(table, (a, b, n)), _acc(table, (other, b, n)))}
            for kind, name, a, other, b, n in pairs]


def _read(a: dict[int, float], b: dict[int, float], seeds: list[int], design: dict,
          level: float, m: int) -> dict:
    """One look at the first len(seeds) seeds: the difference, its repeated interval at the
    comparison's level, the adjusted p-value (Bonferroni over m) and the verdict."""
    d = paired_difference({s: a[s] for s in seeds}, {s: b[s] for s in seeds})
    testable = d["std"] is not None and d["std"] > 0
    interval = repeated_interval(d["mean"], d["std"], d["n"], design["looks"], level,
                                 design["spending"]) if testable else None
    p_rep = repeated_p_value(d["mean"], d["std"], d["n"], design["looks"],
                             design["spending"]) if testable else None
    return {"seeds": d["n"], "mean": d["mean"], "sd": d["std"], "interval": interval,
            "p_adjusted": None if p_rep is None else min(1.0, m * p_rep),
            "verdict": verdict(interval, design["target"])}


def _judge(c: dict, table: Table, design: dict, level: float, m: int,
           correct: dict | None) -> None:
    """Every look's reading (the last is the verdict), and the seed/image variance split."""
    ka, kb = (c["a"], c["backbone"], c["train_size"]), (c["b"], c["backbone"], c["train_size"])
    a, b = _acc(table, ka), _acc(table, kb)
    order = [s for s in design["seeds"] if s in a and s in b]
    c["looks"] = [_read(a, b, order[:k], design, level, m)
                  for k in look_sizes(len(order), design["looks"]) if k >= 2] \
        if len(order) >= 2 else []
    now = c["looks"][-1] if c["looks"] else None
    c["diff"].update(interval=now and now["interval"], p_adjusted=now and now["p_adjusted"])
    c["verdict"] = now["verdict"] if now else "not decided yet"
    decided = [x["seeds"] for x in c["looks"] if x["verdict"] != "not decided yet"]
    c["first_decided_at"] = decided[0] if decided else None
    d = c["diff"]
    if correct and ka in correct and kb in correct and d["n"] >= 2:
        c["images"] = {"components": variance_components(correct[ka][:d["n"]],
                                                         correct[kb][:d["n"]])}


def summary_metrics(analysis: dict) -> dict:
    """metrics/summary.json, the study in a few flat numbers for `dvc exp show` and `dvc metrics
    diff`: n_seeds; per version / backbone / n<size> its mean test accuracy `acc`; per
    comparison (each version against the baseline under that version, each contrast under
    contrasts/<name>) its mean difference `diff` and repeated interval `diff_low`/`diff_high`.
    The same columns at any number of seeds: per-seed numbers live in metrics/runs/, p-values
    and verdicts in reports/comparison.json."""
    groups = analysis["groups"].values()
    out: dict = {"n_seeds": max(g["test_acc"]["n"] for g in groups)}
    for g in groups:
        out.setdefault(g["version"], {}).setdefault(g["backbone"], {})[
            f"n{g['train_size']}"] = {"acc": round(g["test_acc"]["mean"], 5)}
    for c in analysis["comparisons"]:
        d = c["diff"]
        entry = {"diff": round(d["mean"], 5)}
        if d.get("interval"):
            entry.update(diff_low=round(d["interval"][0], 5), diff_high=round(d["interval"][1], 5))
        where = out[c["a"]] if c["kind"] == "baseline" else \
            out.setdefault("contrasts", {}).setdefault(c["name"], {})
        where.setdefault(c["backbone"], {}).setdefault(f"n{c['train_size']}", {}).update(entry)
    return out


def size_effect_rows(analysis: dict) -> list[dict]:
    """Rows for the data-size chart: each version's difference to the baseline per train size,
    with its verdict."""
    rows = []
    for c in analysis["comparisons"]:
        if c["kind"] == "baseline":
            d = c["diff"]
            lo, hi = (np.nan, np.nan) if not d.get("interval") else d["interval"]
            rows.append({"train_size": c["train_size"], "version": c["a"],
                         "backbone": c["backbone"], "diff": round(100 * d["mean"], 3),
                         "diff_low": round(100 * lo, 3), "diff_high": round(100 * hi, 3),
                         "verdict": c["verdict"]})
    return rows
