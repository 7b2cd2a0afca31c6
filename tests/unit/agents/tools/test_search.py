"""The search tool: BM25 over the bundled corpus finds the document a user would expect."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from agents.tools import search
from agents.tools.search import Bm25Index, SearchTool, extract_query, load_corpus, parse_document

tool = SearchTool()


def split_hit(line: str) -> tuple[str, str]:
    """(title, snippet) of one "[title] snippet" result line."""
    match = re.fullmatch(r"\[(.+?)\] (.+)", line)
    assert match is not None, line
    return match[1], match[2]


def titles(query: str) -> list[str]:
    result = tool.run(query, time_limit_s=1.0)
    assert result.ok, result.text
    return [split_hit(line)[0] for line in result.text.splitlines()]


@pytest.mark.parametrize(
    ("query", "expected_title"),
    [
        ("prefix caching", "vLLM automatic prefix caching"),
        ("How does PagedAttention manage KV cache blocks?", "vLLM and PagedAttention"),
        ("H200 memory bandwidth", "Data-center GPUs for LLM inference: H100, H200 and B200"),
        ("KV cache size per token", "The KV cache"),
        ("iteration-level scheduling chunked prefill", "Continuous batching"),
        ("all-reduce NVLink", "Tensor parallelism"),
        ("draft model acceptance rate", "Speculative decoding"),
        ("multi-agent token amplification 15x", "Agents and token amplification"),
        ("thought action observation loop", "The ReAct pattern"),
        ("planner re-planning ReWOO", "Plan-and-execute agents"),
        ("summarize long document chunks", "Map-reduce summarization"),
        ("ObjectRef placement group", "Ray actors"),
        ("bidirectional streaming deadline", "gRPC streaming"),
    ],
)
def test_relevant_document_ranks_first(query: str, expected_title: str) -> None:
    assert titles(query)[0] == expected_title


def test_results_are_at_most_three_title_and_snippet_lines() -> None:
    text = tool.run("search: vLLM GPU memory", time_limit_s=1.0).text
    lines = text.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert len(split_hit(line)[1].strip(".")) <= 300


def test_snippet_is_the_best_matching_passage() -> None:
    text = tool.run("Anthropic 4 times chat", time_limit_s=1.0).text
    first = text.splitlines()[0]
    assert "about 4 times as many tokens as chat interactions" in first
    assert first.startswith("[Agents and token amplification] ...")


def test_no_match_and_empty_query() -> None:
    result = tool.run("xylophone zebra", time_limit_s=1.0)
    assert result.ok
    assert result.text == "no results for 'xylophone zebra'"
    empty = tool.run("  ?! ", time_limit_s=1.0)
    assert not empty.ok
    assert empty.text.startswith("error: empty search query")


def test_query_follows_the_last_search_marker() -> None:
    assert extract_query("I should look this up. Search: ray actors\nThen answer.") == "ray actors"
    assert extract_query(" plain query ") == "plain query"


def test_corpus_documents_are_short_titled_and_distinct() -> None:
    documents = load_corpus()
    assert len(documents) >= 12
    assert len({d.title for d in documents}) == len(documents)
    for document in documents:
        assert document.title and not document.title.startswith("#")
        assert 80 <= len(document.body.split()) <= 200, document.name


def test_bm25_prefers_rare_words_and_short_documents() -> None:
    docs = [
        parse_document("a", "# A\n\ncommon common rare"),
        parse_document("b", "# B\n\ncommon common common"),
        parse_document("c", "# C\n\ncommon " + "filler " * 40 + "rare"),
    ]
    index = Bm25Index.build(docs)
    assert index.idf("rare") > index.idf("common") > 0.0
    hits = index.search("rare", limit=3, snippet_chars=300)
    # Both a and c contain "rare" once; the shorter document scores higher; b never matches.
    assert [h.document.name for h in hits] == ["a", "c"]


def test_index_is_built_once_under_concurrent_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "_index", None)
    builds = 0
    real_build = Bm25Index.build
    lock = threading.Lock()

    def counting_build(documents: list[search.Document]) -> Bm25Index:
        nonlocal builds
        with lock:
            builds += 1
        return real_build(documents)

    monkeypatch.setattr(Bm25Index, "build", counting_build)
    with ThreadPoolExecutor(8) as pool:
        indexes = list(pool.map(lambda _: search.corpus_index(), range(16)))
    assert builds == 1
    assert all(index is indexes[0] for index in indexes)
