"""The `citygw report` command: parse the period, build the report, write the files, say where they are.

Imports of the report itself (numpy, matplotlib) wait until the command runs: building the CLI parser must
stay cheap for `citygw run`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime
from pathlib import Path

__all__ = ["FORMATS", "add_parser", "run_report"]

FORMATS = ("html", "json", "csv")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD") from None


def _formats(text: str) -> tuple[str, ...]:
    chosen = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(unknown) or '(none)'}: choose from "
                                         f"{', '.join(FORMATS)}")
    return chosen


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The report subcommand's arguments."""
    p = sub.add_parser("report", help="U4SSC indicators of a period with completeness and comparisons "
                                      "(HTML, JSON, CSV)")
    p.add_argument("--config", required=True, help="the kit's (or the fleet's) config file: sinks and [report]")
    p.add_argument("--from", dest="start", type=_day, required=True, help="first local day (YYYY-MM-DD)")
    p.add_argument("--to", dest="end", type=_day, required=True, help="day after the last one (exclusive)")
    p.add_argument("--out", type=Path, default=Path("."), help="directory for the files (default: here)")
    p.add_argument("--format", type=_formats, default=FORMATS, help="html,json,csv (default: all three)")
    return p


def run_report(args: argparse.Namespace) -> int:
    """Build and write the report; exit 1 with a one-line reason on a config or source problem."""
    from gateway.report.build import build_report, source_for, write_report
    from gateway.report.source import SourceError
    from gateway.settings import ConfigError, load_settings

    if args.end <= args.start:
        print(f"--to {args.end} must be after --from {args.start} (--to is exclusive)", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config)
        source = source_for(settings)
        data = build_report(settings, args.start, args.end, source)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except SourceError as exc:
        print(f"citygw report: {exc}", file=sys.stderr)
        return 1
    if not data.figures:
        print(f"citygw report: no hourly or daily KPI points between {args.start} and {args.end} in "
              f"{source.description}; check the dates and that the kit writes 1h/1d windows", file=sys.stderr)
        return 1
    title = settings.report.title or f"U4SSC indicators — {', '.join(data.gateways)}"
    files = write_report(data, args.out, args.format, source.description, title, datetime.now(UTC))
    flagged = sum(1 for f in data.figures if not f.completeness.meets)
    print(f"{len(data.figures)} figures from {source.description} ({flagged} below the completeness rule)")
    for fmt, path in files.paths.items():
        print(f"  {fmt}: {path}")
    return 0
