"""The study's report: from per-run test metrics to per-version summaries.

`summarize` is the whole analysis, per version x backbone setting: mean, std, n and 95% CI of
test accuracy and loss, the paired difference to the baseline version (study.baseline; same
seed, same backbone), and frozen minus fine-tuned where both ran (the compare stage writes it
to reports/comparison.json, and as tables to reports/comparison.md). `summary_metrics` is the
part that DVC shows as metrics: a few flat numbers per group, so that `dvc exp show` stays a
table and `dvc metrics diff` lists only what changed. Statistics: augvit/stats.py.
"""
from __future__ import annotations

from pathlib import Path

from augvit.io import load_json
from augvit.layout import BACKBONE_LABELS, runs
from augvit.params import Params
from augvit.stats import mean_ci, paired_difference


def collect(runs_dir: Path, p: Params) -> dict[tuple[str, str], dict[int, dict]]:
    """(version, backbone) -> seed -> that run's test metrics; a missing run is an error."""
    table: dict[tuple[str, str], dict[int, dict]] = {}
    for run in runs(p):
        path = run.path(runs_dir, ".json")
        if not path.is_file():
            raise FileNotFoundError(f"compare: missing run metrics {path}; "
                                    "run `dvc repro` to produce every run first.")
        table.setdefault((run.version, run.backbone), {})[run.seed] = load_json(path)
    return table


def summarize(table: dict[tuple[str, str], dict[int, dict]], baseline: str) -> dict:
    """Per (version, backbone): test accuracy and loss over seeds, the paired difference to the
    baseline version (same backbone), and frozen minus fine-tuned (same version)."""
    groups = {}
    for (v, b), seeds in table.items():
        acc = {s: m["acc"] for s, m in seeds.items()}
        loss = {s: m["loss"] for s, m in seeds.items()}
        entry = {"version": v, "backbone": b, "seeds": sorted(seeds),
                 "test_acc": mean_ci(list(acc.values())),
                 "test_loss": mean_ci(list(loss.values()))}
        base = table.get((baseline, b))
        if base is not None and v != baseline:
            entry["acc_diff_vs_baseline"] = paired_difference(
                acc, {s: m["acc"] for s, m in base.items()})
        if b == "frozen" and (v, "finetuned") in table:   # same version and seed
            trained = {s: m["acc"] for s, m in table[(v, "finetuned")].items()}
            entry["acc_diff_frozen_vs_finetuned"] = paired_difference(acc, trained)
        groups[f"{v}/{b}"] = entry
    return groups


def _interval(prefix: str, c: dict | None) -> dict[str, float]:
    """{prefix: mean, prefix_low, prefix_high} (no interval with one seed), rounded."""
    if c is None:
        return {}
    out = {prefix: round(c["mean"], 5)}
    if c["ci95"] is not None:
        out.update({f"{prefix}_low": round(c["ci95"][0], 5),
                    f"{prefix}_high": round(c["ci95"][1], 5)})
    if c.get("p_value") is not None:
        out[f"{prefix}_p" if prefix != "diff" else "p"] = round(c["p_value"], 5)
    return out


def summary_metrics(groups: dict) -> dict:
    """metrics/summary.json: per version, per backbone: acc (mean over seeds), acc_low/high (its
    95% CI); against the baseline: diff, diff_low/high, p; frozen groups: vs_finetuned..."""
    out: dict = {"n_seeds": max(g["test_acc"]["n"] for g in groups.values())}
    for g in groups.values():
        entry = _interval("acc", g["test_acc"])
        entry |= _interval("diff", g.get("acc_diff_vs_baseline"))
        entry |= _interval("vs_finetuned", g.get("acc_diff_frozen_vs_finetuned"))
        out.setdefault(g["version"], {})[g["backbone"]] = entry
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _ci(c: dict) -> str:
    return "n/a (1 seed)" if c["ci95"] is None else f"[{_pct(c['ci95'][0])}, {_pct(c['ci95'][1])}]"


def render_markdown(groups: dict, baseline: str) -> str:
    lines = ["# Augmentation study: test accuracy (%)", "",
             "Mean over seeds, 95% CI of the mean (Student's t). Differences are paired by seed "
             "(same init and data order); *significant* = the 95% CI of the difference excludes 0.",
             "",
             f"| version | backbone | n | test acc | 95% CI | std | test loss "
             f"| diff vs {baseline} | 95% CI of diff | p (paired t) | significant |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups.values():
        a, d = g["test_acc"], g.get("acc_diff_vs_baseline")
        diff = ("(baseline)", "", "", "") if d is None else (
            f"{100 * d['mean']:+.2f}", _ci(d),
            "n/a" if d["p_value"] is None else f"{d['p_value']:.3f}",
            "yes" if d["significant"] else "no")
        lines.append(f"| {g['version']} | {BACKBONE_LABELS[g['backbone']]} "
                     f"| {a['n']} | {_pct(a['mean'])} | {_ci(a)} | {_pct(a['std'])} "
                     f"| {g['test_loss']['mean']:.4f} | " + " | ".join(diff) + " |")
    frozen = [g for g in groups.values() if "acc_diff_frozen_vs_finetuned" in g]
    if frozen:
        lines += ["", "## Frozen backbone minus fine-tuned backbone (same version, same seed)", "",
                  "| version | diff (pp) | 95% CI | significant |", "|---|---|---|---|"]
        for g in frozen:
            d = g["acc_diff_frozen_vs_finetuned"]
            lines.append(f"| {g['version']} | {100 * d['mean']:+.2f} | {_ci(d)} "
                         f"| {'yes' if d['significant'] else 'no'} |")
    return "\n".join(lines) + "\n"
