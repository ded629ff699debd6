"""Direction ablation: project the direction that tells forget from retain out of the residual stream.

Łucki et al. 2024 ("An adversarial perspective on machine unlearning for AI safety") undo RMU, which
unlearns by steering forget-set activations along a direction, by finding that direction and removing
it. Here the direction is the difference of the mean residual stream at the prompt's last token
between the forget and the retain questions, at one layer, normalised:

    d = mean_f h_ℓ(f) − mean_r h_ℓ(r),   d̂ = d / ‖d‖

and at inference every block's output and the embeddings lose their component along it (forward
hooks: h ← h − (h · d̂) d̂ at every position), so no layer can write it or read it. The forget
questions are then answered greedily and judged like any other attack. The weights are untouched (the
hooks are removed afterwards) but the hidden states are needed: a served model is refused. Its control
is the gold model with its own forget-vs-retain direction removed: what removing *a* direction
brings back where nothing was hidden.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import UnpactError
from ..scoring import require
from .base import Attack, AttackContext, AttackKey, AttackRun, register, setting
from .internals import blocks, read_layer, resolve_layer


def mean_state(scorer, questions: Sequence[str], layer: int) -> np.ndarray:
    """The mean residual stream [H] (float64) at ``layer`` (index into ``hidden_states``) at the last
    prompt token of ``questions``."""
    return np.mean(read_layer(scorer, [scorer.fmt.encode(q).ids for q in questions], layer), axis=0)


def forget_direction(scorer, forget: Sequence[str], retain: Sequence[str], layer: int) -> np.ndarray:
    """d̂ [H] (float64, unit norm): the normalised difference of the forget and retain mean states."""
    if not forget or not retain:
        raise UnpactError("direction ablation needs forget and retain questions to find the direction between them")
    d = mean_state(scorer, forget, layer) - mean_state(scorer, retain, layer)
    norm = float(np.linalg.norm(d))
    if not norm > 0:
        raise UnpactError(f"direction ablation: forget and retain states at layer {layer} have the same mean; "
                          "choose another recovery.direction_ablation_layer")
    return d / norm


@contextmanager
def projected_out(model: nn.Module, direction: np.ndarray) -> Iterator[None]:
    """Inside the block, ``model`` runs with ``direction`` [H] (unit norm) removed from the output of
    its input embeddings and of every block, at every position; the hooks go when the block ends."""
    p = next(model.parameters())
    d = torch.as_tensor(direction, dtype=p.dtype, device=p.device)

    def strip(h: torch.Tensor) -> torch.Tensor:
        return h - (h @ d)[..., None] * d

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (strip(output[0]), *output[1:])
        return strip(output)

    handles = [m.register_forward_hook(hook) for m in (model.get_input_embeddings(), *blocks(model))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass
class DirectionAblationSettings:
    layer: int = setting(-1, "layer whose forget-vs-retain mean difference is removed (0 = embeddings, "
                         "-1 = the middle block)", lambda n: n >= -1, "use a layer index ≥ 0, or -1 for the middle block")


@register
class DirectionAblation(Attack):
    """The forget-vs-retain direction (`forget_direction`) projected out of the residual stream
    (`projected_out`), the forget questions asked again."""

    name = "direction_ablation"
    help = "project the forget-vs-retain mean difference out of the residual stream, then ask again"
    order = 9
    default = False  # opt-in: configs/demo-all-attacks.yaml runs it (README: cost per cell)
    needs_weights = True
    needs = "edits the residual stream through forward hooks"
    channel = "hidden"
    Settings = DirectionAblationSettings

    def run(self, ctx: AttackContext, settings: DirectionAblationSettings) -> dict[AttackKey, AttackRun]:
        require(ctx.scorer, "direction ablation", "hidden_states")
        model = ctx.scorer.model
        layer = resolve_layer(settings.layer, len(blocks(model)), "recovery.direction_ablation_layer")
        if not ctx.questions:  # nothing forgotten to ask: no direction to find
            return {AttackKey(self.name): AttackRun([], [], details={"layer": layer})}
        d = forget_direction(ctx.scorer, ctx.questions, [it.question for it in ctx.splits["retain"]], layer)
        with projected_out(model, d):
            answers = ctx.scorer.generate(ctx.questions)
        return {AttackKey(self.name): AttackRun(ctx.questions, answers, details={"layer": layer})}
