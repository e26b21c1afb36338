"""A whole guided sample replayed as CUDA graphs (``sample_ids(..., compile=True)`` on CUDA).

The sampler has no host-device sync and no data-dependent shape (``sampling``), and its noise is
a hash of a seed tensor, so the whole program can be recorded once and replayed: one graph
prepares the sample (guidance rows, text keys/values, position bias), then one graph per step.
A replay launches no kernels from Python: the per-kernel launch cost, which dominates small
batches, is gone. Seeds reproduce: the seed is copied into the recorded program's input.

Graphs are cached per model and per input geometry (batch, token grid, text length, prime,
sampler settings, attention); the first call of a geometry runs eagerly once (warm-up, and
FlexAttention's compile) and records, later calls only replay. Moving or replacing the model's
weights invalidates its graphs; ``release_graphs(model)`` frees them (and their memory pool).
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from typing import Callable, Optional

import torch

from .guided_model import GuidedModel
from .kernels import compiled_token_choice
from .sampling import SamplerConfig, SamplerStep, choose_tokens, plan_steps, sampling_step
from .text_condition import TextCondition

logger = logging.getLogger(__name__)

MAX_GRAPHS_PER_MODEL = 4  # geometries kept per model (each holds one step's activations)
_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()


def release_graphs(model: torch.nn.Module) -> None:
    """Drop every recorded sample of ``model`` (their memory returns to PyTorch's allocator)."""
    _CACHE.pop(model, None)


def _static(tensor: Optional[torch.Tensor], device: torch.device) -> Optional[torch.Tensor]:
    return None if tensor is None else tensor.detach().to(device).clone()


def _shape(tensor: Optional[torch.Tensor]):
    return None if tensor is None else (tuple(tensor.shape), tensor.dtype)


class GraphedSample:
    """One recorded sample geometry: static inputs, the graphs, and their outputs."""

    def __init__(self, model, text: Optional[TextCondition], negative: Optional[TextCondition],
                 prime_ids: Optional[torch.Tensor], token_shape: tuple[int, int, int], sampler: SamplerConfig,
                 use_critic: bool, attention: str, batch: int):
        device = model.device
        self.steps = sampler.steps
        self.text = None if text is None else TextCondition(_static(text.embeds, device), _static(text.mask, device))
        self.negative = (None if negative is None
                         else TextCondition(_static(negative.embeds, device), _static(negative.mask, device)))
        self.prime = _static(prime_ids, device)
        self.seed = torch.zeros((), dtype=torch.int64, device=device)
        n_new = (token_shape[0] - (0 if prime_ids is None else prime_ids.shape[1])) * token_shape[1] * token_shape[2]
        plans = plan_steps(n_new, sampler)
        mask_id = model.maskgit.mask_id

        def prepare():
            guided = GuidedModel(model, self.text, self.negative, self.prime, token_shape, sampler.cond_scale,
                                 attention)
            ids = torch.full((batch, n_new), mask_id, dtype=torch.long, device=device)
            return guided, ids, torch.arange(n_new, device=device).expand(batch, -1)

        choose = compiled_token_choice(choose_tokens, device)  # compiled during the warm-up below

        def step(guided, ids, positions, index):
            return sampling_step(ids, positions, plans[index], index, self.seed, guided.logits,
                                 guided.critic if use_critic else None, mask_id, choose)

        # warm up on a side stream (cuBLAS workspaces, FlexAttention's compile), as capture requires
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            guided, ids, positions = prepare()
            for index in range(len(plans)):
                _, ids, positions = step(guided, ids, positions, index)
        torch.cuda.current_stream(device).wait_stream(side)
        del guided, ids, positions

        pool = torch.cuda.graph_pool_handle()
        self.graphs: list[tuple[torch.cuda.CUDAGraph, Optional[tuple]]] = []
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            self.guided, ids, positions = prepare()
        self.graphs.append((graph, None))
        for index in range(len(plans)):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                filled, ids, next_positions = step(self.guided, ids, positions, index)
            self.graphs.append((graph, (index, filled, positions)))
            positions = next_positions
        self.out = ids

    def __call__(self, text, negative, prime_ids, seed: torch.Tensor,
                 callback: Optional[Callable[[SamplerStep], None]]) -> torch.Tensor:
        for static, given in ((self.text, text), (self.negative, negative)):
            if static is not None:
                static.embeds.copy_(given.embeds)
                static.mask.copy_(given.mask)
        if self.prime is not None:
            self.prime.copy_(prime_ids)
        self.seed.copy_(seed)
        for graph, step in self.graphs:
            graph.replay()
            if callback is not None and step is not None:
                index, filled, positions = step
                callback(SamplerStep(index, self.steps, filled.clone(), positions.clone()))
        return self.out.clone()


def graphed_sample(model, text: Optional[TextCondition], negative: Optional[TextCondition],
                   prime_ids: Optional[torch.Tensor], token_shape: tuple[int, int, int], sampler: SamplerConfig,
                   seed: torch.Tensor, callback: Optional[Callable[[SamplerStep], None]], batch: int,
                   use_critic: bool, attention: str = "auto") -> Optional[torch.Tensor]:
    """New token ids (b, n) of one guided sample, replayed from recorded CUDA graphs; None (and a
    warning) if recording fails, so the caller samples eagerly."""
    weights = tuple(p.data_ptr() for p in model.parameters())
    key = (batch, token_shape, sampler, use_critic, attention, str(model.device),
           model.maskgit.to_logits.weight.dtype, _shape(None if text is None else text.embeds),
           _shape(None if negative is None else negative.embeds), _shape(prime_ids))
    cache = _CACHE.setdefault(model, OrderedDict())
    if cache and next(iter(cache.values()))[0] != weights:  # weights moved or replaced: graphs are stale
        cache.clear()
    entry = cache.get(key)
    if entry is None:
        try:
            entry = (weights, GraphedSample(model, text, negative, prime_ids, token_shape, sampler, use_critic,
                                            attention, batch))
        except Exception as exc:  # noqa: BLE001 - any recording failure means: sample eagerly
            logger.warning("CUDA graph recording failed (%s: %s); sampling eagerly", type(exc).__name__, exc)
            return None
        cache[key] = entry
        while len(cache) > MAX_GRAPHS_PER_MODEL:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return entry[1](text, negative, prime_ids, seed, callback)
