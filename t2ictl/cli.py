"""The `t2ictl` command line. Each command lives in t2ictl/commands/ and stays thin: parse, call the library, print.

Errors a user can cause print one line `error: ...` on stderr and exit with code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import os
import sys

import click
import typer

try:  # Typer >= 0.26 vendors its own copy of click, with Abort in typer.exceptions
    from typer import exceptions as _typer_exceptions
    from typer._click import exceptions as _typer_click
except ImportError:  # pragma: no cover
    _typer_exceptions = _typer_click = click.exceptions

from t2ictl.commands.bench import bench
from t2ictl.commands.prepare import prepare
from t2ictl.commands.export import export
from t2ictl.commands.pretrain import pretrain
from t2ictl.commands.recipes import recipes_app
from t2ictl.commands.sample import sample
from t2ictl.commands.score import score
from t2ictl.commands.train import train
from t2ictl.errors import UserError

_CLICK_ERRORS = (click.ClickException, _typer_click.ClickException)
_ABORTS = (click.exceptions.Abort, _typer_exceptions.Abort)

app = typer.Typer(
    name="t2ictl",
    help="Train text-to-image GANs with label-guided supervised contrastive learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [default: ...] literally
)
app.command("prepare")(prepare)
app.command("pretrain")(pretrain)
app.command("train")(train)
app.command("sample")(sample)
app.command("export")(export)
app.command("score")(score)
app.command("bench")(bench)
app.add_typer(recipes_app, name="recipes")

_DEBUG = {"on": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error.")) -> None:
    """t2ictl: prepare data, pretrain encoders, train GANs, sample, export and score."""
    _DEBUG["on"] = debug


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = sys.argv[1:] if argv is None else argv
    _DEBUG["on"] = "--debug" in args
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="t2ictl", standalone_mode=False)
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except _ABORTS:
        _fail("interrupted; run the same command again to resume", 130)
    except _CLICK_ERRORS as exc:
        _fail(exc.format_message(), 2)
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to resume", 130)
    except Exception as exc:  # an internal fault: still one line unless --debug
        if _DEBUG["on"]:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    if _DEBUG["on"] and sys.exc_info()[0] is not None:
        import traceback

        traceback.print_exc()
    one_line = " ".join(line.strip() for line in message.splitlines() if line.strip()) or "failed"
    print(f"error: {one_line}", file=sys.stderr)
    sys.exit(code)
