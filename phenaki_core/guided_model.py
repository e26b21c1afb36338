"""A Phenaki model bound to one sample: everything fixed during the sample, computed once.

``GuidedModel`` holds the prime's ids, the text rows of classifier-free guidance ([cond; uncond]
as one batch), their cross-attention keys/values, and the position bias. Its callbacks are what
``sampling.sample_tokens`` calls at every step:

- ``logits(ids, positions)``: one batched forward of both guidance rows, the guidance combined in
  hidden space (the logits head is affine, so ``head(u + s (c - u)) == head(u) + s (head(c) - head(u))``)
  and the head applied at the masked positions only: b x k rows, not 2b x n.
- ``critic(ids)``: the critic's scores, guided the same way (in score space: it is one number).

``guided.sample_ids`` runs the loop over it eagerly; ``cuda_graphs`` records it as CUDA graphs.
"""

from __future__ import annotations

from typing import Optional

import torch

from .kernels import wants_flex
from .maskgit import SelfCritic
from .text_condition import TextCondition


class GuidedModel:
    """A Phenaki model bound to one sample's text, prime and token grid (see the module doc)."""

    def __init__(self, model, text: Optional[TextCondition], negative: Optional[TextCondition],
                 prime_ids: Optional[torch.Tensor], token_shape: tuple[int, int, int], cond_scale: float,
                 attention: str = "auto"):
        maskgit = model.maskgit
        device, dtype = model.device, maskgit.to_logits.weight.dtype
        self.maskgit, self.critic_net = maskgit, model.critic
        self.token_shape = token_shape
        self.cond_scale = cond_scale
        self.guided = text is not None and cond_scale != 1.0
        rows = 2 if self.guided else 1
        self.prime = None if prime_ids is None else prime_ids.flatten(1).to(device).long().repeat(rows, 1)
        self.n_prime = 0 if prime_ids is None else prime_ids[0].numel()

        self.text_embeds = self.text_mask = None
        if text is not None:
            if self.guided:  # rows [cond; uncond] run as one batch
                text = TextCondition.cat([text, negative if negative is not None else text.dropped()])
            text = text.to(device)
            self.text_embeds, self.text_mask = text.embeds.to(dtype), text.mask
        # fixed for the whole sample: computed once, in the weights' dtype
        self.bias = maskgit.relative_bias(token_shape, flex=wants_flex(attention, device)).to(dtype)
        if not self.bias.flex:
            self.bias.dense()  # h n n, built once for every step and layer
        self.text_kvs = maskgit.text_kvs(self.text_embeds) if self.text_embeds is not None else None
        self.critic_kvs = None
        if self.critic_net is not None and self.text_embeds is not None:
            self.critic_kvs = (self.text_kvs if isinstance(self.critic_net, SelfCritic)
                               else self.critic_net.text_kvs(self.text_embeds))

    def _rows(self, ids: torch.Tensor) -> torch.Tensor:
        """b n new ids -> rows (n_prime + n): guidance rows stacked, the prime prepended."""
        ids = torch.cat((ids, ids)) if self.guided else ids
        return ids if self.prime is None else torch.cat((self.prime, ids), dim=1)

    def _combine(self, out: torch.Tensor) -> torch.Tensor:
        """rows ... -> b ...: cond + guidance away from uncond, in float32."""
        if not self.guided:
            return out.float()
        cond, null = out.float().chunk(2)
        return null + (cond - null) * self.cond_scale

    def logits(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Guided logits (b k V) at ``positions`` (b k) of the new tokens ``ids`` (b n)."""
        hidden = self.maskgit(self._rows(ids), text_mask=self.text_mask, token_shape=self.token_shape,
                              attn_bias=self.bias, text_kvs=self.text_kvs, text_embeds=self.text_embeds,
                              return_embeds=True)  # rows (n_prime + n) d
        rows = hidden.shape[0]
        index = (positions + self.n_prime).repeat(rows // positions.shape[0], 1)  # rows k
        picked = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))  # rows k d
        return self.maskgit.to_logits(self._combine(picked).to(hidden.dtype))  # b k V

    def critic(self, ids: torch.Tensor) -> torch.Tensor:
        """Guided critic scores (b n) of the new tokens (high = looks sampled)."""
        extra = {"attn_bias": self.bias} if isinstance(self.critic_net, SelfCritic) else {}
        scores = self.critic_net(self._rows(ids), text_embeds=self.text_embeds, text_mask=self.text_mask,
                                 token_shape=self.token_shape, text_kvs=self.critic_kvs, **extra)
        return self._combine(scores[:, self.n_prime:])
