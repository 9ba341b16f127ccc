"""Command line: ``cprs demo``, ``cprs compress``, ``cprs train``.

Examples:
    $ cprs demo
    $ cprs compress --query "Who wrote it?" --ratio 0.1 essay.txt
    $ echo "long text" | cprs compress --query "..." --tokens 200 --json
    $ cprs train --config cprs_integrations/training/configs/default.json --output runs/critic
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: cuda > mps > cpu); an explicit device that is missing is an error"
DTYPE_HELP = "auto (bf16 on CPUs with AMX / AVX-512-BF16, fp16 for decoder critics on GPU, else fp32) or a dtype name"

#: Command-line flags of the compression options: flag -> (option name, argparse type). Help and choices come from
#: :class:`CompressionOptions`, where each option is declared.
OPTION_FLAGS: dict[str, tuple[str, Any]] = {
    "--granularity": ("granularity", str),
    "--mode": ("mode", str),
    "--ratio": ("target_ratio", float),
    "--tokens": ("target_tokens", int),
    "--score-threshold": ("score_threshold", float),
    "--instruction": ("instruction", str),
    "--language": ("language", str),
    "--token-counter": ("token_counter", str),
    "--separator": ("separator", str),
    "--lexical-weight": ("lexical_weight", float),
}


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    from typing import Literal, get_args, get_origin

    from cprs_integrations.engine.options import CompressionOptions

    fields = CompressionOptions.model_fields
    for flag, (name, kind) in OPTION_FLAGS.items():
        field = fields[name]
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else None
        default = "" if field.default is None else f" (default: {field.default!r})"
        parser.add_argument(
            flag, dest=name, type=kind, default=None, choices=choices, help=f"{field.description}{default}"
        )
    parser.add_argument("--per-text-budget", action="store_true", help=fields["per_text_budget"].description)


def _options(args: argparse.Namespace) -> Any:
    from cprs_integrations.engine.options import CompressionOptions

    given = {name: getattr(args, name) for name, _ in OPTION_FLAGS.values() if getattr(args, name) is not None}
    return CompressionOptions(**given, per_text_budget=args.per_text_budget)


def _read_inputs(files: list[str], encoding: str) -> list[tuple[str, str]]:
    """(name, text) of each file, or of stdin when there is none; a UTF-8 byte-order mark is dropped (span
    offsets then count from the first character after it)."""
    if not files:
        return [("<stdin>", sys.stdin.read().removeprefix("\ufeff"))]
    inputs = []
    for name in files:
        path = Path(name)
        if path.is_dir():
            raise ValueError(f"{name} is a folder; pass text files (e.g. {name}/*.txt)")
        if not path.exists():
            raise FileNotFoundError(f"{name}: no such file")
        try:
            text = path.read_text(encoding="utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding)
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{name} is not valid {encoding} (byte {e.start}: {e.reason}); pass its encoding with --encoding"
            ) from None
        except LookupError:
            raise ValueError(f"unknown --encoding {encoding!r}") from None
        inputs.append((name, text))
    return inputs


def _compress(args: argparse.Namespace) -> int:
    from cprs_integrations.engine.engine import CPRSEngine

    options = _options(args)  # checked before the critic loads
    inputs = _read_inputs(args.files, args.encoding)
    engine = CPRSEngine.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    results = engine.compress(args.query, [text for _, text in inputs], options)
    names = [name for name, _ in inputs]
    if args.html:
        sections = [f"<h3>{html.escape(n)}</h3>{r.to_html(max_chars=None)}" for n, r in zip(names, results)]
        Path(args.html).write_text("<!doctype html><meta charset='utf-8'>" + "".join(sections), encoding="utf-8")
    if args.json:
        print(json.dumps([{"file": n, **r.to_dict()} for n, r in zip(names, results)], indent=2, ensure_ascii=False))
        return 0
    for name, result in zip(names, results):
        if len(results) > 1:
            print(f"==> {name} <==")
        print(result.text)
        ratio = "nothing kept" if not result.spans else f"{result.ratio:.1f}x"
        reason = f", {result.empty_reason}" if result.empty_reason else ""
        print(
            f"cprs: {name}: {result.original_tokens:,} -> {result.compressed_tokens:,} tokens ({ratio}{reason}), "
            f"{result.granularity_used}, {result.timings.get('total_s', 0.0):.2f} s",
            file=sys.stderr,
        )
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Compress the bundled sample (about 8.4K tokens of Wikipedia paragraphs) for its question."""
    import importlib.resources

    from cprs_integrations.engine.engine import CPRSEngine
    from cprs_integrations.engine.segment import collapse_whitespace

    data = importlib.resources.files("cprs_integrations") / "data"
    text = (data / "sample_wiki.txt").read_text(encoding="utf-8")
    facts = json.loads((data / "sample_wiki.json").read_text(encoding="utf-8"))
    engine = CPRSEngine.from_pretrained(args.model, device=args.device)
    print(f"critic: {engine}")
    print(f"query:  {facts['query']}  (answer: {facts['answer']})")
    for ratio in (0.1, 0.05):
        [result] = engine.compress(facts["query"], [text], granularity="sentence", target_ratio=ratio)
        seconds = result.timings["total_s"]
        print(
            f"\n--- budget mode, sentences, target_ratio={ratio}: {result.original_tokens} -> "
            f"{result.compressed_tokens} o200k tokens ({result.ratio:.1f}x) in {seconds:.2f} s "
            f"({result.original_tokens / seconds:,.0f} tokens/s)"
        )
        for span in result.span_texts:
            print(f"  [kept] {collapse_whitespace(span)}")
        print(f"  answer string kept: {facts['answer'].lower() in result.text.lower()}")
    [tags] = engine.compress(facts["query"], [text], mode="tags", granularity="sentence")
    print(
        f"\n--- tags mode (official argmax decoding, no budget): {tags.original_tokens} -> "
        f"{tags.compressed_tokens} tokens ({tags.ratio:.1f}x), {len(tags.spans)} spans; "
        f"answer string kept: {facts['answer'].lower() in tags.text.lower()}"
    )
    print(f"\nsample: {facts['source']}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from cprs_integrations.training.trainer import TrainConfig, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = TrainConfig.from_file(args.config)
    if args.seed is not None:
        config.seed = args.seed
    train(
        config,
        args.output,
        resume=args.resume,
        stop_after_minutes=args.stop_after_minutes,
        stop_at_step=args.stop_at_step,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cprs_integrations import __version__

    parser = argparse.ArgumentParser(prog="cprs", description="Query-guided context compression (QwenLong-CPRS).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    compress = commands.add_parser("compress", help="compress files (or stdin) for a query")
    compress.add_argument("files", nargs="*", help="text files; stdin when none")
    compress.add_argument("--query", required=True, help="what the user asks: it guides what is kept")
    _add_option_flags(compress)
    compress.add_argument("--model", default=None, help="critic folder or hub id (default: the embedded critic)")
    compress.add_argument("--device", default=None, help=DEVICE_HELP)
    compress.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    compress.add_argument("--encoding", default="utf-8", help="encoding of the input files (default: utf-8)")
    compress.add_argument("--json", action="store_true", help="print results as JSON (one object per file)")
    compress.add_argument(
        "--html", default=None, metavar="FILE", help="also write the texts with kept spans highlighted"
    )
    compress.set_defaults(func=_compress)

    demo = commands.add_parser("demo", help="compress the bundled sample document and print what was kept")
    demo.add_argument("--model", default=None, help="critic folder or hub id (default: the embedded critic)")
    demo.add_argument("--device", default=None, help=DEVICE_HELP)
    demo.set_defaults(func=_demo)

    train = commands.add_parser("train", help="train an encoder critic (CPU friendly)")
    train.add_argument("--config", required=True, help="training config JSON (see training/configs/)")
    train.add_argument("--output", required=True, help="folder for checkpoints and the trained critic")
    train.add_argument("--seed", type=int, default=None, help="override the config's seed")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    train.add_argument("--stop-after-minutes", type=float, default=None, help="save and stop after this long")
    train.add_argument("--stop-at-step", type=int, default=None, help="finish early (LR schedule unchanged)")
    train.set_defaults(func=_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"cprs: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
