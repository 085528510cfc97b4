"""The `sessionizer` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import ConfigError, load_config
from .core.native import CoreChoiceError, core_description, core_name, fallback_warning


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sessionizer",
        description="Final per-player sessions and rolling summaries for Xtremepush: one record per closed window.",
    )
    parser.add_argument("--version", action="version", version=f"sessionizer {__version__} (core: {core_description()})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    replay = commands.add_parser("replay", help="run the aggregation over JSON-lines files (one partition)")
    replay.add_argument("--config", required=True, help="the TOML config")
    replay.add_argument("--output-dir", required=True, help="where DIR/<topic>.jsonl files are written")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    replay.add_argument("--metrics-file", metavar="PATH",
                        help="also write the counters in the Prometheus text format to PATH at the end")
    replay.add_argument("inputs", nargs="+", metavar="INPUT", help="JSON-lines files, .gz too; - is stdin")

    run = commands.add_parser("run", help="run the aggregation on Kafka, exactly once (until SIGTERM/SIGINT)")
    run.add_argument("--config", required=True, help="the TOML config, with a [kafka] table")

    forward = commands.add_parser("forward", help="deliver the committed final records to Xtremepush (at least once)")
    forward.add_argument("--config", required=True, help="the TOML config, with [kafka] and [xtremepush] tables")

    generate = commands.add_parser("generate", help="write a realistic, reproducible spin stream (JSON lines)")
    generate.add_argument("--events", type=int, default=4000)
    generate.add_argument("--players", type=int, default=300)
    generate.add_argument("--seed", type=int, default=7)
    generate.add_argument("--delayed-share", type=float, default=0.05,
                          help="share of records arriving out of order (by up to --max-delay-ms)")
    generate.add_argument("--max-delay-ms", type=int, default=20_000)
    generate.add_argument("--late-share", type=float, default=0.0, help="share arriving an hour late")
    generate.add_argument("--malformed-share", type=float, default=0.0, help="share of broken lines")
    generate.add_argument("--other-events-share", type=float, default=0.0, help="share of non-spin events")
    generate.add_argument("--span-minutes", type=int, default=None,
                          help="peak hour: every player plays within this many minutes of event time")
    generate.add_argument("--shape", choices=["spins", "wallet"], default="spins",
                          help="spins: one spin record with stake and win; wallet: BET, WIN and ROLLBACK records")
    generate.add_argument("--duplicate-share", type=float, default=0.0,
                          help="share of records sent twice (a producer's retry)")
    generate.add_argument("--output", "-o", default="-", help="file to write (.gz compresses); - is stdout")

    args = parser.parse_args(argv)
    try:
        if args.command in ("replay", "run"):
            core_name()  # a wrong SESSIONIZER_CORE fails here, before any work
            warning = fallback_warning()
            if warning is not None:
                print(f"sessionizer: {warning}", file=sys.stderr)
        if args.command == "replay":
            return _replay(args)
        if args.command == "generate":
            return _generate(args)
        if args.command == "run":
            return _run(args)
        if args.command == "forward":
            return _forward(args)
    except ConfigError as error:
        return _fail(f"config: {error}")
    except CoreChoiceError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return 130
    return 2  # pragma: no cover - argparse rejects unknown commands


def _replay(args: argparse.Namespace) -> int:
    from .replay import ReplayError, replay, summary

    spec = load_config(args.config, live=False)
    try:
        result = replay(spec, args.inputs, args.output_dir, progress=sys.stderr.isatty() and not args.no_progress)
    except ReplayError as error:
        return _fail(str(error))
    print(summary(result), file=sys.stderr)
    if args.metrics_file:
        from .monitoring.metrics import write_replay_metrics

        try:
            write_replay_metrics(args.metrics_file, result.stats, result.elapsed)
        except OSError as error:
            return _fail(f"{args.metrics_file}: cannot write the metrics file ({error.strerror})")
    return 0


def _run(args: argparse.Namespace) -> int:
    from . import shutdown

    shutdown.install()
    from .config import load_run_settings
    from .logs import setup_logging

    settings = load_run_settings(args.config)
    setup_logging(settings.log_format, settings.log_level)
    from .kafka.clients import AccessRefused
    from .kafka.runtime import run
    from .kafka.topics import StateMismatch

    try:
        return run(settings)
    except (AccessRefused, StateMismatch) as error:
        return _fail(str(error))


def _forward(args: argparse.Namespace) -> int:
    from . import shutdown

    shutdown.install()
    from .forward.settings import load_forward_settings
    from .logs import setup_logging

    settings = load_forward_settings(args.config)
    setup_logging(settings.source.log_format, settings.source.log_level)
    from .forward.runner import forward
    from .kafka.clients import AccessRefused

    try:
        return forward(settings)
    except AccessRefused as error:
        return _fail(str(error))


def _generate(args: argparse.Namespace) -> int:
    import gzip

    from .sample import SampleShape, generate

    shape = SampleShape(events=args.events, players=args.players, seed=args.seed, max_delay_ms=args.max_delay_ms,
                        delayed_share=args.delayed_share, late_share=args.late_share,
                        malformed_share=args.malformed_share, other_events_share=args.other_events_share,
                        span_minutes=args.span_minutes, shape=args.shape, duplicate_share=args.duplicate_share)
    if args.output == "-":
        sink = sys.stdout.buffer
    else:
        try:
            sink = gzip.open(args.output, "wb") if args.output.endswith(".gz") else open(args.output, "wb")
        except OSError as error:
            return _fail(f"{args.output}: cannot write ({error.strerror})")
    with sink:
        for line in generate(shape):
            sink.write(line)
            sink.write(b"\n")
    return 0


def _fail(message: str) -> int:
    print(f"sessionizer: error: {message}", file=sys.stderr)
    return 2
