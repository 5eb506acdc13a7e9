"""Where the time goes: CPU per reading of each step of citygw's hot path, in process, one thread at a time.

    .venv/bin/python -m bench.hotpath                 # 10 readings per message, 20,000 messages
    .venv/bin/python -m bench.hotpath --readings 1

Each step runs on the real code (JSON decode of the bench's canonical messages, validation with its duplicate
window, the SQLite journal append with synchronous=full, the window engine, the sink's journal read and line
protocol) over the same messages, in batches of the size the bulk input hands over (200 messages), and prints
µs per reading. No broker, no influxd: bench/run.py measures end to end. Figures are noisy on a shared machine;
read them as ratios within one run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import gateway.lineproto  # noqa: E402
from aggregators.windows import WindowEngine, WindowSpec  # noqa: E402
from bench.run import make_payloads  # noqa: E402
from devices.json_mapping import decode  # noqa: E402
from devices.reading import DecodeContext, Reading  # noqa: E402
from gateway.journal import Journal  # noqa: E402
from gateway.lineproto import entry_line  # noqa: E402
from ingest.validate import Validator  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    """CPU seconds of one call (process time: the machine is shared)."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    """Run each step over the same messages and print µs per reading."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--readings", type=int, default=10)
    parser.add_argument("--batch", type=int, default=200, help="messages per batch (one socket read)")
    parser.add_argument("--repeat", type=int, default=5, help="runs; each step's fastest is printed")
    args = parser.parse_args(argv)
    total = args.messages * args.readings
    runs = [run_once(args.messages, args.readings, args.batch) for _ in range(args.repeat)]
    best = {step: min(run[step] for run in runs) for step in runs[0]}
    print(f"{args.messages:,} messages × {args.readings} readings, batches of {args.batch} messages, fastest of "
          f"{args.repeat} runs (CPU µs per reading; the journal's wall time, fsync included, in the last line)")
    for step, seconds in best.items():
        if step != "wall":
            print(f"  {step:<45}{seconds / total * 1e6:8.2f}")
    steps = sum(v for k, v in best.items() if k != "wall" and "default" not in k)
    print(f"  {'total (with the 1m windows of bench/run.py)':<45}{steps / total * 1e6:8.2f}")
    print(f"  {'journal append, wall time':<45}{best['wall'] / total * 1e6:8.2f}")
    return 0


def run_once(messages: int, readings: int, batch_messages: int) -> dict[str, float]:
    """One pass of every step over fresh state; CPU seconds per step."""
    now = time.time_ns()
    payloads = make_payloads(messages, readings, 100, now - 3600 * 10**9)
    ctx = DecodeContext(received_ns=now, options={})
    out: dict[str, float] = {}

    decoded: list[list[Reading]] = []
    out["decode (JSON → Reading)"] = timed(lambda: decoded.extend(decode(p, ctx) for p in payloads))
    step = batch_messages
    batches = [[r for msg in decoded[i:i + step] for r in msg] for i in range(0, len(decoded), step)]

    validator = Validator(lambda: now)

    def validate() -> None:
        if not hasattr(validator, "check_many"):  # the code before per-batch validation (for a before/after)
            for batch in batches:
                for r in batch:
                    validator.check(r, now)
            return
        for batch in batches:
            good: list[Reading] = []
            validator.check_many(batch, now, good)
    out["validate (+ duplicate window)"] = timed(validate)

    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.db", "full")
        t0 = time.perf_counter()
        out["journal append (one transaction per batch)"] = timed(lambda: [journal.append(b) for b in batches])
        wall_append = time.perf_counter() - t0

        engine = WindowEngine([WindowSpec.parse("1m")], grace_ns=2 * 10**9)

        def windows() -> None:
            if not hasattr(engine, "add_many"):  # the code before per-batch window updates (for a before/after)
                for batch in batches:
                    for r in batch:
                        engine.add(r, now)
                return
            for batch in batches:
                engine.add_many(batch, now)
        out["windows (1m)"] = timed(windows)

        # The default windows. The daily one follows local midnight (DST): a datetime per reading, before the
        # engine kept the day of the reading before.
        engine = WindowEngine([WindowSpec.parse(w) for w in ("1m", "1h", "1d")], grace_ns=2 * 10**9,
                              timezone="Europe/Madrid")
        out["windows (1m, 1h, 1d: the default)"] = timed(windows)

        sink = {"read": 0.0, "format": 0.0}

        def deliver() -> None:
            # As the InfluxDB sink does: a batch read (every kind), formatted, dropped; each part timed.
            seq = 0
            while True:
                t0 = time.process_time()
                got = journal.read_after(seq, 5000)
                t1 = time.process_time()
                if not got:
                    return
                # a batch at a time where the code has it (hotpath also runs on older commits, for a before/after)
                lines = getattr(gateway.lineproto, "entry_lines", lambda es: [entry_line(e) for e in es])
                "\n".join(lines(got))
                sink["read"] += t1 - t0
                sink["format"] += time.process_time() - t1
                seq = got[-1].seq
        deliver()
        out["sink: journal read"] = sink["read"]
        out["sink: line protocol"] = sink["format"]
        journal.close()
    out["wall"] = wall_append
    return out


if __name__ == "__main__":
    sys.exit(main())
