"""The `search` tool: BM25 keyword search over a small corpus bundled with the package.

The corpus is `agents/tools/corpus/*.md`, one short factual document per file, first line
"# Title". It gives agent programs a deterministic, offline retrieval step (no network, no
embedding model) about the topics the project cares about: GPUs, vLLM, batching, agent
patterns, Ray and gRPC. The files are read with importlib.resources, so the tool works
from an installed wheel as well as from a checkout, once, on first use, behind a lock:
importing the package stays cheap and concurrent first calls build one index.

Ranking is Okapi BM25 over lowercase alphanumeric words (title included); each hit is
shown as "[title] snippet", where the snippet is the run of whole sentences of at most
~300 characters that covers the most query words, weighted by their rarity.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from agents.tools.base import ToolError, ToolResult, run_guarded

CORPUS_PACKAGE = "agents.tools"
CORPUS_DIR = "corpus"

_WORD = re.compile(r"[a-z0-9]+")
# A sentence ends at . ! or ? followed by whitespace; "et al., 2023" has a comma after the
# period, so citations do not split.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MARKER = re.compile(r"search\s*:", re.IGNORECASE)
_ELLIPSIS = "..."


def tokenize(text: str) -> list[str]:
    """Lowercase alphanumeric words: "H200's 4.8 TB/s" -> h200, s, 4, 8, tb, s."""
    return _WORD.findall(text.lower())


def extract_query(argument: str) -> str:
    """The query in a tool argument: after the last "search:" marker (any case) up to the
    end of that line, else the whole argument."""
    markers = list(_MARKER.finditer(argument))
    if not markers:
        return argument.strip()
    rest = argument[markers[-1].end() :].lstrip()
    return rest.splitlines()[0].strip() if rest else ""


@dataclass(slots=True, frozen=True)
class Document:
    """One corpus document."""

    name: str  # file name without ".md": a stable id for tests and logs
    title: str
    body: str  # the text after the title line, whitespace collapsed to single spaces
    sentences: tuple[str, ...]  # `body` split into sentences, the units of a snippet


def parse_document(name: str, text: str) -> Document:
    """A document from markdown whose first line is "# Title" (else the name is the title)."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("#"):
        title, rest = lines[0].lstrip("#").strip(), lines[1:]
    else:
        title, rest = name, lines
    body = " ".join(" ".join(rest).split())
    sentences = tuple(s for s in _SENTENCE_END.split(body) if s)
    return Document(name=name, title=title, body=body, sentences=sentences)


@dataclass(slots=True, frozen=True)
class SearchHit:
    document: Document
    score: float  # BM25 score; higher is better
    snippet: str  # best-matching passage, with "..." where the document continues


@dataclass(slots=True, frozen=True)
class Bm25Index:
    """Okapi BM25 over a fixed set of documents; immutable, so safe to share across threads."""

    documents: tuple[Document, ...]
    term_counts: tuple[Mapping[str, int], ...]  # per document, title words included
    lengths: tuple[int, ...]  # per document, in words
    document_frequency: Mapping[str, int]  # documents containing each word
    average_length: float
    # Standard BM25 constants: k1 saturates repeated words, b normalizes for length.
    k1: float = 1.5
    b: float = 0.75

    @classmethod
    def build(cls, documents: Sequence[Document]) -> Bm25Index:
        counts = tuple(Counter(tokenize(f"{d.title} {d.body}")) for d in documents)
        lengths = tuple(sum(c.values()) for c in counts)
        frequency: Counter[str] = Counter()
        for c in counts:
            frequency.update(c.keys())
        average = sum(lengths) / len(lengths) if lengths else 0.0
        return cls(tuple(documents), counts, lengths, dict(frequency), average)

    def idf(self, term: str) -> float:
        """BM25 idf with the +1 inside the log, so words found everywhere still count > 0."""
        n = len(self.documents)
        df = self.document_frequency.get(term, 0)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def score(self, terms: Sequence[str], index: int) -> float:
        counts, length = self.term_counts[index], self.lengths[index]
        norm = self.k1 * (1.0 - self.b + self.b * length / self.average_length)
        total = 0.0
        for term in terms:
            tf = counts.get(term, 0)
            if tf:
                total += self.idf(term) * tf * (self.k1 + 1.0) / (tf + norm)
        return total

    def search(self, query: str, *, limit: int, snippet_chars: int) -> list[SearchHit]:
        """Documents matching at least one query word, best first (ties: corpus order)."""
        terms = sorted(set(tokenize(query)))
        scored = [(self.score(terms, i), i) for i in range(len(self.documents))]
        ranked = sorted((s for s in scored if s[0] > 0.0), key=lambda s: (-s[0], s[1]))
        return [
            SearchHit(
                self.documents[i], score, self._snippet(self.documents[i], terms, snippet_chars)
            )
            for score, i in ranked[:limit]
        ]

    def _snippet(self, document: Document, terms: Sequence[str], max_chars: int) -> str:
        """The window of whole sentences (at most max_chars, or one sentence cut to fit)
        covering the most query words by idf weight, then by occurrences, then earliest."""
        weights = {t: self.idf(t) for t in terms}
        sentences = document.sentences
        if not sentences:
            return ""
        best: tuple[float, int, int] | None = None
        best_span = (0, 1)
        for start in range(len(sentences)):
            end = start + 1
            size = len(sentences[start])
            while end < len(sentences) and size + 1 + len(sentences[end]) <= max_chars:
                size += 1 + len(sentences[end])
                end += 1
            words = Counter(tokenize(" ".join(sentences[start:end])))
            coverage = sum(w for t, w in weights.items() if words[t])
            occurrences = sum(words[t] for t in weights)
            key = (coverage, occurrences, -start)
            if best is None or key > best:
                best, best_span = key, (start, end)
        start, end = best_span
        text = " ".join(sentences[start:end])
        cut = len(text) > max_chars
        if cut:
            text = text[:max_chars].rsplit(" ", 1)[0]
        prefix = _ELLIPSIS if start > 0 else ""
        suffix = _ELLIPSIS if cut or end < len(sentences) else ""
        return f"{prefix}{text}{suffix}"


def load_corpus() -> tuple[Document, ...]:
    """The bundled documents, sorted by file name."""
    root = resources.files(CORPUS_PACKAGE).joinpath(CORPUS_DIR)
    if not root.is_dir():
        return ()
    entries = sorted(
        (e for e in root.iterdir() if e.is_file() and e.name.endswith(".md")),
        key=lambda e: e.name,
    )
    return tuple(
        parse_document(e.name.removesuffix(".md"), e.read_text(encoding="utf-8")) for e in entries
    )


_index: Bm25Index | None = None
_index_lock = threading.Lock()


def corpus_index() -> Bm25Index:
    """The index of the bundled corpus, built on first use (once, even under concurrency)."""
    global _index
    index = _index
    if index is None:
        with _index_lock:
            index = _index
            if index is None:
                documents = load_corpus()
                if not documents:
                    # A wheel built without the package data; see the module docstring.
                    raise ToolError(
                        f"search corpus is missing: no {CORPUS_DIR}/*.md in {CORPUS_PACKAGE}"
                    )
                index = _index = Bm25Index.build(documents)
    return index


@dataclass(slots=True, frozen=True)
class SearchTool:
    """Keyword search over the bundled corpus; one "[title] snippet" line per hit."""

    name: str = "search"
    description: str = (
        "Keyword search over a small reference library on LLM inference and agents "
        "(H100/H200/B200 GPUs, vLLM, KV cache, batching, parallelism, speculative decoding, "
        "ReAct, plan-and-execute, map-reduce, Ray, gRPC). Argument: a few keywords. Returns "
        "up to 3 lines of '[title] snippet'."
    )
    results: int = 3  # hits returned
    snippet_chars: int = 300  # longest snippet, before the "..." markers

    def run(self, argument: str, *, time_limit_s: float) -> ToolResult:
        # time_limit_s is ignored: scoring a dozen short documents takes well under 1 ms.
        return run_guarded(lambda: self._search(argument))

    def _search(self, argument: str) -> str:
        query = extract_query(argument)
        if not tokenize(query):
            raise ToolError("empty search query: give a few keywords")
        hits = corpus_index().search(query, limit=self.results, snippet_chars=self.snippet_chars)
        if not hits:
            return f"no results for {query!r}"
        return "\n".join(f"[{hit.document.title}] {hit.snippet}" for hit in hits)
