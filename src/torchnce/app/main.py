"""The argument parser of ``python -m torchnce`` and the dispatch to its commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from torchnce.app.bench import add_bench_parser
from torchnce.app.word2vec.cli import add_word2vec_parser
from torchnce.app.word2vec.corpus import CorpusError
from torchnce.app.word2vec.outputs import RunError


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit status: 2 for bad input, 1 for a
    run that could not finish its job, 130 after Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="torchnce", description="torchnce: sampled losses for PyTorch, end to end.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{word2vec,bench}")
    add_word2vec_parser(sub)
    add_bench_parser(sub)
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except CorpusError as e:
        print(f"torchnce {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"torchnce {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before training started, or while writing: nothing written
        print(f"torchnce {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    return status

