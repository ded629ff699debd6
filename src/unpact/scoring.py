"""The one primitive: teacher-forced answer log-probabilities, batched, and batched greedy generation.

    LP(x, y) = (1/T) * sum_k log p(y_k | x ⊕ y_<k)

Attribution, evaluation, recovery and the unlearning losses all go through `answer_token_logprobs`.
Sequences are left-padded so every answer ends at the last position; the model then computes logits
only for the last ``T_max + 1`` positions (``logits_to_keep``), not for the whole prompt.

`Scorer.score_with_prefixes` scores sequences that share a prefix with a "base" prompt (the ablations
of leave-one-out attribution share everything before the first ablated token with the intact prompt):
the bases' key/value caches are computed once, and each sequence runs only from its first differing
token on, attending to its base's cached prefix.

Under several processes (`unpact.distributed`) every public method of `Scorer` works on this
process's share of the sequences and returns the full result, the same on every process: so every
stage built on the scorer (attribution, evaluation, recovery) is data-parallel without knowing it.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from . import distributed


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
    ids = {"input_ids": batch.input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    return _answer_log_softmax(model, batch.answer_ids.shape[1], **ids, attention_mask=batch.attention_mask,
                               position_ids=batch.position_ids, use_cache=False)


def _answer_log_softmax(model: torch.nn.Module, T: int, **forward) -> torch.Tensor:
    """[B, T, V] log-distributions at the last T + 1 positions but one (answers end at the last position)."""
    out = model(**forward, logits_to_keep=T + 1)
    logits = out.logits[:, -(T + 1):-1, :].float()  # position t predicts token t+1
    return torch.log_softmax(logits, dim=-1)


def _cache_layout(model: torch.nn.Module, max_len: int) -> bool | None:
    """Whether `_prefixed_batch` can run ``model`` on layouts (cache + suffix) of up to ``max_len`` slots.

    None: it cannot (no ``cache`` argument, a cache other than plain or sliding-window key/value layers,
    or a sliding window the layout reaches: the window is applied by slot index, which runs ahead of
    the true position where a row's prefix is shorter than the cache region). Otherwise whether the
    cache must be built from the model config (True: it declares its layer types).
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    if "cache" not in inspect.signature(model.forward).parameters:
        return None
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # a config transformers cannot read layer types from: no reuse, plain scoring
        return None
    for layer in layers:
        if type(layer) is DynamicSlidingWindowLayer and max_len < layer.sliding_window:
            continue
        if type(layer) is not DynamicLayer:
            return None
    return bool(layers)


def _prefix_kv(model: torch.nn.Module, bases: Sequence[Sequence[int]], pad_id: int, with_config: bool,
               device: torch.device) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """Keys/values of ``bases``, left-padded to a common length L.

    Returns per layer (K, V), each [nb * L, heads, d] (base-major, so one ``index_select`` gathers any
    rows' positions), and L: position t of base j sits at row j * L + (L - len(base j)) + t.
    """
    from transformers import DynamicCache

    batch = pack(bases, [[] for _ in bases], pad_id).to(device)
    cache = DynamicCache(config=model.config) if with_config else DynamicCache()
    model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
          cache=cache, use_cache=True, logits_to_keep=1)
    L = batch.input_ids.shape[1]
    return [tuple(x.transpose(1, 2).reshape(len(bases) * L, x.shape[1], x.shape[3]) for x in (layer.keys, layer.values))
            for layer in cache.layers], L


def _prefixed_batch(model: torch.nn.Module, batch: Packed, kv: list[tuple[torch.Tensor, torch.Tensor]],
                    start: torch.Tensor, shared: torch.Tensor, with_config: bool) -> torch.Tensor:
    """Answer log-probs [B, T] of sequences that continue cached prefixes.

    ``batch`` [B, S] holds each sequence from its first recomputed token on (left-padded, position ids
    already the full sequence's); row b continues the first ``shared[b]`` tokens of a base whose
    keys/values sit in ``kv`` (per layer [rows, heads, d], see `_prefix_kv`) from row ``start[b]`` on.
    The cache is laid out as [B, heads, C, d] with C = max(shared) and slots ≥ shared[b] masked out,
    then the suffix follows: the causal mask (by index) lets every suffix token see the whole cache
    region, and the padding mask keeps exactly row b's own prefix in it.
    """
    from transformers import DynamicCache

    B, C = len(shared), int(shared.max())
    mask = batch.attention_mask
    cache = None
    if C > 0:
        t = torch.arange(C, device=shared.device)
        # masked slots still read a real cached position: pad positions of the base batch may hold
        # non-finite values, and 0 · NaN would leak through the softmax-weighted sum
        rows = (start[:, None] + torch.minimum(t[None, :], (shared - 1).clamp(min=0)[:, None])).flatten()
        layers = [tuple(x.index_select(0, rows).view(B, C, *x.shape[1:]).transpose(1, 2) for x in layer)
                  for layer in kv]  # [B, heads, C, d]
        cache = DynamicCache(layers, config=model.config) if with_config else DynamicCache(layers)
        mask = torch.cat([(t[None, :] < shared[:, None]).to(mask.dtype), mask], dim=1)  # [B, C + S]
    logp = _answer_log_softmax(model, batch.answer_ids.shape[1], input_ids=batch.input_ids, attention_mask=mask,
                               position_ids=batch.position_ids, cache=cache, use_cache=cache is not None)
    return logp.gather(-1, batch.answer_ids.unsqueeze(-1)).squeeze(-1) * batch.answer_mask


def _answers_finite(lp_t: torch.Tensor, batch: Packed) -> bool:
    """Whether every answer position's log-prob in [B, T] ``lp_t`` is finite (padding is not checked);
    one reduction per batch."""
    return bool((torch.isfinite(lp_t) | (batch.answer_mask == 0)).all())


def batch_seed(seed: int, batch: int) -> int:
    """The torch seed of one sampling batch: distinct for every (base seed, batch index) pair."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


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


_LINE_BREAKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def line_break_tokens(tokenizer, vocab: int) -> torch.Tensor:
    """[vocab] bool: which token ids decode to text holding a line break (cached per tokenizer)."""
    mask = _LINE_BREAKS.get(tokenizer)
    if mask is None or len(mask) != vocab:
        n = min(len(tokenizer), vocab)  # ids past the tokenizer (a padded embedding) never break a line
        texts = tokenizer.batch_decode([[i] for i in range(n)])
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[[i for i, t in enumerate(texts) if "\n" in t]] = True
        _LINE_BREAKS[tokenizer] = mask
    return mask


class _UntilLineBreak(StoppingCriteria):
    """Stops each row once it has produced a line break: `clean_generation` keeps only the answer's
    first line, so everything after it is thrown away, while a base model under the plain template
    goes on to write the next "Question: …". A batch still runs until its last row stops (1.06× on
    Gemma 3 270M's 217 TOFU questions in batches of 16). Rows already stopped stay stopped (generate
    ANDs the flags) and the others are computed exactly as before, so greedy answers and seeded
    samples are unchanged."""

    def __init__(self, breaks: torch.Tensor):
        self.breaks = breaks

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return self.breaks[input_ids[:, -1]]  # [B] bool


class Scorer:
    """Scores and generates with one model and prompt format; all heavy calls are batched."""

    def __init__(self, model, tokenizer, fmt, batch_size: int = 64, max_new_tokens: int = 16,
                 generate_batch_size: int | None = None):
        self.model, self.tokenizer, self.fmt = model, tokenizer, fmt
        self.batch_size = batch_size
        # Generation keeps only the last position's logits, so it can batch wider than scoring, whose
        # [B, T, V] logits bound the batch on a large vocabulary; on CPU decoding is bound by reading
        # the weights once per step, so wider is faster (Gemma 3 270M, 217 questions: 64 rows 1.5× faster
        # than 16).
        self.generate_batch_size = generate_batch_size or batch_size
        self.max_new_tokens = max_new_tokens
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.max_length = getattr(model.config, "max_position_embeddings", None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _first_line_only(self) -> StoppingCriteriaList:
        """The stopping rule for generations that are cut at their first line break."""
        vocab = self.model.get_output_embeddings().weight.shape[0]
        return StoppingCriteriaList([_UntilLineBreak(line_break_tokens(self.tokenizer, vocab).to(self.device))])

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
        if distributed.world() > 1:
            # each process scores a contiguous share (a prompt's ablations stay together) in its own
            # length buckets: results equal one process's up to float rounding (other batch shapes)
            def share(idx: list[int]) -> list[tuple]:
                self._score_into(prompts, answers, hidden, distribution, lengths, idx, per_token, mu, sigma)
                return [(per_token[i], mu[i], sigma[i]) for i in idx]

            for i, (t, m, sd) in enumerate(distributed.map_shards(n, share)):
                per_token[i], mu[i], sigma[i] = t, m, sd
        else:
            self._score_into(prompts, answers, hidden, distribution, lengths, range(n), per_token, mu, sigma)
        mean = np.array([t.mean() if t.size else np.nan for t in per_token])
        return Scores(mean, per_token, mu if distribution else None, sigma if distribution else None)

    def _score_into(self, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                    hidden: Sequence[Sequence[int]] | None, distribution: bool, lengths: Sequence[int],
                    todo: Sequence[int], per_token: list[np.ndarray], mu: list[np.ndarray],
                    sigma: list[np.ndarray]) -> None:
        """`score_ids` of the sequences ``todo`` (indices), written into the [N] lists at those indices."""
        was_training = self.model.training
        self.model.eval()
        try:
            for bucket in length_buckets([lengths[i] for i in todo], self.batch_size):
                idx = [todo[j] for j in bucket]
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
                if not _answers_finite(lp_t, batch):
                    raise self._non_finite(batch, lp_t, idx)
                self._store(lp_t, idx, answers, per_token, *((stats, (mu, sigma)) if distribution else ()))
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def score_with_prefixes(self, bases: Sequence[Sequence[int]], prompts: Sequence[Sequence[int]],
                            answers: Sequence[Sequence[int]], base_of: Sequence[int], shared: Sequence[int],
                            hidden: Sequence[Sequence[int]] | None = None) -> Scores:
        """`score_ids` for prompts that share a prefix with a base prompt, computing each prefix once.

        bases: [nb] prompt id lists; prompts, answers: [N]; base_of: [N] index into ``bases``;
        shared: [N] how many leading tokens prompt i has in common with its base — same ids, same
        positions — so its keys/values there are the base's. ``hidden`` as in `score_ids`; a hidden
        position must not lie in the shared prefix (hiding changes nothing before it, but the cache
        holds the unmasked prefix). Returns the same `Scores` as ``score_ids(prompts, answers, hidden)``
        (equal up to float rounding).

        The bases' keys/values are computed in left-padded batches of ``batch_size`` bases; their
        sequences are then scored in batches of ``batch_size``, bucketed by the length of the part after
        the shared prefix, which is all that runs through the model. Models whose cache cannot be laid
        out this way (see `_cache_layout`) are scored by `score_ids`.
        """
        n = len(prompts)
        if not (len(answers) == len(base_of) == len(shared) == n) or (hidden is not None and len(hidden) != n):
            raise ValueError("prompts, answers, base_of, shared (and hidden) need one entry per sequence")
        lengths = [len(p) + len(a) for p, a in zip(prompts, answers, strict=True)]
        for i, m in enumerate(lengths):
            self._check_length(m, f"prompt+answer #{i}")
        if not n:
            return Scores(np.array([]), [])
        # cache region ≤ the longest base, suffix ≤ the longest sequence
        with_config = _cache_layout(self.model, max(len(b) for b in bases) + max(lengths) if bases else 0)
        if with_config is None:
            return self.score_ids(prompts, answers, hidden)
        # the last prompt token's output predicts the first answer token, so it is always recomputed
        keep = [max(0, min(shared[i], len(prompts[i]) - 1, len(bases[base_of[i]]))) for i in range(n)]
        for i in range(n):
            if list(prompts[i][:keep[i]]) != list(bases[base_of[i]][:keep[i]]):
                raise ValueError(f"prompt #{i} does not start with the first {keep[i]} tokens of base #{base_of[i]}")
            if hidden is not None and any(h < keep[i] for h in hidden[i]):
                raise ValueError(f"prompt #{i} hides a position inside its shared prefix of {keep[i]} tokens")
        per_token: list[np.ndarray] = [np.empty(0)] * n
        items_of: list[list[int]] = [[] for _ in bases]
        for i in range(n):
            items_of[base_of[i]].append(i)
        args = (bases, prompts, answers, hidden, lengths, keep, base_of, items_of, with_config, per_token)
        if distributed.world() > 1:
            # sharded by base, so each base's prefix is computed once, on the process that has its items
            def share(mine: list[int]) -> list[list[tuple[int, np.ndarray]]]:
                self._prefixed_into(*args, mine)
                return [[(i, per_token[i]) for i in items_of[b]] for b in mine]

            for rows in distributed.map_shards(len(bases), share):
                for i, t in rows:
                    per_token[i] = t
        else:
            self._prefixed_into(*args, range(len(bases)))
        return Scores(np.array([t.mean() if t.size else np.nan for t in per_token]), per_token)

    def _prefixed_into(self, bases: Sequence[Sequence[int]], prompts: Sequence[Sequence[int]],
                       answers: Sequence[Sequence[int]], hidden: Sequence[Sequence[int]] | None,
                       lengths: Sequence[int], keep: Sequence[int], base_of: Sequence[int],
                       items_of: Sequence[Sequence[int]], with_config: bool, per_token: list[np.ndarray],
                       todo: Sequence[int]) -> None:
        """`score_with_prefixes` of the sequences of the bases ``todo`` (indices into ``bases``; their
        sequences are ``items_of[b]``), written into ``per_token`` [N] at the sequences' indices."""
        used = sorted((b for b in todo if items_of[b]), key=lambda b: -len(bases[b]))
        device = self.device
        was_training = self.model.training
        self.model.eval()
        try:
            for c in range(0, len(used), self.batch_size):
                chunk = used[c:c + self.batch_size]
                kv, L = _prefix_kv(self.model, [bases[b] for b in chunk], self.pad_id, with_config, device)
                start_of = {b: r * L + L - len(bases[b]) for r, b in enumerate(chunk)}
                items = [i for b in chunk for i in items_of[b]]
                for bucket in length_buckets([lengths[i] - keep[i] for i in items], self.batch_size):
                    idx = [items[j] for j in bucket]
                    hide = None if hidden is None else [[h - keep[i] for h in hidden[i]] for i in idx]
                    batch = pack([prompts[i][keep[i]:] for i in idx], [answers[i] for i in idx], self.pad_id,
                                 hide).to(device)
                    k = torch.tensor([keep[i] for i in idx], device=device)
                    batch.position_ids += k[:, None]
                    start = torch.tensor([start_of[base_of[i]] for i in idx], device=device)
                    lp_t = _prefixed_batch(self.model, batch, kv, start, k, with_config)
                    if not _answers_finite(lp_t, batch):
                        # the plain path raises the diagnosed error (broken weights, float16 overflow)
                        # naming the items by their indices here; only this failing path pays for it
                        self.score_ids(prompts, answers, hidden)
                        from .errors import UnpactError

                        raise UnpactError(f"answer log-probs are NaN or infinite for items {sorted(idx)[:5]} with "
                                          "a cached prefix but not without one; score them with score_ids "
                                          "(prefix_reuse=False in attribution)")
                    self._store(lp_t, idx, answers, per_token)
        finally:
            self.model.train(was_training)

    @staticmethod
    def _store(lp_t: torch.Tensor, idx: list[int], answers: Sequence[Sequence[int]],
               per_token: list[np.ndarray], stats: tuple[np.ndarray, ...] = (),
               into: tuple[list[np.ndarray], ...] = ()) -> None:
        """Cut each row of a batch's [B, T] answer log-probs (and [B, T] ``stats``) to its own answer."""
        lp = lp_t.cpu().numpy()
        T = lp.shape[1]
        for row, i in enumerate(idx):
            keep = slice(T - len(answers[i]), T)
            per_token[i] = lp[row, keep].astype(np.float64)
            for x, out in zip(stats, into, strict=True):
                out[i] = x[row, keep].astype(np.float64)

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
        if distributed.world() > 1:
            # a contiguous share per process, bucketed there: batch shapes differ from one process's,
            # so a greedy pick could only differ where two tokens tie to float rounding
            def share(idx: list[int]) -> list[str]:
                self._generate_into(prompts, max_new, raw, idx, outputs)
                return [outputs[i] for i in idx]

            return distributed.map_shards(len(prompts), share)
        self._generate_into(prompts, max_new, raw, range(len(prompts)), outputs)
        return outputs

    def _generate_into(self, prompts: Sequence[Sequence[int]], max_new: int, raw: bool, todo: Sequence[int],
                       outputs: list[str]) -> None:
        """`generate_ids` of the prompts ``todo`` (indices), written into ``outputs`` at those indices."""
        was_training = self.model.training
        self.model.eval()
        stop = None if raw else self._first_line_only()
        try:
            for bucket in length_buckets([len(prompts[i]) for i in todo], self.generate_batch_size):
                idx = [todo[j] for j in bucket]
                self._check_length(max(len(prompts[i]) for i in idx) + max_new, "prompt+generation")
                batch = pack([prompts[i] for i in idx], [[] for _ in idx], self.pad_id).to(self.device)
                gen = self.model.generate(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    max_new_tokens=max_new, do_sample=False, pad_token_id=self.pad_id,
                    eos_token_id=self.tokenizer.eos_token_id, stopping_criteria=stop,
                )
                new = gen[:, batch.input_ids.shape[1]:]
                for row, i in enumerate(idx):
                    text = self.tokenizer.decode(new[row], skip_special_tokens=True)
                    outputs[i] = text if raw else self.fmt.clean_generation(text)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def sample_ids(self, prompts: Sequence[Sequence[int]], n: int, temperature: float, top_p: float, top_k: int,
                   seed: int, max_new_tokens: int | None) -> list[list[str]]:
        """``n`` sampled continuations of every prompt, cut at the end of the answer line: [P][n] strings.

        All P·n rows go through the scorer's length-bucketed, left-padded batches (`pack`, as in
        `generate_ids`) with ``do_sample=True``. ``top_k`` = 0 turns off the top-k filter that Hugging
        Face would otherwise apply (k = 50), so ``temperature`` and ``top_p`` alone shape the
        distribution. The settings are checked by `unpact.recovery.sample_answers`, the one caller.

        Reproducible: before each batch the torch RNG is seeded from (``seed``, batch index), inside a
        forked RNG state so the caller's random stream is left as it was. The same seed, prompts and
        batch size give the same samples (on CPU bit for bit; GPU kernels may add their own
        nondeterminism); a prompt's samples depend on which batch and row it lands in, so changing the
        prompt list or the batch size changes them, as a different seed does. The process count does
        not: under several processes the batches are formed exactly as by one process and each process
        samples whole batches (`unpact.distributed.map_shards` over the batches), so every sample is
        the one a single process draws.
        """
        max_new = max_new_tokens or self.max_new_tokens
        rows = [prompt for prompt in prompts for _ in range(n)]  # row p·n + j: sample j of prompt p
        buckets = length_buckets([len(r) for r in rows], self.generate_batch_size)
        settings = {"max_new_tokens": max_new, "do_sample": True, "temperature": temperature, "top_p": top_p,
                    "top_k": top_k, "pad_token_id": self.pad_id, "eos_token_id": self.tokenizer.eos_token_id}

        def run(which: list[int]) -> list[list[str]]:
            return self._sample_batches(rows, buckets, which, seed, settings)

        flat: list[str] = [""] * len(rows)
        texts = distributed.map_shards(len(buckets), run) if distributed.world() > 1 else run(range(len(buckets)))
        for idx, out in zip(buckets, texts, strict=True):
            for i, text in zip(idx, out, strict=True):
                flat[i] = text
        return [flat[p * n:(p + 1) * n] for p in range(len(prompts))]

    def _sample_batches(self, rows: Sequence[Sequence[int]], buckets: list[list[int]], which: Sequence[int],
                        seed: int, settings: dict) -> list[list[str]]:
        """The cleaned samples of the batches ``which`` (indices into ``buckets``, each a list of row
        indices), one list of strings per batch, batch b seeded by `batch_seed` (seed, b)."""
        out: list[list[str]] = []
        device = self.device
        stop = self._first_line_only()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                for b in which:
                    idx = buckets[b]
                    self._check_length(max(len(rows[i]) for i in idx) + settings["max_new_tokens"], "prompt+generation")
                    batch = pack([rows[i] for i in idx], [[] for _ in idx], self.pad_id).to(device)
                    torch.manual_seed(batch_seed(seed, b))
                    gen = self.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                              stopping_criteria=stop, **settings)
                    new = gen[:, batch.input_ids.shape[1]:]
                    out.append([self.fmt.clean_generation(self.tokenizer.decode(new[row], skip_special_tokens=True))
                                for row in range(len(idx))])
        finally:
            self.model.train(was_training)
        return out

    def generate(self, questions: Sequence[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers to questions under the prompt format."""
        return self.generate_ids([self.fmt.encode(q).ids for q in questions], max_new_tokens)
