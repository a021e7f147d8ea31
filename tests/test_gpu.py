"""The paths that only a CUDA device exercises; they skip on a machine without one.

`bash bench/gpu_check.sh run` runs them on a GPU machine. What the CPU can check of the
same paths (bf16 chosen only on CUDA) is tested in test_model.py.
"""
from __future__ import annotations

import lightning as L
import pytest
import torch

from augvit.augment import build_inputs
from augvit.training import ArrayDataModule, TrainModule

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

V1 = {"hflip": {"p": 0.5}, "crop": {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]},
      "color_jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.2},
      "blur": {"kernel_size": 3, "sigma": [0.1, 2.0]}, "grayscale": {"p": 0.2}}


def test_augmentation_runs_on_the_gpu_with_the_cpus_draws():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    cpu = build_inputs(x, V1, 224, (0.5,) * 3, (0.5,) * 3, torch.Generator().manual_seed(0))
    gpu = build_inputs(x.cuda(), V1, 224, (0.5,) * 3, (0.5,) * 3,
                         torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


DEIT = {"hflip": {"p": 0.5}, "pad_crop": {"padding": 4, "fill": "zero"},
        "rand_augment": {"num_ops": 2, "magnitude": 9},
        "erasing": {"p": 0.25, "scale": [0.02, 0.33], "ratio": [0.3, 3.3], "value": "zero"}}


def test_the_deit_recipe_runs_on_the_gpu_with_the_cpus_draws():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    cpu = build_inputs(x, DEIT, 224, (0.5,) * 3, (0.5,) * 3, torch.Generator().manual_seed(0))
    gpu = build_inputs(x.cuda(), DEIT, 224, (0.5,) * 3, (0.5,) * 3,
                       torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


def test_data_lives_on_the_gpu_and_a_bf16_epoch_trains(work):
    from augvit.data.batches import load_classes
    classes = load_classes(work / "prepared")
    net = {"vit_config": {"image_size": 16, "patch_size": 8, "hidden_size": 32,
                          "num_hidden_layers": 1, "num_attention_heads": 2,
                          "intermediate_size": 64, "num_labels": len(classes)},
           "classes": classes, "recipe": V1, "image_size": 16, "mean": [0.5] * 3,
           "std": [0.5] * 3, "freeze_backbone": True, "seed": 0}
    model = TrainModule(net=net, lr=1e-3, weight_decay=0.05, warmup_steps=0, total_steps=11,
                        label_smoothing=0.0)
    data = ArrayDataModule(work / "prepared", 8, 16, seed=0)
    trainer = L.Trainer(max_epochs=1, accelerator="gpu", devices=1, precision="bf16-mixed",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=data)
    assert data.train[0].device.type == "cuda" and data.val[0].device.type == "cuda"
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
