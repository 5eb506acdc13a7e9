"""The `citygw` command: run, demo, check-config, decode, devices."""

from __future__ import annotations

import argparse
import gc
import logging
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from gateway.signals import stop_on_signals, wait_for_signal

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["main"]

SERVICE_CONFIG = "/etc/citygw/citygw.toml"  # where `citygw service install` puts the config (docs/deploy.md)


def _setup_logging(level: str) -> None:
    from gateway.sd_notify import JournalFormatter, under_journald

    logging.basicConfig(level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    if under_journald():  # run by systemd: priorities journald understands, its own timestamps
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JournalFormatter())


def cmd_run(args: argparse.Namespace) -> int:
    """Run the gateway from a config file until SIGINT/SIGTERM."""
    from gateway.memory import limit_malloc_arenas

    limit_malloc_arenas()
    from gateway.app import Gateway
    from gateway.config_check import check_environment
    from gateway.datadir import DataDirInUseError
    from gateway.settings import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
        _setup_logging(settings.gateway.log_level)
        findings = check_environment(settings, args.config, for_run=True)
        config_log = logging.getLogger("citygw.config")  # under systemd: journald priorities err / warning
        for finding in findings:
            (config_log.error if finding.error else config_log.warning)("%s", finding.problem)
        if any(f.error for f in findings):
            return 1
        gateway = Gateway(settings)
    except DataDirInUseError as exc:  # a second `citygw run` on one data_dir: name the first one's pid
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:  # the journal or the store cannot be created: say where, never a traceback
        print(f"{args.config}: cannot open {exc.filename or 'the data directory'}: {exc.strerror} "
              "(check gateway.data_dir and journal.path)", file=sys.stderr)
        return 1
    from gateway.fieldcmds import stop_summary
    from gateway.sd_notify import Notifier, Watchdog

    try:
        gateway.start()
    except BaseException:
        gateway.stop()  # the threads it started are not daemons: join them, or the process could not exit
        raise
    # What start-up built lives as long as the process: out of the cyclic collector's reach, and its young
    # generation collected less often, so a burst of short-lived readings costs less (docs/performance.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    notifier = Notifier()  # systemd Type=notify: READY once started, the watchdog while ingest moves
    notifier.send("READY=1", f"STATUS=running: {len(settings.devices)} device(s), {len(gateway.sinks)} sink(s)")
    watchdog = Watchdog(notifier, lambda: gateway.pipeline.loop_at)
    try:
        def tick() -> None:
            gateway.tick()
            watchdog.tick()

        wait_for_signal(args.duration, tick)
    finally:
        notifier.send("STOPPING=1")
        gateway.stop()
        logging.getLogger("citygw").info(
            "%s", stop_summary(settings, gateway.pipeline.accepted, gateway.pipeline.rejected_count,
                               [(d.sink.name, d.sink.only_kind) for d in gateway.deliveries]))
        notifier.close()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file and print every problem (file:line: key: message)."""
    from gateway.config_check import check_environment
    from gateway.settings import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {args.config}", file=sys.stderr)
        return 1
    findings = check_environment(settings, args.config)
    for finding in findings:
        print(finding, file=sys.stderr)
    errors = sum(f.error for f in findings)
    if errors:
        print(f"{errors} problem(s) in {args.config}", file=sys.stderr)
        return 1
    nats = f"{len(settings.nats.routes)} NATS route(s), " if settings.nats.servers else ""
    print(f"{args.config}: OK — {len(settings.devices)} device(s), {len(settings.mqtt.routes)} MQTT route(s), {nats}"
          f"{len(settings.influx)} InfluxDB sink(s), windows {', '.join(settings.aggregation.windows)}"
          + (f" ({len(findings)} warning(s))" if findings else ""))
    if getattr(args, "connect", False):
        from gateway.connect_check import run_connect_checks

        return run_connect_checks(settings, timeout_s=args.timeout)
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    """Decode one frame or payload and print its readings as a JSON array (exit 2 when invalid)."""
    from devices.reading import DecodeContext, DecodeError
    from devices.registry import KINDS

    kind = KINDS.get(args.format)
    if kind is None:
        print(f"unknown format {args.format!r}; known: {', '.join(sorted(KINDS))}", file=sys.stderr)
        return 2
    try:
        if args.hex is not None:
            data = bytes.fromhex(args.hex.replace(" ", "").replace(":", ""))
        elif args.payload is not None:
            data = args.payload.encode()
        else:
            data = Path(args.file).read_bytes()
        request = bytes.fromhex(args.request.replace(" ", "")) if args.request else None
    except ValueError as exc:
        print(f"invalid hex: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    ctx = DecodeContext(device_id=args.device_id, received_ns=time.time_ns(), topic=args.topic or "",
                        request=request)
    try:
        if kind.framer is not None and args.hex is not None:
            items = list(kind.framer().feed(data))
            errors = [f for f in items if isinstance(f, DecodeError)]
            if errors or not items:
                raise errors[0] if errors else DecodeError("no complete frame in the input", data)
            readings = [r for frame in items if isinstance(frame, bytes) for r in kind.decode(frame, ctx)]
        else:
            readings = kind.decode(data, ctx)
    except DecodeError as exc:
        print(f"invalid {args.format} input: {exc}", file=sys.stderr)
        return 2
    out = []
    for r in readings:
        item = r.to_dict()
        if not r.device_id:
            item.pop("device_id")
        out.append(item)
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """Try every serial kind's framing on a port at the usual baud rates (no config needed)."""
    from gateway.probe import USUAL_BAUDRATES, run_probe

    return run_probe(args.port, args.baud or USUAL_BAUDRATES, args.seconds, args.all_rates)


def cmd_watch(args: argparse.Namespace) -> int:
    """Print the live KPIs and status of one or many kits from the broker (gateway/watch.py)."""
    from gateway.watch import run_watch

    return run_watch(args)


def cmd_fleet(args: argparse.Namespace) -> int:
    """Show every kit on a broker: online/offline, health, devices, backlog, last KPI (gateway/fleet.py)."""
    from gateway.fleet import run_fleet

    return run_fleet(args)


def _field_settings(args: argparse.Namespace) -> Settings | None:
    from gateway.settings import ConfigError, load_settings

    try:
        return load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _journal_unreadable(exc: Exception, command: str) -> int:
    print(f"cannot read the journal: {exc} (run as the gateway's user: sudo -u citygw citygw {command} …)",
          file=sys.stderr)
    return 1


def cmd_tail(args: argparse.Namespace) -> int:
    """Print a running gateway's readings as it journals them, through its status server (gateway/live_stream.py)."""
    from gateway.live_stream import LiveFilter, TailError, status_url, tail
    from gateway.settings import ConfigError, read_secret

    url, token = args.url, ""
    # With --url the config is needed only for the token: a laptop following a kit may have none.
    need_config = not (args.url and not Path(args.config).exists())
    settings = _field_settings(args) if need_config else None
    if need_config and settings is None:
        return 1
    if settings is not None:
        g = settings.gateway
        if not url and not g.status_listen:
            print(f"{args.config}: gateway.status_listen is \"\", so the gateway serves no live stream; set it "
                  "(and restart the gateway), or read history with citygw export", file=sys.stderr)
            return 1
        url = url or status_url(g.status_listen)
        try:
            token = read_secret(g.status_token_env, g.status_token_file, "gateway.status_token")
        except ConfigError as exc:
            print(f"{exc} (the status server's token; run as a user who can read it, e.g. sudo -u citygw)",
                  file=sys.stderr)
            return 1
    try:
        return tail(url, token, LiveFilter(args.device, args.quantity, not args.no_kpis, args.last),
                    duration=args.duration, count=args.count)
    except TailError as exc:
        print(f"citygw tail: {exc}", file=sys.stderr)
        return 1


def cmd_backlog(args: argparse.Namespace) -> int:
    """Per sink: entries waiting and the oldest one's age; the dead letters (gateway/fieldcmds.py)."""
    from gateway.fieldcmds import print_backlog, requeue_dead_letters

    settings = _field_settings(args)
    if settings is None:
        return 1
    try:
        if args.requeue is not None:
            return requeue_dead_letters(settings, args.requeue or None)
        return print_backlog(settings)
    except (FileNotFoundError, sqlite3.Error) as exc:
        return _journal_unreadable(exc, "backlog")


def cmd_export(args: argparse.Namespace) -> int:
    """Write raw readings and KPI points of a period as CSV (gateway/fieldcmds.py)."""
    from gateway.fieldcmds import export_csv, parse_when

    settings = _field_settings(args)
    if settings is None:
        return 1
    try:
        start = parse_when(args.start, settings.gateway.timezone)
        end = parse_when(args.end, settings.gateway.timezone)
    except ValueError as exc:
        print(f"--from/--to: {exc}", file=sys.stderr)
        return 2
    kinds = ("reading",) if args.readings_only else ("kpi",) if args.kpis_only else ("reading", "kpi")
    try:
        if args.out and args.out != "-":
            with open(args.out, "w", newline="", encoding="utf-8") as fh:
                n = export_csv(settings, start, end, args.device or (), fh, kinds)
        else:
            n = export_csv(settings, start, end, args.device or (), sys.stdout, kinds)
    except (FileNotFoundError, sqlite3.Error) as exc:
        return _journal_unreadable(exc, "export")
    print(f"{n} row(s) exported", file=sys.stderr)
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    """Install citygw as a systemd service (gateway/service.py)."""
    from gateway.service import run_service_command

    return run_service_command(args)


def cmd_report(args: argparse.Namespace) -> int:
    """Write the U4SSC report of a period (gateway/report/)."""
    from gateway.report.command import run_report

    return run_report(args)


def cmd_devices(args: argparse.Namespace) -> int:
    """List every device kind and payload format with its link, quantities and units."""
    from devices.registry import KINDS

    for name in sorted(KINDS):
        kind = KINDS[name]
        quantities = ", ".join(f"{q} [{u}]" for q, u in kind.quantities) or "(mapped by configuration)"
        print(f"{name:<20} {kind.link:<7} {kind.summary}")
        print(f"{'':<28} {quantities}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a simulated kit with an embedded broker and a local store; print KPIs as windows close."""
    from gateway.demo import run_demo
    from gateway.memory import limit_malloc_arenas
    from simulators.embedded_broker import BrokerNotInstalledError, require_amqtt

    try:
        require_amqtt()
    except BrokerNotInstalledError as exc:
        print(f"citygw demo: {exc}", file=sys.stderr)
        return 1
    limit_malloc_arenas()
    _setup_logging("warning" if not args.verbose else "info")
    return run_demo(duration=args.duration, data_dir=args.data_dir, print_as=args.print_as)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Play N simulated days of a kit through the real pipeline into its sinks, in seconds."""
    from datetime import date

    from gateway.settings import ConfigError
    from gateway.simulate import load_kit, run_simulation

    _setup_logging("warning")
    try:
        start = date.fromisoformat(args.start) if args.start else None
    except ValueError:
        print(f"--start {args.start!r} is not an ISO date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    if args.days <= 0:
        print("--days must be positive", file=sys.stderr)
        return 2
    from tqdm import tqdm

    # On a terminal: days played, readings/s and the time left; piped or redirected: quiet (disable=None).
    bar = tqdm(total=args.days, disable=None, file=sys.stderr, desc="simulating",
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:g} days [{elapsed}<{remaining}{postfix}]")
    started = time.monotonic()

    def progress(days_played: float, readings: int) -> None:
        bar.update(max(0.0, min(days_played, args.days) - bar.n))
        bar.set_postfix_str(f"{readings / max(1e-9, time.monotonic() - started):,.0f} readings/s", refresh=False)

    try:
        settings, specs = load_kit(args.kit, args.config)
        result = run_simulation(settings, specs, args.days, start=start, seed=args.seed, progress=progress)
    except ConfigError as exc:
        bar.close()
        print(exc, file=sys.stderr)
        return 1
    bar.close()
    print(f"simulated {args.days:g} day(s) of {len(specs)} device(s) from {start or 'the default start'}: "
          f"{result.readings} readings, {result.kpi_points} KPI points, {result.rejected} rejected, "
          f"{result.seconds:.1f} s")
    for name, n in result.delivered.items():
        lag = result.undelivered.get(name, 0)
        error = f" — last error: {result.errors[name]}" if name in result.errors and lag else ""
        print(f"  sink {name}: {n} entries written{f', {lag} NOT delivered' if lag else ''}{error}")
    return 0 if result.ok else 1


def cmd_simulators(args: argparse.Namespace) -> int:
    """Start a simulator for every device and route of a kit file; write a config pointing at them."""
    from gateway.settings import ConfigError
    from gateway.simulated_kit import simulated_kit

    _setup_logging("warning")
    broker: tuple[str, int] | None = None
    embedded = None
    if args.broker == "embedded":
        from simulators.embedded_broker import BrokerNotInstalledError, EmbeddedBroker

        try:
            embedded = EmbeddedBroker().start()
        except BrokerNotInstalledError as exc:
            print(f"citygw simulators --broker embedded: {exc}", file=sys.stderr)
            return 1
        broker = ("127.0.0.1", embedded.port)
    elif args.broker:
        host, _, port_text = args.broker.rpartition(":")
        if not host or not port_text.isdigit():
            print(f"--broker {args.broker!r}: use HOST:PORT (e.g. 127.0.0.1:1883) or 'embedded'", file=sys.stderr)
            return 2
        broker = (host, int(port_text))
    try:
        kit = simulated_kit(args.kit, broker=broker, seed=args.seed).start()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        if embedded is not None:
            embedded.stop()
        return 1
    except (ValueError, ConnectionError, OSError) as exc:
        print(f"cannot start the simulators: {exc}", file=sys.stderr)
        if embedded is not None:
            embedded.stop()
        return 1
    stop = stop_on_signals()
    try:
        print(f"citygw simulators: {len(kit.devices)} simulated device(s) from {args.kit} (seed {args.seed})",
              flush=True)
        for line in kit.describe():
            print("  " + line, flush=True)
        if broker is not None:
            print(f"MQTT broker: {broker[0]}:{broker[1]}{' (embedded)' if embedded else ''}", flush=True)
        if args.write_config:
            out = kit.write_config(args.write_config)
            print(f"config written to {out}: run `citygw run --config {out}` in another terminal", flush=True)
        print("running until Ctrl-C" + (f" or {args.duration:g} s" if args.duration else "") + "...", flush=True)
        wait_for_signal(args.duration, stop=stop)
    finally:
        kit.stop()
        if embedded is not None:
            embedded.stop()
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("citygw")
    except PackageNotFoundError:
        return "unknown (not installed as a package)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="citygw", description="Smart-city sensor kit gateway")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the gateway from a config file")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="simulated kit, embedded broker, local store; prints live KPIs")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--data-dir", default=None, help="keep the demo's journal and store here")
    p.add_argument("--print", dest="print_as", choices=("kpis", "ngsi-ld"), default="kpis",
                   help="what to print as windows close: KPI lines, or the NGSI-LD entities an [[ngsi_ld]] sink sends")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("check-config", help="validate a config file without starting anything")
    p.add_argument("config")
    p.add_argument("--connect", action="store_true",
                   help="also reach every broker, sink and serial port with the config's settings")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per connection / serial listen")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("decode", help="decode one frame or payload and print its readings as JSON")
    p.add_argument("--format", "-f", required=True, help="a device kind or payload format (see `citygw devices`)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hex", help="frame bytes in hex (spaces allowed)")
    src.add_argument("--payload", help="a payload as text (JSON, line protocol, ...)")
    src.add_argument("--file", help="read the frame or payload from a file")
    p.add_argument("--topic", help="the MQTT topic the payload arrived on")
    p.add_argument("--request", help="the request frame in hex, for polled devices (Modbus)")
    p.add_argument("--device-id", default="", help="device id to put on the readings")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("simulate", help="play N simulated days of a kit into its sinks, in seconds")
    p.add_argument("--kit", required=True, help="a kit file (config/kits/*.toml): devices to simulate")
    p.add_argument("--days", type=float, required=True, help="how many days to simulate")
    p.add_argument("--config", default=None, help="a config whose tables replace the kit's (e.g. [[influx]])")
    p.add_argument("--start", default=None, help="first local day, YYYY-MM-DD (default: DAYS days ago)")
    p.add_argument("--seed", type=int, default=1, help="seed of the signal models")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("simulators", help="simulate every device of a kit file; write a config that points at them")
    p.add_argument("--kit", required=True, help="a config or kit file (config/kits/*.toml)")
    p.add_argument("--write-config", default=None, metavar="OUT", help="write the rewritten config here")
    p.add_argument("--broker", default=None, metavar="HOST:PORT",
                   help="MQTT broker the publishers (and the written config) use; 'embedded' starts one")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--seed", type=int, default=1, help="seed of the signal models")
    p.set_defaults(func=cmd_simulators)

    p = sub.add_parser("probe", help="listen on a serial port: which device kind speaks there, at which baud rate")
    p.add_argument("port", help="a serial port or pyserial URL: /dev/ttyAMA0, /dev/serial/by-id/…, socket://…")
    p.add_argument("--baud", type=int, action="append", default=None, help="try only this rate (repeatable)")
    p.add_argument("--seconds", type=float, default=2.5, help="listen this long per baud rate")
    p.add_argument("--all-rates", action="store_true", help="keep trying after a rate at which something speaks")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("tail", help="print a running gateway's readings live (through its status server)")
    p.add_argument("--config", "-c", default=SERVICE_CONFIG,
                   help=f"default {SERVICE_CONFIG} (the service's): its status_listen and status token")
    p.add_argument("--url", default=None, metavar="http://HOST:PORT",
                   help="the gateway's status server (default: from the config's gateway.status_listen)")
    p.add_argument("--device", default=None, help="only this device id")
    p.add_argument("--quantity", default=None, help="only this quantity (or KPI name)")
    p.add_argument("--last", type=int, default=10, help="first show this many recent entries (0: none; max 1000)")
    p.add_argument("--no-kpis", action="store_true", help="raw readings only")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--count", type=int, default=None, help="stop after this many entries")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("backlog", help="per sink: entries waiting, oldest age; dead letters")
    p.add_argument("--config", "-c", default=SERVICE_CONFIG, help=f"default {SERVICE_CONFIG} (the service's)")
    p.add_argument("--requeue", nargs="?", const="", default=None, metavar="SINK",
                   help="send the dead letters (of SINK, default all) again, after fixing their cause")
    p.set_defaults(func=cmd_backlog)

    p = sub.add_parser("export", help="raw readings and KPI points of a period as CSV")
    p.add_argument("--config", "-c", default=SERVICE_CONFIG, help=f"default {SERVICE_CONFIG} (the service's)")
    p.add_argument("--from", dest="start", required=True, help="first day or moment (local time), e.g. 2026-11-01")
    p.add_argument("--to", dest="end", required=True, help="end, exclusive (local time), e.g. 2026-12-01")
    p.add_argument("--device", action="append", default=None, help="only this device id (repeatable)")
    p.add_argument("--out", "-o", default=None, help="write to this file (default: standard output)")
    kinds = p.add_mutually_exclusive_group()
    kinds.add_argument("--readings-only", action="store_true")
    kinds.add_argument("--kpis-only", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("service", help="install citygw as a systemd service (user, directories, unit)")
    from gateway.service import add_arguments as service_arguments

    service_arguments(p)
    p.set_defaults(func=cmd_service)

    p = sub.add_parser("devices", help="list device kinds and payload formats")
    p.set_defaults(func=cmd_devices)

    from gateway.report.command import add_parser as report_parser

    report_parser(sub).set_defaults(func=cmd_report)

    from gateway.watch import add_arguments as watch_arguments

    p = sub.add_parser("watch", help="print the live KPIs and status of one or many kits from an MQTT broker")
    watch_arguments(p)
    p.set_defaults(func=cmd_watch)

    from gateway.fleet import add_arguments as fleet_arguments

    p = sub.add_parser("fleet", help="every kit on an MQTT broker: online/offline, health, devices, backlog, "
                                     "last KPI (terminal table, --json, --listen for a web page)")
    fleet_arguments(p)
    p.set_defaults(func=cmd_fleet)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `citygw` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # `citygw devices | head`: the reader went away; that is not an error worth a traceback.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
