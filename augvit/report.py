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

from augvit.environment import machine_key
from augvit.io import load_json
from augvit.layout import BACKBONE_LABELS, runs
from augvit.params import Params
from augvit.stats import holm, mean_ci, paired_difference

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


def summarize(table: Table, baseline: str, losses: dict | None = None) -> dict:
    """The analysis per group; `losses` (same keys as table) gives each run's test loss."""
    groups = {}
    for (v, b, n), seeds in table.items():
        acc = {s: m["acc"] for s, m in seeds.items()}
        entry = {"version": v, "backbone": b, "train_size": n, "seeds": sorted(seeds),
                 "test_acc": mean_ci(list(acc.values()))}
        if losses is not None:
            entry["test_loss"] = mean_ci(list(losses[(v, b, n)].values()))
        base = table.get((baseline, b, n))
        if base is not None and v != baseline:
            entry["acc_diff_vs_baseline"] = paired_difference(
                acc, {s: m["acc"] for s, m in base.items()})
        if b == "frozen" and (v, "finetuned", n) in table:   # same version, size and seed
            trained = {s: m["acc"] for s, m in table[(v, "finetuned", n)].items()}
            entry["acc_diff_frozen_vs_finetuned"] = paired_difference(acc, trained)
        groups[f"{v}/{b}/n{n}"] = entry
    diffs = [g["acc_diff_vs_baseline"] for g in groups.values() if "acc_diff_vs_baseline" in g]
    for d, adjusted in zip(diffs, holm([d["p_value"] for d in diffs])):
        d["p_holm"] = adjusted
        d["holds_after_holm"] = adjusted is not None and adjusted <= ALPHA and d["mean"] != 0
    return groups


def _interval(prefix: str, c: dict | None) -> dict[str, float]:
    """{prefix: mean, prefix_low, prefix_high} (no interval with one seed), rounded."""
    if c is None:
        return {}
    out = {prefix: round(c["mean"], 5)}
    if c["ci95"] is not None:
        out.update({f"{prefix}_low": round(c["ci95"][0], 5),
                    f"{prefix}_high": round(c["ci95"][1], 5)})
    return out


def summary_metrics(groups: dict) -> dict:
    """metrics/summary.json: per version / backbone / n<size>: acc (mean over seeds) with
    acc_low/high (its 95% CI); against the baseline: diff, diff_low/high and the Holm-adjusted
    p_holm (the one that says whether a difference holds); frozen groups: vs_finetuned with its
    interval. n_seeds once. Test loss and the unadjusted p live in reports/comparison.json: a
    few columns per version keep `dvc exp show` readable (66 -> 57 for 5 versions x 5 seeds)."""
    out: dict = {"n_seeds": max(g["test_acc"]["n"] for g in groups.values())}
    for g in groups.values():
        entry = _interval("acc", g["test_acc"])
        if d := g.get("acc_diff_vs_baseline"):
            entry |= _interval("diff", d)
            if d["p_holm"] is not None:
                entry["p_holm"] = round(d["p_holm"], 5)
        entry |= _interval("vs_finetuned", g.get("acc_diff_frozen_vs_finetuned"))
        out.setdefault(g["version"], {}).setdefault(g["backbone"], {})[
            f"n{g['train_size']}"] = entry
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _ci(c: dict) -> str:
    if c.get("zero_variance"):
        return "n/a (no variance)"
    return "n/a (1 seed)" if c["ci95"] is None else f"[{_pct(c['ci95'][0])}, {_pct(c['ci95'][1])}]"


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def render_markdown(groups: dict, baseline: str) -> str:
    n_tests = sum("acc_diff_vs_baseline" in g for g in groups.values())
    lines = ["# Augmentation study: test accuracy (%)", "",
             f"Mean over seeds and 95% CI of the mean (Student's t). Differences to {baseline} are "
             "paired by seed (same init and data order): mean, 95% CI, paired-t p-value, and the "
             f"p-value Holm-adjusted over all {n_tests} comparisons with {baseline}. *Holds* = "
             f"Holm-adjusted p <= {ALPHA} (the family-wise error rate over all of them is at "
             f"most {ALPHA}).", "",
             f"| version | backbone | train images | n | test acc | 95% CI | test loss "
             f"| diff vs {baseline} (pp) | 95% CI of diff | p | p (Holm) | holds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups.values():
        a, d = g["test_acc"], g.get("acc_diff_vs_baseline")
        diff = ("(baseline)", "", "", "", "") if d is None else (
            f"{100 * d['mean']:+.2f}", _ci(d), _p(d["p_value"]), _p(d["p_holm"]),
            "**yes**" if d["holds_after_holm"] else "no")
        loss = f"{g['test_loss']['mean']:.4f}" if "test_loss" in g else "n/a"
        lines.append(f"| {g['version']} | {BACKBONE_LABELS[g['backbone']]} | {g['train_size']} "
                     f"| {a['n']} | {_pct(a['mean'])} | {_ci(a)} | {loss} | "
                     + " | ".join(diff) + " |")
    frozen = [g for g in groups.values() if "acc_diff_frozen_vs_finetuned" in g]
    if frozen:
        lines += ["", "## Frozen backbone minus fine-tuned backbone (same version, size, seed)",
                  "", "| version | train images | diff (pp) | 95% CI | p |", "|---|---|---|---|---|"]
        for g in frozen:
            d = g["acc_diff_frozen_vs_finetuned"]
            lines.append(f"| {g['version']} | {g['train_size']} | {100 * d['mean']:+.2f} "
                         f"| {_ci(d)} | {_p(d['p_value'])} |")
    return "\n".join(lines) + "\n"


def size_effect_rows(groups: dict) -> list[dict]:
    """Rows for the data-size chart: each version's difference to the baseline per train size."""
    rows = []
    for g in groups.values():
        d = g.get("acc_diff_vs_baseline")
        if d is not None:
            lo, hi = (np.nan, np.nan) if d["ci95"] is None else d["ci95"]
            rows.append({"train_size": g["train_size"], "version": g["version"],
                         "backbone": g["backbone"], "diff": round(100 * d["mean"], 3),
                         "diff_low": round(100 * lo, 3), "diff_high": round(100 * hi, 3),
                         "holds": d["holds_after_holm"]})
    return rows


def render_environments(environments: dict[str, dict]) -> str:
    """Where the runs were trained: one row per distinct environment, and a plain warning when
    the study mixes several (runs from another machine differ as another seed would)."""
    kinds: dict[tuple, list[str]] = {}
    for run_id, env in environments.items():
        kinds.setdefault(machine_key(env), []).append(run_id)
    lines = ["", "## Where the runs were trained", ""]
    if len(kinds) == 1:
        lines.append(f"All {len(environments)} runs were trained in one environment.")
    else:
        lines.append(f"**This study mixes {len(kinds)} environments.** Each environment's "
                     "floating-point order acts like another seed, so its runs are not "
                     "bit-for-bit reproducible on one machine; rerun them all on one machine "
                     "(`dvc repro --force`) for an exact replicate.")
    lines += ["", "| runs | device | precision | torch | transformers | lightning | python "
              "| augvit |", "|---|---|---|---|---|---|---|---|"]
    for ids in kinds.values():
        env = environments[ids[0]]
        device = env.get("gpu") and f"{env['gpu']} (CUDA {env.get('cuda')})" or \
            f"{env.get('cpu', 'unknown')} ({', '.join(env.get('cpu_flags', [])) or 'no flags'})"
        lines.append(f"| {len(ids)} | {device} | {env.get('precision', '?')} | "
                     f"{env.get('torch', '?')} | {env.get('transformers', '?')} | "
                     f"{env.get('lightning', '?')} | {env.get('python', '?')} | "
                     f"{env.get('augvit', '?')} |")
    return "\n".join(lines) + "\n"
