"""`xlang serve`: a model folder behind an OpenAI-compatible chat-completions API (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path

import click

from xlang.cli import resolver_from


def add_serve_command(cli: click.Group) -> None:
    cli.add_command(serve_command)


@click.command("serve")
@click.option("--model", "model_dir", required=True, help="A LLaVA or causal-LM folder that xlang wrote.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="TCP port; 0 picks a free one.")
@click.option("--name", default=None, help="The model id clients send (default: the folder's name).")
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1, mps.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None, help="Weights' dtype.")
@click.option("--valid-utf8", is_flag=True, help="Make valid_utf8 the default for every request.")
@click.option("--faults", default=None, metavar="RATE[:KINDS]", help="Inject faults, for testing clients.")
@click.option("--fault-seed", default=0, show_default=True, type=int, help="Seed of the fault schedule.")
@click.option("--fault-hang", default=30.0, show_default=True, type=float, help="Seconds a timeout fault hangs.")
@click.option("--retry-after", default=1.0, show_default=True, type=float, help="Retry-After of a 429 fault (s).")
@click.option("--access-log", is_flag=True, help="Log every request (uvicorn's access log).")
@click.pass_context
def serve_command(
    ctx: click.Context,
    model_dir: str,
    host: str,
    port: int,
    name: str | None,
    device: str,
    dtype: str | None,
    valid_utf8: bool,
    faults: str | None,
    fault_seed: int,
    fault_hang: float,
    retry_after: float,
    access_log: bool,
) -> None:
    """Serve a model folder as an OpenAI-compatible chat-completions endpoint."""
    from xlang.errors import XlangError
    from xlang.serve.app import ChatServer, create_app
    from xlang.serve.engine import ChatModel
    from xlang.serve.faults import parse_faults
    from xlang.serve.server import base_url, bind, print_ready, run

    resolver = resolver_from(ctx)
    plan = (
        parse_faults(faults, seed=fault_seed, hang_s=fault_hang, retry_after_s=retry_after)
        if faults is not None
        else None
    )
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise XlangError(f"--model {model_dir!r} does not exist; pass a model folder that xlang wrote")
    served_name = name or folder.resolve().name
    sock = bind(host, port)
    try:
        model = ChatModel.load(folder, device=device, dtype=dtype)
        if valid_utf8 and not model.supports_constraints:
            raise XlangError(f"--valid-utf8: the tokenizer of {model_dir!r} is neither byte-level nor SentencePiece")
    except BaseException:
        sock.close()
        raise
    server = ChatServer(
        model,
        name=served_name,
        language_lookup=resolver.language,
        valid_utf8_default=valid_utf8,
        faults=plan,
    )
    url = base_url(sock, host)
    status = run(
        create_app(server),
        sock,
        on_ready=lambda: print_ready(served_name, url),
        on_stop=server.stop,
        access_log=access_log,
    )
    ctx.exit(status)
