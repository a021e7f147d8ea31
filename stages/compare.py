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


def run_seconds(folder: Path | None, study_runs: list) -> dict | None:
    """The median wall time of the study's trainings as the train stage noted them on this
    machine (`.timings/<run>.json`), or None where none was noted."""
    if folder is None:
        return None
    seconds, cpus = [], set()
    for run in study_runs:
        path = run.path(folder, ".json")
        if path.is_file():
            note = load_json(path)
            if isinstance(note, dict) and isinstance(note.get("seconds"), (int, float)) and \
                    note["seconds"] > 0 and not note.get("resumed"):     # a whole run only
                seconds.append(float(note["seconds"]))
                cpus.add(str(note.get("gpu") or note.get("cpu")))
    if not seconds:
        return None
    # the median: a run slowed by other work on the machine moves it least
    return {"median": float(np.median(seconds)), "runs": len(seconds), "devices": sorted(cpus)}


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
    ap.add_argument("--timings", type=Path, default=None,
                    help="folder of the train stage's wall-time notes (machine data, not a "
                         "dependency): turns the seeds an undecided comparison needs into "
                         "minutes")
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
        st = p.study
        design = {"seeds": list(st.seeds), "looks": list(st.looks), "spending": st.spending,
                  "target": st.target_difference}
        analysis = summarize(collect(args.runs, p), st.baseline, design, losses,
                             dict(st.contrasts),
                             {k: np.stack(v).astype(np.float64) for k, v in correct.items()},
                             run_seconds(args.timings, runs(p)))
        report = render_report(analysis, environments, len(labels))
        save_json(args.analysis_out, analysis)
        save_json(args.summary_out, summary_metrics(analysis))
        with atomic_path(args.report_out) as tmp:
            tmp.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
