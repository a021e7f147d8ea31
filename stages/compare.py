"""Stage `compare`: from single runs to a study.

Reads every run's test metrics (metrics/runs/<version>/freeze-<bool>/seed<k>.json) and writes
  metrics/summary.json   per version x backbone setting: mean, std, n, 95% CI of test acc/loss,
                         and the paired difference to version_0 (same seed, same backbone).
  reports/comparison.md  the same as markdown tables.

Statistics: runs with the same seed share the model init and the data order, so versions are
compared by a paired t-test across seeds: the 95% CI of the mean per-seed difference uses
Student's t with n-1 degrees of freedom; "significant" means that interval excludes zero.
With one seed there is no interval (reported as null), and nothing is called significant.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from scipy import stats

from stages.io import atomic_path, load_json, raise_on_sigterm, save_json, user_errors
from stages.params import load_params

BASELINE = "version_0"


def mean_ci(values: list[float], level: float = 0.95) -> dict:
    """Mean, sample std, n and the t-based confidence interval of the mean."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "std": None, "n": n, "ci95": None}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "ci95": [mean - half, mean + half]}


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """a - b over the seeds both have: mean difference, its CI, the paired t-test p-value."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = [a[s] - b[s] for s in seeds]
    out = mean_ci(d)
    out["seeds"] = seeds
    if out["ci95"] is None:
        out.update(p_value=None, significant=False)
    elif out["std"] == 0:
        out.update(p_value=0.0 if out["mean"] != 0 else 1.0, significant=out["mean"] != 0)
    else:
        out["p_value"] = float(stats.ttest_1samp(d, 0.0).pvalue)
        out["significant"] = bool(out["ci95"][0] > 0 or out["ci95"][1] < 0)
    return out


def collect(runs_dir: Path, versions: list[str], freezes: list[bool],
            seeds: list[int]) -> dict[tuple[str, bool], dict[int, dict]]:
    """(version, freeze) -> seed -> that run's metrics; a missing run is an error."""
    table: dict[tuple[str, bool], dict[int, dict]] = {}
    for v in versions:
        for f in freezes:
            for s in seeds:
                path = runs_dir / v / f"freeze-{str(f).lower()}" / f"seed{s}.json"
                if not path.is_file():
                    raise FileNotFoundError(f"compare: missing run metrics {path}; "
                                            "run `dvc repro` to produce every run first.")
                table.setdefault((v, f), {})[s] = load_json(path)
    return table


def summarize(table: dict[tuple[str, bool], dict[int, dict]]) -> dict:
    groups = {}
    for (v, f), runs in table.items():
        acc = {s: m["acc"] for s, m in runs.items()}
        loss = {s: m["loss"] for s, m in runs.items()}
        entry = {"version": v, "freeze_backbone": f, "seeds": sorted(runs),
                 "test_acc": mean_ci(list(acc.values())), "test_loss": mean_ci(list(loss.values()))}
        base = table.get((BASELINE, f))
        if base is not None and v != BASELINE:
            entry["acc_diff_vs_version_0"] = paired_difference(
                acc, {s: m["acc"] for s, m in base.items()})
        if f and (v, False) in table:       # frozen minus fine-tuned, same version and seed
            trained = {s: m["acc"] for s, m in table[(v, False)].items()}
            entry["acc_diff_frozen_vs_finetuned"] = paired_difference(acc, trained)
        groups[f"{v}/freeze-{str(f).lower()}"] = entry
    return groups


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _ci(c: dict) -> str:
    return "n/a (1 seed)" if c["ci95"] is None else f"[{_pct(c['ci95'][0])}, {_pct(c['ci95'][1])}]"


def render_markdown(groups: dict) -> str:
    lines = ["# Augmentation study: test accuracy (%)", "",
             "Mean over seeds, 95% CI of the mean (Student's t). Differences are paired by seed "
             "(same init and data order); *significant* = the 95% CI of the difference excludes 0.",
             "",
             "| version | backbone | n | test acc | 95% CI | std | test loss "
             "| diff vs version_0 | 95% CI of diff | p (paired t) | significant |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups.values():
        a, d = g["test_acc"], g.get("acc_diff_vs_version_0")
        diff = ("(baseline)", "", "", "") if d is None else (
            f"{100 * d['mean']:+.2f}", _ci(d),
            "n/a" if d["p_value"] is None else f"{d['p_value']:.3f}",
            "yes" if d["significant"] else "no")
        lines.append(f"| {g['version']} | {'frozen' if g['freeze_backbone'] else 'fine-tuned'} "
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--summary-out", type=Path, required=True)
    ap.add_argument("--report-out", type=Path, required=True)
    args = ap.parse_args(argv)
    raise_on_sigterm()
    with user_errors("compare"):
        p = load_params(args.params)
        table = collect(args.runs, list(p.versions), list(p.model.freeze_backbone),
                        list(p.train.seeds))
        groups = summarize(table)
        report = render_markdown(groups)
        save_json(args.summary_out, groups)
        with atomic_path(args.report_out) as tmp:
            tmp.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
