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

`ScoringBackend` is what every backend offers (this local `Scorer`, the served
`unpact.models.served.ServedScorer`); what goes beyond answer log-probs and generation is declared in
its `Capabilities` and checked by consumers with `require`.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from . import distributed
from .errors import UnpactError
from .timing import fed_tokens

R = TypeVar("R")
# Fewer shared leading tokens than this are recomputed per row rather than cached (`Scorer._decode`).
_MIN_SHARED = 4
# `answer_log_softmax` runs a batch's shared opening once only from this many tokens on: the opening
# costs a model call of its own (forward and backward when training), which a chat template's system
# turn repays (SmolLM2: 30 tokens of a ~45-token training sequence) and a plain template's one to
# three tokens do not.
_MIN_OPENING = 16


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
    if inputs_embeds is None and (opened := _behind_opening(model, batch)) is not None:
        return opened
    ids = {"input_ids": batch.input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    return _answer_log_softmax(model, batch.answer_ids.shape[1], **ids, attention_mask=batch.attention_mask,
                               position_ids=batch.position_ids, use_cache=False)


def _opening_length(batch: Packed) -> tuple[int, torch.Tensor]:
    """(k, start): the number of leading tokens every row of ``batch`` shares — same ids, unmasked, at
    positions 0 … k − 1 — and each row's first token index [B]. The opening stops one token before the
    shortest row's answer prediction begins, so every row keeps the tokens its logits come from."""
    mask = batch.attention_mask
    start = mask.to(torch.int64).argmax(dim=1)  # left padding: the first unmasked slot
    B, L = mask.shape
    room = int((L - start).min()) - batch.answer_ids.shape[1] - 1
    if B < 2 or room < _MIN_OPENING:
        return 0, start
    idx = start[:, None] + torch.arange(room, device=mask.device)[None, :]
    ids, seen, pos = (x.gather(1, idx) for x in (batch.input_ids, mask, batch.position_ids))
    same = (ids == ids[:1]).all(0) & (seen == 1).all(0) & (pos == torch.arange(room, device=mask.device)).all(0)
    return int(same.to(torch.int64).cumprod(0).sum()), start


def _behind_opening(model: torch.nn.Module, batch: Packed) -> torch.Tensor | None:
    """`answer_log_softmax` of a batch whose rows open with the same ≥ ``_MIN_OPENING`` tokens (a chat
    template's system turn): the opening runs once, as a one-row key/value cache every row attends to,
    and each row runs only from its own tokens on. Differentiable — the unlearning, teaching and
    relearning losses train through it, the opening's gradient summed over the rows — and equal to the
    whole-sequence computation up to float rounding. None where it does not apply (short or no shared
    opening, a model whose cache cannot be laid out so, a wrapped multi-process model)."""
    k, start = _opening_length(batch)
    if k < _MIN_OPENING:
        return None
    B, L = batch.input_ids.shape
    with_config = _cache_layout(model, L)
    if with_config is None:
        return None
    from transformers import DynamicCache

    device = batch.input_ids.device
    first = int(start[0])
    cache = DynamicCache(config=model.config) if with_config else DynamicCache()
    model(input_ids=batch.input_ids[:1, first:first + k], position_ids=torch.arange(k, device=device)[None],
          attention_mask=torch.ones(1, k, dtype=batch.attention_mask.dtype, device=device), cache=cache,
          use_cache=True, logits_to_keep=1)
    layers = [tuple(x.expand(B, -1, -1, -1) for x in (layer.keys, layer.values)) for layer in cache.layers]
    cache = DynamicCache(layers, config=model.config) if with_config else DynamicCache(layers)
    # each row without its opening, still left-padded: slot j reads slot j + k from the row's first token on
    j = torch.arange(L - k, device=device)[None, :]
    src = j + k * (j >= start[:, None])
    ids, mask, pos = (x.gather(1, src) for x in (batch.input_ids, batch.attention_mask, batch.position_ids))
    mask = torch.cat([torch.ones(B, k, dtype=mask.dtype, device=device), mask], dim=1)
    return _answer_log_softmax(model, batch.answer_ids.shape[1], input_ids=ids, attention_mask=mask,
                               position_ids=pos, cache=cache, use_cache=True)


def _answer_log_softmax(model: torch.nn.Module, T: int, **forward) -> torch.Tensor:
    """[B, T, V] log-distributions at the last T + 1 positions but one (answers end at the last position)."""
    out = model(**forward, logits_to_keep=T + 1)
    logits = out.logits[:, -(T + 1):-1, :].float()  # position t predicts token t+1
    return torch.log_softmax(logits, dim=-1)


def _cache_layout(model: torch.nn.Module, max_len: int) -> bool | None:
    """Whether ``model`` runs on layouts (cache + suffix) of up to ``max_len`` slots (`_prefixed_batch`,
    `Scorer.forward_embeds` with a `PrefixCache`).

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


@dataclass(frozen=True)
class Capabilities:
    """What a scoring backend can do beyond answer log-probs and generation, which every backend does.

    weights: the model's parameters are at hand (``backend.model``): gradients, weight attacks, unlearning.
    distribution: the full next-token distribution at every answer position (``score_ids(...,
    distribution=True)``: Min-K%++), not only the answer tokens' log-probs.
    hidden_states: the model's inside between tokens and logits: input embeddings
    (`Scorer.forward_embeds`), attention masks (``hidden``: the ``mask`` ablation) and key/value
    caches (`Scorer.prefix_cache`).
    """

    weights: bool
    distribution: bool
    hidden_states: bool


_NEEDS = {"weights": "the model's weights", "distribution": "the full next-token distribution",
          "hidden_states": "the model's internals (embeddings, attention masks, caches)"}


def require(backend: ScoringBackend, what: str, *needs: str) -> None:
    """Raise a one-line UnpactError unless ``backend`` has every capability named in ``needs``
    (fields of `Capabilities`); ``what`` names the work that needs them, for the message."""
    lacking = [n for n in needs if not getattr(backend.capabilities, n)]
    if lacking:
        raise UnpactError(f"{backend.name}: {what} needs {' and '.join(_NEEDS[n] for n in lacking)}, which this "
                          "scoring backend does not give; use a local model (a folder or known name)")


@runtime_checkable
class ScoringBackend(Protocol):
    """What every scoring backend offers: the local `Scorer` and the served
    `unpact.models.served.ServedScorer` (both subclass this, and inherit `score` and `generate`).

    Answers are scored (`score_ids`, `score_with_prefixes`) and generated (`generate_ids`,
    `sample_ids`) under the prompt format ``fmt``, whose ``tokenizer`` makes the id lists. Anything
    more is declared in ``capabilities`` and checked with `require` before the work starts, so a
    backend without it gives one clear error rather than failing deep inside. ``isinstance(x,
    ScoringBackend)`` checks that the members are there.
    """

    capabilities: Capabilities
    name: str  # how error messages name the backend (a model name, a URL)
    fmt: Any
    tokenizer: Any
    pad_id: int | None
    batch_size: int
    max_new_tokens: int
    max_length: int | None  # the model's context in tokens; None where unknown

    def check_length(self, n: int, what: str) -> None:
        """Raise UnpactError if ``n`` tokens (``what``: e.g. "prompt+answer #3") exceed the context."""

    def score_ids(self, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                  hidden: Sequence[Sequence[int]] | None = None, distribution: bool = False) -> Scores:
        """LP [N] and per-token log-probs [T_i] of every answer after its prompt (see `Scorer.score_ids`)."""

    def score_with_prefixes(self, bases: Sequence[Sequence[int]], prompts: Sequence[Sequence[int]],
                            answers: Sequence[Sequence[int]], base_of: Sequence[int], shared: Sequence[int],
                            hidden: Sequence[Sequence[int]] | None = None) -> Scores:
        """`score_ids` of prompts that share a prefix with a base prompt (see `Scorer.score_with_prefixes`)."""

    def generate_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int | None = None,
                     raw: bool = False) -> list[str]:
        """Greedy continuations [P] of prompt ids, cut at the end of the answer line (``raw``: uncut)."""

    def sample_ids(self, prompts: Sequence[Sequence[int]], n: int, temperature: float, top_p: float, top_k: int,
                   seed: int, max_new_tokens: int | None) -> list[list[str]]:
        """``n`` seeded samples per prompt, cut at the end of the answer line: [P][n] strings."""

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> Scores:
        """LP(x, y) for question/answer strings under the prompt format."""
        return self.score_ids([self.fmt.encode(q).ids for q in questions],
                              [self.fmt.encode_answer(a) for a in answers])

    def generate(self, questions: Sequence[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers to questions under the prompt format."""
        return self.generate_ids([self.fmt.encode(q).ids for q in questions], max_new_tokens)


@dataclass(eq=False)  # tensors: compared by identity
class PrefixCache:
    """The keys/values of one token prefix that every row of a batch continues (`Scorer.prefix_cache`).

    kv: per layer (K, V), each [P, heads, d]; length: P; with_config: whether a cache holding them is
    built from the model config (see `_cache_layout`).
    """

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    length: int
    with_config: bool

    def dynamic_cache(self, model, rows: int):
        """A Hugging Face cache holding the prefix for ``rows`` rows ([rows, heads, P, d] views of the
        one prefix: appending a step's keys/values copies them)."""
        from transformers import DynamicCache

        layers = [tuple(x.transpose(0, 1)[None].expand(rows, -1, -1, -1) for x in layer) for layer in self.kv]
        return DynamicCache(layers, config=model.config) if self.with_config else DynamicCache(layers)


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
    goes on to write the next "Question: …". A batch still runs until its last row stops. Rows
    already stopped stay stopped (generate ANDs the flags) and the others are computed exactly as
    before, so greedy answers and seeded samples are unchanged."""

    def __init__(self, breaks: torch.Tensor):
        self.breaks = breaks

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return self.breaks[input_ids[:, -1]]  # [B] bool


def common_prefix(seqs: Sequence[Sequence[int]]) -> list[int]:
    """The longest run of leading ids every sequence shares, leaving each at least one of its own."""
    if not seqs:
        return []
    first, most = seqs[0], min(len(q) for q in seqs) - 1
    n = 0
    while n < most and all(q[n] == first[n] for q in seqs):
        n += 1
    return list(first[:n])


# Generation-config fields that make Hugging Face's greedy search differ from a plain argmax of the
# logits (`_can_decode`): where a model's config sets one, unpact's decoding hands over to `generate`.
_PROCESSORS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None, "suppress_tokens": None,
               "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
               "min_length": 0, "min_new_tokens": None, "sequence_bias": None, "encoder_repetition_penalty": 1.0,
               "exponential_decay_length_penalty": None, "renormalize_logits": False, "min_p": None,
               "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "top_h": None}


def _can_decode(model) -> bool:
    """Whether `_decode_batch` decodes as ``model.generate`` would: no logits processor configured
    beyond the sampling settings unpact passes, and a forward that takes a cache."""
    cfg = getattr(model, "generation_config", None)
    if cfg is None or _cache_layout(model, 0) is None:  # a forward without a cache it can lay out
        return False
    return all(getattr(cfg, k, d) in (d, None) for k, d in _PROCESSORS.items())


def _decode_batch(model, prefix: PrefixCache | None, suffixes: Sequence[Sequence[int]], pad_id: int, max_new: int,
                  stops: torch.Tensor, device: torch.device, warpers=None) -> list[list[int]]:
    """Continuations of ``prefix ⊕ suffix`` for each suffix: per row, the new token ids up to and
    including the first one in ``stops`` ([V] bool: end of sequence, and a line break where answers
    are cut), at most ``max_new``. Greedy, or sampled when ``warpers`` (Hugging Face logits warpers:
    temperature, top-k, top-p) are given, from torch's current random state.

    The prefix's keys/values (shared by every row) are computed once by the caller; the suffixes run
    left-padded behind them. A row that has stopped leaves the batch, so the model computes only the
    rows still writing (Hugging Face's `generate` computes every row until the last one stops). The
    tokens are those `generate` picks, up to float rounding in near-ties: greedy is the argmax;
    sampling draws from the [B, V] distribution of every row of the batch, a stopped row's being a
    point mass, because `torch.multinomial` draws one sample per row from its own share of the random
    stream, so each live row gets exactly the draw it gets in `generate`.
    """
    from transformers import DynamicCache

    B = len(suffixes)
    batch = pack(suffixes, [[] for _ in suffixes], pad_id).to(device)
    P = prefix.length if prefix is not None else 0
    mask, pos = batch.attention_mask, batch.position_ids + P
    if prefix is not None:  # updated in place: each step appends its keys/values
        cache = prefix.dynamic_cache(model, B)
        mask = torch.cat([torch.ones(B, P, dtype=mask.dtype, device=device), mask], dim=1)
    else:
        cache = DynamicCache(config=model.config)
    rows = torch.arange(B, device=device)  # which row of the batch each live row is
    new: list[list[int]] = [[] for _ in range(B)]
    ids, last = batch.input_ids, pos[:, -1]

    def pick(logits: torch.Tensor) -> torch.Tensor:
        if warpers is None:
            return logits.argmax(-1)
        probs = torch.zeros(B, logits.shape[-1], device=device)
        probs[:, pad_id] = 1.0
        probs[rows] = torch.softmax(warpers(None, logits.float()), dim=-1)
        return torch.multinomial(probs, num_samples=1).squeeze(1)[rows]

    for step in range(max_new):
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                    logits_to_keep=1)
        nxt = pick(out.logits[:, -1, :])
        for r, t in zip(rows.tolist(), nxt.tolist(), strict=True):
            new[r].append(t)
        live = ~stops[nxt]
        if step == max_new - 1 or not bool(live.any()):
            break
        if not bool(live.all()):
            keep = live.nonzero().flatten()
            rows, nxt, last, mask = rows[keep], nxt[keep], last[keep], mask[keep]
            cache.batch_select_indices(keep)
        mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype, device=device)], dim=1)
        last = last + 1
        ids, pos = nxt[:, None], last[:, None]
    return new


def _warpers(temperature: float, top_p: float, top_k: int):
    """Hugging Face's sampling warpers for these settings, in the order `generate` applies them."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    out = LogitsProcessorList()
    if temperature != 1.0:
        out.append(TemperatureLogitsWarper(temperature))
    if top_k:
        out.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return out


def _bucketed(todo: Sequence[int], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """`length_buckets` of the items ``todo`` (indices into ``lengths``), as lists of those indices."""
    return [[todo[j] for j in bucket] for bucket in length_buckets([lengths[i] for i in todo], batch_size)]


def _cut(x: np.ndarray, idx: Sequence[int], answers: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Each row of a batch's [B, T] answer-position values cut to its own answer (float64 [T_i])."""
    T = x.shape[1]
    return [x[row, T - len(answers[i]):T].astype(np.float64) for row, i in enumerate(idx)]


class _Reached(Exception):
    """Raised by `Scorer.states_before`'s hook: the state it came for, so the rest of the model is skipped."""

    def __init__(self, state: np.ndarray):
        super().__init__("state reached")
        self.state = state


class Scorer(ScoringBackend):
    """Scores and generates with one model and prompt format; all heavy calls are batched."""

    capabilities = Capabilities(weights=True, distribution=True, hidden_states=True)

    def __init__(self, model, tokenizer, fmt, batch_size: int = 64, max_new_tokens: int = 16,
                 generate_batch_size: int | None = None):
        self.model, self.tokenizer, self.fmt = model, tokenizer, fmt
        self.batch_size = batch_size
        # Generation keeps only the last position's logits, so it can batch wider than scoring, whose
        # [B, T, V] logits bound the batch on a large vocabulary; on CPU decoding is bound by reading
        # the weights once per step, so wider is faster.
        self.generate_batch_size = generate_batch_size or batch_size
        self.max_new_tokens = max_new_tokens
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.max_length = getattr(model.config, "max_position_embeddings", None)

    @property
    def name(self) -> str:
        return getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @contextmanager
    def eval_mode(self) -> Iterator[None]:
        """The model in eval mode (no dropout) inside the block, back in its previous mode after it."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def _first_line_only(self) -> StoppingCriteriaList:
        """The stopping rule for generations that are cut at their first line break."""
        vocab = self.model.get_output_embeddings().weight.shape[0]
        return StoppingCriteriaList([_UntilLineBreak(line_break_tokens(self.tokenizer, vocab).to(self.device))])

    def check_length(self, n: int, what: str) -> None:
        """Raise UnpactError if ``n`` tokens (``what``, for the message) are past the model's context."""
        if self.max_length is not None and n > self.max_length:
            raise UnpactError(f"{what} is {n} tokens, past the model's context of {self.max_length}; "
                              "shorten the question or answer")

    def _map_batches(self, n: int, batches: Callable[[list[int]], Iterable[list[int]]],
                     run: Callable[[list[int]], Sequence[R]]) -> list[R | None]:
        """One result per item 0 … n − 1 (None for an item in no batch), in item order, on every process.

        Each process takes a contiguous share of the items (`distributed.map_shards`: with one
        process, all of them), ``batches(share)`` groups the share into batches (lists of item
        indices) and ``run(batch)`` returns one result per item of its batch; the model is in eval
        mode throughout. The one place the scorer's operations split their work between processes.
        """
        def work(share: list[int]) -> list[R | None]:
            out: dict[int, R] = {}
            for idx in batches(share):
                out.update(zip(idx, run(idx), strict=True))
            return [out.get(i) for i in share]

        with self.eval_mode():
            return distributed.map_shards(n, work)

    def _non_finite(self, batch: Packed, lp_t: torch.Tensor, idx: list[int]) -> Exception:
        """The error for a batch whose answer log-probs hold NaN or ±inf (only built on that path)."""
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
        Under several processes each scores a contiguous share (a prompt's ablations stay together)
        in its own length buckets: the results equal one process's up to float rounding. On one
        process, prompts that open alike (a chat template's system turn) have that opening computed
        once (`score_with_prefixes`), equal up to float rounding.
        """
        shared = common_prefix(prompts) if hidden is None and not distribution and len(prompts) > 1 else []
        if len(shared) >= _MIN_SHARED and distributed.world() == 1:
            return self.score_with_prefixes([shared], prompts, answers, [0] * len(prompts),
                                            [len(shared)] * len(prompts))
        return self._score_plain(prompts, answers, hidden, distribution)

    @torch.no_grad()
    def _score_plain(self, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                     hidden: Sequence[Sequence[int]] | None = None, distribution: bool = False) -> Scores:
        """`score_ids`, every sequence run whole."""
        lengths = [len(p) + len(a) for p, a in zip(prompts, answers, strict=True)]
        for i, n in enumerate(lengths):
            self.check_length(n, f"prompt+answer #{i}")

        def run(idx: list[int]) -> list[tuple[np.ndarray, ...]]:
            hide = None if hidden is None else [hidden[i] for i in idx]
            batch = pack([prompts[i] for i in idx], [answers[i] for i in idx], self.pad_id, hide).to(self.device)
            stats: tuple[torch.Tensor, ...] = ()
            if distribution:
                logp = answer_log_softmax(self.model, batch)  # [B, T, V]
                lp_t = logp.gather(-1, batch.answer_ids.unsqueeze(-1)).squeeze(-1)
                p = logp.exp()
                m = (p * logp).sum(-1)
                stats = (m, ((p * logp.square()).sum(-1) - m.square()).clamp(min=0).sqrt())
            else:
                lp_t = answer_token_logprobs(self.model, batch)
            # one reduction per batch; positions outside the answers are masked, not checked
            if not _answers_finite(lp_t, batch):
                raise self._non_finite(batch, lp_t, idx)
            return list(zip(*(_cut(x.cpu().numpy(), idx, answers) for x in (lp_t, *stats)), strict=True))

        rows = self._map_batches(len(prompts), lambda share: _bucketed(share, lengths, self.batch_size), run)
        per_token = [r[0] for r in rows]
        mean = np.array([t.mean() if t.size else np.nan for t in per_token])
        if not distribution:
            return Scores(mean, per_token)
        return Scores(mean, per_token, [r[1] for r in rows], [r[2] for r in rows])

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
        out this way (see `_cache_layout`) are scored by `score_ids`. Under several processes the work
        is split by base, so each base's prefix is computed once, on the process that has its items.
        """
        n = len(prompts)
        if not (len(answers) == len(base_of) == len(shared) == n) or (hidden is not None and len(hidden) != n):
            raise ValueError("prompts, answers, base_of, shared (and hidden) need one entry per sequence")
        lengths = [len(p) + len(a) for p, a in zip(prompts, answers, strict=True)]
        for i, m in enumerate(lengths):
            self.check_length(m, f"prompt+answer #{i}")
        if not n:
            return Scores(np.array([]), [])
        # cache region ≤ the longest base, suffix ≤ the longest sequence
        with_config = _cache_layout(self.model, max(len(b) for b in bases) + max(lengths) if bases else 0)
        if with_config is None:
            return self._score_plain(prompts, answers, hidden)
        # the last prompt token's output predicts the first answer token, so it is always recomputed
        keep = [max(0, min(shared[i], len(prompts[i]) - 1, len(bases[base_of[i]]))) for i in range(n)]
        for i in range(n):
            if list(prompts[i][:keep[i]]) != list(bases[base_of[i]][:keep[i]]):
                raise ValueError(f"prompt #{i} does not start with the first {keep[i]} tokens of base #{base_of[i]}")
            if hidden is not None and any(h < keep[i] for h in hidden[i]):
                raise ValueError(f"prompt #{i} hides a position inside its shared prefix of {keep[i]} tokens")
        items_of: list[list[int]] = [[] for _ in bases]
        for i in range(n):
            items_of[base_of[i]].append(i)
        suffix = [lengths[i] - keep[i] for i in range(n)]  # what runs through the model

        def chunks(share: list[int]) -> list[list[int]]:  # the share's bases with items, longest first
            used = sorted((b for b in share if items_of[b]), key=lambda b: -len(bases[b]))
            return [used[c:c + self.batch_size] for c in range(0, len(used), self.batch_size)]

        def run(chunk: list[int]) -> list[list[np.ndarray]]:  # per base, its sequences' [T_i] log-probs
            device = self.device
            kv, L = _prefix_kv(self.model, [bases[b] for b in chunk], self.pad_id, with_config, device)
            start_of = {b: r * L + L - len(bases[b]) for r, b in enumerate(chunk)}
            items = [i for b in chunk for i in items_of[b]]
            got: dict[int, np.ndarray] = {}
            for idx in _bucketed(items, suffix, self.batch_size):
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
                    self._score_plain(prompts, answers, hidden)
                    raise UnpactError(f"answer log-probs are NaN or infinite for items {sorted(idx)[:5]} with "
                                      "a cached prefix but not without one; score them with score_ids "
                                      "(prefix_reuse=False in attribution)")
                got.update(zip(idx, _cut(lp_t.cpu().numpy(), idx, answers), strict=True))
            return [[got[i] for i in items_of[b]] for b in chunk]

        per_token: list[np.ndarray] = [np.empty(0)] * n
        for b, rows in enumerate(self._map_batches(len(bases), chunks, run)):
            for i, t in zip(items_of[b], rows or (), strict=True):
                per_token[i] = t
        return Scores(np.array([t.mean() if t.size else np.nan for t in per_token]), per_token)

    def prefix_cache(self, prefix: Sequence[int], max_len: int) -> PrefixCache | None:
        """The keys/values of ``prefix`` (P token ids, at positions 0 … P − 1), computed once without
        gradients, for `forward_embeds` rows that continue it.

        None when there is nothing to reuse: an empty prefix, or a model whose cache cannot be laid out
        as the prefix followed by rows, up to ``max_len`` positions in all (see `_cache_layout`).
        """
        if not len(prefix):
            return None
        with_config = _cache_layout(self.model, max_len)
        if with_config is None:
            return None
        with torch.no_grad():
            kv, _ = _prefix_kv(self.model, [list(prefix)], self.pad_id, with_config, self.device)
        return PrefixCache(kv, len(prefix), with_config)

    def forward_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                       logits_to_keep: int, prefix: PrefixCache | None = None) -> torch.Tensor:
        """Logits [B, logits_to_keep, V] (model dtype) of the model run on input embeddings, with gradients.

        inputs_embeds: [B, S, H]; attention_mask, position_ids: [B, S], the position ids counting from
        the start of the whole sequence (after ``prefix.length`` tokens where a prefix is given). With
        ``prefix`` (`prefix_cache`) every row continues it: its cached keys/values come first, seen
        by every row, and only the S positions run through the model.
        """
        if prefix is None:
            return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False, logits_to_keep=logits_to_keep).logits
        B = inputs_embeds.shape[0]
        cache = prefix.dynamic_cache(self.model, B)
        mask = torch.cat([torch.ones(B, prefix.length, dtype=attention_mask.dtype, device=attention_mask.device),
                          attention_mask], dim=1)  # [B, P + S]
        return self.model(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids, cache=cache,
                          use_cache=True, logits_to_keep=logits_to_keep).logits

    @torch.no_grad()
    def last_states(self, seqs: Sequence[Sequence[int]],
                    read: Callable[[list[int], list[torch.Tensor], torch.Tensor], Sequence[R]] | None = None) -> list:
        """What the model holds at the last token of every sequence, one result per sequence.

        seqs: [N] token id lists, run in the scorer's length-bucketed, left-padded batches (`pack`), so
        every sequence's last token sits at the batch's last position. ``read(idx, hidden, logits)``
        gets per batch of B rows the sequences' indices ``idx`` [B], ``hidden``, the residual stream at
        that position after the embeddings and after each of the L blocks (Hugging Face's ``output_hidden_states``: L + 1 tensors [B, H], the
        last one with the model's final norm applied where the model applies it there), and ``logits``
        [B, V], and returns one value per row: the white-box attacks reduce a batch to what they keep
        (ranks, one layer's state) before the next one runs. Default: the hidden states as a float32
        array [L + 1, H] per sequence.
        """
        def stacked(idx: list[int], hidden: list[torch.Tensor], logits: torch.Tensor) -> list[np.ndarray]:
            return list(torch.stack(hidden, 1).float().cpu().numpy())

        read = read or stacked

        def run(batch: Packed, idx: list[int]) -> Sequence:
            out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids, output_hidden_states=True, use_cache=False,
                             logits_to_keep=1)
            return read(idx, [h[:, -1, :] for h in out.hidden_states], out.logits[:, -1, :])

        return self._at_last_tokens(seqs, run)

    def _at_last_tokens(self, seqs: Sequence[Sequence[int]], run: Callable[[Packed, list[int]], Sequence]) -> list:
        """``run(batch, idx)`` on the sequences in length-bucketed, left-padded batches (every last token
        at the batch's last position), one result per sequence in order; each length checked first."""
        lengths = [len(s) for s in seqs]
        for i, n in enumerate(lengths):
            self.check_length(n, f"sequence #{i}")

        def one(idx: list[int]) -> Sequence:
            return run(pack([seqs[i] for i in idx], [[] for _ in idx], self.pad_id).to(self.device), idx)

        return self._map_batches(len(seqs), lambda share: _bucketed(share, lengths, self.batch_size), one)

    @torch.no_grad()
    def states_before(self, seqs: Sequence[Sequence[int]], module: torch.nn.Module) -> list[np.ndarray]:
        """The input of ``module`` (one of the model's blocks) at the last token of every sequence, as
        float64 [H] per sequence (exact for float32 and bfloat16 models).

        Block k's input is Hugging Face's ``hidden_states[k]``, bit for bit, and the model stops there:
        the probe and direction ablation read one middle layer, and the blocks after it, the final norm
        and the unembedding would be computed for nothing (`last_states` runs them all)."""
        def stop(_module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            raise _Reached(hidden[:, -1, :].double().cpu().numpy())

        def run(batch: Packed, idx: list[int]) -> list[np.ndarray]:
            try:
                self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, use_cache=False, logits_to_keep=1)
            except _Reached as reached:
                fed_tokens(batch.input_ids, batch.attention_mask)
                return list(reached.state)
            raise UnpactError("the model never ran the block whose input was asked for; is it one of its blocks?")

        handle = module.register_forward_pre_hook(stop, with_kwargs=True)
        try:
            return self._at_last_tokens(seqs, run)
        finally:
            handle.remove()

    @torch.no_grad()
    def generate_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int | None = None,
                     raw: bool = False) -> list[str]:
        """Greedy continuations of prompt ids, cut at the end of the answer line (``raw``: uncut).

        Under several processes each generates a contiguous share in its own length buckets: batch
        shapes differ from one process's, so a greedy pick could only differ where two tokens tie to
        float rounding. A prompt given more than once is generated once (greedy: the same answer).
        """
        index: dict[tuple[int, ...], int] = {}
        slot = [index.setdefault(tuple(p), len(index)) for p in prompts]
        if len(index) < len(prompts):
            answers = self.generate_ids([list(p) for p in index], max_new_tokens, raw)
            return [answers[i] for i in slot]
        max_new = max_new_tokens or self.max_new_tokens
        lengths = [len(p) for p in prompts]
        if prompts and _can_decode(self.model):
            return self._decode(prompts, lengths, max_new, raw)
        stop = None if raw else self._first_line_only()

        def run(idx: list[int]) -> list[str]:
            self.check_length(max(lengths[i] for i in idx) + max_new, "prompt+generation")
            batch = pack([prompts[i] for i in idx], [[] for _ in idx], self.pad_id).to(self.device)
            gen = self.model.generate(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                max_new_tokens=max_new, do_sample=False, pad_token_id=self.pad_id,
                eos_token_id=self.tokenizer.eos_token_id, stopping_criteria=stop,
            )
            texts = [self.tokenizer.decode(row, skip_special_tokens=True) for row in gen[:, batch.input_ids.shape[1]:]]
            return texts if raw else [self.fmt.clean_generation(t) for t in texts]

        return self._map_batches(len(prompts), lambda share: _bucketed(share, lengths, self.generate_batch_size), run)

    def _stops(self, raw: bool) -> torch.Tensor:
        """[V] bool on the model's device: the tokens that end a generation (end of sequence, and unless
        ``raw`` any token holding a line break)."""
        vocab = self.model.get_output_embeddings().weight.shape[0]
        stops = torch.zeros(vocab, dtype=torch.bool) if raw else line_break_tokens(self.tokenizer, vocab).clone()
        if self.tokenizer.eos_token_id is not None:
            stops[self.tokenizer.eos_token_id] = True
        return stops.to(self.device)

    def _decode(self, prompts: Sequence[Sequence[int]], lengths: list[int], max_new: int, raw: bool) -> list[str]:
        """`generate_ids` by `_decode_batch`: the prompts' common prefix (the chat template's opening,
        a few-shot preamble) computed once for the whole call, each length bucket decoded behind it."""
        device, stops = self.device, self._stops(raw)

        def work(share: list[int]) -> list[str]:
            shared = common_prefix([prompts[i] for i in share])
            prefix = (self.prefix_cache(shared, max(lengths[i] for i in share) + max_new)
                      if len(shared) >= _MIN_SHARED else None)
            P = prefix.length if prefix is not None else 0
            out: dict[int, str] = {}
            for idx in _bucketed(share, lengths, self.generate_batch_size):
                self.check_length(max(lengths[i] for i in idx) + max_new, "prompt+generation")
                ids = _decode_batch(self.model, prefix, [prompts[i][P:] for i in idx], self.pad_id, max_new, stops,
                                    device)
                for i, row in zip(idx, ids, strict=True):
                    text = self.tokenizer.decode(row, skip_special_tokens=True)
                    out[i] = text if raw else self.fmt.clean_generation(text)
            return [out[i] for i in share]

        with self.eval_mode():
            return distributed.map_shards(len(prompts), work)

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
        device = self.device
        stop = self._first_line_only()
        shared = common_prefix(prompts) if len(prompts) > 1 else []
        warpers, stops = None, None
        if _can_decode(self.model):  # unpact's decoding: rows that stopped leave the batch
            warpers, stops = _warpers(temperature, top_p, top_k), self._stops(raw=False)
        cached: list[PrefixCache | None] = []  # the shared opening's keys/values, made on first use

        def run(which: list[int]) -> list[list[str]]:  # one batch: ``which`` is [its index into buckets]
            (b,) = which
            idx = buckets[b]
            self.check_length(max(len(rows[i]) for i in idx) + max_new, "prompt+generation")
            if not cached:
                cached.append(self.prefix_cache(shared, max(len(r) for r in rows) + max_new)
                              if len(shared) >= _MIN_SHARED else None)
            prefix, P = cached[0], len(shared) if cached[0] is not None else 0
            if warpers is not None:
                torch.manual_seed(batch_seed(seed, b))
                new = _decode_batch(self.model, prefix, [rows[i][P:] for i in idx], self.pad_id, max_new, stops,
                                    device, warpers)
                return [[self.fmt.clean_generation(self.tokenizer.decode(row, skip_special_tokens=True))
                         for row in new]]
            # the shared opening comes first, computed once; each row's padding sits after it (positions
            # follow the attention mask, so every token keeps the position it has unpadded)
            batch = pack([rows[i][P:] for i in idx], [[] for _ in idx], self.pad_id).to(device)
            ids, mask, cache = batch.input_ids, batch.attention_mask, {}
            if prefix is not None:
                B = len(idx)
                head = torch.tensor(shared, device=device)[None].expand(B, P)
                ids, mask = torch.cat([head, ids], 1), torch.cat([torch.ones_like(head), mask], 1)
                cache = {"cache": prefix.dynamic_cache(self.model, B)}
            torch.manual_seed(batch_seed(seed, b))
            gen = self.model.generate(input_ids=ids, attention_mask=mask, stopping_criteria=stop, **cache, **settings)
            return [[self.fmt.clean_generation(self.tokenizer.decode(row, skip_special_tokens=True))
                     for row in gen[:, ids.shape[1]:]]]

        flat: list[str] = [""] * len(rows)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            # the batches, not the rows, are the items shared out: each is formed as by one process
            texts = self._map_batches(len(buckets), lambda share: [[b] for b in share], run)
        for idx, out in zip(buckets, texts, strict=True):
            for i, text in zip(idx, out, strict=True):
                flat[i] = text
        return [flat[p * n:(p + 1) * n] for p in range(len(prompts))]
