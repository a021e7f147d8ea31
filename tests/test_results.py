"""The committed study and its replicate: the analysis files agree with their reports, the
replicate ran on seeds disjoint from the study's, and no verdict of one contradicts the other's."""
from __future__ import annotations

import json

import pytest

from conftest import ROOT

STUDY = ROOT / "reports" / "comparison.json"
REPLICATE = ROOT / "docs" / "replicate" / "comparison.json"
SIGN = {"helps by at least the target": 1, "helps": 1, "hurts by at least the target": -1,
        "hurts": -1}


def contradicts(a: str, b: str) -> bool:
    """Two verdicts that cannot both be true of one difference: opposite signs, or a sign
    against 'equivalent within the target' (a difference both known to be nonzero and within
    the target is possible, but the study treats an equivalence against a helps/hurts as a
    failure to replicate), and 'not decided yet' contradicts nothing."""
    if "not decided yet" in (a, b):
        return False
    if "equivalent within the target" in (a, b):
        return a != b
    return SIGN[a] != SIGN[b]


@pytest.mark.parametrize("a, b, clash", [
    ("helps", "helps by at least the target", False), ("helps", "hurts", True),
    ("helps", "equivalent within the target", True), ("hurts", "not decided yet", False),
    ("equivalent within the target", "equivalent within the target", False)])
def test_the_contradiction_rule(a, b, clash):
    assert contradicts(a, b) == clash == contradicts(b, a)


def load(path):
    return {c["name"] + f"/{c['backbone']}/n{c['train_size']}": c
            for c in json.loads(path.read_text())["comparisons"]}


def test_the_replicate_ran_on_other_seeds_and_does_not_contradict_the_study():
    study, replicate = json.loads(STUDY.read_text()), json.loads(REPLICATE.read_text())
    assert not set(study["design"]["seeds"]) & set(replicate["design"]["seeds"])
    ours, theirs = load(STUDY), load(REPLICATE)
    assert set(ours) == set(theirs)
    for name, c in ours.items():
        assert not contradicts(c["verdict"], theirs[name]["verdict"]), (
            name, c["verdict"], theirs[name]["verdict"])


@pytest.mark.parametrize("path", [STUDY, REPLICATE], ids=["study", "replicate"])
def test_each_report_states_the_verdicts_of_its_analysis(path):
    report = path.with_suffix(".md").read_text()
    target = json.loads(path.read_text())["target"]
    for c in json.loads(path.read_text())["comparisons"]:
        words = c["verdict"].replace("the target", f"{100 * target:.2f} pp")
        assert f"**{c['name']}: {words}.**" in report
