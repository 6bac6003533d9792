"""The ``llmkit`` command line (also ``python -m llmkit``).

Subcommands::

    llmkit labs build   [--solutions DIR] [--labs DIR]
    llmkit labs check   [--solutions DIR] [--labs DIR] [--timeout S] [--no-execute] [-j N]
    llmkit grade        SUBMISSION.ipynb|FOLDER ... [--json] [--csv FILE] [--timeout S]
                        [--labs DIR | --solutions DIR] [-j N]
    llmkit notebooks execute          [--profile book] [--timeout S] FILES...
    llmkit notebooks normalise        FILES...
    llmkit notebooks check-normalised FILES...
    llmkit results build|check        [--root DIR]

Exit status: 0 success; 1 the command ran and found a problem (a stale lab, a check
that cannot fail, a notebook not normalised or failing, a submission that could not be
graded); 2 a usage error (bad arguments, no labs or solutions found).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

_EPILOG = "Exit status: 0 ok, 1 problems found, 2 usage error."


def _positive(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def _jobs(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``llmkit``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="llmkit",
        description="Course tooling of llmkit: labs, grading, notebooks.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # labs ---------------------------------------------------------------------
    labs = sub.add_parser(
        "labs",
        help="generate labs/ from solutions/ and check them",
        description="Generate labs/NN_*.ipynb from solutions/NN_*.ipynb, and check them.",
        epilog=_EPILOG,
    )
    labs_sub = labs.add_subparsers(dest="labs_command", metavar="ACTION", required=True)
    build = labs_sub.add_parser(
        "build",
        help="write labs/NN_*.ipynb from solutions/NN_*.ipynb",
        description=(
            "For each solutions/NN_*.ipynb write labs/NN_*.ipynb: every region between "
            "'### BEGIN SOLUTION' and '### END SOLUTION' becomes "
            'raise NotImplementedError("<exercise id>"), outputs are cleared and the '
            "notebook is normalised. Deterministic: building twice gives identical files."
        ),
        epilog=_EPILOG,
    )
    check = labs_sub.add_parser(
        "check",
        help="fail if labs/ is stale, leaks solutions, or has checks that cannot fail",
        description=(
            "Fail if a lab is missing, extra or differs from a fresh build; if a solution "
            "marker or solution line leaks into a lab; if a lab has no exercise or no "
            "graded check; and (unless --no-execute) if, executed in the smoke profile, a "
            "graded check passes on the unmodified lab or fails on the solution, or passes "
            "on the wrapper variant (the solution with each exercise replaced by a thin "
            "wrapper around llmkit's reference, where llmkit.course.checks.wrapper_source "
            "has one)."
        ),
        epilog=_EPILOG,
    )
    for q in (build, check):
        q.add_argument(
            "--solutions",
            default="solutions",
            metavar="DIR",
            help="solution notebooks (default: ./solutions)",
        )
        q.add_argument(
            "--labs", default="labs", metavar="DIR", help="lab notebooks (default: ./labs)"
        )
    check.add_argument(
        "--timeout",
        type=_positive,
        default=60.0,
        metavar="S",
        help="per-cell timeout in seconds when executing (default: 60)",
    )
    check.add_argument(
        "--no-execute", action="store_true", help="only the static checks; do not execute notebooks"
    )
    check.add_argument(
        "-j",
        "--jobs",
        type=_jobs,
        default=1,
        metavar="N",
        help="notebooks executed in parallel (default: 1)",
    )

    # grade ----------------------------------------------------------------------
    grade = sub.add_parser(
        "grade",
        help="grade submitted lab notebooks",
        formatter_class=fmt,
        description=(
            "Grade lab notebooks. Each notebook's lab is identified (metadata.llmkit.lab,\n"
            "else its NN_ file-name prefix plus a cell id in common with the lab, else its\n"
            "cell ids). The graded notebook is the official lab (from --labs, or\n"
            "--solutions) with its exercise cells replaced by the student's code: only the\n"
            "top-level imports, functions, classes and constants (NAME = literal) of the\n"
            "student's cells; every other top-level statement is ignored (see the notes\n"
            "in the report). It is executed with nbclient in a kernel of this environment\n"
            "(LLMKIT_PROFILE=smoke, LLMKIT_CHECK_SEED fixed per lab unless set, output\n"
            "capped) in a temporary folder. A cell past --timeout is interrupted; a kernel\n"
            "that dies or does not stop is replaced and the cells that passed are run\n"
            "again, so one exercise's crash or loop costs only its own points. This is a\n"
            "self-assessment tool, not a sandbox: the student's functions run in the same\n"
            "kernel as the checks. Each exercise earns the points of its check cells that\n"
            "raised nothing and printed their verdict line (starting with a check mark).\n"
            "A folder stands for its *.ipynb files. One broken submission never stops\n"
            "the batch."
        ),
        epilog=(
            "Exit status: 0 every file was graded (whatever the scores); 1 some file could "
            "not be graded (unreadable, not a lab; see its error); 2 usage error."
        ),
    )
    grade.add_argument(
        "paths", nargs="+", metavar="SUBMISSION", help="notebooks (.ipynb) or folders of notebooks"
    )
    grade.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list (file, lab, score, max_score, exercises, error, notes)",
    )
    grade.add_argument(
        "--csv", metavar="FILE", help="write a gradebook: one row per file, one column per exercise"
    )
    grade.add_argument(
        "--timeout",
        type=_positive,
        default=60.0,
        metavar="S",
        help="per-cell timeout in seconds (default: 60)",
    )
    official = grade.add_mutually_exclusive_group()
    official.add_argument(
        "--labs",
        default=None,
        metavar="DIR",
        help="the official lab notebooks NN_*.ipynb (default: ./labs if it exists, else "
        "the labs/ of the repository llmkit is installed from)",
    )
    official.add_argument(
        "--solutions",
        default=None,
        metavar="DIR",
        help="take the official notebooks from this solutions folder instead of the labs "
        "(their check cells and other non-exercise cells are the same)",
    )
    grade.add_argument(
        "-j",
        "--jobs",
        type=_jobs,
        default=1,
        metavar="N",
        help="submissions graded in parallel (default: 1)",
    )

    # notebooks ------------------------------------------------------------------
    nbs = sub.add_parser(
        "notebooks",
        help="execute and normalise notebooks",
        description="Execute notebooks in place and keep them in normal form.",
        epilog=_EPILOG,
    )
    nbs_sub = nbs.add_subparsers(dest="nb_command", metavar="ACTION", required=True)
    ex = nbs_sub.add_parser(
        "execute",
        help="execute notebooks in place (nbclient), then normalise them",
        description=(
            "Execute each notebook in place with nbclient: kernel from this Python "
            "environment, working directory = the notebook's folder, LLMKIT_PROFILE set. "
            "A failing notebook is left untouched and reported; the others still run."
        ),
        epilog=_EPILOG,
    )
    ex.add_argument(
        "--profile",
        choices=("smoke", "book", "full"),
        default=None,
        help="the compute profile (default: $LLMKIT_PROFILE if set, else book)",
    )
    ex.add_argument(
        "--timeout",
        type=_positive,
        default=1800.0,
        metavar="S",
        help="per-cell timeout in seconds (default: 1800)",
    )
    ex.add_argument("files", nargs="+", metavar="FILE")
    norm = nbs_sub.add_parser(
        "normalise",
        aliases=["normalize"],
        help="normalise notebooks in place",
        description=(
            "Normalise notebooks in place: nbformat 4.5 with cell ids, sequential execution "
            "counts, no volatile metadata, fixed kernelspec. Idempotent."
        ),
        epilog=_EPILOG,
    )
    norm.add_argument("files", nargs="+", metavar="FILE")
    chk = nbs_sub.add_parser(
        "check-normalised",
        aliases=["check-normalized"],
        help="fail if a notebook is not normalised",
        description="Exit 1, naming them, if normalising would change any of the files.",
        epilog=_EPILOG,
    )
    chk.add_argument("files", nargs="+", metavar="FILE")

    # results --------------------------------------------------------------------
    res = sub.add_parser(
        "results",
        help="build or check the results page and the chapters' running boxes",
        description=(
            "Build results.md, the book's page of headline numbers, and each chapter's\n"
            "'running this chapter' box (_generated/running/<chapter>.md) from the outputs\n"
            "of the chapter cells tagged llmkit-record; or check that they are up to date."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    res.add_argument("action", choices=["build", "check"])
    res.add_argument("--root", default=".", metavar="DIR", help="the course (default: .)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmkit`` command line; return the exit status."""
    args = build_parser().parse_args(argv)
    out = sys.stdout
    if args.command == "labs":
        from llmkit.course import labs

        if args.labs_command == "build":
            return labs.build_labs(args.solutions, args.labs, out=out)
        return labs.check_labs(
            args.solutions,
            args.labs,
            execute=not args.no_execute,
            timeout=args.timeout,
            jobs=args.jobs,
            out=out,
        )
    if args.command == "grade":
        from llmkit.course import grade

        return grade.main_grade(
            args.paths,
            labs=args.labs,
            solutions=args.solutions,
            timeout=args.timeout,
            as_json=args.json,
            csv_path=args.csv,
            jobs=args.jobs,
            out=out,
            err=sys.stderr,
        )
    if args.command == "results":
        from llmkit.course import results

        if args.action == "build":
            changed = results.build(args.root)
            state = "written" if changed else "unchanged"
            print(f"results.md and running boxes {state}", file=out)
            return 0
        problem = results.check(args.root)
        print(problem or "results.md and the running boxes are up to date", file=out)
        return 1 if problem else 0
    from llmkit.course import notebooks

    if args.nb_command == "execute":
        from llmkit import profile

        try:
            chosen = args.profile or profile.current()
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return notebooks.execute_files(args.files, profile=chosen, timeout=args.timeout, out=out)
    if args.nb_command in ("normalise", "normalize"):
        return notebooks.normalise_files(args.files, out=out)
    return notebooks.check_normalised_files(args.files, out=out)


if __name__ == "__main__":
    sys.exit(main())
