"""The first-use build of the native kernels, its cache, and the status of the native path.

Three libraries are compiled once per source, compiler, flags and CPU into ``$TORCHNCE_CACHE``
(default ``~/.cache/torchnce``), with ``-march=native``: the kernels are vectorised for the CPU
that builds them (AVX2 or AVX-512 where present), and the CPU's flags are part of the cache key,
so a home directory shared by other machines builds its own copy.

* the kernels (plain C++, no torch headers; 3.5 s on the project's machine), called through
  ctypes: word2vec, the samplers, the corpus reader;
* the operators (``ops.cpp`` with ``sampled.cpp``, against the installed torch's headers and
  libraries; about 15 s), loaded with ``torch.ops.load_library``: the fused sampled-loss step,
  the RowUpdate node and the row update, one dispatcher call each. The torch version is part
  of its key.
* the samplers' Python module (``pysamplers.cpp`` with ``samplers.cpp``, pybind11 through
  torch's headers and Python's; about 20 s), imported from the cache: the draws with a
  generator, one call each. Python's version is part of its key too.

Later imports load the cached libraries. A build writes to a temporary file and renames it,
so that concurrent first uses (forked workers, parallel test runs) never load a half-written
library.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, NamedTuple

SOURCES = tuple(Path(__file__).with_name(name)
                for name in ("word2vec.cpp", "sampling.cpp", "corpus.cpp", "samplers.cpp"))
HEADERS = tuple(Path(__file__).with_name(name) for name in ("xoshiro.h", "sampler_call.h"))
OPS_SOURCES = tuple(Path(__file__).with_name(name) for name in ("ops.cpp", "sampled.cpp"))
SAMPLER_SOURCES = tuple(Path(__file__).with_name(name)
                        for name in ("pysamplers.cpp", "samplers.cpp"))
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC")
_LIBRARY = "libtorchnce_native.so"
_OPS_LIBRARY = "libtorchnce_ops.so"
_SAMPLERS_MODULE = "_torchnce_samplers"


class NativeStatus(NamedTuple):
    """Whether the native kernels run, and why (or why not).

    Examples:
        >>> import torchnce
        >>> torchnce.NativeStatus(False, "disabled by TORCHNCE_NATIVE=0").available
        False
    """

    available: bool
    reason: str


def _cache_dir() -> Path:
    if os.environ.get("TORCHNCE_CACHE"):
        return Path(os.environ["TORCHNCE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torchnce"


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which(
        "clang++")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return ""


def _flags() -> list[str]:
    """The compiler flags; ``TORCHNCE_NATIVE_CFLAGS`` adds some (e.g. a sanitizer)."""
    return [*FLAGS, *os.environ.get("TORCHNCE_NATIVE_CFLAGS", "").split()]


def _build(compiler: str, sources: tuple[Path, ...] = SOURCES, flags: list[str] | None = None,
           name: str = _LIBRARY, key_extra: str = "") -> Path:
    """The cached library, compiled if needed; raises ``RuntimeError`` with the compiler's
    first error line when the build fails."""
    flags = _flags() if flags is None else flags
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             check=False).stdout
    key = hashlib.sha256()
    for part in (*(s.read_bytes() for s in (*sources, *HEADERS)), version.encode(),
                 " ".join(flags).encode(), _cpu_flags().encode(), key_extra.encode()):
        key.update(part)
    target = _cache_dir() / key.hexdigest()[:16] / name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so", delete=False) as tmp:
        partial = Path(tmp.name)
    command = [compiler, *map(str, sources), "-o", str(partial), *flags]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        first = next((line for line in done.stderr.splitlines() if "error" in line),
                     done.stderr.strip()[:200])
        raise RuntimeError(f"{compiler} failed: {first}")
    os.replace(partial, target)
    return target


def _required_compiler() -> str:
    """The C++ compiler (``_compiler``); ``RuntimeError`` saying how to get one where none
    is found."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    return compiler


def _torch_flags() -> tuple[list[str], str]:
    """The flags that build and link the operators against the installed torch, and the
    part of the cache key that names that torch. ``-fopenmp``: ``at::parallel_for`` is a
    header template, serial unless compiled with OpenMP (the library then shares torch's
    ``libgomp.so.1``, already loaded by ``import torch``, and its threads)."""
    import torch

    root = Path(torch.__file__).parent
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    lib = root / "lib"
    flags = [*(f for f in _flags() if f != "-std=c++17"), "-std=c++20", "-w", "-fopenmp",
             f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-I{root / 'include'}",
             f"-I{root / 'include' / 'torch' / 'csrc' / 'api' / 'include'}", f"-L{lib}",
             "-lc10", "-ltorch_cpu", "-ltorch", f"-Wl,-rpath,{lib}"]
    return flags, f"{torch.__version__} {root}"


@functools.lru_cache(maxsize=1)
def load() -> tuple[ctypes.CDLL | None, NativeStatus]:
    """The loaded library (None on the pure path) and the status; builds on first use and
    warns once when the build is impossible or fails."""
    if os.environ.get("TORCHNCE_NATIVE", "1").strip() == "0":
        return None, NativeStatus(False, "disabled by TORCHNCE_NATIVE=0")
    try:
        compiler = _required_compiler()
        library = ctypes.CDLL(str(_build(compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        status = NativeStatus(False, f"the native kernels could not be built: {err}")
        warnings.warn(f"torchnce: {status.reason}; using the pure-PyTorch path",
                      RuntimeWarning, stacklevel=3)
        return None, status
    return library, NativeStatus(True, f"built with {Path(compiler).name} {' '.join(FLAGS[:2])}")


def kernel(name: str, argtypes: list[Any], restype: Any = ctypes.c_int) -> Any:
    """The library's C function ``name`` with its argument and result types set;
    ``RuntimeError`` naming the reason when the native kernels are not available."""
    library, status = load()
    if library is None:
        raise RuntimeError(f"the native kernels are not available: {status.reason}")
    fn = getattr(library, name)
    fn.restype, fn.argtypes = restype, argtypes
    return fn


@functools.lru_cache(maxsize=1)
def load_ops() -> NativeStatus:
    """Build (on first use) and load the operators ``torch.ops.torchnce_cpu.*``; warns once
    when that is impossible or fails (the pure-PyTorch path then runs)."""
    library, status = load()
    if library is None:  # the kernels' build said why (one warning for both)
        return status
    try:
        compiler = _required_compiler()
        import torch

        flags, torch_key = _torch_flags()
        path = _build(compiler, OPS_SOURCES, flags, _OPS_LIBRARY, torch_key)
        torch.ops.load_library(str(path))  # type: ignore[no-untyped-call]
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        status = NativeStatus(False, f"the native operators could not be built: {err}")
        warnings.warn(f"torchnce: {status.reason}; using the pure-PyTorch path for the "
                      "sampled losses", RuntimeWarning, stacklevel=3)
        return status
    return NativeStatus(True, f"built with {Path(compiler).name} {' '.join(FLAGS[:2])}")


@functools.lru_cache(maxsize=1)
def load_samplers() -> Any:
    """Build (on first use) and import the samplers' module ``_torchnce_samplers``, or None
    where that is impossible (the samplers then make ``ctypes`` calls; one warning says why)."""
    if load()[0] is None:  # off, or the kernels' build said why (one warning for all)
        return None
    try:
        compiler = _required_compiler()
        import importlib.machinery
        import importlib.util
        import sysconfig

        flags, torch_key = _torch_flags()
        include = sysconfig.get_paths()["include"]
        flags += [f"-I{include}", "-ltorch_python", "-fvisibility=hidden"]
        path = _build(compiler, SAMPLER_SOURCES, flags, _SAMPLERS_MODULE + ".so",
                      f"{torch_key} {include} {sys.version}")
        loader = importlib.machinery.ExtensionFileLoader(_SAMPLERS_MODULE, str(path))
        spec = importlib.util.spec_from_file_location(_SAMPLERS_MODULE, str(path),
                                                      loader=loader)
        if spec is None:
            raise RuntimeError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except (OSError, ImportError, RuntimeError, subprocess.SubprocessError) as err:
        warnings.warn(f"torchnce: the samplers' native module could not be built: {err}; "
                      "the samplers call the kernels through ctypes", RuntimeWarning,
                      stacklevel=3)
        return None
    return module


def native_available() -> NativeStatus:
    """Whether torchnce's native CPU kernels run, and why (or why not).

    The first call builds them if they are not in the cache yet (a few seconds; see
    docs/native.md), so call it before forking worker processes. ``TORCHNCE_NATIVE=0`` in the
    environment forces the pure-PyTorch path; a missing compiler or a failed build falls back
    to it with one ``RuntimeWarning``.

    Returns:
        ``NativeStatus(available, reason)``.

    Examples:
        >>> import torchnce
        >>> status = torchnce.native_available()
        >>> isinstance(status.available, bool), isinstance(status.reason, str)
        (True, True)
    """
    return load()[1]
