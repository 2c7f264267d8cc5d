"""Offline bundles: a host that cannot reach the server writes one file; `cmp push` stores it
once, resumes a cut-off push, and refuses a truncated or altered bundle while storing nothing."""

import json
import zipfile

import pytest

from capture_agent.bundle import read_bundle
from compare_server.client import Client
from conftest import capture_run, diff_json, run_cmp

MINILM = ("--model-name", "all-MiniLM-L6-v2", "--mode", "embed", "--prompts", "nomic-11")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, minilm_path):
    path = tmp_path_factory.mktemp("bundles") / "npu-run.cmpbundle"
    # No server is listening on port 1: a bundle capture never contacts one.
    out = capture_run("127.0.0.1:1", "--model", minilm_path, *MINILM, "--label", "offline", "--out", str(path))
    assert out == str(path)
    return path


def test_a_bundle_holds_the_whole_run_and_nothing_is_left_half_written(bundle):
    b = read_bundle(bundle)
    assert len(b.records) == 11 and b.prompt_set.name == "nomic-11"
    assert b.fingerprint["label"] == "offline" and b.fingerprint["mode"] == "embed" and b.options["pooling"] == "mean"
    assert not bundle.with_name(bundle.name + ".partial").exists()


def test_pushing_a_bundle_twice_gives_one_run(server, bundle, minilm_path):
    first = run_cmp("push", "--server", server.address, str(bundle)).stdout.strip().splitlines()[-1]
    again = run_cmp("push", "--server", server.address, str(bundle))
    assert again.stdout.strip().splitlines()[-1] == first and "pushed before" in again.stderr
    assert [r.id for r in server.store.list_runs()] == [first]
    assert server.store.get_run(first).status == "complete"
    streamed = capture_run(server.address, "--model", minilm_path, *MINILM)
    report = diff_json(server.address, streamed, first)
    assert report["summary"]["cos_min"] == pytest.approx(1.0, abs=1e-7)  # same model, same host, same numbers


def test_a_push_that_was_cut_off_resumes_with_the_missing_records(server, bundle):
    b = read_bundle(bundle)
    with Client(server.address) as client:
        opened = client.open_run(b.fingerprint, b.options, b.prompt_set, client_key=b.bundle_id)
        client.upload(opened.run_id, b.records[:4])  # then the connection "dropped"
    pushed = run_cmp("push", "--server", server.address, str(bundle)).stdout.strip().splitlines()[-1]
    assert pushed == opened.run_id
    run = server.store.get_run(pushed)
    assert run.status == "complete" and run.record_count == 11


def test_a_truncated_bundle_is_refused_and_stores_nothing(server, bundle, tmp_path):
    cut = tmp_path / "cut.cmpbundle"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    proc = run_cmp("push", "--server", server.address, str(cut), check=False)
    assert proc.returncode == 2 and "damaged or truncated bundle" in proc.stderr
    assert server.store.list_runs() == []


def _rewrite(src, dst, change):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, change(item.filename, zin.read(item.filename)))


def test_an_altered_record_is_refused_and_stores_nothing(server, bundle, tmp_path):
    altered = tmp_path / "altered.cmpbundle"
    _rewrite(bundle, altered, lambda name, data: data[:-4] + b"\0\0\0\0" if name.endswith("000003.safetensors") else data)
    proc = run_cmp("push", "--server", server.address, str(altered), check=False)
    assert proc.returncode == 2 and "the bundle was altered" in proc.stderr
    assert server.store.list_runs() == []


def test_a_bundle_without_its_run_json_is_refused(server, bundle, tmp_path):
    headless = tmp_path / "headless.cmpbundle"
    with zipfile.ZipFile(bundle) as zin, zipfile.ZipFile(headless, "w") as zout:
        for item in zin.infolist():
            if item.filename != "run.json":
                zout.writestr(item.filename, zin.read(item.filename))
    proc = run_cmp("push", "--server", server.address, str(headless), check=False)
    assert proc.returncode == 2 and "run.json" in proc.stderr and server.store.list_runs() == []


def test_a_bundle_with_edited_prompts_is_refused(server, bundle, tmp_path):
    def edit(name, data):
        if name != "run.json":
            return data
        header = json.loads(data)
        header["prompt_set"]["prompts"][0]["text"] = "something else"
        return json.dumps(header).encode()
    edited = tmp_path / "edited.cmpbundle"
    _rewrite(bundle, edited, edit)
    proc = run_cmp("push", "--server", server.address, str(edited), check=False)
    assert proc.returncode == 2 and "does not match its digest" in proc.stderr
