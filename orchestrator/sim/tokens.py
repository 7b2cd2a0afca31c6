"""The simulated model's tokenizer and its output tokens.

The sim backend needs no Hugging Face download, so it brings its own tokenizer:
`SimTokenizer` turns text into ids inside the catalog model's vocabulary at about the
rate of a BPE tokenizer on English (1.2-1.4 tokens per word), deterministically in every
process, and turns ids back into readable pseudo-words. Ids are hashes: decoding a
prompt does not give the prompt back (only punctuation and newlines survive), which is
fine, because nothing reads the simulated model's text for its meaning.

`synthetic_output` decides what the simulated model says for one call: its token ids
come from a generator seeded by (engine seed, call key), so the same call on the same
engine always produces the same output, and a longer output starts with the shorter
one. How the simulated model stops (`ignore_eos` False): after a seeded length drawn
uniformly from [ceil(max_tokens / 2), max_tokens]; when that draw is below max_tokens,
its last token is the end-of-sequence id (counted as output, decoded as nothing, as
vLLM does) and the call finishes with reason STOP, else it finishes with LENGTH. The
text has a newline now and then (about one token in 16), so live-mode plans fan out
one worker per line.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
_SPECIAL = frozenset((PAD_ID, BOS_ID, EOS_ID))
# Single characters with an id of their own, so they survive encode -> decode; the
# newline is the one that matters (live plans split on it).
_PUNCTUATION = "\n\t.,;:!?-()[]{}'\"/\\*&%$#@+=<>_|~`^"
_FIRST_PUNCT = 3
_PUNCT_ID = {ch: _FIRST_PUNCT + i for i, ch in enumerate(_PUNCTUATION)}
NEWLINE_ID = _PUNCT_ID["\n"]
# Word pieces take every id from here to the end of the vocabulary.
FIRST_WORD_ID = 64
# Letters of a word become pieces of at most this many characters: with English word
# lengths this gives about 1.3 tokens per word, punctuation included.
_PIECE_CHARS = 7
MIN_VOCAB = 256

# GPT-style pre-tokenization: a word with its leading space, a run of up to 3 digits, a
# single punctuation character (with its leading space), a newline, other whitespace.
_PRETOKEN = re.compile(r" ?[^\W\d_]+| ?\d{1,3}| ?[^\w\s]|_|\n|[^\S\n]")

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"
_SYLLABLES = tuple(c + v for c in _CONSONANTS for v in _VOWELS)

# What the simulated model writes: per token, a newline with this probability, a
# punctuation mark with the next, else a word.
_P_NEWLINE = 1 / 16
_P_PUNCT = 1 / 10
_OUTPUT_PUNCT = tuple(_PUNCT_ID[ch] for ch in ".,,,:;")


@functools.lru_cache(maxsize=1 << 16)
def _piece_hash(piece: str) -> int:
    digest = hashlib.blake2b(piece.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class SimTokenizer:
    """A deterministic stand-in tokenizer over `vocab_size` ids (the catalog model's)."""

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < MIN_VOCAB:
            raise ValueError(f"vocab_size must be at least {MIN_VOCAB}, got {vocab_size}")
        self._vocab_size = vocab_size
        self._words = vocab_size - FIRST_WORD_ID
        self._decoded: dict[int, str] = {}

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def bos_token_id(self) -> int:
        return BOS_ID

    @property
    def eos_token_id(self) -> int:
        return EOS_ID

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        ids: list[int] = []
        for match in _PRETOKEN.finditer(text):
            piece = match.group()
            punct = _PUNCT_ID.get(piece)
            if punct is not None:
                ids.append(punct)
                continue
            # Long words split into pieces; the leading space stays on the first one.
            start = 1 if piece.startswith(" ") else 0
            for i in range(start, max(len(piece), start + 1), _PIECE_CHARS):
                chunk = piece[i : i + _PIECE_CHARS]
                key = (" " + chunk) if i == start and start else chunk
                ids.append(FIRST_WORD_ID + _piece_hash(key) % self._words)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special ids decode to nothing. Decoding is per token, so the
        texts of consecutive pieces of an output concatenate to the text of the whole."""
        return "".join(self._token_text(i) for i in ids)

    def _token_text(self, token: int) -> str:
        text = self._decoded.get(token)
        if text is None:
            text = self._render(token)
            self._decoded[token] = text
        return text

    def _render(self, token: int) -> str:
        if token in _SPECIAL or not 0 <= token < self._vocab_size:
            return ""
        if token < FIRST_WORD_ID:
            index = token - _FIRST_PUNCT
            return _PUNCTUATION[index] if index < len(_PUNCTUATION) else ""
        # A pronounceable pseudo-word: the word index written in base-90 syllables.
        n = token - FIRST_WORD_ID
        syllables = []
        while True:
            n, digit = divmod(n, len(_SYLLABLES))
            syllables.append(_SYLLABLES[digit])
            if n == 0:
                break
        return " " + "".join(syllables)


def _generator(engine_seed: int, key: str | int, stream: str) -> np.random.Generator:
    digest = hashlib.blake2b(f"{engine_seed}/{key}/{stream}".encode(), digest_size=16).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))


def output_token_ids(engine_seed: int, key: str | int, n: int, vocab_size: int) -> tuple[int, ...]:
    """The first `n` tokens the simulated model writes for a call with this key (the
    call's sampling seed, or its id); a prefix of the output for any larger `n`."""
    if n <= 0:
        return ()
    # Independent streams for the token kinds and the words keep outputs prefix-stable.
    kinds = _generator(engine_seed, key, "kind").random(n)
    words = _generator(engine_seed, key, "word").integers(FIRST_WORD_ID, vocab_size, size=n)
    punct = _generator(engine_seed, key, "punct").integers(0, len(_OUTPUT_PUNCT), size=n)
    ids = np.where(
        kinds < _P_NEWLINE,
        NEWLINE_ID,
        np.where(kinds < _P_NEWLINE + _P_PUNCT, np.asarray(_OUTPUT_PUNCT)[punct], words),
    )
    return tuple(int(i) for i in ids)


@dataclass(slots=True, frozen=True)
class SyntheticOutput:
    token_ids: tuple[int, ...]
    stopped: bool  # True: ended at end-of-sequence before max_tokens (finish reason STOP)


def synthetic_output(
    engine_seed: int, key: str | int, max_tokens: int, vocab_size: int, *, ignore_eos: bool
) -> SyntheticOutput:
    """Everything the simulated model will write for one call (see the module docstring
    for how it stops)."""
    length = max_tokens
    if not ignore_eos and max_tokens > 1:
        low = math.ceil(max_tokens / 2)
        length = int(_generator(engine_seed, key, "length").integers(low, max_tokens + 1))
    ids = output_token_ids(engine_seed, key, length, vocab_size)
    stopped = length < max_tokens
    if stopped:
        ids = (*ids[:-1], EOS_ID)
    return SyntheticOutput(ids, stopped)
