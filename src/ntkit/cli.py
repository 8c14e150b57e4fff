"""The ``ntkit`` command (thin: argument parsing, then library calls)."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from ._paths import prepare_output_dir, prepare_output_file

__all__ = ["main"]

# What a bad input or environment raises (a missing file, a malformed spec or array, an
# unreachable scheduler, a missing extra, a read-only disk): reported as one line, with
# status 2. Anything else is a bug in ntkit and keeps its traceback.
_FAILURES = (OSError, ValueError, TypeError, ArithmeticError, ImportError, MemoryError,
             RuntimeError)


def _positive_int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="infinite-width MLP kernels on digits, and finite twins "
                                       "converging to them")
    demo.add_argument("--out", default="demo_output", help="folder for the plot "
                                                           "(default: demo_output)")
    demo.add_argument("--widths", type=_positive_int_list, default=(64, 256, 1024, 4096),
                      help="twin widths, comma-separated (default: 64,256,1024,4096)")
    demo.add_argument("--seeds", type=int, default=8, help="initialisations per width (default: 8)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    uci = sub.add_parser("uci", help="the UCI small-data benchmark of Arora et al. (ICLR 2020) "
                                     "on folders in the Fernandez-Delgado format")
    uci.add_argument("data_dir", metavar="DATA_DIR", help="folder holding one folder per set")
    uci.add_argument("--datasets", type=_name_list, default=None,
                     help="comma-separated set names (default: every folder)")
    uci.add_argument("--json", metavar="OUT", default=None, help="write the results as JSON")
    uci.add_argument("--max-samples", type=int, default=5000,
                     help="skip sets with more samples (default: 5000)")
    uci.add_argument("--protocol", choices=("paper", "extended"), default="paper",
                     help="paper: the published grid; extended: more kernels and learners, "
                          "still chosen on the validation split (default: paper)")
    uci.add_argument("--workers", type=int, default=2, help="processes (default: 2)")
    uci.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    kernel = sub.add_parser(
        "kernel", help="a kernel matrix tiled into a Zarr store (resumable; local or Dask)",
        usage="ntkit kernel SPEC.json X.npy [--x2 X2.npy] --out K.zarr [--tile N] "
              "[--workers N | --scheduler ADDRESS]\n       ntkit kernel status K.zarr")
    kernel.add_argument("args", nargs="+", metavar="SPEC.json X.npy | status K.zarr")
    kernel.add_argument("--x2", default=None, help="second inputs (.npy); default: X itself")
    kernel.add_argument("--out", default=None, help="the Zarr store (a directory)")
    kernel.add_argument("--tile", type=int, default=2048,
                        help="rows and columns per tile, at most the kernel's size "
                             "(default: 2048)")
    kernel.add_argument("--get", choices=("both", "nngp", "ntk"), default="both",
                        help="the kernels to store: both, nngp or ntk (default: both)")
    kernel.add_argument("--no-verify", action="store_true",
                        help="trust the recorded tiles: do not read them back to compare "
                             "with their checksums (status, and reruns)")
    where = kernel.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="a local Dask cluster of N worker processes (default: this process)")
    where.add_argument("--scheduler", default=None, help="a Dask scheduler address, e.g. "
                                                         "tcp://10.0.0.1:8786")
    kernel.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _name_list(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _uci(args) -> int:
    from .apps.uci import run_uci, uci_folders

    if args.workers <= 0 or args.max_samples <= 0:
        print("ntkit uci: --workers and --max-samples must be positive", file=sys.stderr)
        return 2
    try:
        uci_folders(args.data_dir, args.datasets)
    except (FileNotFoundError, KeyError) as err:
        print(f"ntkit uci: {err.args[0]}", file=sys.stderr)
        return 2
    if args.json is not None:
        prepare_output_file(args.json, name="--json")
    # run_uci checks the location again, then writes the JSON when every set is done.
    run_uci(args.data_dir, datasets=args.datasets, protocol=args.protocol,
            max_samples=args.max_samples, workers=args.workers,
            progress=not args.no_progress, json_path=args.json)
    return 0


def _kernel(args) -> int:
    from .tiles._cli import kernel_command, status_command

    if args.args[0] == "status":
        if len(args.args) != 2:
            print("usage: ntkit kernel status K.zarr", file=sys.stderr)
            return 2
        return status_command(args.args[1], verify=not args.no_verify,
                              progress=not args.no_progress)
    if len(args.args) != 2 or args.out is None:
        print("usage: ntkit kernel SPEC.json X.npy --out K.zarr [...]", file=sys.stderr)
        return 2
    return kernel_command(*args.args, x2=args.x2, out=args.out, tile=args.tile, get=args.get,
                          workers=args.workers, scheduler=args.scheduler,
                          verify=not args.no_verify, progress=not args.no_progress)


def _demo(args) -> int:
    if args.seeds <= 0:
        print("ntkit demo: --seeds must be positive", file=sys.stderr)
        return 2
    if len(args.widths) < 2:
        print("ntkit demo: --widths needs at least two widths to fit a slope", file=sys.stderr)
        return 2
    from .apps.demo import run_demo

    prepare_output_dir(args.out, name="--out")
    run_demo(out_dir=args.out, widths=args.widths, seeds=args.seeds,
             progress=not args.no_progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = {"demo": _demo, "uci": _uci, "kernel": _kernel}[args.command]
    try:
        return command(args)
    except _FAILURES as err:
        print(f"ntkit {args.command}: {str(err) or type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ntkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
