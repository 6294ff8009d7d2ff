"""The ``relay`` command line.

    relay run --config.file FILE [--web.listen-address HOST:PORT] [--cluster.members-count N --cluster.member-num I]
    relay check-config --config.file FILE
    relay parse FILE|-                  samples as JSON lines
    relay sim [...]                     the etcd fleet simulator
    relay demo [--duration S]           a local 3-member etcd cluster -> relay -> a local receiver
    relay --version
    relay --config.file FILE [...]      as ``relay run`` (Prometheus' way to start)

Every user error is one line on stderr naming what and where, and exit status 2; an unknown flag
is named with the closest known one; ``check-config`` prints every error of the file
(``relay: FILE:LINE: key: problem``, one line each), and a warning line for each key accepted
without effect (exit status 0 if there is no error). The flags Prometheus has keep its names
(``--config.file``, ``--web.listen-address``, ``--log.level``, ...) beside ours (``--config``,
``--listen``, ``--log-level``), and are taken before or after the subcommand.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import logging
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, cast

import anyio

from ._exceptions import ConfigError
from .config import ClusterConfig, field_default, parse_duration, parse_size

__all__ = ["main"]

EXIT_USAGE = 2
DEFAULT_QUEUE_DIR = "data/relay-queue"  # as vmagent's -remoteWrite.tmpDataPath: on disk unless told
DEFAULT_LISTEN = "127.0.0.1:9091"

log = logging.getLogger("relay")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --config.fil is a typo, never --config.file
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            close = difflib.get_close_matches(m.group(1), re.findall(r"'([^']*)'", m.group(2)), n=1, cutoff=0.5)
            if close:
                message += f"; did you mean {close[0]!r}?"
        self.exit(EXIT_USAGE, f"relay: {message}\n")


class _Flag(argparse.Action):
    """Stores the value (or True, with nargs=0) and records the name the flag was given as, so an
    error names the flag the user typed (``--web.listen-address`` or ``--listen``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True if self.nargs == 0 else values)
        # one attribute per flag: a subcommand's namespace is copied over the main one, key by key
        setattr(namespace, f"given_as_{self.dest}", option_string or self.dest)


def _flag(p: argparse.ArgumentParser, *names: str, in_sub: bool, default: Any = None, switch: bool = False,
          **kw: Any) -> None:
    """A flag accepted before and after the subcommand: the main parser holds the default, a
    subcommand's copy only sets the value when given (argparse.SUPPRESS)."""
    p.add_argument(*names, action=_Flag, nargs=0 if switch else None,
                   default=argparse.SUPPRESS if in_sub else (False if switch else default), **kw)


def _add_log_flags(p: argparse.ArgumentParser, in_sub: bool) -> None:
    _flag(p, "--log.level", "--log-level", dest="log_level", in_sub=in_sub, default="info",
          choices=["debug", "info", "warn", "warning", "error"], help="log level (default info)")
    _flag(p, "--log.format", dest="log_format", in_sub=in_sub, default="text", choices=["text", "logfmt", "json"],
          help="log line format: text (default), logfmt or json (as Prometheus' --log.format)")


def _add_config_flag(p: argparse.ArgumentParser, in_sub: bool) -> None:
    _flag(p, "--config.file", "--config", dest="config", in_sub=in_sub, metavar="FILE",
          help="the Prometheus-compatible YAML config file (required for run and check-config)")


def _add_run_flags(p: argparse.ArgumentParser, in_sub: bool) -> None:
    _flag(p, "--web.listen-address", "--listen", dest="listen", in_sub=in_sub, default=DEFAULT_LISTEN,
          metavar="HOST:PORT", help="address of /metrics, /targets, /config, /api/v1/..., /-/healthy, /-/ready, "
          f"/-/reload (default {DEFAULT_LISTEN}; :PORT listens on all interfaces)")
    _flag(p, "--web.enable-lifecycle", dest="enable_lifecycle", in_sub=in_sub, switch=True,
          help="accept POST /-/reload (off by default, as Prometheus; SIGHUP always reloads)")
    _flag(p, "--web.config.file", dest="web_config_file", in_sub=in_sub, metavar="FILE",
          help="TLS and basic auth for the endpoints, in Prometheus' web config format")
    _flag(p, "--config.auto-reload-interval", dest="auto_reload_interval", in_sub=in_sub, default="0s",
          metavar="DURATION", help="check the config file this often and reload when its content changed "
          "(at least 1s; default 0s: off, reload with SIGHUP or POST /-/reload)")


def _add_cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster.members-count", dest="members_count", type=int, default=None,
                   help="number of relay replicas sharing the targets (as vmagent)")
    p.add_argument("--cluster.member-num", dest="member_num", type=int, default=None,
                   help="this replica's number, 0..members-count-1")
    p.add_argument("--cluster.replication-factor", dest="replication_factor", type=int, default=None,
                   help=f"how many replicas scrape each target (default {field_default(ClusterConfig, 'replication_factor')})")
    p.add_argument("--cluster.replica-label", dest="replica_label", default=None,
                   help="label telling replicas' copies apart when replication-factor > 1"
                   f" (default {field_default(ClusterConfig, 'replica_label')})")


_CLUSTER_FLAGS = ("members_count", "member_num", "replication_factor", "replica_label")  # ClusterConfig fields


def _cluster_from_flags(args: argparse.Namespace) -> ClusterConfig | None:
    if all(getattr(args, name) is None for name in _CLUSTER_FLAGS):
        return None
    given = {name: getattr(args, name) for name in _CLUSTER_FLAGS if getattr(args, name) not in (None, "")}
    c = ClusterConfig(**given)  # a flag not given takes ClusterConfig's default
    if c.members_count < 1:
        raise ConfigError("--cluster.members-count", "must be at least 1")
    if c.member_num < 0:
        raise ConfigError("--cluster.member-num", "must be at least 0")
    if c.replication_factor < 1:
        raise ConfigError("--cluster.replication-factor", "must be at least 1")
    return c


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from .buildinfo import version_text

        sys.stdout.write(version_text())
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="relay", description="Scrape etcd fleets fast and remote-write the samples anywhere.")
    parser.add_argument("--version", action=_Version, help="version, git revision, Python, C extensions; then exit")
    _add_log_flags(parser, in_sub=False)
    _add_config_flag(parser, in_sub=False)
    _add_run_flags(parser, in_sub=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run the relay")
    _add_config_flag(run, in_sub=True)
    _add_run_flags(run, in_sub=True)
    _add_log_flags(run, in_sub=True)
    run.add_argument("--web.disable-reload", dest="disable_reload", action="store_true",
                     help=argparse.SUPPRESS)  # deprecated: reload is off unless --web.enable-lifecycle
    run.add_argument("--sink-jsonl", default=None, metavar="FILE",
                     help="also write every sample as a JSON line to FILE ('-' for stdout)")
    run.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: run until a signal)")
    run.add_argument("--drain-timeout", type=float, default=30.0,
                     help="seconds to keep sending at shutdown (default 30)")
    run.add_argument("--stats-file", default=None, help="write a JSON summary (samples sent, dropped) here at exit")
    run.add_argument("--queue-dir", default=DEFAULT_QUEUE_DIR, metavar="DIR",
                     help="the remote-write queue on disk: what is not yet sent survives a restart or a SIGKILL "
                          f"(default {DEFAULT_QUEUE_DIR}, relative to the working directory)")
    run.add_argument("--queue.memory", dest="queue_memory", action="store_true",
                     help="keep the remote-write queue in memory only: lost when the relay stops")
    run.add_argument("--queue-max-bytes", default="1GiB",
                     help="bound of each endpoint's queue; the oldest blocks are dropped (and counted) past it")
    run.add_argument("--web.max-connections", dest="web_max_connections", type=int, default=512,
                     help="connections served at once on --listen; more wait in the backlog (default 512)")
    run.add_argument("--web.read-timeout", dest="web_read_timeout", default="10s",
                     help="time a client has to send its request head (TLS handshake included; default 10s)")
    run.add_argument("--http-transport", choices=["fast", "httpx"], default="fast",
                     help="HTTP transport for scrapes and sends (default fast; httpx = httpx's own)")
    run.add_argument("--workers", default="1", metavar="N",
                     help="run N relay processes (auto: one per core) sharing the targets, behind --listen (default 1)")
    _add_cluster_flags(run)

    check = sub.add_parser("check-config", help="validate a config file")
    _add_config_flag(check, in_sub=True)
    _add_log_flags(check, in_sub=True)
    _add_cluster_flags(check)

    parse = sub.add_parser("parse", help="parse an exposition body and print its samples as JSON lines")
    _add_log_flags(parse, in_sub=True)
    parse.add_argument("file", help="file to parse, or - for stdin")
    parse.add_argument("--content-type", default=None,
                       help="e.g. 'application/openmetrics-text; version=1.0.0' (default: text 0.0.4)")

    demo = sub.add_parser("demo", help="run a local 3-member etcd cluster, the relay and a local receiver")
    _add_log_flags(demo, in_sub=True)
    demo.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    demo.add_argument("--members", type=int, default=3)
    demo.add_argument("--interval", default="2s", help="scrape interval (default 2s)")
    demo.add_argument("--receiver", choices=["auto", "victoria-metrics", "jsonl"], default="auto")
    demo.add_argument("--keep", default=None, metavar="DIR", help="keep config, data and logs in DIR")

    sim = sub.add_parser("sim", help="serve a simulated etcd fleet on loopback")
    _add_log_flags(sim, in_sub=True)
    try:
        from .devtools import sim as sim_mod

        sim_mod.add_arguments(sim)
    except ImportError:
        pass
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command is not None:
            return cast(argparse.ArgumentParser | None, action.choices.get(command))
    return None


def _option_names(parser: argparse.ArgumentParser, *, hidden: bool = False) -> list[str]:
    """The parser's flags (those --help shows, or all of them with ``hidden``)."""
    return [o for a in parser._actions if hidden or a.help != argparse.SUPPRESS for o in a.option_strings]


def _unknown_flag(parser: argparse.ArgumentParser, name: str, command: str | None) -> NoReturn:
    known = _option_names(parser)
    sub = _subparser(parser, command)
    if sub is not None:
        known += _option_names(sub)
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    where = f" for {command}" if command else ""
    hint = f"; did you mean {close[0]}?" if close else "; see relay --help" + (f" and relay {command} --help"
                                                                                if command else "")
    parser.error(f"unknown flag {name}{where}{hint}")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parse_args, with an unknown flag named and the closest known one suggested (exit 2).

    A flag no parser knows is caught before argparse reads on (which would take its value for the
    subcommand's name)."""
    tokens = list(sys.argv[1:] if argv is None else argv)
    subs = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    commands = subs.choices if subs is not None else {}
    command = next((t for t in tokens if t in commands), None)
    every = set(_option_names(parser, hidden=True)) | {o for p in commands.values() for o in _option_names(p, hidden=True)}
    for t in tokens:
        if t == "--":
            break
        if t.startswith("--") and t.split("=", 1)[0] not in every:
            _unknown_flag(parser, t.split("=", 1)[0], command)
    args, extra = parser.parse_known_args(tokens)
    if extra:
        first = next((e for e in extra if e.startswith("-")), None)
        if first is None:
            parser.error(f"unexpected argument {extra[0]!r}" + (f" for {args.command}" if args.command else ""))
        _unknown_flag(parser, first.split("=", 1)[0], args.command)
    return args


def flag_name(args: argparse.Namespace, dest: str, default: str) -> str:
    """The name a flag was given as (for error messages), else its Prometheus name."""
    return cast(str, getattr(args, f"given_as_{dest}", default))


def flags_map(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """Every flag of the command and its value as a string (/api/v1/status/flags), by the
    flag's first long name without the dashes (the Prometheus name where there is one)."""
    out: dict[str, str] = {}
    sub = _subparser(parser, args.command)
    for p in (parser, sub) if sub is not None else (parser,):
        for a in p._actions:
            if not a.option_strings or a.dest in ("help", "version") or a.help == argparse.SUPPRESS:
                continue
            if not hasattr(args, a.dest):
                continue
            v = getattr(args, a.dest)
            out[a.option_strings[0].lstrip("-")] = ("true" if v else "false") if isinstance(v, bool) else (
                "" if v is None else str(v))
    return dict(sorted(out.items()))


def _ts(record: logging.LogRecord) -> str:
    return datetime.datetime.fromtimestamp(record.created, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


_LEVELS = {"WARNING": "warn", "CRITICAL": "error"}


def _logfmt_value(v: str) -> str:
    if v and not any(c in v for c in ' ="\\') and v.isprintable():
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=info logger=relay msg="..."`` (Prometheus' go-kit logfmt fields)."""

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelname, record.levelname.lower())
        line = f"ts={_ts(record)} level={level} logger={record.name} msg={_logfmt_value(record.getMessage())}"
        if record.exc_info:
            line += f" err={_logfmt_value(self.formatException(record.exc_info))}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg (and err with a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        import orjson

        out = {"ts": _ts(record), "level": _LEVELS.get(record.levelname, record.levelname.lower()),
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["err"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def _setup_logging(level: str, fmt: str = "text") -> None:
    level = "warning" if level == "warn" else level
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "logfmt":
        handler.setFormatter(LogfmtFormatter())
    elif fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
    # httpx logs every request at INFO: noise, and a cost per scrape.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level.upper())))


def _cmd_run(args: argparse.Namespace, flags: dict[str, str]) -> int:
    from . import workers as workers_mod
    from .app import Relay, RelayOptions, check_config, log_config_warnings, probe_queue_dir
    from .http.server import parse_listen

    cluster = _cluster_from_flags(args)
    listen = parse_listen(args.listen, flag_name(args, "listen", "--web.listen-address"))
    auto_where = flag_name(args, "auto_reload_interval", "--config.auto-reload-interval")
    auto_reload = parse_duration(args.auto_reload_interval, auto_where)
    if 0 < auto_reload < 1:
        raise ConfigError(auto_where, "must be at least 1s (or 0s: off)")
    n_workers = workers_mod.parse_workers(args.workers)
    worker = workers_mod.worker_identity()
    if worker is not None:  # one of a supervisor's workers: its own port, shard and queue; lifecycle for it
        workers_mod.install_log_prefix(worker.index)
        listen = ("127.0.0.1", worker.port)
        cluster = workers_mod.worker_cluster(cluster, worker)
        args.enable_lifecycle, args.disable_reload, args.web_config_file = True, False, None
        args.duration = 0.0
        if args.stats_file:
            args.stats_file = f"{args.stats_file}.worker-{worker.index}"
        if not args.queue_memory:
            args.queue_dir = workers_mod.worker_queue_dir(args.queue_dir, worker.index)
    elif n_workers > 1 and args.sink_jsonl:
        raise ConfigError("--sink-jsonl", "cannot be used with --workers above 1 (the workers would interleave one file)")
    if args.disable_reload:
        if args.enable_lifecycle:
            raise ConfigError("--web.disable-reload", "cannot be used with --web.enable-lifecycle")
        log.warning("--web.disable-reload is deprecated: /-/reload is off unless --web.enable-lifecycle")
    config = check_config(args.config, cluster)
    workers_mod.check_worker_config(config, worker.count if worker is not None else n_workers)
    if worker is None:  # (a supervisor's workers read the same file: it has said it)
        log_config_warnings(config)
    if args.web_max_connections < 1:
        raise ConfigError("--web.max-connections", "must be at least 1")
    read_timeout = parse_duration(args.web_read_timeout, "--web.read-timeout")
    if read_timeout <= 0:
        raise ConfigError("--web.read-timeout", "must be greater than 0")
    queue_dir = None if args.queue_memory else args.queue_dir
    if worker is None and n_workers > 1:
        if queue_dir is not None and config.remote_write:
            for i in range(n_workers):
                probe_queue_dir(str(workers_mod.worker_queue_dir(queue_dir, i)))
        supervisor = workers_mod.Supervisor(
            args.argv, n_workers, listen=listen, enable_lifecycle=args.enable_lifecycle,
            web_config_file=args.web_config_file, web_max_connections=args.web_max_connections,
            web_read_timeout=read_timeout, drain_timeout=args.drain_timeout, duration=args.duration,
            stats_file=args.stats_file,
        )
        stats = anyio.run(supervisor.run)
        _print_stats(stats, args.log_format)
        return 0
    if queue_dir is not None and config.remote_write:  # (a reload that adds one checks it then)
        probe_queue_dir(queue_dir)
    options = RelayOptions(
        flags=tuple(flags.items()),
        auto_reload_interval=auto_reload,
        config_file=args.config,
        listen=listen,
        enable_reload=args.enable_lifecycle,
        web_config_file=args.web_config_file,
        jsonl_sink=args.sink_jsonl,
        duration=args.duration,
        drain_timeout=args.drain_timeout,
        cluster=cluster,
        fast_http=args.http_transport == "fast",
        stats_file=args.stats_file,
        queue_dir=queue_dir,
        web_max_connections=args.web_max_connections,
        web_read_timeout=read_timeout,
        queue_max_bytes=parse_size(args.queue_max_bytes, "--queue-max-bytes"),
    )
    relay = Relay(options, config)
    _print_stats(anyio.run(relay.run), args.log_format)
    return 0


def _print_stats(stats: dict[str, object], log_format: str) -> None:
    writers = stats["remote_write"]
    assert isinstance(writers, list)
    for w in writers:
        summary = f"remote_write {w['url']}: sent {w['sent']} samples, pending {w['pending']}, dropped {w['dropped']}"
        if log_format == "text":
            print(f"relay: {summary}", file=sys.stderr)
        else:  # every stderr line stays a logfmt or JSON record
            log.info("%s", summary)


def _cmd_check(args: argparse.Namespace) -> int:
    from .app import check_config

    config = check_config(args.config, _cluster_from_flags(args))
    for text in config.warnings:  # keys accepted without effect: the config is valid, exit 0
        print(f"relay: warning: {text}", file=sys.stderr)
    n_static = sum(len(s.targets) for sc in config.scrape_configs for s in sc.static_configs)
    print(
        f"{args.config}: OK ({len(config.scrape_configs)} scrape configs, {n_static} static targets, "
        f"{len(config.remote_write)} remote_write endpoints)"
    )
    return 0


def _cmd_parse(args: argparse.Namespace) -> int:
    from .textparse import cli_parse

    return cli_parse(args.file, sys.stdout, content_type=args.content_type)


_COMMANDS = ("run", "check-config", "parse", "demo", "sim")


def _implicit_run(tokens: list[str]) -> bool:
    """No subcommand, but a config file (and no --help, --version): the command is ``run``."""
    if any(t in _COMMANDS for t in tokens) or any(t in ("-h", "--help", "--version") for t in tokens):
        return False
    return any(t.split("=", 1)[0] in ("--config.file", "--config") for t in tokens)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    tokens = list(sys.argv[1:] if argv is None else argv)
    if _implicit_run(tokens):  # `relay --config.file relay.yml`, as one starts Prometheus
        tokens.insert(0, "run")
    args = parse_args(parser, tokens)
    args.argv = tokens  # --workers starts its workers with these
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command in ("run", "check-config") and not args.config:
        parser.error("the following arguments are required: --config.file (or --config)")
    _setup_logging(args.log_level, args.log_format)
    try:
        if args.command == "run":
            return _cmd_run(args, flags_map(parser, args))
        if args.command == "check-config":
            return _cmd_check(args)
        if args.command == "parse":
            return _cmd_parse(args)
        if args.command == "demo":
            from .devtools.demo import run_demo

            return run_demo(args)
        if args.command == "sim":
            from .devtools import sim as sim_mod

            return sim_mod.main(args)
    except ConfigError as exc:  # several (ConfigErrors): one line each
        for text in exc.warnings:
            print(f"relay: warning: {text}", file=sys.stderr)
        for error in getattr(exc, "errors", [exc]):
            print(f"relay: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    parser.print_help()
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
