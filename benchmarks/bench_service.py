"""Load benchmark of ``leti serve``: single-arch request latency (p50/p99) and archs/s for 1,000-arch batches; and,
with ``--memory``, the server's peak resident memory under oversized, full, huge and concurrent chunked requests.

The server runs in its own process on 127.0.0.1; load comes from this process through ``leti.Client`` (one
keep-alive connection, requests sent one after another). Without ``--predictor-root`` an xgboost predictor is trained
on synthetic NB201 latencies in a temporary LETI_HOME. Every arch sent is an NB201 cell string not sent before,
so the server's parsed-graph cache does not flatter the numbers; ``--repeat`` adds a run on already-seen archs.

    python benchmarks/bench_service.py                      # synthetic predictor
    python benchmarks/bench_service.py --predictor-root ~/.leti/predictors --target pixel4-tflite2.1-cpu-a76
    python benchmarks/bench_service.py --memory             # peak RSS under a chunked flood (goal: < 200 MB added)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC_TARGET = "host-litert-cpu-1t"


def train_synthetic(home: Path, family: str, n: int, seed: int) -> None:
    """A real predictor fitted to made-up NB201 latencies (MACs and layer count plus noise)."""
    from leti.predictors import registry
    from leti.space import sample

    pairs = sample("nb201", n, seed=seed)
    graphs = [a.to_graph() for a, _ in pairs]
    rng = np.random.default_rng(seed)
    y = np.array([0.3 + g.total_macs / 2e7 + 0.002 * g.n_nodes for g in graphs]) * rng.lognormal(0, 0.03, n)
    os.environ["LETI_HOME"] = str(home)
    pred = registry.make(family).fit(graphs, y)
    registry.save_trained(pred, SYNTHETIC_TARGET, {"seed": seed, "n_train": n, "metrics": {}})


def default_family() -> str:
    from leti.errors import LetiError
    from leti.predictors import registry

    try:
        registry.family_class("xgboost")
        return "xgboost"
    except LetiError:  # the boosting families need their optional modules
        return "lut"


def start_server(predictor_root: Path, env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "leti.cli", "serve", "--host", "127.0.0.1", "--port", "0",
           "--predictor-root", str(predictor_root), "--max-batch", "10000"]  # fmt: skip
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "serving on " in line:
                return proc, line.split("serving on ", 1)[1].split()[0]
        if proc.poll() is not None:
            raise SystemExit(f"leti serve exited: {log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("leti serve did not start in 120 s")


def wait_healthy(client, timeout: float = 60.0) -> dict:
    from leti.errors import LetiError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.health()
        except LetiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), to tell work from waiting on a busy machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def single_requests(client, target: str, predictor: str | None, archs: list[str]) -> list[float]:
    times = []
    for a in archs:
        t0 = time.perf_counter()
        client.predict(a, target, predictor)
        times.append(time.perf_counter() - t0)
    return times


def batches(client, target: str, predictor: str | None, archs: list[str], size: int) -> list[float]:
    rates = []
    for start in range(0, len(archs) - size + 1, size):
        chunk = archs[start : start + size]
        t0 = time.perf_counter()
        ms = client.predict(chunk, target, predictor)
        rates.append(len(chunk) / (time.perf_counter() - t0))
        assert len(ms) == len(chunk)
    return rates


# ---- memory -----------------------------------------------------------------------------------------------------
def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MB, from /proc (VmHWM is the high-water mark)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def chunked_post(url: str, token: str | None, frames, timeout: float = 600.0) -> tuple[int, int]:
    """POST a chunked body made of ``frames`` on a raw socket, stopping when the server answers; (status, bytes
    sent). httpx would send it too, but it stops at the first refused write without reading the answer."""
    import select
    import socket

    host, port = url.removeprefix("http://").rsplit(":", 1)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    sent = 0
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head)
        for data in frames:
            if select.select([s], [], [], 0)[0]:
                break
            try:
                s.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            except OSError:
                break
            sent += len(data)
        else:
            s.sendall(b"0\r\n\r\n")
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except OSError:
            pass
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0, sent


def batch_body(items: list[dict], target: str, chunk: int = 1 << 16):
    """A predict request as frames of ``chunk`` bytes."""
    data = json.dumps({"target": target, "archs": items}, separators=(",", ":")).encode()
    return [data[i : i + chunk] for i in range(0, len(data), chunk)], len(data)


def dense_arch(stacks: int, cells: int) -> dict:
    """A leti arch of 256-node cells with ~16k edges each: the largest kind of network a request can ask for."""
    n = 256
    adj = [[1 if j == i + 1 or (j > i and (j - i) % 2 == 0) else 0 for j in range(n)] for i in range(n)]
    config = {"stacks": stacks, "cells_per_stack": cells, "channels": 8, "merge": "sum", "downsample": "conv"}
    return {"adjacency": adj, "layers": ["input"] + ["conv"] * (n - 2) + ["output"], "config": config,
            "space": "leti"}  # fmt: skip


def memory(proc, url: str, target: str, args) -> None:
    """Peak RSS of the server after each scenario, in order; each is a worst case the limits must hold."""
    import threading

    from leti.service import Client
    from leti.service.app import ARCH_SIZE, DEFAULT_MAX_BODY, IN_FLIGHT_BODIES
    from leti.space import nb201, sample
    from leti.space.expand import expanded_size

    with Client(url, token="") as c:
        c.predict(sample("nb201", 1, seed=99)[0][1], target)
        health = c.health()
    base, _ = rss_mb(proc.pid)
    print(f"server limits: max_batch {health['max_batch']:,}, max_body {health['max_body']:,} bytes, "
          f"{IN_FLIGHT_BODIES} bodies in flight, {ARCH_SIZE:,} nodes + edges an arch; RSS after one request "
          f"{base:.0f} MB")  # fmt: skip

    def report(what: str, extra: str = "") -> float:
        now, peak = rss_mb(proc.pid)
        print(f"  {what:<58} peak RSS {peak:6.0f} MB (+{peak - base:4.0f})  now {now:6.0f} MB  {extra}")
        return peak - base

    rng = np.random.default_rng(args.seed)
    junk = (b"[" * (1 << 16) for _ in range(int(args.flood_mb * 16)))
    status, sent = chunked_post(url, None, junk)
    report(f"{args.flood_mb:,.0f} MB chunked body", f"-> {status} after {sent / 2**20:.1f} MB sent")
    max_body = health.get("max_body") or DEFAULT_MAX_BODY
    cells = nb201.all_strings()
    items = [{"space": "nb201", "arch": cells[i]} for i in rng.permutation(len(cells))[: health["max_batch"]]]
    frames, size = batch_body(items, target)
    status, _ = chunked_post(url, None, frames)
    report(f"full batch: {len(items):,} NB201 archs ({size / 2**20:.1f} MB)", f"-> {status}")
    leti_archs = [{"arch": a.to_dict()} for a, _ in sample("leti", 4000, seed=args.seed)]
    per = len(json.dumps(leti_archs[0])) + 1
    fill = leti_archs * (max_body // per // len(leti_archs) + 1)
    frames, size = batch_body(fill[: min(health["max_batch"], max_body // per - 2)], target)
    status, _ = chunked_post(url, None, frames)
    report(f"full body: leti Arch JSON ({size / 2**20:.1f} MB)", f"-> {status}")
    stacks, n_cells = 2, 1
    while expanded_size_of(dense_arch(stacks, n_cells + 1), expanded_size) <= ARCH_SIZE and n_cells < 12:
        n_cells += 1
    big = dense_arch(stacks, n_cells)
    frames, size = batch_body([{"arch": big}], target)
    status, _ = chunked_post(url, None, frames)
    report(f"one arch of {expanded_size_of(big, expanded_size):,} nodes + edges", f"-> {status}")
    frames, size = batch_body([{"arch": dense_arch(8, 12)}], target)
    status, _ = chunked_post(url, None, frames)
    report(
        f"one arch of {expanded_size_of(dense_arch(8, 12), expanded_size):,} nodes + edges", f"-> {status}"
    )
    # the flood: concurrent uploads, each a full body of distinct NB201 archs, plus junk bodies over the cap
    results: list = []

    def upload(k: int) -> None:
        if k % 2:
            results.append(chunked_post(url, None, (b"[" * (1 << 16) for _ in range(64 * 16))))
            return
        sub = [
            {"space": "nb201", "arch": cells[i]} for i in rng.permutation(len(cells))[: health["max_batch"]]
        ]
        results.append(chunked_post(url, None, batch_body(sub, target)[0]))

    threads = [threading.Thread(target=upload, args=(k,)) for k in range(args.flood_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted({r[0] for r in results})
    added = report(f"flood: {args.flood_clients} concurrent chunked uploads", f"-> {codes}")
    print(
        f"peak RSS added over all scenarios: {added:.0f} MB (goal < 200 MB: {'met' if added < 200 else 'NOT met'})"
    )


def expanded_size_of(d: dict, expanded_size) -> int:
    from leti.space import Arch

    return expanded_size(Arch.from_dict(d))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predictor-root", help="trained predictors to serve (default: train a synthetic one)")
    ap.add_argument("--target", help=f"target to query (default {SYNTHETIC_TARGET}, or the root's first)")
    ap.add_argument("--predictor", help="family to query (default: the target's best)")
    ap.add_argument("--family", help="family of the synthetic predictor (default xgboost, else lut)")
    ap.add_argument("--train", type=int, default=500, help="archs the synthetic predictor is fitted on")
    ap.add_argument("--requests", type=int, default=2000, help="single-arch requests")
    ap.add_argument("--warmup", type=int, default=100, help="single-arch requests before timing")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--repeat", action="store_true", help="also time archs the server has already seen")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory", action="store_true", help="measure peak server RSS instead of latency")
    ap.add_argument("--flood-mb", type=float, default=800, help="size of the oversized chunked body")
    ap.add_argument("--flood-clients", type=int, default=16, help="concurrent uploads in the flood")
    args = ap.parse_args()

    from leti.service import Client
    from leti.space import nb201

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        if args.predictor_root:
            root = Path(args.predictor_root).expanduser()
        else:
            args.family = args.family or default_family()
            t0 = time.perf_counter()
            train_synthetic(home, args.family, args.train, args.seed)
            root = home / "predictors"
            print(f"trained a synthetic {args.family} predictor on {args.train} NB201 archs "
                  f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        env = {**os.environ, "LETI_HOME": str(home)}
        env.pop("LETI_TOKEN", None)
        proc, url = start_server(root, env, Path(tmp) / "serve.log")
        try:
            with Client(url, token="", timeout=120) as client:
                wait_healthy(client)
                target = args.target or (
                    SYNTHETIC_TARGET if not args.predictor_root else client.targets()[0]["target"]
                )
                if args.memory:
                    memory(proc, url, target, args)
                    return 0
                n_single = args.warmup + args.requests
                n_batch = args.batch_size * args.batches
                need = n_single + n_batch
                pool = nb201.all_strings()
                if need > len(pool):
                    raise SystemExit(f"asks for {need} distinct NB201 cells; the space has {len(pool):,}")
                # distinct cell strings in random order: each request parses and expands a new arch
                texts = [pool[i] for i in np.random.default_rng(args.seed + 1).permutation(len(pool))[:need]]
                single_requests(client, target, args.predictor, texts[: args.warmup])
                cpu0, own0 = cpu_seconds(proc.pid), time.process_time()
                times = single_requests(client, target, args.predictor, texts[args.warmup : n_single])
                cpu1, own1 = cpu_seconds(proc.pid), time.process_time()
                rates = batches(client, target, args.predictor, texts[n_single:], args.batch_size)
                res = client.predict(texts[0], target, args.predictor)
                info = next(p for p in client.predictors() if p["target"] == target and
                            (p["family"] == args.predictor or (args.predictor is None and p["best"])))  # fmt: skip
                print(f"server {url} (separate process), target {target}, predictor {info['family']} "
                      f"(n_train {info['n_train']}); Python {platform.python_version()}, {os.cpu_count()} CPUs")  # fmt: skip
                print(f"single-arch requests: n={len(times)}  p50 {pct(times, 50):.2f} ms  p90 {pct(times, 90):.2f} ms"
                      f"  p99 {pct(times, 99):.2f} ms  max {pct(times, 100):.2f} ms  (goal p99 <= 20 ms: "
                      f"{'met' if pct(times, 99) <= 20 else 'NOT met'})")  # fmt: skip
                if cpu0 is not None and cpu1 is not None:
                    print(f"  CPU per single-arch request: server {(cpu1 - cpu0) / len(times) * 1000:.2f} ms, "
                          f"client {(own1 - own0) / len(times) * 1000:.2f} ms; load average "
                          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
                print(f"{args.batch_size}-arch batches: n={len(rates)}  median {np.median(rates):,.0f} archs/s  "
                      f"min {min(rates):,.0f}  max {max(rates):,.0f} archs/s")  # fmt: skip
                if args.repeat:  # the NAS-loop case: archs seen before hit the server's graph cache
                    seen = texts[args.warmup : args.warmup + min(1000, args.requests)]
                    client.predict(seen, target, args.predictor)  # now they are in the server's cache
                    t_rep = single_requests(client, target, args.predictor, seen)
                    r_rep = batches(client, target, args.predictor, seen, len(seen))
                    print(f"repeated archs: single p50 {pct(t_rep, 50):.2f} ms  p99 {pct(t_rep, 99):.2f} ms; "
                          f"{len(seen)}-arch batch {r_rep[0]:,.0f} archs/s")  # fmt: skip
                assert np.isfinite(res).all()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
