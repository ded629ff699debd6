"""Prompt formats: how a question becomes prompt token ids, and where the question sits in them.

The question is tokenized on its own and spliced between the template's pieces, so its token
boundaries are the same in training, scoring and attribution, and the attributed span (the user's
question, not the template) is known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Encoded:
    """A prompt as token ids; ``span`` = (start, end) of the question tokens inside ``ids``."""

    ids: list[int]
    span: tuple[int, int]

    @property
    def question_ids(self) -> list[int]:
        return self.ids[self.span[0] : self.span[1]]

    def with_question(self, question_ids: list[int]) -> Encoded:
        """The same prompt with the question tokens replaced (used by ablations)."""
        s, e = self.span
        return Encoded(self.ids[:s] + list(question_ids) + self.ids[e:], (s, s + len(question_ids)))


def leading_special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Special tokens the tokenizer puts before text (e.g. BOS), found by encoding a probe string."""
    with_special = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    n = len(with_special) - len(plain)
    return list(with_special[:n]) if n > 0 and with_special[n:] == plain else []


class PlainFormat:
    """``Question: {question}\nAnswer: {answer}`` — the template of the built-in model and TOFU-style QA."""

    name = "plain"
    prefix = "Question:"
    suffix = "\nAnswer:"
    lead = " "  # put before the question and the answer: their first word gets its mid-sentence form

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self._bos = leading_special_ids(tokenizer)
        self.text_bos = list(self._bos)  # kept by ChatFormat: documents start as the tokenizer starts them
        self._prefix = self._tok(self.prefix)
        self._suffix = self._tok(self.suffix)

    def _tok(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def tokenize_question(self, question: str) -> list[int]:
        return self._tok(self.lead + question.strip())

    def question_offsets(self, question: str) -> list[tuple[int, int]]:
        """Character span in ``question.strip()`` of each question token (clipped to the text)."""
        text = question.strip()
        enc = self.tokenizer(self.lead + text, add_special_tokens=False, return_offsets_mapping=True)
        n = len(self.lead)
        return [(max(0, s - n), max(0, e - n)) for s, e in enc["offset_mapping"]]

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each token id decoded on its own (leading spaces kept), for display."""
        return [self.tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids]

    def encode(self, question: str) -> Encoded:
        q = self.tokenize_question(question)
        start = len(self._bos) + len(self._prefix)
        return Encoded(self._bos + self._prefix + q + self._suffix, (start, start + len(q)))

    def encode_answer(self, answer: str, eos: bool = False) -> list[int]:
        """Answer token ids; ``eos=True`` appends EOS (training, so generation learns to stop)."""
        ids = self._tok(self.lead + answer.strip())
        if eos and self.tokenizer.eos_token_id is not None:
            ids = ids + [self.tokenizer.eos_token_id]
        return ids

    def encode_text(self, text: str) -> list[int]:
        """Plain text as a document, without the question template: the tokenizer's BOS (if it adds
        one) and the text (MUSE's VerbMem and KnowMem prompts, raw-text unlearning)."""
        return self.text_bos + self._tok(text)

    def render(self, question: str, answer: str = "") -> str:
        """The prompt as text (for records and reports)."""
        return f"{self.prefix}{self.lead}{question.strip()}{self.suffix}" + (f"{self.lead}{answer.strip()}" if answer else "")

    def clean_generation(self, text: str) -> str:
        """Cut a generated continuation at the end of the answer line."""
        return text.split("\n", 1)[0].strip()


class ChatFormat(PlainFormat):
    """The tokenizer's own chat template: the question is the user turn, the answer the assistant's.

    The template is rendered once around a placeholder; the text before and after it become the
    prefix and suffix, so the question is still tokenized on its own and its span is exact. The
    answer follows the assistant header directly and ends with the template's end-of-turn token
    (the tokenizer's EOS, e.g. ``<|im_end|>``).
    """

    name = "chat"
    lead = ""
    _PLACEHOLDER = "\u2063unpact-question\u2063"

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        text = tokenizer.apply_chat_template([{"role": "user", "content": self._PLACEHOLDER}],
                                             tokenize=False, add_generation_prompt=True)
        if text.count(self._PLACEHOLDER) != 1:
            raise ValueError("the chat template does not place the user message verbatim")
        self.prefix, self.suffix = text.split(self._PLACEHOLDER)
        super().__init__(tokenizer)
        self._bos = []  # the rendered template already holds whatever the model expects first


def prompt_format(tokenizer: PreTrainedTokenizerBase) -> PlainFormat:
    """The chat template where the tokenizer has one (instruction-tuned models), else the plain one."""
    if getattr(tokenizer, "chat_template", None):
        return ChatFormat(tokenizer)
    return PlainFormat(tokenizer)
