"""Builds, loads and registers the oneDNN convolution extension (``onednn_conv.cc``) on first use.

The C++ source ships in the package. The first :func:`load` compiles it with the system C++
compiler (``$CXX``, default ``g++``) against the CPU oneDNN wheels (``onednn-cpu-gomp`` for
``libdnnl.so.3``, ``onednn-devel-cpu-gomp`` for its headers; vggjax depends on both on x86-64
Linux) and JAX's FFI headers (``jax.ffi.include_dir()``), linked with an rpath to the wheel's
library folder. The result goes to a cache folder (``$VGGJAX_CACHE``, else
``$XDG_CACHE_HOME/vggjax``, else ``~/.cache/vggjax``) under a name keyed by the source, the
compiler, the jaxlib and oneDNN versions and the library path, written to a temporary file and
renamed into place (two processes building at once both end with a whole file). Later processes
only load it (~10 ms).

Nothing here raises: when the extension cannot be built or loaded (another OS or CPU, no
compiler, no oneDNN wheel, a failed compile) or is switched off (``VGGJAX_ONEDNN=0``),
:func:`load` returns None and :func:`status` gives the reason; ``impl="cpu_fast"`` then runs the
pure-JAX convolutions of ``impl="cpu_jax"`` (same numbers, slower). A failure that a user can fix
(no compiler, a failed compile) is also warned about once (:class:`~vggjax.errors.VggjaxWarning`).

Threads: this oneDNN wheel is built with OpenMP (``DNNL_CPU_RUNTIME OMP``; no threadpool
runtime), so each convolution runs on ``$VGGJAX_ONEDNN_THREADS`` OpenMP threads (default: the
cores this process may use), set in the calling thread before each call. OpenMP's idle threads
sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, set before the library loads unless the
environment says otherwise): spinning threads take the cores from XLA's own thread pool between
convolutions. Thin VGG-11 with BatchNorm, train step at batch 128, 2-core VM, 2026-12-02, images/s
(``vggjax bench``): idle, 1103 with 2 passive threads against 833 with 2 spinning, 622 with 1 and
775 for the pure-JAX convolutions; with one busy-looping process beside it, 714, 661, 745 and 463.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import jax
import jaxlib

from vggjax.errors import VggjaxWarning

SOURCE = Path(__file__).with_name("onednn_conv.cc")
WHEEL, DEVEL = "onednn-cpu-gomp", "onednn-devel-cpu-gomp"
TARGETS = (
    "vggjax_conv_fwd",
    "vggjax_conv_bias_relu_fwd",
    "vggjax_conv_bwd_data",
    "vggjax_conv_bwd_weights",
    "vggjax_relu_bwd",
)
DEFAULT_THREADS = len(os.sched_getaffinity(0))  # OpenMP threads per convolution (module doc)
COMPILE_TIMEOUT = 300  # seconds
FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp")

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib": ctypes.CDLL | None, "reason": str, "threads": int


class Unavailable(Exception):
    """Why the extension cannot be used (internal: :func:`load` turns it into :func:`status`).

    ``fixable``: whether the user can fix it (then :func:`load` warns once).
    """

    def __init__(self, reason: str, fixable: bool = False):
        super().__init__(reason)
        self.fixable = fixable


def cache_dir() -> Path:
    """The folder that holds compiled extensions: ``$VGGJAX_CACHE``, ``$XDG_CACHE_HOME/vggjax``
    or ``~/.cache/vggjax``."""
    if os.environ.get("VGGJAX_CACHE"):
        return Path(os.environ["VGGJAX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vggjax"


def _wheel_file(dist: str, suffix: str) -> Path:
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise Unavailable(f"the {dist} package is not installed (pip install {dist}==2023.2.0)") from None
    for f in files:
        if str(f).endswith(suffix):
            return Path(f.locate()).resolve()
    raise Unavailable(f"the {dist} package has no {suffix}")


def threads() -> int:
    """OpenMP threads per convolution: ``$VGGJAX_ONEDNN_THREADS`` or :data:`DEFAULT_THREADS`."""
    value = os.environ.get("VGGJAX_ONEDNN_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_THREADS


def _build() -> tuple[ctypes.CDLL, str]:
    """Compiles (or finds in the cache) and loads the extension; returns it and its description."""
    if os.environ.get("VGGJAX_ONEDNN", "1") == "0":
        raise Unavailable("switched off by VGGJAX_ONEDNN=0")
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        raise Unavailable(f"built only on x86-64 Linux, not {platform.machine()} {platform.system()}")
    lib = _wheel_file(WHEEL, "libdnnl.so.3")
    header = _wheel_file(DEVEL, "oneapi/dnnl/dnnl.hpp")
    include = header.parent.parent.parent
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        raise Unavailable(f"no C++ compiler ({os.environ.get('CXX', 'g++')}; apt-get install g++)", True)
    version = importlib.metadata.version(WHEEL)
    key = "\n".join(
        [SOURCE.read_text(), cxx, " ".join(FLAGS), jaxlib.__version__, version, str(lib), str(include)]
    )
    target = cache_dir() / f"onednn_conv-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [cxx, *FLAGS, f"-I{include}", f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
        cmd += [str(lib), f"-Wl,-rpath,{lib.parent}"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
            if done.returncode != 0:
                errors = [line for line in done.stderr.splitlines() if "error" in line] or ["(no message)"]
                raise Unavailable(f"compiling {SOURCE.name} failed: {errors[0].strip()}", True)
            os.replace(tmp, target)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"compiling {SOURCE.name} took over {COMPILE_TIMEOUT} s", True) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by libgomp when it loads (module doc)
    try:
        so = ctypes.CDLL(str(target))
    except OSError as e:
        raise Unavailable(f"loading {target} failed: {e}", True) from None
    n = threads()
    so.vggjax_onednn_set_threads(n)
    v = so.vggjax_onednn_version()
    for name in TARGETS:
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(so, name)), platform="cpu")
    plural = "s" if n > 1 else ""
    dnnl = f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    return so, f"oneDNN {dnnl} ({WHEEL} {version}), {n} OpenMP thread{plural} per conv"


def load() -> ctypes.CDLL | None:
    """The loaded extension with its FFI targets registered, or None (see :func:`status`).

    Builds it the first time (a few seconds); thread-safe; never raises.
    """
    with _lock:
        if "reason" not in _state:
            try:
                _state["lib"], _state["reason"] = _build()
            except Unavailable as e:
                _state["lib"], _state["reason"] = None, str(e)
                if e.fixable:
                    warnings.warn(f"oneDNN convolutions unavailable, using pure JAX: {e}", VggjaxWarning, 2)
            except Exception as e:  # whatever goes wrong, the pure-JAX path still works
                _state["lib"], _state["reason"] = None, f"{type(e).__name__}: {e}"
                warnings.warn(f"oneDNN convolutions unavailable, using pure JAX: {e}", VggjaxWarning, 2)
        return _state["lib"]  # type: ignore[return-value]


def available() -> bool:
    """Whether ``impl="cpu_fast"`` runs its convolutions with oneDNN (builds on first call)."""
    return load() is not None


def status() -> str:
    """One line: what ``cpu_fast`` convolutions run on, e.g. ``"oneDNN 3.2.0 (onednn-cpu-gomp
    2023.2.0), 2 OpenMP threads per conv"`` or ``"pure JAX (oneDNN unavailable: <reason>)"``."""
    lib = load()
    reason = str(_state["reason"])
    return reason if lib is not None else f"pure JAX (oneDNN unavailable: {reason})"
