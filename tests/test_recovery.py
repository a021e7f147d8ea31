"""The recovery helpers as units, in-process: atomic outputs, SIGTERM, choosing a resume state.

The real kills of real stage processes are in test_faults.py (one per mechanism)."""
from __future__ import annotations

import os
import signal

import pytest
import torch

from augvit.io import TMP_MARK, atomic_path, raise_on_sigterm, save_json
from augvit.training import open_resume_dir, usable_checkpoint


def leftovers(folder):
    return [p.name for p in folder.iterdir() if TMP_MARK in p.name]


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_failed_write_keeps_the_previous_output_and_leaves_no_temporary(tmp_path, kind):
    out = tmp_path / "out"

    def write(tmp, text):
        if kind == "file":
            tmp.write_text(text)
        else:
            tmp.mkdir()
            (tmp / "a.txt").write_text(text)

    def read():
        return out.read_text() if kind == "file" else (out / "a.txt").read_text()

    with atomic_path(out) as tmp:
        write(tmp, "first")
    assert read() == "first"
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        write(tmp, "half")
        assert not out.exists() or read() == "first"        # not in place before the end
        raise RuntimeError("killed mid-write")
    assert read() == "first" and leftovers(tmp_path) == []
    with atomic_path(out) as tmp:
        write(tmp, "second")
    assert read() == "second" and leftovers(tmp_path) == []


def test_a_new_write_removes_a_killed_attempts_leftovers(tmp_path):
    out = tmp_path / "m.json"
    (tmp_path / f"m.json{TMP_MARK}12345").write_text("left by a SIGKILL")
    (tmp_path / f"m.json{TMP_MARK}old-999").mkdir()
    save_json(out, {"a": 1})
    assert out.read_text().strip().startswith("{") and leftovers(tmp_path) == []


def test_sigterm_unwinds_like_ctrl_c_so_the_temporary_goes(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    raise_on_sigterm()
    try:
        with pytest.raises(SystemExit) as e, atomic_path(tmp_path / "out") as tmp:
            tmp.write_text("partial")
            os.kill(os.getpid(), signal.SIGTERM)
        assert e.value.code == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []


def fake_checkpoint(path, complete: bool = True) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "loops": {}, "epoch": 1,
                "callbacks": {"EpochLog": {"live_files": {}}}}, path)   # the curve's files
    if not complete:                                   # what a kill mid-save could leave
        path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize("case,resumes", [
    ("same run, complete checkpoint", True),
    ("--fresh", False),
    ("other configuration", False),
    ("truncated checkpoint", False),
    ("no checkpoint yet", False),
])
def test_a_resume_state_is_used_only_for_the_very_same_run(tmp_path, case, resumes):
    folder = tmp_path / "resume"
    assert open_resume_dir(folder, "fingerprint-A", fresh=False) is False   # a new run
    assert (folder / "config.json").read_text() == "fingerprint-A"
    if case != "no checkpoint yet":
        fake_checkpoint(folder / "last.ckpt", complete=case != "truncated checkpoint")
    got = open_resume_dir(folder, "fingerprint-B" if case == "other configuration"
                          else "fingerprint-A", fresh=case == "--fresh")
    assert got is resumes
    if not resumes:                                    # emptied and stamped for the new run
        assert not (folder / "last.ckpt").exists()
        assert (folder / "config.json").read_text().startswith("fingerprint-")


@pytest.mark.parametrize("where", ["the folder", "a parent"])
def test_a_file_where_the_resume_folder_goes_is_named_and_kept(tmp_path, where):
    """Not a FileExistsError traceback: the message names the path, and the file stays."""
    from augvit.io import StageError
    folder = tmp_path / "resume" / "run"
    blocker = folder if where == "the folder" else folder.parent
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("someone's notes")
    with pytest.raises(StageError, match=rf"resume folder '{folder}' cannot be made .*"
                                         r"not a folder sits on its path"):
        open_resume_dir(folder, "fingerprint-A", fresh=False)
    assert blocker.read_text() == "someone's notes"


def test_usable_checkpoint_needs_weights_and_loop_state(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "weights-only.ckpt")
    fake_checkpoint(tmp_path / "ok.ckpt")
    assert usable_checkpoint(tmp_path / "ok.ckpt")
    assert not usable_checkpoint(tmp_path / "weights-only.ckpt")
    assert not usable_checkpoint(tmp_path / "missing.ckpt")
