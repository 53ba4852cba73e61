"""Start TensorFlow without its start-up noise, so that a command's output is the command's own.

TensorFlow's C++ side writes notices to the stderr file descriptor before its log level is read (oneDNN, CUDA
drivers), so the environment alone cannot silence them. `start_tensorflow` sets the environment (C++ lines below
fatal off), then imports TensorFlow and looks for devices with file descriptor 2 captured, and replays every captured
line that is not a known start-up notice: a real failure still shows. `--verbose` or T2ICTL_VERBOSE=1 skips all this.
The command line does it at the first import of TensorFlow (`start_tensorflow_on_import`), so that a command that
fails before it needs TensorFlow (a mistyped option, an unknown recipe) fails at once, not after its start-up."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

VERBOSE_ENV = "T2ICTL_VERBOSE"

# Notices TensorFlow prints at import and at the first device query, on machines with or without a GPU.
START_UP_NOTICES = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow",
    r"TF-TRT Warning: Could not find TensorRT",
    r"Attempting to register factory for plugin .* when one has already been registered",
]))


def verbose_requested() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def start_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and query its devices, quietly unless `verbose`. Idempotent."""
    if verbose:
        _import_and_query_devices()
        return
    # 3: fatal only. TensorFlow's C++ "errors" here are notices (cuInit without a GPU, oneDNN falling back to Eigen
    # for an op); a real failure reaches Python as an exception with its message.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        _quiet_python_loggers()
        return
    with replayed_stderr(START_UP_NOTICES):
        _import_and_query_devices()
    _quiet_python_loggers()


def start_tensorflow_on_import(verbose: bool = False) -> None:
    """Make the process's first `import tensorflow` (or keras, which imports it) `start_tensorflow`'s quiet start."""
    if verbose or "tensorflow" in sys.modules:
        start_tensorflow(verbose)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not any(isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` where the other finders do, with a loader that imports it quietly; then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    """The real loader of TensorFlow, run with file descriptor 2 captured, followed by the device query."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # get_filename, get_resource_reader... as the real loader
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with replayed_stderr(START_UP_NOTICES):
            self.loader.exec_module(module)
            module.config.list_physical_devices()
        _quiet_python_loggers()


def _import_and_query_devices() -> None:
    import tensorflow as tf

    # physical, not logical: the runtime stays unconfigured, so logical devices and threads can still be set
    tf.config.list_physical_devices()


def _quiet_python_loggers() -> None:
    for name in ("tensorflow", "absl"):  # absl's Python logger carries Keras' and TF's saving notices
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def replayed_stderr(drop: re.Pattern) -> Iterator[None]:
    """Capture file descriptor 2 (C++ and Python writes alike), then write back the lines `drop` does not match."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not drop.search(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
