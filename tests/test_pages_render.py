"""The HTML pages render in a real headless Chromium with no console errors, and a screenshot of
each is kept (CMP_SCREENSHOTS=DIR keeps them there to look at)."""

import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

from compare_server.client import Client
from conftest import capture_run, embed_run, run_cmp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed: `make test` installs it")


def render(page: pathlib.Path, shot: pathlib.Path, tmp: pathlib.Path) -> list[str]:
    """Loads the page in headless Chromium, writes a screenshot, returns the console messages."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
         "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    keep = os.environ.get("CMP_SCREENSHOTS")
    if keep:
        pathlib.Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, pathlib.Path(keep) / shot.name)
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def test_the_console_check_sees_a_broken_page(tmp_path):
    """The check below could fail: a page with a script error shows up in the console."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body>" + "<p>text</p>" * 400 + "<script>missing()</script></body></html>")
    console = render(page, tmp_path / "broken.png", tmp_path)
    assert any("Uncaught ReferenceError" in line for line in console)


def test_a_logprob_report_page_renders_cleanly(server, tiny_llama, tmp_path):
    args = ("--model", tiny_llama, "--mode", "logprobs", "--prompts", "qwen-11", "--top-k", "8", "--max-new-tokens", "6")
    a = capture_run(server.address, *args)
    b = capture_run(server.address, *args, "--dtype", "bfloat16", "--score-against", a)
    page = tmp_path / "report-logprobs.html"
    run_cmp("report", "--server", server.address, a, b, "-o", str(page))
    assert render(page, tmp_path / "report-logprobs.png", tmp_path) == []
    assert "KL at every compared position" in page.read_text()


def test_an_embedding_report_and_a_history_page_render_cleanly(server, tmp_path):
    rng = np.random.default_rng(9)
    base = rng.normal(size=(12, 64))
    prompts = [f"sentence {i}" for i in range(12)]
    with Client(server.address) as client:
        cpu = embed_run(client, base, prompts, model_name="bge", label="cpu")
        runs = [embed_run(client, base + rng.normal(scale=s, size=base.shape), prompts, model_name="bge",
                          device="npu:0", dtype="bfloat16", cann=c, vllm_ascend=v)
                for s, c, v in [(0.002, "8.0.RC1", "0.9.2"), (0.03, "8.3.RC1", "0.11.0"), (0.002, "8.5.1", "0.18.0")]]
    report = tmp_path / "report-embed.html"
    run_cmp("report", "--server", server.address, cpu, runs[1], "-o", str(report))
    assert render(report, tmp_path / "report-embed.png", tmp_path) == []
    history = tmp_path / "history.html"
    run_cmp("history", "--server", server.address, "--model", "bge", "--format", "html", "-o", str(history))
    assert render(history, tmp_path / "history.png", tmp_path) == []
