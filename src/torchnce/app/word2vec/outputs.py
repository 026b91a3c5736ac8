"""The output directory of a run: checked before training, written atomically after it.

Every file is written under a temporary name in ``--out`` and renamed into place once all of
them are complete, so each output file is either the old complete one or the new complete
one, never a part (a full disk, a second Ctrl-C); a failed write removes its temporary files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from torchnce.app.word2vec.corpus import CorpusError


class RunError(RuntimeError):
    """A run that cannot finish its job (nothing trained, diverged, outputs not writable); the
    message names the likely cause. Exit status 1."""


def prepare_output(out: Path) -> None:
    """Create ``out`` (and its parents) and check that a file can be written there, by
    writing one; ``CorpusError`` naming the directory when either fails."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CorpusError(f"output directory {out} cannot be created ({e.strerror or e}); "
                          "choose another --out") from None
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".torchnce-probe-") as probe:
            probe.write(b"probe")
            probe.flush()
    except OSError as e:
        raise CorpusError(f"output directory {out} is not writable ({e.strerror or e}); "
                          "choose another --out") from None


class Staged:
    """Files written under temporary names in ``out``, renamed into place by :meth:`commit`
    (or removed by :meth:`discard`)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.names: list[str] = []

    def path(self, name: str) -> Path:
        """The temporary path to write ``name`` to."""
        self.names.append(name)
        return self._temporary(name)

    def _temporary(self, name: str) -> Path:
        return self.out / f".{name}.{os.getpid()}.partial"

    def commit(self) -> None:
        for name in self.names:
            os.replace(self._temporary(name), self.out / name)
        self.names = []

    def discard(self) -> None:
        for name in self.names:
            self._temporary(name).unlink(missing_ok=True)
        self.names = []
