"""The study's report: from per-run test metrics to per-version summaries and comparisons.

`summarize` is the whole analysis, one entry per group (version x backbone x train size): mean,
std, n and 95% CI of test accuracy and loss over seeds; the paired difference to the baseline
version (study.baseline; same seed, backbone and size) with its CI and p-value, and the p-value
Holm-adjusted over every comparison with the baseline in the study; frozen minus fine-tuned
where both ran. The compare stage writes it to reports/comparison.json, and as tables to
reports/comparison.md. `summary_metrics` is what DVC shows as metrics: a few flat numbers per
group, so that `dvc exp show` stays a table and `dvc metrics diff` lists only what changed.
Statistics: augvit/stats.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from augvit.io import load_json
from augvit.layout import runs
from augvit.params import Params
from augvit.stats import (hierarchical_bootstrap, holm, mean_ci, min_detectable_difference,
                          paired_difference, power, replication_probability, seeds_needed,
                          variance_components, verdict)

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


def summarize(table: Table, baseline: str, losses: dict | None = None,
              contrasts: dict[str, tuple[str, str]] | None = None, target: float = 0.01,
              correct: dict | None = None) -> dict:
    """The whole analysis: per group (version x backbone x size) its accuracy over seeds; every
    comparison of the family (each version against the baseline, each named contrast a - b,
    per backbone and size) with its paired test, Holm-adjusted over the family, its power
    and its verdict; frozen minus fine-tuned (outside the family) where both ran.
    `losses` and `correct` (group -> (n_seeds, n_test) 0/1 array in seed order) are optional."""
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
    for c, adjusted in zip(family, holm([c["diff"]["p_value"] for c in family])):
        _judge(c, adjusted, len(family), target, correct)
        if c["kind"] == "baseline":
            groups[f"{c['a']}/{c['backbone']}/n{c['train_size']}"]["acc_diff_vs_baseline"] = \
                c["diff"]
    return {"baseline": baseline, "alpha": ALPHA, "target": target, "family_size": len(family),
            "groups": groups, "comparisons": family}


def _acc(table: Table, key: tuple[str, str, int]) -> dict[int, float]:
    return {s: m["acc"] for s, m in table[key].items()}


def _family(table: Table, baseline: str, contrasts: dict) -> list[dict]:
    """The comparisons tested together: each version minus the baseline, then each contrast."""
    pairs = [("baseline", f"{v} - {baseline}", v, baseline, b, n)
             for (v, b, n) in table if v != baseline and (baseline, b, n) in table]
    pairs += [("contrast", name, a, c, b, n) for name, (a, c) in contrasts.items()
              for (v, b, n) in table if v == a and (c, b, n) in table]
    return [{"kind": kind, "name": name, "a": a, "b": other, "backbone": b, "train_size": n,
             "diff": paired_difference(_acc(table, (a, b, n)), _acc(table, (other, b, n)))}
            for kind, name, a, other, b, n in pairs]


def _judge(c: dict, p_holm: float | None, m: int, target: float, correct: dict | None) -> None:
    """Holm, power, verdict and (with per-image results) the seed-and-image interval."""
    d = c["diff"]
    d["p_holm"] = p_holm
    d["holds_after_holm"] = p_holm is not None and p_holm <= ALPHA and d["mean"] != 0
    c["verdict"] = verdict(d["mean"], d["std"], d["n"], p_holm, target=target, alpha=ALPHA,
                           m=m)
    testable = d["std"] is not None and d["std"] > 0 and d["n"] >= 2
    c["power"] = None if not testable else {
        "sd": d["std"], "at_target": power(d["std"], d["n"], target, ALPHA, m),
        "min_detectable": min_detectable_difference(d["std"], d["n"], ALPHA, m),
        "seeds_needed": seeds_needed(d["std"], target, ALPHA, m),
        "rerun": replication_probability(d["mean"], d["std"], d["n"], ALPHA, m)}
    ka, kb = (c["a"], c["backbone"], c["train_size"]), (c["b"], c["backbone"], c["train_size"])
    if correct and ka in correct and kb in correct and d["n"] >= 2:
        a, b = correct[ka][:d["n"]], correct[kb][:d["n"]]
        c["images"] = {"bootstrap": hierarchical_bootstrap(a, b),
                       "components": variance_components(a, b)}


def _interval(prefix: str, c: dict | None) -> dict[str, float]:
    """{prefix: mean, prefix_low, prefix_high} (no interval with one seed), rounded."""
    if c is None:
        return {}
    out = {prefix: round(c["mean"], 5)}
    if c["ci95"] is not None:
        out.update({f"{prefix}_low": round(c["ci95"][0], 5),
                    f"{prefix}_high": round(c["ci95"][1], 5)})
    return out


def summary_metrics(analysis: dict) -> dict:
    """metrics/summary.json: per version / backbone / n<size>: acc (mean over seeds) with
    acc_low/high (its 95% CI); against the baseline: diff, diff_low/high and the Holm-adjusted
    p_holm; frozen groups: vs_finetuned with its interval; per contrast the same as the
    baseline's under contrasts/<name>/<backbone>/n<size>. n_seeds once. Test loss, power and
    verdicts live in reports/comparison.json: a few columns per version keep `dvc exp show`
    readable."""
    groups = analysis["groups"].values()
    out: dict = {"n_seeds": max(g["test_acc"]["n"] for g in groups)}
    for g in groups:
        entry = _interval("acc", g["test_acc"])
        entry |= _interval("vs_finetuned", g.get("acc_diff_frozen_vs_finetuned"))
        out.setdefault(g["version"], {}).setdefault(g["backbone"], {})[
            f"n{g['train_size']}"] = entry
    for c in analysis["comparisons"]:
        entry = _interval("diff", c["diff"])
        if c["diff"]["p_holm"] is not None:
            entry["p_holm"] = round(c["diff"]["p_holm"], 5)
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
            lo, hi = (np.nan, np.nan) if d["ci95"] is None else d["ci95"]
            rows.append({"train_size": c["train_size"], "version": c["a"],
                         "backbone": c["backbone"], "diff": round(100 * d["mean"], 3),
                         "diff_low": round(100 * lo, 3), "diff_high": round(100 * hi, 3),
                         "verdict": c["verdict"]["verdict"]})
    return rows
