"""The ``fastgan`` command: ``fastgan train``, ``evaluate`` and ``profile``; an error is one line, never a traceback."""
from __future__ import annotations

import os
import sys

import torch

from ..checkpoint import CheckpointError
from ..ops.native import NativeKernelsUnavailable
from ..train.distributed import DistributedError
from .args import build_parser
from .evaluate import run_evaluate, run_profile
from .train import run_train

RUNS = {"train": run_train, "evaluate": run_evaluate, "profile": run_profile}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return RUNS[args.run](args)
    except (ValueError, FileNotFoundError, CheckpointError, DistributedError, NativeKernelsUnavailable,
            FloatingPointError) as e:
        print(f"fastgan: error: {e}", file=sys.stderr)
        return 2
    except torch.distributed.DistError as e:   # a collective failed: a peer died, or the timeout passed
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"fastgan: error: a collective between the processes failed (did another process die or stop? "
              f"the timeout is FASTGAN_DIST_TIMEOUT seconds): {first}", file=sys.stderr)
        return 1
    except BrokenPipeError:   # the reader went away (`fastgan evaluate RUN | head`): no traceback, not at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:  # outside training (set-up, metrics): nothing to keep, no traceback
        print("fastgan: interrupted", file=sys.stderr)
        return 130
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
