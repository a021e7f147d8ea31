"""Throughput benchmark: the notebook's input pipeline vs the project's, in one process.

    python -m bench.bench                      # full run (CPU ~5 min; GPU when present)
    python -m bench.bench --quick              # tiny sizes (the smoke test uses this)
    python -m bench.bench --out bench/results/cpu.json

Measures, on the same data (CIFAR-10 test images from data/prepared when present, else random
uint8 images of the same shape) and prints as a table, and writes as JSON:
  1. augmentation images/s, the notebook's per-image PIL pipeline (one worker = one core) vs the
     project's batched pipeline (one thread, and all): version_1 at 224x224, and the DeiT-style
     recipe (pad_crop, hflip, rand_augment, erasing, mixup/cutmix) at 224x224 and 32x32;
  2. training-step images/s for the default 32x32 ViT and ViT-B/16 at 224 (random init, frozen
     backbone as in the notebook), with each recipe: model only, the project's data path, the
     notebook's path;
  3. wall time of a no-op `dvc repro` (everything cached), when run inside the project.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2 as T2

from augvit.augment import build_inputs
from augvit.augment.mixing import MIXING_OPS, mix_batch
from augvit.model import ViTClassifier, vit_config
from augvit.params import load_params, plain

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
VIT_B16 = {"image_size": 224, "patch_size": 16, "hidden_size": 768, "num_hidden_layers": 12,
           "num_attention_heads": 12, "intermediate_size": 3072, "num_labels": 10}


def notebook_transform(size: int) -> T.Compose:
    """The notebook's train transform (README.md), per PIL image."""
    return T.Compose([
        T.Resize(size), T.RandomHorizontalFlip(), T.RandomResizedCrop(size),
        T.ColorJitter(0.2, 0.2, 0.2, 0.2), T.GaussianBlur(3), T.RandomGrayscale(0.2),
        T.ToTensor()])   # the notebook did not normalize train inputs


def notebook_deit_transform(size: int) -> T.Compose:
    """The DeiT-style recipe as a notebook would write it: per PIL image, at the model's size
    (resized first, as the notebook did), with the same settings as params.yaml's."""
    head = [T.Resize(size)] if size != 32 else []
    return T.Compose([*head, T.RandomCrop(size, padding=4 * size // 32),
                      T.RandomHorizontalFlip(), T.RandAugment(2, 9), T.ToTensor(),
                      T.Normalize(MEAN, STD), T.RandomErasing(0.25, value="random")])


NOTEBOOK_MIX = T2.RandomChoice([T2.MixUp(alpha=0.8, num_classes=10),
                                T2.CutMix(alpha=1.0, num_classes=10)])
DEIT_OPS = ("hflip", "pad_crop", "rand_augment", "erasing", "mixup", "cutmix")


def project_path(recipe: dict, size: int, gen: torch.Generator):
    """The project's data path for a uint8 batch: build_inputs, then batch mixing if any."""
    mixing = any(op in recipe for op in MIXING_OPS)

    def run(u8: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = build_inputs(u8, recipe, size, MEAN, STD, gen)
        return mix_batch(x, y, 10, recipe, gen)[0] if mixing else x
    return run


def notebook_path(tf: T.Compose, mixing: bool):
    """The per-image path: the transform image by image, stacked, then v2's batch mixing."""
    def run(pil: list, y: torch.Tensor) -> torch.Tensor:
        x = torch.stack([tf(im) for im in pil])
        return NOTEBOOK_MIX(x, y)[0] if mixing else x
    return run


def load_images(n: int) -> np.ndarray:
    """(n, 3, 32, 32) uint8: prepared CIFAR-10 test images if available."""
    path = ROOT / "data" / "prepared" / "test.npz"
    if path.is_file():
        with np.load(path) as z:
            imgs = z["images"]
        return np.concatenate([imgs] * (n // len(imgs) + 1))[:n]
    return np.random.default_rng(0).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def interleaved(fns: dict, repeats: int, warmup: int = 1, sync=None) -> dict:
    """Median seconds per call of each fn, timed in turn, round after round.

    Alternating the candidates spreads drift (other tenants, clock changes) over all of them
    alike, so their ratio is stable even when the absolute speed is not (measured: best-of-N
    timed one after the other gave data-path shares from 5% to 26% in three runs of one tree).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if sync:
                sync()
            t = time.perf_counter()
            fn()
            if sync:
                sync()
            samples[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) for name, v in samples.items()}


def bench_augment(images: np.ndarray, recipe: dict, tf: T.Compose, size: int, batch: int,
                  repeats: int, device: torch.device) -> dict:
    """Augmentation images/s: the per-image notebook path (1 core) vs the project's."""
    pil = [Image.fromarray(im.transpose(1, 2, 0)) for im in images[:batch]]
    x = torch.from_numpy(images[:batch]).to(device)
    y = torch.randint(0, 10, (batch,), device=device)
    ours = project_path(recipe, size, torch.Generator())
    nb = notebook_path(tf, any(op in recipe for op in MIXING_OPS))
    y_cpu = y.cpu()
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    out = {"batch": batch, "size": size}
    if device.type == "cpu":   # per core: both pipelines on one thread
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        t = interleaved({"nb": lambda: nb(pil, y_cpu), "ours": lambda: ours(x, y)}, repeats)
        torch.set_num_threads(threads)
        out.update(notebook_pil_1core=batch / t["nb"], batched_cpu_1thread=batch / t["ours"],
                   cpu_threads=threads)
    else:
        out["notebook_pil_1core"] = batch / interleaved({"nb": lambda: nb(pil, y_cpu)}, 3)["nb"]
    tn = interleaved({"ours": lambda: ours(x, y)}, repeats, sync=sync)["ours"]
    out[f"batched_{device.type}"] = batch / tn
    out["augment_ms_per_batch"] = 1000 * tn
    return out


def bench_train_step(name: str, cfg: dict, images: np.ndarray, recipe: dict, tf: T.Compose,
                     batch: int, repeats: int, device: torch.device, freeze: bool) -> dict:
    """images/s of one optimizer step: model only / project data path / notebook data path."""
    size = cfg["image_size"]
    model = ViTClassifier(vit_config=cfg, classes=[str(k) for k in range(10)], recipe=recipe,
                          image_size=size, mean=list(MEAN), std=list(STD),
                          freeze_backbone=freeze).to(device).train()
    gen = torch.Generator()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4)
    u8 = torch.from_numpy(images[:batch]).to(device)
    y = torch.randint(0, 10, (batch,), device=device)
    ours = project_path(recipe, size, gen)
    ready = ours(u8, y)
    pil = [Image.fromarray(im.transpose(1, 2, 0)) for im in images[:batch]]
    nb = notebook_path(tf, any(op in recipe for op in MIXING_OPS))
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def step(x: torch.Tensor, bf16: bool = device.type == "cuda") -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    paths = {"model": lambda: step(ready),
             "project": lambda: step(ours(u8, y)),
             "notebook": lambda: step(nb(pil, y.cpu()).to(device)),
             "augment": lambda: ours(u8, y)}
    if device.type == "cpu":       # does bf16 autocast pay on this CPU (AVX-512/AMX)?
        paths["model_bf16"] = lambda: step(ready, bf16=True)
    t = interleaved(paths, repeats, sync=sync)
    extra = {"model_only_cpu_bf16_autocast": batch / t["model_bf16"]} if "model_bf16" in t else {}
    return {**extra, "model": name, "batch": batch, "frozen_backbone": freeze,
            "repeats": repeats, "model_only": batch / t["model"],
            "project_path": batch / t["project"], "notebook_path": batch / t["notebook"],
            "data_path_share_of_step": 1 - t["model"] / t["project"],
            "augment_share_of_step": t["augment"] / t["project"]}


def bench_noop_repro() -> dict:
    if not (ROOT / "dvc.lock").is_file():
        return {"skipped": "no dvc.lock: run `dvc repro` once first"}
    status = subprocess.run(["dvc", "status", "--json"], cwd=ROOT, capture_output=True,
                            text=True)
    if status.returncode != 0 or json.loads(status.stdout or "{}"):
        return {"skipped": "pipeline not fully cached (dvc status shows changes)"}
    t = time.perf_counter()
    r = subprocess.run(["dvc", "repro"], cwd=ROOT, capture_output=True, text=True)
    return {"seconds": time.perf_counter() - t, "ok": r.returncode == 0}


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in lines
                           if ln.startswith("model name"))
        flags = set(next(ln for ln in lines if ln.startswith("flags")).split(":", 1)[1].split())
        # what decides whether bf16 autocast pays on a CPU (docs/performance.md)
        info["isa"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_table(res: dict) -> None:
    print(f"\nmachine: {res['machine']}")
    for key, a in res["augment"].items():
        dev, name, _ = key.split("/")
        print(f"\n[augmentation, {name} recipe, {a['size']}x{a['size']} output, {dev}, "
              f"batch {a['batch']}]")
        print(f"  notebook per-image PIL, 1 core : {a['notebook_pil_1core']:10.0f} img/s")
        if "batched_cpu_1thread" in a:
            r = a["batched_cpu_1thread"] / a["notebook_pil_1core"]
            print(f"  project batched, 1 thread      : {a['batched_cpu_1thread']:10.0f} img/s"
                  f"   ({r:.1f}x per core)")
        print(f"  project batched, {dev:<14}: {a[f'batched_{dev}']:10.0f} img/s"
              f"   ({a['augment_ms_per_batch']:.1f} ms/batch)")
    print("\n[training step, images/s]")
    print(f"  {'model, recipe':<34}{'dev':<6}{'batch':>6}{'model only':>12}{'project':>10}"
          f"{'notebook':>10}{'proj/nb':>9}{'data share':>11}{'aug share':>10}")
    for t in res["train_step"]:
        print(f"  {t['model'] + ', ' + t['recipe']:<34}{t['device']:<6}{t['batch']:>6}"
              f"{t['model_only']:>12.1f}{t['project_path']:>10.1f}{t['notebook_path']:>10.1f}"
              f"{t['project_path'] / t['notebook_path']:>8.1f}x"
              f"{100 * t['data_path_share_of_step']:>10.1f}%"
              f"{100 * t['augment_share_of_step']:>9.1f}%")
    for t in res["train_step"]:
        if "model_only_cpu_bf16_autocast" in t:
            print(f"  {t['model']}: model only, CPU bf16 autocast "
                  f"{t['model_only_cpu_bf16_autocast']:.1f} img/s vs fp32 {t['model_only']:.1f}")
    print(f"\n[no-op dvc repro] {res['noop_repro']}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    ap.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    ap.add_argument("--no-repro", action="store_true", help="skip the no-op dvc repro timing")
    ap.add_argument("--calibrate", action="store_true",
                    help="only the calibration figure (under a minute on a CPU): the default "
                         "model's training step, batch 128, version_1, to quote beside a wall "
                         "time measured in the same hour")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto: the CPU rows, and the GPU rows when there is a GPU")
    args = ap.parse_args(argv)
    quick = args.quick
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is visible here (torch.cuda.is_available() "
                 "is False)")
    devices = [torch.device(d) for d in ("cpu", "cuda")
               if args.device in (d, "auto") and (d == "cpu" or torch.cuda.is_available())]
    images = load_images(64 if quick else 512)
    res: dict = {"machine": machine(), "quick": quick, "augment": {}, "train_step": []}
    params = load_params(ROOT / "params.yaml")
    recipes = {"version_1": (params.recipe("version_1"), notebook_transform),
               "deit": ({op: plain(params.aug[op]) for op in DEIT_OPS}, notebook_deit_transform)}
    small_cfg = vit_config(params.model, num_labels=10)
    for dev in devices:
        gpu = dev.type == "cuda"
        batch = 256 if gpu else (16 if quick else 128)
        reps = 2 if quick else (20 if gpu else 5)
        for name, size in () if args.calibrate else (("version_1", 224), ("deit", 224),
                                                      ("deit", 32)):
            recipe, tf = recipes[name]
            res["augment"][f"{dev.type}/{name}/{size}"] = bench_augment(
                images, recipe, tf(size), size, batch, reps, dev)
        print(f"augment on {dev.type} done", file=sys.stderr)
        runs = [("vit-small-32 (default)", small_cfg, batch, False, "version_1"),
                ("vit-small-32 (default)", small_cfg, batch, False, "deit")]
        if args.calibrate:
            runs = runs[:1]
        elif not quick and not gpu and params.train.batch_size != batch:
            # the default study's own batch (smaller batches: more fixed cost per image)
            runs += [("vit-small-32 (default)", small_cfg, params.train.batch_size, False, r)
                     for r in ("version_1", "deit")]
        if (not quick or gpu) and not args.calibrate:
            runs += [("ViT-B/16-224 frozen", VIT_B16, 256 if gpu else 8, True, "version_1"),
                     ("ViT-B/16-224 frozen", VIT_B16, 256 if gpu else 8, True, "deit")]
        for name, cfg, b, freeze, rname in runs:
            steps = 1 if quick else (20 if gpu else (max(30, 3840 // b) if cfg is small_cfg else 4))
            recipe, tf = recipes[rname]
            r = bench_train_step(name, cfg, images, recipe, tf(cfg["image_size"]), b, steps,
                                 dev, freeze)
            r.update(device=dev.type, recipe=rname)
            res["train_step"].append(r)
            print(f"train step {name}, {rname} on {dev.type} done", file=sys.stderr)
    res["noop_repro"] = ({"skipped": "--no-repro or --calibrate"}
                         if args.no_repro or args.calibrate else bench_noop_repro())
    print_table(res)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
