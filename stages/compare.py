"""Stage `compare`: from single runs to a study: metrics/summary.json (a few flat numbers per
version, for DVC), reports/comparison.json (the whole analysis: every comparison with the
baseline, Holm-adjusted) and reports/comparison.md."""
from __future__ import annotations

import argparse
from pathlib import Path

from augvit.environment import plain_environment
from augvit.io import atomic_path, load_json, raise_on_sigterm, save_json, user_errors
from augvit.layout import runs
from augvit.params import load_params
from augvit.report import (collect, render_environments, render_markdown, summarize,
                           summary_metrics)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--details", type=Path, required=True)
    ap.add_argument("--summary-out", type=Path, required=True)
    ap.add_argument("--analysis-out", type=Path, required=True)
    ap.add_argument("--report-out", type=Path, required=True)
    args = ap.parse_args(argv)
    raise_on_sigterm()
    with user_errors("compare"):
        p = load_params(args.params)
        losses: dict = {}
        environments: dict = {}
        for run in runs(p):
            details = load_json(run.path(args.details, ".json"))
            losses.setdefault((run.version, run.backbone, run.size), {})[run.seed] = \
                details["loss"]
            environments[run.id] = plain_environment(details.get("environment", {}).get("train"))
        groups = summarize(collect(args.runs, p), p.study.baseline, losses)
        report = render_markdown(groups, p.study.baseline) + render_environments(environments)
        save_json(args.analysis_out, groups)
        save_json(args.summary_out, summary_metrics(groups))
        with atomic_path(args.report_out) as tmp:
            tmp.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
