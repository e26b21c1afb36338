"""Parity with phenaki-pytorch 0.5.0: same weights, same outputs within 1e-5 (fp32).

The fixture comes from scripts/make_peer_fixtures.py, run where the peer is installed, so this
test needs no peer install. See tests/fixtures/README.md.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from phenaki_core import CriticConfig, MaskGit, MaskGitConfig, SelfCritic, TokenCritic
from phenaki_core.convert import convert_peer_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "peer_parity.safetensors"
ATOL = 1e-5


@pytest.fixture(scope="module")
def fixture():
    with safe_open(str(FIXTURE), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        meta = json.loads(handle.metadata()["peer_parity"])
    return tensors, meta


def part(tensors, prefix):
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def maskgit_from(tensors, case, kwargs):
    config = MaskGitConfig(dim=kwargs["dim"], depth=kwargs["depth"], heads=kwargs["heads"],
                           dim_head=kwargs["dim_head"], num_tokens=kwargs["num_tokens"],
                           max_seq_len=kwargs["max_seq_len"], text_dim=kwargs.get("dim_context", 24),
                           unconditional=kwargs.get("unconditional", False))
    model = MaskGit(config).eval()
    model.load_state_dict(convert_peer_state_dict(part(tensors, f"{case}.state.")), strict=True)
    return model


def critic_from(tensors, case, kwargs):
    config = CriticConfig(kind="token", dim=kwargs["dim"], depth=kwargs["depth"], heads=kwargs["heads"],
                          dim_head=kwargs["dim_head"], has_cross_attn=kwargs.get("has_cross_attn", False))
    text_dim = kwargs.get("dim_context") if config.has_cross_attn else None
    model = TokenCritic(config, num_tokens=kwargs["num_tokens"], max_seq_len=kwargs["max_seq_len"],
                        text_dim=text_dim).eval()
    model.load_state_dict(convert_peer_state_dict(part(tensors, f"{case}.state.")), strict=True)
    return model


def close(ours, theirs):
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < ATOL


def test_maskgit_conditional_matches_peer(fixture):
    tensors, meta = fixture
    model = maskgit_from(tensors, "A", meta["cases"]["A"]["kwargs"])
    inp, out = part(tensors, "A.input."), part(tensors, "A.output.")
    cond = dict(text_embeds=inp["context"], video_mask=inp["video_mask"])
    with torch.no_grad():
        close(model(inp["ids"], text_mask=inp["text_mask"], **cond), out["logits_cond"])
        # the peer's cond_drop_prob=1: every text token masked, only null key/values left
        close(model(inp["ids"], text_mask=torch.zeros_like(inp["text_mask"]), **cond), out["logits_null"])
        close(model(inp["ids"], text_mask=inp["text_mask"], return_embeds=True, **cond), out["embeds"])
        close(model(inp["ids"], text_embeds=inp["context"], text_mask=inp["text_mask"]),
              out["logits_cond_no_video_mask"])


def test_unconditional_maskgit_matches_peer(fixture):
    tensors, meta = fixture
    model = maskgit_from(tensors, "B", {**meta["cases"]["B"]["kwargs"], "unconditional": True})
    inp, out = part(tensors, "B.input."), part(tensors, "B.output.")
    with torch.no_grad():
        close(model(inp["ids"]), out["logits"])
        close(model(inp["ids"], video_mask=inp["video_mask"]), out["logits_video_mask"])


@pytest.mark.parametrize("case", ["C", "C2"])
def test_token_critic_matches_peer(fixture, case):
    tensors, meta = fixture
    kwargs = meta["cases"][case]["kwargs"]
    model = critic_from(tensors, case, kwargs)
    inp, out = part(tensors, f"{case}.input."), part(tensors, f"{case}.output.")
    shape = (3, 4, 4)
    text = dict(text_embeds=inp["context"], text_mask=inp["text_mask"]) if "context" in inp else {}
    with torch.no_grad():
        close(model(inp["ids"], token_shape=shape, **text), out["logits"])
        close(model(inp["ids"], token_shape=shape, video_mask=inp["video_mask"], **text), out["logits_video_mask"])
        if "logits_null" in out:
            null = dict(text_embeds=inp["context"], text_mask=torch.zeros_like(inp["text_mask"]))
            close(model(inp["ids"], token_shape=shape, **null), out["logits_null"])


def test_self_critic_matches_peer(fixture):
    tensors, meta = fixture
    maskgit = maskgit_from(tensors, "A", meta["cases"]["A"]["kwargs"])
    critic = SelfCritic(maskgit).eval()
    critic.load_state_dict(convert_peer_state_dict(part(tensors, "D.state.")), strict=True)
    inp, out = part(tensors, "A.input."), part(tensors, "D.output.")
    with torch.no_grad():
        cond = dict(text_embeds=inp["context"], video_mask=inp["video_mask"])
        close(critic(inp["ids"], text_mask=inp["text_mask"], **cond), out["pred_cond"])
        close(critic(inp["ids"], text_mask=torch.zeros_like(inp["text_mask"]), **cond), out["pred_null"])


def test_parity_fixture_is_not_trivially_matched(fixture):
    """Sanity: a wrong null key/value layout must break parity, so the test above can fail."""
    tensors, meta = fixture
    model = maskgit_from(tensors, "A", meta["cases"]["A"]["kwargs"])
    inp, out = part(tensors, "A.input."), part(tensors, "A.output.")
    with torch.no_grad():
        for layer in model.transformer.layers:
            nkv = layer.cross_attn.null_kv
            nkv.copy_(torch.cat((nkv[:, 1::2], nkv[:, 0::2]), dim=1))  # swap keys and values
        ours = model(inp["ids"], text_embeds=inp["context"], text_mask=torch.zeros_like(inp["text_mask"]),
                     video_mask=inp["video_mask"])
    assert (ours - out["logits_null"]).abs().max() > 1e-3
