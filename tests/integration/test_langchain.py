"""The LangChain adapters on a real (tiny, random-weight) critic, inside real LangChain pipelines.

Random weights: the tests check invariants (output made of input slices, order, metadata, budgets, no mutation,
sync == async, message structure), never what is kept.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_classic.retrievers.document_compressors import DocumentCompressorPipeline
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.document_loaders import BaseLoader
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel, ParrotFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.integration_tests import RetrieversIntegrationTests
from langchain_text_splitters import RecursiveCharacterTextSplitter

from cprs_integrations import CompressionOptions
from cprs_integrations.engine.budget import resolve_token_counter
from cprs_integrations.langchain import (
    CPRSDocumentCompressor,
    CPRSMessagePruner,
    CPRSRetriever,
    aprune_messages,
    prune_messages,
)

QUERY = "Were Scott Derrickson and Ed Wood of the same nationality?"
SEPARATOR = " ... "
count_tokens = resolve_token_counter("o200k_base")


# ------------------------------------------------------------------------------------------------ fixtures


def hotpot_documents(n_records: int = 3) -> list[Document]:
    """HotpotQA paragraphs as documents with ids and nested metadata."""
    from cprs_integrations.training.data import hotpot_records

    docs = []
    for record in hotpot_records("test")[:n_records]:
        for j, (title, sentences) in enumerate(record["context"]):
            docs.append(
                Document(
                    id=f"{record['_id']}-{j}",
                    page_content=f"{title}\n{''.join(sentences)}",
                    metadata={"title": title, "record": record["_id"], "nested": {"position": j, "tags": ["hotpot"]}},
                )
            )
    return docs


@pytest.fixture(scope="module")
def documents(long_text: str) -> list[Document]:
    """Seven HotpotQA paragraphs, an essay extract (many windows), an empty and a blank document."""
    docs = hotpot_documents(1)[:7]
    docs.append(Document(id="essay", page_content=long_text[:1500], metadata={"title": "essay"}))
    docs.append(Document(id="empty", page_content="", metadata={"title": "empty"}))
    docs.append(Document(id="blank", page_content=" \n ", metadata={"title": "blank"}))
    return docs


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 from the installed test package (offline), through sentence-transformers."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        from cprs_integrations.models.testing import minilm_dir

        self._model = SentenceTransformer(str(minilm_dir()), device="cpu")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._model.encode(list(texts), normalize_embeddings=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@pytest.fixture(scope="module")
def vector_retriever() -> BaseRetriever:
    """An in-memory vector store over 20 HotpotQA paragraphs with offline MiniLM embeddings, top 4."""
    store = InMemoryVectorStore(MiniLMEmbeddings())
    store.add_documents(hotpot_documents(2))
    return store.as_retriever(search_kwargs={"k": 4})


# ------------------------------------------------------------------------------------------------- helpers


def assert_compressed_from(out: Document, source: Document, separator: str = SEPARATOR) -> None:
    """``out`` is the compression of ``source``: slices of it, its id, its metadata plus ``cprs`` and the score."""
    figures = out.metadata["cprs"]
    spans = figures["spans"]
    assert out.id == source.id
    assert {k: v for k, v in out.metadata.items() if k not in ("cprs", "relevance_score")} == source.metadata
    assert out.metadata["relevance_score"] == figures["score"]
    previous_end = -1
    for start, end, score in spans:
        assert previous_end < start < end <= len(source.page_content)
        assert 0.0 <= score <= 1.0
        previous_end = end
    assert out.page_content == separator.join(source.page_content[s:e] for s, e, _ in spans)
    assert figures["compressed_tokens"] == (count_tokens(out.page_content) if out.page_content else 0)
    assert figures["original_tokens"] == (count_tokens(source.page_content) if source.page_content else 0)
    if figures["ratio"] is None:
        assert not spans and figures["original_tokens"] > 0
    assert set(figures) == {
        "spans",
        "score",
        "original_tokens",
        "compressed_tokens",
        "ratio",
        "granularity",
        "granularity_used",
        "empty_reason",
        "mode",
        "cprs_version",
    }


def assert_in_input_order(out: list[Document], inputs: list[Document]) -> None:
    ids = [doc.id for doc in inputs]
    positions = [ids.index(doc.id) for doc in out]
    assert positions == sorted(positions)


def text_parts(message: BaseMessage) -> list[str]:
    if isinstance(message.content, str):
        return [message.content]
    return [
        b if isinstance(b, str) else b["text"] for b in message.content if isinstance(b, str) or b["type"] == "text"
    ]


def message_tokens(messages: list[BaseMessage]) -> int:
    return sum(count_tokens(part) for m in messages for part in text_parts(m))


class NoEngine:
    """Stands in for an engine that must not be used."""

    def compress(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the engine should not be called")

    async def acompress(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the engine should not be called")


# -------------------------------------------------------------------------------------------------- import


def test_import_does_not_import_torch_nor_llama_index() -> None:
    code = (
        "import sys, cprs_integrations.langchain; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert not any(m.startswith('llama_index') for m in sys.modules), 'llama_index imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_langchain_names_the_extra() -> None:
    code = "import sys; sys.modules['langchain_core'] = None; import cprs_integrations.langchain"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert 'pip install "cprs-integrations[langchain]"' in done.stderr


# ---------------------------------------------------------------------------------------------- compressor


def test_compressor_keeps_slices_order_metadata_and_global_budget(tiny_engine, documents) -> None:
    before = copy.deepcopy(documents)
    compressor = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.3)
    out = compressor.compress_documents(documents, QUERY)

    assert documents == before  # the caller's documents are untouched
    assert out and all(doc.metadata["cprs"]["spans"] for doc in out)  # drop_empty: nothing-kept documents gone
    assert_in_input_order(out, documents)
    by_id = {doc.id: doc for doc in documents}
    for doc in out:
        assert_compressed_from(doc, by_id[doc.id])
        assert doc.metadata["cprs"]["granularity"] == "sentence" and doc.metadata["cprs"]["mode"] == "budget"
        assert doc.metadata is not by_id[doc.id].metadata
        if "nested" in doc.metadata:  # a deep copy, not a shallow one
            assert doc.metadata["nested"] is not by_id[doc.id].metadata["nested"]
    total = sum(count_tokens(doc.page_content) for doc in documents if doc.page_content)
    assert sum(doc.metadata["cprs"]["compressed_tokens"] for doc in out) <= math.floor(0.3 * total + 1e-9)


def test_compressor_default_budget_is_a_fifth(tiny_engine, documents) -> None:
    compressor = CPRSDocumentCompressor(engine=tiny_engine)
    assert compressor.compression_options().target_ratio == 0.2
    out = compressor.compress_documents(documents, QUERY)
    total = sum(count_tokens(doc.page_content) for doc in documents if doc.page_content)
    assert 0 < sum(doc.metadata["cprs"]["compressed_tokens"] for doc in out) <= math.floor(0.2 * total + 1e-9)


def test_compressor_per_document_budget_and_target_tokens(tiny_engine, documents) -> None:
    per_doc = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.5, per_document_budget=True)
    for doc in per_doc.compress_documents(documents, QUERY):
        figures = doc.metadata["cprs"]
        assert figures["compressed_tokens"] <= math.floor(0.5 * figures["original_tokens"] + 1e-9)

    by_tokens = CPRSDocumentCompressor(engine=tiny_engine, target_tokens=60)
    assert by_tokens.compression_options().target_ratio is None
    out = by_tokens.compress_documents(documents, QUERY)
    assert 0 < sum(doc.metadata["cprs"]["compressed_tokens"] for doc in out) <= 60


def test_compressor_multi_hop_equals_the_engine(tiny_engine, documents) -> None:
    """``hops`` is an adapter field like every option: the compressor's output is the engine's with it."""
    compressor = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.3, hops=2, drop_empty=False)
    assert compressor.compression_options().hops == 2
    out = compressor.compress_documents(documents, QUERY)
    expected = tiny_engine.compress(QUERY, [doc.page_content for doc in documents], target_ratio=0.3, hops=2)
    assert [doc.page_content for doc in out] == [r.text for r in expected]
    total = sum(count_tokens(doc.page_content) for doc in documents if doc.page_content)
    assert sum(doc.metadata["cprs"]["compressed_tokens"] for doc in out) <= math.floor(0.3 * total + 1e-9)
    with pytest.raises(ValueError, match="hops"):
        CPRSDocumentCompressor(engine=tiny_engine, hops=5)


def test_compressor_drop_empty_false_keeps_every_document(tiny_engine, documents) -> None:
    compressor = CPRSDocumentCompressor(engine=tiny_engine, target_tokens=40, drop_empty=False)
    out = compressor.compress_documents(documents, QUERY)
    assert [doc.id for doc in out] == [doc.id for doc in documents]
    for doc, source in zip(out, documents):
        assert_compressed_from(doc, source)
    emptied = [doc for doc in out if not doc.metadata["cprs"]["spans"]]
    assert emptied and all(doc.page_content == "" for doc in emptied)
    assert out[-2].metadata["cprs"]["ratio"] == 1.0  # an empty document has no tokens: nothing to compress
    assert out[-1].metadata["cprs"]["ratio"] is None  # a blank one has (whitespace) tokens, nothing kept


def test_compressor_tags_mode_has_no_budget(tiny_engine, documents) -> None:
    compressor = CPRSDocumentCompressor(engine=tiny_engine, mode="tags", drop_empty=False)
    options = compressor.compression_options()
    assert options.target_ratio is None and options.target_tokens is None
    for doc, source in zip(compressor.compress_documents(documents, QUERY), documents):
        assert_compressed_from(doc, source)
        assert doc.metadata["cprs"]["mode"] == "tags"


async def test_compressor_async_equals_sync(tiny_engine, documents) -> None:
    compressor = CPRSDocumentCompressor(engine=tiny_engine, granularity="chunk", target_ratio=0.25)
    sync = compressor.compress_documents(documents, QUERY)
    asynchronous = await compressor.acompress_documents(documents, QUERY)
    assert asynchronous == sync
    assert all(doc.metadata["cprs"]["granularity"] == "chunk" for doc in sync)


async def test_compressor_empty_input_and_bad_query(tiny_engine, documents) -> None:
    lazy = CPRSDocumentCompressor(model="/nonexistent/critic")  # would fail if the engine were loaded
    assert lazy.compress_documents([], QUERY) == []
    assert await lazy.acompress_documents([], QUERY) == []
    compressor = CPRSDocumentCompressor(engine=tiny_engine)
    for query in ("", "   \n"):
        with pytest.raises(ValueError, match="query must be a non-empty string"):
            compressor.compress_documents(documents, query)
        with pytest.raises(ValueError, match="query must be a non-empty string"):
            await compressor.acompress_documents(documents, query)


def test_compressor_settings_are_checked(tiny_engine) -> None:
    with pytest.raises(ValueError, match="'token', 'sentence', 'paragraph' or 'chunk'"):
        CPRSDocumentCompressor(granularity="word")
    with pytest.raises(ValueError, match="not both"):
        CPRSDocumentCompressor(target_ratio=0.1, target_tokens=100)
    with pytest.raises(ValueError, match="mode='tags' keeps what the critic tags and has no budget"):
        CPRSDocumentCompressor(mode="tags", target_ratio=0.1)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        CPRSDocumentCompressor(target_ratio=2)
    with pytest.raises(ValueError, match="not both"):
        CPRSDocumentCompressor(engine=tiny_engine, model="other")
    with pytest.raises(ValueError, match="engine must be a CPRSEngine"):
        CPRSDocumentCompressor(engine="cpu")
    with pytest.raises(ValueError, match="Extra inputs"):
        CPRSDocumentCompressor(ratio=0.1)
    for weight in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="lexical_weight"):
            CPRSDocumentCompressor(lexical_weight=weight)
    with pytest.raises(ValueError, match="lexical_weight"):
        CPRSMessagePruner(max_tokens=10, lexical_weight=-1)
    dumped = CPRSDocumentCompressor(engine=tiny_engine).model_dump()
    assert "engine" not in dumped and dumped["target_ratio"] is None  # None: the default budget, 0.2
    assert CPRSDocumentCompressor(**dumped).compression_options().target_ratio == 0.2


def test_compressor_loads_the_shared_engine_lazily(tiny_encoder_dir) -> None:
    from cprs_integrations import CPRSEngine

    options = {"device": "cpu", "dtype": "float32", "window_tokens": 64}
    first = CPRSDocumentCompressor(model=tiny_encoder_dir, engine_kwargs=options)
    second = CPRSRetriever(model=str(tiny_encoder_dir), engine_kwargs=options, documents=hotpot_documents(1)[:3])
    assert first.model == str(tiny_encoder_dir)
    out = first.compress_documents(hotpot_documents(1)[:3], QUERY)
    assert out and second.invoke(QUERY)
    assert first.get_engine() is second.get_engine() is CPRSEngine.shared(tiny_encoder_dir, **options)


# ------------------------------------------------------------------------------------------ real pipelines


async def test_contextual_compression_retriever(tiny_engine, vector_retriever) -> None:
    compressor = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.3, drop_empty=False)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=vector_retriever)
    retrieved = vector_retriever.invoke(QUERY)
    before = copy.deepcopy(retrieved)
    out = retriever.invoke(QUERY)
    assert [doc.id for doc in out] == [doc.id for doc in retrieved]
    for doc, source in zip(out, retrieved):
        assert_compressed_from(doc, source)
    total = sum(count_tokens(doc.page_content) for doc in retrieved)
    assert sum(doc.metadata["cprs"]["compressed_tokens"] for doc in out) <= math.floor(0.3 * total + 1e-9)
    assert retrieved == before
    assert await retriever.ainvoke(QUERY) == out


async def test_document_compressor_pipeline_after_a_splitter(tiny_engine, vector_retriever) -> None:
    splitter = RecursiveCharacterTextSplitter(chunk_size=200, chunk_overlap=0)
    compressor = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.4)
    pipeline = DocumentCompressorPipeline(transformers=[splitter, compressor])
    retriever = ContextualCompressionRetriever(base_compressor=pipeline, base_retriever=vector_retriever)
    out = retriever.invoke(QUERY)
    assert out
    sources = {(doc.metadata["record"], doc.metadata["title"]): doc for doc in vector_retriever.invoke(QUERY)}
    for doc in out:
        source = sources[doc.metadata["record"], doc.metadata["title"]]
        assert {k: v for k, v in doc.metadata.items() if k not in ("cprs", "relevance_score")} == source.metadata
        for start, end, _ in doc.metadata["cprs"]["spans"]:
            assert end - start <= 200  # spans index the split chunk, not the source paragraph
        assert all(piece in source.page_content for piece in doc.page_content.split(SEPARATOR))
    assert await retriever.ainvoke(QUERY) == out


class ChatModelInputs(BaseCallbackHandler):
    """Records the messages each chat model call receives."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        self.calls.extend(messages)


def test_lcel_chain_ends_in_a_string(tiny_engine, vector_retriever) -> None:
    compressor = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.3)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=vector_retriever)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from the context only.\n\nContext:\n{context}"), ("human", "{question}")]
    )
    compressed: list[str] = []

    def format_docs(docs: list[Document]) -> str:
        compressed.extend(doc.page_content for doc in docs)
        return "\n\n".join(compressed)

    chain = (
        {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()}
        | prompt
        | FakeListChatModel(responses=["Yes, both were American."])
        | StrOutputParser()
    )
    recorder = ChatModelInputs()
    answer = chain.invoke(QUERY, config={"callbacks": [recorder]})
    assert answer == "Yes, both were American."
    [[system, human]] = recorder.calls
    assert compressed and all(text in system.content for text in compressed)
    assert human.content == QUERY
    original = "\n\n".join(doc.page_content for doc in vector_retriever.invoke(QUERY))
    assert len(system.content) < len(original)


# ----------------------------------------------------------------------------------------------- retriever


def retriever_documents() -> list[Document]:
    return hotpot_documents(1)[:5]


class TestCPRSRetrieverStandard(RetrieversIntegrationTests):
    """langchain-tests' standard retriever suite, unchanged."""

    @pytest.fixture(autouse=True)
    def _use_tiny_engine(self, tiny_engine) -> None:
        self._engine = tiny_engine

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return CPRSRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"documents": retriever_documents(), "engine": self._engine, "target_ratio": 0.5}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


def test_retriever_returns_exact_spans_best_first(tiny_engine, documents) -> None:
    before = copy.deepcopy(documents)
    retriever = CPRSRetriever(documents=documents, engine=tiny_engine, target_ratio=0.3, k=6)
    out = retriever.invoke(QUERY)
    assert documents == before
    assert len(out) == 6
    keys = []
    for doc in out:
        figures = doc.metadata["cprs"]
        source = documents[figures["source_index"]]
        assert figures["source_id"] == source.id
        assert doc.page_content == source.page_content[figures["start"] : figures["end"]]
        assert {k: v for k, v in doc.metadata.items() if k not in ("cprs", "relevance_score")} == source.metadata
        assert doc.metadata is not source.metadata
        keys.append((-figures["score"], figures["source_index"], figures["start"]))
    assert keys == sorted(keys)

    # The same spans as the compressor keeps under the same settings: the k best of them.
    compressed = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.3, drop_empty=False).compress_documents(
        documents, QUERY
    )
    kept = sorted(
        (-score, i, start, end)
        for i, doc in enumerate(compressed)
        for start, end, score in doc.metadata["cprs"]["spans"]
    )
    assert [(f["source_index"], f["start"], f["end"]) for f in (d.metadata["cprs"] for d in out)] == [
        (i, s, e) for _, i, s, e in kept[:6]
    ]
    assert len(retriever.invoke(QUERY, k=2)) == 2


async def test_retriever_async_equals_sync_and_checks_inputs(tiny_engine, documents) -> None:
    retriever = CPRSRetriever(documents=documents, engine=tiny_engine, k=5)
    assert await retriever.ainvoke(QUERY) == retriever.invoke(QUERY)
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        retriever.invoke("  ")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retriever.invoke(QUERY, k=0)
    assert CPRSRetriever(engine=tiny_engine).invoke(QUERY) == []
    with pytest.raises(ValueError, match="documents= or loader="):
        CPRSRetriever(documents=documents, loader=ListLoader(documents))
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        CPRSRetriever(documents=documents, k=0)


class ListLoader(BaseLoader):
    """A loader over a list of documents that counts how often it is read."""

    def __init__(self, docs: list[Document]) -> None:
        self.docs = docs
        self.reads = 0

    def lazy_load(self) -> Iterator[Document]:
        self.reads += 1
        yield from self.docs


async def test_retriever_reads_a_loader_on_every_query(tiny_engine, documents) -> None:
    loader = ListLoader(documents)
    retriever = CPRSRetriever(loader=loader, engine=tiny_engine, k=3)
    from_loader = retriever.invoke(QUERY)
    assert from_loader == CPRSRetriever(documents=documents, engine=tiny_engine, k=3).invoke(QUERY)
    assert await retriever.ainvoke(QUERY) == from_loader
    assert loader.reads == 2


# -------------------------------------------------------------------------------------------------- memory


def chat_history() -> list[BaseMessage]:
    """A system prompt and ten turns: plain answers, tool calls with their results, a multimodal question."""
    from cprs_integrations.training.data import essay_text

    essay = essay_text()
    messages: list[BaseMessage] = [SystemMessage("You are a helpful research assistant.", id="system")]
    for turn in range(10):
        text = essay[turn * 400 : (turn + 1) * 400]
        if turn == 3:
            messages.append(
                HumanMessage(
                    [
                        {"type": "text", "text": f"Turn {turn}: look at this. {text[:150]}"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/chart.png"}},
                    ],
                    id=f"h{turn}",
                )
            )
        else:
            messages.append(HumanMessage(f"Turn {turn}: what does the essay say next? {text[:120]}", id=f"h{turn}"))
        if turn % 3 == 1:
            call = {"name": "search", "args": {"q": f"essay part {turn}"}, "id": f"call{turn}", "type": "tool_call"}
            messages.append(AIMessage(f"Let me search. {text[:80]}", tool_calls=[call], id=f"a{turn}"))
            messages.append(ToolMessage(text, tool_call_id=f"call{turn}", name="search", id=f"t{turn}"))
        messages.append(AIMessage(f"Here is what I found. {text[120:370]}", id=f"r{turn}"))
    return messages


def check_pruned(pruned: list[BaseMessage], history: list[BaseMessage], last_turn_from: int) -> None:
    """System and last turn verbatim, tool structure intact, order kept, older text made of slices."""
    ids = [m.id for m in history]
    positions = [ids.index(m.id) for m in pruned]
    assert positions == sorted(positions)
    by_id = {m.id: m for m in history}
    for message in pruned:
        source = by_id[message.id]
        assert message is not source and type(message) is type(source)
        if isinstance(source, SystemMessage) or ids.index(message.id) >= last_turn_from:
            assert message == source
            continue
        if isinstance(source, AIMessage):
            assert message.tool_calls == source.tool_calls
        if isinstance(source, ToolMessage):
            assert (message.tool_call_id, message.name) == (source.tool_call_id, source.name)
        original = "".join(text_parts(source))
        for part in text_parts(message):
            assert all(piece in original for piece in part.split(SEPARATOR))
        if isinstance(source.content, list):
            assert [b for b in message.content if not isinstance(b, str) and b["type"] != "text"] == [
                b for b in source.content if not isinstance(b, str) and b["type"] != "text"
            ]
    kept_ids = {m.id for m in pruned}
    for source in history:  # tool calls and their results are never dropped
        if isinstance(source, ToolMessage) or (isinstance(source, AIMessage) and source.tool_calls):
            assert source.id in kept_ids
        if isinstance(source, SystemMessage) or ids.index(source.id) >= last_turn_from:
            assert source.id in kept_ids


def test_prune_messages_keeps_structure_and_meets_budget(tiny_engine) -> None:
    history = chat_history()
    before = copy.deepcopy(history)
    total = message_tokens(history)
    max_tokens = total // 3
    pruned = prune_messages(history, engine=tiny_engine, max_tokens=max_tokens)
    assert history == before
    assert message_tokens(pruned) <= max_tokens
    last_turn_from = max(i for i, m in enumerate(history) if isinstance(m, HumanMessage))
    check_pruned(pruned, history, last_turn_from)
    assert message_tokens(pruned[:-2]) < message_tokens(history[:last_turn_from])


def test_prune_messages_keeps_more_turns_and_list_content(tiny_engine) -> None:
    history = chat_history()
    last_turn_from = [i for i, m in enumerate(history) if isinstance(m, HumanMessage)][-5]
    verbatim_tokens = message_tokens(history[:1] + history[last_turn_from:])
    max_tokens = verbatim_tokens + 100
    query = "What does the essay say about startups?"
    pruned = prune_messages(history, query, engine=tiny_engine, max_tokens=max_tokens, keep_last_turns=5)
    check_pruned(pruned, history, last_turn_from)
    assert message_tokens(pruned) <= max_tokens
    image = next(m for m in pruned if m.id == "h3").content[-1]  # compressed or not, the image block stays
    assert image == history[9].content[1]


def test_prune_messages_over_budget_keeps_only_the_protected_messages(tiny_engine, caplog) -> None:
    history = chat_history()
    before = copy.deepcopy(history)
    with caplog.at_level(logging.WARNING, logger="cprs_integrations.langchain.memory"):
        pruned = prune_messages(history, engine=NoEngine(), max_tokens=10)
    assert "above max_tokens=10" in caplog.text
    assert history == before
    last_turn_from = max(i for i, m in enumerate(history) if isinstance(m, HumanMessage))
    check_pruned(pruned, history, last_turn_from)
    older = {m.id: m for m in pruned[1:-2]}
    assert set(older) == {"h3", "a1", "t1", "a4", "t4", "a7", "t7"}
    assert older.pop("h3").content == [history[9].content[1]]  # the image block stays, its text went
    assert all(m.content == "" for m in older.values())


async def test_prune_messages_within_budget_or_without_query(tiny_engine) -> None:
    history = chat_history()
    pruned = prune_messages(history, engine=NoEngine(), max_tokens=10**6)
    assert pruned == history and all(a is not b for a, b in zip(pruned, history))
    assert await aprune_messages(history, engine=NoEngine(), max_tokens=10**6) == history
    no_human = [SystemMessage("Be brief."), AIMessage("Hello! " * 200)]
    with pytest.raises(ValueError, match="no query"):
        prune_messages(no_human, engine=tiny_engine, max_tokens=20, keep_last_turns=0)
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        prune_messages(history, " ", engine=tiny_engine, max_tokens=20)
    with pytest.raises(ValueError, match="max_tokens must be a non-negative integer"):
        prune_messages(history, engine=tiny_engine, max_tokens=-1)


async def test_message_pruner_runnable(tiny_engine) -> None:
    history = chat_history()
    max_tokens = message_tokens(history) // 2
    pruner = CPRSMessagePruner(engine=tiny_engine, max_tokens=max_tokens, keep_last_turns=2)
    expected = prune_messages(history, engine=tiny_engine, max_tokens=max_tokens, keep_last_turns=2)
    assert len(expected) < len(history) or message_tokens(expected) < message_tokens(history)
    assert pruner.invoke(history) == expected
    assert "engine" not in pruner.model_dump()

    # In chains: a prompt's messages in, a chat model after it.
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history")])
    assert await asyncio.wait_for((prompt | pruner).ainvoke({"history": history}), timeout=60) == expected
    chain = prompt | pruner | ParrotFakeChatModel() | StrOutputParser()
    assert chain.invoke({"history": history}) == "".join(text_parts(history[-1]))


def test_prune_messages_start_on_human_drops_the_leading_ai_and_tool_messages(caplog) -> None:
    history = chat_history()
    pruned = prune_messages(history, engine=NoEngine(), max_tokens=10)
    assert [m.id for m in pruned][:4] == ["system", "a1", "t1", "h3"]  # compressed human turns went first
    started = prune_messages(history, engine=NoEngine(), max_tokens=10, start_on="human")
    assert [m.id for m in started] == ["system", "h3", "a4", "t4", "a7", "t7", "h9", "r9"]
    assert started == [m for m in pruned if m.id not in ("a1", "t1")]  # the tool call goes with its result

    opening = [SystemMessage("Be brief.", id="s"), AIMessage("Hi! How can I help?", id="a"), HumanMessage("Hi", id="h")]
    assert [m.id for m in prune_messages(opening, engine=NoEngine(), max_tokens=10**6, start_on="human")] == ["s", "h"]
    only_ai = [SystemMessage("Be brief.", id="s"), AIMessage("Hello.", id="a")]
    with caplog.at_level(logging.WARNING, logger="cprs_integrations.langchain.memory"):
        assert prune_messages(only_ai, engine=NoEngine(), max_tokens=10**6, start_on="human") == only_ai
    assert "no HumanMessage" in caplog.text
    with pytest.raises(ValueError, match="start_on must be None or 'human'"):
        prune_messages(history, engine=NoEngine(), max_tokens=10, start_on="ai")
    pruner = CPRSMessagePruner(engine=NoEngine(), max_tokens=10, start_on="human")
    assert pruner.invoke(history) == started


def same_role_neighbours(messages: list[BaseMessage]) -> list[tuple[str | None, str | None]]:
    """Ids of the human / human and AI / AI pairs side by side (system messages skipped)."""
    conversation = [m for m in messages if not isinstance(m, SystemMessage)]
    return [
        (a.id, b.id)
        for a, b in zip(conversation, conversation[1:])
        if (isinstance(a, HumanMessage) and isinstance(b, HumanMessage))
        or (isinstance(a, AIMessage) and isinstance(b, AIMessage))
    ]


async def test_keep_alternation_keeps_a_unit_between_two_human_turns_within_budget(tiny_engine) -> None:
    history = chat_history()
    assert same_role_neighbours(history) == []
    max_tokens = message_tokens(history) // 3
    last_turn_from = max(i for i, m in enumerate(history) if isinstance(m, HumanMessage))

    dropped = prune_messages(history, engine=tiny_engine, max_tokens=max_tokens, keep_alternation=False)
    human_pairs = [
        (a, b) for a, b in same_role_neighbours(dropped) if a is not None and b is not None and a[0] == b[0] == "h"
    ]
    assert human_pairs, "the history must put two human messages side by side without the option"

    kept = prune_messages(history, engine=tiny_engine, max_tokens=max_tokens)
    assert same_role_neighbours(kept) == []
    assert message_tokens(kept) <= max_tokens
    check_pruned(kept, history, last_turn_from)
    ids = [m.id for m in kept]
    for a, b in human_pairs:  # something now stands between the two human messages (never a merge)
        assert ids.index(b) - ids.index(a) > 1
    by_id = {m.id: m for m in history}
    restored = [m for m in kept if m.id not in {d.id for d in dropped}]
    assert restored and all(m.content and "".join(text_parts(m)) != "".join(text_parts(by_id[m.id])) for m in restored)

    # The runnable has the option too, with the same default; the async path gives the same result.
    assert CPRSMessagePruner(engine=tiny_engine, max_tokens=max_tokens).invoke(history) == kept
    off = CPRSMessagePruner(engine=tiny_engine, max_tokens=max_tokens, keep_alternation=False)
    assert off.invoke(history) == dropped
    assert await aprune_messages(history, engine=tiny_engine, max_tokens=max_tokens) == kept
    with pytest.raises(ValueError, match="keep_alternation"):
        CPRSMessagePruner(engine=tiny_engine, max_tokens=max_tokens, keep_alternation="yes")
    with pytest.raises(ValueError, match="keep_alternation must be True or False"):
        prune_messages(history, engine=tiny_engine, max_tokens=max_tokens, keep_alternation=1)


def test_keep_alternation_keeps_a_finer_piece_when_the_unit_does_not_fit(tiny_engine, caplog) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/chart.png"}}
    answer = (
        "The essay says that startups grow fast when founders talk to users every single week. "
        "It also says that most good ideas look bad at first."
    )
    history = [
        HumanMessage([{"type": "text", "text": "What does the essay say about how startups grow?"}, image], id="h0"),
        AIMessage(answer, id="a0"),
        HumanMessage("And about investors?", id="h1"),
    ]
    verbatim = count_tokens("And about investors?")
    # A threshold above every unit's score empties the older text: only the kept unit remains (the threshold is
    # no floor for it: the shape of the conversation comes first).
    for room in (2, 8, 20):
        off = prune_messages(
            history, engine=tiny_engine, max_tokens=verbatim + room, score_threshold=0.999, keep_alternation=False
        )
        assert [m.id for m in off] == ["h0", "h1"]
        on = prune_messages(history, engine=tiny_engine, max_tokens=verbatim + room, score_threshold=0.999)
        assert [m.id for m in on] == ["h0", "a0", "h1"]
        assert message_tokens(on) <= verbatim + room
        assert on[1].content and all(piece in answer for piece in on[1].content.split(SEPARATOR))
        if room == 2:  # no sentence fits in 2 tokens: a finer piece of the best one
            assert on[1].content not in (answer.split(". ")[0] + ".", answer.split(". ")[1])
    with caplog.at_level(logging.WARNING, logger="cprs_integrations.langchain.memory"):
        none_left = prune_messages(history, engine=NoEngine(), max_tokens=verbatim)
    assert [m.id for m in none_left] == ["h0", "h1"]
    assert "no budget left to keep a unit" in caplog.text


class SpyEngine:
    """A real engine that records the options of each scoring call (compress, acompress or score)."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.calls = engine, []

    def score(self, query: str, texts: list[str], options: Any = None, **overrides: Any) -> Any:
        self.calls.append(CompressionOptions.build(options, **overrides))
        return self.engine.score(query, texts, options, **overrides)

    async def ascore(self, query: str, texts: list[str], options: Any = None, **overrides: Any) -> Any:
        self.calls.append(CompressionOptions.build(options, **overrides))
        return await self.engine.ascore(query, texts, options, **overrides)

    def select(self, scored: Any, options: Any = None, **overrides: Any) -> Any:
        return self.engine.select(scored, options, **overrides)

    def compress(self, query: str, texts: list[str], options: Any = None, **overrides: Any) -> Any:
        self.calls.append(CompressionOptions.build(options, **overrides))
        return self.engine.compress(query, texts, options, **overrides)

    async def acompress(self, query: str, texts: list[str], options: Any = None, **overrides: Any) -> Any:
        self.calls.append(CompressionOptions.build(options, **overrides))
        return await self.engine.acompress(query, texts, options, **overrides)


async def test_lexical_weight_reaches_the_engine(tiny_engine, documents) -> None:
    spy = SpyEngine(tiny_engine)
    CPRSDocumentCompressor(engine=spy).compress_documents(documents, QUERY)
    await CPRSDocumentCompressor(engine=spy, lexical_weight=0).acompress_documents(documents, QUERY)
    CPRSRetriever(documents=documents, engine=spy, lexical_weight=1.5).invoke(QUERY)
    prune_messages(chat_history(), engine=spy, max_tokens=200, lexical_weight=0.25)
    assert [call.lexical_weight for call in spy.calls] == [0.5, 0.0, 1.5, 0.25]


def test_every_adapter_rejects_unknown_arguments(tiny_engine, documents) -> None:
    for build in (
        lambda: CPRSRetriever(documents=documents, engine=tiny_engine, top_n=2),
        lambda: CPRSMessagePruner(engine=tiny_engine, max_tokens=10, top_n=2),
        lambda: CPRSDocumentCompressor(engine=tiny_engine, top_n=2),
    ):
        with pytest.raises(ValueError, match="top_n"):
            build()
    with pytest.raises(TypeError, match="top_n"):
        prune_messages(chat_history(), engine=tiny_engine, max_tokens=10, top_n=2)


def test_score_threshold_reaches_the_engine_from_every_adapter(tiny_engine, documents) -> None:
    spy = SpyEngine(tiny_engine)
    CPRSDocumentCompressor(engine=spy, score_threshold=0.3).compress_documents(documents, QUERY)
    CPRSRetriever(documents=documents, engine=spy, score_threshold=0.4).invoke(QUERY)
    prune_messages(chat_history(), engine=spy, max_tokens=200, score_threshold=0.5)
    assert [call.score_threshold for call in spy.calls] == [0.3, 0.4, 0.5]


def test_relevance_score_where_rerankers_put_it_and_upstream_kept_when_asked(tiny_engine, documents) -> None:
    upstream = [d.model_copy(update={"metadata": {**d.metadata, "relevance_score": 0.42}}) for d in documents]
    out = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.5).compress_documents(upstream, QUERY)
    assert out and all(d.metadata["relevance_score"] == d.metadata["cprs"]["score"] for d in out)
    kept = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.5, keep_retrieval_score=True)
    assert all(d.metadata["relevance_score"] == 0.42 for d in kept.compress_documents(upstream, QUERY))
    spans = CPRSRetriever(documents=documents, engine=tiny_engine, k=2).invoke(QUERY)
    assert all(d.metadata["relevance_score"] == d.metadata["cprs"]["score"] for d in spans)


def test_metadata_that_cannot_be_deep_copied_is_kept_by_reference(tiny_engine, documents) -> None:
    import threading

    lock = threading.Lock()
    docs = [d.model_copy(update={"metadata": {**d.metadata, "lock": lock, "tags": ["a"]}}) for d in documents]
    out = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.5).compress_documents(docs, QUERY)
    assert out and all(d.metadata["lock"] is lock for d in out)
    assert all(d.metadata["tags"] == ["a"] and d.metadata["tags"] is not docs[0].metadata["tags"] for d in out)


def test_a_users_own_cprs_metadata_is_refused_before_scoring(tiny_engine, documents) -> None:
    class NoEngine:
        def compress(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("scored documents that should have been refused")

        async def acompress(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("scored documents that should have been refused")

    docs = [*documents[:2], documents[2].model_copy(update={"metadata": {"cprs": "customer-42"}})]
    with pytest.raises(ValueError, match=r"documents\[2\]\.metadata\['cprs'\]"):
        CPRSDocumentCompressor(engine=NoEngine()).compress_documents(docs, QUERY)
    # Figures of an earlier CPRS step (a chained compressor) are ours: replaced, not refused.
    first = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.8).compress_documents(documents, QUERY)
    second = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.5).compress_documents(first, QUERY)
    assert second and all(
        d.metadata["cprs"]["original_tokens"] <= count_tokens(f.page_content)
        for d, f in zip(second, [f for f in first if f.id in {s.id for s in second}])
    )


def test_compress_options_still_works_for_one_release(tiny_engine) -> None:
    compressor = CPRSDocumentCompressor(engine=tiny_engine, target_tokens=50)
    with pytest.warns(DeprecationWarning, match="compression_options"):
        old = compressor.compress_options()
    assert old["target_tokens"] == 50 and old["target_ratio"] is None


class ChainRuns(BaseCallbackHandler):
    """Records the names, inputs and outputs of chain runs."""

    def __init__(self) -> None:
        self.started: list[tuple[str, dict[str, Any]]] = []
        self.ended: list[dict[str, Any]] = []

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        self.started.append((kwargs.get("name") or (serialized or {}).get("name"), inputs))

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        self.ended.append(outputs)


async def test_the_compression_step_is_a_traced_run_under_the_retriever(tiny_engine, vector_retriever) -> None:
    runs = ChainRuns()
    compressor = CPRSDocumentCompressor(engine=tiny_engine, target_ratio=0.3)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=vector_retriever)
    out = retriever.invoke(QUERY, config={"callbacks": [runs]})
    await retriever.ainvoke(QUERY, config={"callbacks": [runs]})
    started = [inputs for name, inputs in runs.started if name == "CPRSDocumentCompressor"]
    assert len(started) == 2 and started[0]["query"] == QUERY and started[0]["documents"] > 0
    ended = [o for o in runs.ended if isinstance(o, dict) and "compressed_tokens" in o]
    assert len(ended) == 2 and ended[0]["documents"] == out
    assert 0 < ended[0]["compressed_tokens"] < ended[0]["original_tokens"]


def test_the_pruner_round_trips_through_langchain_serialization(tiny_engine) -> None:
    from langchain_core.load import dumpd, load

    pruner = CPRSMessagePruner(max_tokens=300, keep_last_turns=2, granularity="paragraph", score_threshold=0.1)
    restored = load(dumpd(pruner), valid_namespaces=["cprs_integrations"], allowed_objects=[CPRSMessagePruner])
    assert isinstance(restored, CPRSMessagePruner)
    assert restored._options() == pruner._options() and restored.max_tokens == 300 and restored.keep_last_turns == 2


def test_the_compressor_round_trips_through_langchain_serialization() -> None:
    from langchain_core.load import dumpd, load

    compressor = CPRSDocumentCompressor(granularity="paragraph", target_tokens=120, per_document_budget=True)
    restored = load(dumpd(compressor), valid_namespaces=["cprs_integrations"], allowed_objects=[CPRSDocumentCompressor])
    assert isinstance(restored, CPRSDocumentCompressor)
    assert restored.compression_options() == compressor.compression_options()


def test_adapter_fields_run_the_same_checks_as_the_options() -> None:
    import numpy as np

    for bad in ({"target_ratio": True}, {"target_tokens": "12"}, {"instruction": "  "}, {"token_counter": 5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CPRSDocumentCompressor(**bad)
    assert CPRSDocumentCompressor(target_tokens=np.int64(12)).compression_options().target_tokens == 12
