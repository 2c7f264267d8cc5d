"""Load: 8 agents stream 10,000 records each into one SQLite server at once while queries run.
Bounded: every process has a deadline and the query loop stops when the agents do."""

import subprocess
import sys
import textwrap
import threading
import time

from compare_server.client import Client
from conftest import ROOT

AGENTS, RECORDS = 8, 10_000

AGENT = textwrap.dedent("""
    import sys
    import numpy as np
    from capture_agent.prompts import Prompt, PromptSet
    from capture_agent.uploader import Uploader
    from compare_server.client import Client
    from proto.codec import encode
    from proto.digests import record_sha256, run_digest

    address, agent, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    prompts = PromptSet(f"load-{agent}", tuple(Prompt(f"p{i}", f"prompt {i} of agent {agent}") for i in range(n)))
    rng = np.random.default_rng(agent)
    blobs = [encode({"embedding": rng.normal(size=64).astype(np.float32)}) for _ in range(n)]
    with Client(address) as client:
        run_id = client.open_run({"mode": "embed", "model_name": f"load-{agent}"}, {}, prompts).run_id
        Uploader(client, run_id).upload(enumerate(blobs))
        status, reason = client.close_run(run_id, n, run_digest(map(record_sha256, blobs)))
    print(run_id, status, reason)
""")


def test_eight_agents_at_once_while_queries_run(server):
    agents = [subprocess.Popen([sys.executable, "-c", AGENT, server.address, str(i), str(RECORDS)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(AGENTS)]
    failures, queries = [], [0]
    done = threading.Event()

    def query_loop():
        with Client(server.address) as client:
            while not done.is_set():
                try:
                    for run in client.list_runs():
                        client.get_run(run["id"])
                    queries[0] += 1
                except Exception as e:  # noqa: BLE001  every failure is the test's business
                    failures.append(repr(e))
                time.sleep(0.05)

    thread = threading.Thread(target=query_loop)
    thread.start()
    started = time.monotonic()
    try:
        results = [a.communicate(timeout=600) for a in agents]
    finally:
        done.set()
        thread.join(timeout=60)
        for a in agents:
            a.kill()
    elapsed = time.monotonic() - started
    for agent, (out, err) in zip(agents, results):
        assert agent.returncode == 0, err[-2000:]
        assert out.split()[1] == "complete", out
    runs = server.store.list_runs()
    assert len(runs) == AGENTS and all(r.status == "complete" and r.record_count == RECORDS for r in runs)
    assert failures == [] and queries[0] > 0
    print(f"{AGENTS} x {RECORDS} records in {elapsed:.1f} s, {queries[0]} query rounds")
