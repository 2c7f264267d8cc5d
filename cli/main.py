"""The `cmp` command. Each command parses, calls one library function, prints.

Heavy imports (torch, transformers, SQLAlchemy) happen inside the commands that need them, so
`cmp diff` and `cmp runs` start fast.
"""

from __future__ import annotations

import functools
import json
import sys

import click

DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_DB = "sqlite:///./cmp-data/cmp.db"

# Server answers that mean "this request cannot work as given" exit with 2, like usage errors.
USAGE_CODES = {"NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "ALREADY_EXISTS"}


class CmpUsageError(click.ClickException):
    exit_code = 2


def server_option(f):
    """--server, --token-file and --tls-ca, shared by every command that talks to a compare server;
    the command receives them as one compare_server.client.Connection named `server`."""
    @click.option("--server", envvar="CMP_SERVER", default=DEFAULT_SERVER, show_default=True,
                  help="Compare server HOST:PORT (or $CMP_SERVER).")
    @click.option("--token-file", default="", type=click.Path(dir_okay=False),
                  help="File holding the server's bearer token (or $CMP_TOKEN).")
    @click.option("--tls-ca", default="", type=click.Path(dir_okay=False),
                  help="CA certificate (PEM) to verify a TLS server (or $CMP_TLS_CA).")
    @functools.wraps(f)
    def wrapper(*args, server, token_file, tls_ca, **kwargs):
        from compare_server.client import Connection

        try:
            connection = Connection.from_options(server, token_file, tls_ca)
        except OSError as e:
            raise CmpUsageError(f"cannot read {e.filename}: {e.strerror}") from None
        return f(*args, server=connection, **kwargs)
    return wrapper


def client_errors(f):
    """Turns server and library errors into one-line messages and exit codes."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        from compare_server.client import ServerError

        try:
            return f(*args, **kwargs)
        except ServerError as e:
            if e.code.name in USAGE_CODES:
                raise CmpUsageError(str(e)) from None
            raise click.ClickException(str(e)) from None
    return wrapper


@click.group()
@click.version_option(package_name="cmp")
def cli():
    """cmp: do two devices give the same answers? Capture runs on CPU, NPU and GPU hosts; diff them.

    \b
      cmp serve                                   # the compare server
      cmp capture --model M --device npu:0 ...    # on each device host
      cmp diff RUN_A RUN_B                        # metrics, gates, verdict
    """


@cli.command()
@click.option("--db", default=DEFAULT_DB, show_default=True, help="SQLAlchemy URL of the store.")
@click.option("--listen", default=DEFAULT_SERVER, show_default=True, help="HOST:PORT to serve on (port 0: any free port).")
@click.option("--token-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Require this bearer token (the file's content) on every rpc.")
@click.option("--tls-cert", default=None, type=click.Path(exists=True, dir_okay=False), help="TLS certificate chain (PEM).")
@click.option("--tls-key", default=None, type=click.Path(exists=True, dir_okay=False), help="TLS private key (PEM).")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback address with neither a token nor TLS.")
@click.option("--max-message-mb", default=64, show_default=True, help="Largest upload message accepted.")
@click.option("--max-run-mb", default=16 * 1024, show_default=True, help="Largest run (all its records) accepted.")
@click.option("--open-run-timeout", default=6 * 3600.0, show_default=True,
              help="Seconds without an upload after which an open run is marked failed.")
def serve(db, listen, token_file, tls_cert, tls_key, insecure, max_message_mb, max_run_mb, open_run_timeout):
    """Run the compare server. SIGTERM or Ctrl-C stops it gracefully.

    Example: cmp serve --db sqlite:///./cmp-data/cmp.db --listen 0.0.0.0:50051 --token-file token --tls-cert c.pem --tls-key k.pem
    """
    import logging
    import pathlib
    import signal
    import threading

    from compare_server.allocator import keep_freed_memory
    from compare_server.errors import CmpError
    from compare_server.server import ListenError, ServerConfig, start_server

    if bool(tls_cert) != bool(tls_key):
        raise CmpUsageError("TLS needs both --tls-cert and --tls-key")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    keep_freed_memory()
    config = ServerConfig(
        db_url=db, listen=listen, insecure=insecure, max_message_mb=max_message_mb, max_run_mb=max_run_mb,
        open_run_timeout_s=open_run_timeout,
        token=pathlib.Path(token_file).read_text().strip() if token_file else "",
        tls_cert=pathlib.Path(tls_cert).read_bytes() if tls_cert else b"",
        tls_key=pathlib.Path(tls_key).read_bytes() if tls_key else b"",
    )
    if token_file and not config.token:
        raise CmpUsageError(f"--token-file {token_file} is empty")
    try:
        server = start_server(config)
    except (CmpError, ListenError) as e:
        raise click.ClickException(str(e)) from None
    security = ", ".join(x for x in ("token" if config.token else "", "TLS" if config.tls_cert else "") if x) or "no auth"
    click.echo(f"cmp serve: listening on {server.address}, database {db}, {security}")
    sys.stdout.flush()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown(grace=30)


@cli.command()
@server_option
@click.option("--model", "model_path", required=True,
              help="Model folder or .gguf file (openai: the served model's name or path).")
@click.option("--model-name", default=None, help="Name to record (default: from the model path).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda[:N] or npu[:N].")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True)
@click.option("--mode", type=click.Choice(["embed", "logprobs"]), required=True)
@click.option("--prompts", required=True, help="Built-in prompt set (`cmp prompts`) or a JSONL file.")
@click.option("--backend", type=click.Choice(["hf", "vllm", "openai"]), default="hf", show_default=True,
              help="How to run the model: transformers, vllm.LLM, or an OpenAI-compatible server.")
@click.option("--engine-arg", "engine_args", multiple=True, metavar="KEY=VALUE",
              help="vllm: passed to vllm.LLM, e.g. --engine-arg max_model_len=4096 --engine-arg enforce_eager=true.")
@click.option("--endpoint", default="", help="openai: the server's URL, e.g. http://127.0.0.1:8000.")
@click.option("--tokenizer", default="", help="openai: the served model's tokenizer folder, to map tokens to ids.")
@click.option("--top-k", default=20, show_default=True, help="logprobs: candidates kept per position.")
@click.option("--max-new-tokens", default=32, show_default=True, help="logprobs: greedy steps per prompt.")
@click.option("--full-vocab-first", is_flag=True, help="logprobs: also send the whole first-position distribution.")
@click.option("--pooling", type=click.Choice(["mean", "cls", "last"]), default=None,
              help="embed: override the pooling read from the model's sentence-transformers files.")
@click.option("--normalize/--no-normalize", default=None, help="embed: override L2 normalisation.")
@click.option("--batch-size", default=32, show_default=True, help="embed: prompts per forward pass.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model folder's own Python code.")
@click.option("--label", default="", help="Free text stored with the run, e.g. 'CANN 8.5.1 nightly'.")
@click.option("--score-against", default="", metavar="RUN",
              help="logprobs: score the tokens of this baseline run (id, or a bundle file) instead of decoding.")
@click.option("--out", default="", metavar="FILE", help="Write an offline bundle instead of streaming (`cmp push` it later).")
@click.option("--resume", default="", metavar="RUN",
              help="Continue this open run (its agent was killed): same options; only missing records are sent.")
@click.option("--perf", default="", metavar="SIZES",
              help="Also time the model at these batch sizes after warm-up, e.g. --perf 1,4,16.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@client_errors
def capture(server, model_path, model_name, device, dtype, mode, prompts, backend, engine_args, endpoint, tokenizer,
            top_k, max_new_tokens,
            full_vocab_first, pooling, normalize, batch_size, trust_remote_code, label, score_against, out, resume,
            perf, quiet):
    """Run a prompt set through a model on this host's device and upload the run.

    Prints the new run id (with --out, the bundle's path) as the last line of stdout.

    Example: cmp capture --model ./all-MiniLM-L6-v2 --device npu:0 --dtype bfloat16 --mode embed --prompts multilingual-24
    """
    from capture_agent.agent import CaptureRequest, run_capture
    from capture_agent.backends import BackendError
    from capture_agent.bundle import BundleError
    from capture_agent.capture import CaptureError
    from capture_agent.perf import PerfError
    from capture_agent.prompts import PromptSetError

    request = CaptureRequest(
        server=server, model_path=model_path, model_name=model_name, device=device, dtype=dtype, mode=mode,
        prompts=prompts, backend=backend, engine_args=engine_args, endpoint=endpoint, tokenizer=tokenizer,
        top_k=top_k, max_new_tokens=max_new_tokens,
        full_vocab_first=full_vocab_first, pooling=pooling, normalize=normalize, batch_size=batch_size,
        trust_remote_code=trust_remote_code, label=label, score_against=score_against, out=out, resume=resume, perf=perf,
        progress=not quiet,
    )
    try:
        run_id = run_capture(request)
    except (BackendError, BundleError, PromptSetError, CaptureError, PerfError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(run_id)


@cli.command()
@server_option
@click.argument("bundle", type=click.Path(dir_okay=False))
@client_errors
def push(server, bundle):
    """Upload an offline bundle made by `cmp capture --out`. Pushing it again changes nothing.

    Prints the run id as the last line of stdout.

    Example: cmp push npu-run.cmpbundle --server compare-host:50051
    """
    from capture_agent.bundle import BundleError
    from capture_agent.capture import CaptureError
    from capture_agent.push import push_bundle
    from compare_server.client import Client

    try:
        with Client(server) as client:
            run_id, already = push_bundle(client, bundle)
    except (BundleError, CaptureError) as e:
        raise CmpUsageError(str(e)) from None
    if already:
        click.echo(f"{bundle} was pushed before: it is run {run_id}", err=True)
    click.echo(run_id)


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def prompts(name, as_json):
    """List the built-in prompt sets with their digests, or print one set's prompts.

    Example: cmp prompts; cmp prompts rag-25
    """
    from capture_agent.prompts import BUILTIN_DESCRIPTIONS, PromptSetError, builtin_names, load_prompt_set
    from compare_server.report import text_table

    try:
        sets = [load_prompt_set(name)] if name else [load_prompt_set(n) for n in builtin_names()]
    except PromptSetError as e:
        raise CmpUsageError(str(e)) from None
    if as_json:
        click.echo(json.dumps([{"name": s.name, "digest": s.digest, "count": len(s.prompts),
                                **({"prompts": [p.__dict__ for p in s.prompts]} if name else {})} for s in sets],
                              indent=2, ensure_ascii=False))
    elif name:
        s = sets[0]
        click.echo(f"{s.name}: {len(s.prompts)} prompts, digest {s.digest}")
        click.echo(text_table(["id", "text"], [[p.id, p.text if len(p.text) < 100 else p.text[:99] + "…"] for p in s.prompts]))
    else:
        click.echo(text_table(["name", "prompts", "digest", "what"],
                              [[s.name, str(len(s.prompts)), s.digest[:12], BUILTIN_DESCRIPTIONS.get(s.name, "")] for s in sets]))


def run_filter_options(f):
    """Options that select runs, shared by `cmp runs` and `cmp history`."""
    options = [
        click.option("--device", default="", help="Device kind (npu), device (npu:1) or part of its name (910B3)."),
        click.option("--dtype", default="", help="float32, bfloat16, float16."),
        click.option("--backend", default="", help="hf, vllm, openai."),
        click.option("--mode", default="", help="embed, greedy, forced."),
        click.option("--label", default="", help="Part of the label."),
        click.option("--since", default="", help="Created at or after this ISO date/time."),
        click.option("--until", default="", help="Created before this ISO date/time."),
        click.option("--where", "where", multiple=True, metavar="COND",
                     help="Fingerprint condition, version-aware: --where 'cann>=8.5' --where 'vllm_ascend==0.18.0'."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@cli.command()
@server_option
@click.option("--model", default="", help="Model name, exactly.")
@run_filter_options
@click.option("--status", default="", type=click.Choice(["", "open", "complete", "failed"]), help="Run status.")
@click.option("--limit", default=0, help="At most this many runs (newest first); 0 for all.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_errors
def runs(server, model, device, dtype, backend, mode, label, since, until, where, status, limit, as_json):
    """List stored runs, newest first, filtered by model, device, versions, ...

    Example: cmp runs --model Pleias-RAG-350M --device npu --where 'cann>=8.5' --where 'vllm_ascend==0.18.0'
    """
    from compare_server.client import Client
    from compare_server.report import render_runs

    with Client(server) as client:
        found = client.list_runs(limit, model=model, device=device, dtype=dtype, backend=backend, mode=mode,
                                 label=label, status=status, since=since, until=until, where=list(where))
    click.echo(json.dumps(found, indent=2, ensure_ascii=False) if as_json else render_runs(found))


@cli.command()
@server_option
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_errors
def show(server, run_id, as_json):
    """Show one run with its fingerprint (RUN_ID may be a unique prefix).

    Example: cmp show 3f9c0a
    """
    from compare_server.client import Client
    from compare_server.report import render_run

    with Client(server) as client:
        run = client.get_run(run_id)
    click.echo(json.dumps(run, indent=2, ensure_ascii=False) if as_json else render_run(run))


def _thresholds(values: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for item in values:
        name, sep, number = item.partition("=")
        try:
            out[name.strip()] = float(number)
        except ValueError:
            raise CmpUsageError(f"--threshold {item!r}: expected NAME=NUMBER, e.g. cos_min=0.999") from None
        if not sep:
            raise CmpUsageError(f"--threshold {item!r}: expected NAME=NUMBER, e.g. cos_min=0.999")
    return out


@cli.command()
@server_option
@click.argument("run_a")
@click.argument("run_b")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table", show_default=True)
@click.option("--threshold", "thresholds", multiple=True, metavar="NAME=VALUE",
              help="Override or add a gate, e.g. --threshold cos_min=0.999 --threshold kl=0.005.")
@click.option("--gate", is_flag=True, help="Exit 1 when the verdict is FAIL.")
@client_errors
def diff(server, run_a, run_b, fmt, thresholds, gate):
    """Compare RUN_B against the baseline RUN_A: per-prompt metrics, summary, gates, verdict.

    Example: cmp diff 3f9c0a a71b22 --gate --threshold cos_min=0.999
    """
    from compare_server.client import Client
    from compare_server.report import render_diff

    with Client(server) as client:
        report = client.diff(run_a, run_b, _thresholds(thresholds))
    click.echo(render_diff(report, fmt))
    if gate and report["verdict"] != "PASS":
        sys.exit(1)


@cli.command()
@server_option
@click.option("--model", required=True, help="Model name, exactly.")
@click.option("--device", default="", help="Only runs on this device kind or device (npu, npu:0).")
@click.option("--baseline", default="cpu:float32", show_default=True,
              help="DEVICE:DTYPE (the newest such run of the same model and prompts) or a run id.")
@click.option("--regression-tolerance", default=0.001, show_default=True,
              help="Flag a row whose headline metric is worse than the previous row's by more than this.")
@click.option("--where", "where", multiple=True, metavar="COND", help="Version condition, e.g. 'cann>=8.3'.")
@click.option("--threshold", "thresholds", multiple=True, metavar="NAME=VALUE", help="Gate override for each row.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown", "html"]), default="table", show_default=True)
@click.option("-o", "--output", default="", help="Write to this file instead of stdout (html: the page).")
@client_errors
def history(server, model, device, baseline, regression_tolerance, where, thresholds, fmt, output):
    """How a model's accuracy and speed moved across CANN, vLLM-Ascend, vLLM and torch_npu versions.

    Example: cmp history --model Pleias-RAG-350M --device npu --baseline cpu:float32 --format html -o history.html
    """
    from compare_server.client import Client
    from compare_server.report import render_history

    with Client(server) as client:
        table = client.history(model, device, baseline, regression_tolerance, list(where), _thresholds(thresholds))
    _emit(render_history(table, fmt), output)


@cli.command()
@server_option
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--metric", default="", help="Summary metric to show (default: cos_min or prob_cos).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table", show_default=True)
@client_errors
def matrix(server, run_ids, metric, fmt):
    """A headline metric for every pair of runs: CPU, GPU and NPU side by side.

    Example: cmp matrix 3f9c0a a71b22 c0ffee --metric prob_cos
    """
    from compare_server.client import Client
    from compare_server.report import render_matrix

    with Client(server) as client:
        click.echo(render_matrix(client.matrix(list(run_ids), metric), fmt))


@cli.command()
@server_option
@click.argument("run_a")
@click.argument("run_b")
@click.option("-o", "--output", required=True, help="The HTML file to write.")
@click.option("--threshold", "thresholds", multiple=True, metavar="NAME=VALUE", help="Gate override.")
@client_errors
def report(server, run_a, run_b, output, thresholds):
    """Write one self-contained HTML page comparing two runs: tables, charts, fingerprints.

    Example: cmp report 3f9c0a a71b22 -o npu-vs-cpu.html
    """
    from compare_server.client import Client
    from compare_server.html import report_page

    with Client(server) as client:
        diff_report = client.diff(run_a, run_b, _thresholds(thresholds), detail=True)
        page = report_page(diff_report, client.get_run(diff_report["run_a"]["id"]), client.get_run(diff_report["run_b"]["id"]))
    _emit(page, output)


def _emit(text: str, output: str) -> None:
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text)


@cli.group()
def db():
    """Manage the store's database."""


@db.command()
@click.option("--db", "url", default=DEFAULT_DB, show_default=True, help="SQLAlchemy URL of the store.")
def upgrade(url):
    """Upgrade the database schema to this cmp's version (back it up first).

    Example: cmp db upgrade --db sqlite:///./cmp-data/cmp.db
    """
    from compare_server.store.store import upgrade_database

    click.echo(f"database {url} is at revision {upgrade_database(url)}")
