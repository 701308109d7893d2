"""Install the CNI shim as ``<cni-bin-dir>/flannel`` (``overlayd install-cni``)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import cni_shim
from overlayd.base.atomicfile import write_atomic

PLUGIN_NAME = "flannel"
# Linux accepted 127 bytes of "#!" line until 5.1 and 255 since; beyond that the kernel
# truncates the interpreter path, so a long venv path gets a /bin/sh trampoline instead.
_MAX_SHEBANG = 127


def render_plugin(python: str, package_parent: str) -> str:
    """The executable's text: run ``python`` on ``cni_shim`` from ``package_parent``.

    ``-I`` ignores PYTHON* variables and the user's site directory, so the runtime's
    environment cannot change which code runs; ``-S`` skips ``site`` (and the venv's .pth
    files), which halves start-up: the shim is standard library only and finds its package
    through the explicit path below, whether that is site-packages or an editable checkout.
    """
    body = (
        "import sys\n"
        f"sys.path.insert(0, {package_parent!r})\n"
        "from cni_shim.main import main\n"
        "main()\n"
    )
    shebang = f"#!{python} -IS"
    if len(shebang) <= _MAX_SHEBANG and " " not in python:
        return f"{shebang}\n{body}"
    return f'#!/bin/sh\nexec {shlex.quote(python)} -IS -c {shlex.quote(body)} "$@"\n'


def install_cni(cni_bin_dir: Path) -> Path:
    """Write the ``flannel`` plugin into ``cni_bin_dir`` atomically; return its path.

    It runs this interpreter (``sys.executable``: the venv's python, never a pyenv shim that
    would add a shell and a version lookup to every CNI call) on the installed ``cni_shim``.
    """
    package_parent = str(Path(cni_shim.__file__).resolve().parent.parent)
    target = cni_bin_dir / PLUGIN_NAME
    # Atomic: a runtime exec'ing the plugin meanwhile never sees half a file.
    write_atomic(target, render_plugin(sys.executable, package_parent), mode=0o755)
    return target
