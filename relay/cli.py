"""The ``relay`` command line.

    relay run --config FILE [--listen HOST:PORT] [--cluster.members-count N --cluster.member-num I]
    relay check-config --config FILE
    relay parse FILE|-                  samples as JSON lines
    relay sim [...]                     the etcd fleet simulator
    relay demo [--duration S]           a local 3-member etcd cluster -> relay -> a local receiver
    relay --version

Every user error is one line on stderr naming what and where, and exit status 2; ``check-config``
prints every error of the file (``relay: FILE:LINE: key: problem``, one line each), and a warning
line for each key accepted without effect (exit status 0 if there is no error).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import anyio

from . import __version__
from ._exceptions import ConfigError
from .config import ClusterConfig, field_default, parse_duration, parse_size

__all__ = ["main"]

EXIT_USAGE = 2
DEFAULT_QUEUE_DIR = "data/relay-queue"  # as vmagent's -remoteWrite.tmpDataPath: on disk unless told

log = logging.getLogger("relay")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"relay: {message}\n")


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="relay", description="Scrape etcd fleets fast and remote-write the samples anywhere.")
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run the relay")
    run.add_argument("--config", required=True, help="Prometheus-compatible YAML config file")
    run.add_argument("--listen", default="127.0.0.1:9091",
                     help="address of /metrics, /targets, /-/healthy, /-/ready, /-/reload (default 127.0.0.1:9091)")
    run.add_argument("--web.enable-lifecycle", dest="enable_lifecycle", action="store_true",
                     help="accept POST /-/reload (off by default, as Prometheus; SIGHUP always reloads)")
    run.add_argument("--web.disable-reload", dest="disable_reload", action="store_true",
                     help=argparse.SUPPRESS)  # deprecated: reload is off unless --web.enable-lifecycle
    run.add_argument("--web.config.file", dest="web_config_file", default=None, metavar="FILE",
                     help="TLS and basic auth for the endpoints, in Prometheus' web config format")
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
    check.add_argument("--config", required=True)
    _add_cluster_flags(check)

    parse = sub.add_parser("parse", help="parse an exposition body and print its samples as JSON lines")
    parse.add_argument("file", help="file to parse, or - for stdin")
    parse.add_argument("--content-type", default=None,
                       help="e.g. 'application/openmetrics-text; version=1.0.0' (default: text 0.0.4)")

    demo = sub.add_parser("demo", help="run a local 3-member etcd cluster, the relay and a local receiver")
    demo.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    demo.add_argument("--members", type=int, default=3)
    demo.add_argument("--interval", default="2s", help="scrape interval (default 2s)")
    demo.add_argument("--receiver", choices=["auto", "victoria-metrics", "jsonl"], default="auto")
    demo.add_argument("--keep", default=None, metavar="DIR", help="keep config, data and logs in DIR")

    sim = sub.add_parser("sim", help="serve a simulated etcd fleet on loopback")
    try:
        from .devtools import sim as sim_mod

        sim_mod.add_arguments(sim)
    except ImportError:
        pass
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: noise, and a cost per scrape.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level.upper())))


def _cmd_run(args: argparse.Namespace) -> int:
    from . import workers as workers_mod
    from .app import Relay, RelayOptions, check_config, log_config_warnings, probe_queue_dir
    from .http.server import parse_listen

    cluster = _cluster_from_flags(args)
    listen = parse_listen(args.listen)
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
        _print_stats(stats)
        return 0
    if queue_dir is not None and config.remote_write:  # (a reload that adds one checks it then)
        probe_queue_dir(queue_dir)
    options = RelayOptions(
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
    _print_stats(anyio.run(relay.run))
    return 0


def _print_stats(stats: dict[str, object]) -> None:
    writers = stats["remote_write"]
    assert isinstance(writers, list)
    for w in writers:
        print(
            f"relay: remote_write {w['url']}: sent {w['sent']} samples, pending {w['pending']}, dropped {w['dropped']}",
            file=sys.stderr,
        )


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # --workers starts its workers with these
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(args.log_level)
    try:
        if args.command == "run":
            return _cmd_run(args)
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
