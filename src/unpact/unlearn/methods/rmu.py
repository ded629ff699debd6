"""Representation misdirection for unlearning (RMU; Li et al., 2024, the WMDP paper).

loss = MSE(h_l(f), c·u) + α·MSE(h_l(r), h_l^ref(r)) over non-padding tokens, where h_l is the output
of decoder layer l, u a fixed random unit vector and c = steer × the mean token norm of h_l on the
forget set measured on the original model (a fixed c, as in the paper's 6.5 for Zephyr-7B, does
nothing on models whose hidden states have another scale). As in the reference implementation only
the MLP down-projections of layers l−2 … l are trained; h_l^ref(r) is cached before training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import UnpactError
from ...scoring import Packed
from .base import Method, UnlearnBatch, hparam


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's list of decoder blocks (Llama/Mistral/Qwen/GPT-NeoX-style layouts)."""
    if hasattr(model, "get_base_model"):  # a peft (LoRA) wrapper
        model = model.get_base_model()
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise UnpactError(f"RMU: cannot find the decoder layers of {type(model).__name__}; "
                      "it supports Llama-, GPT-2- and GPT-NeoX-style layouts")


def hidden_at(model, batch: Packed, layer: int) -> torch.Tensor:
    """Output of decoder layer ``layer`` for every position: [B, L, H]."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                output_hidden_states=True, use_cache=False, logits_to_keep=1)
    return out.hidden_states[layer + 1]


def masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the hidden dimension and the tokens where ``mask`` is 1 (scalar)."""
    per_token = ((h - target) ** 2).mean(-1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class RMUHparams:
    layer: int = hparam(-1, "decoder layer l whose output is steered (−1: the middle layer)", "[-1, inf)")
    steer: float = hparam(4.0, "steering coefficient: c = steer × mean ‖h_l‖ on the forget set", "(0, inf)")
    alpha: float = hparam(100.0, "weight α of the retain term (MSE to the original layer-l output)", "[0, inf)")
    seed: int = hparam(0, "seed of the random direction u", "[0, inf)")


class RMU(Method):
    name = "RMU"
    description = "steer layer-l activations on forget text to a scaled random vector, keep retain activations"
    reference = "Li et al. 2024, The WMDP Benchmark (RMU; arXiv 2403.03218)"
    Hparams = RMUHparams
    forget_reduction = "all_tokens"  # `masked_mse` over the attention mask: prompt and answer tokens

    def _layer(self, model) -> int:
        n = len(decoder_layers(model))
        layer = self.hp.layer
        layer = n // 2 if layer < 0 else layer
        if not 0 <= layer < n:
            raise UnpactError(f"RMU: layer {layer} is out of range; the model has {n} decoder layers")
        return layer

    def prepare(self, model, data):
        self.layer = self._layer(model)
        hidden = model.config.hidden_size
        g = torch.Generator().manual_seed(self.hp.seed)
        u = torch.rand(hidden, generator=g)
        self.direction = u / u.norm()
        norms, count = 0.0, 0
        with torch.no_grad():
            for packed, _ in data.batches("forget"):
                mask = packed.attention_mask.float()
                norms += (hidden_at(model, packed, self.layer).norm(dim=-1) * mask).sum().item()
                count += int(mask.sum())
            self.coefficient = self.hparams["steer"] * norms / max(count, 1)
            self.ref_retain: dict[int, torch.Tensor] = {}
            for packed, idx in data.batches("retain"):
                h = hidden_at(model, packed, self.layer).cpu()
                for row, i in enumerate(idx.tolist()):
                    n = int(packed.attention_mask[row].sum())
                    self.ref_retain[i] = h[row, h.shape[1] - n:]  # [L_i, H], unpadded

    def trainable_parameters(self, model):
        layers = decoder_layers(model)
        chosen = []
        for layer in layers[max(0, self.layer - 2):self.layer + 1]:
            down = getattr(getattr(layer, "mlp", None), "down_proj", None)
            module = down if down is not None else getattr(layer, "mlp", layer)
            chosen += [p for p in module.parameters() if p.requires_grad]
        return chosen

    has_retain = True
    retain_name = "retain_mse"

    def forget_loss(self, model, batch: UnlearnBatch):
        f = batch.forget
        h_f = hidden_at(model, f, self.layer)
        target = (self.coefficient * self.direction).to(h_f)
        forget = masked_mse(h_f, target.expand_as(h_f), f.attention_mask.float())
        return forget, {"forget_mse": forget.item()}

    def retain_tokens(self, retain: Packed) -> torch.Tensor:
        return retain.attention_mask.sum()

    def retain_sum(self, model, retain: Packed, index: torch.Tensor) -> torch.Tensor:
        h_r = hidden_at(model, retain, self.layer)
        ref = torch.zeros_like(h_r)
        for row, i in enumerate(index.tolist()):
            cached = self.ref_retain[i]
            ref[row, ref.shape[1] - cached.shape[0]:] = cached.to(ref)
        return (((h_r - ref) ** 2).mean(-1) * retain.attention_mask).sum()
