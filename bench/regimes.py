"""Which training regime decides a comparison in the fewest CPU-minutes?

    OMP_NUM_THREADS=1 python -m bench.regimes --out bench/results/regimes/regimes.json
    python -m bench.regimes --seeds 0 1 --regimes ema40 --out quick.json     # a quick look
    python -m bench.regimes --table bench/results/regimes/*.json > bench/results/regimes/table.md

Trains the control and one augmented version (study.baseline and `--version`, default
version_0) on the same seeds under each candidate regime, with the project's own training and
evaluation code (augvit.training.train_run, augvit.evaluation.evaluate) on data/prepared, and
writes for each regime: every run's test accuracy, wall and CPU time, the paired differences,
their SD across seeds, and the figure to minimise: CPU minutes of training to decide a 1-point
difference = (2 runs x mean CPU time of a run) x the seeds that a paired t-test at the
family's Bonferroni level needs for 80% power at study.target_difference with that SD
(augvit.stats.seeds_needed); and the same for the difference the regime itself measured. A regime is a set of overrides of params.yaml's `train` and
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
    # CPU seconds: the work a run takes, steadier than wall time when the machine is shared
    run_s = float(np.mean([r.get("cpu_seconds", r["seconds"]) for r in result["runs"]]))
    sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    n = seeds_needed(sd, target, 0.05, m) if sd > 0 else None
    own = seeds_needed(sd, abs(float(d.mean())), 0.05, m) if sd > 0 and d.mean() != 0 else None
    return {"diff_pp": round(100 * float(d.mean()), 2), "sd_pp": round(100 * sd, 2),
            "seeds_for_own_diff": own,
            "minutes_to_decide_own": None if own is None else round(2 * run_s * own / 60, 1),
            "mean_acc_pct": {v: round(100 * float(np.mean([acc[v, s] for s in seeds])), 2)
                             for v in (base, version)},
            "run_seconds": round(run_s, 1), "seeds_for_80pct": n,
            "minutes_to_decide": None if n is None else round(2 * run_s * n / 60, 1)}


DESCRIBE = {"last40": "40 epochs, last weights, validated every epoch",
            "last40_val5": "40 epochs, last weights, validated every 5",
            "ema40": "40 epochs, EMA of the weights (0.99), validated every 5",
            "ema20": "20 epochs, EMA (0.99), validated every 5",
            "ema20_n1000": "1,000 images, 20 epochs, EMA (0.99), validated every 5"}


# Regimes that train the very same weights as another (validation changes no weight:
# tests/test_faults.py); measured on a few seeds for their time, their accuracies checked equal.
SAME_WEIGHTS = {"last40_val5": "last40"}


def table(paths: list[Path]) -> str:
    """The regimes of one or more result files as a Markdown table, fewest minutes first."""
    found, seeds, cpus = {}, set(), set()
    for path in paths:
        res = json.loads(path.read_text())
        cpus.add(f"{res['cpu']}, {res['threads']} thread(s)")
        for name, r in res["regimes"].items():
            found[name] = (r, res)
    rows = []
    for name, (r, res) in found.items():
        note = ""
        if name in SAME_WEIGHTS and SAME_WEIGHTS[name] in found:
            ref, ref_res = found[SAME_WEIGHTS[name]]
            acc = {(x["version"], x["seed"]): x["acc"] for x in ref["runs"]}
            if any(acc.get((x["version"], x["seed"])) != x["acc"] for x in r["runs"]):
                raise ValueError(f"{name}: its accuracies differ from {SAME_WEIGHTS[name]}'s")
            cpu = float(np.mean([x["cpu_seconds"] for x in r["runs"]]))
            merged = dict(ref["summary"], run_seconds=round(cpu, 1))
            for n_key, key in (("seeds_for_80pct", "minutes_to_decide"),
                               ("seeds_for_own_diff", "minutes_to_decide_own")):
                n = merged[n_key]
                merged[key] = None if n is None else round(2 * cpu * n / 60, 1)
            r, res = {"train_size": r["train_size"], "summary": merged}, ref_res
            note = (f" (trains {SAME_WEIGHTS[name]}'s weights: equal on seeds "
                    f"{' '.join(map(str, sorted({x['seed'] for x in found[name][0]['runs']})))})")
        seeds.add(tuple(res["seeds"]))
        rows.append((name + note, r["train_size"], r["summary"]))
    rows.sort(key=lambda r: (r[2]["minutes_to_decide"] is None, r[2]["minutes_to_decide"]))
    out = ["| regime | train images | version_0 - none (pp) | SD of the difference (pp) "
           "| CPU s a run | seeds for 80% at 1 pp | CPU minutes to decide 1 pp "
           "| CPU minutes to decide its own difference |",
           "|---|---|---|---|---|---|---|---|"]
    for name, size, s in rows:
        out.append(f"| {name.split(' ')[0]}: {DESCRIBE.get(name.split(' ')[0], '')}"
                   f"{name[len(name.split(' ')[0]):]} | {size:,} | {s['diff_pp']:+.2f} | "
                   f"{s['sd_pp']:.2f} | {s['run_seconds']:.1f} | {s['seeds_for_80pct']} | "
                   f"{s['minutes_to_decide']} | {s['minutes_to_decide_own']} |")
    out += ["", f"Seeds {', '.join(' '.join(map(str, x)) for x in sorted(seeds))} of the "
            f"control and version_0; {'; '.join(sorted(cpus))}."]
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
