#!/usr/bin/env python3
"""Fuzz every decoder of untrusted input, a million inputs each: issue 17's fuzzing probe.

The decoders and their documented errors are in tests/helpers/fuzztargets.py (DHCP datagrams,
mDNS queries and responses, AF_PACKET frames, netlink neighbour dumps, JSON and form request
bodies, CSV uploads, page cursors, MAC addresses, ISO times, the DHCP probe's OFFER parser).
Each decoder may raise only its own error: anything else counts as a crash, and its input is
kept. Every single input is timed with time.perf_counter; the event loop must never stall for
more than 50 ms on one input.

Engines: `atheris` (coverage-guided libFuzzer; `.venv/bin/pip install -e '.[fuzz]'`) runs each
decoder in its own subprocess, the decoder's modules instrumented, the corpus seeded from the
captures under tests/fixtures and our own encoders' messages, with a dictionary of the format's
pieces (option TLVs, DNS labels and compression pointers, EtherTypes, ...). `mutation` (the
default when atheris is not installed) is a plain mutation fuzzer over the same seeds and
pieces (bit flips, interesting values, truncation, insertion, splicing), deterministic for a
given --seed. Instrumentation makes decoding slower, so the slowest inputs of a run are timed
again afterwards in this process, uninstrumented (`worst_replay_ms`, median of 5).

It never asserts. It prints one line per decoder; with --json, one JSON object per line with
`probe` (fuzz-<decoder>), `sent`, `crashes`, `worst_input_ms` (the slowest single input while
fuzzing), `worst_input` (a hex file of it), `worst_replay_ms`, `inputs_per_s`, `seconds`,
`engine`, and with atheris libFuzzer's `coverage`/`features`/`corpus`. A crash prints a
reproducer to stderr: `bench/reliability/fuzz.py --replay DECODER FILE.hex` runs that input
and shows the traceback. Crash and slowest inputs, logs and corpora stay under the printed
directory.

    .venv/bin/python bench/reliability/fuzz.py [--inputs 1000000] [--decoders dhcp,mdns-query]
        [--engine auto|atheris|mutation] [--jobs 1] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

KEEP_SLOWEST = 8
KEEP_PER_CRASH_KIND = 3
STALL_MS = 50.0


def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


# --- the worker: one decoder, one process -------------------------------------------------------


class Harness:
    """Calls the decoder once per input, times it, and keeps the slowest inputs and the crashes."""

    def __init__(self, target: Any, total: int, out: Path) -> None:
        self.target = target
        self.total = total
        self.out = out
        self.sent = 0
        self.crashes = 0
        self.kinds: dict[str, int] = {}
        self.crash_files: list[str] = []
        self.slowest: list[tuple[float, int, bytes]] = []  # min-heap of (seconds, n, input)
        self.started = 0.0

    def one(self, data: bytes) -> None:
        if not self.started:
            self.started = time.perf_counter()
        call, allowed = self.target.call, self.target.allowed
        t0 = time.perf_counter()
        try:
            call(data)
        except allowed:
            pass
        except Exception as e:  # noqa: BLE001 - anything else is what we are looking for
            self._crash(data, e)
        dt = time.perf_counter() - t0
        self.sent += 1
        slowest = self.slowest
        if len(slowest) < KEEP_SLOWEST:
            heapq.heappush(slowest, (dt, self.sent, data))
        elif dt > slowest[0][0]:
            heapq.heapreplace(slowest, (dt, self.sent, data))
        if self.sent >= self.total:
            self.finish()

    def _crash(self, data: bytes, e: Exception) -> None:
        self.crashes += 1
        tb = traceback.extract_tb(e.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        kind = f"{type(e).__name__} at {where}"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if self.kinds[kind] <= KEEP_PER_CRASH_KIND:
            path = self.out / f"crash-{len(self.crash_files)}.hex"
            path.write_text(data.hex() + "\n")
            self.crash_files.append(str(path))
            print(f"CRASH {self.target.name}: {kind}: {e!r:.200}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        seconds = time.perf_counter() - self.started if self.started else 0.0
        slow = []
        for i, (dt, n, data) in enumerate(sorted(self.slowest, reverse=True)):
            path = self.out / f"slow-{i}.hex"
            path.write_text(data.hex() + "\n")
            slow.append({"ms": dt * 1000, "input_no": n, "len": len(data), "file": str(path)})
        stats = {
            "sent": self.sent,
            "crashes": self.crashes,
            "crash_kinds": self.kinds,
            "crash_files": self.crash_files,
            "slowest": slow,
            "seconds": seconds,
        }
        (self.out / "stats.json").write_text(json.dumps(stats))
        sys.stderr.flush()
        os._exit(0)  # atheris.Fuzz() never returns; stop here, at exactly `total` inputs


def _dict_line(token: bytes) -> str:
    body = "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02x}" for b in token
    )
    return f'"{body}"\n'


def _run_atheris(harness: Harness, target: Any, seed: int, out: Path) -> None:
    import atheris

    corpus = out / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, data in enumerate(target.seeds()):
        (corpus / f"seed-{i}").write_bytes(data)
    argv = [
        sys.argv[0],
        f"-runs={2 * harness.total + 10_000}",
        f"-max_len={target.max_len}",
        f"-seed={seed}",
        "-timeout=30",
        "-rss_limit_mb=3072",
        "-print_final_stats=1",
    ]
    if target.tokens:
        dict_file = out / "tokens.dict"
        dict_file.write_text("".join(_dict_line(t) for t in target.tokens))
        argv.append(f"-dict={dict_file}")
    argv.append(str(corpus))
    atheris.Setup(argv, harness.one)
    atheris.Fuzz()


INTERESTING = (0, 1, 0x7F, 0x80, 0xC0, 0xFE, 0xFF)
INTERESTING16 = (0, 1, 0x3F, 0x40, 0xFF, 0x100, 0x7FFF, 0x8000, 0xC00C, 0xFFFF)


def mutate(
    rng: random.Random, data: bytearray, pool: list[bytes], tokens: tuple[bytes, ...]
) -> None:
    for _ in range(rng.randint(1, 5)):
        n = len(data)
        op = rng.randrange(11)
        at = rng.randint(0, n)
        if op == 0 and n:
            data[at % n] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            data[at % n] = rng.choice(INTERESTING)
        elif op == 2 and n:
            data[at % n] = rng.randrange(256)
        elif op == 3:
            del data[at:]
        elif op == 4:
            del data[at : at + rng.randint(1, 32)]
        elif op == 5:
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 6 and tokens:
            data[at:at] = rng.choice(tokens)
        elif op == 7 and tokens:
            token = rng.choice(tokens)
            data[at : at + len(token)] = token
        elif op == 8 and n:
            start = rng.randrange(n)
            piece = data[start : start + rng.randint(1, 64)]
            data[at:at] = piece * rng.randint(1, 8)
        elif op == 9:
            other = rng.choice(pool)
            cut = rng.randint(0, len(other))
            data[at:] = other[cut:]
        elif op == 10 and n >= 2:
            pos = at % (n - 1)
            data[pos : pos + 2] = rng.choice(INTERESTING16).to_bytes(2, "big")


def _run_mutation(harness: Harness, target: Any, seed: int) -> None:
    rng = random.Random(seed)
    seeds = target.seeds()
    pool = list(seeds)  # seeds and a ring of earlier outputs, so mutations stack up
    for i in range(harness.total):
        base = rng.choice(pool) if rng.random() < 0.9 else rng.choice(seeds)
        data = bytearray(base)
        mutate(rng, data, pool, target.tokens)
        out = bytes(data[: target.max_len])
        if rng.random() < 0.05:
            if len(pool) < 256 + len(seeds):
                pool.append(out)
            else:
                pool[len(seeds) + i % 256] = out
        harness.one(out)
    harness.finish()


def worker(name: str, total: int, engine: str, seed: int, out: Path) -> None:
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports():
            from tests.helpers import fuzztargets
    else:
        from tests.helpers import fuzztargets
    target = fuzztargets.TARGETS[name]
    harness = Harness(target, total, out)
    if engine == "atheris":
        _run_atheris(harness, target, seed, out)
    else:
        _run_mutation(harness, target, seed)
    harness.finish()


# --- the parent: one subprocess per decoder, then the report ------------------------------------

_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/", re.M)


def _replay_ms(target: Any, data: bytes, times: int = 5) -> float:
    costs = []
    for _ in range(times):
        t0 = time.perf_counter()
        with contextlib.suppress(Exception):  # a crash is reported already; timing only
            target.call(data)
        costs.append(time.perf_counter() - t0)
    return statistics.median(costs) * 1000


def run_one(name: str, args: argparse.Namespace, engine: str, root: Path) -> dict[str, Any]:
    from tests.helpers.fuzztargets import TARGETS

    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    log = out / ("libfuzzer.log" if engine == "atheris" else "worker.log")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name]
    cmd += ["--inputs", str(args.inputs), "--engine", engine, "--seed", str(args.seed)]
    cmd += ["--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    with log.open("wb") as err:
        rc = subprocess.run(cmd, stdout=err, stderr=err, env=env, check=False).returncode
    wall = time.perf_counter() - t0
    report: dict[str, Any] = {"probe": f"fuzz-{name}", "engine": engine}
    stats_file = out / "stats.json"
    if not stats_file.is_file():
        report.update(sent=0, crashes=None, error=f"worker exited {rc} without stats; see {log}")
        return report
    stats = json.loads(stats_file.read_text())
    slowest = stats["slowest"]
    target = TARGETS[name]
    replayed = [
        (_replay_ms(target, bytes.fromhex(Path(s["file"]).read_text())), s["file"]) for s in slowest
    ]
    worst_replay = max(replayed, default=(0.0, ""))
    report.update(
        sent=stats["sent"],
        crashes=stats["crashes"],
        worst_input_ms=round(slowest[0]["ms"], 3) if slowest else 0.0,
        worst_input=slowest[0]["file"] if slowest else "",
        worst_input_len=slowest[0]["len"] if slowest else 0,
        worst_replay_ms=round(worst_replay[0], 3),
        worst_replay_input=worst_replay[1],
        inputs_per_s=round(stats["sent"] / stats["seconds"]) if stats["seconds"] else 0,
        seconds=round(wall, 1),
        crash_kinds=stats["crash_kinds"],
        crash_files=stats["crash_files"],
        log=str(log),
    )
    if engine == "atheris":
        found = _STATUS.findall(log.read_text(errors="replace"))
        if found:
            _runs, cov, ft, corp = found[-1]
            report.update(coverage=int(cov), features=int(ft), corpus=int(corp))
    for path in stats["crash_files"]:
        print(
            f"reproduce: PYTHONPATH={REPO} {sys.executable} {Path(__file__).resolve()} "
            f"--replay {name} {path}",
            file=sys.stderr,
        )
    return report


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['probe']:<19} {r['error']}"
    flag = "  STALL" if max(r["worst_input_ms"], r["worst_replay_ms"]) > STALL_MS else ""
    return (
        f"{r['probe']:<19} {r['engine']:<9} sent {r['sent']:>9,}  crashes {r['crashes']:>4}  "
        f"worst {r['worst_input_ms']:>8.3f} ms (replayed {r['worst_replay_ms']:>7.3f} ms)  "
        f"{r['inputs_per_s']:>7,}/s  {r['seconds']:>7.1f} s{flag}"
    )


def replay(name: str, path: Path) -> int:
    from tests.helpers.fuzztargets import TARGETS

    target = TARGETS[name]
    data = bytes.fromhex(path.read_text())
    t0 = time.perf_counter()
    try:
        result = target.call(data)
    except target.allowed as e:
        print(f"allowed {type(e).__name__}: {e}")
    else:
        print(f"returned {result!r:.300}")
    print(f"{(time.perf_counter() - t0) * 1000:.3f} ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per decoder")
    parser.add_argument("--decoders", default="", help="comma-separated; default: all")
    parser.add_argument("--engine", choices=("auto", "atheris", "mutation"), default="auto")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="decoders fuzzed at once")
    parser.add_argument("--json", action="store_true", help="one JSON object per decoder per line")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--replay", nargs=2, metavar=("DECODER", "FILE"), help="run one input")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay[0], Path(args.replay[1]))
    if args.worker:
        worker(args.worker, args.inputs, args.engine, args.seed, args.out)
        return 0

    from tests.helpers.fuzztargets import TARGETS

    names = [d.strip() for d in args.decoders.split(",") if d.strip()] or list(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown or args.inputs < 1:
        parser.error(
            f"unknown decoders {unknown}; known: {', '.join(TARGETS)}"
            if unknown
            else "--inputs must be at least 1"
        )
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _atheris_available() else "mutation"
    elif engine == "atheris" and not _atheris_available():
        parser.error("atheris is not installed: .venv/bin/pip install -e '.[fuzz]'")
    root = Path(tempfile.mkdtemp(prefix="imprint-fuzz-"))
    print(f"inputs, logs and corpora: {root}", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(run_one, name, args, engine, root) for name in names]
        for future in futures:
            report = future.result()
            print(json.dumps(report) if args.json else _line(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
