"""The ``ntkit`` command (thin: argument parsing, then library calls)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


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
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="infinite-width MLP kernels on digits, and finite twins "
                                       "converging to them")
    demo.add_argument("--out", default="demo_output", help="folder for the plot "
                                                           "(default: demo_output)")
    demo.add_argument("--widths", type=_positive_int_list, default=(64, 256, 1024, 4096),
                      help="twin widths, comma-separated (default: 64,256,1024,4096)")
    demo.add_argument("--seeds", type=int, default=8, help="initialisations per width")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        if args.seeds <= 0:
            print("ntkit demo: --seeds must be positive", file=sys.stderr)
            return 2
        if len(args.widths) < 2:
            print("ntkit demo: --widths needs at least two widths to fit a slope",
                  file=sys.stderr)
            return 2
        from .demo import run_demo

        run_demo(out_dir=args.out, widths=args.widths, seeds=args.seeds,
                 progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
