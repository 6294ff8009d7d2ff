"""gzip/deflate bodies inflate the same with zlib-ng (the default where installed) and stdlib zlib:
same bytes, same step bound, same error messages. Real gzip from real etcd is inflated end to end
in tests/test_e2e.py and tests/test_transport.py; these feed the decoder the shapes that matter."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from relay._exceptions import BodyLimitError, DecodeError
from relay.http import fetch
from relay.http.fetch import INFLATE_STEP, decoded_chunks, read_body

pytestmark = pytest.mark.anyio

BODY = (Path(__file__).parent / "data" / "etcd-metrics" / "etcd-3.5.1-member-3381.prom").read_bytes()


def _modules() -> list[ModuleType]:
    from zlib_ng import zlib_ng

    return [zlib_ng, zlib]


class _Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def _response(encoding: str, data: bytes, piece: int = 4096) -> httpx.Response:
    pieces = [data[i : i + piece] for i in range(0, len(data), piece)] or [b""]
    return httpx.Response(200, headers={"content-encoding": encoding}, stream=_Pieces(pieces))


def _deflate(data: bytes, wbits: int) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


def test_zlib_ng_is_the_inflater() -> None:
    """zlib-ng is a dependency: an install where it did not load would lose the speed silently."""
    assert fetch.INFLATER == "zlib_ng.zlib_ng"


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("gzip", gzip.compress(BODY)),
        ("x-gzip", gzip.compress(BODY, 1)),
        ("deflate", _deflate(BODY, 15)),  # zlib-wrapped, as RFC 9110 says
        ("deflate", _deflate(BODY, -15)),  # raw, as some servers send it
        ("gzip", gzip.compress(BODY) + b"trailing bytes are ignored"),
    ],
    ids=["gzip", "x-gzip-level1", "deflate-zlib", "deflate-raw", "gzip-trailing"],
)
async def test_same_bytes_with_either_module(
    module: ModuleType, encoding: str, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "_zlib", module)
    assert await read_body(_response(encoding, data)) == BODY


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
async def test_a_bomb_comes_out_in_bounded_steps(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "_zlib", module)
    bomb = gzip.compress(b"\0" * (24 << 20), 9)  # 24 MiB in ~24 KB: one input piece inflates to many steps
    sizes = [len(p) async for p in decoded_chunks(_response("gzip", bomb, piece=len(bomb)))]
    assert sum(sizes) == 24 << 20
    assert max(sizes) <= INFLATE_STEP and len(sizes) >= 24
    with pytest.raises(BodyLimitError):
        await read_body(_response("gzip", bomb), limit=1 << 20)


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
@pytest.mark.parametrize(
    ("encoding", "data", "message"),
    [
        ("gzip", gzip.compress(BODY)[:300], "cannot decode gzip body: the compressed stream is truncated"),
        ("gzip", b"this is not gzip at all", "cannot decode gzip body: Error -3 while decompressing data: incorrect header check"),
        ("deflate", b"\xff" * 64, "cannot decode deflate body: Error -3 while decompressing data: invalid block type"),
    ],
    ids=["truncated", "not-gzip", "bad-raw-deflate"],
)
async def test_same_errors_with_either_module(
    module: ModuleType, encoding: str, data: bytes, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "_zlib", module)
    with pytest.raises(DecodeError) as info:
        await read_body(_response(encoding, data))
    assert str(info.value) == message
