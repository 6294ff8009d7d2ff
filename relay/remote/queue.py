"""Block queues for remote write: already-encoded, compressed WriteRequests waiting to be sent.

Two kinds, one interface (FIFO; ``peek`` the oldest, ``ack`` it once sent or dropped):

* :class:`MemoryQueue` holds blocks in memory, bounded in bytes; when full it drops the oldest.
* :class:`DiskQueue` writes every block through to append-only segment files in a folder, so
  what was accepted survives a relay restart (and a SIGKILL loses only what was never encoded
  into a block). It keeps the newest blocks in memory as well, up to ``memory_bytes``, so a
  healthy receiver never makes it read back from disk. It is bounded in bytes on disk: when full
  it deletes the oldest segment and counts its samples as dropped. A record that fails its
  checksum (a torn write, a corrupted file) is skipped and counted, never a crash. A disk that
  cannot be written (full, read-only) makes it keep blocks in memory only, counted: at most
  ``memory_bytes`` of them, the oldest dropped (and counted) past that; a short write is taken back.

Segment record::

    magic u32 'RLQ1' | length u32 | samples u32 | crc32 u32 | data[length]

The read position is kept in ``cursor`` (segment number and offset), rewritten after every ack.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "BlockQueue", "DiskQueue", "MemoryQueue"]

log = logging.getLogger("relay.remote.queue")

_MAGIC = 0x31514C52  # b"RLQ1" little endian
_HEADER = struct.Struct("<IIII")
_CURSOR = struct.Struct("<QQ")


@dataclass
class Block:
    """An encoded, compressed WriteRequest and how many samples it carries."""

    data: bytes
    samples: int
    attempts: int = 0
    max_ts: int = 0  # newest sample timestamp (ms) in the block; 0 when unknown (read back after a restart)


class BlockQueue:
    """FIFO of blocks. ``dropped_samples`` counts what the byte bound forced out."""

    dropped_samples: int = 0
    corrupt_records: int = 0
    corrupt_samples: int = 0  # samples of records that failed their checksum (not the byte bound)
    write_errors: int = 0

    def put(self, block: Block) -> None:
        raise NotImplementedError

    def peek(self) -> Block | None:
        raise NotImplementedError

    def ack(self) -> None:
        raise NotImplementedError

    def drop_oldest(self) -> bool:
        """Drop (and count) the oldest block that is not being sent (peeked, not yet acked) and not
        the only one; False if there is none. For a bound across queues."""
        return False

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def bytes(self) -> int:
        raise NotImplementedError

    @property
    def samples(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


class MemoryQueue(BlockQueue):
    """Blocks in memory, bounded in bytes: past ``max_bytes`` the oldest go (counted), but never
    the block being sent (peeked and not yet acked)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._blocks: deque[Block] = deque()
        self._bytes = 0
        self._samples = 0
        self._in_flight = False  # the head was handed out by peek() and not acked yet

    def put(self, block: Block) -> None:
        self._blocks.append(block)
        self._bytes += len(block.data)
        self._samples += block.samples
        while self._bytes > self.max_bytes and self.drop_oldest():
            pass

    def drop_oldest(self) -> bool:
        """Drop (and count) the oldest block that is neither being sent nor the newest; False if
        there is none."""
        i = 1 if self._in_flight else 0
        if len(self._blocks) - i <= 1:
            return False
        old = self._blocks[i]
        del self._blocks[i]
        self._bytes -= len(old.data)
        self._samples -= old.samples
        self.dropped_samples += old.samples
        return True

    def peek(self) -> Block | None:
        if not self._blocks:
            return None
        self._in_flight = True
        return self._blocks[0]

    def ack(self) -> None:
        old = self._blocks.popleft()
        self._in_flight = False
        self._bytes -= len(old.data)
        self._samples -= old.samples

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def samples(self) -> int:
        return self._samples


@dataclass
class _Record:
    segment: int
    offset: int  # of the header
    length: int
    samples: int
    data: bytes | None  # cached in memory, or None: read from disk when needed
    max_ts: int = 0  # the block's newest sample timestamp (ms), kept in memory only (0 after a restart)


class DiskQueue(BlockQueue):
    """A persistent FIFO of blocks in ``folder``; see the module docstring."""

    def __init__(
        self,
        folder: str | Path,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        memory_bytes: int = 32 << 20,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.memory_bytes = memory_bytes
        self._records: deque[_Record] = deque()
        self._memory: deque[Block] = deque()  # blocks the disk refused: kept in memory only
        self._memory_held = 0  # their bytes: at most memory_bytes, the oldest dropped (counted) past it
        self._in_flight = False  # the head was handed out by peek() and not acked yet
        self._cached_bytes = 0
        self._disk_bytes = 0
        self._samples = 0
        self._unsent_bytes = 0
        self._seg_sizes: dict[int, int] = {}
        self._writer: tuple[int, int] | None = None  # (segment, fd)
        self._write_offset = 0
        self._cursor_fd = os.open(self.folder / "cursor", os.O_RDWR | os.O_CREAT, 0o600)
        self._recover()

    # -- files -------------------------------------------------------------------------------

    def _seg_path(self, seg: int) -> Path:
        return self.folder / f"{seg:016d}.seg"

    def _segments(self) -> list[int]:
        out = []
        for p in self.folder.glob("*.seg"):
            try:
                out.append(int(p.stem))
            except ValueError:
                continue
        return sorted(out)

    def _recover(self) -> None:
        raw = os.pread(self._cursor_fd, _CURSOR.size, 0)
        cur_seg, cur_off = _CURSOR.unpack(raw) if len(raw) == _CURSOR.size else (0, 0)
        for seg in self._segments():
            path = self._seg_path(seg)
            size = path.stat().st_size
            if seg < cur_seg:
                path.unlink(missing_ok=True)
                continue
            self._seg_sizes[seg] = size
            self._disk_bytes += size
            with open(path, "rb") as f:
                off = cur_off if seg == cur_seg else 0
                while off + _HEADER.size <= size:
                    f.seek(off)
                    magic, length, samples, _crc = _HEADER.unpack(f.read(_HEADER.size))
                    if magic != _MAGIC or off + _HEADER.size + length > size:
                        self.corrupt_records += 1
                        log.error("queue %s: segment %s is corrupt at offset %d; skipping its rest", self.folder,
                                  path.name, off)
                        break
                    self._records.append(_Record(seg, off, length, samples, None))
                    self._samples += samples
                    self._unsent_bytes += length
                    off += _HEADER.size + length
                else:
                    if off != size:
                        self.corrupt_records += 1
                        log.error("queue %s: segment %s ends in a torn record; skipping it", self.folder, path.name)
        if self._records:
            log.info("queue %s: resuming %d blocks (%d samples) from disk", self.folder, len(self._records),
                     self._samples)

    def _open_writer(self) -> tuple[int, int]:
        segs = self._segments()
        seg = (segs[-1] + 1) if segs else 1
        fd = os.open(self._seg_path(seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._seg_sizes[seg] = 0
        self._write_offset = 0
        self._writer = (seg, fd)
        return self._writer

    def _close_writer(self) -> None:
        if self._writer is not None:
            os.close(self._writer[1])
            self._writer = None

    def _write_cursor(self, seg: int, off: int) -> None:
        os.pwrite(self._cursor_fd, _CURSOR.pack(seg, off), 0)

    # -- queue -------------------------------------------------------------------------------

    def put(self, block: Block) -> None:
        if self._memory:  # the disk failed before: keep FIFO order in memory until it drains
            self._hold(block)
            return
        try:
            seg, fd = self._writer if self._writer is not None else self._open_writer()
            if self._write_offset >= self.segment_bytes:
                self._close_writer()
                seg, fd = self._open_writer()
            header = _HEADER.pack(_MAGIC, len(block.data), block.samples, zlib.crc32(block.data))
            record = header + block.data
            written = os.write(fd, record)
            if written != len(record):  # a full disk takes what fits: take the torn piece back
                os.ftruncate(fd, self._write_offset)
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(record)} bytes)")
        except OSError as exc:
            self.write_errors += 1
            log.error("queue %s: cannot write (%s); keeping blocks in memory (at most %d bytes)", self.folder,
                      exc.strerror or exc, self.memory_bytes)
            self._close_writer()
            self._hold(block)
            return
        n = _HEADER.size + len(block.data)
        rec = _Record(seg, self._write_offset, len(block.data), block.samples, block.data, block.max_ts)
        self._records.append(rec)
        self._unsent_bytes += len(block.data)
        self._write_offset += n
        self._seg_sizes[seg] = self._seg_sizes.get(seg, 0) + n
        self._disk_bytes += n
        self._cached_bytes += len(block.data)
        self._samples += block.samples
        self._trim_cache()
        self._enforce_bound()

    def _hold(self, block: Block) -> None:
        """Keep a block the disk refused in memory; past memory_bytes the oldest held ones go
        (counted in dropped_samples, as the byte bound's drops)."""
        self._memory.append(block)
        self._memory_held += len(block.data)
        self._samples += block.samples
        while self._memory_held > self.memory_bytes:
            i = 1 if (self._in_flight and not self._records) else 0  # never the block being sent
            if len(self._memory) - i <= 1:
                break
            self.dropped_samples += self._unhold(i).samples

    def _unhold(self, i: int) -> Block:
        """Take block ``i`` of those held in memory out of the queue."""
        old = self._memory[i]
        del self._memory[i]
        self._memory_held -= len(old.data)
        self._samples -= old.samples
        return old

    def _trim_cache(self) -> None:
        if self._cached_bytes <= self.memory_bytes:
            return
        for rec in self._records:  # oldest first: drop cached copies of old blocks
            if rec.data is not None:
                self._cached_bytes -= len(rec.data)
                rec.data = None
                if self._cached_bytes <= self.memory_bytes:
                    return

    def _enforce_bound(self) -> None:
        """Past max_bytes on disk, delete the oldest segments (their samples counted as dropped):
        never the one being written, nor the one holding the block being sent (the next oldest
        goes instead)."""
        while self._disk_bytes > self.max_bytes and len(self._seg_sizes) > 1:
            writing = self._writer[0] if self._writer is not None else None
            sending = self._records[0].segment if (self._in_flight and self._records) else None
            victim = next((seg for seg in sorted(self._seg_sizes) if seg not in (writing, sending)), None)
            if victim is None:
                break
            kept: deque[_Record] = deque()
            for rec in self._records:
                if rec.segment != victim:
                    kept.append(rec)
                    continue
                self._samples -= rec.samples
                self._unsent_bytes -= rec.length
                self.dropped_samples += rec.samples
                if rec.data is not None:
                    self._cached_bytes -= len(rec.data)
            self._records = kept
            self._delete_segment(victim)
            if self._records:
                self._write_cursor(self._records[0].segment, self._records[0].offset)

    def _delete_segment(self, seg: int) -> None:
        self._disk_bytes -= self._seg_sizes.pop(seg, 0)
        self._seg_path(seg).unlink(missing_ok=True)

    def peek(self) -> Block | None:
        while self._records:
            rec = self._records[0]
            if rec.data is not None:
                self._in_flight = True
                return Block(rec.data, rec.samples, max_ts=rec.max_ts)
            try:
                with open(self._seg_path(rec.segment), "rb") as f:
                    f.seek(rec.offset)
                    header = f.read(_HEADER.size)
                    data = f.read(rec.length)
                ok = len(header) == _HEADER.size and len(data) == rec.length and (
                    _HEADER.unpack(header)[3] == zlib.crc32(data))
            except OSError:
                ok = False
            if ok:
                self._in_flight = True
                return Block(data, rec.samples, max_ts=rec.max_ts)
            self.corrupt_records += 1
            log.error("queue %s: record at %d:%d failed its checksum; skipped", self.folder, rec.segment, rec.offset)
            self.corrupt_samples += rec.samples
            self._pop_record()
        if self._memory:
            self._in_flight = True
            return self._memory[0]
        return None

    def drop_oldest(self) -> bool:
        if self._in_flight or len(self) <= 1:
            return False
        if self._records:
            self.dropped_samples += self._records[0].samples
            self._pop_record()
        else:
            self.dropped_samples += self._unhold(0).samples
        return True

    def ack(self) -> None:
        self._in_flight = False
        if self._records:
            self._pop_record()
        elif self._memory:
            self._unhold(0)

    def _pop_record(self) -> None:
        rec = self._records.popleft()
        self._samples -= rec.samples
        self._unsent_bytes -= rec.length
        if rec.data is not None:
            self._cached_bytes -= len(rec.data)
        nxt = self._records[0] if self._records else None
        if nxt is None or nxt.segment != rec.segment:
            writing = self._writer is not None and self._writer[0] == rec.segment
            if not writing:
                self._delete_segment(rec.segment)
        if nxt is not None:
            self._write_cursor(nxt.segment, nxt.offset)
        else:
            self._write_cursor(rec.segment, rec.offset + _HEADER.size + rec.length)

    def __len__(self) -> int:
        return len(self._records) + len(self._memory)

    @property
    def bytes(self) -> int:
        """Bytes of blocks not yet sent (on disk, or held in memory when the disk refused them)."""
        return self._unsent_bytes + self._memory_held

    @property
    def samples(self) -> int:
        return self._samples

    def close(self) -> None:
        """Close files; blocks still held only in memory (the disk refused them) are tried once more."""
        pending = list(self._memory)
        self._memory.clear()
        self._memory_held = 0
        for b in pending:
            self._samples -= b.samples
            self.put(b)
        if self._writer is not None:
            os.fsync(self._writer[1])
        self._close_writer()
        os.fsync(self._cursor_fd)
        os.close(self._cursor_fd)
