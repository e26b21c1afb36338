"""Bad input at the command line: every case ends within seconds with a non-zero exit, one line
``error: ...`` that says what to change, no traceback, and nothing the user made is lost.

``main(argv)`` runs in-process; two cases run as real processes to prove the exit status and the
absence of a traceback end to end. Boundaries: prompts and batch files, frame/prime/step/scale
numbers, output paths, checkpoints (``generate``), and the ``train`` and ``eval`` subcommands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from phenaki_core import MINILM_SPEC, Phenaki, TextEncoderSpec, preset, save_bundle
from phenaki_core.cli import main

from helpers import ROOT, save_tiny_bundle

FAST = ["--steps", "1", "--device", "cpu"]


def rewrite(source: Path, target: Path, *, metadata=None, drop=(), add=None, change=None) -> Path:
    """A copy of a bundle with its metadata or tensors altered (metadata value None removes the key)."""
    tensors = dict(load_file(str(source)))
    for key in drop:
        tensors.pop(key)
    tensors.update(add or {})
    for key, fn in (change or {}).items():
        tensors[key] = fn(tensors[key])
    with safe_open(str(source), framework="pt") as handle:
        meta = dict(handle.metadata())
    meta.update(metadata or {})
    save_file(tensors, str(target), metadata={k: v for k, v in meta.items() if v is not None})
    return target


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good and bad inputs, made once. Names are used as ``{name}`` placeholders in the argv lists."""
    d = tmp_path_factory.mktemp("cli_inputs")
    tiny = save_tiny_bundle(d / "tiny.safetensors")
    f = {"tiny": tiny}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        f["shapes"] = save_bundle(d / "shapes.safetensors", Phenaki(preset("tiny-shapes")), MINILM_SPEC)
    raw = tiny.read_bytes()
    (d / "noise.safetensors").write_bytes(bytes(range(256)) * 16)
    (d / "empty.safetensors").write_bytes(b"")
    (d / "half.safetensors").write_bytes(raw[: len(raw) // 2])
    (d / "header_only.safetensors").write_bytes(raw[:64])
    save_file({"w": torch.zeros(2)}, str(d / "plain.safetensors"))
    torch.save({"w": torch.zeros(2)}, d / "model.pt")
    (d / "dir.safetensors").mkdir()
    key = "maskgit.to_logits.bias"
    f.update({
        "version": rewrite(tiny, d / "version.safetensors", metadata={"format_version": "99"}),
        "badjson": rewrite(tiny, d / "badjson.safetensors", metadata={"config": "{broken"}),
        "noconfig": rewrite(tiny, d / "noconfig.safetensors", metadata={"config": None}),
        "missing_t": rewrite(tiny, d / "missing_t.safetensors", drop=[key]),
        "extra_t": rewrite(tiny, d / "extra_t.safetensors", add={"stowaway": torch.zeros(1)}),
        "shape": rewrite(tiny, d / "shape.safetensors", change={key: lambda t: torch.zeros(t.numel() + 1)}),
        "dtype": rewrite(tiny, d / "dtype.safetensors", change={key: lambda t: t.long()}),
        "nan": rewrite(tiny, d / "nan.safetensors", change={key: lambda t: torch.full_like(t, float("nan"))}),
        "clip": rewrite(tiny, d / "clip.safetensors", metadata={
            "text_encoder": json.dumps(TextEncoderSpec("clip-vit-l", 384).to_dict())}),
        "t5": rewrite(tiny, d / "t5.safetensors", metadata={
            "text_encoder": json.dumps(TextEncoderSpec("t5", 384, "c" * 64).to_dict())}),
        "minilm_other": rewrite(tiny, d / "minilm_other.safetensors", metadata={
            "text_encoder": json.dumps(TextEncoderSpec(MINILM_SPEC.name, 384, "f" * 64).to_dict())}),
        "dim512": rewrite(tiny, d / "dim512.safetensors", metadata={
            "text_encoder": json.dumps({**MINILM_SPEC.to_dict(), "dim": 512})}),
    })
    (d / "latin1.txt").write_bytes("# stories\na red circle moving right | un cercle rouge, très joli\n"
                                   .encode("latin-1"))
    (d / "blank.txt").write_text("\n   \n# only a comment\n", encoding="utf-8")
    (d / "empty_scene.txt").write_text("a red circle |  | a blue square\n", encoding="utf-8")
    (d / "stories_dir").mkdir()
    f.update({"noise": d / "noise.safetensors", "empty": d / "empty.safetensors", "half": d / "half.safetensors",
              "header_only": d / "header_only.safetensors", "plain": d / "plain.safetensors",
              "pickle": d / "model.pt", "dir": d / "dir.safetensors", "latin1": d / "latin1.txt",
              "blank": d / "blank.txt", "empty_scene": d / "empty_scene.txt", "stories_dir": d / "stories_dir"})
    f["missing"] = d / "missing.safetensors"
    return f


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The user's folder: an existing video, a plain file and a directory named like a video."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.gif").write_bytes(b"GIF89a the user's own file")
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "adir.gif").mkdir()
    (tmp_path / "readonly").mkdir()
    (tmp_path / "readonly").chmod(0o555)
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


def run(argv: list[str], files: dict[str, Path], capsys) -> tuple[int, str]:
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    return code, capsys.readouterr().err


def check_refused(code, err, message, exit_code=2, only_line=True):
    assert code == exit_code, f"exit {code}, stderr: {err}"
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error line, got: {err!r}"
    if only_line:
        assert lines == errors, f"expected nothing but the error line, got: {err!r}"
    assert re.search(message, errors[0]), f"{message!r} not in {errors[0]!r}"


# --- phenaki generate --------------------------------------------------------------------------------
GEN = ["generate", "a red circle moving right"]
OUT = ["-o", "keep.gif"]  # an existing file of the user's: a failed run must leave it alone
TINY = ["--checkpoint", "{tiny}"]
TWO = ["generate", "a red circle moving right", "a red circle moving up"]

PROMPT_CASES = [
    (["generate", "", *OUT, *TINY], "prompt 1 is empty"),
    (["generate", "   \t\n ", *OUT, *TINY], "prompt 1 is empty"),
    (["generate", "a red circle", "  ", *OUT, *TINY], "prompt 2 is empty"),
    (["generate", "a red \udcff circle", *OUT, *TINY], "not valid text.*UTF-8"),  # undecodable argv bytes
    (["generate", *OUT, *TINY], "give prompts, or --batch-file"),
    (["generate", "a", "--batch-file", "{blank}", "--out-dir", "out", *TINY], "not both"),
    (["generate", "--batch-file", "{blank}", *TINY], "needs --out-dir"),
    (["generate", "--batch-file", "{latin1}", "--out-dir", "out", *TINY], "not UTF-8.*line 2, offset 57.*save it as UTF-8"),
    (["generate", "--batch-file", "nope.txt", "--out-dir", "out", *TINY], "cannot read batch file nope.txt"),
    (["generate", "--batch-file", "{stories_dir}", "--out-dir", "out", *TINY], "cannot read batch file"),
    (["generate", "--batch-file", "{blank}", "--out-dir", "out", *TINY], "has no stories"),
    (["generate", "--batch-file", "{empty_scene}", "--out-dir", "out", *TINY], "line 1: an empty scene"),
    ([*GEN, *OUT, *TINY, "--negative", "   "], "--negative is empty"),
]
NUMBER_CASES = [
    ([*GEN, *OUT, *TINY, "--frames", "8"], r"1 \+ k\*2.*try 7 or 9"),
    ([*GEN, *OUT, *TINY, "--frames", "0"], "--frames: must be at least 1"),
    ([*GEN, *OUT, *TINY, "--frames", "-3"], "--frames: must be at least 1"),
    ([*GEN, *OUT, *TINY, "--frames", "1.5"], "--frames: expected a whole number"),
    ([*GEN, *OUT, *TINY, "--frames", "19"], "more than this model attends over"),
    ([*GEN, *OUT, *TINY, "--frames", "100001"], "more than this model attends over"),
    ([*TWO, *OUT, *TINY, "--prime-frames", "4"], r"--prime-frames must be 0 \(no priming\) or 1 \+ k\*2"),
    ([*TWO, *OUT, *TINY, "--frames", "9", "--prime-frames", "9"], "shorter than the scene"),
    ([*TWO, *OUT, *TINY, "--frames", "9", "--prime-frames", "13"], "shorter than the scene"),
    ([*TWO, *OUT, *TINY, "--prime-frames", "-1"], "--prime-frames: must be at least 0"),
    ([*GEN, *OUT, *TINY, "--steps", "0"], "--steps: must be at least 1"),
    ([*GEN, *OUT, *TINY, "--steps", "-5"], "--steps: must be at least 1"),
    ([*GEN, *OUT, *TINY, "--steps", "2.5"], "--steps: expected a whole number"),
    ([*GEN, *OUT, *TINY, "--cond-scale", "nan"], "--cond-scale: must be a finite number"),
    ([*GEN, *OUT, *TINY, "--cond-scale", "-1"], "--cond-scale: must be a finite number >= 0"),
    ([*GEN, *OUT, *TINY, "--cond-scale", "inf"], "--cond-scale: must be a finite number"),
    ([*GEN, *OUT, *TINY, "--cond-scale", "strong"], "--cond-scale: expected a number"),
    ([*GEN, *OUT, *TINY, "--temperature", "nan"], "--temperature: must be a finite number"),
    ([*GEN, *OUT, *TINY, "--temperature", "-0.5"], "--temperature: must be a finite number"),
    ([*GEN, *OUT, *TINY, "--seed", "-1"], "--seed: must be at least 0"),
    (["generate", "--batch-file", "{blank}", "--out-dir", "out", "--seeds", "0", *TINY], "--seeds"),
    ([*GEN, *OUT, *TINY, "--remask", "random"], "--remask: invalid choice"),
    ([*GEN, *OUT, *TINY, "--dtype", "fp64"], "--dtype: invalid choice"),
    ([*GEN, *OUT, *TINY, "--device", "tpu"], "unknown device 'tpu'"),
    pytest.param([*GEN, *OUT, *TINY, "--device", "cuda"], "no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
]
OUTPUT_CASES = [
    ([*GEN, *TINY], "give an output path with -o"),
    ([*GEN, "-o", "story.avi", *TINY], "unknown output type '.avi'"),
    ([*GEN, "-o", "notes.txt", *TINY], "unknown output type '.txt'"),
    ([*GEN, "-o", "afile/story.gif", *TINY], "afile is a file, not a directory"),
    ([*GEN, "-o", "afile/deeper/story.gif", *TINY], "afile is a file, not a directory"),
    ([*GEN, "-o", "adir.gif", *TINY], "adir.gif is a directory; give a file name"),
    ([*GEN, "-o", "afile", *TINY], "afile is an existing file"),
    (["generate", "--batch-file", "{empty_scene}", "--out-dir", "afile", *TINY], "afile is an existing file"),
    pytest.param([*GEN, "-o", "readonly/story.gif", *TINY], "readonly is not writable",
                  marks=pytest.mark.skipif(getattr(os, "geteuid", lambda: 0)() == 0, reason="root writes anywhere")),
    pytest.param([*GEN, "-o", "/proc/phenaki-test/story.gif", *TINY], "is not writable",
                  marks=pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")),
]
CHECKPOINT_CASES = [
    ([*GEN, *OUT, "--checkpoint", "{missing}"], "does not exist"),
    ([*GEN, *OUT, "--checkpoint", "{dir}"], "is a directory; pass the bundle's .safetensors file"),
    ([*GEN, *OUT, "--checkpoint", "{pickle}"], "pickle file.*refused.*phenaki convert"),
    ([*GEN, *OUT, "--checkpoint", "{noise}"], "not a readable safetensors file"),
    ([*GEN, *OUT, "--checkpoint", "{empty}"], "not a readable safetensors file"),
    ([*GEN, *OUT, "--checkpoint", "{half}"], "truncated or corrupt"),
    ([*GEN, *OUT, "--checkpoint", "{header_only}"], "truncated or corrupt"),
    ([*GEN, *OUT, "--checkpoint", "{plain}"], "not a Phenaki bundle"),
    ([*GEN, *OUT, "--checkpoint", "{version}"], "bundle format version '99'"),
    ([*GEN, *OUT, "--checkpoint", "{badjson}"], "not valid JSON"),
    ([*GEN, *OUT, "--checkpoint", "{noconfig}"], "no 'config' entry"),
    ([*GEN, *OUT, "--checkpoint", "{missing_t}"], "missing tensors.*maskgit.to_logits.bias"),
    ([*GEN, *OUT, "--checkpoint", "{extra_t}"], "unexpected tensors.*stowaway"),
    ([*GEN, *OUT, "--checkpoint", "{shape}"], "maskgit.to_logits.bias has shape"),
    ([*GEN, *OUT, "--checkpoint", "{dtype}"], "has dtype torch.int64"),
    ([*GEN, *OUT, "--checkpoint", "{nan}"], "NaN or infinite values"),
    ([*GEN, *OUT, "--checkpoint", "{clip}"], "unknown text encoder 'clip-vit-l'"),
    ([*GEN, *OUT, "--checkpoint", "{t5}"], "T5 encoder.*--t5-folder"),
    ([*GEN, *OUT, "--checkpoint", "{t5}", "--t5-folder", "no-such-folder"], "T5 folder no-such-folder does not exist"),
    ([*GEN, *OUT, "--checkpoint", "{dim512}"], "inconsistent: its model takes 384-d text"),
    ([*GEN, *OUT, "--checkpoint", "{minilm_other}"], "needs text encoder all-MiniLM-L6-v2.*sha256 ffff"),
]
GENERATE_CASES = PROMPT_CASES + NUMBER_CASES + OUTPUT_CASES + CHECKPOINT_CASES


@pytest.mark.parametrize("argv, message", GENERATE_CASES)
def test_generate_refuses_bad_input(argv, message, files, workdir, capsys):
    before = snapshot(workdir)
    defaults = [a for k, v in zip(FAST[::2], FAST[1::2]) if k not in argv for a in (k, v)]
    code, err = run([*argv, *defaults], files, capsys)
    check_refused(code, err, message)
    assert snapshot(workdir) == before, "a failed run must not create, change or remove the user's files"


def test_a_very_long_prompt_is_truncated_with_a_warning(files, workdir, capsys, caplog):
    with caplog.at_level("WARNING"):
        code, err = run(["generate", "a red circle moving right " * 400, "-o", "long.gif", *TINY, "--frames", "1",
                            *FAST], files, capsys)
    assert code == 0, err
    assert re.search(r"has \d+ tokens; it was truncated to the text encoder's 64", caplog.text)
    assert (workdir / "long.gif").stat().st_size > 0


def test_a_batch_file_with_a_byte_order_mark_is_read(files, workdir, capsys):
    (workdir / "bom.txt").write_bytes("\ufeffa red circle moving right\n".encode("utf-8"))
    code, err = run(["generate", "--batch-file", "bom.txt", "--out-dir", "out", *TINY, "--frames", "1", *FAST],
                       files, capsys)
    assert code == 0, err
    assert json.loads((workdir / "out" / "0000.json").read_text())["prompts"] == ["a red circle moving right"]


def test_a_failed_write_keeps_the_existing_video(files, workdir, capsys, monkeypatch):
    """The disk fills up half way through writing: the user's previous file stays whole, no temp file is left."""
    from PIL import Image

    def disk_full(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"GIF89a half a fil")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    before = snapshot(workdir)
    code, err = run([*GEN, *OUT, *TINY, "--frames", "1", *FAST], files, capsys)
    check_refused(code, err, "could not write keep.gif: No space left on device", only_line=False)
    assert snapshot(workdir) == before


# --- phenaki train -----------------------------------------------------------------------------------
TRAIN = ["train", "tokenizer", "run", "--preset", "tiny-shapes", "--steps", "1", "--batch-size", "1", "--threads", "1"]
TRAIN_CASES = [
    (["train", "vae", "run"], "argument stage: invalid choice"),
    ([*TRAIN, "--preset", "huge"], "unknown preset 'huge'"),
    ([*TRAIN, "--steps", "0"], "--steps: must be at least 1"),
    ([*TRAIN, "--batch-size", "0"], "--batch-size: must be at least 1"),
    ([*TRAIN, "--lr", "nan"], "--lr: must be a finite number"),
    ([*TRAIN, "--lr=-1e-3"], "--lr: must be a finite number >= 0"),
    ([*TRAIN, "--lr", "0"], "lr must be > 0"),
    ([*TRAIN, "--ema-decay", "2"], "ema_decay must be <= 1"),
    ([*TRAIN, "--threads", "0"], "--threads: must be at least 1"),
    ([*TRAIN, "--max-minutes", "nan"], "--max-minutes: must be a finite number"),
    ([*TRAIN, "--stop-at", "0"], "--stop-at: must be at least 1, got 0"),
    ([*TRAIN, "--precision", "fp8"], "--precision: invalid choice"),
    ([*TRAIN, "--device", "tpu"], "unknown device 'tpu'"),
    ([*TRAIN, "--init-from", "{noise}"], "not a readable safetensors file"),
    ([*TRAIN, "--init-from", "{pickle}"], "pickle file.*refused"),
    ([*TRAIN, "--init-from", "{tiny}"], "another architecture .*cvivit.image_size 8 there, 16 here.*leave --preset out"),
    (["train", "transformer", "run", "--preset", "tiny-shapes"], "stage 2 needs --tokenizer BUNDLE"),
    (["train", "transformer", "run", "--preset", "tiny-shapes", "--tokenizer", "{missing}"], "does not exist"),
    (["train", "transformer", "run", "--preset", "tiny-shapes", "--tokenizer", "{tiny}"],
     "tokenizer in .*tiny.safetensors has another geometry .*image_size 8 there, 16 here"),
]




def test_train_into_a_file_and_diverging_training_are_one_line(files, workdir, capsys):
    code, err = run([*TRAIN[:2], "afile", *TRAIN[3:]], files, capsys)
    check_refused(code, err, "cannot use .*afile: File exists; check the path", exit_code=1, only_line=False)
    assert (workdir / "afile").read_text() == "not a directory"
    code, err = run([*TRAIN, "--steps", "3", "--lr", "1e30"], files, capsys)
    check_refused(code, err, r"loss became nan at step \d+; lower the lr", exit_code=1, only_line=False)


def test_a_corrupt_training_state_is_refused_and_kept(files, workdir, capsys):
    run_dir = workdir / "run"
    run_dir.mkdir()
    (run_dir / "train_state.safetensors").write_bytes(b"\x00" * 100)
    code, err = run(TRAIN, files, capsys)
    check_refused(code, err, "could not read training checkpoint .*start the run over with --no-resume")
    assert (run_dir / "train_state.safetensors").read_bytes() == b"\x00" * 100, "the user's state is not touched"


# --- phenaki eval ------------------------------------------------------------------------------------
EVAL_CASES = [
    (["eval", "--checkpoint", "{missing}"], "does not exist"),
    (["eval", "--checkpoint", "{noise}"], "not a readable safetensors file"),
    (["eval", "--checkpoint", "{pickle}"], "pickle file.*refused"),
    (["eval", "--checkpoint", "{tiny}"], "eval measures 17-frame Shapes World clips of at least 16x16.*8x8"),
    (["eval", "--checkpoint", "{shapes}", "--out", "adir.gif"], "adir.gif is a directory; give a file name"),
    (["eval", "--checkpoint", "{shapes}", "--out", "afile/report.json"], "afile is a file, not a directory"),
    (["eval", "--checkpoint", "{shapes}", "--seeds", "0"], "--seeds: must be at least 1"),
    (["eval", "--checkpoint", "{shapes}", "--steps", "0"], "--steps: must be at least 1"),
    (["eval", "--checkpoint", "{shapes}", "--cond-scale", "nan"], "--cond-scale: must be a finite number"),
    (["eval", "--checkpoint", "{shapes}", "--dtype", "fp64"], "--dtype: invalid choice"),
    (["eval", "--checkpoint", "{shapes}", "--device", "tpu"], "unknown device 'tpu'"),
]


@pytest.mark.parametrize("argv, message", TRAIN_CASES + EVAL_CASES)
def test_train_and_eval_refuse_bad_input(argv, message, files, workdir, capsys):
    before = snapshot(workdir)
    code, err = run(argv, files, capsys)
    check_refused(code, err, message)
    assert snapshot(workdir) == before


# --- phenaki convert (the only reader of pickles) ----------------------------------------------------
class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_convert_reads_pickles_with_weights_only(files, workdir, capsys):
    torch.save({"maskgit.to_logits.bias": torch.zeros(2), "payload": _Exploit()}, workdir / "evil.pt")
    code, err = run(["convert", "evil.pt", "out.safetensors", "--tokenizer", "{tiny}"], files, capsys)
    check_refused(code, err, r"holds Python objects \((posix|nt)\.system\).*refused")
    assert not (workdir / "pwned").exists() and not (workdir / "out.safetensors").exists()
    (workdir / "cut.pt").write_bytes((workdir / "evil.pt").read_bytes()[:40])
    code, err = run(["convert", "cut.pt", "out.safetensors", "--tokenizer", "{tiny}"], files, capsys)
    check_refused(code, err, "cut.pt could not be read.*truncated or corrupt")


# --- as real processes -------------------------------------------------------------------------------
def test_real_processes_exit_non_zero_with_one_line_and_no_traceback(files, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    script = shutil.which("phenaki")
    first = [script] if script else [sys.executable, "-m", "phenaki_core.cli"]
    commands = [
        [*first, "generate", "a red circle", "-o", "x.gif", "--checkpoint", str(files["half"])],
        [sys.executable, "-m", "phenaki_core.cli", "generate", "a red circle", "-o", "x.gif", "--steps", "0"],
    ]
    procs = [subprocess.Popen(c, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    results = [p.communicate(timeout=600) for p in procs]  # a hang fails; a slow machine does not
    for proc, (out, err), message in zip(procs, results, ["truncated or corrupt", "--steps: must be at least 1"]):
        assert proc.returncode == 2, err
        assert "Traceback" not in err and out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert list(tmp_path.iterdir()) == []


def test_case_counts():
    """How many bad inputs each boundary is tried with (printed with ``-s``)."""
    counts = {"generate: prompts and batch files": len(PROMPT_CASES), "generate: numbers": len(NUMBER_CASES),
              "generate: outputs": len(OUTPUT_CASES), "generate: checkpoints": len(CHECKPOINT_CASES),
              "train": len(TRAIN_CASES) + 3, "eval": len(EVAL_CASES), "convert": 2}
    assert all(counts.values())
    print(counts)
