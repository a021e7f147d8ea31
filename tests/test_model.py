"""The ViT module: from-scratch and pretrained (local folder) builds, freezing, checkpoints."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from stages.model import AugViT, NonFiniteLossError, load_model

TINY = {"image_size": 16, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 32, "num_labels": 3}
CLASSES = ["a", "b", "c"]


def module(**kw) -> AugViT:
    args = dict(vit_config=TINY, classes=CLASSES, recipe={"hflip": {"p": 0.5}}, image_size=16,
                mean=[0.5] * 3, std=[0.5] * 3, freeze_backbone=False, seed=0, version="v")
    args.update(kw)
    return AugViT(**args)


def test_one_layer_vit_forward_and_sdpa():
    m = module()
    assert m.vit.config._attn_implementation == "sdpa"
    logits = m(m.inputs(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), train=False))
    assert logits.shape == (2, 3)


def test_frozen_backbone_trains_only_the_classifier_without_a_graph():
    m = module(freeze_backbone=True).train()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"vit.classifier.weight", "vit.classifier.bias"}
    assert not m.vit.vit.training and m.vit.classifier.training
    x = m.inputs(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), train=True)
    feats = m.vit.vit(x).last_hidden_state
    assert feats.requires_grad is False or torch.is_grad_enabled()
    m(x).sum().backward()
    assert all(p.grad is None for p in m.vit.vit.parameters())
    assert m.vit.classifier.weight.grad is not None


def test_pretrained_from_a_local_folder_gets_a_new_head(tmp_path):
    cfg = ViTConfig(**{**TINY, "num_labels": 7})
    ViTForImageClassification(cfg).save_pretrained(tmp_path / "tiny-vit")
    m = module(vit_config=None, pretrained=str(tmp_path / "tiny-vit"))
    assert m.vit.classifier.out_features == 3
    ref = ViTForImageClassification.from_pretrained(tmp_path / "tiny-vit")
    torch.testing.assert_close(m.vit.vit.embeddings.patch_embeddings.projection.weight,
                               ref.vit.embeddings.patch_embeddings.projection.weight)


def test_checkpoint_rebuilds_model_and_preprocessing_without_params(tmp_path):
    src = tmp_path / "tiny-vit"
    ViTForImageClassification(ViTConfig(**TINY)).save_pretrained(src)
    m = module(vit_config=None, pretrained=str(src), mean=[0.3] * 3, std=[0.2] * 3)
    trainer = L.Trainer(max_epochs=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(m)
    trainer.save_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    for p in src.iterdir():      # the pretrained folder is gone: the checkpoint must suffice
        p.unlink()
    back = load_model(str(tmp_path / "m.ckpt"))
    assert back.hparams.classes == CLASSES and list(back.hparams.mean) == [0.3] * 3
    x = torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8)
    m.eval()
    torch.testing.assert_close(back(back.inputs(x, False)), m(m.inputs(x, False)))


def test_non_finite_loss_names_version_and_step():
    m = module(version="version_9")
    with torch.no_grad():
        m.vit.classifier.weight.fill_(float("nan"))
    m.on_train_epoch_start()
    batch = (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.tensor([0, 1]))
    with pytest.raises(NonFiniteLossError, match=r"version 'version_9'.*step 0.*Lower train.lr"):
        m.training_step(batch, 0)


def test_bf16_autocast_is_chosen_only_on_cuda(monkeypatch):
    from stages.train import resolve_precision
    assert resolve_precision("auto", "cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)     # as on a GPU machine
    assert resolve_precision("auto", "auto") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == "32-true"             # asked for the CPU
    assert resolve_precision("32-true", "auto") == "32-true"         # an explicit choice stays
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", "auto") == "32-true"
