"""The LlamaIndex adapters with real LlamaIndex components, a tiny random critic and offline MiniLM embeddings.

The critic has random weights, so the tests assert invariants (kept text made of input slices, order, budgets,
untouched inputs, metadata), never what is kept.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.memory import Memory
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import ImageNode, MetadataMode, NodeRelationship, NodeWithScore, QueryBundle, TextNode

from cprs_integrations.engine.budget import resolve_token_counter
from cprs_integrations.llama_index import CPRSMemoryBlock, CPRSNodePostprocessor, CPRSRetriever

QUERY = "How should a startup find its first users?"
SEPARATOR = " ... "
count_tokens = resolve_token_counter("o200k_base")


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def chunks(long_text: str) -> list[str]:
    """Six chunks of about 900 characters, cut at line breaks."""
    out: list[str] = []
    for line in long_text.splitlines():
        if out and len(out[-1]) < 900:
            out[-1] += "\n" + line
        else:
            out.append(line)
    return [chunk.strip() for chunk in out[:6]]


@pytest.fixture
def nodes(chunks: list[str]) -> list[NodeWithScore]:
    """Retrieved-looking nodes with metadata, excluded keys and an embedding."""
    return [
        NodeWithScore(
            node=TextNode(
                id_=f"node-{i}",
                text=text,
                metadata={"title": f"Essay part {i}", "tags": ["essay", str(i)]},
                excluded_llm_metadata_keys=["tags"],
                embedding=[0.1 * i] * 4,
            ),
            score=1.0 - 0.1 * i,
        )
        for i, text in enumerate(chunks)
    ]


@pytest.fixture(scope="module")
def embed_model() -> Any:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from cprs_integrations.models.testing import minilm_dir

    return HuggingFaceEmbedding(model_name=str(minilm_dir()), device="cpu")


@pytest.fixture(scope="module")
def documents(chunks: list[str]) -> list[Document]:
    return [Document(text=text, metadata={"part": i}) for i, text in enumerate(chunks)]


@pytest.fixture(scope="module")
def index(documents: list[Document], embed_model: Any) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(documents, embed_model=embed_model)


class _Recorder(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def recorder() -> Any:
    root = get_dispatcher()
    handler = _Recorder()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


# ------------------------------------------------------------------------------------------------------- helpers


def assert_made_of_slices(node: TextNode, source: str) -> None:
    """The node's text is exactly its kept slices of ``source``, in order, joined by the separator."""
    spans = node.metadata["cprs"]["spans"]
    assert spans, "a returned node keeps at least one span"
    assert all(0 <= s < e <= len(source) for s, e, _ in spans)
    assert all(e1 < s2 for (_, e1, _), (s2, _, _) in zip(spans, spans[1:])), "sorted, disjoint, not adjacent"
    assert node.text == SEPARATOR.join(source[s:e] for s, e, _ in spans)


def dumps(items: list[NodeWithScore]) -> list[dict[str, Any]]:
    return [item.model_dump() for item in items]


# ------------------------------------------------------------------------------------------------ postprocessor


def test_class_name_and_documented_fields() -> None:
    assert CPRSNodePostprocessor.class_name() == "CPRSNodePostprocessor"
    for name, field in CPRSNodePostprocessor.model_fields.items():
        if name != "callback_manager":
            assert field.description, f"{name} has no description"
    assert CPRSNodePostprocessor().to_dict()["class_name"] == "CPRSNodePostprocessor"


def test_bad_options_name_the_value() -> None:
    with pytest.raises(ValueError, match="'word'"):
        CPRSNodePostprocessor(granularity="word")
    with pytest.raises(ValueError, match="not both"):
        CPRSNodePostprocessor(target_ratio=0.2, target_tokens=10)
    with pytest.raises(ValueError, match="mode='tags'"):
        CPRSNodePostprocessor(mode="tags", target_ratio=0.2)
    with pytest.raises(ValueError, match=r"1\.5"):
        CPRSNodePostprocessor(target_ratio=1.5)
    with pytest.raises(TypeError, match="CPRSEngine"):
        CPRSNodePostprocessor(engine="not an engine")
    with pytest.raises(ValueError, match="lexical_weight"):
        CPRSNodePostprocessor(lexical_weight=-1)
    with pytest.raises(ValueError, match="lexical_weight"):
        CPRSRetriever([], lexical_weight=float("inf"))
    with pytest.raises(ValueError, match="lexical_weight"):
        CPRSMemoryBlock(lexical_weight=-0.1)


def test_engine_excludes_model(tiny_engine: Any, tiny_encoder_dir: Any) -> None:
    with pytest.raises(ValueError, match="not both"):
        CPRSNodePostprocessor(engine=tiny_engine, model="some/critic")
    with pytest.raises(ValueError, match="not both"):
        CPRSRetriever([], engine=tiny_engine, engine_kwargs={"device": "cpu"})
    with pytest.raises(ValueError, match="not both"):
        CPRSMemoryBlock(engine=tiny_engine, model="some/critic")
    assert CPRSNodePostprocessor(model=tiny_encoder_dir).model == str(tiny_encoder_dir), "paths become strings"


def test_kept_text_is_input_slices_in_input_order(tiny_engine: Any, nodes: list[NodeWithScore]) -> None:
    before = copy.deepcopy(nodes)
    out = CPRSNodePostprocessor(engine=tiny_engine).postprocess_nodes(nodes, query_str=QUERY)

    assert out
    sources = {item.node.node_id: item.node for item in before}
    ids = [item.node.node_id for item in out]
    assert ids == [item.node.node_id for item in before if item.node.node_id in ids], "input order kept"
    for item in out:
        source = sources[item.node.node_id]
        assert_made_of_slices(item.node, source.text)
        figures = item.node.metadata["cprs"]
        assert figures["original_tokens"] == count_tokens(source.text)
        assert figures["compressed_tokens"] == count_tokens(item.node.text)
        assert figures["granularity"] == "sentence"
        assert figures["ratio"] == pytest.approx(figures["original_tokens"] / figures["compressed_tokens"])
        assert 0.0 <= item.score <= 1.0
        # the source metadata is kept, our figures are hidden from the LLM and the embedding model
        assert {k: v for k, v in item.node.metadata.items() if k != "cprs"} == source.metadata
        assert item.node.excluded_llm_metadata_keys == ["tags", "cprs"]
        assert "cprs" in item.node.excluded_embed_metadata_keys
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            content = item.node.get_content(metadata_mode=mode)
            assert "original_tokens" not in content and "Essay part" in content
        assert item.node.embedding == source.embedding
    # the caller's nodes, metadata and excluded keys are untouched, and never shared with the output
    assert dumps(nodes) == dumps(before)
    assert not {id(item.node) for item in out} & {id(item.node) for item in nodes}
    assert not {id(item.node.metadata) for item in out} & {id(item.node.metadata) for item in nodes}


def test_default_budget_is_a_fifth_across_all_nodes(tiny_engine: Any, nodes: list[NodeWithScore]) -> None:
    out = CPRSNodePostprocessor(engine=tiny_engine).postprocess_nodes(nodes, query_str=QUERY)
    total = sum(count_tokens(item.node.text) for item in nodes)
    kept = sum(item.node.metadata["cprs"]["compressed_tokens"] for item in out)
    assert 0 < kept <= math.floor(0.2 * total + 1e-9)


def test_token_budget_across_nodes_and_drop_empty(tiny_engine: Any, nodes: list[NodeWithScore]) -> None:
    nodes = [*nodes, NodeWithScore(node=TextNode(id_="blank", text="  \n "), score=0.1)]
    keep_all = CPRSNodePostprocessor(engine=tiny_engine, target_tokens=60, drop_empty=False)
    out = keep_all.postprocess_nodes(nodes, query_str=QUERY)
    assert [item.node.node_id for item in out] == [item.node.node_id for item in nodes]
    assert 0 < sum(item.node.metadata["cprs"]["compressed_tokens"] for item in out) <= 60
    empty = [item for item in out if not item.node.text]
    assert "blank" in {item.node.node_id for item in empty}
    assert all(item.node.metadata["cprs"]["spans"] == [] for item in empty)

    dropped = CPRSNodePostprocessor(engine=tiny_engine, target_tokens=60).postprocess_nodes(nodes, query_str=QUERY)
    assert [item.node.node_id for item in dropped] == [item.node.node_id for item in out if item.node.text]


def test_per_node_budget(tiny_engine: Any, nodes: list[NodeWithScore]) -> None:
    pp = CPRSNodePostprocessor(engine=tiny_engine, target_ratio=0.3, per_node_budget=True, drop_empty=False)
    out = pp.postprocess_nodes(nodes, query_str=QUERY)
    assert len(out) == len(nodes)
    for item in out:
        figures = item.node.metadata["cprs"]
        assert figures["compressed_tokens"] <= math.floor(0.3 * figures["original_tokens"] + 1e-9)


def test_sort_by_score(tiny_engine: Any, nodes: list[NodeWithScore]) -> None:
    pp = CPRSNodePostprocessor(engine=tiny_engine, target_ratio=0.5, sort_by_score=True)
    scores = [item.score for item in pp.postprocess_nodes(nodes, query_str=QUERY)]
    assert len(scores) > 1 and scores == sorted(scores, reverse=True)


def test_documents_and_non_text_nodes(tiny_engine: Any, chunks: list[str]) -> None:
    image = ImageNode(id_="image", image_url="https://example.com/a.png", text="a caption")
    document = Document(id_="doc", text=chunks[0], metadata={"part": 0})
    given = [NodeWithScore(node=image, score=0.5), NodeWithScore(node=document, score=0.4)]
    before = copy.deepcopy(given)
    out = CPRSNodePostprocessor(engine=tiny_engine, target_ratio=0.5).postprocess_nodes(given, query_str=QUERY)

    assert out[0].node is image and out[0].score == 0.5, "non-text nodes pass through unchanged"
    assert isinstance(out[1].node, Document)
    assert out[1].node.text_resource.text == out[1].node.text
    assert out[1].node.text == SEPARATOR.join(chunks[0][s:e] for s, e, _ in out[1].node.metadata["cprs"]["spans"])
    assert dumps(given) == dumps(before)


def test_empty_nodes_and_missing_query(tiny_engine: Any, nodes: list[NodeWithScore]) -> None:
    pp = CPRSNodePostprocessor(engine=tiny_engine)
    assert pp.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValueError, match="query"):
        pp.postprocess_nodes(nodes)


async def test_async_empty_nodes_and_missing_query(tiny_engine: Any, nodes: list[NodeWithScore]) -> None:
    pp = CPRSNodePostprocessor(engine=tiny_engine)
    assert await pp.apostprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValueError, match="query"):
        await pp.apostprocess_nodes(nodes)


async def test_async_equals_sync(tiny_engine: Any, nodes: list[NodeWithScore]) -> None:
    pp = CPRSNodePostprocessor(engine=tiny_engine, target_ratio=0.3)
    sync = pp.postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    before = copy.deepcopy(nodes)
    asynchronous = await pp.apostprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    assert dumps(asynchronous) == dumps(sync)
    assert dumps(nodes) == dumps(before)


def test_rerank_events(tiny_engine: Any, nodes: list[NodeWithScore], recorder: Any) -> None:
    out = CPRSNodePostprocessor(engine=tiny_engine).postprocess_nodes(nodes, query_str=QUERY)
    starts = [e for e in recorder.events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in recorder.events if isinstance(e, ReRankEndEvent)]
    assert len(starts) == 1 and len(ends) == 1
    assert starts[0].query.query_str == QUERY and len(starts[0].nodes) == len(nodes)
    assert starts[0].model_name == str(tiny_engine.critic.name_or_path)
    assert [n.node.node_id for n in ends[0].nodes] == [n.node.node_id for n in out]
    assert starts[0].span_id and starts[0].span_id == ends[0].span_id, "both events inside one span"


async def test_async_rerank_events(tiny_engine: Any, nodes: list[NodeWithScore], recorder: Any) -> None:
    await CPRSNodePostprocessor(engine=tiny_engine).apostprocess_nodes(nodes, query_str=QUERY)
    kinds = [type(e) for e in recorder.events if isinstance(e, (ReRankStartEvent, ReRankEndEvent))]
    assert kinds == [ReRankStartEvent, ReRankEndEvent]


# ---------------------------------------------------------------------------------------------------- pipelines


def _check_sources(source_nodes: list[NodeWithScore], documents: list[Document]) -> None:
    texts = {d.text for d in documents}
    assert source_nodes
    for item in source_nodes:
        spans = item.node.metadata["cprs"]["spans"]
        assert any(item.node.text == SEPARATOR.join(t[s:e] for s, e, _ in spans) for t in texts)


def test_query_engine(tiny_engine: Any, index: VectorStoreIndex, documents: list[Document]) -> None:
    pp = CPRSNodePostprocessor(engine=tiny_engine, target_ratio=0.3)
    query_engine = index.as_query_engine(similarity_top_k=4, node_postprocessors=[pp], llm=MockLLM())
    response = query_engine.query(QUERY)
    _check_sources(response.source_nodes, documents)
    # MockLLM echoes its prompt: the compressed text reaches the LLM, our figures do not
    assert response.source_nodes[0].node.text in str(response)
    assert "original_tokens" not in str(response)


async def test_async_query_engine(tiny_engine: Any, index: VectorStoreIndex, documents: list[Document]) -> None:
    pp = CPRSNodePostprocessor(engine=tiny_engine, target_ratio=0.3)
    query_engine = index.as_query_engine(similarity_top_k=4, node_postprocessors=[pp], llm=MockLLM())
    response = await query_engine.aquery(QUERY)
    _check_sources(response.source_nodes, documents)
    sync = query_engine.query(QUERY)
    assert [n.node.text for n in response.source_nodes] == [n.node.text for n in sync.source_nodes]


def test_context_chat_engine(tiny_engine: Any, index: VectorStoreIndex, documents: list[Document]) -> None:
    pp = CPRSNodePostprocessor(engine=tiny_engine, target_ratio=0.3)
    chat_engine = index.as_chat_engine(chat_mode="context", node_postprocessors=[pp], llm=MockLLM())
    response = chat_engine.chat(QUERY)
    _check_sources(response.source_nodes, documents)
    assert response.source_nodes[0].node.text in str(response)


# ---------------------------------------------------------------------------------------------------- retriever


def test_retriever_returns_best_spans(tiny_engine: Any, documents: list[Document]) -> None:
    before = copy.deepcopy(documents)
    retriever = CPRSRetriever(documents, engine=tiny_engine, similarity_top_k=3)
    out = retriever.retrieve(QUERY)

    assert 0 < len(out) <= 3
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)
    by_id = {d.doc_id: d for d in documents}
    for item in out:
        figures = item.node.metadata["cprs"]
        source = by_id[figures["source_node_id"]]
        assert item.node.text == source.text[figures["start"] : figures["end"]]
        assert (item.node.start_char_idx, item.node.end_char_idx) == (figures["start"], figures["end"])
        assert item.score == figures["score"]
        assert item.node.relationships[NodeRelationship.SOURCE].node_id == source.doc_id
        assert item.node.metadata["part"] == source.metadata["part"]
        assert "cprs" in item.node.excluded_llm_metadata_keys
    assert [d.model_dump() for d in documents] == [d.model_dump() for d in before]


async def test_retriever_async_equals_sync(tiny_engine: Any, documents: list[Document]) -> None:
    retriever = CPRSRetriever(documents, engine=tiny_engine, target_tokens=200, similarity_top_k=10)
    sync = retriever.retrieve(QUERY)
    asynchronous = await retriever.aretrieve(QUERY)
    assert dumps(asynchronous) == dumps(sync)
    assert sum(count_tokens(n.node.text) for n in sync) <= 200


def test_retriever_query_engine(tiny_engine: Any, documents: list[Document]) -> None:
    retriever = CPRSRetriever(documents, engine=tiny_engine)
    response = RetrieverQueryEngine.from_args(retriever, llm=MockLLM()).query(QUERY)
    assert 0 < len(response.source_nodes) <= 4
    assert all(n.node.text in str(response) for n in response.source_nodes)


def test_retriever_bad_arguments(tiny_engine: Any, documents: list[Document]) -> None:
    with pytest.raises(TypeError, match="str"):
        CPRSRetriever("just a string", engine=tiny_engine)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="similarity_top_k"):
        CPRSRetriever(documents, engine=tiny_engine, similarity_top_k=0)
    assert CPRSRetriever([], engine=tiny_engine).retrieve(QUERY) == []


# ------------------------------------------------------------------------------------------------------- memory


def _conversation(long_text: str) -> list[ChatMessage]:
    paragraphs = [p.strip() for p in long_text.split("\n\n") if len(p.strip()) > 200]
    messages = [ChatMessage(role="system", content="You are a careful assistant who cites the essay.")]
    for i, paragraph in enumerate(paragraphs[:8]):
        messages.append(ChatMessage(role="user", content=f"What does part {i} of the essay say?"))
        messages.append(ChatMessage(role="assistant", content=paragraph))
    messages.append(ChatMessage(role="user", content=QUERY))
    return messages


async def test_memory_block_in_memory(tiny_engine: Any, long_text: str) -> None:
    block = CPRSMemoryBlock(engine=tiny_engine, max_tokens=150)
    memory = Memory.from_defaults(token_limit=600, token_flush_size=200, memory_blocks=[block])
    conversation = _conversation(long_text)
    before = copy.deepcopy(conversation)
    await memory.aput_messages(conversation)

    # flushing happened; the latest turn stayed in short-term memory
    assert block.messages and block.messages[0].role == "system"
    assert len(await memory.aget_all(status=None)) == len(conversation), "flushed messages are archived, not lost"
    messages = await memory.aget()
    assert messages[-1].content == QUERY
    assert QUERY not in {m.content for m in block.messages}

    # the block's content: the system message verbatim, then compressed history, under max_tokens
    content = await block.aget(messages[1:], session_id=memory.session_id)
    assert content.startswith("system: You are a careful assistant")
    history = "\n\n".join(f"{m.role.value}: {m.content}" for m in block.messages if m.role != "system")
    count = resolve_token_counter("cl100k_base")  # the block's default counter, Memory's tokenizer
    assert count(content) <= 150 < count(history)
    kept = content.split("\n\n", 1)[1]
    assert all(piece in history for piece in kept.split(SEPARATOR))
    assert content in messages[0].content, "Memory put the block into the system message"
    # the caller's messages: only the session tag LlamaIndex adds
    for message, original in zip(conversation, before):
        assert message.content == original.content and message.role == original.role


async def test_memory_block_truncates_by_compressing(tiny_engine: Any, long_text: str) -> None:
    block = CPRSMemoryBlock(engine=tiny_engine, max_tokens=300)
    await block.aput(_conversation(long_text)[:-1])
    query = [ChatMessage(role="user", content=QUERY)]
    content = await block.aget(query)
    count = resolve_token_counter("cl100k_base")
    assert 0 < count(content) <= 300
    smaller = await block.atruncate(content, 120)
    assert smaller is not None and count(smaller) <= count(content) - 120
    assert smaller.startswith("system: You are a careful assistant")
    assert await block.atruncate("not from this block", 10) is None
    assert await block.atruncate(content, 10_000) is None


async def test_memory_block_without_query_keeps_latest_messages(tiny_engine: Any, long_text: str) -> None:
    block = CPRSMemoryBlock(engine=tiny_engine, max_tokens=200)
    conversation = [*_conversation(long_text)[1:-1], ChatMessage(role="assistant", content="Glad to help.")]
    await block.aput(conversation)
    content = await block.aget([])  # no user message: nothing to guide the critic
    assert content.endswith("assistant: Glad to help.")
    assert content in "\n\n".join(f"{m.role.value}: {m.content}" for m in conversation), "whole latest messages"
    assert resolve_token_counter("cl100k_base")(content) <= 200


# ------------------------------------------------------------------------------------------------------ imports


def test_import_does_not_load_torch_or_langchain() -> None:
    code = (
        "import sys, cprs_integrations.llama_index as m; "
        "m.CPRSNodePostprocessor(target_ratio=0.1); "
        "bad = [k for k in sys.modules if k == 'torch' or k.startswith(('langchain', 'transformers'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_missing_llama_index_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['llama_index.core'] = None\n"
        "try:\n    import cprs_integrations.llama_index\nexcept ImportError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert 'pip install "cprs-integrations[llama-index]"' in done.stdout


def test_keep_retrieval_score_keeps_the_retrievers_score(tiny_engine: Any, nodes: list[NodeWithScore]) -> None:
    by_id = {item.node.node_id: item.score for item in nodes}
    default = CPRSNodePostprocessor(engine=tiny_engine, target_ratio=0.5).postprocess_nodes(nodes, query_str=QUERY)
    assert default and all(item.score == item.node.metadata["cprs"]["score"] for item in default)
    kept = CPRSNodePostprocessor(engine=tiny_engine, target_ratio=0.5, keep_retrieval_score=True).postprocess_nodes(
        nodes, query_str=QUERY
    )
    assert kept and all(item.score == by_id[item.node.node_id] for item in kept)
    assert all(0.0 <= item.node.metadata["cprs"]["score"] <= 1.0 for item in kept)


def test_retriever_rejects_unknown_arguments() -> None:
    with pytest.raises(TypeError, match="top_n"):
        CPRSRetriever([], top_n=2)


def test_span_offsets_of_a_chunk_node_are_document_offsets(tiny_engine: Any, documents: list[Document]) -> None:
    from llama_index.core.node_parser import SentenceSplitter

    document = documents[0]
    chunks = SentenceSplitter(chunk_size=64, chunk_overlap=0).get_nodes_from_documents([document])
    assert len(chunks) > 1 and chunks[-1].start_char_idx > 0
    out = CPRSRetriever(chunks[1:], engine=tiny_engine, similarity_top_k=5).retrieve(QUERY)
    assert out
    for item in out:
        figures = item.node.metadata["cprs"]
        chunk = next(c for c in chunks if c.node_id == figures["source_node_id"])
        assert item.node.text == chunk.text[figures["start"] : figures["end"]]  # offsets in the chunk's text
        start, end = item.node.start_char_idx, item.node.end_char_idx
        assert (start, end) == (chunk.start_char_idx + figures["start"], chunk.start_char_idx + figures["end"])
        assert document.text[start:end] == item.node.text  # offsets in the document
