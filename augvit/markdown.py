"""reports/comparison.md: the analysis (augvit/report.py) as a report a person reads.

The primary analysis is stated first, before any result: what is compared, by which test, over
which family, and the rules that turn numbers into words. Then the reading (the verdicts, in
plain words, between markers the README quotes), the tables, the power of each comparison,
the seed-and-image interval, and where the runs were trained.
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


def primary_analysis(a: dict, n_test: int | None) -> list[str]:
    t, alpha = 100 * a["target"], a["alpha"]
    images = f"all {n_test:,} test images" if n_test else "the test set"
    return [
        "## Primary analysis", "",
        f"Fixed before the results. The outcome is each run's accuracy on {images}. Each "
        f"version is compared with {md(a['baseline'])}, and each named contrast a - b is "
        "compared too, as the mean of per-seed differences (one seed: the same training "
        "subset, initialization and data order for every version), by a two-sided paired "
        f"t-test across seeds, Holm-adjusted over the family of all {a['family_size']} "
        f"comparisons at alpha = {alpha}. The target, the smallest difference worth finding, "
        f"is {t:.2f} points (study.target_difference). Verdicts:", "",
        f"- **helps** / **hurts**: Holm-adjusted p <= {alpha} and at least 80% power to detect "
        f"±{t:.2f} points (power of the paired t-test at the Bonferroni level alpha/m, from the "
        "observed spread of the per-seed differences);",
        f"- **no difference at this resolution**: at least 80% power, and the simultaneous "
        f"{1 - alpha:.0%} interval lies within ±{t:.2f} points;",
        "- **cannot tell**: anything else. A significant result without the power is one of "
        "these: at low power a p-value just under the level replicates about half the time.",
        "", "Secondary: the interval that counts test images as well as seeds, in "
        "[Seeds and test images](#seeds-and-test-images).", ""]


def reading(a: dict) -> list[str]:
    many = len({(c["backbone"], c["train_size"]) for c in a["comparisons"]}) > 1
    lines = ["## Reading", "", READING_START]
    for c in a["comparisons"]:
        v = c["verdict"]
        lines.append(f"- **{md(c['name'])}{_where(c, many)}: {v['verdict']}.** {v['reason']}")
    return lines + [READING_END, ""]


def accuracy_table(a: dict) -> list[str]:
    base = md(a["baseline"])
    lines = ["## Test accuracy (%)", "",
             f"Mean over seeds and 95% CI of the mean (Student's t); difference to {base} "
             "(pp), its paired 95% CI, p and Holm-adjusted p.", "",
             f"| version | backbone | train images | n | test acc | 95% CI | test loss "
             f"| diff vs {base} (pp) | 95% CI of diff | p | p (Holm) | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = {(c["a"], c["backbone"], c["train_size"]): c["verdict"]["verdict"]
                for c in a["comparisons"] if c["kind"] == "baseline"}
    for g in a["groups"].values():
        acc, d = g["test_acc"], g.get("acc_diff_vs_baseline")
        diff = ("(baseline)", "", "", "", "") if d is None else (
            f"{100 * d['mean']:+.2f}", _ci(d), _p(d["p_value"]), _p(d["p_holm"]),
            verdicts[(g["version"], g["backbone"], g["train_size"])])
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
             "same Holm family.", "",
             "| contrast | a - b | backbone | train images | diff (pp) | 95% CI | p | p (Holm) "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for c in rows:
        d = c["diff"]
        lines.append(f"| {md(c['name'])} | {md(c['a'])} - {md(c['b'])} | {BACKBONE_LABELS[c['backbone']]} "
                     f"| {c['train_size']} | {100 * d['mean']:+.2f} | {_ci(d)} | "
                     f"{_p(d['p_value'])} | {_p(d['p_holm'])} | {c['verdict']['verdict']} |")
    return lines + [""]


def power_table(a: dict) -> list[str]:
    t = 100 * a["target"]
    lines = ["## Power", "",
             f"From the observed SD of the per-seed differences, at the Bonferroni level "
             f"{a['alpha']}/{a['family_size']} (a lower bound on Holm's power). A plug-in "
             "estimate: with few seeds the SD itself is uncertain. *Rerun* is the chance "
             "that a rerun with as many seeds is significant in the same direction if the "
             "observed difference were the truth (optimistic for a result picked for being "
             "significant).", "",
             f"| comparison | SD of diff (pp) | power at ±{t:.2f} pp | smallest detectable "
             f"(80%) | seeds for 80% at ±{t:.2f} pp | rerun |", "|---|---|---|---|---|---|"]
    many = len({(c["backbone"], c["train_size"]) for c in a["comparisons"]}) > 1
    for c in a["comparisons"]:
        pw = c["power"]
        if pw is None:
            lines.append(f"| {md(c['name'])}{_where(c, many)} | n/a | n/a | n/a | n/a | n/a |")
            continue
        need = pw["seeds_needed"] or "> 1000"
        lines.append(f"| {md(c['name'])}{_where(c, many)} | {100 * pw['sd']:.2f} | "
                     f"{pw['at_target']:.0%} | {100 * pw['min_detectable']:.2f} pp | {need} | "
                     f"{pw['rerun']['same_direction']:.0%} |")
    return lines + [""]


def images_table(a: dict) -> list[str]:
    rows = [c for c in a["comparisons"] if "images" in c]
    if not rows:
        return []
    lines = ["## Seeds and test images", "",
             "The paired t interval counts seeds only. Resampling seeds and test images "
             "together (a two-level bootstrap over the shared test set) also counts which "
             "test images were drawn; it is conservative, so the standard error from a "
             "variance-components split is given beside it, with the share of the variance "
             "that comes from seeds.", "",
             "| comparison | diff (pp) | t 95% CI (seeds) | bootstrap 95% CI (seeds and images) "
             "| SE (pp) | seeds' share |", "|---|---|---|---|---|---|"]
    many = len({(c["backbone"], c["train_size"]) for c in a["comparisons"]}) > 1
    for c in rows:
        boot, comp = c["images"]["bootstrap"], c["images"]["components"]
        share = comp["seeds"] / max(comp["se"] ** 2, 1e-300)
        lines.append(f"| {md(c['name'])}{_where(c, many)} | {100 * c['diff']['mean']:+.2f} | "
                     f"{_ci(c['diff'])} | [{_pct(boot['ci95'][0])}, {_pct(boot['ci95'][1])}] "
                     f"| {100 * comp['se']:.2f} | {share:.0%} |")
    return lines + [""]


def frozen_table(a: dict) -> list[str]:
    frozen = [g for g in a["groups"].values() if "acc_diff_frozen_vs_finetuned" in g]
    if not frozen:
        return []
    lines = ["## Frozen backbone minus fine-tuned backbone (same version, size and seed)", "",
             "Outside the Holm family: a description, not a test of the study's question.", "",
             "| version | train images | diff (pp) | 95% CI | p |", "|---|---|---|---|---|"]
    for g in frozen:
        d = g["acc_diff_frozen_vs_finetuned"]
        lines.append(f"| {md(g['version'])} | {g['train_size']} | {100 * d['mean']:+.2f} "
                     f"| {_ci(d)} | {_p(d['p_value'])} |")
    return lines + [""]


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
                 accuracy_table(analysis), contrast_table(analysis), power_table(analysis),
                 images_table(analysis), frozen_table(analysis)):
        lines += part
    text = "\n".join(lines)
    return text + ("\n" + render_environments(environments) if environments else "")
