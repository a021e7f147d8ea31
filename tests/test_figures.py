"""The charts read at a glance: one colour per version everywhere (the baseline grey, in the
pictures and in DVC's templates alike), accuracy in percent, curves as a mean with a band."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augvit.figures import (CONTROL_GREY, PALETTE, curve_rows, plot_size_effect,
                            version_colours, version_order)
from augvit.layout import Run
from augvit.params import Params, parse_params
from conftest import ROOT, tiny_params

TEMPLATES = ROOT / ".dvc" / "plots"


def params(**study) -> Params:
    return parse_params(tiny_params({"study": study}))


def test_the_baseline_is_grey_and_each_version_keeps_its_colour():
    p = params(versions=["version_0", "none", "version_1"], baseline="none")
    colours = version_colours(p)
    assert colours["none"] == CONTROL_GREY
    assert colours["version_0"] == PALETTE[0] and colours["version_1"] == PALETTE[1]
    assert CONTROL_GREY not in PALETTE
    assert version_order(p) == {"none": 0, "version_0": 1, "version_1": 2}


@pytest.mark.parametrize("template", ["lines_by_version.json", "bars_by_version.json"])
def test_dvc_templates_colour_versions_as_the_pictures_do(template):
    spec = json.loads((TEMPLATES / template).read_text())
    colour = spec["encoding"]["color"]
    assert colour["field"] == "version"
    assert colour["scale"]["range"] == {"field": "colour"}     # the rows' own colour
    assert colour["sort"] == {"field": "order", "op": "min"}


def write_curve(live: Path, run: Run, acc: list[float]) -> None:
    folder = run.path(live) / "plots" / "metrics" / "val"
    folder.mkdir(parents=True)
    for name, values in (("acc", acc), ("loss", [2.0] * len(acc))):
        (folder / f"{name}.tsv").write_text(
            "step\t" + name + "\n" + "".join(f"{10 * (i + 1)}\t{v}\n"
                                             for i, v in enumerate(values)))


def test_curves_are_percent_with_the_seeds_mean_and_band(tmp_path):
    p = params(versions=["none"], baseline="none", seeds=[0, 1], train_sizes=[24])
    write_curve(tmp_path, Run("none", "finetuned", 24, 0), [0.25, 0.5])
    write_curve(tmp_path, Run("none", "finetuned", 24, 1), [0.35, 0.7])
    rows = curve_rows(p, tmp_path)
    assert [(r["epoch"], r["val_acc"], r["val_acc_low"], r["val_acc_high"]) for r in rows] == \
        [(1, 30.0, 25.0, 35.0), (2, 60.0, 50.0, 70.0)]
    assert rows[0]["version"] == "none" and rows[0]["order"] == 0 and rows[0]["group"]
    assert rows[0]["colour"] == CONTROL_GREY


def test_the_size_effect_is_drawn_only_with_two_sizes(tmp_path):
    row = {"version": "v", "backbone": "finetuned", "diff": 1.0, "diff_low": 0.0,
           "diff_high": 2.0, "verdict": "cannot tell"}
    plot_size_effect([{**row, "train_size": 500}], "none", {"v": PALETTE[0]}, tmp_path / "1.png")
    plot_size_effect([{**row, "train_size": n} for n in (500, 5000)], "none",
                     {"v": PALETTE[0]}, tmp_path / "2.png")
    one, two = (np.asarray(Image.open(tmp_path / f"{k}.png").convert("RGB")) for k in (1, 2))
    blue = np.array([int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5)])
    assert not (np.abs(one.astype(int) - blue).sum(-1) < 30).any()     # a note, no line
    assert (np.abs(two.astype(int) - blue).sum(-1) < 30).sum() > 50     # the version's colour
    assert one.shape[0] < two.shape[0]
