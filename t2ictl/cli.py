"""The `t2ictl` command line. Each command lives in t2ictl/commands/ and stays thin: parse, call the library, print.

Errors a user can cause print one line `error: ...` on stderr and exit with code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import sys

import typer

from t2ictl import __version__, startup
from t2ictl.commands.bench import bench
from t2ictl.commands.evaluator import evaluator
from t2ictl.commands.experiment import experiment
from t2ictl.commands.export import export
from t2ictl.commands.imports import import_app
from t2ictl.commands.prepare import prepare
from t2ictl.commands.pretrain import pretrain
from t2ictl.commands.recipes import recipes_app
from t2ictl.commands.sample import sample
from t2ictl.commands.score import score
from t2ictl.commands.train import train
from t2ictl.errors import UserError

# Typer before 0.26 runs on click and from 0.26 on a copy of it inside typer; both expose these two through typer's
# own names, so the CLI never imports click itself.
_CLICK_ERROR = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException")
_ABORT = typer.Abort

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
app.command("experiment")(experiment)
app.command("evaluator")(evaluator)
app.add_typer(recipes_app, name="recipes")
app.add_typer(import_app, name="import")

_DEBUG = {"on": False}


def _print_version(value: bool) -> None:
    if value:
        print(f"t2ictl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
    verbose: bool = typer.Option(False, "--verbose", help=f"Show TensorFlow's start-up and log lines (also "
                                 f"{startup.VERBOSE_ENV}=1); by default they are silenced."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """t2ictl: prepare data, pretrain encoders, train GANs, sample, export and score."""
    _DEBUG["on"] = debug


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    _DEBUG["on"] = "--debug" in args
    startup.start_tensorflow_on_import(verbose="--verbose" in args or startup.verbose_requested())
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="t2ictl", standalone_mode=False)
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except _ABORT:
        _fail("interrupted; run the same command again to resume", 130)
    except _CLICK_ERROR as exc:
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
