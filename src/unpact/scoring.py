"""The one primitive: teacher-forced answer log-probabilities, batched, and batched greedy generation.

    LP(x, y) = (1/T) * sum_k log p(y_k | x ⊕ y_<k)

Attribution, evaluation, recovery and the unlearning losses all go through `answer_token_logprobs`.
Sequences are left-padded so every answer ends at the last position; the model then computes logits
only for the last ``T_max + 1`` positions (``logits_to_keep``), not for the whole prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Packed:
    """A left-padded batch.

    input_ids, attention_mask, position_ids: [B, L]; answer_ids, answer_mask: [B, T] where T is the
    longest answer and answer j of row b sits at sequence position L - T + j (mask 0 on prompt/pad).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    answer_ids: torch.Tensor
    answer_mask: torch.Tensor

    def to(self, device: torch.device | str) -> Packed:
        return Packed(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids,
                                               self.answer_ids, self.answer_mask)))


def pack(prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], pad_id: int,
         hidden: Sequence[Sequence[int]] | None = None) -> Packed:
    """Left-pad ``prompt ⊕ answer`` sequences into one batch (see `Packed` for shapes).

    ``hidden`` (optional, one list per sequence): positions in the unpadded prompt whose attention mask
    is set to 0 — the token stays in place and every other token keeps its position id, so "masking
    x_i out of attention" changes nothing but what the other tokens can see.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    seqs = [list(p) + list(a) for p, a in zip(prompts, answers, strict=True)]
    B, L, T = len(seqs), max(map(len, seqs)), max(map(len, answers))
    # filled in numpy (one small torch.tensor per row costs more than the rest of a batch's packing)
    input_ids = np.full((B, L), pad_id, dtype=np.int64)
    attention_mask = np.zeros((B, L), dtype=np.int64)
    answer_ids = np.full((B, T), pad_id, dtype=np.int64)
    answer_mask = np.zeros((B, T), dtype=np.float32)
    for b, (s, a) in enumerate(zip(seqs, answers, strict=True)):
        if s:
            input_ids[b, L - len(s):] = s
            attention_mask[b, L - len(s):] = 1
        if a:
            answer_ids[b, T - len(a):] = list(a)
            answer_mask[b, T - len(a):] = 1
    position_ids = np.maximum(attention_mask.cumsum(1) - 1, 0)
    if hidden is not None:  # after the position ids, so hiding a token does not shift the others
        for b, (s, hide) in enumerate(zip(seqs, hidden, strict=True)):
            for i in hide:
                attention_mask[b, L - len(s) + i] = 0
    return Packed(*map(torch.from_numpy, (input_ids, attention_mask, position_ids, answer_ids, answer_mask)))


def answer_token_logprobs(model: torch.nn.Module, batch: Packed,
                          inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """log p(y_k | x ⊕ y_<k) for every answer token: [B, T], zero where ``answer_mask`` is 0.

    Differentiable: the unlearning losses call it with gradients on. ``inputs_embeds`` [B, L, H]
    (optional) replaces the embedding lookup of ``batch.input_ids``: the entry point of the gradient
    attributions, which differentiate with respect to (interpolated) input embeddings.
    """
    logp = answer_log_softmax(model, batch, inputs_embeds).gather(-1, batch.answer_ids.unsqueeze(-1)).squeeze(-1)
    return logp * batch.answer_mask


def answer_log_softmax(model: torch.nn.Module, batch: Packed,
                       inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """The model's full next-token log-distribution at every answer position: [B, T, V] (float32).

    Rows where ``answer_mask`` is 0 hold distributions at prompt/pad positions; mask them out.
    ``inputs_embeds``: see `answer_token_logprobs`.
    """
    T = batch.answer_ids.shape[1]
    ids = {"input_ids": batch.input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    out = model(**ids, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, logits_to_keep=T + 1, use_cache=False)
    logits = out.logits[:, -(T + 1):-1, :].float()  # position t predicts token t+1
    return torch.log_softmax(logits, dim=-1)


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class Scores:
    """Per item: ``mean`` = LP(x, y) [N]; ``per_token`` = list of [T_i] arrays of log-probs.

    With ``distribution=True`` also, per answer position, the mean ``mu`` and standard deviation
    ``sigma`` of log p(v) under the model's own next-token distribution (lists of [T_i] arrays):
    what Min-K%++ standardises each token's log-prob with.
    """

    mean: np.ndarray
    per_token: list[np.ndarray]
    mu: list[np.ndarray] | None = None
    sigma: list[np.ndarray] | None = None


class Scorer:
    """Scores and generates with one model and prompt format; all heavy calls are batched."""

    def __init__(self, model, tokenizer, fmt, batch_size: int = 64, max_new_tokens: int = 16):
        self.model, self.tokenizer, self.fmt = model, tokenizer, fmt
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.max_length = getattr(model.config, "max_position_embeddings", None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _check_length(self, n: int, what: str) -> None:
        if self.max_length is not None and n > self.max_length:
            from .errors import UnpactError

            raise UnpactError(f"{what} is {n} tokens, past the model's context of {self.max_length}; "
                              "shorten the question or answer")

    def _non_finite(self, batch: Packed, lp_t: torch.Tensor, idx: list[int]) -> Exception:
        """The error for a batch whose answer log-probs hold NaN or ±inf (only built on that path)."""
        from .errors import UnpactError

        bad = (~torch.isfinite(lp_t) & (batch.answer_mask > 0)).any(1).nonzero().flatten().tolist()
        items = sorted(idx[r] for r in bad)
        named = ", ".join(f"#{i}" for i in items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
        dtype = next(self.model.parameters()).dtype
        what = (f"answer log-probs are NaN or infinite for item{'s' if len(items) > 1 else ''} {named} "
                f"(model dtype {str(dtype).removeprefix('torch.')})")
        if dtype == torch.float16:
            # float16 tops out at 65504: an overflow shows as inf in the logits (the log-softmax then
            # turns it into NaN or -inf), so look at the logits themselves
            T = batch.answer_ids.shape[1]
            logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                position_ids=batch.position_ids, logits_to_keep=T + 1, use_cache=False).logits
            if bool(torch.isinf(logits).any() or torch.isinf(lp_t).any()):
                return UnpactError(f"{what}: float16 overflowed (the logits hold inf); load and score the model "
                                   "in bfloat16 or float32")
        return UnpactError(f"{what}; check the model weights for NaN/inf, or score in float32 or bfloat16 "
                           "if the model runs in a lower precision")

    @torch.no_grad()
    def score_ids(self, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                  hidden: Sequence[Sequence[int]] | None = None, distribution: bool = False) -> Scores:
        """LP and per-token log-probs for token-id pairs (the form attribution uses).

        ``hidden``: optional per-sequence prompt positions masked out of attention (see `pack`).
        ``distribution``: also the mean/std of log p under each answer position's full distribution
        (one [B, T, V] log-softmax per batch, so only where needed).
        A NaN or infinite answer log-prob (broken weights, float16 overflow) raises UnpactError naming
        the items (indices into ``prompts``) and the model's dtype.
        """
        lengths = [len(p) + len(a) for p, a in zip(prompts, answers, strict=True)]
        for i, n in enumerate(lengths):
            self._check_length(n, f"prompt+answer #{i}")
        n = len(prompts)
        per_token: list[np.ndarray] = [np.empty(0)] * n
        mu: list[np.ndarray] = [np.empty(0)] * n
        sigma: list[np.ndarray] = [np.empty(0)] * n
        was_training = self.model.training
        self.model.eval()
        try:
            for idx in length_buckets(lengths, self.batch_size):
                hide = None if hidden is None else [hidden[i] for i in idx]
                batch = pack([prompts[i] for i in idx], [answers[i] for i in idx], self.pad_id, hide).to(self.device)
                if distribution:
                    logp = answer_log_softmax(self.model, batch)  # [B, T, V]
                    lp_t = logp.gather(-1, batch.answer_ids.unsqueeze(-1)).squeeze(-1)
                    p = logp.exp()
                    m = (p * logp).sum(-1)
                    s = ((p * logp.square()).sum(-1) - m.square()).clamp(min=0).sqrt()
                    stats = (m.cpu().numpy(), s.cpu().numpy())
                else:
                    lp_t = answer_token_logprobs(self.model, batch)
                # one reduction per batch; positions outside the answers are masked, not checked
                if not bool((torch.isfinite(lp_t) | (batch.answer_mask == 0)).all()):
                    raise self._non_finite(batch, lp_t, idx)
                lp = lp_t.cpu().numpy()
                T = lp.shape[1]
                for row, i in enumerate(idx):
                    keep = slice(T - len(answers[i]), T)
                    per_token[i] = lp[row, keep].astype(np.float64)
                    if distribution:
                        mu[i], sigma[i] = (x[row, keep].astype(np.float64) for x in stats)
        finally:
            self.model.train(was_training)
        mean = np.array([t.mean() if t.size else np.nan for t in per_token])
        return Scores(mean, per_token, mu if distribution else None, sigma if distribution else None)

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> Scores:
        """LP(x, y) for question/answer strings under the prompt format."""
        return self.score_ids([self.fmt.encode(q).ids for q in questions],
                              [self.fmt.encode_answer(a) for a in answers])

    @torch.no_grad()
    def generate_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int | None = None,
                     raw: bool = False) -> list[str]:
        """Greedy continuations of prompt ids, cut at the end of the answer line (``raw``: uncut)."""
        max_new = max_new_tokens or self.max_new_tokens
        outputs: list[str] = [""] * len(prompts)
        was_training = self.model.training
        self.model.eval()
        try:
            for idx in length_buckets([len(p) for p in prompts], self.batch_size):
                self._check_length(max(len(prompts[i]) for i in idx) + max_new, "prompt+generation")
                batch = pack([prompts[i] for i in idx], [[] for _ in idx], self.pad_id).to(self.device)
                gen = self.model.generate(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    max_new_tokens=max_new, do_sample=False, pad_token_id=self.pad_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                )
                new = gen[:, batch.input_ids.shape[1]:]
                for row, i in enumerate(idx):
                    text = self.tokenizer.decode(new[row], skip_special_tokens=True)
                    outputs[i] = text if raw else self.fmt.clean_generation(text)
        finally:
            self.model.train(was_training)
        return outputs

    def generate(self, questions: Sequence[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers to questions under the prompt format."""
        return self.generate_ids([self.fmt.encode(q).ids for q in questions], max_new_tokens)
