"""The study's plots (the `plots` stage): data that DVC draws, and the pictures only a picture
shows. All of it is small and lives in git, so a clone, VS Code and Studio show it.

Data (DVC draws them: `dvc plots show`, and `dvc plots diff` overlays experiments):
  plots/curves.json              validation accuracy (%) and loss per epoch, one row per group x
                                 epoch: the mean over seeds and the seeds' min..max (a band)
  plots/per_class.json           test accuracy per class and version (%, mean over seeds)
  plots/confusion/<group>.csv    one row per test image (actual, predicted) of the group's first
                                 seed: DVC's confusion template counts them
  plots/size_effect.json         each version minus the baseline (pp, paired 95% CI) per train
                                 size; empty while the study has one size (nothing to draw)
Pictures:
  plots/curves.png               the same curves with the seeds' min..max band
  plots/comparison.png           test accuracy per version with its 95% CI, and each version
                                 minus the baseline (paired 95% CI, Holm marked)
  plots/size_effect.png          each version minus the baseline against the train size (with
                                 one size: a note saying what it needs)
Every chart gives a version the same colour (the baseline always grey, CONTROL_GREY; the
others PALETTE in study.versions order): the data rows carry it as `colour`, which .dvc/plots'
templates draw with, and the version's place as `order`, which sorts their legends.
  plots/previews/<version>.png   the same test images: original beside augmented draws (mixed
                                 draws titled by their label weights)
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from augvit.augment import build_inputs  # noqa: E402
from augvit.augment.mixing import MIXING_OPS, mix_batch  # noqa: E402
from augvit.data.batches import load_classes, load_split  # noqa: E402
from augvit.io import StageError, atomic_path, load_json  # noqa: E402
from augvit.layout import BACKBONE_LABELS, Run, group_label, groups  # noqa: E402
from augvit.params import Params  # noqa: E402
from augvit.predictions import decode_predictions  # noqa: E402
from augvit.report import size_effect_rows  # noqa: E402


CONTROL_GREY = "#7f7f7f"
# matplotlib's tab10 without its grey, which only the baseline wears
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf")


def version_order(p: Params) -> dict[str, int]:
    """Each version's place in the colour range: the baseline 0, the others 1, 2, ..."""
    others = [v for v in p.study.versions if v != p.study.baseline]
    return {p.study.baseline: 0, **{v: i + 1 for i, v in enumerate(others)}}


def version_colours(p: Params) -> dict[str, str]:
    """version -> its colour in every chart (the baseline grey)."""
    return {v: CONTROL_GREY if i == 0 else PALETTE[(i - 1) % len(PALETTE)]
            for v, i in version_order(p).items()}


def read_tsv(path: Path) -> dict[int, float]:
    """DVCLive plot file (step, value) -> {step: value}."""
    with open(path) as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return {int(r[0]): float(r[1]) for r in rows[1:] if r}


def run_curves(run_dir: Path, metric: str) -> np.ndarray:
    """Per-epoch values of val/<metric> of one run (one value per validation)."""
    values = read_tsv(run_dir / "plots" / "metrics" / "val" / f"{metric}.tsv")
    return np.array([values[s] for s in sorted(values)])


def validated_epochs(p: Params, n: int) -> np.ndarray:
    """The epochs (1-based) of a run's first n validations: every train.val_every epochs, at
    most train.epochs apart (augvit/training.py)."""
    return np.arange(1, n + 1) * min(p.train.val_every, p.train.epochs)


def group_curves(p: Params, live: Path, version: str, backbone: str, size: int,
                 metric: str) -> np.ndarray:
    """(seeds, epochs) validation curve of one group."""
    runs = [run_curves(Run(version, backbone, size, s).path(live), metric)
            for s in p.study.seeds]
    n = min(len(r) for r in runs)
    return np.stack([r[:n] for r in runs])


def plot_curves(p: Params, live: Path, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = version_colours(p)
    styles = ["-", "--", ":", "-."]
    for version, backbone, size in groups(p):
        c = colours[version]
        style = styles[(p.study.backbones.index(backbone) * len(p.study.train_sizes)
                        + p.study.train_sizes.index(size)) % len(styles)]
        for ax, metric, scale in zip(axes, ("acc", "loss"), (100, 1)):
            stack = scale * group_curves(p, live, version, backbone, size, metric)
            epochs = validated_epochs(p, stack.shape[1])
            ax.plot(epochs, stack.mean(0), style, color=c, marker="o", markersize=3,
                    label=group_label(p, version, backbone, size))
            if len(stack) > 1:
                ax.fill_between(epochs, stack.min(0), stack.max(0), color=c, alpha=0.12)
    n = len(p.study.seeds)
    for ax, name, unit in zip(axes, ("Validation accuracy", "Validation loss"),
                              ("validation accuracy (%)", "validation loss (cross-entropy)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(f"{name} per epoch, mean of {n} seed{'s' * (n > 1)}"
                     + ("; band: lowest to highest seed" if n > 1 else ""), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out)


def plot_comparison(analysis: dict, colours: dict[str, str], out: Path) -> None:
    """Left: test accuracy per group with its 95% CI. Right: every comparison of the family
    (each version minus the baseline, then each named contrast), paired by seed, with its 95%
    repeated interval; filled markers are the ones whose verdict says "helps" or "hurts"."""
    rows, comps = list(analysis["groups"].values()), analysis["comparisons"]
    many = len({(r["backbone"], r["train_size"]) for r in rows}) > 1
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 1.1 * (len(rows) + len(comps)) + 2), 4.4),
                             gridspec_kw={"width_ratios": [len(rows), max(1, len(comps))]})

    def where(x: dict) -> str:
        return f"\n{BACKBONE_LABELS[x['backbone']]}, n={x['train_size']}" if many else ""

    def colour(version: str) -> str:
        return colours.get(version, "black")

    # a version against the baseline wears the version's colour; a named contrast black
    items = [(axes[0], g["test_acc"], g["version"] + where(g), True, colour(g["version"]))
             for g in rows] + \
        [(axes[1], {"mean": c["diff"]["mean"], "ci95": c["diff"].get("interval")},
          (c["name"].replace(" - ", " −\n") if c["kind"] == "baseline"
           else f"{c['name']}:\n{c['a']} − {c['b']}") + where(c),
          c["verdict"].startswith(("helps", "hurts")),
          colour(c["a"]) if c["kind"] == "baseline" else "black") for c in comps]
    ticks: dict = {axes[0]: [], axes[1]: []}
    for ax, c, label, filled, col in items:
        k, mean = len(ticks[ax]), 100 * c["mean"]
        err = None if c["ci95"] is None else [[mean - 100 * c["ci95"][0]],
                                              [100 * c["ci95"][1] - mean]]
        ax.errorbar(k, mean, yerr=err, fmt="o", capsize=5, color=col,
                    markerfacecolor=col if filled else "white")
        ticks[ax].append(label)
    for ax, labels in ticks.items():
        ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    n = rows[0]["test_acc"]["n"] if rows else 0
    axes[0].set_title(f"Test accuracy, mean and 95% CI over {n} seed(s)", fontsize=10)
    axes[1].axhline(0, color="grey", lw=1)
    for sign in (-1, 1):
        axes[1].axhline(sign * 100 * analysis["target"], color="grey", lw=0.8, ls=":")
    axes[1].set_ylabel("difference in test accuracy (percentage points)")
    axes[1].set_title("Paired differences, 95% repeated interval (filled: helps / hurts;\n"
                      "dotted: the target difference)", fontsize=10)
    fig.tight_layout()
    _save(fig, out)


def plot_size_effect(rows: list[dict], baseline: str, colours: dict[str, str],
                     out: Path) -> None:
    """Each version's paired difference to the baseline against the train size, with 95% CIs:
    where augmentation pays and where it costs. With one size there is no such effect to
    draw: the picture says what it needs instead."""
    if len({r["train_size"] for r in rows}) < 2:
        fig, ax = plt.subplots(figsize=(7.5, 1.6))
        ax.axis("off")
        ax.text(0.5, 0.5, "Size effect: this study has one train size; list two or more in "
                "study.train_sizes\n(e.g. dvc exp run -S 'study.train_sizes=[500,5000]') to "
                "see what each version adds by data size.", ha="center", va="center",
                fontsize=9, wrap=True)
        _save(fig, out)
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    keys = sorted({(r["version"], r["backbone"]) for r in rows}, key=lambda k: k[0])
    sizes = sorted({r["train_size"] for r in rows})
    for k, (version, backbone) in enumerate(keys):
        pts = sorted((r for r in rows if (r["version"], r["backbone"]) == (version, backbone)),
                     key=lambda r: r["train_size"])
        x = np.array([r["train_size"] for r in pts], dtype=float)
        x *= 1 + 0.025 * (k - (len(keys) - 1) / 2)          # side by side at each size
        y = np.array([r["diff"] for r in pts])
        err = np.array([[r["diff"] - r["diff_low"] for r in pts],
                        [r["diff_high"] - r["diff"] for r in pts]])
        name = version if len({b for _, b in keys}) == 1 else f"{version} ({backbone})"
        line = ax.errorbar(x, y, yerr=None if np.isnan(err).all() else err, marker="o",
                           capsize=4, label=name, color=colours.get(version))
        for xi, yi, r in zip(x, y, pts):
            if not r["verdict"].startswith(("helps", "hurts")):
                ax.plot(xi, yi, "o", color="white", markeredgecolor=line[0].get_color(),
                        zorder=3)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel(f"test accuracy minus {baseline} (percentage points)")
    ax.set_title("What each version adds over the control, by data size\n(95% repeated "
                 "interval; filled: helps / hurts by the report's rules)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out)


def _to_image(x: torch.Tensor, mean: tuple, std: tuple) -> np.ndarray:
    """Normalized (3,H,W) -> displayable (H,W,3) in [0,1]."""
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return (x * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


def plot_preview(p: Params, version: str, recipe: dict, images: torch.Tensor,
                 labels: torch.Tensor, classes: list[str], out: Path) -> None:
    """Rows: test images; columns: the eval input, then `preview_draws` augmented draws. With
    batch mixing in the recipe each draw is mixed too (with the next image of the preview, the
    neighbour the batch pairs it with), titled by its label weights."""
    m, k = p.model, p.plots.preview_draws
    original = build_inputs(images, {}, m.image_size, m.mean, m.std)
    gen = torch.Generator().manual_seed(p.plots.preview_seed)
    mixing = any(op in recipe for op in MIXING_OPS)
    draws, titles = [], []
    for _ in range(k):
        x = build_inputs(images, recipe, m.image_size, m.mean, m.std, gen) if recipe \
            else original
        weights = None
        if mixing:
            x, weights, op = mix_batch(x, labels, len(classes), recipe, gen)
        draws.append(x)
        titles.append(None if weights is None else [
            f"{op}: " + " / ".join(f"{classes[c]} {w[c]:.2f}"
                                   for c in w.argsort(descending=True)[:2].tolist() if w[c] > 0)
            for w in weights])
    rows = len(images)
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.9 * (k + 1), 1.9 * rows + 0.6),
                             squeeze=False)
    for r in range(rows):
        for c in range(k + 1):
            x = original[r] if c == 0 else draws[c - 1][r]
            axes[r, c].imshow(_to_image(x, m.mean, m.std))
            axes[r, c].axis("off")
            if c == 0:
                axes[r, c].set_title(f"original ({classes[labels[r]]})" if r == 0
                                     else classes[labels[r]], fontsize=7)
            elif titles[c - 1] is not None:
                axes[r, c].set_title(titles[c - 1][r], fontsize=6)
            elif r == 0:
                axes[r, c].set_title(f"draw {c}", fontsize=8)
    fig.suptitle(f"{version}: {', '.join(recipe) or 'no augmentation'}", fontsize=10)
    fig.tight_layout()
    _save(fig, out)


def _save(fig: plt.Figure, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def preview_images(prepared: Path, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_split(prepared, "test")
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n]
    return images[pick], labels[pick]


def curve_rows(p: Params, live: Path) -> list[dict]:
    """plots/curves.json: per group and epoch, the seeds' mean and their lowest and highest
    (accuracy in %): a line with a band per version."""
    rows, order, colours = [], version_order(p), version_colours(p)
    for version, backbone, size in groups(p):
        stacks = {m: scale * group_curves(p, live, version, backbone, size, m)
                  for m, scale in (("acc", 100), ("loss", 1))}
        n = min(s.shape[1] for s in stacks.values())
        label = group_label(p, version, backbone, size)
        for e, epoch in enumerate(validated_epochs(p, n)):
            row = {"epoch": int(epoch), "version": version, "group": label, "order": order[version],
                   "colour": colours[version]}
            for m, stack in stacks.items():
                for suffix, value in (("", stack[:, e].mean()), ("_low", stack[:, e].min()),
                                      ("_high", stack[:, e].max())):
                    row[f"val_{m}{suffix}"] = round(float(value), 4)
            rows.append(row)
    return rows


def per_class_rows(p: Params, details: Path, classes: list[str]) -> list[dict]:
    """plots/per_class.json: per group and class, the seeds' mean accuracy (%). Class names
    come from the prepared data (checked there), never from eval/ files, which a remote can
    send."""
    rows, order, colours = [], version_order(p), version_colours(p)
    for version, backbone, size in groups(p):
        runs = [load_json(Run(version, backbone, size, s).path(details, ".json"))
                for s in p.study.seeds]
        acc = np.mean([r["per_class_acc"] for r in runs], axis=0)
        label = group_label(p, version, backbone, size)
        rows += [{"class": c, "version": version, "group": label, "order": order[version],
                  "colour": colours[version], "acc": round(100 * float(a), 3)}
                 for c, a in zip(classes, acc, strict=True)]
    return rows


def write_confusion_rows(details: dict, labels: np.ndarray, classes: list[str],
                         out: Path) -> None:
    """One row per test image, as DVC's confusion templates want them."""
    predicted = decode_predictions(details["predicted"], max_len=len(labels))
    if len(predicted) != len(labels) or (predicted.size and predicted.max() >= len(classes)):
        raise StageError(f"{out.name}: the evaluation's predictions do not match the test "
                         f"set ({len(predicted)} for {len(labels)} images); rerun `dvc repro`")
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["actual", "predicted"])
        w.writerows((classes[a], classes[b]) for a, b in zip(labels, predicted))


def render_all(p: Params, live: Path, details: Path, analysis: Path, recipes: Path,
               prepared: Path, out_dir: Path) -> None:
    """Every plot of the study into out_dir (atomically, as one folder)."""
    study = load_json(analysis)
    with atomic_path(out_dir) as tmp:
        (tmp / "confusion").mkdir(parents=True)
        (tmp / "curves.json").write_text(json.dumps(curve_rows(p, live)) + "\n")
        classes = load_classes(prepared)
        (tmp / "per_class.json").write_text(json.dumps(per_class_rows(p, details, classes))
                                            + "\n")
        effect = size_effect_rows(study)
        order, colours = version_order(p), version_colours(p)
        several = len(p.study.backbones) > 1
        drawn = [{**r, "order": order[r["version"]], "colour": colours[r["version"]],
                  "group": r["version"] + (f" ({BACKBONE_LABELS[r['backbone']]})" if several
                                           else "")} for r in effect] \
            if len(p.study.train_sizes) > 1 else []       # one size: no effect of size
        (tmp / "size_effect.json").write_text(json.dumps(drawn) + "\n")
        labels = load_split(prepared, "test")[1].numpy()
        for version, backbone, size in groups(p):
            first = Run(version, backbone, size, p.study.seeds[0])
            write_confusion_rows(load_json(first.path(details, ".json")), labels, classes,
                                 tmp / "confusion" / f"{version}-{backbone}-n{size}.csv")
        plot_curves(p, live, tmp / "curves.png")
        plot_comparison(study, version_colours(p), tmp / "comparison.png")
        plot_size_effect(effect, p.study.baseline, version_colours(p),
                         tmp / "size_effect.png")
        images, picked = preview_images(prepared, p.plots.preview_images, p.plots.preview_seed)
        for version in p.study.versions:
            recipe = load_json(recipes / f"{version}.json")["ops"]
            plot_preview(p, version, recipe, images, picked, classes,
                         tmp / "previews" / f"{version}.png")
    print(f"plots: written to {out_dir}/")
