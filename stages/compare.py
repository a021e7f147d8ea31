"""Stage `compare`: from single runs to a study: metrics/summary.json (a few flat numbers per
version, for DVC), reports/comparison.json (the whole analysis: every comparison of the family,
Holm-adjusted, with its power and verdict) and reports/comparison.md (the report, verdicts in
plain words first)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from augvit.environment import plain_environment
from augvit.io import atomic_path, load_arrays, load_json, raise_on_sigterm, save_json, \
    user_errors
from augvit.layout import runs
from augvit.markdown import render_report
from augvit.params import CheckParams, load_params
from augvit.predictions import correctness, decode_predictions
from augvit.report import collect, summarize, summary_metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--check-params", action=CheckParams)
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--details", type=Path, required=True)
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--summary-out", type=Path, required=True)
    ap.add_argument("--analysis-out", type=Path, required=True)
    ap.add_argument("--report-out", type=Path, required=True)
    args = ap.parse_args(argv)
    raise_on_sigterm()
    with user_errors("compare"):
        p = load_params(args.params)
        labels = load_arrays(args.prepared / "test.npz")["labels"]
        losses: dict = {}
        environments: dict = {}
        correct: dict = {}
        for run in runs(p):           # seeds in params order within each group
            key = (run.version, run.backbone, run.size)
            details = load_json(run.path(args.details, ".json"))
            losses.setdefault(key, {})[run.seed] = details["loss"]
            environments[run.id] = plain_environment(details.get("environment", {}).get("train"))
            predicted = decode_predictions(details["predicted"], max_len=len(labels))
            correct.setdefault(key, []).append(correctness(predicted, labels))
        analysis = summarize(collect(args.runs, p), p.study.baseline, losses,
                             dict(p.study.contrasts), p.study.target_difference,
                             {k: np.stack(v).astype(np.float64) for k, v in correct.items()})
        report = render_report(analysis, environments, len(labels))
        save_json(args.analysis_out, analysis)
        save_json(args.summary_out, summary_metrics(analysis))
        with atomic_path(args.report_out) as tmp:
            tmp.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
