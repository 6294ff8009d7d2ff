"""What a served scrape costs the etcd fleet simulator (relay/sim.py).

Starts the simulator in a subprocess, scrapes every member a few rounds with a lean keep-alive
HTTP/1.1 client (asyncio streams, one connection per member), and reads the simulator's CPU
from /proc/PID/stat around the scrape rounds. Prints a table; asserts nothing about time.

    python benchmarks/bench_sim.py                      # 100 and 1,000 members
    python benchmarks/bench_sim.py --members 1000 --rounds 5

"fresh" rows use --update-interval 0 (every request renders a new body: the worst case, what a
scraper polling each member less often than once per update interval sees); "cached" rows use
the default 1 s interval with rounds back to back, so repeat scrapes within a second are served
from the member's cached body.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- child: serve a fleet until stdin closes


async def _child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    from relay.devtools import sim

    config = sim.SimConfig(
        members=args.members,
        version=args.etcd_version,
        single_port=args.single_port,
        gzip=True,
        update_interval=args.update_interval,
    )
    async with sim.Fleet(config) as fleet:
        print(json.dumps({"urls": fleet.urls}), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        print(json.dumps({"served": fleet.requests_served}), flush=True)


# -- parent: the lean scraper


class Scraper:
    def __init__(self, host: str, port: int, path: str, gzip: bool) -> None:
        self.host, self.port = host, port
        enc = b"Accept-Encoding: gzip\r\n" if gzip else b""
        self.request = b"GET %s HTTP/1.1\r\nHost: %s:%d\r\n%sUser-Agent: bench\r\n\r\n" % (
            path.encode(),
            host.encode(),
            port,
            enc,
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def scrape(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        assert self.reader is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        return len(body)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Result:
    members: int
    mode: str
    values: str
    encoding: str
    requests: int
    body_kb: float
    cpu_ms_per_req: float
    req_per_s: float
    sim_cpu_share: float


async def _measure(
    pid: int, urls: list[str], rounds: int, gzip: bool, concurrency: int
) -> tuple[int, int, float, float]:
    """Connect and warm up (one unmeasured round), then scrape `rounds` rounds; -> requests, bytes, wall, CPU."""
    scrapers = []
    for url in urls:
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        scrapers.append(Scraper(host, int(port), "/" + path, gzip))
    sem = asyncio.Semaphore(concurrency)

    async def one(s: Scraper) -> int:
        async with sem:
            return await s.scrape()

    await asyncio.gather(*(one(s) for s in scrapers))
    cpu0 = proc_cpu_seconds(pid)
    t0 = time.perf_counter()
    nbytes = requests = 0
    for _ in range(rounds):
        sizes = await asyncio.gather(*(one(s) for s in scrapers))
        nbytes += sum(sizes)
        requests += len(sizes)
    wall = time.perf_counter() - t0
    cpu = proc_cpu_seconds(pid) - cpu0
    for s in scrapers:
        s.close()
    return requests, nbytes, wall, cpu


def run_case(
    members: int, rounds: int, gzip: bool, interval: float, single_port: bool, version: str
) -> Result:
    cmd = [sys.executable, __file__, "--child", "--members", str(members)]
    cmd += ["--update-interval", str(interval), "--etcd-version", version]
    if single_port:
        cmd.append("--single-port")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        urls = json.loads(proc.stdout.readline())["urls"]
        requests, nbytes, wall, cpu = asyncio.run(_measure(proc.pid, urls, rounds, gzip, 200))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)
    return Result(
        members=members,
        mode="single-port" if single_port else "port each",
        values="fresh" if interval == 0 else f"cached {interval:g}s",
        encoding="gzip" if gzip else "identity",
        requests=requests,
        body_kb=nbytes / requests / 1024,
        cpu_ms_per_req=cpu / requests * 1000,
        req_per_s=requests / wall,
        sim_cpu_share=cpu / wall,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--members", type=int, action="append")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--update-interval", type=float, default=0.0)
    parser.add_argument("--single-port", action="store_true")
    parser.add_argument("--etcd-version", default="3.5")
    args = parser.parse_args()
    if args.child:
        args.members = args.members[0]
        asyncio.run(_child(args))
        return
    sizes = args.members or [100, 1000]
    cases = []
    for members in sizes:
        cases += [
            (members, True, 0.0, False),
            (members, False, 0.0, False),
            (members, True, 1.0, False),
        ]
    cases.append((sizes[-1], True, 0.0, True))
    print(
        f"etcd {args.etcd_version} bodies, {args.rounds} rounds per case, simulator CPU from /proc/PID/stat, "
        f"{os.cpu_count()} CPUs"
    )
    header = (
        f"{'members':>7} {'mode':<11} {'values':<10} {'encoding':<8} {'requests':>8} {'body KB':>8} "
        f"{'sim CPU ms/req':>14} {'req/s':>8} {'sim CPU %':>9}"
    )
    print(header)
    print("-" * len(header))
    for members, gzip, interval, single in cases:
        rounds = max(args.rounds, 3000 // members)  # enough requests for /proc's 10 ms CPU ticks
        r = run_case(members, rounds, gzip, interval, single, args.etcd_version)
        print(
            f"{r.members:>7} {r.mode:<11} {r.values:<10} {r.encoding:<8} {r.requests:>8} "
            f"{r.body_kb:>8.1f} {r.cpu_ms_per_req:>14.3f} {r.req_per_s:>8.0f} {100 * r.sim_cpu_share:>8.0f}%",
            flush=True,
        )


if __name__ == "__main__":
    main()
