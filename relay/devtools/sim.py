"""Simulated etcd fleet: many etcd members' ``/metrics`` endpoints, served cheaply on loopback.

It is the benchmark harness's fleet: the relay, vmagent or Prometheus scrape it, and the simulator
must cost clearly less CPU than the scraper under test. Usage::

    config = SimConfig(members=100, version="3.5")
    async with Fleet(config) as fleet:
        urls = [fleet.metrics_url(i) for i in range(config.members)]
        ...                                  # scrape them
        print(fleet.requests_served, fleet.cpu_seconds)

How a body is made (the whole design is about CPU per served scrape):

- Templates are the real etcd bodies shipped in ``relay/data`` (3.4.23 and 3.5.1, three members
  of one cluster each). Member ``i`` is position ``i % 3`` of cluster ``i // 3`` and uses the real
  body of that position, so a cluster has one leader and its members name each other's IDs in
  the peer labels. ``--extensive`` adds the ``grpc_server_handling_seconds`` histograms of the
  3.4.23 ``--metrics extensive`` body (the same grpc-go-prometheus histograms in 3.4 and 3.5).
- A template is split once into static text and *slots*: the values that move (counters,
  histogram buckets/sums/counts, wandering gauges) and the member IDs in labels. All members of a
  position share the static text; a member is a handful of numbers (scale, rate, phase, IDs).
- Values are a pure function of the time since start, quantised to ``update_interval``: a body
  is rendered lazily on request, at most once per interval and member, and cached.
  Counters grow at a per-member rate; a histogram gains ``n(t)`` observations spread like the
  template's buckets, so buckets stay cumulative and ``_count`` equals the ``+Inf`` bucket.
- gzip without compressing per request: the static text between slots is deflated once per
  template (independent, byte-aligned deflate segments); a render emits the slot values, with
  the static text between slots that are close together, as *stored* deflate blocks between
  those shared segments, then the gzip trailer, whose CRC-32 is combined from the segments'
  precomputed CRCs and the stored bytes. The stream is valid gzip that any inflater reads (Go's
  included), as cheap to inflate as etcd's own; it is larger on the wire (about 48 KB instead of
  11 KB for a 3.5.1 body), which loopback does not mind.
- HTTP/1.1 on raw asyncio Protocols: keep-alive, pipelining, HEAD, gzip when asked for.

Faults per member: ``slow`` (answers after a delay), ``500``, ``garbage`` (200 with a body
that is not the exposition format), ``truncated`` (promises Content-Length, sends part, closes),
``reset`` (sends part of the body, then a TCP RST), ``huge`` (a valid body of hundreds of MB,
generated lazily under flow control), ``down`` (the port is bound but not listening, so connects
are refused; in single-port mode: 503).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import random
import re
import signal
import socket
import ssl
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

from .._exceptions import ConfigError
from ..config import field_default

__all__ = [
    "FAULT_KINDS",
    "Fleet",
    "SimConfig",
    "add_arguments",
    "main",
    "parse_faults",
    "render_go_float",
    "validate",
]

DATA_DIR = Path(__file__).with_name("data")
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
FAULT_KINDS = ("slow", "500", "garbage", "truncated", "reset", "huge", "down")
CLUSTER_SIZE = 3
VERSIONS = ("3.4", "3.5")

_TEMPLATE_FILES = {
    "3.4": ("etcd-3.4.23-member-2381.prom", "etcd-3.4.23-member-2391.prom", "etcd-3.4.23-member-2401.prom"),
    "3.5": ("etcd-3.5.1-member-3381.prom", "etcd-3.5.1-member-3391.prom", "etcd-3.5.1-member-3401.prom"),
}
_EXTENSIVE_FILE = "etcd-3.4.23-extensive.prom"
_EXTENSIVE_FAMILIES = (b"grpc_server_handling_seconds",)

# Value model. A counter of the template gains its template value every _REFERENCE_SECONDS (times
# the member's rate factor); counters below _MIN_MOVING stay put (leader changes, rare events).
_REFERENCE_SECONDS = 600.0
_MIN_MOVING = 10.0
_WANDER = 0.05  # gauges wander by up to +-5 %
# Gauges that never move, and gauges that only grow (etcd exports them as gauges).
_CONSTANT_GAUGES = re.compile(
    rb"^(etcd_cluster_version|etcd_server_(go_version|version|id|is_leader|has_leader|is_learner"
    rb"|quota_backend_bytes|snapshot_apply_in_progress_total|proposals_pending)|go_info"
    rb"|os_fd_limit|process_max_fds|process_virtual_memory_max_bytes|process_start_time_seconds"
    rb"|go_memstats_last_gc_time_seconds|etcd_network_active_peers|promhttp_metric_handler_requests_in_flight"
    rb"|etcd_debugging_auth_revision|etcd_debugging_mvcc_compact_revision|etcd_debugging_mvcc_db_compaction_last"
    rb"|etcd_disk_defrag_inflight)$"
)
_GROWING_GAUGES = re.compile(
    rb"^(etcd_debugging_mvcc_current_revision|etcd_server_proposals_(applied|committed)_total"
    rb"|etcd_disk_wal_write_bytes_total|etcd_debugging_mvcc_total_put_size_in_bytes)$"
)
# A busy Kubernetes etcd serves these gRPC methods; the template cluster only saw Put. Their
# zero counters are given a rate (per second, before the member's rate factor).
_ACTIVE_GRPC = {
    b"Range": 40.0,
    b"Txn": 8.0,
    b"Put": 0.5,
    b"LeaseGrant": 0.2,
    b"LeaseKeepAlive": 2.0,
    b"Watch": 0.05,
    b"Status": 0.1,
}
_GRPC_COUNTER = re.compile(rb"^grpc_server_(handled|started|msg_received|msg_sent)_total\{(.*)\}$")
_ID_IN_LABEL = re.compile(rb'="([0-9a-f]{16})"')
_LE_LABEL = re.compile(rb',?le="[^"]*"')

# Region merging: neighbouring slots whose static gap is shorter than this share one stored block.
# Fewer, larger regions cost a few KB on the wire but keep inflating the body as cheap for the
# scraper as inflating etcd's own gzip (each deflate segment has its own Huffman tables to build).
_MERGE_GAP = 2000
_MAX_REGION = 60000


# --------------------------------------------------------------------------------------------
# Number formatting (as Go's strconv.AppendFloat(f, 'g', -1, 64), which client_golang uses)


def render_go_float(value: float) -> bytes:
    """Format a float as client_golang does: Go's shortest 'g' (exponent form from 1e6 and below 1e-4)."""
    if 0.0001 <= value < 1000000.0:  # the common case: Python's repr agrees, but for a trailing ".0"
        text = repr(value)
        return (text[:-2] if text.endswith(".0") else text).encode()
    if value == 0:
        return b"0"
    if math.isnan(value):
        return b"NaN"
    if math.isinf(value):
        return b"+Inf" if value > 0 else b"-Inf"
    text = repr(abs(float(value)))
    mantissa, _, exp_text = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    every = whole + frac
    digits = every.lstrip("0")
    point = len(whole) + (int(exp_text) if exp_text else 0) - (len(every) - len(digits))
    digits = digits.rstrip("0") or "0"
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        out = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        out += f"e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    elif point <= 0:
        out = "0." + "0" * (-point) + digits
    elif point >= len(digits):
        out = digits + "0" * (point - len(digits))
    else:
        out = digits[:point] + "." + digits[point:]
    return (out if value > 0 else "-" + out).encode()


def _render_int(value: int) -> bytes:
    """An integral sample value as Go prints it: decimal below 1e6, else exponent notation."""
    if value < 1000000:
        return b"%d" % value
    text = b"%d" % value
    digits = text.rstrip(b"0")
    exponent = b"e+%02d" % (len(text) - 1)
    return digits[:1] + b"." + digits[1:] + exponent if len(digits) > 1 else digits + exponent


# --------------------------------------------------------------------------------------------
# Templates


@dataclass
class _Histogram:
    rate: float  # new observations per second (before the member factor)
    mean: float  # mean observation, for _sum


@dataclass
class _Template:
    """One real body split into shared static text and per-member slots."""

    statics: list[bytes]  # len(slots) + 1 pieces
    # integer slots: v = int(base * scale) + int(x[group] * factor)
    int_pos: list[int]  # index into the parts list
    int_spec: list[tuple[float, int, float]]
    # float slots: (parts index, mode, base, group, factor); modes below
    float_spec: list[tuple[int, int, float, int, float]]
    # member slots: (parts index, which): 0 own ID, 1/2 peer IDs, 3 is_leader value
    member_spec: list[tuple[int, int]]
    hist: list[_Histogram]
    leader: bool
    # gzip: deflate segments of the static text between regions, and the regions' parts slices
    cstatics: list[bytes]
    # CRC-32 of each static segment between regions, its length, and tables that move a running
    # CRC past it: crc32(segment, c) == T0[c & 255] ^ T1[c >> 8 & 255] ^ ... ^ crc32(segment)
    crc_statics: list[tuple[int, int, list[int], list[int], list[int], list[int]]]
    regions: list[slice]
    families: int
    samples: int


_F_SUM, _F_COUNTER, _F_WANDER, _F_QUANTILE = range(4)
_WAVES = 3


def _is_integral(text: bytes) -> bool:
    return re.fullmatch(rb"-?[0-9]+", text) is not None or (
        re.fullmatch(rb"-?[0-9.]+e\+[0-9]+", text) is not None and float(text).is_integer()
    )


def _read_data(name: str) -> bytes:
    return (DATA_DIR / name).read_bytes()


def _family_blocks(body: bytes) -> list[tuple[bytes, list[bytes]]]:
    """Split a body into (family name, lines) blocks, in order."""
    blocks: list[tuple[bytes, list[bytes]]] = []
    current: bytes | None = None
    for line in body.split(b"\n"):
        if not line:
            continue
        if line.startswith(b"# HELP ") or line.startswith(b"# TYPE "):
            name = line.split(b" ", 3)[2]
            if name != current:
                blocks.append((name, []))
                current = name
        elif not line.startswith(b"#"):
            name = re.split(rb"[{ ]", line, maxsplit=1)[0]
            if current is None or not name.startswith(current):
                blocks.append((name, []))
                current = name
        blocks[-1][1].append(line)
    return blocks


def _with_extensive(body: bytes, extensive: bytes) -> bytes:
    """Insert the extensive-only families into a default body, keeping names sorted like etcd."""
    blocks = _family_blocks(body)
    extra = [b for b in _family_blocks(extensive) if b[0] in _EXTENSIVE_FAMILIES]
    merged = sorted(blocks + extra, key=lambda b: b[0])
    return b"".join(b"\n".join(lines) + b"\n" for _, lines in merged)


def _build_template(body: bytes, leader_hint: bool) -> _Template:
    types: dict[bytes, bytes] = {}
    own_id = b""
    ids: list[bytes] = []
    for line in body.split(b"\n"):
        if line.startswith(b"# TYPE "):
            _, _, name, type_name = line.split(b" ", 3)
            types[name] = type_name
        elif line.startswith(b"etcd_server_id{"):
            m = _ID_IN_LABEL.search(line)
            if m:
                own_id = m.group(1)
    for m in _ID_IN_LABEL.finditer(body):
        if m.group(1) != own_id and m.group(1) not in ids:
            ids.append(m.group(1))
    peer_index = {own_id: 0, **{pid: 1 + k for k, pid in enumerate(ids[:2])}}

    # First pass over histograms/summaries: per group (family, labels without le) the count and sum.
    hist_index: dict[tuple[bytes, bytes], int] = {}
    hist: list[_Histogram] = []
    counts: dict[tuple[bytes, bytes], float] = {}
    sums: dict[tuple[bytes, bytes], float] = {}
    for line in body.split(b"\n"):
        if not line or line[0] == 35:  # '#'
            continue
        series, _, value = line.rpartition(b" ")
        name, _, labels = series.partition(b"{")
        labels = labels[:-1]
        for suffix, store in ((b"_count", counts), (b"_sum", sums)):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) in (b"histogram", b"summary"):
                store[(name[: -len(suffix)], labels)] = float(value)
    for key, count in counts.items():
        moving = count >= 5 or (key[0] == b"grpc_server_handling_seconds" and _active_rate(key[1]) > 0)
        if not moving:
            continue
        rate = count / _REFERENCE_SECONDS if count >= 5 else _active_rate(key[1])
        mean = sums.get(key, 0.0) / count if count else 0.002  # activated: ~2 ms, as the buckets below
        hist_index[key] = len(hist) + 1  # group 0 is "seconds times member rate"
        hist.append(_Histogram(rate=rate, mean=mean))

    statics: list[bytes] = []
    pending: list[bytes] = []
    int_pos: list[int] = []
    int_spec: list[tuple[float, int, float]] = []
    float_spec: list[tuple[int, int, float, int, float]] = []
    member_spec: list[tuple[int, int]] = []
    families = samples = 0

    def slot() -> int:
        statics.append(b"".join(pending))
        pending.clear()
        return 2 * len(statics) - 1  # parts index of this slot

    wave_group = len(hist) + 1  # then _WAVES groups of slowly wandering values in [-1, 1]
    for line in body.split(b"\n"):
        if not line:
            continue
        if line[0] == 35:
            if line.startswith(b"# TYPE "):
                families += 1
            pending.append(line + b"\n")
            continue
        samples += 1
        series, _, value = line.rpartition(b" ")
        name, _, labels = series.partition(b"{")
        labels = labels[:-1] if labels.endswith(b"}") else labels
        # member IDs inside labels become member slots
        pos = 0
        for m in _ID_IN_LABEL.finditer(series):
            which = peer_index.get(m.group(1))
            if which is None:
                continue
            pending.append(series[pos : m.start(1)])
            member_spec.append((slot(), which))
            pos = m.end(1)
        pending.append(series[pos:] + b" ")
        base = float(value)
        family = name
        kind = types.get(name)
        if kind is None:
            for suffix in (b"_bucket", b"_sum", b"_count"):
                if name.endswith(suffix) and types.get(name[: -len(suffix)]) in (b"histogram", b"summary"):
                    family, kind = name[: -len(suffix)], types[name[: -len(suffix)]]
                    break
        if name == b"etcd_server_is_leader":
            member_spec.append((slot(), 3))
        elif kind in (b"histogram", b"summary"):
            plain_labels = _LE_LABEL.sub(b"", labels).lstrip(b",")
            if kind == b"summary" and name == family:
                # a quantile: wanders with the family's phase, so quantiles stay ordered
                if base:
                    float_spec.append((slot(), _F_QUANTILE, base, wave_group, 0.0))
                else:
                    pending.append(value)
            else:
                key = (family, plain_labels)
                group = hist_index.get(key)
                if group is None:
                    pending.append(value)
                elif name.endswith(b"_sum"):
                    float_spec.append((slot(), _F_SUM, base, group, hist[group - 1].mean))
                elif name.endswith(b"_count"):
                    int_pos.append(slot())
                    int_spec.append((base, group, 1.0))
                else:
                    total = counts.get(key, 0.0)
                    if total:
                        share = base / total
                    else:  # an activated idle histogram: a plausible latency shape
                        le = float(re.search(rb'le="([^"]*)"', labels).group(1))  # type: ignore[union-attr]
                        share = min(1.0, max(0.0, 1.0 - math.exp(-le / 0.002))) if le > 0.0005 else 0.0
                    if share <= 0.0 and base == 0.0:
                        pending.append(value)
                    else:
                        int_pos.append(slot())
                        int_spec.append((base, group, share))
        elif kind == b"counter" or _GROWING_GAUGES.match(name):
            active = _active_counter_rate(name, labels)
            if base < _MIN_MOVING and not active:
                pending.append(value)
            elif _is_integral(value):
                int_pos.append(slot())
                int_spec.append((base, 0, active or base / _REFERENCE_SECONDS))
            else:
                float_spec.append((slot(), _F_COUNTER, base, 0, base / _REFERENCE_SECONDS))
        elif kind == b"gauge" and base and not _CONSTANT_GAUGES.match(name):
            group = wave_group + samples % _WAVES
            if _is_integral(value):  # most gauges: bytes, objects, goroutines, fds
                int_pos.append(slot())
                int_spec.append((base, group, _WANDER * base))
            else:
                float_spec.append((slot(), _F_WANDER, base, group, _WANDER))
        else:
            pending.append(value)
        pending.append(b"\n")
    statics.append(b"".join(pending))

    regions, cstatics, boundary = _plan_regions(statics)
    return _Template(
        statics=statics,
        int_pos=int_pos,
        int_spec=int_spec,
        float_spec=float_spec,
        member_spec=member_spec,
        hist=hist,
        leader=leader_hint,
        cstatics=cstatics,
        crc_statics=[(zlib.crc32(seg), len(seg), *_crc_shift_tables(len(seg))) for seg in boundary],
        regions=regions,
        families=families,
        samples=samples,
    )


def _active_rate(labels: bytes) -> float:
    m = re.search(rb'grpc_method="([^"]*)"', labels)
    return _ACTIVE_GRPC.get(m.group(1), 0.0) if m else 0.0


_ACTIVE_MVCC = {
    b"etcd_mvcc_range_total": b"Range",
    b"etcd_debugging_mvcc_range_total": b"Range",
    b"etcd_mvcc_txn_total": b"Txn",
}


def _active_counter_rate(name: bytes, labels: bytes) -> float:
    """Rate given to an idle counter of work a busy etcd does (0: leave it alone)."""
    if name in _ACTIVE_MVCC:
        return _ACTIVE_GRPC[_ACTIVE_MVCC[name]]
    m = _GRPC_COUNTER.match(name + b"{" + labels + b"}")
    if not m:
        return 0.0
    if m.group(1) == b"handled" and b'grpc_code="OK"' not in labels:
        return 0.0
    return _active_rate(labels)


def _deflate_segment(data: bytes) -> bytes:
    """A byte-aligned, non-final raw deflate segment that references nothing outside itself."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)


def _plan_regions(statics: list[bytes]) -> tuple[list[slice], list[bytes], list[bytes]]:
    """Group slots into stored-block regions; deflate the static text between regions once.

    Returns the regions (slices of the interleaved parts), the deflated static segments and the
    static segments themselves."""
    nslots = len(statics) - 1
    regions: list[slice] = []
    boundary: list[bytes] = []
    first = 0
    size = 0
    for j in range(nslots):
        if j == first:
            continue
        gap = len(statics[j])
        if gap < _MERGE_GAP and size + gap < _MAX_REGION:
            size += gap + 32
            continue
        regions.append(slice(2 * first + 1, 2 * (j - 1) + 2))
        boundary.append(statics[first])
        first, size = j, 0
    if nslots:
        regions.append(slice(2 * first + 1, 2 * (nslots - 1) + 2))
        boundary.append(statics[first])
    boundary.append(statics[nslots])
    return regions, [_deflate_segment(seg) for seg in boundary], boundary


def _crc_shift_tables(n: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """Byte tables of the linear map c -> crc32(B, c) ^ crc32(B) for any B of n bytes.

    CRC-32 is linear over GF(2): feeding n bytes moves a running CRC by a fixed 32x32 bit matrix,
    found here by feeding n zero bytes from each one-bit start value."""
    zeros = bytes(n)
    zero = zlib.crc32(zeros)
    basis = [zlib.crc32(zeros, 1 << bit) ^ zero for bit in range(32)]
    tables = []
    for byte in range(4):
        table = [0] * 256
        for b in range(1, 256):
            low = b & -b
            table[b] = table[b ^ low] ^ basis[8 * byte + low.bit_length() - 1]
        tables.append(table)
    return tables[0], tables[1], tables[2], tables[3]


# Stored-block headers by length: BFINAL=0, BTYPE=00 (byte-aligned), LEN, NLEN.
_STORED_HEADERS = [b"\x00" + struct.pack("<HH", n, n ^ 0xFFFF) for n in range(65536)]
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_DEFLATE_END = b"\x03\x00"  # an empty final block with fixed codes
_TEMPLATE_CACHE: dict[tuple[str, bool], list[_Template]] = {}


def load_templates(version: str, extensive: bool) -> list[_Template]:
    """The three cluster positions' templates for a version (cached per process)."""
    key = (version, extensive)
    if key not in _TEMPLATE_CACHE:
        extra = _read_data(_EXTENSIVE_FILE) if extensive else b""
        out = []
        for name in _TEMPLATE_FILES[version]:
            body = _read_data(name)
            if extensive:
                body = _with_extensive(body, extra)
            out.append(_build_template(body, b"\netcd_server_is_leader 1\n" in body))
        _TEMPLATE_CACHE[key] = out
    return _TEMPLATE_CACHE[key]


# --------------------------------------------------------------------------------------------
# Members


def _member_id(seed: int, index: int) -> bytes:
    """A stable 16-hex-digit etcd member ID for simulated member `index` (also for phantom peers)."""
    return b"%016x" % (zlib.crc32(b"%d/%d" % (seed, index)) << 32 | zlib.crc32(b"%d|%d" % (index, seed)))


_join = b"".join


class _Member:
    """One simulated member: a few numbers over a shared template, and the last rendered body."""

    __slots__ = (
        "_bases",
        "_epoch",
        "_gz",
        "_plain",
        "fault",
        "fault_arg",
        "index",
        "member_values",
        "phase",
        "rate",
        "scale",
        "template",
    )

    def __init__(self, index: int, template: _Template, seed: int, fault: str | None) -> None:
        rng = random.Random(seed * 1000003 + index)
        self.index = index
        self.template = template
        self.scale = rng.uniform(0.6, 1.6)
        self.rate = rng.uniform(0.5, 1.5)
        self.phase = rng.uniform(0.0, 2 * math.pi)
        cluster, position = divmod(index, CLUSTER_SIZE)
        peers = [_member_id(seed, cluster * CLUSTER_SIZE + p) for p in range(CLUSTER_SIZE) if p != position]
        self.member_values = [_member_id(seed, index), *peers, b"1" if template.leader else b"0"]
        kind, _, arg = (fault or "").partition(":")
        self.fault = kind or None
        self.fault_arg = float(arg) if arg else None
        self._epoch = -1
        self._bases: list[int] | None = None
        self._gz: bytes | None = None
        self._plain: bytes | None = None

    def body(self, epoch: int, elapsed: float, gzip: bool) -> bytes:
        """The body at `epoch` (rendered once per epoch and kept in the encoding asked for)."""
        if epoch == self._epoch:
            cached = self._gz if gzip else self._plain
            if cached is not None:
                return cached
        body = self.fresh(elapsed, gzip)
        if epoch != self._epoch:
            self._epoch, self._gz, self._plain = epoch, None, None
        if gzip:
            self._gz = body
        else:
            self._plain = body
        return body

    def fresh(self, elapsed: float, gzip: bool) -> bytes:
        """A new rendering in one encoding (nothing cached)."""
        plain, gz = self.render(elapsed, gzip)
        body = gz if gzip else plain
        assert body is not None
        return body

    def render(self, elapsed: float, gzip: bool) -> tuple[bytes | None, bytes | None]:
        """(plain body, None) or, with `gzip`, (None, gzip body) at `elapsed` seconds."""
        t = self.template
        scale = self.scale
        x0 = elapsed * self.rate
        xs = [x0]
        xs += [float(int(x0 * h.rate)) for h in t.hist]
        phase = self.phase
        xs += [math.sin(elapsed * (0.05 + 0.02 * k) + phase * (k + 1)) for k in range(_WAVES)]
        # interleave: statics at even indexes, slot values at odd ones
        full: list[bytes] = [b""] * (2 * len(t.statics) - 1)
        full[0::2] = t.statics
        bases = self._bases
        if bases is None:
            bases = self._bases = [int(base * scale) for base, _, _ in t.int_spec]
        ints = [
            b"%d" % v if (v := base + int(xs[group] * factor)) < 1000000 else _render_int(v)
            for base, (_, group, factor) in zip(bases, t.int_spec, strict=True)
        ]
        for pos, val in zip(t.int_pos, ints, strict=True):
            full[pos] = val
        for pos, mode, base, group, factor in t.float_spec:
            if mode == _F_SUM:
                full[pos] = render_go_float(base * scale + xs[group] * factor)
            elif mode == _F_COUNTER:
                full[pos] = render_go_float(round(base * scale + x0 * factor, 2))
            elif mode == _F_QUANTILE:  # one factor for the family keeps the quantiles ordered
                full[pos] = render_go_float(base * (1.0 + _WANDER * xs[group]))
            else:
                full[pos] = render_go_float(base * scale * (1.0 + factor * xs[group]))
        values = self.member_values
        for pos, which in t.member_spec:
            full[pos] = values[which]
        if not gzip:
            return _join(full), None
        regs = list(map(_join, map(full.__getitem__, t.regions)))
        nreg = len(regs)
        gz: list[bytes] = [b""] * (3 * nreg + 3)
        gz[0] = _GZIP_HEADER
        gz[1 : 3 * nreg + 2 : 3] = t.cstatics
        lengths = list(map(len, regs))
        gz[2 : 3 * nreg + 2 : 3] = list(map(_STORED_HEADERS.__getitem__, lengths))
        gz[3 : 3 * nreg + 3 : 3] = regs
        # CRC-32 of the plain body without making it: the static segments' CRCs are known, so
        # only the regions are read; moving the CRC past a static segment is 4 table lookups
        crc = 0
        size = sum(lengths)
        for region, (seg_crc, seg_len, t0, t1, t2, t3) in zip(regs, t.crc_statics, strict=False):
            crc = t0[crc & 255] ^ t1[crc >> 8 & 255] ^ t2[crc >> 16 & 255] ^ t3[crc >> 24] ^ seg_crc
            crc = zlib.crc32(region, crc)
            size += seg_len
        seg_crc, seg_len, t0, t1, t2, t3 = t.crc_statics[-1]
        crc = t0[crc & 255] ^ t1[crc >> 8 & 255] ^ t2[crc >> 16 & 255] ^ t3[crc >> 24] ^ seg_crc
        gz[-1] = _DEFLATE_END + struct.pack("<II", crc, (size + seg_len) & 0xFFFFFFFF)
        return None, _join(gz)


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass
class SimConfig:
    """What to simulate. Field names match the ``relay sim`` flags (``base_port`` is ``--base-port``)."""

    members: int = 3
    version: str = "3.5"
    extensive: bool = False
    host: str = "127.0.0.1"
    base_port: int = 0  # 0: pick free ports
    single_port: bool = False
    gzip: bool = True
    update_interval: float = 1.0  # seconds; 0 renders on every request
    faults: dict[int, str] = field(default_factory=dict)  # member index -> "kind" or "kind:arg"
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    seed: int = 0
    slow_delay: float = 30.0  # seconds a "slow" member waits before answering (unless "slow:S")
    huge_mb: float = 300.0  # size of a "huge" body in MiB (unless "huge:MB")

    def check(self) -> None:
        """Raise ConfigError naming the flag of the first bad field."""
        if not 1 <= self.members <= 100000:
            raise ConfigError("--members", f"must be between 1 and 100000, got {self.members}")
        if self.version not in VERSIONS:
            raise ConfigError("--etcd-version", f"must be one of {', '.join(VERSIONS)}, got {self.version!r}")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            if self.host != "localhost":
                raise ConfigError(
                    "--host", f"must be an IP address or localhost, got {self.host!r}"
                ) from None
        nports = 1 if self.single_port else self.members
        if not 0 <= self.base_port <= 65535 or (self.base_port and self.base_port + nports - 1 > 65535):
            raise ConfigError(
                "--base-port", f"ports {self.base_port}..{self.base_port + nports - 1} do not fit in 1..65535"
            )
        if not (self.update_interval >= 0 and math.isfinite(self.update_interval)):
            raise ConfigError(
                "--update-interval", f"must be a number of seconds >= 0, got {self.update_interval}"
            )
        if not (self.slow_delay >= 0 and math.isfinite(self.slow_delay)):
            raise ConfigError("--slow-delay", f"must be a number of seconds >= 0, got {self.slow_delay}")
        if not (self.huge_mb > 0 and math.isfinite(self.huge_mb)):
            raise ConfigError("--huge-mb", f"must be > 0, got {self.huge_mb}")
        for index, spec in self.faults.items():
            if not 0 <= index < self.members:
                raise ConfigError(
                    "--fault", f"member {index} does not exist (members are 0..{self.members - 1})"
                )
            _check_fault_kind(spec)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                "--tls-cert" if self.tls_cert is None else "--tls-key",
                "TLS needs both --tls-cert and --tls-key",
            )
        if self.tls_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-ca", "checking client certificates needs --tls-cert and --tls-key too")
        for flag, path in (
            ("--tls-ca", self.tls_ca),
            ("--tls-cert", self.tls_cert),
            ("--tls-key", self.tls_key),
        ):
            if path is not None and not os.path.isfile(path):
                raise ConfigError(flag, f"no such file: {path}")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server TLS context (client certificates required when ``tls_ca`` is set)."""
        if self.tls_cert is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("--tls-cert", f"cannot load {self.tls_cert} / {self.tls_key}: {exc}") from None
        if self.tls_ca is not None:
            try:
                ctx.load_verify_locations(cafile=self.tls_ca)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError("--tls-ca", f"cannot load {self.tls_ca}: {exc}") from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def _check_fault_kind(spec: str) -> None:
    kind, sep, arg = spec.partition(":")
    if kind not in FAULT_KINDS:
        raise ConfigError("--fault", f"unknown fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
    if sep:
        if kind not in ("slow", "huge"):
            raise ConfigError("--fault", f"fault {kind!r} takes no argument, got {spec!r}")
        try:
            value = float(arg)
        except ValueError:
            value = -1.0
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError("--fault", f"{spec!r}: the argument must be a positive number")


def parse_faults(specs: Sequence[str], members: int, seed: int = 0) -> dict[int, str]:
    """Parse ``--fault`` values into ``{member: kind}``.

    Each value is a comma-separated list of items: ``KIND=FRACTION`` (that share of the members,
    picked by the seed, disjoint from the other kinds) or ``KIND@LIST`` with ``LIST`` like
    ``3/7/10-12`` (explicit member indexes). ``KIND`` may carry an argument: ``slow:2.5`` (delay
    in seconds), ``huge:500`` (MiB). Example: ``--fault slow=0.05,500=0.01,down@0``.
    """
    faults: dict[int, str] = {}
    fractions: list[tuple[str, float]] = []
    for spec in specs:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            if "@" in item:
                kind, _, members_text = item.partition("@")
                _check_fault_kind(kind)
                for index in _parse_index_list(members_text, item):
                    if not 0 <= index < members:
                        raise ConfigError(
                            "--fault", f"{item!r}: member {index} does not exist (0..{members - 1})"
                        )
                    faults[index] = kind
            elif "=" in item:
                kind, _, share_text = item.partition("=")
                _check_fault_kind(kind)
                try:
                    share = float(share_text)
                except ValueError:
                    share = -1.0
                if not 0.0 <= share <= 1.0:
                    raise ConfigError("--fault", f"{item!r}: the share must be a fraction between 0 and 1")
                fractions.append((kind, share))
            else:
                raise ConfigError(
                    "--fault", f"{item!r}: expected KIND=FRACTION or KIND@MEMBERS (e.g. slow=0.05, 500@3/7)"
                )
    if fractions:
        free = [i for i in range(members) if i not in faults]
        random.Random(seed).shuffle(free)
        for kind, share in fractions:
            count = min(len(free), round(share * members))
            for index in free[:count]:
                faults[index] = kind
            free = free[count:]
    return faults


def _parse_index_list(text: str, item: str) -> Iterator[int]:
    for part in text.split("/"):
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise ConfigError(
                "--fault", f"{item!r}: {part!r} is not a member index or range like 10-12"
            ) from None
        if last < first:
            raise ConfigError("--fault", f"{item!r}: empty range {part!r}")
        yield from range(first, last + 1)


# --------------------------------------------------------------------------------------------
# HTTP


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_OK_PLAIN = (
    b"HTTP/1.1 200 OK\r\nContent-Type: " + CONTENT_TYPE + b"\r\nContent-Length: %d\r\nDate: %s\r\n\r\n"
)
_OK_GZIP = (
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: "
    + CONTENT_TYPE
    + b"\r\nContent-Length: %d\r\nDate: %s\r\n\r\n"
)
_PLAIN_ERROR = (
    b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nDate: %s\r\n%s\r\n"
)
_GARBAGE = (
    b"<html><head><title>502 Bad Gateway</title></head>\n{{{ \x00\xff\xfe not metrics }}}\n"
    b'etcd_server_has_leader{ 1 1 1\n"unterminated 12\n' + bytes(range(256)) + b"\n"
)
_HUGE_FAMILY = (
    b'# HELP etcd_sim_padding_series Simulated cardinality explosion of a "huge" member.\n'
    b"# TYPE etcd_sim_padding_series gauge\n"
)
_HUGE_LINE = b'etcd_sim_padding_series{block="BBBBBBBBBB",line="%05d",filler="%s"} 1\n'
_HUGE_LINES_PER_BLOCK = 512
_MAX_HEAD = 65536

_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


def _huge_block() -> bytes:
    filler = b"x" * 40
    return b"".join(_HUGE_LINE % (i, filler) for i in range(_HUGE_LINES_PER_BLOCK))


_HUGE_BLOCK = _huge_block()
_HUGE_LINE_LEN = len(_HUGE_BLOCK) // _HUGE_LINES_PER_BLOCK


class _Connection(asyncio.Protocol):
    """One client connection: parses HTTP/1.1 requests, serves members, injects faults."""

    def __init__(self, fleet: Fleet, member: _Member | None) -> None:
        self.fleet = fleet
        self.member = member  # None in single-port mode: the path names the member
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False
        self.paused = False
        self.closed = False
        self.stream: Iterator[bytes] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.huge_keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=1 << 20)
        self.fleet._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.stream = None
        if self.timer is not None:
            self.timer.cancel()
        self.fleet._connections.discard(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.stream is not None:
            self._pump()

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if not self.busy:
            self._process()
        elif len(self.buf) > 16 * _MAX_HEAD and self.transport is not None:
            self.transport.abort()  # a client pipelining without end behind a slow answer

    # -- requests

    def _process(self) -> None:
        while not self.busy and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    self._error(431, keep_alive=False)
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            line_end = head.find(b"\r\n")
            request_line = head if line_end < 0 else head[:line_end]
            parts = request_line.split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                self._error(400, keep_alive=False)
                return
            method, target, version = parts
            lower = head[line_end:].lower() if line_end >= 0 else b""
            if b"\ncontent-length:" in lower or b"\ntransfer-encoding:" in lower:
                self._error(400, keep_alive=False)  # a scrape has no body; do not try to skip one
                return
            keep_alive = b"\nconnection: close" not in lower and (
                version == b"HTTP/1.1" or b"\nconnection: keep-alive" in lower
            )
            gzip = self.fleet.config.gzip and _accepts_gzip(lower)
            if method not in (b"GET", b"HEAD"):
                self._error(405, keep_alive)
                continue
            self._respond(target, method == b"HEAD", gzip, keep_alive)

    def _respond(self, target: bytes, head: bool, gzip: bool, keep_alive: bool) -> None:
        fleet = self.fleet
        fleet.requests_served += 1
        path = target.partition(b"?")[0]
        member = self.member
        if member is None:
            member = fleet._route(path)
            if member is None:
                self._error(404, keep_alive)
                return
        elif path == b"/health":
            self._send_simple(200, b'{"health":"true","reason":""}', keep_alive, b"application/json")
            return
        elif path != b"/metrics":
            self._error(404, keep_alive)
            return
        fault = member.fault
        if fault is None:
            self._send_metrics(member, head, gzip, keep_alive)
        elif fault == "slow":
            self.busy = True
            delay = member.fault_arg if member.fault_arg is not None else fleet.config.slow_delay
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(delay, self._slow_done, member, head, gzip, keep_alive)
        elif fault == "500":
            self._send_simple(500, b"etcdserver: simulated internal error\n", keep_alive)
        elif fault == "garbage":
            self._send_simple(200, _GARBAGE, keep_alive, CONTENT_TYPE)
        elif fault == "down":
            self._send_simple(503, b"etcdserver: simulated member is down\n", keep_alive)
        elif fault in ("truncated", "reset"):
            body = fleet._body(member, gzip)
            self._write((_OK_GZIP if gzip else _OK_PLAIN) % (len(body), _http_date()))
            self._write(body[: len(body) // 2])
            self.busy = True
            if fault == "truncated":
                assert self.transport is not None
                self.transport.close()
            else:
                self.timer = asyncio.get_running_loop().call_later(0.05, self._reset)
        elif fault == "huge":
            self._start_huge(member, head, keep_alive)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _send_metrics(self, member: _Member, head: bool, gzip: bool, keep_alive: bool) -> None:
        body = self.fleet._body(member, gzip)
        head_bytes = (_OK_GZIP if gzip else _OK_PLAIN) % (len(body), _http_date())
        self._write(head_bytes if head else head_bytes + body)  # one send() is cheaper than two
        if not keep_alive:
            self._close()

    def _send_simple(self, status: int, body: bytes, keep_alive: bool, ctype: bytes | None = None) -> None:
        head = _PLAIN_ERROR % (
            status,
            _REASONS[status],
            len(body),
            _http_date(),
            b"" if keep_alive else b"Connection: close\r\n",
        )
        if ctype is not None:
            head = head.replace(b"text/plain; charset=utf-8", ctype, 1)
        self._write(head + body)
        if not keep_alive:
            self._close()

    def _error(self, status: int, keep_alive: bool) -> None:
        self._send_simple(status, _REASONS[status] + b"\n", keep_alive)

    def _close(self) -> None:
        self.busy = True
        if self.transport is not None:
            self.transport.close()

    def _slow_done(self, member: _Member, head: bool, gzip: bool, keep_alive: bool) -> None:
        if self.closed:
            return
        self.busy = False
        self._send_metrics(member, head, gzip, keep_alive)
        self._process()

    def _reset(self) -> None:
        if self.closed or self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _start_huge(self, member: _Member, head: bool, keep_alive: bool) -> None:
        fleet = self.fleet
        prefix = fleet._body(member, False) + _HUGE_FAMILY
        size_mb = member.fault_arg if member.fault_arg is not None else fleet.config.huge_mb
        lines = max(0, (int(size_mb * 1048576) - len(prefix)) // _HUGE_LINE_LEN)
        total = len(prefix) + lines * _HUGE_LINE_LEN
        self._write(_OK_PLAIN % (total, _http_date()))
        if head:
            return
        self.busy = True
        self.stream = _huge_stream(prefix, lines)
        self.huge_keep_alive = keep_alive
        self._pump()

    def _pump(self) -> None:
        stream = self.stream
        while stream is not None and not self.paused and not self.closed:
            chunk = next(stream, None)
            if chunk is None:
                self.stream = None
                self.busy = False
                if self.huge_keep_alive:
                    self._process()
                else:
                    self._close()
                return
            self._write(chunk)


def _huge_stream(prefix: bytes, lines: int) -> Iterator[bytes]:
    yield prefix
    full, rest = divmod(lines, _HUGE_LINES_PER_BLOCK)
    for block in range(full):
        yield _HUGE_BLOCK.replace(b"BBBBBBBBBB", b"%010d" % block)
    if rest:
        yield _HUGE_BLOCK[: rest * _HUGE_LINE_LEN].replace(b"BBBBBBBBBB", b"%010d" % full)


def _accepts_gzip(lower_headers: bytes) -> bool:
    at = lower_headers.find(b"\naccept-encoding:")
    if at < 0:
        return False
    end = lower_headers.find(b"\r", at + 1)
    value = lower_headers[at + 17 : end if end >= 0 else None]
    for item in value.split(b","):
        coding, _, params = item.strip().partition(b";")
        if coding in (b"gzip", b"*"):
            q = params.strip()
            return not (q.startswith(b"q=") and _float_or(q[2:], 1.0) == 0.0)
    return False


def _float_or(text: bytes, default: float) -> float:
    try:
        return float(text)
    except ValueError:
        return default


# --------------------------------------------------------------------------------------------
# Fleet


_SCAN_PORTS_FROM_MEMBERS = 64
_SCAN_FIRST_PORT = 10000
_SCAN_LAST_PORT = 32768  # Linux's default ephemeral range starts here


def _raise_nofile(needed: int) -> int:
    """Raise RLIMIT_NOFILE towards `needed`; return the soft limit in force afterwards."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return needed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed or soft == resource.RLIM_INFINITY:
        return needed
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < needed:  # raising the hard limit works when privileged
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Fleet:
    """Serves a simulated etcd fleet while the context is entered (asyncio; anyio's asyncio backend).

    Example::

        async with Fleet(SimConfig(members=10, faults={3: "500"})) as fleet:
            r = await client.get(fleet.metrics_url(0), headers={"Accept-Encoding": "gzip"})
    """

    def __init__(self, config: SimConfig) -> None:
        config.check()
        self.config = config
        self.requests_served = 0
        self._servers: list[asyncio.Server] = []
        self._down_sockets: list[socket.socket] = []
        self._connections: set[_Connection] = set()
        self._ports: list[int] = []
        self._next_port = _SCAN_FIRST_PORT
        self.fd_limit = 0
        self.warnings: list[str] = []  # things the user should know (printed by `relay sim`)
        self._start = 0.0
        self._cpu0 = 0.0
        templates = load_templates(config.version, config.extensive)
        self._members = [
            _Member(i, templates[i % CLUSTER_SIZE], config.seed, config.faults.get(i))
            for i in range(config.members)
        ]
        self._scheme = "https" if config.tls_cert else "http"
        self._ssl = config.ssl_context()

    # -- lifecycle

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        # a listening socket per member, a connection or two per member, and some slack
        needed = (1 if cfg.single_port else cfg.members) + 2 * cfg.members + 256
        self.fd_limit = _raise_nofile(needed)
        if self.fd_limit < needed:
            self.warnings.append(
                f"open-file limit is {self.fd_limit}, below the {needed} that {cfg.members} members with "
                "two connections each may need (raise it with ulimit -n)"
            )
        self._start = time.monotonic()
        self._cpu0 = time.process_time()
        try:
            if cfg.single_port:
                sock = self._bind(cfg.base_port, "--base-port")
                self._ports = [sock.getsockname()[1]] * cfg.members
                self._servers.append(
                    await loop.create_server(
                        lambda: _Connection(self, None), sock=sock, ssl=self._ssl, backlog=1024
                    )
                )
                return
            for member in self._members:
                if cfg.base_port:
                    sock = self._bind(cfg.base_port + member.index, "--base-port")
                else:
                    sock = self._bind_free(member.index)
                self._ports.append(sock.getsockname()[1])
                if member.fault == "down":
                    self._down_sockets.append(sock)  # bound, never listening: connects are refused
                    continue
                self._servers.append(
                    await loop.create_server(_factory(self, member), sock=sock, ssl=self._ssl, backlog=256)
                )
        except BaseException:
            await self.aclose()
            raise

    def _bind(self, port: int, flag: str) -> socket.socket:
        host = self.config.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ConfigError(flag, f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
        sock.setblocking(False)
        return sock

    def _bind_free(self, index: int) -> socket.socket:
        """A free port. Large fleets scan upwards below the ephemeral range: asking the kernel for
        port 0 ten thousand times gets slow as the ephemeral range fills up (and starves clients)."""
        if self.config.members <= _SCAN_PORTS_FROM_MEMBERS:
            return self._bind(0, "--base-port")
        if index == 0:
            self._next_port = _SCAN_FIRST_PORT + random.Random(os.getpid()).randrange(2000)
        while self._next_port < _SCAN_LAST_PORT:
            port = self._next_port
            self._next_port += 1
            with contextlib.suppress(ConfigError):
                return self._bind(port, "--base-port")
        return self._bind(0, "--base-port")

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for sock in self._down_sockets:
            sock.close()
        self._servers.clear()
        self._down_sockets.clear()

    # -- serving

    def _route(self, path: bytes) -> _Member | None:
        if path.startswith(b"/member/") and path.endswith(b"/metrics"):
            text = path[8:-8]
            if text.isdigit() and int(text) < len(self._members):
                return self._members[int(text)]
        return None

    def _body(self, member: _Member, gzip: bool) -> bytes:
        interval = self.config.update_interval
        elapsed = time.monotonic() - self._start
        if interval > 0:
            epoch = int(elapsed / interval)
            return member.body(epoch, epoch * interval, gzip)
        return member.fresh(elapsed, gzip)  # never cached

    # -- what the fleet looks like from outside

    @property
    def ports(self) -> list[int]:
        """The port of each member (all the same in single-port mode)."""
        return list(self._ports)

    @property
    def scheme(self) -> str:
        return self._scheme

    def _hostport(self, i: int) -> str:
        host = self.config.host
        return f"[{host}]:{self._ports[i]}" if ":" in host else f"{host}:{self._ports[i]}"

    def metrics_path(self, i: int) -> str:
        return f"/member/{i}/metrics" if self.config.single_port else "/metrics"

    def metrics_url(self, i: int) -> str:
        """The full URL of member `i`'s metrics."""
        return f"{self._scheme}://{self._hostport(i)}{self.metrics_path(i)}"

    @property
    def targets(self) -> list[str]:
        """``host:port`` per member; full URLs in single-port mode (where the path tells them apart)."""
        if self.config.single_port:
            return [self.metrics_url(i) for i in range(len(self._members))]
        return [self._hostport(i) for i in range(len(self._members))]

    @property
    def urls(self) -> list[str]:
        return [self.metrics_url(i) for i in range(len(self._members))]

    def file_sd(self) -> list[dict[str, object]]:
        """Prometheus file_sd target groups: one per member, with ``__metrics_path__`` and ``__scheme__``
        (and, in single-port mode, an ``instance`` of ``host:port/member/<i>``)."""
        groups: list[dict[str, object]] = []
        for i, member in enumerate(self._members):
            cluster, position = divmod(i, CLUSTER_SIZE)
            labels = {
                "__scheme__": self._scheme,
                "__metrics_path__": self.metrics_path(i),
                "etcd_cluster": f"sim-{cluster:05d}",
                "etcd_member": f"sim-{cluster:05d}-{position}",
            }
            if self.config.single_port:  # all members share host:port; keep `instance` apart
                labels["instance"] = f"{self._hostport(i)}/member/{i}"
            if member.fault:
                labels["sim_fault"] = member.fault
            groups.append({"targets": [self._hostport(i)], "labels": labels})
        return groups

    def write_file_sd(self, path: str | os.PathLike[str]) -> None:
        """Write the file_sd JSON atomically (Prometheus and vmagent re-read it when it changes)."""
        tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.file_sd(), fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)

    @property
    def cpu_seconds(self) -> float:
        """Process CPU (user + system) used since the fleet started."""
        return time.process_time() - self._cpu0

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._start

    def describe(self) -> str:
        cfg = self.config
        faults: dict[str, int] = {}
        for m in self._members:
            if m.fault:
                faults[m.fault] = faults.get(m.fault, 0) + 1
        where = (
            f"{self._hostport(0)} (paths /member/<i>/metrics)"
            if cfg.single_port
            else f"{cfg.host} ports {self._ports[0]}..{self._ports[-1]}"
            if self._ports == list(range(self._ports[0], self._ports[0] + len(self._ports)))
            else f"{cfg.host}, {len(self._ports)} ports"
        )
        parts = [
            f"serving {cfg.members} simulated etcd {cfg.version}{' (extensive)' if cfg.extensive else ''}"
            f" members over {self._scheme} on {where}",
            f"gzip {'on' if cfg.gzip else 'off'}, update interval {cfg.update_interval:g}s",
        ]
        if faults:
            parts.append("faults: " + ", ".join(f"{k}={v}" for k, v in sorted(faults.items())))
        return "; ".join(parts)


def _factory(fleet: Fleet, member: _Member) -> Callable[[], _Connection]:
    return lambda: _Connection(fleet, member)


# --------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``relay sim`` flags; a flag's default is its SimConfig field's."""

    def default(name: str) -> object:
        return field_default(SimConfig, name)

    parser.add_argument("--members", type=int, default=default("members"),
                        help="number of simulated members (default %(default)s)")
    parser.add_argument(
        "--etcd-version",
        "--version",
        dest="etcd_version",
        default=default("version"),
        help="etcd version whose bodies to serve: 3.4 or 3.5 (default %(default)s)",
    )
    parser.add_argument("--extensive", action="store_true", help="serve --metrics extensive bodies")
    parser.add_argument("--host", default=default("host"), help="listen address (default %(default)s)")
    parser.add_argument(
        "--base-port",
        type=int,
        default=default("base_port"),
        help="first port; member i listens on base+i (default %(default)s: free ports)",
    )
    parser.add_argument(
        "--single-port", action="store_true", help="serve every member on one port at /member/<i>/metrics"
    )
    parser.add_argument("--no-gzip", action="store_true", help="never gzip, even when the client asks")
    parser.add_argument(
        "--update-interval",
        type=float,
        default=default("update_interval"),
        help="seconds between value updates (default %(default)g; 0: new values on every request)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="faults, e.g. slow=0.05,500=0.01 (shares of members) or reset@3/7/10-12 (members); "
        f"kinds: {', '.join(FAULT_KINDS)}; slow:SECONDS, huge:MIB",
    )
    parser.add_argument(
        "--slow-delay", type=float, default=default("slow_delay"), help="seconds a slow member waits (default %(default)g)"
    )
    parser.add_argument("--huge-mb", type=float, default=default("huge_mb"), help="MiB of a huge body (default %(default)g)")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="private key of --tls-cert (PEM)")
    parser.add_argument("--tls-ca", help="require client certificates signed by this CA (PEM)")
    parser.add_argument("--seed", type=int, default=default("seed"), help="seed of member IDs, values and fault picks")
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (default 0: until SIGINT/SIGTERM)",
    )
    parser.add_argument(
        "--write-targets", metavar="FILE", help="write a file_sd JSON file listing the members"
    )


def validate(args: argparse.Namespace) -> SimConfig:
    """Turn parsed ``relay sim`` flags into a SimConfig, or raise ConfigError naming the flag."""
    if args.duration < 0 or not math.isfinite(args.duration):
        raise ConfigError("--duration", f"must be a number of seconds >= 0, got {args.duration}")
    if args.write_targets is not None:
        parent = os.path.dirname(os.path.abspath(args.write_targets))
        if not os.path.isdir(parent):
            raise ConfigError("--write-targets", f"directory {parent} does not exist")
    if not 1 <= args.members <= 100000:
        raise ConfigError("--members", f"must be between 1 and 100000, got {args.members}")
    config = SimConfig(
        members=args.members,
        version=args.etcd_version,
        extensive=args.extensive,
        host=args.host,
        base_port=args.base_port,
        single_port=args.single_port,
        gzip=not args.no_gzip,
        update_interval=args.update_interval,
        faults=parse_faults(args.fault, args.members, args.seed),
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        seed=args.seed,
        slow_delay=args.slow_delay,
        huge_mb=args.huge_mb,
    )
    config.check()
    config.ssl_context()  # loads the files now, so a bad one is a flag error
    return config


def main(args: argparse.Namespace) -> int:
    """``relay sim``: serve until --duration elapses or SIGINT/SIGTERM; print the targets and costs."""
    config = validate(args)
    return asyncio.run(_serve(config, args.duration, args.write_targets))


async def _serve(config: SimConfig, duration: float, write_targets: str | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with Fleet(config) as fleet:
        print(fleet.describe(), flush=True)
        for warning in fleet.warnings:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        if write_targets:
            fleet.write_file_sd(write_targets)
            print(f"targets written to {write_targets} (file_sd JSON)", flush=True)
        elif config.members <= 10:
            for i in range(config.members):
                print(f"  member {i}: {fleet.metrics_url(i)}", flush=True)
        else:
            print(
                f"  member 0: {fleet.metrics_url(0)} ... member {config.members - 1}: "
                f"{fleet.metrics_url(config.members - 1)}",
                flush=True,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration if duration > 0 else None)
        served, cpu, up = fleet.requests_served, fleet.cpu_seconds, fleet.uptime
    per = f", {cpu / served * 1000:.3f} ms CPU per request" if served else ""
    print(f"served {served} requests in {up:.1f}s; CPU {cpu:.2f}s{per}", file=sys.stderr, flush=True)
    return 0
