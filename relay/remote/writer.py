"""Remote write: every sample the scraper produces reaches each configured receiver, in order per series.

One :class:`RemoteWriter` per ``remote_write`` endpoint (as Prometheus' queue manager)::

    push(batch)  -> write_relabel_configs (once per series, cached per series table)
                 -> shards: a target's batch whole, in the shard of its target (its table's
                    shard_key); other batches split by series hash. Either way a series always
                    goes to one shard, so per-series order holds with parallel sends; keeping a
                    scrape together costs no split and reads its table in order (cache-friendly)
                 -> pending samples per shard; cut into a block at max_samples_per_send,
                    or when the oldest pending sample is batch_send_deadline old; with the
                    queue on disk, at every push (each scrape is on disk when push returns)
                 -> block = WriteRequest encoded straight from the Batch, snappy-compressed
                 -> BlockQueue per shard (bounded in bytes; drops the oldest, counted)
                 -> sender per shard: POST, retry 5xx / network errors with exponential backoff
                    and jitter up to max_backoff, 429 when retry_on_http_429 (honours
                    Retry-After), 401/403/407 (credentials refused: a rotated secret file, a
                    refreshed token or role fixes them, as vmagent retries them), other 4xx
                    dropped and counted, the message logged once.

``push`` never blocks the scraper: it only appends to the shard and, when a block is full,
encodes it (a fraction of a millisecond).
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import logging
import random
import time
import weakref
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx

from .._exceptions import HTTPError
from ..batch import Batch, SeriesTable
from ..config import RemoteWriteConfig
from ..http.client import ClientPool
from ..metrics import SelfMetrics
from ..relabel import Relabeler
from .encode import WriteRequestEncoder, max_timestamp, split_by_shard
from .queue import Block, BlockQueue, DiskQueue, MemoryQueue

__all__ = ["RemoteWriter", "classify_status", "redact_url", "retry_after_seconds"]

log = logging.getLogger("relay.remote.writer")

# Drop reasons: each labels relay_remote_write_samples_dropped_total.
DROP_HTTP_4XX = "http_4xx"
DROP_QUEUE_FULL = "queue_full"
DROP_QUEUE_CORRUPT = "queue_corrupt"
DROP_SHUTDOWN = "shutdown"
DROP_RELABEL = "write_relabel"

#: A receiver's response body is read up to this much (the first 512 bytes are logged); the rest
#: is not read and the connection is closed.
RESPONSE_LIMIT = 65_536

RETRY = "retry"
DROP = "drop"
OK = "ok"


def redact_url(url: str) -> str:
    """``url`` with its userinfo (``user:pass@``) shown as ``<secret>@``: for labels, logs, folders."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="<secret>@" + parts.netloc.rpartition("@")[2]))


def _folder_name(config: RemoteWriteConfig) -> str:
    """A stable folder name per endpoint: readable host plus a hash of name and URL (credentials
    in the URL are neither in the name nor in the hash)."""
    url = redact_url(config.url)
    host = "".join(c if c.isalnum() or c in ".-" else "_" for c in (urlsplit(url).netloc.replace("<secret>@", "") or "rw"))
    digest = hashlib.blake2b(f"{config.name}\0{url}".encode(), digest_size=6).hexdigest()
    return f"{host}-{digest}"


def _remove_folder(folder: Path) -> None:
    """Remove an emptied shard folder (its files are an empty segment and a cursor)."""
    for f in folder.iterdir():
        f.unlink(missing_ok=True)
    folder.rmdir()


#: Credentials refused: retried (Prometheus drops them as any 4xx; vmagent retries), so that samples
#: wait in the queue while a password file, token or role is fixed, instead of being lost.
CREDENTIAL_STATUSES = frozenset((401, 403, 407))


def classify_status(status: int, retry_on_429: bool) -> str:
    """The one place that decides what a response status means (Prometheus' client.go rule, but
    credentials refused are retried: `CREDENTIAL_STATUSES`)."""
    if 200 <= status < 300:
        return OK
    if status == 429:
        return RETRY if retry_on_429 else DROP
    if status >= 500 or status in CREDENTIAL_STATUSES:
        return RETRY
    return DROP


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class _Shard:
    queue: BlockQueue
    folder: Path | None = None
    pending: list[tuple[Batch, array[int] | None]] = field(default_factory=list)  # None: the whole batch
    pending_count: int = 0
    oldest: float = 0.0
    wake: anyio.Event = field(default_factory=anyio.Event)
    pending_max_ts: int = 0  # newest timestamp (ms) among the pending samples
    retired: bool = False  # an old generation: send what is queued, then stop


class _WriteRelabelCache:
    """write_relabel_configs applied once per series, per source series table."""

    def __init__(self, relabeler: Relabeler) -> None:
        self.relabeler = relabeler
        self.table = SeriesTable()
        self.maps: weakref.WeakKeyDictionary[SeriesTable, list[int]] = weakref.WeakKeyDictionary()

    def apply(self, batch: Batch) -> tuple[Batch, int]:
        mapping = self.maps.get(batch.series)
        if mapping is None:
            mapping = self.maps[batch.series] = []
        src = batch.series
        for sid in range(len(mapping), len(src)):
            labels = src.labels_dict(sid)
            out = self.relabeler(labels)
            if out is None or not out.get("__name__"):
                mapping.append(-1)
            else:
                name = out.pop("__name__")
                mapping.append(self.table.add(name, tuple(sorted(out.items()))))
        result = Batch(self.table)
        dropped = 0
        for sid, value, ts in zip(batch.ids, batch.values, batch.timestamps, strict=True):
            new = mapping[sid]
            if new < 0:
                dropped += 1
            else:
                result.append(new, value, ts)
        return result, dropped


class RemoteWriter:
    """Sends pushed batches to one remote-write endpoint; see the module docstring."""

    def __init__(
        self,
        config: RemoteWriteConfig,
        clients: ClientPool,
        metrics: SelfMetrics,
        *,
        max_queue_bytes: int = 512 * 1024 * 1024,
        queue_dir: str | Path | None = None,
    ) -> None:
        self.config = config
        self.clients = clients
        self.metrics = metrics
        self.url = redact_url(config.url)  # userinfo in the URL: sent as basic auth, shown as <secret>
        self.label = config.name or self.url
        # remote_name as Prometheus': the endpoint's name, or a short hash (of the URL shown)
        self.remote_name = config.name or hashlib.blake2b(self.url.encode(), digest_size=3).hexdigest()
        self.metric_labels = (self.remote_name, self.url)  # labels of every relay_remote_write_* series
        self.highest_sent_ts = 0  # ms, of what the receiver accepted
        q = config.queue_config
        self.max_samples = q.max_samples_per_send
        self.max_queue_bytes = max_queue_bytes
        self.queue_dir = Path(queue_dir) / _folder_name(config) if queue_dir else None
        # Shards come in generations. When the count changes (or at start, over what a previous run
        # left in the queue folder), the old generation keeps sending what it holds while the new
        # one accepts and encodes but waits to send until the old is empty: per-series order holds.
        self.generation = 0
        self.draining: list[_Shard] = self._recover_shards()
        self.n_shards = max(q.min_shards, 1)
        self.shards = self._make_shards(self.n_shards)
        self._drained = anyio.Event()
        if not self.draining:
            self._drained.set()
        self.pending_samples = sum(s.queue.samples for s in self.draining)
        # Adaptive sharding (as Prometheus' queue manager): rates measured between reshard checks.
        self.reshard_interval = 10.0
        self._in_window = 0
        self._out_window = 0
        self._send_seconds_window = 0.0
        self._tg: anyio.abc.TaskGroup | None = None
        self.sent_samples = 0
        self.accepted_samples = 0
        self.retried_samples = 0  # samples sent again: after a failure, or resent by the transport
        self.dropped: dict[str, int] = {}
        self._messages_seen: set[str] = set()
        self._relabel = _WriteRelabelCache(Relabeler(config.write_relabel_configs)) if config.write_relabel_configs else None
        self._headers = {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
            **dict(config.headers),
        }
        # user:password@ in the URL: the client sends it as basic auth, never on the wire
        self._url = httpx.URL(config.url)
        metrics.rw_shards.labels(*self.metric_labels).set(self.n_shards)
        metrics.rw_queue_max_bytes.labels(*self.metric_labels).set(self.max_queue_bytes)
        metrics.rw_highest_sent_timestamp.labels(*self.metric_labels).set(0)
        # Counters exported from the start, at 0 (as Prometheus' queue manager does): rate() and
        # increase() in alerts and dashboards then see 0, not "no data", on a healthy endpoint.
        for counter in (metrics.rw_samples_sent, metrics.rw_samples_failed, metrics.rw_samples_retried,
                        metrics.rw_bytes_sent):
            counter.labels(*self.metric_labels)

    # -- accepting ---------------------------------------------------------------------------

    def push(self, batch: Batch) -> None:
        """Accept a batch (the scraper's sink). Never blocks."""
        if len(batch) == 0:
            return
        hi = max_timestamp(batch) or 0
        self.metrics.appended(hi)
        if self._relabel is not None:
            batch, dropped = self._relabel.apply(batch)
            if dropped:
                self._drop(DROP_RELABEL, dropped)
                hi = max_timestamp(batch) or 0
            if len(batch) == 0:
                return
        self.pending_samples += len(batch)
        self.accepted_samples += len(batch)
        self._in_window += len(batch)
        self.metrics.rw_pending_samples.labels(*self.metric_labels).set(self.pending_samples)
        now = time.monotonic()
        key = batch.series.shard_key
        if key is not None:  # one source's batch: kept whole, in its source's shard
            self._pend(self.shards[key % self.n_shards], batch, None, len(batch), now, hi)
            return
        parts = split_by_shard(batch, self.n_shards)
        for shard, index in zip(self.shards, parts, strict=True):
            if len(index):  # (each part counts the batch's newest timestamp: at most one scrape early)
                self._pend(shard, batch, index, len(index), now, hi)

    def _pend(self, shard: _Shard, batch: Batch, index: array[int] | None, n: int, now: float, hi: int) -> None:
        if not shard.pending:
            shard.oldest = now
        shard.pending_max_ts = max(shard.pending_max_ts, hi)
        shard.pending.append((batch, index))
        shard.pending_count += n
        if self.queue_dir is not None:  # on disk: each scrape is in the queue file before push returns,
            self._cut(shard, only_full=False)  # so a SIGKILL loses at most the scrape in flight
        elif shard.pending_count >= self.max_samples:
            self._cut(shard, only_full=True)

    def _cut(self, shard: _Shard, *, only_full: bool) -> None:
        """Encode pending samples of a shard into blocks of at most max_samples_per_send."""
        while shard.pending_count >= self.max_samples or (not only_full and shard.pending_count > 0):
            enc = WriteRequestEncoder()
            need = self.max_samples
            while need > 0 and shard.pending:
                batch, index = shard.pending[0]
                size = len(batch) if index is None else len(index)
                if size <= need:
                    enc.add(batch, index)
                    need -= size
                    shard.pending.pop(0)
                else:
                    if index is None:
                        index = array("I", range(size))
                    enc.add(batch, index[:need])
                    shard.pending[0] = (batch, index[need:])
                    need = 0
            n = len(enc)
            shard.pending_count -= n
            self._enqueue(shard, Block(enc.finish_compressed(), n, max_ts=shard.pending_max_ts))
        if shard.pending:
            shard.oldest = time.monotonic()
        else:
            shard.pending_max_ts = 0

    def _recover_shards(self) -> list[_Shard]:
        """Open what a previous run left in the queue folder; it is sent before anything new."""
        if self.queue_dir is None or not self.queue_dir.exists():
            return []
        out = []
        for folder in sorted(self.queue_dir.glob("gen*-shard*")):
            try:
                self.generation = max(self.generation, int(folder.name[3:].split("-", 1)[0]))
            except ValueError:
                continue
            queue = DiskQueue(folder, max_bytes=self.max_queue_bytes)
            if len(queue):
                out.append(_Shard(queue, folder, retired=True))
            else:
                queue.close()
                _remove_folder(folder)
        return out

    def _make_shards(self, n: int) -> list[_Shard]:
        self.generation += 1
        per_shard = max(self.max_queue_bytes // n, 1 << 20)
        shards = []
        for i in range(n):
            if self.queue_dir is None:
                shards.append(_Shard(MemoryQueue(per_shard)))
            else:
                folder = self.queue_dir / f"gen{self.generation:06d}-shard{i:03d}"
                shards.append(_Shard(DiskQueue(folder, max_bytes=per_shard), folder))
        return shards

    @property
    def queue_bytes(self) -> int:
        return sum(s.queue.bytes for s in self.shards) + sum(s.queue.bytes for s in self.draining)

    def _account_queue(self, shard: _Shard) -> None:
        """Count what the queue's byte bound or a corrupt record forced out."""
        q = shard.queue
        if q.dropped_samples:
            self.pending_samples -= q.dropped_samples
            self._drop(DROP_QUEUE_FULL, q.dropped_samples)
            q.dropped_samples = 0
        if q.corrupt_samples:
            self.pending_samples -= q.corrupt_samples
            self._drop(DROP_QUEUE_CORRUPT, q.corrupt_samples)
            q.corrupt_samples = 0
        self.metrics.rw_queue_bytes.labels(*self.metric_labels).set(self.queue_bytes)

    def _enqueue(self, shard: _Shard, block: Block) -> None:
        shard.queue.put(block)
        self._account_queue(shard)
        self._bound_queues()
        shard.wake.set()

    def _bound_queues(self) -> None:
        """The byte bound over every shard of every generation: past it the oldest blocks go, the
        draining generation's first (they are older), then the fullest shards'; never a block
        being sent. Counted as queue_full."""
        total = self.queue_bytes
        if total <= self.max_queue_bytes:
            return
        victims = [*self.draining, *sorted(self.shards, key=lambda s: s.queue.bytes, reverse=True)]
        for shard in victims:
            before = shard.queue.bytes
            while total > self.max_queue_bytes and shard.queue.drop_oldest():
                after = shard.queue.bytes
                total -= before - after
                before = after
            self._account_queue(shard)
            if total <= self.max_queue_bytes:
                return

    def _drop(self, reason: str, n: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n
        self.metrics.rw_samples_dropped.labels(*self.metric_labels, reason).inc(n)

    # -- sending -----------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._start_generation()
            tg.start_soon(self._ticker)
            tg.start_soon(self._reshard_loop)
            task_status.started()

    def _start_generation(self, *, recovered: bool = True) -> None:
        """Start senders: the current shards' wait until every draining shard is empty."""
        assert self._tg is not None
        if recovered:
            for shard in self.draining:
                self._tg.start_soon(self._sender, shard, None)
        for shard in self.shards:
            self._tg.start_soon(self._sender, shard, self._drained)
        self.metrics.rw_shards.labels(*self.metric_labels).set(len(self.shards))

    def _shard_done(self, shard: _Shard) -> None:
        shard.queue.close()
        if shard.folder is not None:
            _remove_folder(shard.folder)
        if shard in self.draining:
            self.draining.remove(shard)
            if not self.draining:
                self._drained.set()

    def desired_shards(self, elapsed: float) -> int:
        """Shards needed to send the inflow plus the backlog within the next interval."""
        q = self.config.queue_config
        if self._out_window == 0 or elapsed <= 0:
            return self.n_shards  # nothing measured (idle, or the receiver is failing): keep
        time_per_sample = self._send_seconds_window / self._out_window
        rate_in = self._in_window / elapsed
        backlog = max(self.pending_samples, 0)
        desired = time_per_sample * (rate_in + backlog / self.reshard_interval)
        # Tolerate 30% either way before changing, so the count does not flap.
        if self.n_shards * 0.7 <= desired <= self.n_shards * 1.3:
            return self.n_shards
        return max(q.min_shards, min(q.max_shards, int(desired) + 1))

    async def _reshard_loop(self) -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(self.reshard_interval)
            now = time.monotonic()
            want = self.desired_shards(now - last)
            self._in_window = self._out_window = 0
            self._send_seconds_window = 0.0
            last = now
            if want != self.n_shards:
                self.reshard(want)

    def reshard(self, n: int) -> bool:
        """Change the shard count now. The current shards become the draining generation (they
        send what they hold); new ones take new samples and send once those are empty. False (and
        nothing changes) while an earlier generation is still draining."""
        if n == self.n_shards or self.draining:
            return False
        log.info("remote_write %s: shards %d -> %d", self.label, self.n_shards, n)
        self._drained = anyio.Event()
        self.draining = list(self.shards)
        for shard in self.shards:
            self._cut(shard, only_full=False)
            shard.retired = True
            shard.wake.set()  # an idle sender wakes up, finds its queue empty and stops
        self.n_shards = n
        self.shards = self._make_shards(n)
        self._start_generation(recovered=False)
        return True

    async def _ticker(self) -> None:
        deadline = self.config.queue_config.batch_send_deadline
        step = max(0.05, min(1.0, deadline / 4))
        while True:
            await anyio.sleep(step)
            now = time.monotonic()
            for shard in self.shards:
                if shard.pending and now - shard.oldest >= deadline:
                    self._cut(shard, only_full=False)

    async def _sender(self, shard: _Shard, after: anyio.Event | None) -> None:
        if after is not None:
            await after.wait()
        while True:
            block = shard.queue.peek()
            self._account_queue(shard)
            if block is None:
                if shard.retired:
                    self._shard_done(shard)
                    return
                shard.wake = anyio.Event()
                await shard.wake.wait()
                continue
            await self._send_with_retries(block)
            shard.queue.ack()
            self.pending_samples -= block.samples
            self._account_queue(shard)
            self.metrics.rw_pending_samples.labels(*self.metric_labels).set(self.pending_samples)

    async def _send_with_retries(self, block: Block) -> None:
        q = self.config.queue_config
        backoff = q.min_backoff
        label = self.label
        while True:
            if block.attempts:
                self._retried(block.samples)
            block.attempts += 1
            wait: float | None = None
            t0 = time.perf_counter()
            client = self.clients.get(self.config.http)  # once per attempt: may check certificate files
            timeout = self.config.remote_timeout
            request = client.build_request("POST", self._url, content=block.data, headers=self._headers,
                                           timeout=timeout)
            try:
                resp = await client.send(request, timeout=timeout, limit=RESPONSE_LIMIT, truncate=True)
                verdict = classify_status(resp.status_code, q.retry_on_http_429)
                self.metrics.rw_send_latency.labels(*self.metric_labels).observe(time.perf_counter() - t0)
                if verdict == OK:
                    self._out_window += block.samples
                    self._send_seconds_window += time.perf_counter() - t0
                    self.sent_samples += block.samples
                    self.metrics.rw_samples_sent.labels(*self.metric_labels).inc(block.samples)
                    self.metrics.rw_bytes_sent.labels(*self.metric_labels).inc(len(block.data))
                    if block.max_ts > self.highest_sent_ts:
                        self.highest_sent_ts = block.max_ts
                        self.metrics.rw_highest_sent_timestamp.labels(*self.metric_labels).set(block.max_ts / 1000)
                    return
                message = resp.content[:512].decode("utf-8", "replace").strip()
                if verdict == DROP:
                    self._log_once(f"{label}: HTTP {resp.status_code}, dropping {block.samples} samples: {message}")
                    self._drop(DROP_HTTP_4XX, block.samples)
                    return
                refused = " (credentials refused: check basic_auth, authorization, oauth2 or sigv4)" \
                    if resp.status_code in CREDENTIAL_STATUSES else ""
                self._log_once(f"{label}: HTTP {resp.status_code}{refused}, will retry: {message}")
                if resp.status_code == 429:
                    wait = retry_after_seconds(resp.headers.get("retry-after"))
            except HTTPError as exc:
                self._log_once(f"{label}: {exc.__class__.__name__} ({exc.reason}), will retry: {exc}")
            finally:
                if request.extensions.get("relay_resent"):  # the transport sent it again on a new connection
                    self._retried(block.samples)
            self.metrics.rw_samples_failed.labels(*self.metric_labels).inc(block.samples)
            if wait is None:
                wait = backoff * (0.5 + random.random() / 2)
                backoff = min(backoff * 2, q.max_backoff)
            await anyio.sleep(wait)

    def _retried(self, n: int) -> None:
        self.retried_samples += n
        self.metrics.rw_samples_retried.labels(*self.metric_labels).inc(n)

    def _log_once(self, message: str) -> None:
        if message not in self._messages_seen:
            if len(self._messages_seen) < 1000:
                self._messages_seen.add(message)
            log.warning("remote_write %s", message)

    # -- stopping ----------------------------------------------------------------------------

    def flush_pending(self) -> None:
        """Encode everything pending into blocks (at shutdown, or before a final drain)."""
        for shard in self.shards:
            self._cut(shard, only_full=False)

    @property
    def idle(self) -> bool:
        return not self.draining and all(not len(s.queue) and not s.pending for s in self.shards)

    async def drain(self, timeout: float) -> bool:
        """Flush and wait up to ``timeout`` seconds for every block to be sent; True if all went."""
        self.flush_pending()
        with anyio.move_on_after(timeout):
            while not self.idle:
                await anyio.sleep(0.02)
        return self.idle

    def close(self) -> None:
        """Persist what is left (with a queue folder) and close the queues. Call after the senders
        stop. Without a queue folder what is left is lost: counted, as dropped at shutdown."""
        self.flush_pending()
        for shard in [*self.draining, *self.shards]:
            shard.queue.close()
        if self.queue_dir is None and self.pending_samples > 0:
            self._drop(DROP_SHUTDOWN, self.pending_samples)
            self.pending_samples = 0

    def forget_metrics(self) -> None:
        """Remove this endpoint's series from every remote-write metric (it was removed by a reload)."""
        m = self.metrics
        for metric in (m.rw_samples_sent, m.rw_samples_failed, m.rw_samples_retried, m.rw_bytes_sent, m.rw_queue_bytes,
                       m.rw_pending_samples, m.rw_shards, m.rw_send_latency, m.rw_highest_sent_timestamp,
                       m.rw_queue_max_bytes):
            with contextlib.suppress(KeyError):  # never set
                metric.remove(*self.metric_labels)
        for reason in self.dropped:
            with contextlib.suppress(KeyError):
                m.rw_samples_dropped.remove(*self.metric_labels, reason)

    def stats(self) -> dict[str, object]:
        return {
            "url": self.label,
            "accepted": self.accepted_samples,
            "retried": self.retried_samples,
            "sent": self.sent_samples,
            "pending": self.pending_samples,
            "dropped": dict(self.dropped),
            "queue_bytes": self.queue_bytes,
            "shards": self.n_shards,
        }
