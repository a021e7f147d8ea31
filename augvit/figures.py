"""The study's plots (the `plots` stage): data that DVC draws, and the pictures only a picture
shows. All of it is small and lives in git, so a clone, VS Code and Studio show it.

Data (DVC draws them: `dvc plots show`, and `dvc plots diff` overlays experiments):
  plots/curves.json              validation accuracy and loss per epoch, one row per version x
                                 epoch (mean over seeds): one line per version
  plots/per_class.json           test accuracy per class and version (mean over seeds)
  plots/confusion/<group>.csv    one row per test image (actual, predicted) of the group's first
                                 seed: DVC's confusion template counts them
Pictures:
  plots/curves.png               the same curves with the seeds' min..max band
  plots/comparison.png           test accuracy per version with its 95% CI
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
from augvit.io import atomic_path, load_json  # noqa: E402
from augvit.layout import BACKBONE_LABELS, Run, group_label, groups  # noqa: E402
from augvit.params import Params  # noqa: E402


def read_tsv(path: Path) -> dict[int, float]:
    """DVCLive plot file (step, value) -> {step: value}."""
    with open(path) as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return {int(r[0]): float(r[1]) for r in rows[1:] if r}


def run_curves(run_dir: Path, metric: str) -> np.ndarray:
    """Per-epoch values of val/<metric> of one run (one value per validation)."""
    values = read_tsv(run_dir / "plots" / "metrics" / "val" / f"{metric}.tsv")
    return np.array([values[s] for s in sorted(values)])


def plot_curves(p: Params, live: Path, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for vi, version in enumerate(p.versions):
        for backbone in p.study.backbones:
            for ax, metric in zip(axes, ("acc", "loss")):
                runs = [run_curves(Run(version, backbone, s).path(live), metric)
                        for s in p.study.seeds]
                n = min(len(r) for r in runs)
                stack = np.stack([r[:n] for r in runs])
                epochs = np.arange(1, n + 1)
                style = "--" if backbone == "frozen" else "-"
                c = colors[vi % len(colors)]
                ax.plot(epochs, stack.mean(0), style, color=c, marker="o",
                        label=group_label(version, backbone, p.study.backbones))
                if len(runs) > 1:
                    ax.fill_between(epochs, stack.min(0), stack.max(0), color=c, alpha=0.15)
    for ax, name in zip(axes, ("validation accuracy", "validation loss")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(f"{name} (mean of {len(p.study.seeds)} seed(s); band: min..max)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    _save(fig, out)


def plot_comparison(analysis: dict, out: Path) -> None:
    rows = list(analysis.values())
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(rows)), 4))
    for k, g in enumerate(rows):
        a = g["test_acc"]
        mean = 100 * a["mean"]
        err = None if a["ci95"] is None else [[mean - 100 * a["ci95"][0]],
                                              [100 * a["ci95"][1] - mean]]
        ax.errorbar(k, mean, yerr=err, fmt="o", capsize=6,
                    color="tab:orange" if g["backbone"] == "frozen" else "tab:blue")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{g['version']}\n{BACKBONE_LABELS[g['backbone']]}" for g in rows])
    ax.set_ylabel("test accuracy (%)")
    n = rows[0]["test_acc"]["n"] if rows else 0
    ax.set_title(f"Test accuracy, mean and 95% CI over {n} seed(s)")
    ax.grid(axis="y", alpha=0.3)
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
    """plots/curves.json: per version (and backbone) and epoch, the seeds' mean."""
    rows = []
    for version, backbone in groups(p):
        runs = {m: [run_curves(Run(version, backbone, s).path(live), m) for s in p.study.seeds]
                for m in ("acc", "loss")}
        n = min(len(r) for r in runs["acc"] + runs["loss"])
        mean = {m: np.mean([r[:n] for r in runs[m]], axis=0) for m in runs}
        label = group_label(version, backbone, p.study.backbones)
        rows += [{"epoch": e + 1, "version": label, "val_acc": round(float(mean["acc"][e]), 5),
                  "val_loss": round(float(mean["loss"][e]), 5)} for e in range(n)]
    return rows


def per_class_rows(p: Params, details: Path) -> list[dict]:
    """plots/per_class.json: per version (and backbone) and class, the seeds' mean accuracy."""
    rows = []
    for version, backbone in groups(p):
        runs = [load_json(Run(version, backbone, s).path(details, ".json"))
                for s in p.study.seeds]
        acc = np.mean([r["per_class_acc"] for r in runs], axis=0)
        label = group_label(version, backbone, p.study.backbones)
        rows += [{"class": c, "version": label, "acc": round(float(a), 5)}
                 for c, a in zip(runs[0]["classes"], acc)]
    return rows


def write_confusion_rows(details: dict, labels: np.ndarray, out: Path) -> None:
    """One row per test image, as DVC's confusion templates want them."""
    classes = details["classes"]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["actual", "predicted"])
        w.writerows((classes[a], classes[b]) for a, b in zip(labels, details["predicted"]))


def render_all(p: Params, live: Path, details: Path, analysis: Path, recipes: Path,
               prepared: Path, out_dir: Path) -> None:
    """Every plot of the study into out_dir (atomically, as one folder)."""
    with atomic_path(out_dir) as tmp:
        (tmp / "confusion").mkdir(parents=True)
        (tmp / "curves.json").write_text(json.dumps(curve_rows(p, live)) + "\n")
        (tmp / "per_class.json").write_text(json.dumps(per_class_rows(p, details)) + "\n")
        labels = load_split(prepared, "test")[1].numpy()
        for version, backbone in groups(p):
            first = Run(version, backbone, p.study.seeds[0])
            write_confusion_rows(load_json(first.path(details, ".json")), labels,
                                 tmp / "confusion" / f"{version}-{backbone}.csv")
        plot_curves(p, live, tmp / "curves.png")
        plot_comparison(load_json(analysis), tmp / "comparison.png")
        images, picked = preview_images(prepared, p.plots.preview_images, p.plots.preview_seed)
        classes = load_classes(prepared)
        for version in p.versions:
            recipe = load_json(recipes / f"{version}.json")["ops"]
            plot_preview(p, version, recipe, images, picked, classes,
                         tmp / "previews" / f"{version}.png")
    print(f"plots: written to {out_dir}/")
