"""Crash-safe training: ``phenaki train`` is SIGKILLed at random moments, its latest checkpoint
loads after every kill, and resuming ends bit-exactly where an uninterrupted run ends (CPU, same
seed): the same final loss in metrics.jsonl, the same weights, EMA, optimizer and RNG state, and
the same bundle tensors.

The kills land mid-run by construction, on a fast machine as on a slow one: each killed run is
started with ``PHENAKI_TEST_HOLD_AT_STEP`` (a test-only switch of the CLI), so it cannot get past a
step chosen before the end, and the kill falls at a random moment between its first new checkpoint
and that hold.

Stage 1 is killed three times; stage 2, which loads the MiniLM text encoder in every process, once.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from phenaki_core import load_bundle
from phenaki_core.cli import TEST_HOLD_ENV, main
from phenaki_core.training import BUNDLE_FILE, STATE_FILE, load_train_state
from phenaki_core.training.trainer import LOCK_FILE

from helpers import ROOT

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

STEPS = 16
ARGS = ["--preset", "tiny-shapes", "--steps", str(STEPS), "--batch-size", "2", "--checkpoint-every", "1",
        "--threads", "1", "--preview-every", "1000", "--warmup-steps", "2", "--seed", "3", "--device", "cpu"]
KILLS = 3


def train_argv(run_dir: Path) -> list[str]:
    return ["train", "tokenizer", str(run_dir), *ARGS]


def saved_step(path: Path):
    """The step of a training state file, or None while there is none (it is replaced atomically).

    Read from the safetensors header through one open file: ``safe_open`` opens the path a second
    time to map the tensors, and a checkpoint renamed into place between the two opens mixes the
    old file's header with the new file's size."""
    try:
        with open(path, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    except FileNotFoundError:
        return None
    return int(header["__metadata__"]["step"])


def run_in_process(run_dir: Path) -> None:
    threads = torch.get_num_threads()
    try:
        assert main(train_argv(run_dir)) == 0
    finally:
        torch.set_num_threads(threads)  # --threads 1 must not leak into later tests


def final_record(run_dir: Path) -> dict:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is whole JSON, even after kills
    return next(r for r in reversed(records) if r["step"] == STEPS)


def test_sigkilled_training_resumes_bit_exactly(tmp_path):
    crashed = tmp_path / "crashed"
    rng = random.Random(20240611)
    last = 0
    kills = []
    for attempt in range(KILLS):
        hold = last + rng.randint(2, 5)  # the run computes this step, then waits unsaved: it cannot finish
        assert hold < STEPS
        env = {**os.environ, "OMP_NUM_THREADS": "1", TEST_HOLD_ENV: str(hold),
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(tmp_path / f"log{attempt}.txt", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "phenaki_core.cli", *train_argv(crashed)], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 90
                # wait until this process has checkpointed past the previous kill, then kill it at a random moment
                while (saved_step(crashed / STATE_FILE) or 0) <= last:
                    assert proc.poll() is None, f"training ended early: {(tmp_path / f'log{attempt}.txt').read_text()}"
                    assert time.monotonic() < deadline, "no checkpoint within 90 s"
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.3))
                proc.send_signal(signal.SIGKILL)
            finally:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        state = load_train_state(crashed / STATE_FILE)  # the latest checkpoint is whole and loads
        assert last < state.step < hold
        assert {f"module.{k}" for k in state.model} <= set(state.ema) and state.optimizer["state"]
        if (crashed / BUNDLE_FILE).exists():  # written right after the state; a kill can fall in between
            bundle = load_bundle(crashed / BUNDLE_FILE)
            assert bundle.extra["history"][-1]["steps"] in (state.step - 1, state.step)
        leftovers = [p.name for p in crashed.iterdir() if p.name not in
                     (STATE_FILE, BUNDLE_FILE, LOCK_FILE, "metrics.jsonl", "previews")]
        # at most the temporary directory of the write the kill interrupted; the next run removes it
        assert all(re.fullmatch(rf"\.({STATE_FILE}|{BUNDLE_FILE})\.{proc.pid}\.\w+\.tmp", n) for n in leftovers), \
            leftovers
        kills.append(state.step)
        last = state.step

    run_in_process(crashed)  # resume to the end
    straight = tmp_path / "straight"
    run_in_process(straight)

    assert sorted(p.name for p in crashed.iterdir()) == sorted(p.name for p in straight.iterdir()), \
        "the resumed run removed what the killed runs left behind"
    assert final_record(crashed)["loss"] == final_record(straight)["loss"]
    for key in ("recon", "entropy", "lr", "grad_norm"):
        assert final_record(crashed)[key] == final_record(straight)[key], key
    assert_same_end(straight, crashed, STEPS)
    print(f"killed at steps {kills}")


def assert_same_end(straight: Path, resumed: Path, steps: int) -> None:
    """Both runs ended at ``steps`` with bit-identical weights, EMA, optimizer and RNG state and bundle."""
    a, b = load_train_state(straight / STATE_FILE), load_train_state(resumed / STATE_FILE)
    assert a.step == b.step == steps
    for part in ("model", "ema"):
        x, y = getattr(a, part), getattr(b, part)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), part
    for index, moments in a.optimizer["state"].items():
        assert all(torch.equal(v, b.optimizer["state"][index][k]) for k, v in moments.items())
    assert (a.generator is None and b.generator is None) or torch.equal(a.generator, b.generator)
    x, y = load_file(str(straight / BUNDLE_FILE)), load_file(str(resumed / BUNDLE_FILE))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def start_held(run_dir: Path, hold: int, log_path: Path, extra=()) -> subprocess.Popen:
    """``phenaki train`` in a process that computes step ``hold`` and then waits (test-only switch)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", TEST_HOLD_ENV: str(hold),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "phenaki_core.cli", *train_argv(run_dir), *extra], env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def wait_for_hold(proc: subprocess.Popen, log_path: Path) -> None:
    """Until the process says it holds (the deadline only catches a hang; nothing races it)."""
    deadline = time.monotonic() + 300
    while "holding until killed" not in log_path.read_text():
        assert proc.poll() is None, f"training ended early: {log_path.read_text()}"
        assert time.monotonic() < deadline, "the run never reached its hold"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_save_the_current_step_and_print_the_resume_command(sig, tmp_path):
    """Stopped by a signal between checkpoints, the run saves the step it was at, says how to go
    on, and that command resumes bit-exactly where an uninterrupted run would be."""
    run_dir, log_path = tmp_path / "run", tmp_path / "log.txt"
    proc = start_held(run_dir, 5, log_path, ["--checkpoint-every", "1000", "--no-resume"])
    try:
        wait_for_hold(proc, log_path)
        assert not (run_dir / STATE_FILE).exists()  # nothing saved before the signal
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=300)
    finally:
        proc.kill()
        proc.wait()
    log = log_path.read_text()
    assert proc.returncode == 128 + getattr(signal, sig), log
    assert "Traceback" not in log
    assert load_train_state(run_dir / STATE_FILE).step == 5
    line = next(l for l in log.splitlines() if l.startswith(f"stopped by {sig} at step 5 of {STEPS}"))
    command = line.split("resume with: ", 1)[1].split()
    assert command[:4] == ["phenaki", "train", "tokenizer", str(run_dir)] and "--no-resume" not in command
    run_in_process(run_dir)  # the printed command, in-process
    straight = tmp_path / "straight"
    run_in_process(straight)
    assert final_record(run_dir)["loss"] == final_record(straight)["loss"]
    a, b = load_train_state(straight / STATE_FILE), load_train_state(run_dir / STATE_FILE)
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)


def test_a_live_run_locks_its_directory_and_a_killed_one_leaves_no_lock(tmp_path, capsys):
    run_dir, log_path = tmp_path / "run", tmp_path / "log.txt"
    proc = start_held(run_dir, 2, log_path)
    try:
        wait_for_hold(proc, log_path)
        assert main(train_argv(run_dir)) == 2  # a second run in the same directory, while the first lives
        err = capsys.readouterr().err
        assert f"in use by a live run (pid {proc.pid} on " in err and "choose another run directory" in err
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=300)
    finally:
        proc.kill()
        proc.wait()
    assert (run_dir / LOCK_FILE).read_text().startswith(f"pid {proc.pid}")  # left behind by the killed run
    run_in_process(run_dir)  # the stale lock is taken over
    assert load_train_state(run_dir / STATE_FILE).step == STEPS
    assert (run_dir / LOCK_FILE).read_text() == ""  # a run that ends releases it


def test_sigkilled_stage_two_resumes_bit_exactly(tmp_path):
    """Stage 2 (MaskGit, critic and the text encoder's captions) killed mid-run resumes to exactly
    the weights, optimizer state and bundle of an uninterrupted run."""
    tokenizer = tmp_path / "tok"
    run_in_process(tokenizer)  # a stage-1 bundle to freeze
    steps = 8
    args = ["--tokenizer", str(tokenizer / BUNDLE_FILE), "--steps", str(steps), "--batch-size", "2",
            "--checkpoint-every", "1", "--threads", "1", "--preview-every", "1000", "--warmup-steps", "2",
            "--seed", "5", "--device", "cpu"]

    def argv(run_dir):
        return ["train", "transformer", str(run_dir), *args]

    crashed, log_path, hold = tmp_path / "crashed", tmp_path / "stage2.log", 5
    env = {**os.environ, "OMP_NUM_THREADS": "1", TEST_HOLD_ENV: str(hold),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "phenaki_core.cli", *argv(crashed)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_hold(proc, log_path)  # step 5 computed, unsaved; step 4 checkpointed
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert load_train_state(crashed / STATE_FILE).step == hold - 1

    threads = torch.get_num_threads()
    try:
        assert main(argv(crashed)) == 0  # resume to the end
        assert main(argv(tmp_path / "straight")) == 0
    finally:
        torch.set_num_threads(threads)
    assert_same_end(tmp_path / "straight", crashed, steps)
