"""Training on a folder of real video files, in one process and in two (torchrun, gloo, CPU).

Two processes with one micro-batch each must compute what one process computes with
``--grad-accum 2`` on the same global batch (same items, same random draws), for both stages;
the checkpoints load, a run resumes with another number of processes, and a corrupt file in
the folder is skipped and reported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from phenaki_core import load_bundle
from phenaki_core.cli import main
from phenaki_core.training import BUNDLE_FILE, STATE_FILE, load_train_state

COLOURS = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 210, 40)]
COMMON = ["--preset", "tiny-shapes", "--frames", "9", "--steps", "3", "--batch-size", "4", "--lr", "1e-3",
          "--warmup-steps", "1", "--checkpoint-every", "3", "--preview-every", "100", "--threads", "1",
          "--device", "cpu"]


def write_clip(path, colour, dx: int, frames: int = 12, size: int = 20) -> None:
    images = []
    for i in range(frames):
        frame = np.zeros((size, size, 3), np.uint8)
        x = 2 + (i * dx) % (size - 8)
        frame[6:12, x:x + 6] = colour
        images.append(Image.fromarray(frame))
    images[0].save(path, save_all=True, append_images=images[1:], duration=125, loop=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for i in range(8):
        write_clip(root / f"clip{i}.gif", COLOURS[i % 4], dx=1 + i % 2)
        (root / f"clip{i}.txt").write_text(f"a square moving right, number {i}\n", encoding="utf-8")
    (root / "broken.gif").write_bytes(b"GIF89a" + os.urandom(300))
    (root / "broken.txt").write_text("a broken clip\n", encoding="utf-8")
    return root


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "phenaki_core.cli", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_same_weights(run_a, run_b, atol=2e-5):
    a, b = load_train_state(run_a / STATE_FILE), load_train_state(run_b / STATE_FILE)
    assert a.step == b.step
    for part_a, part_b in ((a.model, b.model), (a.ema, b.ema)):
        assert part_a.keys() == part_b.keys()
        worst = max((part_a[k].float() - part_b[k].float()).abs().max().item() for k in part_a)
        assert worst < atol, worst


def losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(folder, tmp_path_factory):
    """Both stages on the folder: one process with 2 micro-batches, and two processes with one."""
    root = tmp_path_factory.mktemp("runs")
    data = ["--data", str(folder)]
    assert main(["train", "tokenizer", str(root / "tok1"), *data, "--grad-accum", "2", *COMMON]) == 0
    tok2 = torchrun("train", "tokenizer", str(root / "tok2"), *data, *COMMON)
    assert tok2.stderr.count("1 unreadable: broken.gif") == 1, tok2.stderr  # rank 0 alone reports
    tokenizer = ["--tokenizer", str(root / "tok1" / BUNDLE_FILE)]
    assert main(["train", "transformer", str(root / "t2v1"), *data, *tokenizer, "--grad-accum", "2", *COMMON]) == 0
    t2v2 = torchrun("train", "transformer", str(root / "t2v2"), *data, *tokenizer, *COMMON)
    return root, tok2.stderr + t2v2.stderr


@pytest.mark.parametrize("stage", ["tok", "t2v"])
def test_two_processes_match_one_process_with_the_same_global_batch(runs, stage):
    root, _ = runs
    assert_same_weights(root / f"{stage}1", root / f"{stage}2")
    assert np.allclose(losses(root / f"{stage}1"), losses(root / f"{stage}2"), atol=1e-5)


def test_two_process_checkpoints_load_and_record_the_layout(runs):
    root, _ = runs
    for stage in ("tok2", "t2v2"):
        bundle = load_bundle(root / stage / BUNDLE_FILE)
        assert bundle.extra["history"][-1]["processes"] == 2
    assert [h["stage"] for h in load_bundle(root / "t2v2" / BUNDLE_FILE).extra["history"]] == ["tokenizer",
                                                                                               "transformer"]


def test_one_process_under_torchrun_joins_a_process_group_and_matches_a_plain_run(runs, folder, tmp_path):
    """torchrun with one process still runs the DDP path (on a GPU: NCCL with one rank), and its
    weights are those of the same run without torchrun."""
    root, _ = runs
    one = torchrun("train", "tokenizer", str(tmp_path / "tok"), "--data", str(folder), "--grad-accum", "2",
                   *COMMON, nproc=1)
    assert "joined process group: rank 0 of 1 (gloo)" in one.stderr, one.stderr[-2000:]
    assert_same_weights(root / "tok1", tmp_path / "tok")
    assert np.allclose(losses(root / "tok1"), losses(tmp_path / "tok"), atol=1e-5)


def test_the_corrupt_file_is_skipped_and_reported(runs):
    _, logs = runs
    assert "broken.gif" in logs


def test_resume_on_another_number_of_processes_continues_the_same_run(runs, folder, tmp_path):
    """A 3-step one-process run, continued to 4 steps by one process or by two: same weights."""
    root, _ = runs
    longer = [a if a != "3" else "4" for a in COMMON]  # --steps 4 (and --checkpoint-every 4)
    for name in ("one", "two"):
        shutil.copytree(root / "t2v1", tmp_path / name)
    assert main(["train", "transformer", str(tmp_path / "one"), "--data", str(folder), "--grad-accum", "2",
                 *longer]) == 0
    torchrun("train", "transformer", str(tmp_path / "two"), "--data", str(folder), "--grad-accum", "1", *longer)
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    assert load_train_state(tmp_path / "two" / STATE_FILE).step == 4


class PaddedClips(torch.utils.data.Dataset):
    """Clips whose last 4 frames are padding (frame_mask False) filled with ``pad_value``."""

    def __init__(self, pad_value: float):
        self.pad_value = pad_value

    def __len__(self):
        return 4

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(index)
        video = torch.rand(3, 9, 16, 16, generator=g)
        video[:, 5:] = self.pad_value
        return {"video": video, "caption": f"clip {index}", "frame_mask": torch.arange(9) < 5}


def test_padded_frames_do_not_count_in_the_stage1_loss(tmp_path):
    from phenaki_core import preset
    from phenaki_core.training import TrainConfig, Trainer
    cfg = TrainConfig(stage="tokenizer", steps=2, batch_size=2, warmup_steps=1, preview_every=1000)
    result = []
    for pad in (0.0, 1.0):
        losses_seen = []
        Trainer(tmp_path / str(pad), preset("tiny-shapes"), cfg, dataset=PaddedClips(pad), progress=False).run(
            on_step=lambda s, loss: losses_seen.append(loss))
        result.append(losses_seen)
    # the loss sees the padded frames only through the causal decoder's *later* outputs, which are
    # masked out: with the tokenizer's causality, real frames' reconstructions ignore the padding
    assert result[0] == pytest.approx(result[1], rel=1e-5)


def test_precompute_then_train_stage2_from_the_shards(runs, folder, tmp_path, capsys):
    root, _ = runs
    tokenizer = str(root / "tok1" / BUNDLE_FILE)
    assert main(["precompute", str(folder), str(tmp_path / "tokens"), "--tokenizer", tokenizer, "--frames", "9",
                 "--threads", "1", "--device", "cpu"]) == 0
    assert "wrote 8 items" in capsys.readouterr().out  # the corrupt file is not among them
    assert main(["train", "transformer", str(tmp_path / "t2v"), "--shards", str(tmp_path / "tokens"),
                 "--tokenizer", tokenizer, *COMMON]) == 0
    assert load_bundle(tmp_path / "t2v" / BUNDLE_FILE).extra["history"][-1]["steps"] == 3
    # shards are stage-2 data only, and must match the tokenizer they are trained with
    assert main(["train", "tokenizer", str(tmp_path / "bad"), "--shards", str(tmp_path / "tokens"), *COMMON]) == 2
    assert "stage 2" in capsys.readouterr().err
