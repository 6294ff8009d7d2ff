"""Remote-write encoding speed: pure-Python twin vs Cython twin vs the protobuf package, side by side.

The data is the three etcd 3.5.1 bodies in shared/etcd-metrics (read with prometheus-client's
parser, each with the target labels ``instance`` and ``job`` the relay adds), all in one
SeriesTable, scraped again and again (every 15 s; values as in the bodies). That stream is cut into
blocks of one scrape (about 1,400 samples) and of 2,000 and 10,000 samples (max_samples_per_send
sizes), one Batch per block, and each block is encoded as one WriteRequest:

    encode     WriteRequestEncoder(); .add(block); .finish()  (protobuf: SerializeToString of a
               WriteRequest built beforehand, building it not timed; one TimeSeries per sample)
    compress   snappy block format (cramjam) of the encoded bytes
    enc+comp   .add(block); .finish_compressed(): what a remote-write POST body costs
               (protobuf: compress(SerializeToString()))
    shard4     c only: split_by_shard(block, 4), then one encoder per shard (the sender's path for a
               batch without a shard_key; a scrape's batch goes whole to its target's shard, as "c")

Rates are medians over repeats, in million samples per second, on one core. ``raw B/s`` and
``wire B/s`` are bytes per sample before and after snappy. Run: ``python benchmarks/bench_encode.py``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import itertools
import statistics
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from relay.batch import Batch, SeriesTable
from relay.remote import encode as rwencode

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "tests" / "data"  # copies of ../shared
sys.path.insert(0, str(ROOT))
from tests.remote_write_pb import WriteRequest  # noqa: E402  (the schema lives with the tests)

T0 = 1_700_000_000_000
INTERVAL_MS = 15_000


def scrape_stream(scrapes: int) -> tuple[SeriesTable, list[tuple[array[int], array[float]]]]:
    """The SeriesTable and (ids, values) of each etcd 3.5.1 body, in scrape order."""
    table = SeriesTable()
    bodies = []
    for k, path in enumerate(sorted((SHARED / "etcd-metrics").glob("etcd-3.5.1-*.prom"))):
        target = (("instance", f"10.0.0.{k + 1}:2379"), ("job", "etcd"))
        ids: array[int] = array("I")
        values: array[float] = array("d")
        for family in text_string_to_metric_families(path.read_text()):
            for sample in family.samples:
                ids.append(table.add(sample.name, [*sample.labels.items(), *target]))
                values.append(sample.value)
        bodies.append((ids, values))
    return table, [bodies[i % len(bodies)] for i in range(scrapes)]


def blocks(
    table: SeriesTable, stream: list[tuple[array[int], array[float]]], size: int | None
) -> list[Batch]:
    """The stream as Batches of ``size`` samples (None: one Batch per scrape)."""
    ids: array[int] = array("I")
    values: array[float] = array("d")
    timestamps: array[int] = array("q")
    cuts = [0]
    for i, (scrape_ids, scrape_values) in enumerate(stream):
        ids += scrape_ids
        values += scrape_values
        timestamps += array("q", [T0 + (i // 3) * INTERVAL_MS + i % 3]) * len(scrape_ids)
        cuts.append(len(ids))
    if size is not None:
        cuts = list(range(0, len(ids), size))
        cuts.append(len(ids))
    return [
        Batch(table, ids[a:b], values[a:b], timestamps[a:b]) for a, b in itertools.pairwise(cuts) if b > a
    ]


def protobuf_message(batch: Batch) -> Any:
    request = WriteRequest()
    for sid, value, ts in zip(batch.ids, batch.values, batch.timestamps, strict=True):
        series = request.timeseries.add()
        name, labels = batch.series.resolve(sid)
        series.labels.add(name="__name__", value=name)
        for k, v in labels:
            series.labels.add(name=k, value=v)
        series.samples.add(value=value, timestamp=ts)
    return request


def median_rate(run: Callable[[], object], samples: int, repeats: int) -> float:
    """Median samples per second of ``run`` (which handles ``samples`` samples) over ``repeats``."""
    run()  # warm up
    times = []
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter_ns()
            run()
            times.append(time.perf_counter_ns() - start)
    finally:
        gc.enable()
    return samples / (statistics.median(times) / 1e9)


class Runner(Protocol):
    """Encodes every block once; outputs are dropped as made (a sender queues or sends them), unless
    ``keep``, which returns them (for the sizes, and as the input of the compress column)."""

    def __call__(self, keep: bool = False) -> list[bytes]: ...


def encode_all(encoder_class: Any, batches: list[Batch], compressed: bool = False) -> Runner:
    """One encoder per block: ``add(block)`` then ``finish()`` (or ``finish_compressed()``)."""

    def run(keep: bool = False) -> list[bytes]:
        out = []
        for batch in batches:
            encoder = encoder_class()
            encoder.add(batch)
            data = encoder.finish_compressed() if compressed else encoder.finish()
            if keep:
                out.append(data)
        return out

    return run


def encode_sharded(ext: Any, batches: list[Batch], shards: int, compressed: bool = False) -> Runner:
    """The sender's path for a batch without a shard_key: ``split_by_shard``, then one encoder per
    shard with ``add(block, index)``."""

    def run(keep: bool = False) -> list[bytes]:
        out = []
        for batch in batches:
            for index in ext.split_by_shard(batch, shards):
                encoder = ext.WriteRequestEncoder()
                encoder.add(batch, index)
                data = encoder.finish_compressed() if compressed else encoder.finish()
                if keep:
                    out.append(data)
        return out

    return run


def serialize_all(messages: list[Any], compressed: bool = False) -> Runner:
    compress = rwencode.compress

    def run(keep: bool = False) -> list[bytes]:
        out = []
        for message in messages:
            data = compress(message.SerializeToString()) if compressed else message.SerializeToString()
            if keep:
                out.append(data)
        return out

    return run


def compress_all(encoded: list[bytes]) -> Runner:
    compress = rwencode.compress

    def run(keep: bool = False) -> list[bytes]:
        out = []
        for data in encoded:
            packed = compress(data)
            if keep:
                out.append(packed)
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=30, help="scrapes in the stream (default 30)")
    parser.add_argument("--repeats", type=int, default=15, help="repeats of the fast runs (default 15)")
    parser.add_argument("--slow-repeats", type=int, default=3, help="repeats of the pure-Python twin")
    args = parser.parse_args()

    table, stream = scrape_stream(args.scrapes)
    ext = importlib.import_module("relay.remote._encode_c") if rwencode.USING_EXTENSION else None
    total = sum(len(ids) for ids, _ in stream)
    print(
        f"{args.scrapes} scrapes of 3 etcd 3.5.1 bodies, {total} samples, {len(table)} series, "
        f"{sum(map(len, table.encoded)) / len(table):.0f} label bytes per series; "
        f"M samples/s (median of {args.repeats}; pure Python: of {args.slow_repeats}), one core"
    )
    header = f"{'block':>8} {'impl':>8} {'encode':>9} {'compress':>9} {'enc+comp':>9} {'raw B/s':>8} {'wire B/s':>8}"
    print(header)
    print("-" * len(header))
    for size in (None, 2_000, 10_000):
        batches = blocks(table, stream, size)
        label = "scrape" if size is None else str(size)
        py = rwencode.WriteRequestEncoderPy
        impls: list[tuple[str, Runner, Runner, int]] = [
            ("py", encode_all(py, batches), encode_all(py, batches, True), args.slow_repeats)
        ]
        if ext is not None:
            c = ext.WriteRequestEncoder
            impls.append(("c", encode_all(c, batches), encode_all(c, batches, True), args.repeats))
            impls.append(
                (
                    "c shard4",
                    encode_sharded(ext, batches, 4),
                    encode_sharded(ext, batches, 4, True),
                    args.repeats,
                )
            )
        messages = [protobuf_message(batch) for batch in batches]
        impls.append(("protobuf", serialize_all(messages), serialize_all(messages, True), args.repeats))
        for name, encode, encode_compress, repeats in impls:
            encoded = encode(keep=True)
            packed = encode_compress(keep=True)
            encode_rate = median_rate(encode, total, repeats)
            compress_rate = median_rate(compress_all(encoded), total, repeats)
            both_rate = median_rate(encode_compress, total, repeats)
            raw = sum(map(len, encoded)) / total
            wire = sum(map(len, packed)) / total
            print(
                f"{label:>8} {name:>8} {encode_rate / 1e6:>9.2f} {compress_rate / 1e6:>9.2f} "
                f"{both_rate / 1e6:>9.2f} {raw:>8.1f} {wire:>8.2f}"
            )


if __name__ == "__main__":
    main()
