"""The `cmp` command as a user meets it: documented commands, output formats, exit codes, errors."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from capture_agent.prompts import load_prompt_set
from cli.main import cli
from conftest import ROOT, embed_run, run_cmp


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


@pytest.mark.parametrize("path, command", list(_commands(cli)), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_command_has_help_with_an_example(path, command):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert command.help and "Example:" in command.help, f"cmp {' '.join(path)} has no example in its help"


def test_prompts_lists_the_built_in_sets_with_their_digests():
    out = json.loads(CliRunner().invoke(cli, ["prompts", "--json"]).output)
    assert {s["name"]: s["digest"] for s in out}["rag-25"] == load_prompt_set("rag-25").digest
    shown = CliRunner().invoke(cli, ["prompts", "nomic-11"]).output
    assert "The weather is nice today" in shown and "11 prompts" in shown


@pytest.fixture
def runs(client):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 16))
    prompts = ["one", "two", "three", "四"]
    return {
        "a": embed_run(client, base, prompts, label="baseline"),
        "close": embed_run(client, base + rng.normal(scale=1e-3, size=base.shape), prompts),
        "far": embed_run(client, base + rng.normal(scale=1.0, size=base.shape), prompts),
        "other_prompts": embed_run(client, base[:3], prompts[:3]),
    }


def _invoke(server, *args):
    return CliRunner().invoke(cli, [args[0], "--server", server.address, *args[1:]])


def test_diff_table_shows_each_prompt_the_summary_gates_and_verdict(server, runs):
    result = _invoke(server, "diff", runs["a"], runs["close"])
    assert result.exit_code == 0
    out = result.output
    for text in ("A (baseline):", "cos", "max_abs", "Summary", "cos_min", "error_rate", "Gates", "Verdict: PASS", "四"):
        assert text in out


def test_diff_json_has_the_documented_keys(server, runs):
    report = json.loads(_invoke(server, "diff", "--format", "json", runs["a"], runs["close"]).output)
    assert {"kind", "run_a", "run_b", "per_prompt", "summary", "verdict", "gates"} <= set(report)
    assert {"index", "id", "cos", "mse", "max_abs"} <= set(report["per_prompt"][0])
    assert report["run_a"]["id"] == runs["a"] and report["verdict"] == "PASS"


def test_diff_markdown_is_a_pipe_table(server, runs):
    out = _invoke(server, "diff", "--format", "markdown", runs["a"], runs["close"]).output
    assert "| # | prompt | cos | mse | max_abs |" in out and "**Verdict: PASS**" in out


def test_gate_exits_1_on_fail_and_thresholds_can_tighten_a_pass_into_a_fail(server, runs):
    assert _invoke(server, "diff", "--gate", runs["a"], runs["far"]).exit_code == 1
    assert _invoke(server, "diff", "--gate", runs["a"], runs["close"]).exit_code == 0
    tightened = _invoke(server, "diff", "--gate", "--threshold", "cos_min=0.9999999999", runs["a"], runs["close"])
    assert tightened.exit_code == 1 and "0.9999999999" in tightened.output
    assert _invoke(server, "diff", runs["a"], runs["far"]).exit_code == 0  # FAIL without --gate is not an error


@pytest.mark.parametrize("args, message", [
    (["--threshold", "cos_min"], "expected NAME=NUMBER"),
    (["--threshold", "cos_min=high"], "expected NAME=NUMBER"),
    (["--threshold", "kl=0.1"], "cannot gate 'kl' on a embed diff"),
])
def test_bad_thresholds_exit_2_with_the_reason(server, runs, args, message):
    result = _invoke(server, "diff", *args, runs["a"], runs["close"])
    assert result.exit_code == 2 and message in result.output


def test_diffing_runs_with_different_prompt_sets_exits_2_naming_both(server, runs):
    result = _invoke(server, "diff", runs["a"], runs["other_prompts"])
    assert result.exit_code == 2
    assert runs["a"] in result.output and runs["other_prompts"] in result.output
    assert "different prompt sets" in result.output


def test_an_unknown_run_exits_2(server, runs):
    result = _invoke(server, "diff", runs["a"], "ffffffffffff")
    assert result.exit_code == 2 and "no run 'ffffffffffff'" in result.output


def test_runs_and_show_print_tables_and_json(server, runs):
    table = _invoke(server, "runs").output
    assert runs["a"] in table and "baseline" in table and "complete" in table
    listed = json.loads(_invoke(server, "runs", "--json").output)
    assert len(listed) == 4 and listed[-1]["id"] == runs["a"]  # newest first
    shown = _invoke(server, "show", runs["a"][:8]).output
    assert f"run {runs['a']}  complete" in shown and "model_name" in shown


def test_a_server_that_is_not_there_is_a_one_line_error():
    result = CliRunner().invoke(cli, ["runs", "--server", "127.0.0.1:1"])
    assert result.exit_code == 1 and "cannot reach the compare server at 127.0.0.1:1" in result.output


def test_diff_and_runs_never_import_torch_transformers_or_sqlalchemy(server, runs):
    script = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from cli.main import cli
        for args in (["diff", "--server", "{server.address}", "{runs['a']}", "{runs['close']}"],
                     ["runs", "--server", "{server.address}"], ["show", "--server", "{server.address}", "{runs['a']}"]):
            assert CliRunner().invoke(cli, args).exit_code == 0, args
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "transformers", "sqlalchemy", "alembic"}})
        print(",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


def test_capture_with_an_unknown_prompt_set_fails_before_loading_a_model(server):
    result = run_cmp("capture", "--server", server.address, "--model", "/nonexistent", "--mode", "embed",
                     "--prompts", "no-such-set", check=False)
    assert result.returncode == 1 and "no prompt set 'no-such-set'" in result.stderr
    assert server.store.list_runs() == []
