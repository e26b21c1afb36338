"""The text-encoder probe: linear readers fitted on Shapes World captions, scored on held-out wording."""

import hashlib
import json

import pytest
import torch

from phenaki_core import TextCondition
from phenaki_core.cli import main
from phenaki_core.evaluation import text_probe as probe_module
from phenaki_core.evaluation.text_probe import text_probe
from phenaki_core.text import TextEncoderSpec

FEW = 200  # captions: enough to separate the training wording, fast enough for CI


@pytest.fixture(scope="module")
def report(minilm):
    return text_probe(minilm, captions=FEW)


def test_probe_reads_the_training_wording_and_scores_the_held_out_prompts(report):
    assert all(report[f"{name}_train_accuracy"] >= 0.95 for name in ("colour", "shape", "motion"))
    # held-out nouns and motion phrases carry over well above chance (1/3, 1/7); held-out shade
    # names hardly do on this encoder, so colour is not asserted
    assert report["shape"] >= 0.5 and report["motion"] >= 0.5
    assert report["all_three"] <= min(report["shape"], report["motion"])
    assert sum(sum(row.values()) for row in report["shape_read_as"].values()) == report["heldout_prompts"] == 42
    assert sum(sum(row.values()) for row in report["motion_read_as"].values()) == 42


class WordBlindEncoder:
    """A random vector per whole prompt: separable in training, no shared meaning to transfer."""

    spec = TextEncoderSpec("word-blind", 64)

    def encode(self, prompts, device=None):
        rows = [torch.randn(3, 64, generator=torch.Generator().manual_seed(
            int(hashlib.sha256(p.encode()).hexdigest()[:8], 16))) for p in prompts]
        return TextCondition(torch.stack(rows), torch.ones(len(prompts), 3, dtype=torch.bool))


def test_an_encoder_without_shared_meaning_transfers_nothing():
    report = text_probe(WordBlindEncoder(), captions=FEW)
    assert report["colour"] < 0.5 and report["all_three"] < 0.2


def test_too_few_captions_is_a_clear_error(minilm):
    with pytest.raises(ValueError, match="at least 168"):
        text_probe(minilm, captions=10)


def test_eval_text_probe_writes_a_report(tmp_path, monkeypatch):
    real = probe_module.text_probe
    monkeypatch.setattr(probe_module, "text_probe", lambda encoder: real(encoder, captions=FEW))
    out = tmp_path / "probe.json"
    assert main(["eval", "--text-probe", "--out", str(out)]) == 0  # the bundled model's text encoder
    report = json.loads(out.read_text())
    assert report["train_captions"] == FEW and report["encoder"].startswith("all-MiniLM-L6-v2")
    assert main(["eval", "--text-probe", "--tokenizer-only"]) == 2
