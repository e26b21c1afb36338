"""A new user's path through ``phenaki train`` on their own clips: presets, defaults in --help,
the schedule and its warnings, stage 2 taking its model from the tokenizer, a finished run,
--stop-at, the guards (untrained transformer, existing shards), and measuring the tokenizer on
the user's clips. Ctrl-C/SIGTERM and the run-directory lock are in test_crash_resume.py.

Everything runs in-process on the tiny-shapes preset (16x16 frames) and the example folder of
tests/example_clips.py (GIF, WebP, MP4 when PyAV is installed, frame folders, captions in
sidecars and captions.jsonl, one broken file, one clip without a caption).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import shlex

import pytest
import torch

from phenaki_core import Phenaki, TextEncoderSpec, load_bundle, preset, save_bundle
from phenaki_core.cli import main
from phenaki_core.training import BUNDLE_FILE, STATE_FILE, TrainConfig, load_train_state

from example_clips import write_example_clips

FAST = ["--frames", "9", "--batch-size", "4", "--warmup-steps", "1", "--lr", "1e-3", "--preview-every", "1000",
        "--threads", "1", "--device", "cpu"]
REMOVED = ("--text-token-drop", "--pooled-text-token", "--text-pooled-only", "--text-noise")


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # --threads 1 must not leak into later tests


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_example_clips(tmp_path_factory.mktemp("my_clips"))


@pytest.fixture(scope="module")
def tokenizer(clips, tmp_path_factory):
    """A 4-step stage-1 run on the clips; returns its run directory."""
    run_dir = tmp_path_factory.mktemp("runs") / "tok"
    threads = torch.get_num_threads()
    try:
        assert main(["train", "tokenizer", str(run_dir), "--preset", "tiny-shapes", "--data", str(clips),
                     "--steps", "4", *FAST]) == 0
    finally:
        torch.set_num_threads(threads)
    return run_dir


def train_help(capsys) -> str:
    """``phenaki train --help``, its whitespace folded (argparse wraps lines)."""
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--help"])
    assert stopped.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_every_training_setting_with_its_default(capsys):
    text = train_help(capsys)
    for field in dataclasses.fields(TrainConfig):
        if field.name == "stage":
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        shown = "off" if default is False else f"{default:g}" if isinstance(default, float) else str(default)
        expected = " ".join(f"{field.metadata['help']} (default: {shown})".split())
        assert re.search(re.escape(flag) + r"(?: \S+)? " + re.escape(expected), text), flag  # flag, metavar, help
    for gone in REMOVED:
        assert gone not in text
    assert re.search(r"--warmup-steps N (?:(?! --).)*\(default: 200\)", text)
    assert re.search(r"--ema-decay X (?:(?! --).)*\(default: 0\.995\)", text)


def test_removed_experiment_options_are_refused(capsys):
    for gone in REMOVED:
        with pytest.raises(SystemExit) as stopped:
            main(["train", "transformer", "run", gone, "0.5"])
        assert stopped.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(TypeError):
        TrainConfig(text_noise=0.1)


def test_list_presets_describes_each(capsys):
    assert main(["train", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["preset", "frames", "tokens/frame", "tokens/clip"]
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {"tiny", "tiny-shapes", "shapes64", "S", "L"}
    assert "17 x 16x16" in rows["tiny-shapes"] and " 2x2 " in rows["tiny-shapes"]
    assert "17 x 64x64" in rows["shapes64"] and " 4x4 " in rows["shapes64"] and "384-d" in rows["shapes64"]
    assert main(["train"]) == 2 and "tokenizer|transformer RUN_DIR" in capsys.readouterr().err


def test_a_preset_that_cannot_train_names_the_presets_that_can(tmp_path, capsys):
    assert main(["train", "tokenizer", str(tmp_path / "a"), "--preset", "tiny", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "Shapes World" in err and "8x8" in err and "--data FOLDER" in err and "tiny-shapes, shapes64" in err
    bundle = save_bundle(tmp_path / "tiny.safetensors", Phenaki(preset("tiny")), TextEncoderSpec("tiny-text", 24))
    assert main(["train", "transformer", str(tmp_path / "b"), "--tokenizer", str(bundle), "--steps", "1",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "reads 24-d text" in err and "all-MiniLM-L6-v2 (384-d" in err and "tiny-shapes, shapes64, S" in err
    assert not (tmp_path / "a" / STATE_FILE).exists() and not (tmp_path / "b" / STATE_FILE).exists()


def test_the_schedule_is_logged_and_what_the_run_is_too_short_for_is_warned(clips, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    assert main(["train", "tokenizer", str(tmp_path / "run"), "--preset", "tiny-shapes", "--data", str(clips),
                 "--frames", "9", "--steps", "2", "--batch-size", "2", "--threads", "1", "--device", "cpu"]) == 0
    text = caplog.text
    assert ("tokenizer stage, steps 0 -> 2: batch 2 (one micro-batch), lr 0.0003 (warm-up 200 steps, then cosine "
            "to 3e-05), EMA 0.995, checkpoint every 200, preview every 500, log every 20 steps") in text
    assert "the warm-up (200 steps) is as long as the whole run (2 steps)" in text
    assert "no checkpoint before the end (--checkpoint-every 200, --steps 2); Ctrl-C still saves" in text
    assert "no preview before the end (--preview-every 500, --steps 2)" in text
    assert "1 without a caption: no_caption.gif" in text and "1 unreadable: broken.gif" in text


def test_a_finished_run_says_it_is_finished(tokenizer, clips, capsys):
    assert main(["train", "tokenizer", str(tokenizer), "--preset", "tiny-shapes", "--data", str(clips),
                 "--steps", "4", *FAST]) == 0
    out = capsys.readouterr().out
    assert f"{tokenizer} already finished: step 4 of 4" in out and "raise --steps" in out and "nan" not in out


def test_the_ema_of_a_short_run_follows_its_training(tokenizer):
    """A 4-step run ships its trained weights, not (almost) its initial ones (EMA warm-up)."""
    state = load_train_state(tokenizer / STATE_FILE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        initial = Phenaki(preset("tiny-shapes")).state_dict()

    def distance(a, b):
        return sum((a[k].float() - b[k].float()).pow(2).sum().item() for k in a if k.startswith("cvivit."))

    ema = {k.removeprefix("module."): v for k, v in state.ema.items() if k.startswith("module.")}
    assert distance(ema, state.model) < 0.2 * distance(initial, state.model)


def test_stage2_takes_its_model_from_the_tokenizer_bundle(tokenizer, clips, tmp_path, capsys):
    run_dir = tmp_path / "t2v"
    assert main(["train", "transformer", str(run_dir), "--tokenizer", str(tokenizer / BUNDLE_FILE),
                 "--data", str(clips), "--steps", "2", *FAST]) == 0  # no --preset: the bundle's model
    assert load_bundle(run_dir / BUNDLE_FILE).model.config == preset("tiny-shapes")
    # an explicit preset that does not fit says what differs and what to do, in one line
    assert main(["train", "transformer", str(tmp_path / "other"), "--tokenizer", str(tokenizer / BUNDLE_FILE),
                 "--preset", "shapes64", "--data", str(clips), "--steps", "1", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # one line, after the first run's progress bar
    assert err.startswith("error: the tokenizer in") and "another geometry" in err
    assert "image_size 16 there, 64 here" in err and "leave --preset out" in err


def test_stop_at_prints_the_command_that_continues(clips, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "tokenizer", str(run_dir), "--preset", "tiny-shapes", "--data", str(clips), "--steps", "4",
            "--stop-at", "2", "--no-resume", *FAST]
    assert main(argv) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("stopped at --stop-at"))
    assert line.startswith("stopped at --stop-at at step 2 of 4, checkpoint saved; resume with: phenaki train ")
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert "--stop-at" not in command and "--no-resume" not in command
    assert main(command[1:]) == 0
    assert load_train_state(run_dir / STATE_FILE).step == 4


def test_generate_refuses_a_bundle_whose_transformer_was_never_trained(tokenizer, tmp_path, capsys):
    bundle = tokenizer / BUNDLE_FILE
    assert main(["generate", "a red square moving right", "-o", str(tmp_path / "x.gif"), "--checkpoint",
                 str(bundle), "--frames", "9", "--prime-frames", "3"]) == 2
    err = capsys.readouterr().err
    assert "transformer was never trained" in err
    assert f"phenaki train transformer RUN_DIR --tokenizer {bundle}" in err
    assert not (tmp_path / "x.gif").exists()


def test_eval_measures_the_tokenizer_on_your_own_clips(tokenizer, clips, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["eval", "--checkpoint", str(tokenizer / BUNDLE_FILE), "--tokenizer-only", "--data", str(clips),
                 "--frames", "9", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["clips"] == 16 and report["frames"] == 9 and report["image_size"] == 16
    assert math.isfinite(report["psnr_db"]) and report["psnr_db"] > 5
    assert report["psnr_db_per_clip"]["min"] <= report["psnr_db"] <= report["psnr_db_per_clip"]["max"] + 1e-6
    assert len(report["worst"]) == 5 and "broken.gif" in report["folder"]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tokenizer / BUNDLE_FILE), "--data", str(clips)]) == 2
    assert "pass it with --tokenizer-only" in capsys.readouterr().err


def test_precompute_refuses_existing_shards_before_loading_anything(clips, tmp_path, capsys):
    out = tmp_path / "tokens"
    out.mkdir()
    (out / "shard_00000.safetensors").write_bytes(b"old")
    # the tokenizer does not even exist: the folder check comes first, and names the flag
    assert main(["precompute", str(clips), str(out), "--tokenizer", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "already holds token shards" in err and "--overwrite" in err
    assert (out / "shard_00000.safetensors").read_bytes() == b"old"


def test_precompute_offsets_are_chosen_on_the_command_line(tokenizer, clips, tmp_path, capsys):
    out = tmp_path / "tokens"
    assert main(["precompute", str(clips), str(out), "--tokenizer", str(tokenizer / BUNDLE_FILE), "--frames", "9",
                 "--offset", "center", "--threads", "1", "--device", "cpu"]) == 0
    assert "wrote 16 items in 1 shards" in capsys.readouterr().out
    index = json.loads((out / "index.json").read_text())
    assert index["source"]["config"]["offset"] == "center"


def test_a_stop_requested_during_the_set_up_stops_before_the_first_step(tmp_path):
    """Ctrl-C while the model and data load: the run does not start, and writes nothing."""
    import threading

    from phenaki_core.training import Trainer
    stop = threading.Event()
    stop.set()
    trainer = Trainer(tmp_path / "run", preset("tiny-shapes"),
                      TrainConfig(stage="tokenizer", steps=3, batch_size=2, warmup_steps=1), progress=False)
    result = trainer.run(stop=stop)
    assert result.stopped == "signal" and result.step == trainer.start_step == 0
    assert not (tmp_path / "run" / STATE_FILE).exists()


def test_max_minutes_stops_with_a_checkpoint_and_says_how_to_go_on(clips, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "tokenizer", str(run_dir), "--preset", "tiny-shapes", "--data", str(clips), "--steps", "4",
                 "--max-minutes", "0", *FAST]) == 0  # out of time after the first step
    out = capsys.readouterr().out
    assert "stopped after --max-minutes 0.0 at step 1 of 4, checkpoint saved; resume with: phenaki train" in out
    assert load_train_state(run_dir / STATE_FILE).step == 1


def test_runs_saved_with_the_removed_text_options_off_still_resume():
    saved = {**TrainConfig(stage="transformer").to_dict(), "text_token_drop": 0.0, "pooled_text_token": False,
             "text_pooled_only": 0.0, "text_noise": 0.0}
    assert TrainConfig.from_dict(saved) == TrainConfig(stage="transformer")
    with pytest.raises(ValueError, match="unknown training settings"):  # one that changed the training
        TrainConfig.from_dict({**saved, "pooled_text_token": True})
