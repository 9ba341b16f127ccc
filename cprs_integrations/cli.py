"""Command line: ``cprs demo``, ``cprs compress``, ``cprs compress-dataset``, ``cprs serve``, ``cprs train``,
``cprs eval``.

Examples:
    $ cprs demo
    $ CPRS_API_KEY=... cprs serve --model Tongyi-Zhiwen/QwenLong-CPRS-7B --device cuda --host 0.0.0.0
    $ cprs compress --query "Who wrote it?" --ratio 0.1 essay.txt
    $ echo "long text" | cprs compress --query "..." --tokens 200 --json
    $ cprs compress-dataset --query-column question --text-column context --concurrency 4 docs.parquet out/
    $ cprs train --config cprs_integrations/training/configs/default.json --output runs/critic
    $ cprs train --data my_records.jsonl --output runs/my-critic
    $ cprs eval --data my_records.jsonl --model runs/my-critic --ratios 0.1 0.2
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: cuda > mps > cpu); an explicit device that is missing is an error"
DTYPE_HELP = "auto (bf16 on CPUs with AMX, fp16 for decoder critics on GPU, else fp32) or a dtype name"

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
    "--coarse-filter": ("coarse_filter", str),
    "--hops": ("hops", int),
}


def _add_option_flags(parser: argparse.ArgumentParser, per_text_budget: bool = True) -> None:
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
    if per_text_budget:
        parser.add_argument("--per-text-budget", action="store_true", help=fields["per_text_budget"].description)


def _options(args: argparse.Namespace) -> Any:
    from cprs_integrations.engine.options import CompressionOptions

    given = {name: getattr(args, name) for name, _ in OPTION_FLAGS.values() if getattr(args, name) is not None}
    return CompressionOptions(**given, per_text_budget=getattr(args, "per_text_budget", False))


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


def _compress_dataset(args: argparse.Namespace) -> int:
    options = _options(args)  # checked before Ray starts
    if len(args.concurrency) > 2:
        raise ValueError(f"--concurrency takes N or MIN MAX, got {args.concurrency}")
    try:
        import ray

        from cprs_integrations.ray.files import compress_files
    except ImportError as e:
        print(f"cprs: error: {e}", file=sys.stderr)
        return 2
    engine_kwargs: dict[str, Any] = {"dtype": args.dtype}
    if args.device is not None:
        engine_kwargs["device"] = args.device
    if args.engine_batch_size is not None:
        engine_kwargs["batch_size"] = args.engine_batch_size
    if args.window_tokens is not None:
        engine_kwargs["window_tokens"] = args.window_tokens
    owns_ray = not ray.is_initialized()  # main() called inside a Ray driver uses its cluster
    if owns_ray:
        ray.init(address=args.address)
    try:
        summary = compress_files(
            args.input,
            args.output,
            input_format=args.input_format,
            output_format=args.output_format,
            output_column=args.output_column,
            query_column=args.query_column,
            text_column=args.text_column,
            query=args.query,
            options=options,
            model=args.model,
            engine_kwargs=engine_kwargs,
            concurrency=tuple(args.concurrency) if len(args.concurrency) == 2 else args.concurrency[0],
            num_gpus=args.num_gpus,
            num_cpus=args.num_cpus,
            torch_threads=args.torch_threads,
            batch_size=args.batch_size,
        )
    finally:
        if owns_ray:
            ray.shutdown()
    print(f"cprs: {args.output}: {summary}", file=sys.stderr)
    return 0


def _add_dataset_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("input", help="a Parquet or JSON-lines file, or a folder of them (or a URL Ray reads)")
    command.add_argument("output", help="output folder: the input's rows with the output columns, in row order")
    command.add_argument("--query-column", default="query", help="column holding each row's query (default: query)")
    command.add_argument("--text-column", default="text", help="column holding the text to compress (default: text)")
    command.add_argument("--query", default=None, help="one query for every row (then --query-column is not read)")
    command.add_argument(
        "--output-column",
        default="compressed",
        help="name of the compressed-text column; also NAME_spans, NAME_original_tokens, NAME_tokens, NAME_error "
        "(default: compressed)",
    )
    _add_option_flags(command, per_text_budget=False)
    command.add_argument("--model", default=None, help="critic folder or hub id (default: the embedded critic)")
    command.add_argument("--device", default=None, help="default: cuda when --num-gpus > 0 (the actor's GPU), else cpu")
    command.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    command.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1],
        metavar="N",
        help="actors, one engine each: N, or MIN MAX for an autoscaling pool (default: 1)",
    )
    command.add_argument("--num-gpus", type=float, default=0, help="GPUs per actor (0.5: two per GPU; default: 0)")
    command.add_argument("--num-cpus", type=float, default=1, help="CPUs Ray reserves per actor (default: 1)")
    command.add_argument(
        "--torch-threads", type=int, default=None, help="torch threads per actor (default: --num-cpus, rounded up)"
    )
    command.add_argument(
        "--batch-size", type=int, default=64, help="rows per map_batches call (Ray's batch; default: 64)"
    )
    command.add_argument(
        "--engine-batch-size", type=int, default=None, help="windows per forward pass (default: the critic's)"
    )
    command.add_argument("--window-tokens", type=int, default=None, help="tokens per window (default: the critic's)")
    command.add_argument("--input-format", choices=("parquet", "jsonl"), default=None, help="default: from INPUT")
    command.add_argument("--output-format", choices=("parquet", "jsonl"), default=None, help="default: the input's")
    command.add_argument(
        "--address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS, else a local one is started)"
    )


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
    if args.data is not None:
        return _fine_tune(args)
    given = [flag for flag, value in (("--epochs", args.epochs), ("--holdout", args.holdout)) if value is not None]
    if given:
        raise ValueError(f"{' and '.join(given)} apply to --data; a --config recipe sets max_steps itself")
    config = TrainConfig.from_file(args.config)
    if args.seed is not None:
        config.seed = args.seed
    if args.init_from is not None:
        config.init_from = args.init_from
    if args.threads is not None:
        config.threads = args.threads
    if args.device is not None:
        config.device = args.device
    train(
        config,
        args.output,
        resume=args.resume,
        stop_after_minutes=args.stop_after_minutes,
        stop_at_step=args.stop_at_step,
    )
    return 0


def _fine_tune(args: argparse.Namespace) -> int:
    from cprs_integrations.training.evaluate import format_table
    from cprs_integrations.training.fine_tune import DEFAULT_EPOCHS, REPORT_FILE, fine_tune, fine_tune_config
    from cprs_integrations.training.user_data import DEFAULT_HOLDOUT

    config = fine_tune_config(
        args.data,
        init_from=args.init_from,
        epochs=DEFAULT_EPOCHS if args.epochs is None else args.epochs,
        holdout=DEFAULT_HOLDOUT if args.holdout is None else args.holdout,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
    )
    report = fine_tune(
        config,
        args.output,
        resume=args.resume,
        stop_after_minutes=args.stop_after_minutes,
        stop_at_step=args.stop_at_step,
    )
    state = "" if report["finished"] else " (stopped early; --resume continues)"
    print(f"cprs: trained critic: {report['critic']}, {report['steps']} of {config.max_steps} steps{state}")
    if "before" not in report:
        print("cprs: no record is held out (--holdout 0 or a very small file): no held-out report")
        return 0
    tables = {"before": report["before"], "after": report["after"]}
    print(format_table(tables, title=f"held-out records (recall of their keep spans; {REPORT_FILE}):"))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from cprs_integrations.engine.engine import CPRSEngine
    from cprs_integrations.engine.options import CompressionOptions
    from cprs_integrations.training.evaluate import evaluate, format_table
    from cprs_integrations.training.user_data import read_records, split_records, to_example

    for ratio in args.ratios:  # checked before the critic loads, as the records are
        CompressionOptions(target_ratio=ratio)
    if not 0.0 < args.target_recall <= 1.0:
        raise ValueError(f"--target-recall {args.target_recall}: expected a share in (0, 1]")
    records = read_records(args.data)
    if args.heldout_only:
        records = split_records(records, args.holdout)[1]
        if not records:
            raise ValueError(f"{args.data}: no record is held out at --holdout {args.holdout}")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    engine = CPRSEngine.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    try:
        report = evaluate(engine, [to_example(r) for r in records], args.ratios, args.target_recall)
    finally:
        engine.close()
    report = {"data": args.data, "model": args.model or "default", **report}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report, title=f"{args.data}, critic {report['model']}:"))
    return 0


#: Flags of the server's limits and security: flag -> (ServerSettings field, argparse type or "flag"). Help and
#: defaults come from :class:`~cprs_integrations.server.settings.ServerSettings`, where each is declared.
SERVER_FLAGS: dict[str, tuple[str, Any]] = {
    "--max-body-bytes": ("max_body_bytes", int),
    "--max-texts": ("max_texts", int),
    "--max-chars": ("max_chars", int),
    "--request-timeout": ("request_timeout_s", float),
    "--retry-after": ("retry_after_s", int),
    "--token-counters": ("token_counters", "list"),
    "--model-name": ("model_name", str),
    "--open-metrics": ("metrics_open", "flag"),
    "--open-docs": ("docs_open", "flag"),
}


def _add_serve_flags(serve: argparse.ArgumentParser) -> None:
    from cprs_integrations.server.settings import (
        API_KEY_ENV,
        API_KEY_FILE_ENV,
        DEFAULT_MAX_QUEUE_WINDOWS,
        ServerSettings,
    )

    serve.add_argument("--model", default=None, help="critic folder or hub id (default: the embedded critic)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--device", default=None, help=DEVICE_HELP)
    where.add_argument(
        "--devices", nargs="+", default=None, metavar="DEVICE", help="one critic replica per device, e.g. cuda:0 cuda:1"
    )
    serve.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    serve.add_argument("--revision", default=None, help="hub revision of --model (branch, tag or commit)")
    serve.add_argument("--window-tokens", type=int, default=None, help="tokens per window (default: the critic's)")
    serve.add_argument("--batch-size", type=int, default=None, help="windows per forward pass (default: the critic's)")
    serve.add_argument(
        "--max-batch-tokens", type=int, default=None, help="padded tokens per forward pass at most (default: no cap)"
    )
    serve.add_argument(
        "--max-wait-ms", type=float, default=2.0, help="how long a free device waits for a fuller batch (default: 2)"
    )
    serve.add_argument(
        "--max-queue-windows",
        type=int,
        default=DEFAULT_MAX_QUEUE_WINDOWS,
        help=f"windows queued at most; a request that would pass it is answered 429 with Retry-After (default: "
        f"{DEFAULT_MAX_QUEUE_WINDOWS})",
    )
    serve.add_argument(
        "--max-input-tokens", type=int, default=None, help="critic tokens one request may hold (default: 10M)"
    )
    serve.add_argument(
        "--api-key-file",
        default=None,
        metavar="FILE",
        help=f"file holding the API key clients send as 'Authorization: Bearer <key>' (default: ${API_KEY_ENV}, "
        f"or the file named by ${API_KEY_FILE_ENV}; none: no authentication)",
    )
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="allow binding a non-loopback --host without an API key (refused otherwise)",
    )
    fields = ServerSettings.model_fields
    for flag, (name, kind) in SERVER_FLAGS.items():
        field = fields[name]
        if kind == "flag":
            serve.add_argument(flag, dest=name, action="store_true", help=field.description)
            continue
        default = field.default if not isinstance(field.default, tuple) else " ".join(field.default)
        serve.add_argument(
            flag,
            dest=name,
            type=str if kind == "list" else kind,
            nargs="+" if kind == "list" else None,
            default=None,
            help=f"{field.description} (default: {default})",
        )
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        default=None,
        help="on SIGTERM / Ctrl-C, seconds to let requests in flight finish (default: --request-timeout + 5)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's, one per core); lower it when other processes share the cores",
    )
    serve.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error"), help="log level (default: info)"
    )


#: oneDNN caches a compiled primitive, with its packed weights, per batch shape; a server sees many shapes, so on a
#: CPU its memory grows call after call with the default cache (measured: 64 concurrent calls x 4 rounds, RSS
#: 1,152 -> 1,645 MB; with 4 entries 973 -> 1,177 MB, same speed). ``cprs serve`` is its own process, so it sets a
#: small cache unless the environment already does.
ONEDNN_CACHE_FOR_SERVING = "4"


def _serve(args: argparse.Namespace) -> int:
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_FOR_SERVING)
    try:
        from cprs_integrations.server.run import is_loopback, serve
        from cprs_integrations.server.settings import ServerSettings
    except ImportError as e:
        print(f"cprs: error: {e}; pip install 'cprs-integrations[serve]'", file=sys.stderr)
        return 2
    from cprs_integrations.engine.engine import DEFAULT_MAX_INPUT_TOKENS, CPRSEngine

    given = {name: getattr(args, name) for name, _ in SERVER_FLAGS.values() if getattr(args, name) not in (None, False)}
    if "token_counters" in given:
        given["token_counters"] = tuple(given["token_counters"])
    settings = ServerSettings.from_env(args.api_key_file, **given)
    if settings.api_key is None and not is_loopback(args.host) and not args.allow_unauthenticated:
        raise ValueError(
            f"refusing to serve on {args.host} without an API key: set CPRS_API_KEY (or --api-key-file), or pass "
            "--allow-unauthenticated behind a proxy that authenticates"
        )
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def load() -> CPRSEngine:
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        return CPRSEngine.from_pretrained(
            args.model,
            device=args.device,
            devices=args.devices,
            dtype=args.dtype,
            revision=args.revision,
            window_tokens=args.window_tokens,
            batch_size=args.batch_size,
            max_input_tokens=args.max_input_tokens or DEFAULT_MAX_INPUT_TOKENS,
            max_batch_tokens=args.max_batch_tokens,
            max_wait_ms=args.max_wait_ms,
            max_queue_windows=args.max_queue_windows,
        )

    return serve(
        load,
        settings=settings,
        host=args.host,
        port=args.port,
        graceful_timeout_s=args.graceful_timeout,
        log_level=args.log_level,
    )


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

    dataset = commands.add_parser(
        "compress-dataset",
        help="compress every row of Parquet / JSON-lines files on Ray (needs the ray extra)",
        description="Ray Data over an actor pool, one engine per actor: each row's text compressed for its query "
        "(one budget per row), every column kept, the rows in order; a bad row gets a message in NAME_error "
        "instead of failing the job. Progress is Ray Data's; a summary line ends the run.",
    )
    _add_dataset_flags(dataset)
    dataset.set_defaults(func=_compress_dataset)

    demo = commands.add_parser("demo", help="compress the bundled sample document and print what was kept")
    demo.add_argument("--model", default=None, help="critic folder or hub id (default: the embedded critic)")
    demo.add_argument("--device", default=None, help=DEVICE_HELP)
    demo.set_defaults(func=_demo)

    serve = commands.add_parser(
        "serve",
        help="serve one shared critic over HTTP (needs the serve extra)",
        description="One process, one critic, batched across every client: POST /v1/compress, /v1/score, "
        "/qwen_long_compress_server (official shape); GET /v1/models, /healthz, /readyz, /metrics, /docs. Binds "
        "127.0.0.1 unless told otherwise; the API key comes from CPRS_API_KEY or a file, never from a flag.",
    )
    _add_serve_flags(serve)
    serve.set_defaults(func=_serve)

    train = commands.add_parser(
        "train",
        help="train an encoder critic (CPU friendly), or fine-tune one on your own records",
        description="--config: a full recipe (training/configs/). --data: fine-tune the shipped critic (or "
        "--init-from) on a JSON-lines file of your records, then report recall on the held-out ones before and "
        "after, next to BM25 (format: README, 'Fine-tune on your own data').",
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="training config JSON (see training/configs/)")
    source.add_argument("--data", metavar="FILE.jsonl", help="your records: fine-tune on them")
    train.add_argument("--output", required=True, help="folder for checkpoints and the trained critic")
    train.add_argument("--seed", type=int, default=None, help="override the config's seed")
    train.add_argument(
        "--init-from", default=None, metavar="DIR", help="critic folder to start from (--data default: the shipped one)"
    )
    train.add_argument("--epochs", type=int, default=None, help="--data: passes over the training records (default: 4)")
    train.add_argument(
        "--holdout", type=float, default=None, help="--data: share of records held out for the report (default: 0.1)"
    )
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the config's, 2)")
    train.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N or mps (default: the config's, cpu); a missing one is an error",
    )
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    train.add_argument("--stop-after-minutes", type=float, default=None, help="save and stop after this long")
    train.add_argument("--stop-at-step", type=int, default=None, help="finish early (LR schedule unchanged)")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser(
        "eval",
        help="recall of your records' keep spans at several ratios, for a critic and for BM25",
        description="Per ratio, the share of the spans to keep that survive (>= 90%% of their characters kept), "
        "for the critic with the engine's default options and for BM25 over sentences under the same budget; and "
        "the score_threshold that keeps --target-recall of them.",
    )
    evaluate.add_argument("--data", required=True, metavar="FILE.jsonl", help="your records (same format as train)")
    evaluate.add_argument("--model", default=None, help="critic folder or hub id (default: the embedded critic)")
    evaluate.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        default=[0.05, 0.1, 0.2, 0.3],
        help="target ratios (default: 0.05 0.1 0.2 0.3)",
    )
    evaluate.add_argument(
        "--target-recall", type=float, default=0.9, help="share of spans the suggested threshold keeps (default: 0.9)"
    )
    evaluate.add_argument(
        "--heldout-only", action="store_true", help="evaluate only the records cprs train --data holds out"
    )
    evaluate.add_argument("--holdout", type=float, default=0.1, help="with --heldout-only: the share (default: 0.1)")
    evaluate.add_argument("--device", default=None, help=DEVICE_HELP)
    evaluate.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    evaluate.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.set_defaults(func=_eval)
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
