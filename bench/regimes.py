"""Which training regime decides a comparison in the fewest CPU-minutes?

    python -m bench.regimes --out bench/results/regimes.json            # the committed figures
    python -m bench.regimes --seeds 0 1 --regimes ema40 --out /tmp/r.json   # a quick look
    python -m bench.regimes --table bench/results/regimes*.json > bench/results/regimes.md

Trains the control and one augmented version (study.baseline and `--version`, default
version_0) on the same seeds under each candidate regime, with the project's own training and
evaluation code (augvit.training.train_run, augvit.evaluation.evaluate) on data/prepared, and
writes for each regime: every run's test accuracy and wall time, the paired differences, their
SD across seeds, and the figure to minimise: minutes of training to decide a 1-point
difference = (2 runs x mean run time) x the seeds that a paired t-test at the family's
Bonferroni level needs for 80% power at study.target_difference with that SD
(augvit.stats.seeds_needed). A regime is a set of overrides of params.yaml's `train` and
`study.train_sizes`. Runs in one process, one after another; the run time excludes Python's
start-up, which every regime pays alike.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from augvit.evaluation import evaluate
from augvit.io import save_json
from augvit.layout import Run
from augvit.params import load_params
from augvit.stats import seeds_needed
from augvit.training import train_run

ROOT = Path(__file__).resolve().parents[1]

# name -> (train overrides, train size)
REGIMES: dict[str, tuple[dict, int]] = {
    "last40": ({"epochs": 40, "ema_decay": 0.0, "val_every": 1}, 500),
    "last40_val5": ({"epochs": 40, "ema_decay": 0.0, "val_every": 5}, 500),
    "ema40": ({"epochs": 40, "ema_decay": 0.99, "val_every": 5}, 500),
    "ema20": ({"epochs": 20, "ema_decay": 0.99, "val_every": 5}, 500),
    "ema20_n1000": ({"epochs": 20, "ema_decay": 0.99, "val_every": 5}, 1000),
}


def run_regime(params, name: str, versions: list[str], seeds: list[int], work: Path) -> dict:
    overrides, size = REGIMES[name]
    p = replace(params, train=params.train.model_copy(update=overrides))
    prepared = ROOT / "data" / "prepared"
    rows = []
    for seed in seeds:
        for version in versions:
            run = Run(version, "finetuned", size, seed)
            out = work / name / run.id
            t0, c0 = time.perf_counter(), time.process_time()
            train_run(p, run, ROOT / "recipes" / f"{version}.json", prepared,
                      out / "model.safetensors", out / "live", out / "resume", fresh=True)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            metrics, _ = evaluate(out / "model.safetensors", prepared, 500, torch.device("cpu"))
            rows.append({"version": version, "seed": seed, "acc": metrics["acc"],
                         "seconds": round(seconds, 1),
                         "cpu_seconds": round(cpu, 1)})
            print(f"regimes: {name} {version} seed {seed}: acc {metrics['acc']:.4f} "
                  f"in {seconds:.0f}s", flush=True)
    return {"overrides": overrides, "train_size": size, "runs": rows}


def summarize(result: dict, base: str, version: str, target: float, m: int) -> dict:
    acc = {(r["version"], r["seed"]): r["acc"] for r in result["runs"]}
    seeds = sorted({r["seed"] for r in result["runs"]})
    d = np.array([acc[version, s] - acc[base, s] for s in seeds])
    run_s = float(np.mean([r["seconds"] for r in result["runs"]]))
    sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    n = seeds_needed(sd, target, 0.05, m) if sd > 0 else None
    return {"diff_pp": round(100 * float(d.mean()), 2), "sd_pp": round(100 * sd, 2),
            "mean_acc_pct": {v: round(100 * float(np.mean([acc[v, s] for s in seeds])), 2)
                             for v in (base, version)},
            "run_seconds": round(run_s, 1), "seeds_for_80pct": n,
            "minutes_to_decide": None if n is None else round(2 * run_s * n / 60, 1)}


DESCRIBE = {"last40": "40 epochs, last weights, validated every epoch",
            "last40_val5": "40 epochs, last weights, validated every 5",
            "ema40": "40 epochs, EMA of the weights (0.99), validated every 5",
            "ema20": "20 epochs, EMA (0.99), validated every 5",
            "ema20_n1000": "1,000 images, 20 epochs, EMA (0.99), validated every 5"}


def table(paths: list[Path]) -> str:
    """The regimes of one or more result files as a Markdown table, fewest minutes first."""
    rows, seeds, cpus = [], set(), set()
    for path in paths:
        res = json.loads(path.read_text())
        seeds.add(tuple(res["seeds"]))
        cpus.add(f"{res['cpu']}, {res['threads']} thread(s)")
        for name, r in res["regimes"].items():
            rows.append((name, r["train_size"], r["summary"]))
    rows.sort(key=lambda r: (r[2]["minutes_to_decide"] is None, r[2]["minutes_to_decide"]))
    out = ["| regime | train images | version_0 - none (pp) | SD of the difference (pp) "
           "| s a run | seeds for 80% at 1 pp | minutes to decide 1 pp |",
           "|---|---|---|---|---|---|---|"]
    for name, size, s in rows:
        out.append(f"| {name}: {DESCRIBE.get(name, '')} | {size:,} | {s['diff_pp']:+.2f} | "
                   f"{s['sd_pp']:.2f} | {s['run_seconds']:.1f} | {s['seeds_for_80pct']} | "
                   f"{s['minutes_to_decide']} |")
    out += ["", f"Seeds {', '.join(' '.join(map(str, x)) for x in sorted(seeds))}; "
            f"{'; '.join(sorted(cpus))}."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    ap.add_argument("--version", default="version_0")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path, nargs="+",
                    help="print the result files given as a Markdown table, and stop")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.table), end="")
        return
    if args.out is None:
        ap.error("--out is required to measure")
    params = load_params(ROOT / "params.yaml")
    base, m = params.study.baseline, 4
    out = {"cpu": "", "threads": torch.get_num_threads(), "seeds": args.seeds,
           "versions": [base, args.version], "family_size": m,
           "target_difference": params.study.target_difference, "regimes": {}}
    from augvit.environment import cpu_description
    out["cpu"] = cpu_description()["cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.regimes:
            res = run_regime(params, name, [base, args.version], args.seeds, Path(tmp))
            res["summary"] = summarize(res, base, args.version,
                                       params.study.target_difference, m)
            out["regimes"][name] = res
            print(f"regimes: {name}: {json.dumps(res['summary'])}", flush=True)
            save_json(args.out, out)            # after each regime: a partial run keeps its part


if __name__ == "__main__":
    main()
