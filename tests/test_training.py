"""The stage-2 training forward: CFG dropout, masking of valid tokens only, critic labels, params."""

import json

import pytest
import torch

from phenaki_core import CriticConfig, InputError

from helpers import build_tiny, random_text


def ids_for(model, batch=4, seed=0):
    cfg = model.config.cvivit
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.codebook_size, (batch, 5, cfg.grid_size, cfg.grid_size), generator=g)


def test_cfg_dropout_really_drops_the_text_of_some_rows():
    model = build_tiny()
    ids, text = ids_for(model, batch=64), random_text(64)
    out = model(ids, text=text, cond_drop_prob=0.5, generator=torch.Generator().manual_seed(0))
    dropped = out.cond_dropped
    assert 10 < dropped.sum() < 54, "with p=0.5 about half of 64 rows must be dropped"

    # A dropped row's prediction must not depend on its text at all; a kept row's must.
    seen = {}

    def capture(module, args, kwargs, output):
        seen["text_mask"] = kwargs["text_mask"]

    handle = model.maskgit.register_forward_hook(capture, with_kwargs=True)
    model(ids, text=text, cond_drop_prob=0.5, generator=torch.Generator().manual_seed(0))
    handle.remove()
    assert not seen["text_mask"][dropped].any(), "dropped rows must see no text token"
    assert seen["text_mask"][~dropped].all(), "kept rows must see their whole text"


@pytest.mark.parametrize("p, expected", [(0.0, 0), (1.0, 16)])
def test_cfg_dropout_probability_extremes(p, expected):
    model = build_tiny()
    out = model(ids_for(model, 16), text=random_text(16), cond_drop_prob=p, generator=torch.Generator().manual_seed(1))
    assert int(out.cond_dropped.sum()) == expected


def test_default_cond_drop_prob_comes_from_the_config_and_is_not_zero():
    model = build_tiny()
    assert model.config.loss.cond_drop_prob == 0.25
    out = model(ids_for(model, 200), text=random_text(200), generator=torch.Generator().manual_seed(2))
    assert 20 < out.cond_dropped.sum() < 80


def test_masks_only_land_on_valid_tokens():
    model = build_tiny()
    ids = ids_for(model, 8)
    frame_mask = torch.ones(8, 9, dtype=torch.bool)
    frame_mask[:, 5:] = False  # last two tubelets are padding
    for seed in range(5):
        out = model(ids, text=random_text(8), video_frame_mask=frame_mask, generator=torch.Generator().manual_seed(seed))
        token_mask = out.token_mask.view(8, 5, -1)
        assert not token_mask[:, 3:].any(), "a masked position landed on a padded frame"
        assert token_mask[:, :3].flatten(1).sum(-1).min() >= 1


def test_cosine_schedule_masks_between_one_and_all_tokens():
    model = build_tiny()
    out = model(ids_for(model, 256), text=random_text(256), generator=torch.Generator().manual_seed(3))
    counts = out.token_mask.sum(-1).float()
    assert counts.min() >= 1 and counts.max() <= 20
    # cos(pi/2 r), r ~ U[0,1): mean fraction 2/pi
    assert abs(counts.mean().item() / 20 - 2 / torch.pi) < 0.06


def test_critic_labels_mark_exactly_the_replaced_tokens():
    model = build_tiny()
    ids = ids_for(model, 6)
    seen = {}
    model.critic.register_forward_hook(lambda m, a, o: seen.setdefault("input", a[0]))
    out = model(ids, text=random_text(6), generator=torch.Generator().manual_seed(4))
    critic_input = seen["input"]
    flat = ids.flatten(1)
    labels = out.critic_labels.bool()
    assert torch.equal(labels, critic_input != flat), "label 1 exactly where the critic sees a non-original token"
    assert not labels[~out.token_mask].any(), "unmasked positions keep the real token and are labelled real"
    assert labels.any()


def test_parameter_set_includes_the_critic_and_both_are_trained():
    for kind in ("token", "self"):
        model = build_tiny(critic=CriticConfig(kind=kind, dim=32, depth=1, heads=2, dim_head=16)).train()
        names = {n for n, _ in model.named_parameters()}
        assert any(n.startswith("critic.") for n in names)
        trainable = {id(p) for p in model.transformer_parameters()}
        assert all(id(p) in trainable for p in model.critic.parameters())
        assert not any(id(p) in trainable for p in model.cvivit.parameters()), "the tokenizer stays frozen"
        out = model(ids_for(model), text=random_text(4), generator=torch.Generator().manual_seed(5))
        out.loss.backward()
        assert out.critic_loss is not None and out.token_loss is not None
        assert all(p.grad is not None for p in model.critic.parameters())
        assert model.maskgit.to_logits.weight.grad is not None


def test_training_bad_inputs():
    model = build_tiny()
    with pytest.raises(InputError, match=r"video_ids must be \(batch, token_frames"):
        model(torch.zeros(2, 12, dtype=torch.long), text=random_text(2))
    with pytest.raises(InputError, match="text-conditioned"):
        model(ids_for(model, 2))
    with pytest.raises(InputError, match="dimension 7"):
        model(ids_for(model, 2), text=random_text(2, dim=7))
    with pytest.raises(InputError, match="3 text rows"):
        model(ids_for(model, 2), text=random_text(3))


def test_training_is_seedable():
    model = build_tiny()
    a = model(ids_for(model), text=random_text(4), generator=torch.Generator().manual_seed(9))
    b = model(ids_for(model), text=random_text(4), generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.loss, b.loss) and torch.equal(a.token_mask, b.token_mask)


def test_foreground_weight_counts_object_errors_more():
    from phenaki_core import Phenaki, preset
    tok = Phenaki(preset("tiny-shapes")).cvivit
    video = torch.zeros(1, 3, 9, 16, 16)
    video[:, 0, :, 4:8, 4:8] = 0.9  # a red square on black
    plain = tok(video).recon_loss
    assert torch.equal(tok(video, foreground_weight=0.0).recon_loss, plain)
    weighted = tok(video, foreground_weight=10.0).recon_loss
    # weighted mean: the 16 object pixels of each frame weigh 11x; the value equals the hand formula
    recon = tok(video).reconstruction
    weight = 1 + 10 * (video.amax(1, keepdim=True) > 0.1).float()
    expected = (((recon - video) ** 2) * weight).sum() / (weight.sum() * 3)
    assert torch.allclose(weighted, expected) and not torch.allclose(weighted, plain)


def test_halo_weight_counts_colour_drawn_on_the_background_more():
    from phenaki_core import Phenaki, preset
    tok = Phenaki(preset("tiny-shapes")).cvivit
    video = torch.zeros(1, 3, 9, 16, 16)
    video[:, 0, :, 4:8, 4:8] = 0.9
    recon = tok(video).reconstruction
    target_fg = video.amax(1, keepdim=True) > 0.1
    halo = (recon.amax(1, keepdim=True) > 0.1) & ~target_fg
    assert halo.any(), "the untrained tokenizer should draw some colour on the background"
    weight = 1 + 10 * target_fg.float() + 4 * halo.float()
    expected = (((recon - video) ** 2) * weight).sum() / (weight.sum() * 3)
    got = tok(video, foreground_weight=10.0, halo_weight=4.0).recon_loss
    assert torch.allclose(got, expected)
    assert not torch.allclose(got, tok(video, foreground_weight=10.0).recon_loss)


def test_resume_drops_metrics_logged_after_the_last_checkpoint(tmp_path):
    from phenaki_core import preset
    from phenaki_core.training import TrainConfig, Trainer
    cfg = TrainConfig(stage="tokenizer", steps=2, batch_size=2, warmup_steps=1, log_every=1, checkpoint_every=2,
                      preview_every=1000)
    Trainer(tmp_path, preset("tiny-shapes"), cfg, progress=False).run()
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:  # a killed run got further
        f.write('{"step": 3, "loss": 1.0}\n{"step": 4, "lo')
    Trainer(tmp_path, preset("tiny-shapes"), cfg.replace(steps=3), progress=False).run()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_stop_at_checkpoints_mid_schedule_and_a_resumed_run_goes_on_exactly(tmp_path):
    from phenaki_core import ConfigError, preset
    from phenaki_core.checkpoint import load_bundle
    from phenaki_core.training import TrainConfig, Trainer
    cfg = TrainConfig(stage="tokenizer", steps=4, batch_size=2, warmup_steps=1, log_every=1, checkpoint_every=100,
                      preview_every=1000)
    whole = Trainer(tmp_path / "whole", preset("tiny-shapes"), cfg, progress=False).run()
    stopped = Trainer(tmp_path / "split", preset("tiny-shapes"), cfg, progress=False).run(stop_at=2)
    assert stopped.step == 2
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    whole_lrs = [json.loads(line)["lr"] for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert lrs == whole_lrs[:2], "stopping early must not shorten the schedule"
    resumed = Trainer(tmp_path / "split", preset("tiny-shapes"), cfg, progress=False).run()
    assert resumed.step == whole.step == 4
    a, b = load_bundle(whole.bundle).model.state_dict(), load_bundle(resumed.bundle).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="stop_at"):
        Trainer(tmp_path / "bad", preset("tiny-shapes"), cfg, progress=False).run(stop_at=0)
