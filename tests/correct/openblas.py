"""NumPy under each OpenBLAS kernel: which kernel a process really runs, and which to try.

NumPy's OpenBLAS (a DYNAMIC_ARCH build) picks its compute kernel when it is loaded, from the
CPU or from ``OPENBLAS_CORETYPE``; so a kernel is tried by starting a process with that
variable set (the gate's pytest is such a process). A kernel the CPU lacks is not an error
for OpenBLAS: it falls back to one the CPU has. ``plan()`` therefore asks a fresh process
for each requested kernel which one it really runs (``corename``), and keeps one request per
distinct kernel, saying why it skips the others.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

VARIABLE = "OPENBLAS_CORETYPE"
KERNELS = ("Haswell", "SkylakeX", "Sandybridge", "Nehalem", "Prescott")
"""The x86-64 kernels the issue asks for, newest instruction sets first."""
SYMBOLS = ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
           "openblas_get_corename")
"""Names of OpenBLAS' ``get_corename`` in NumPy's bundled library (scipy-openblas) and in a system one."""
ROOT = Path(__file__).resolve().parents[2]


def corename() -> str | None:
    """The kernel NumPy's OpenBLAS runs in this process, or None when it cannot be read (no
    OpenBLAS loaded, or no /proc/self/maps to find it by)."""
    import numpy  # noqa: F401 - loads the BLAS

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = [line.split()[-1] for line in maps if "openblas" in line.lower()]
    except OSError:
        return None
    for path in dict.fromkeys(p for p in paths if p.startswith("/")):
        library = ctypes.CDLL(path)
        for symbol in SYMBOLS:
            function = getattr(library, symbol, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                return function().decode()
    return None


def probe(kernel: str | None) -> str | None:
    """``corename()`` in a fresh Python with ``OPENBLAS_CORETYPE=kernel`` (unset for None)."""
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    if kernel is not None:
        env[VARIABLE] = kernel
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    out = subprocess.run([sys.executable, "-c", "from tests.correct.openblas import corename; print(corename() or '')"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    return out or None


@dataclass(frozen=True)
class KernelRun:
    """One requested kernel: the kernel OpenBLAS really ran for it, and why it is skipped (None: run it)."""

    kernel: str
    core: str | None
    skip: str | None

    @property
    def label(self) -> str:
        """``Haswell``, or ``Prescott (OpenBLAS runs Katmai)`` when the two differ."""
        same = self.core is None or self.core.lower() == self.kernel.lower()
        return self.kernel if same else f"{self.kernel} (OpenBLAS runs {self.core})"


def plan(kernels: tuple[str, ...] = KERNELS) -> list[KernelRun]:
    """Each requested kernel, run unless the kernel OpenBLAS really runs for it was already
    covered by an earlier request or cannot be read."""
    runs, seen = [], {}
    for kernel in kernels:
        core = probe(kernel)
        if core is None:
            skip = "cannot tell which OpenBLAS kernel NumPy runs here (no OpenBLAS found in /proc/self/maps)"
        elif core.lower() in seen:
            skip = (f"{VARIABLE}={kernel} runs {core} on this CPU, already covered by {VARIABLE}={seen[core.lower()]} "
                    f"(the CPU lacks {kernel} or OpenBLAS maps it to {core})")
        else:
            seen[core.lower()], skip = kernel, None
        runs.append(KernelRun(kernel, core, skip))
    return runs
