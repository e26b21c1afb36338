"""The whole pipeline at a tiny config: stage 1, stage 2, exact resume, then generation via the CLI."""

import dataclasses
import json
import math

import pytest
import torch
from PIL import Image

from phenaki_core import CheckpointError, PhenakiPipeline, TextEncoderSpec, load_bundle, preset
from phenaki_core.checkpoint import with_decoder_from
from phenaki_core.cli import main
from phenaki_core.training import BUNDLE_FILE, STATE_FILE, TrainConfig, Trainer, load_train_state
from phenaki_core.data.typed import TYPED_FORMS

FAST = dict(batch_size=2, warmup_steps=1, log_every=1, preview_every=1000)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    run = tmp_path_factory.mktemp("tok")
    result = Trainer(run, preset("tiny-shapes"), TrainConfig(stage="tokenizer", steps=3, checkpoint_every=3, **FAST),
                     progress=False).run()
    return result


@pytest.fixture(scope="module")
def stage2(tmp_path_factory, stage1, minilm):
    run = tmp_path_factory.mktemp("t2v")
    trainer = Trainer(run, preset("tiny-shapes"), TrainConfig(stage="transformer", steps=3, checkpoint_every=3, **FAST),
                      tokenizer_from=stage1.bundle, text_encoder=minilm, progress=False)
    return trainer.run()


def test_stage1_writes_state_bundle_metrics_and_preview(stage1):
    run = stage1.run_dir
    assert (run / STATE_FILE).is_file() and (run / BUNDLE_FILE).is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    previews = list((run / "previews").glob("*.gif"))
    assert previews and Image.open(previews[0]).n_frames == 17
    history = load_bundle(run / BUNDLE_FILE).extra["history"]
    assert history[-1]["stage"] == "tokenizer" and history[-1]["steps"] == 3


def test_stage2_freezes_the_tokenizer_and_keeps_its_history(stage1, stage2):
    tok = load_bundle(stage1.bundle).model.cvivit.state_dict()
    t2v = load_bundle(stage2.bundle)
    assert all(torch.equal(tok[k], v) for k, v in t2v.model.cvivit.state_dict().items())
    assert [h["stage"] for h in t2v.extra["history"]] == ["tokenizer", "transformer"]


def test_a_warm_started_transformer_on_a_retrained_tokenizer_records_both(stage1, stage2, minilm, tmp_path):
    """Stage 1 continued from its bundle, then stage 2 warm-started from the old transformer: the bundle
    holds the new tokenizer, and its history lists all tokenizer runs, then all transformer runs."""
    tok_cfg = TrainConfig(stage="tokenizer", steps=2, checkpoint_every=2, **FAST)
    tok2 = Trainer(tmp_path / "tok2", preset("tiny-shapes"), tok_cfg, init_from=stage1.bundle, progress=False).run()
    t2v_cfg = TrainConfig(stage="transformer", steps=2, checkpoint_every=2, **FAST)
    t2v2 = Trainer(tmp_path / "t2v2", preset("tiny-shapes"), t2v_cfg, init_from=stage2.bundle,
                   tokenizer_from=tok2.bundle, text_encoder=minilm, progress=False).run()
    bundle = load_bundle(t2v2.bundle)
    new_tok = load_bundle(tok2.bundle).model.cvivit.state_dict()
    assert all(torch.equal(new_tok[k], v) for k, v in bundle.model.cvivit.state_dict().items())
    assert [(h["stage"], h["steps"]) for h in bundle.extra["history"]] == [
        ("tokenizer", 3), ("tokenizer", 2), ("transformer", 3), ("transformer", 2)]


def test_decoder_only_keeps_the_token_ids_and_the_transformer(stage2, tmp_path):
    """A decoder-only fine-tune of a full model: the decoder changes, while the encoder (so every token id)
    and the transformer stay bit-identical, and the history marks the run."""
    cfg = TrainConfig(stage="tokenizer", steps=2, checkpoint_every=2, decoder_only=True, lr=1e-2, **FAST)
    tuned = load_bundle(Trainer(tmp_path / "dec", preset("tiny-shapes"), cfg, init_from=stage2.bundle,
                                progress=False).run().bundle)
    before = load_bundle(stage2.bundle)
    old, new = before.model.state_dict(), tuned.model.state_dict()
    decoder_ids = {id(p) for module in before.model.cvivit.decoder_modules() for p in module.parameters()}
    decoder = {f"cvivit.{n}" for n, p in before.model.cvivit.named_parameters() if id(p) in decoder_ids}
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed and changed <= decoder
    assert any(k.startswith("cvivit.to_pixels") for k in changed)
    video = torch.rand(2, 3, 17, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(before.model.cvivit.encode_to_ids(video), tuned.model.cvivit.encode_to_ids(video))
    assert tuned.extra["history"][-1] == {**tuned.extra["history"][-1], "stage": "tokenizer", "decoder_only": True}


def test_a_pixel_refiner_grows_on_a_trained_decoder_and_keeps_the_ids(stage2, tmp_path):
    """--decoder-only --pixel-refiner K on a model without a refiner: the refiner starts as the identity
    (the first decode is the old one), trains, and every token id and the transformer stay."""
    before = load_bundle(stage2.bundle)
    grown = preset("tiny-shapes").replace(cvivit=dataclasses.replace(preset("tiny-shapes").cvivit, pixel_refiner=4))
    cfg = TrainConfig(stage="tokenizer", steps=2, checkpoint_every=2, decoder_only=True, lr=1e-2, **FAST)
    trainer = Trainer(tmp_path / "dec", grown, cfg, init_from=stage2.bundle, progress=False)
    ids = torch.randint(0, grown.cvivit.codebook_size, (1, 3, grown.cvivit.grid_size, grown.cvivit.grid_size))
    assert torch.equal(trainer.model.cvivit.decode_from_ids(ids), before.model.cvivit.decode_from_ids(ids))
    tuned = load_bundle(trainer.run().bundle)
    assert tuned.model.config == grown
    video = torch.rand(2, 3, 17, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(before.model.cvivit.encode_to_ids(video), tuned.model.cvivit.encode_to_ids(video))
    new = tuned.model.state_dict()
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in new.items() if "pixel_refiner.layers.4" in k)
    assert all(torch.equal(v, new[k]) for k, v in before.model.state_dict().items() if k.startswith("maskgit."))
    with pytest.raises(CheckpointError, match="another architecture"):  # anything else still has to match
        other = grown.replace(cvivit=dataclasses.replace(grown.cvivit, pixel_mlp_mult=1))
        Trainer(tmp_path / "other", other, cfg, init_from=stage2.bundle, progress=False)


def test_export_takes_the_decoder_of_a_decoder_only_run(stage2, tmp_path):
    """A --decoder-only run (with a new pixel refiner) of stage 2's tokenizer, put together with the stage-2
    model: the transformer and encoder from one, the decoder from the other; other encoders are refused."""
    grown = preset("tiny-shapes").replace(cvivit=dataclasses.replace(preset("tiny-shapes").cvivit, pixel_refiner=4))
    cfg = TrainConfig(stage="tokenizer", steps=2, checkpoint_every=2, decoder_only=True, lr=1e-2, **FAST)
    donor = Trainer(tmp_path / "dec", grown, cfg, init_from=stage2.bundle, progress=False).run().bundle
    out = tmp_path / "merged.safetensors"
    assert main(["export", str(stage2.bundle), str(out), "--dtype", "fp32", "--decoder-from", str(donor)]) == 0
    merged, decoded, model = load_bundle(out), load_bundle(donor), load_bundle(stage2.bundle)
    assert merged.model.config == grown and merged.extra["history"][-1]["decoder_only"]
    ids = torch.randint(0, grown.cvivit.codebook_size, (1, 3, grown.cvivit.grid_size, grown.cvivit.grid_size))
    assert torch.equal(merged.model.cvivit.decode_from_ids(ids), decoded.model.cvivit.decode_from_ids(ids))
    state = merged.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.model.state_dict().items() if not k.startswith("cvivit."))
    other = load_bundle(stage2.bundle)
    with torch.no_grad():
        other.model.cvivit.to_patch_emb[0].weight.add_(1e-3)  # another encoder: its ids mean other things
    with pytest.raises(CheckpointError, match="encoders differ"):
        with_decoder_from(other, decoded)


def test_cli_pixel_refiner_is_a_tokenizer_option(stage2, tmp_path, capsys):
    assert main(["train", "transformer", str(tmp_path / "t"), "--tokenizer", str(stage2.bundle),
                 "--pixel-refiner", "8", "--steps", "1", "--device", "cpu"]) == 2
    assert "stage 1" in capsys.readouterr().err


def test_decoder_only_needs_a_trained_model_and_the_tokenizer_stage(tmp_path):
    with pytest.raises(ValueError, match="tokenizer stage"):
        TrainConfig(stage="transformer", decoder_only=True)
    with pytest.raises(ValueError, match="init-from"):
        Trainer(tmp_path, preset("tiny-shapes"), TrainConfig(stage="tokenizer", decoder_only=True, **FAST),
                progress=False)


@pytest.mark.parametrize("stage", ["tokenizer", "transformer"])
def test_resume_continues_the_exact_same_trajectory(tmp_path, stage, stage1, minilm):
    cfg = TrainConfig(stage=stage, steps=4, checkpoint_every=2, **FAST)
    extra = {} if stage == "tokenizer" else dict(tokenizer_from=stage1.bundle, text_encoder=minilm)
    straight_losses = []
    Trainer(tmp_path / "a", preset("tiny-shapes"), cfg, progress=False, **extra).run(
        on_step=lambda s, loss: straight_losses.append(loss))

    Trainer(tmp_path / "b", preset("tiny-shapes"), cfg.replace(steps=2), progress=False, **extra).run()
    resumed_losses = []
    extra_resume = {} if stage == "tokenizer" else dict(text_encoder=minilm)
    resumed = Trainer(tmp_path / "b", preset("tiny-shapes"), cfg, progress=False, **extra_resume)
    assert resumed.step == 2
    resumed.run(on_step=lambda s, loss: resumed_losses.append(loss))
    assert resumed_losses == straight_losses[2:]
    a, b = load_train_state(tmp_path / "a" / STATE_FILE), load_train_state(tmp_path / "b" / STATE_FILE)
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    assert all(torch.equal(a.ema[k], b.ema[k]) for k in a.ema)


def test_generate_from_the_trained_bundle_through_the_cli(stage2, tmp_path, capsys):
    out = tmp_path / "story.gif"
    code = main(["generate", "a red circle moving right", "a red circle moving up", "-o", str(out),
                 "--checkpoint", str(stage2.bundle), "--steps", "2", "--frames", "9", "--prime-frames", "5",
                 "--device", "cpu"])
    assert code == 0
    assert Image.open(out).n_frames == 9 + 4
    assert "wrote" in capsys.readouterr().out


def test_batch_mode_writes_frames_and_scene_ranges(stage2, tmp_path):
    batch = tmp_path / "stories.txt"
    batch.write_text("a red circle moving right | a red circle moving up\na blue square growing\n")
    code = main(["generate", "--batch-file", str(batch), "--out-dir", str(tmp_path / "out"), "--seeds", "2",
                 "--checkpoint", str(stage2.bundle), "--steps", "2", "--frames", "9", "--device", "cpu"])
    assert code == 0
    record = json.loads((tmp_path / "out" / "0000_s1.json").read_text())
    assert record["prompts"] == ["a red circle moving right", "a red circle moving up"]
    assert record["scenes"] == [[0, 9], [9, 13]] and record["seed"] == 1
    assert len(list((tmp_path / "out" / "0000_s0").glob("*.png"))) == 13
    assert len(list((tmp_path / "out" / "0001_s0").glob("*.png"))) == 9


def test_pipeline_loads_the_trained_bundle(stage2):
    pipe = PhenakiPipeline.from_checkpoint(stage2.bundle, device="cpu")
    story = pipe.make_video(["a red circle moving right"], num_frames=17)
    assert story.video.shape == (1, 3, 17, 16, 16)


@pytest.mark.parametrize("argv, message", [
    (["generate", "   ", "-o", "x.gif"], "empty"),
    (["generate", "a red circle", "-o", "x.avi"], "unknown output type"),
    (["generate", "a red circle", "-o", "x.gif", "--frames", "8"], r"1 \+ k\*2"),
    (["generate", "a red circle", "a blue box", "-o", "x.gif", "--prime-frames", "4"], "prime"),
    (["generate", "a red circle", "-o", "x.gif", "--checkpoint", "missing.safetensors"], "does not exist"),
    (["generate", "a red circle", "-o", "x.gif", "--checkpoint", "model.pt"], "pickle"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, capsys, stage2, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a if a != "x.gif" else str(tmp_path / "x.gif") for a in argv]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(stage2.bundle)]
    argv += ["--steps", "1", "--device", "cpu"]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert pytest.importorskip("re").search(message, err)


def test_cli_bad_numbers_are_rejected_by_the_parser(capsys):
    for argv in (["generate", "x", "-o", "x.gif", "--steps", "0"], ["generate", "x", "-o", "x.gif", "--cond-scale", "nan"],
                 ["generate", "x", "-o", "x.gif", "--cond-scale", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2


def test_eval_quick_writes_a_report_with_every_section(stage2, tmp_path):
    out = tmp_path / "report.json"
    assert main(["eval", "--checkpoint", str(stage2.bundle), "--quick", "--steps", "2", "--device", "cpu",
                 "--remask", "confidence", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["sampler"]["remask"] == "confidence" and report["sampler"]["steps"] == 2
    for key in ("tokenizer", "canonical", "heldout", "typed", "chains", "diversity", "targets", "ceilings",
                "targets_met"):
        assert key in report
    assert set(report["targets_met"]) == set(report["targets"]) | set(report["ceilings"]) | {"not_collapsed"}
    frames = report["canonical"]["consistency"]  # the generated clips, frame by frame
    assert frames["n"] == report["canonical"]["n"] and 0.0 <= frames["morphing"] <= 1.0
    assert set(report["typed"]["all_three_by_form"]) <= set(TYPED_FORMS)
    for key in ("colour", "shape", "motion", "all_three", "blank"):
        assert 0.0 <= report["canonical"][key] <= 1.0
    canonical = report["canonical"]
    for attribute in ("shape", "motion"):  # what each asked-for value was read as: it adds up to the scores
        table = canonical[f"{attribute}_read_as"]
        assert sum(sum(row.values()) for row in table.values()) == canonical["n"]
        assert sum(row.get(asked, 0) for asked, row in table.items()) / canonical["n"] == pytest.approx(
            canonical[attribute])
    assert report["chains"]["stories"] == 6


def test_eval_prompts_only_measures_just_the_prompts(stage2, tmp_path):
    out = tmp_path / "prompts.json"
    assert main(["eval", "--checkpoint", str(stage2.bundle), "--quick", "--prompts-only", "--steps", "2",
                 "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"canonical", "shades", "heldout", "typed"} <= set(report)
    assert not {"tokenizer", "chains", "diversity"} & set(report)
    assert set(report["targets_met"]) == {"colour", "shape", "motion", "all_three", "heldout_all_three",
                                          "typed_all_three"}
    assert main(["eval", "--checkpoint", str(stage2.bundle), "--prompts-only", "--tokenizer-only"]) == 2


def test_tokenizer_readback_of_a_lossless_tokenizer_reads_the_truth():
    """The readback pairs each reconstruction with its own clip's truth: a tokenizer that returns its
    input reads as the clips' own colour, shape and motion (the judge's ceiling), one that draws nothing
    reads as blank."""
    from types import SimpleNamespace

    from phenaki_core.evaluation.report import tokenizer_quality

    class Lossless:
        model = SimpleNamespace(config=preset("shapes64"))

        def encode_video(self, video):
            return video

        def decode(self, ids):
            return ids * self.gain

    lossless = Lossless()
    lossless.gain = 1.0
    quality = tokenizer_quality(lossless, clips=16)
    read = quality["readback"]
    assert quality["psnr_db"] >= 99 and quality["psnr_independent_db"] >= 99
    assert read["colour"] == 1.0 and read["shape"] == 1.0 and read["motion"] >= 0.85
    assert read["area_ratio_median"] == 1.0 and quality["readback_independent"]["all_three"] == 1.0
    for frames in (quality["consistency"], quality["consistency_independent"]):  # clean clips hold together
        assert frames["frame0_differs"] == frames["morphing"] == frames["halo_pixels_per_frame"] == 0.0
    lossless.gain = 0.0
    quality = tokenizer_quality(lossless, clips=16)
    read = quality["readback"]
    assert quality["psnr_db"] < 20 and read["blank"] == 1.0 and read["all_three"] == 0.0
    assert read["area_ratio_median"] == 0.0


def test_eval_tokenizer_only_measures_stage_1(stage1, tmp_path, monkeypatch):
    def no_text_encoder(*args, **kwargs):
        raise AssertionError("the tokenizer alone needs no text encoder (it may not be installed)")
    monkeypatch.setattr("phenaki_core.pipeline.load_text_encoder", no_text_encoder)
    out = tmp_path / "tok.json"
    assert main(["eval", "--checkpoint", str(stage1.bundle), "--tokenizer-only", "--quick", "--device", "cpu",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"tokenizer", "targets", "ceilings", "targets_met"} and "canonical" not in report
    assert report["tokenizer"]["readback"]["n"] == 16 and report["tokenizer"]["consistency"]["n"] == 16
    assert set(report["targets_met"]) == {"psnr_db", "psnr_independent_db", "tokenizer_frame0_differs",
                                          "tokenizer_morphing"}


@pytest.mark.parametrize("stage", ["tokenizer", "transformer"])
def test_both_stages_train_under_bf16_autocast(stage, stage1, minilm, tmp_path):
    """--precision bf16 (what `auto` picks on CUDA): every op must accept the autocast dtypes."""
    cfg = TrainConfig(stage=stage, steps=2, checkpoint_every=2, precision="bf16", **FAST)
    extra = dict(tokenizer_from=stage1.bundle, text_encoder=minilm) if stage == "transformer" else {}
    result = Trainer(tmp_path, preset("tiny-shapes"), cfg, progress=False, **extra).run()
    assert result.step == 2 and math.isfinite(result.last_loss)
    model = load_bundle(result.bundle).model
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_warm_start_refuses_a_text_encoder_other_than_its_own(stage2, tmp_path):
    class OtherEncoder:
        spec = TextEncoderSpec("another-encoder", 384)

    with pytest.raises(CheckpointError, match="another-encoder"):
        Trainer(tmp_path / "other", preset("tiny-shapes"), TrainConfig(stage="transformer", steps=1, **FAST),
                init_from=stage2.bundle, text_encoder=OtherEncoder(), progress=False)


def logged(run, key: str) -> list[float]:
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_longer_run_of_both_stages_learns(tmp_path, minilm):
    """120 steps of each stage on Shapes World (tiny-shapes): the tokenizer's reconstruction error and
    MaskGit's masked-token loss fall to a fraction of where they start, and the result generates."""
    longer = dict(steps=120, batch_size=8, warmup_steps=10, lr=3e-3, log_every=10, checkpoint_every=120,
                  preview_every=1000)
    tok = Trainer(tmp_path / "tok", preset("tiny-shapes"), TrainConfig(stage="tokenizer", **longer),
                  progress=False).run()
    recon = logged(tok.run_dir, "recon")
    assert len(recon) == 12 and sum(recon[-3:]) / 3 < 0.3 * recon[0], recon
    t2v = Trainer(tmp_path / "t2v", preset("tiny-shapes"), TrainConfig(stage="transformer", **longer),
                  tokenizer_from=tok.bundle, text_encoder=minilm, progress=False).run()
    token, critic = logged(t2v.run_dir, "token"), logged(t2v.run_dir, "critic")
    assert sum(token[-3:]) / 3 < 0.35 * token[0], token
    assert all(math.isfinite(c) for c in critic), critic
    pipe = PhenakiPipeline.from_checkpoint(t2v.bundle, device="cpu", dtype="fp32")
    video = pipe.make_video(["a red circle moving right", "a red circle moving up"], num_frames=17).video
    assert video.shape == (1, 3, 29, 16, 16) and torch.isfinite(video).all()
