"""The command line as a user meets it: help on every command, one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

COMMANDS = ["prepare", "pretrain", "train", "sample", "export", "score", "bench", "experiment", "evaluator", "recipes",
            "import"]


def t2ictl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "t2ictl", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_help_lists_every_command():
    from typer.main import get_command

    from t2ictl.cli import app

    assert sorted(get_command(app).commands) == sorted(COMMANDS)  # a new command is added to COMMANDS, and tested
    result = t2ictl("--help")
    assert result.returncode == 0
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert set(COMMANDS) <= listed, result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help(command):
    from typer.main import get_command

    from t2ictl.cli import app

    cmd = get_command(app).commands[command]
    for name, sub in [(command, cmd), *((f"{command} {n}", c) for n, c in getattr(cmd, "commands", {}).items())]:
        assert sub.help, f"{name} has no docstring"
        for param in sub.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.opts} has no help"


USER_ERRORS = [
    (["prepare", "nope"], "is not one of"),
    (["prepare"], "Missing argument"),
    (["prepare", "shapes", "--bogus"], "No such option"),
    (["pretrain", "--recipe", "nope"], "unknown recipe 'nope'"),
    (["pretrain"], "pass --recipe"),
    (["train", "--recipe", "shapes", "--data", "does/not/exist"], "does not exist"),
    (["train", "--recipe", "shapes", "--set", "data.bogus=1"], "unknown key data.bogus"),
    (["sample", "a red bird"], "exactly one of --run"),
    (["sample", "a red bird", "--run", "no/such/run"], "does not exist"),
    (["sample", "a red bird", "--model", "no/such/model"], "not a model written by"),
    (["export", "--run", "no/such/run", "--out", "x"], "does not exist"),
    (["recipes", "show", "nope"], "unknown recipe"),
    (["import", "damsm", "--text-encoder", "no.pth", "--captions", "no.pickle", "--run-dir", "r"], "no.pickle"),
    # checked before any data is read or pretraining starts: no data folder exists here
    (["train", "--recipe", "shapes-attngan", "--set", "model.stages=4"], "first stage of at least 8 px"),
    (["train", "--recipe", "shapes-attngan", "--set", "data.extra_sizes=[]"], "add them to data.extra_sizes"),
    (["bench", "train", "--data", "absent"], "absent holds no prepared data"),
    (["experiment", "--recipe", "shapes", "--out", "x", "--vary", "contrastive.enabled"], "section.key=V1,V2"),
    (["experiment", "--recipe", "shapes", "--out", "x", "--vary", "train.bogus=1,2"], "unknown key train.bogus"),
    (["experiment", "--recipe", "shapes", "--out", "x", "--only", "3/2"], "--only '3/2'"),
    (["experiment", "--recipe", "shapes", "--out", "x", "--data", "absent"], "absent does not exist"),
    (["evaluator", "--data", "absent"], "absent"),
]

# Every case in one process, each from a folder of its own: a process per case would start TensorFlow 21 times.
EACH_ERROR = """
import contextlib, io, json, os, sys
from t2ictl.cli import main
results = []
for index, args in enumerate(json.loads(sys.argv[1])):
    os.makedirs(str(index))
    os.chdir(str(index))
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code
    os.chdir("..")
    results.append([code, stderr.getvalue()])
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def user_errors(tmp_path_factory) -> list:
    """(exit code, stderr) of every USER_ERRORS case, as `main` ends it; the process itself must write no stderr."""
    cwd = tmp_path_factory.mktemp("errors")
    result = subprocess.run([sys.executable, "-c", EACH_ERROR, json.dumps([args for args, _ in USER_ERRORS])],
                            capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0 and result.stderr == "", result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("case", range(len(USER_ERRORS)), ids=[message for _, message in USER_ERRORS])
def test_user_errors_are_one_line_exit_2(case, user_errors):
    code, stderr = user_errors[case]
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ")
    assert USER_ERRORS[case][1] in lines[-1]
    assert "Traceback" not in stderr
