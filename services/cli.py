"""The ``onecard`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.kit import topology

app = typer.Typer(no_args_is_help=True, add_completion=False, help="The onecard platform.")
console = Console(stderr=True)

OPENAPI_DIR = Path("openapi")


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Gateway port; service N listens on port+N.")] = (
        topology.DEFAULT_GATEWAY_PORT
    ),
    database_url: Annotated[
        str | None,
        typer.Option(help="A PostgreSQL server URL; each service gets its own database on it."),
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="A Redis URL; without it an embedded Redis is started.")
    ] = None,
    var_dir: Annotated[Path, typer.Option(help="Where SQLite files, logs and keys live.")] = Path(
        "var"
    ),
    only: Annotated[
        list[str] | None, typer.Option(help="Start only these services (repeatable).")
    ] = None,
    demo: Annotated[
        bool, typer.Option(help="Seed a demo province (once) and print what to try.")
    ] = False,
) -> None:
    """Start every service, wait until all are ready, print the URLs; Ctrl-C stops them all."""
    from services.launcher import Launcher, LaunchError, run

    launcher = Launcher(
        port=port, var_dir=var_dir, database_url=database_url, redis_url=redis_url, only=only
    )

    def ready() -> None:
        hints = _seed_demo(launcher, f"http://127.0.0.1:{port}") if demo else []
        table = Table(title="onecard is up", show_lines=False)
        table.add_column("service")
        table.add_column("url")
        table.add_column("log")
        for name, child in launcher.children.items():
            table.add_row(name, child.url, str(launcher.log_path(name)))
        console.print(table)
        gateway = f"http://127.0.0.1:{port}"
        console.print(f"Public entry: [bold]{gateway}[/bold]  (Ctrl-C stops everything)")
        console.print(f"Try:  curl -s {gateway}/healthz")
        for line in hints:
            console.print(line, soft_wrap=True)

    try:
        run(launcher, on_ready=ready, say=console.print)
    except LaunchError as exc:
        console.print(f"[red]could not start onecard:[/red] {exc}")
        raise typer.Exit(1) from None


# Services seed their part of the demo province through this entry-point group: each is an
# ``async def seed(*, base_url, var_dir) -> list[str]`` returning what a newcomer can try,
# run in the order of their names ("1-identity" before "2-health": later ones build on it).
DEMO_GROUP = "onecard.demo"


def _seed_demo(launcher: Any, base_url: str) -> list[str]:
    import asyncio
    import os
    from importlib.metadata import entry_points

    # The seeders read their settings like the services do: from the same environment.
    os.environ.update(launcher.environment())
    hints: list[str] = []
    for plugin in sorted(entry_points(group=DEMO_GROUP), key=lambda e: e.name):
        console.print(f"seeding the demo province: {plugin.name.partition('-')[2]} ...")
        hints += asyncio.run(plugin.load()(base_url=base_url, var_dir=launcher.var_dir))
    return hints


@app.command()
def serve(
    name: Annotated[str, typer.Argument(help="Service name, e.g. identity or gateway.")],
    port: Annotated[int | None, typer.Option(help="Port; default from the topology.")] = None,
    host: str = "127.0.0.1",
    log_level: str = "INFO",
) -> None:
    """Run one service in the foreground."""
    from services.kit.serve import serve as run_service

    spec = topology.by_name(name)
    run_service(
        name,
        host=host,
        port=port or topology.DEFAULT_GATEWAY_PORT + spec.port_offset,
        log_level=log_level,
    )


def openapi_documents() -> dict[str, dict[str, Any]]:
    """Each service's OpenAPI document, generated from its code."""
    from uvicorn.importer import import_from_string

    documents = {}
    for spec in topology.ALL:
        factory = import_from_string(spec.factory)
        documents[spec.name] = factory().openapi()
    return documents


def render_document(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@app.command()
def openapi(
    out: Annotated[Path, typer.Option(help="Folder to write into.")] = OPENAPI_DIR,
    check: Annotated[bool, typer.Option(help="Only report drift; write nothing.")] = False,
) -> None:
    """Write (or check) one OpenAPI document per service into openapi/."""
    drift = []
    for name, document in openapi_documents().items():
        path = out / f"{name}.json"
        text = render_document(document)
        if check:
            if not path.exists() or path.read_text() != text:
                drift.append(str(path))
            continue
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        console.print(f"wrote {path}")
    if drift:
        console.print(f"[red]out of date:[/red] {', '.join(drift)}; run `onecard openapi`")
        raise typer.Exit(1)


def _add_audit() -> None:
    # The audit ledger lives in this package; its command imports its heavy parts lazily.
    from services.audit.cli import app as audit_app

    app.add_typer(audit_app, name="audit")


# Services contribute their own commands (``onecard card ...``, ``onecard hospital ...``)
# through this entry-point group, so the kit's command line imports no service.
PLUGIN_GROUP = "onecard.cli"


def _add_plugins() -> None:
    from importlib.metadata import entry_points

    for plugin in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        app.add_typer(plugin.load(), name=plugin.name)


def main() -> None:
    _add_audit()
    _add_plugins()
    app()


if __name__ == "__main__":
    main()
