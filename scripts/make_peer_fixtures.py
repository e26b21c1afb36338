#!/usr/bin/env python3
"""Generate tests/fixtures/peer_parity.safetensors from the reference implementation.

The reference ("peer") is phenaki-pytorch 0.5.0. It is NOT a dependency of this project:
run this script by hand in a separate Python environment that has
``phenaki-pytorch==0.5.0`` and ``torchvision==0.28.0`` installed next to torch, e.g.

    /path/to/venv-with-peer/bin/python scripts/make_peer_fixtures.py

CI only reads the committed fixture file. See tests/fixtures/README.md for what the file
contains and the peer quirks a reimplementation must replicate.

The script is deterministic: fixed seeds, one CPU thread, fp32, eval mode, and a single
metadata entry (so the safetensors header does not depend on hash-map ordering).
Running it twice on the same machine gives a byte-identical file.

No network is used: ``Phenaki`` (fetches a T5 config) and ``CViViT`` (downloads VGG16)
are never constructed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import torch

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "peer_parity.safetensors"
METADATA_KEY = "peer_parity"
PEER_DIST = "phenaki-pytorch"
EXPECTED_PEER_VERSION = "0.5.0"

# ---------------------------------------------------------------------------------------
# importing the peer on a CPU-only torch
# ---------------------------------------------------------------------------------------

_OP_MISSING = re.compile(r"operator torchvision::(\w+) does not exist")
_TV_LIB = None  # keep the Library object alive; its definitions vanish when it is collected


def _missing_torchvision_op(exc: BaseException | None) -> str | None:
    """Walk the exception chain (transformers re-raises it wrapped) for the missing op name."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        match = _OP_MISSING.search(str(exc))
        if match:
            return match.group(1)
        exc = exc.__cause__ or exc.__context__
    return None


def import_peer():
    """Import phenaki_pytorch, defining dummy torchvision operators as long as they are missing.

    The PyPI torchvision cannot load its compiled ops next to a CPU-only torch, so its Python
    side (e.g. the fake-kernel registrations) fails with ``operator torchvision::nms does not
    exist``. Only pure-Python parts of the peer are used here, so dummy schemas suffice.
    """
    global _TV_LIB
    defined: list[str] = []
    if importlib.util.find_spec("cv2") is None:
        # the peer's package __init__ imports its data module, which imports OpenCV; nothing
        # measured or converted here uses it, so a GPU box without OpenCV gets an empty stand-in
        import types
        sys.modules["cv2"] = types.ModuleType("cv2")
    for module_name in ("torchvision", "phenaki_pytorch"):
        while True:
            try:
                importlib.import_module(module_name)
                break
            except Exception as exc:  # RuntimeError, or ModuleNotFoundError wrapping it
                op = _missing_torchvision_op(exc)
                if op is None or op in defined:
                    raise
                if _TV_LIB is None:
                    _TV_LIB = torch.library.Library("torchvision", "FRAGMENT")
                _TV_LIB.define(f"{op}(Tensor x) -> Tensor")
                defined.append(op)
                # drop half-imported modules so the retry starts clean
                for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "phenaki_pytorch")]:
                    del sys.modules[name]
    import phenaki_pytorch.phenaki_pytorch as peer

    return peer, defined


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.2) -> list[str]:
    """Add noise to every parameter that is constant at init (ones / zeros).

    That covers the custom LayerNorm ``gamma``, nn.LayerNorm ``weight``/``bias`` in the
    feed-forwards, and the attention ``q_scale``/``k_scale``. Parameters that are already
    random at init (Linear/Conv weights and biases, embeddings, ``null_kv``) are left as is.
    The only buffers in the state dicts are the bias-less LayerNorm ``beta`` buffers: they
    stay exactly zero (the peer never trains them).
    """
    gen = torch.Generator().manual_seed(seed)
    touched = []
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.numel() == 0:
                continue
            flat = p.reshape(-1)
            if bool((flat == flat[0]).all()) and float(flat[0]) in (0.0, 1.0):
                p.add_(torch.randn(p.shape, generator=gen) * scale)
                touched.append(name)
        param_names = {n for n, _ in module.named_parameters()}
        for name, b in module.state_dict().items():
            if name in param_names:
                continue
            assert name.endswith(".beta"), f"unexpected buffer in state dict: {name}"
            assert bool((b == 0).all()), f"beta buffer {name} is not zero"
    return touched


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def f32(t: torch.Tensor) -> torch.Tensor:
    assert t.dtype == torch.float32, t.dtype
    return t.detach().clone().contiguous()


def make_inputs(seed: int, *, num_tokens: int, mask_id: int, shape=(2, 3, 4, 4), text_len=5, dim_context=24):
    gen = torch.Generator().manual_seed(seed)
    b = shape[0]
    n = shape[1] * shape[2] * shape[3]
    ids = torch.randint(0, num_tokens, shape, generator=gen)
    masked = torch.rand(shape, generator=gen) < 0.3
    ids = ids.masked_fill(masked, mask_id)
    context = torch.randn(b, text_len, dim_context, generator=gen)
    text_mask = torch.ones(b, text_len, dtype=torch.bool)
    text_mask[1, -2:] = False  # second row: last 2 text positions are padding
    video_mask = torch.ones(b, n, dtype=torch.bool)
    video_mask[1, -16:] = False  # second row: last frame (16 tokens) is padding
    return ids, context, text_mask, video_mask


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------


def build(peer) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    meta_cases: dict[str, dict] = {}

    def put(prefix: str, d: dict[str, torch.Tensor]):
        for k, v in d.items():
            key = f"{prefix}.{k}"
            assert key not in tensors, key
            tensors[key] = v

    num_tokens = 64
    mask_id = num_tokens
    video_patch_shape = (3, 4, 4)

    # ---- case A: conditional MaskGit --------------------------------------------------
    a_kwargs = dict(dim=32, num_tokens=num_tokens, max_seq_len=64, heads=2, dim_head=16, depth=2, dim_context=24)
    torch.manual_seed(1001)
    maskgit = peer.MaskGit(**a_kwargs).eval()
    a_perturbed = perturb_(maskgit, seed=1002)
    ids, context, text_mask, video_mask = make_inputs(1003, num_tokens=num_tokens, mask_id=mask_id)
    with torch.no_grad():
        common = dict(context=context, text_mask=text_mask, video_mask=video_mask)
        a_out = {
            "logits_cond": f32(maskgit(ids, cond_drop_prob=0.0, **common)),
            "logits_null": f32(maskgit(ids, cond_drop_prob=1.0, **common)),
            "embeds": f32(maskgit(ids, cond_drop_prob=0.0, return_embeds=True, **common)),
            "logits_cond_no_video_mask": f32(
                maskgit(ids, context=context, text_mask=text_mask, cond_drop_prob=0.0)
            ),
        }
    a_state = state_of(maskgit)
    put("A.state", a_state)
    put("A.input", {"ids": ids, "context": context, "text_mask": text_mask, "video_mask": video_mask})
    put("A.output", a_out)
    meta_cases["A"] = {
        "class": "phenaki_pytorch.phenaki_pytorch.MaskGit",
        "kwargs": a_kwargs,
        "perturbed_params": a_perturbed,
        "calls": {
            "logits_cond": "maskgit(ids, context=context, text_mask=text_mask, video_mask=video_mask, cond_drop_prob=0.)",
            "logits_null": "maskgit(ids, context=context, text_mask=text_mask, video_mask=video_mask, cond_drop_prob=1.)",
            "embeds": "maskgit(ids, context=context, text_mask=text_mask, video_mask=video_mask, cond_drop_prob=0., return_embeds=True)",
            "logits_cond_no_video_mask": "maskgit(ids, context=context, text_mask=text_mask, cond_drop_prob=0.)",
        },
        "video_patch_shape": list(video_patch_shape),
    }

    # ---- case B: unconditional MaskGit ------------------------------------------------
    b_kwargs = dict(dim=32, num_tokens=num_tokens, max_seq_len=64, heads=2, dim_head=16, depth=2, unconditional=True)
    torch.manual_seed(2001)
    maskgit_u = peer.MaskGit(**b_kwargs).eval()
    b_perturbed = perturb_(maskgit_u, seed=2002)
    ids_b, _, _, video_mask_b = make_inputs(2003, num_tokens=num_tokens, mask_id=mask_id)
    with torch.no_grad():
        b_out = {
            "logits": f32(maskgit_u(ids_b)),
            "logits_video_mask": f32(maskgit_u(ids_b, video_mask=video_mask_b)),
        }
    put("B.state", state_of(maskgit_u))
    put("B.input", {"ids": ids_b, "video_mask": video_mask_b})
    put("B.output", b_out)
    meta_cases["B"] = {
        "class": "phenaki_pytorch.phenaki_pytorch.MaskGit",
        "kwargs": b_kwargs,
        "perturbed_params": b_perturbed,
        "calls": {
            "logits": "maskgit(ids)",
            "logits_video_mask": "maskgit(ids, video_mask=video_mask)",
        },
        "video_patch_shape": list(video_patch_shape),
    }

    # ---- case C: TokenCritic with cross attention ----------------------------------------
    c_kwargs = dict(
        dim=32, num_tokens=num_tokens, max_seq_len=64, heads=2, dim_head=16, depth=2, has_cross_attn=True, dim_context=24
    )
    torch.manual_seed(3001)
    critic = peer.TokenCritic(**c_kwargs).eval()
    c_perturbed = perturb_(critic, seed=3002)
    ids_c4, context_c, text_mask_c, video_mask_c = make_inputs(3003, num_tokens=num_tokens, mask_id=mask_id)
    ids_c = ids_c4.reshape(ids_c4.shape[0], -1).contiguous()  # flat (2, 48)
    with torch.no_grad():
        common = dict(video_patch_shape=video_patch_shape, context=context_c, text_mask=text_mask_c)
        c_out = {
            "logits": f32(critic(ids_c, cond_drop_prob=0.0, **common)),
            "logits_video_mask": f32(critic(ids_c, cond_drop_prob=0.0, video_mask=video_mask_c, **common)),
            "logits_null": f32(critic(ids_c, cond_drop_prob=1.0, **common)),
        }
    put("C.state", state_of(critic))
    put("C.input", {"ids": ids_c, "context": context_c, "text_mask": text_mask_c, "video_mask": video_mask_c})
    put("C.output", c_out)
    meta_cases["C"] = {
        "class": "phenaki_pytorch.phenaki_pytorch.TokenCritic",
        "kwargs": c_kwargs,
        "perturbed_params": c_perturbed,
        "calls": {
            "logits": "critic(ids, video_patch_shape=(3,4,4), context=context, text_mask=text_mask, cond_drop_prob=0.)",
            "logits_video_mask": "critic(ids, video_patch_shape=(3,4,4), context=context, text_mask=text_mask, video_mask=video_mask, cond_drop_prob=0.)",
            "logits_null": "critic(ids, video_patch_shape=(3,4,4), context=context, text_mask=text_mask, cond_drop_prob=1.)",
        },
        "video_patch_shape": list(video_patch_shape),
    }

    # ---- case C2: TokenCritic without cross attention -----------------------------------
    c2_kwargs = dict(dim=32, num_tokens=num_tokens, max_seq_len=64, heads=2, dim_head=16, depth=2, has_cross_attn=False)
    torch.manual_seed(4001)
    critic_u = peer.TokenCritic(**c2_kwargs).eval()
    c2_perturbed = perturb_(critic_u, seed=4002)
    ids_c24, _, _, video_mask_c2 = make_inputs(4003, num_tokens=num_tokens, mask_id=mask_id)
    ids_c2 = ids_c24.reshape(ids_c24.shape[0], -1).contiguous()
    with torch.no_grad():
        c2_out = {
            "logits": f32(critic_u(ids_c2, video_patch_shape=video_patch_shape)),
            "logits_video_mask": f32(critic_u(ids_c2, video_patch_shape=video_patch_shape, video_mask=video_mask_c2)),
        }
    put("C2.state", state_of(critic_u))
    put("C2.input", {"ids": ids_c2, "video_mask": video_mask_c2})
    put("C2.output", c2_out)
    meta_cases["C2"] = {
        "class": "phenaki_pytorch.phenaki_pytorch.TokenCritic",
        "kwargs": c2_kwargs,
        "perturbed_params": c2_perturbed,
        "calls": {
            "logits": "critic(ids, video_patch_shape=(3,4,4))",
            "logits_video_mask": "critic(ids, video_patch_shape=(3,4,4), video_mask=video_mask)",
        },
        "video_patch_shape": list(video_patch_shape),
    }

    # ---- case D: SelfCritic wrapping the case-A MaskGit ----------------------------------
    torch.manual_seed(5001)
    self_critic = peer.SelfCritic(maskgit).eval()
    d_perturbed = perturb_(self_critic, seed=5002)
    assert d_perturbed == [], d_perturbed  # to_pred is random at init; maskgit was perturbed in A
    d_state = state_of(self_critic)
    for k, v in a_state.items():  # the wrapped MaskGit is the case-A one, unchanged
        assert torch.equal(d_state[f"maskgit.{k}"], v), k
    with torch.no_grad():
        common = dict(context=context, text_mask=text_mask, video_mask=video_mask)
        d_out = {
            "pred_cond": f32(self_critic(ids, cond_drop_prob=0.0, **common)),
            "pred_null": f32(self_critic(ids, cond_drop_prob=1.0, **common)),
        }
    # to keep the file small only the SelfCritic's own head is stored; its maskgit.* weights
    # are exactly A.state.* (peer key "maskgit.<k>" == A.state.<k>)
    put("D.state", {k: v for k, v in d_state.items() if not k.startswith("maskgit.")})
    put("D.output", d_out)
    meta_cases["D"] = {
        "class": "phenaki_pytorch.phenaki_pytorch.SelfCritic",
        "kwargs": {"maskgit": "the case-A MaskGit (weights A.state.*)"},
        "perturbed_params": d_perturbed,
        "inputs": "same as A.input.* (ids, context, text_mask, video_mask)",
        "stored_state_note": "D.state holds only the head (to_pred.*); the peer's full SelfCritic state dict also has maskgit.<k> == A.state.<k> for every A key",
        "calls": {
            "pred_cond": "self_critic(ids, context=context, text_mask=text_mask, video_mask=video_mask, cond_drop_prob=0.)",
            "pred_null": "self_critic(ids, context=context, text_mask=text_mask, video_mask=video_mask, cond_drop_prob=1.)",
        },
    }

    # state-key lists, in the peer's state_dict order (the file itself sorts keys)
    meta_cases["A"]["state_keys"] = list(a_state.keys())
    meta_cases["B"]["state_keys"] = list(maskgit_u.state_dict().keys())
    meta_cases["C"]["state_keys"] = list(critic.state_dict().keys())
    meta_cases["C2"]["state_keys"] = list(critic_u.state_dict().keys())
    meta_cases["D"]["state_keys"] = list(d_state.keys())
    meta_cases["D"]["stored_state_keys"] = [k for k in d_state if not k.startswith("maskgit.")]

    return tensors, meta_cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)

    peer, defined_ops = import_peer()
    from safetensors.torch import save_file

    peer_version = importlib.metadata.version(PEER_DIST)
    if peer_version != EXPECTED_PEER_VERSION:
        print(f"warning: expected {PEER_DIST}=={EXPECTED_PEER_VERSION}, found {peer_version}", file=sys.stderr)

    tensors, cases = build(peer)

    meta = {
        "format_version": 1,
        "peer": {"distribution": PEER_DIST, "version": peer_version},
        "torch_version": torch.__version__,
        "torchvision_version": importlib.metadata.version("torchvision"),
        "dtype": "float32",
        "device": "cpu",
        "mode": "eval (dropout off), torch.no_grad()",
        "bool_tensors": "text_mask / video_mask are stored as bool (True = keep)",
        "id_tensors": "ids are int64; mask id = num_tokens = 64",
        "cases": cases,
    }
    metadata = {METADATA_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":"))}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=metadata)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({len(tensors)} tensors, {size} bytes); dummy torchvision ops: {defined_ops}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
