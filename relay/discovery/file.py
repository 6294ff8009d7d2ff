"""``file_sd_configs``: target groups from JSON or YAML files, re-read when they change."""

from __future__ import annotations

import json
import logging
import os

import anyio
import yaml

from ..config import FileSDConfig
from .base import DiscoveryError, Provider, Send, TargetGroup

__all__ = ["FileSDProvider", "read_file_sd"]

log = logging.getLogger("relay.discovery.file")


#: A file_sd file of 10,000 targets with labels is about 2 MiB; past this it is not read at all.
FILE_LIMIT = 64 << 20

_SCALARS = (str, int, float, bool)


def _scalar(value: object, where: str) -> str:
    """A target or label value as a string: scalars only (a list or mapping there, such as a YAML
    alias bomb, is refused before anything expands it)."""
    if value is None:
        return ""
    if not isinstance(value, _SCALARS):
        raise DiscoveryError(f"{where}: must be a string, got {type(value).__name__}")
    if isinstance(value, bool):
        return "true" if value else "false"  # as written in YAML, as Prometheus reads it
    return str(value)


def read_file_sd(path: str) -> list[TargetGroup]:
    """Read one file_sd file (JSON or YAML list of ``{targets: [...], labels: {...}}``).

    Every problem of the file is a `DiscoveryError` naming it: unreadable, larger than
    `FILE_LIMIT`, not UTF-8, not JSON/YAML, nested too deeply, or not of file_sd's shape."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(FILE_LIMIT + 1) if size <= FILE_LIMIT else b""
    except OSError as exc:
        raise DiscoveryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if size > FILE_LIMIT or len(raw) > FILE_LIMIT:  # (a file still growing: its size said less)
        raise DiscoveryError(f"{path}: larger than {FILE_LIMIT >> 20} MiB; not read")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DiscoveryError(f"{path}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    del raw
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise DiscoveryError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        # Only the position and the problem: never a snippet of the file's content.
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        raise DiscoveryError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or 'syntax error'}") from None
    except RecursionError:
        raise DiscoveryError(f"{path}: nested too deeply") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise DiscoveryError(f"{path}: must be a list of target groups")
    groups = []
    for i, g in enumerate(data):
        if not isinstance(g, dict) or not isinstance(g.get("targets", []), list):
            raise DiscoveryError(f"{path}[{i}]: must be a mapping with a list of targets")
        unknown = set(g) - {"targets", "labels"}
        if unknown:
            raise DiscoveryError(f"{path}[{i}].{sorted(unknown)[0]}: unknown key")
        labels = g.get("labels") or {}
        if not isinstance(labels, dict):
            raise DiscoveryError(f"{path}[{i}].labels: must be a mapping")
        targets = tuple(_scalar(t, f"{path}[{i}].targets[{j}]") for j, t in enumerate(g.get("targets") or []))
        lbl = {_scalar(k, f"{path}[{i}].labels"): _scalar(v, f"{path}[{i}].labels.{k}") for k, v in labels.items()}
        lbl["__meta_filepath"] = path
        groups.append(TargetGroup(source=f"{path}:{i}", targets=targets, labels=tuple(sorted(lbl.items()))))
    return groups


class FileSDProvider(Provider):
    """Reads file_sd files and re-reads them when they change (polled every few seconds)."""

    name = "file"

    def __init__(self, config: FileSDConfig, job: str, poll: float = 2.0) -> None:
        self.config = config
        self.job = job
        self.poll = poll
        self.last_error: str | None = None
        self._refused: set[str] = set()

    def _files(self) -> list[str]:
        """The files named, and the files a pattern matches in its own folder: a match that is a
        link to somewhere outside that folder is not followed (security: read only what was named)."""
        import glob

        out: list[str] = []
        for pattern in self.config.files:
            if not any(c in pattern for c in "*?["):
                out.append(pattern)
                continue
            folder = os.path.realpath(os.path.dirname(pattern) or ".")
            for match in sorted(glob.glob(pattern)):
                real = os.path.realpath(match)
                if os.path.dirname(real) != folder and not real.startswith(folder + os.sep):
                    if match not in self._refused:
                        self._refused.add(match)
                        log.error("file_sd for job %s: %s links outside %s; not read", self.job, match, folder)
                    continue
                out.append(match)
        return out

    def _stamp(self) -> tuple[tuple[str, float, int], ...]:
        stamp = []
        for f in self._files():
            try:
                st = os.stat(f)
                stamp.append((f, st.st_mtime, st.st_size))
            except OSError:
                stamp.append((f, -1.0, -1))
        return tuple(stamp)

    async def run(self, send: Send) -> None:
        last_stamp: tuple[tuple[str, float, int], ...] | None = None
        previous: dict[str, list[TargetGroup]] = {}
        said: dict[str, str] = {}  # file -> the error last logged for it
        since_full = 0.0
        while True:
            stamp = self._stamp()
            if stamp != last_stamp or since_full >= self.config.refresh_interval:
                last_stamp, since_full = stamp, 0.0
                current: dict[str, list[TargetGroup]] = {}
                errors: list[str] = []
                for f in self._files():
                    try:
                        # in a worker thread: a file of 100,000 targets takes a while to read
                        groups = await anyio.to_thread.run_sync(read_file_sd, f)
                        # the same groups as last time: the same objects, which the scrape
                        # manager knows (it relabels only group objects it has not seen)
                        current[f] = previous[f] if groups == previous.get(f) else groups
                        if said.pop(f, None) is not None:
                            log.info("file_sd for job %s: %s is valid again", self.job, f)
                    except (DiscoveryError, MemoryError) as exc:
                        # Keep what the file said last time it was valid; say why once per change.
                        text = str(exc) if isinstance(exc, DiscoveryError) else f"{f}: out of memory reading it"
                        if said.get(f) != text:
                            log.error("file_sd for job %s: %s", self.job, text)
                        said[f] = text
                        errors.append(text)
                        current[f] = previous.get(f, [])
                error = "; ".join(errors)  # every file that failed, not just the last
                self.last_error = error or None
                if error:
                    self.failed(error)
                previous = current
                send([g for gs in current.values() for g in gs])
            await anyio.sleep(self.poll)
            since_full += self.poll
