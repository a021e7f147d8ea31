"""reports/comparison.md: the analysis (augvit/report.py) as a report a person reads.

The design and the rule that turns intervals into verdicts are stated first, before any
result. Then the reading (the verdicts, in plain words, between markers the README quotes, and
for an undecided comparison the seeds, the command and the minutes that would decide it), the
tables, every look's interval, the split of the noise between seeds and test images, and where
the runs were trained.
"""
from __future__ import annotations

from augvit.environment import machine_key
from augvit.layout import BACKBONE_LABELS
from augvit.text import md

READING_START, READING_END = "<!-- reading:start -->", "<!-- reading:end -->"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _ci(c: dict) -> str:
    if c.get("zero_variance"):
        return "n/a (no variance)"
    return "n/a (1 seed)" if c["ci95"] is None else f"[{_pct(c['ci95'][0])}, {_pct(c['ci95'][1])}]"


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _where(c: dict, many: bool) -> str:
    return f" ({BACKBONE_LABELS[c['backbone']]}, {c['train_size']} images)" if many else ""


SPENDING_WORDS = {"obrien_fleming": "O'Brien-Fleming type", "pocock": "Pocock type"}


def verdict_words(v: str, target: float) -> str:
    """A verdict with the target written in points: "helps by at least 1.00 pp"."""
    return v.replace("the target", f"{100 * target:.2f} pp")


def _interval(x: list[float] | None) -> str:
    return "n/a" if not x else f"[{100 * x[0]:+.2f}, {100 * x[1]:+.2f}]"


def primary_analysis(a: dict, n_test: int | None) -> list[str]:
    t, alpha, d = 100 * a["target"], a["alpha"], a["design"]
    images = f"all {n_test:,} test images" if n_test else "the test set"
    looks = ", ".join(map(str, d["looks"]))
    return [
        "## Design and decision rule", "",
        f"Fixed before the results. The outcome is each run's accuracy on {images}. Each "
        f"version is compared with {md(a['baseline'])}, and each named contrast a - b too, as "
        "the mean of per-seed differences (one seed: the same training subset, "
        "initialization and data order for every version). The study is read at planned "
        f"looks of {looks} seeds (study.looks; this report is the look at {d['n']}); "
        f"the error rate alpha = {alpha} is spent over the looks by a Lan-DeMets "
        f"{SPENDING_WORDS[d['spending']]} spending function and split equally over the "
        f"family's {a['family_size']} comparisons (Bonferroni, {d['level_per_comparison']:.4f} "
        "each). Each comparison's repeated confidence interval (paired t, at the look's "
        "nominal level) covers its true difference at every look at once with probability "
        f"at least {1 - alpha:.0%} for the whole family, so adding seeds after a look keeps "
        f"the error rate. The adjusted p is the family level at which the interval would "
        f"just exclude 0. The target, the smallest difference worth finding, is {t:.2f} "
        "points (study.target_difference). Verdicts, read off the interval:", "",
        f"- **helps by at least {t:.2f} pp** / **hurts by at least {t:.2f} pp**: the interval "
        f"lies wholly beyond +{t:.2f} / -{t:.2f} pp;",
        f"- **equivalent within {t:.2f} pp**: the interval lies wholly inside ±{t:.2f} pp "
        "(two one-sided tests);",
        "- **helps** / **hurts**: the interval excludes 0 but not the target: the sign is "
        "known, the size against the target not yet;",
        "- **not decided yet**: anything else; the report says what would decide it.", ""]


def _next_step(c: dict, a: dict) -> str:
    """What would decide an undecided comparison: seeds, the command, the minutes."""
    plan, d = c.get("plan"), a["design"]
    if not plan:
        return ""
    if plan["seeds"] is None:
        return (f" Even at the design's last look ({plan['last_look']} seeds) the planning "
                f"estimate gives it only a {plan['probability']:.0%} chance to be decided.")
    more = plan["seeds"] - d["n"]
    seeds = d["seeds"] + [max(d["seeds"]) + 1 + k for k in range(more)]
    runs = more * a["runs_per_seed"]
    rs = a.get("run_seconds")
    cost = (f", {runs} more runs: about {runs * rs['median'] / 60:.0f} min of training at the "
            f"{rs['median']:.0f} s a run measured here (median)" if rs else f", {runs} more runs")
    return (f" {more} more seeds (a look at {plan['seeds']}) give a {plan['probability']:.0%} "
            f"chance to decide it{cost}: `dvc exp run -S 'study.seeds=["
            + ",".join(map(str, seeds)) + "]'` (trains only the new seeds).")


def reading(a: dict) -> list[str]:
    many = len({(c["backbone"], c["train_size"]) for c in a["comparisons"]}) > 1
    lines = ["## Reading", "", READING_START]
    for c in a["comparisons"]:
        d = c["diff"]
        p = "" if d.get("p_adjusted") is None else f", adjusted p = {_p(d['p_adjusted'])}"
        lines.append(f"- **{md(c['name'])}{_where(c, many)}: "
                     f"{verdict_words(c['verdict'], a['target'])}.** {100 * d['mean']:+.2f} pp, "
                     f"{1 - a['alpha']:.0%} repeated interval {_interval(d.get('interval'))} pp "
                     f"with {d['n']} seeds{p}." + _next_step(c, a))
    return lines + [READING_END, ""]


def accuracy_table(a: dict) -> list[str]:
    base = md(a["baseline"])
    lines = ["## Test accuracy (%)", "",
             f"Mean over seeds and its 95% CI (Student's t, this group alone); difference to "
             f"{base} (pp) with its repeated interval, adjusted p and verdict.", "",
             f"| version | backbone | train images | n | test acc | 95% CI | test loss "
             f"| diff vs {base} (pp) | repeated interval | adjusted p | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = {(c["a"], c["backbone"], c["train_size"]): c["verdict"]
                for c in a["comparisons"] if c["kind"] == "baseline"}
    for g in a["groups"].values():
        acc, d = g["test_acc"], g.get("acc_diff_vs_baseline")
        diff = ("(baseline)", "", "", "") if d is None else (
            f"{100 * d['mean']:+.2f}", _interval(d.get("interval")), _p(d.get("p_adjusted")),
            verdict_words(verdicts[(g["version"], g["backbone"], g["train_size"])],
                          a["target"]))
        loss = f"{g['test_loss']['mean']:.4f}" if "test_loss" in g else "n/a"
        lines.append(f"| {md(g['version'])} | {BACKBONE_LABELS[g['backbone']]} | "
                     f"{g['train_size']} | {acc['n']} | {_pct(acc['mean'])} | {_ci(acc)} | "
                     f"{loss} | " + " | ".join(diff) + " |")
    return lines + [""]


def contrast_table(a: dict) -> list[str]:
    rows = [c for c in a["comparisons"] if c["kind"] == "contrast"]
    if not rows:
        return []
    lines = ["## Contrasts", "", "Named in study.contrasts: a minus b, paired by seed, in the "
             "same family.", "",
             "| contrast | a - b | backbone | train images | diff (pp) | repeated interval "
             "| adjusted p | verdict |", "|---|---|---|---|---|---|---|---|"]
    for c in rows:
        d = c["diff"]
        lines.append(f"| {md(c['name'])} | {md(c['a'])} - {md(c['b'])} | "
                     f"{BACKBONE_LABELS[c['backbone']]} "
                     f"| {c['train_size']} | {100 * d['mean']:+.2f} | "
                     f"{_interval(d.get('interval'))} | {_p(d.get('p_adjusted'))} | "
                     f"{verdict_words(c['verdict'], a['target'])} |")
    return lines + [""]


def looks_table(a: dict) -> list[str]:
    """Every look's interval and verdict, from the first seeds in params order."""
    d = a["design"]
    lines = ["## Looks", "",
             f"Each look reads the first n seeds of study.seeds (planned looks: "
             f"{', '.join(map(str, d['looks']))}). Intervals in pp; a later look's interval is "
             "not a new chance to be wrong: all of them hold together.", "",
             "| comparison | " + " | ".join(f"{k} seeds" for k in d["looks_so_far"]) + " |",
             "|---|" + "---|" * len(d["looks_so_far"])]
    many = len({(c["backbone"], c["train_size"]) for c in a["comparisons"]}) > 1
    for c in a["comparisons"]:
        cells = {x["seeds"]: f"{_interval(x['interval'])} {verdict_words(x['verdict'], a['target'])}"
                 for x in c["looks"]}
        lines.append(f"| {md(c['name'])}{_where(c, many)} | "
                     + " | ".join(cells.get(k, "") for k in d["looks_so_far"]) + " |")
    plan = a.get("planning")
    if plan:
        lines += ["", f"Planning (what the next-seeds advice uses, never a verdict): the pooled "
                  f"SD of the per-seed differences is {100 * plan['sd']:.2f} pp over "
                  f"{plan['df']} degrees of freedom; its {plan['level']:.0%} upper confidence "
                  f"limit, {100 * plan['upper']:.2f} pp, is taken as the truth, and each "
                  "comparison's current difference as its true one."]
    return lines + [""]


def images_table(a: dict) -> list[str]:
    rows = [c for c in a["comparisons"] if "images" in c]
    if not rows:
        return []
    lines = ["## Seeds and test images", "",
             "Where a difference's noise comes from: a variance-components split (two-way "
             "random effects, method of moments) of the per-image differences into which seeds "
             "ran and which test images were drawn. The interval above counts seeds, and "
             "through them the test images as well.", "",
             "| comparison | diff (pp) | SE (pp) | seeds' share |", "|---|---|---|---|"]
    many = len({(c["backbone"], c["train_size"]) for c in a["comparisons"]}) > 1
    for c in rows:
        comp = c["images"]["components"]
        share = comp["seeds"] / max(comp["se"] ** 2, 1e-300)
        lines.append(f"| {md(c['name'])}{_where(c, many)} | {100 * c['diff']['mean']:+.2f} | "
                     f"{100 * comp['se']:.2f} | {share:.0%} |")
    return lines + [""]


def frozen_table(a: dict) -> list[str]:
    frozen = [g for g in a["groups"].values() if "acc_diff_frozen_vs_finetuned" in g]
    if not frozen:
        return []
    lines = ["## Frozen backbone minus fine-tuned backbone (same version, size and seed)", "",
             "Outside the family: a description (95% paired t interval), not a test of the "
             "study's question.", "",
             "| version | train images | diff (pp) | 95% CI | p |", "|---|---|---|---|---|"]
    for g in frozen:
        d = g["acc_diff_frozen_vs_finetuned"]
        lines.append(f"| {md(g['version'])} | {g['train_size']} | {100 * d['mean']:+.2f} "
                     f"| {_ci(d)} | {_p(d['p_value'])} |")
    return lines + [""]


def cost(a: dict) -> list[str]:
    """What the trainings cost on the machine that produced the report, from the train
    stage's own wall-time notes (loading the data to writing the model; the process's start-up
    and imports are not in them)."""
    rs = a.get("run_seconds")
    if not rs:
        return []
    return ["## What it cost", "", "<!-- cost:start -->",
            f"{rs['runs']} trainings took {rs['median']:.0f} s each (median; "
            f"{rs['runs'] * rs['median'] / 60:.0f} min for all at that pace) on "
            f"{', '.join(md(d) for d in rs['devices'])}, "
            "as each train stage measured itself on this machine (from loading the data to "
            "writing the model; each stage's start-up adds a few seconds).",
            "<!-- cost:end -->", ""]


def render_environments(environments: dict[str, dict]) -> str:
    """Where the runs were trained: one row per distinct environment, and a plain warning when
    the study mixes several (runs from another machine differ as another seed would)."""
    kinds: dict[tuple, list[str]] = {}
    for run_id, env in environments.items():
        kinds.setdefault(machine_key(env), []).append(run_id)
    lines = ["## Where the runs were trained", ""]
    if len(kinds) == 1:
        lines.append(f"All {len(environments)} runs were trained in one environment.")
    else:
        lines.append(f"**This study mixes {len(kinds)} environments.** Each environment's "
                     "floating-point order acts like another seed, so its runs are not "
                     "bit-for-bit reproducible on one machine; rerun them all on one machine "
                     "(`dvc repro --force`) for an exact replicate.")
    lines += ["", "| runs | device | threads | precision | torch | transformers | lightning "
              "| python | augvit |", "|---|---|---|---|---|---|---|---|---|"]
    for ids in kinds.values():
        env = {k: md(v) for k, v in environments[ids[0]].items()
               if v is not None and k != "cpu_flags"}
        flags = ", ".join(md(f) for f in environments[ids[0]].get("cpu_flags", []))
        device = env.get("gpu") and f"{env['gpu']} (CUDA {env.get('cuda')})" or \
            f"{env.get('cpu', 'unknown')} ({flags or 'no flags'})"
        lines.append(f"| {len(ids)} | {device} | {env.get('threads', '?')} | "
                     f"{env.get('precision', '?')} | "
                     f"{env.get('torch', '?')} | {env.get('transformers', '?')} | "
                     f"{env.get('lightning', '?')} | {env.get('python', '?')} | "
                     f"{env.get('augvit', '?')} |")
    return "\n".join(lines) + "\n"


def render_report(analysis: dict, environments: dict[str, dict] | None = None,
                  n_test: int | None = None) -> str:
    lines = ["# Augmentation study", ""]
    for part in (primary_analysis(analysis, n_test), reading(analysis),
                 accuracy_table(analysis), contrast_table(analysis), looks_table(analysis),
                 images_table(analysis), frozen_table(analysis), cost(analysis)):
        lines += part
    text = "\n".join(lines)
    return text + ("\n" + render_environments(environments) if environments else "")
