"""A served model as a scoring backend: the `unpact.scoring.Scorer` interface over ``/v1/completions``.

The unPact contribution needs only answer log-probabilities, which an OpenAI-compatible completions
endpoint returns for the prompt itself when asked with ``echo=true`` and ``logprobs``. So a model the
user cannot open (llama.cpp's server, vLLM's OpenAI server) is scored, attributed (leave-one-out with
``delete`` ablation), evaluated and attacked with prompts exactly as a local one, through
`ServedScorer`, a `unpact.scoring.ScoringBackend` like the local `Scorer`.

Tokens are the server's: `ServedTokenizer` asks the server how it splits a text (an echo request)
and gives every distinct token string a stand-in integer id, so the prompt formats and the ablations,
which work on id lists, run unchanged; an id list becomes text again by joining its token strings. A
scored sequence is sent as text and the server tokenizes it again; the answer's log-probs are those of
the tokens that end after the prompt's text.

Its `Capabilities` declare what it lacks: the weights, the full next-token distribution (the API
returns at most a few top log-probs per position) and the model's internals (embeddings, attention
masks, caches). What needs them is refused with a message saying so: gradient attributions, weight
attacks (quantisation, relearning), the ``replace`` and ``mask`` ablations (they need token ids or
attention masks the API does not take), Min-K%++.

Quirks handled here, measured on llama-cpp-python 0.3.36: the first prompt token's log-prob is null;
prompt log-probs come out shifted by one position unless the prompt starts with the model's BOS token
text, so every request starts with ``bos_text``; ``max_tokens: 0`` means unlimited, so 1 is asked;
one prompt per request (a list is refused).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import UnpactError
from ..scoring import Capabilities, Scores, ScoringBackend
from .client import CompletionsClient, unique


def _seed(*parts: int) -> int:
    """A 31-bit request seed from (base seed, question, sample): servers take int32 seeds."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0]) & 0x7FFFFFFF


class ServedTokenizer:
    """The server's tokenization under stand-in ids (enough of a Hugging Face tokenizer for
    `unpact.models.prompt`: ``__call__`` with offsets, ``decode``, ``apply_chat_template``).

    ``template``: a local tokenizer whose chat template, BOS and EOS strings describe the served model
    (the served weights' own tokenizer, or one of the same family); None: the plain
    ``Question: …\\nAnswer:`` format and ``bos_text`` as given.
    """

    def __init__(self, client: CompletionsClient, template=None, bos_text: str | None = None):
        self.client = client
        self._template = template
        self.chat_template = getattr(template, "chat_template", None)
        self.bos_text = bos_text if bos_text is not None else (getattr(template, "bos_token", None) or "")
        self._strings: list[str] = []
        self._ids: dict[str, int] = {}
        self._split: dict[str, list[tuple[str, int, int]]] = {}
        self._run_pieces: dict[str, list[tuple[str, int, int]]] = {}
        specials = set(getattr(template, "all_special_tokens", None) or ()) | ({self.bos_text} - {""})
        self._specials = frozenset(specials)
        self._special = re.compile("(" + "|".join(map(re.escape, sorted(specials, key=len, reverse=True))) + ")") \
            if specials else None
        eos = getattr(template, "eos_token", None)
        self.eos_token_id = self._intern(eos) if eos else None
        self.pad_token_id = None  # no pad token: ``replace`` ablations are refused (see ServedScorer)

    def _intern(self, s: str) -> int:
        if s not in self._ids:
            self._ids[s] = len(self._strings)
            self._strings.append(s)
        return self._ids[s]

    def visible(self, text: str) -> str:
        """``text`` as the server's offsets count it: special-token strings print as nothing."""
        return self._special.sub("", text) if self._special else text

    def split(self, texts: Sequence[str]) -> None:
        """Ask the server how it tokenizes each text not seen before (concurrently, cached)."""
        todo = [t for t in unique(texts) if t and t not in self._split]
        # a special token is one token wherever it stands and splits the text around it, so only the
        # plain runs between special strings are sent (and they are shared between texts)
        runs = [r for t in todo for r in self._runs(t) if not self._is_special(r)]
        runs = [r for r in unique(runs) if r not in self._run_pieces]
        for run, pieces in zip(runs, self.client.map(self._ask_split, runs), strict=True):
            self._run_pieces[run] = pieces
        for text in todo:
            pieces, at = [], 0
            for run in self._runs(text):
                for piece, s, e in ([(run, 0, len(run))] if self._is_special(run) else self._run_pieces[run]):
                    pieces.append((piece, at + s, at + e))
                at += len(run)
            self._split[text] = pieces

    def _runs(self, text: str) -> list[str]:
        return [r for r in self._special.split(text) if r] if self._special else [text]

    def _is_special(self, run: str) -> bool:
        return run in self._specials

    def _ask_split(self, text: str) -> list[tuple[str, int, int]]:
        lp = _logprobs(self.client.complete(self.bos_text + text, max_tokens=1, echo=True, logprobs=1,
                                            temperature=0), self.client)
        n = len(self.visible(self.bos_text))
        starts = sorted({o - n for o in lp["text_offset"] if 0 <= o - n < len(text)} | {0})
        # each token's text is the slice up to the next token's start, so the pieces join to ``text``
        # exactly (a byte-fallback token can print as a partial character but its offset is right)
        return [(text[s:e], s, e) for s, e in zip(starts, starts[1:] + [len(text)], strict=True) if e > s]

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> dict:
        self.split([text])
        pieces = self._split.get(text, [])
        out = {"input_ids": [self._intern(s) for s, _, _ in pieces]}
        if return_offsets_mapping:
            out["offset_mapping"] = [(s, e) for _, s, e in pieces]
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool = False) -> str:
        return "".join("" if skip_special_tokens and i == self.eos_token_id else self._strings[i] for i in ids)

    def apply_chat_template(self, messages, tokenize: bool = False, add_generation_prompt: bool = True) -> str:
        if self._template is None or not self.chat_template:
            raise UnpactError("the served model has no chat template here; pass --template with a local model")
        return self._template.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _trailing_specials(tok: ServedTokenizer, text: str) -> int:
    """How many special tokens ``text`` ends with (an answer's EOS, as training appends it)."""
    runs, n = tok._runs(text), 0
    while runs and tok._is_special(runs[-1]):
        runs.pop()
        n += 1
    return n


def _logprobs(choice: dict, client: CompletionsClient) -> dict:
    lp = choice.get("logprobs")
    if not isinstance(lp, dict) or not {"tokens", "token_logprobs", "text_offset"} <= lp.keys():
        raise UnpactError(f"{client.url}/completions returned no token log-probs for the prompt; the server must "
                          "support `echo` with `logprobs` (llama.cpp's server, vLLM's OpenAI server do)")
    return lp


class ServedScorer(ScoringBackend):
    """The scoring backend of a served model (see the module docstring).

    Every distinct text is sent once per scorer (results are cached), ``client.concurrency`` requests
    at a time. ``batch_size`` only exists for interface parity.
    """

    capabilities = Capabilities(weights=False, distribution=False, hidden_states=False)

    def __init__(self, client: CompletionsClient, fmt, max_new_tokens: int = 16, batch_size: int = 64):
        self.client, self.fmt, self.tokenizer = client, fmt, fmt.tokenizer
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.pad_id = None
        self.max_length = None  # the server says when a prompt is past its context
        self._scored: dict[tuple[str, str], np.ndarray] = {}

    @property
    def model(self):
        raise UnpactError(f"{self.client.url} is a served model: this needs its weights (gradient attribution, "
                          "quantisation or relearning attacks, unlearning); use a local model folder for it")

    @property
    def name(self) -> str:
        return self.client.url

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def check_length(self, n: int, what: str) -> None:
        pass  # the server refuses what does not fit, with its own message

    def _text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def _answer_logprobs(self, pair: tuple[str, str]) -> np.ndarray:
        """Log-probs [T] of the answer's tokens, the prompt sent before it.

        The server's offsets count special tokens as empty (and llama.cpp leaves a BOS-id token out of
        the list altogether), so positions are compared on the visible text: the answer's tokens are
        those that end after the visible prompt, then as many empty (special) tokens as the answer ends
        with (e.g. its EOS); the generated token after them is not the answer's.
        """
        prompt, answer = pair
        tok = self.tokenizer
        lead = "" if prompt.startswith(tok.bos_text) else tok.bos_text
        lp = _logprobs(self.client.complete(lead + prompt + answer, max_tokens=1, echo=True, logprobs=1,
                                            temperature=0), self.client)
        start, end = len(tok.visible(lead + prompt)), len(tok.visible(lead + prompt + answer))
        trailing = _trailing_specials(tok, answer)
        offsets, values, tokens = lp["text_offset"], lp["token_logprobs"], lp["tokens"]
        out = []
        for k, (o, v) in enumerate(zip(offsets, values, strict=True)):
            if o == end and tokens[k] == "" and trailing > 0:
                trailing -= 1  # a special token closing the answer (its EOS)
            elif o >= end:
                break  # the generated token
            elif (offsets[k + 1] if k + 1 < len(offsets) else o + len(tokens[k])) <= start:
                continue  # ends inside the prompt
            if v is None:
                raise UnpactError(f"{self.client.url}: no log-prob for an answer token; the prompt is empty")
            out.append(float(v))
        return np.array(out, dtype=np.float64)

    def score_ids(self, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                  hidden: Sequence[Sequence[int]] | None = None, distribution: bool = False) -> Scores:
        """`Scorer.score_ids` through the server: LP and per-token log-probs of the answers ([N], [T_i])."""
        if hidden is not None and any(hidden):
            raise UnpactError("the `mask` ablation needs attention masks, which a served model does not take; "
                              "use the `delete` ablation")
        if distribution:
            raise UnpactError("Min-K%++ needs the full next-token distribution, which a served model does not return")
        pairs = [(self._text(p), self._text(a)) for p, a in zip(prompts, answers, strict=True)]
        todo = [p for p in unique(pairs) if p not in self._scored]
        for pair, values in zip(todo, self.client.map(self._answer_logprobs, todo), strict=True):
            self._scored[pair] = values
        per_token = [self._scored[p] for p in pairs]
        return Scores(np.array([t.mean() if t.size else np.nan for t in per_token]), per_token)

    def score_with_prefixes(self, bases, prompts, answers, base_of, shared, hidden=None) -> Scores:
        """No key/value cache to share over HTTP (the server may cache prompts itself): `score_ids`."""
        return self.score_ids(prompts, answers, hidden)

    def _complete_text(self, prompt: str, **options) -> str:
        lead = "" if prompt.startswith(self.tokenizer.bos_text) else self.tokenizer.bos_text
        return str(self.client.complete(lead + prompt, **options).get("text") or "")

    def generate_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int | None = None,
                     raw: bool = False) -> list[str]:
        """Greedy continuations (temperature 0), cut at the end of the answer line unless ``raw``."""
        options = {"max_tokens": max_new_tokens or self.max_new_tokens, "temperature": 0}
        texts = self.client.map(lambda p: self._complete_text(p, **options), [self._text(p) for p in prompts])
        return texts if raw else [self.fmt.clean_generation(t) for t in texts]

    def sample_ids(self, prompts: Sequence[Sequence[int]], n: int, temperature: float, top_p: float, top_k: int,
                   seed: int, max_new_tokens: int | None = None) -> list[list[str]]:
        """``n`` sampled answers per prompt ([P][n]); request (prompt p, sample j) carries the seed
        derived from (seed, p, j), so the same seed gives the same samples from a deterministic server."""
        base = {"max_tokens": max_new_tokens or self.max_new_tokens, "temperature": temperature,
                "top_p": top_p, "top_k": top_k}
        jobs = [(self._text(p), _seed(seed, q, j)) for q, p in enumerate(prompts) for j in range(n)]
        texts = self.client.map(lambda job: self._complete_text(job[0], seed=job[1], **base), jobs)
        flat = [self.fmt.clean_generation(t) for t in texts]
        return [flat[q * n:(q + 1) * n] for q in range(len(prompts))]


def served_scorer(url: str, template=None, bos_text: str | None = None, concurrency: int = 4,
                  timeout: float = 120.0, retries: int = 4, key_env: str | None = None,
                  max_new_tokens: int = 16) -> ServedScorer:
    """A scorer for the model at ``url`` (``…/v1``); ``template``: a local tokenizer describing its
    prompt format (chat template, BOS/EOS text), None for the plain format. Checks the server at once."""
    from .prompt import prompt_format

    kwargs = {"key_env": key_env} if key_env else {}
    client = CompletionsClient(url, concurrency=concurrency, timeout=timeout, retries=retries, **kwargs)
    client.model()
    return ServedScorer(client, prompt_format(ServedTokenizer(client, template, bos_text)), max_new_tokens)
