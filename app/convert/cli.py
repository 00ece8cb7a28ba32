"""The sqlprobe-convert command: read another exporter's config, write sqlprobe's two files, list what differs."""

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from app.convert import query_exporter, sql_exporter
from app.convert.output import Conversion, Unreadable

CONVERTERS: dict[str, Callable[[Path], Conversion]] = {
    "query-exporter": query_exporter.convert,
    "sql-exporter": sql_exporter.convert,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when both files were written; 1 with a sentence when the input cannot be read or the files exist."""
    parser = argparse.ArgumentParser(
        prog="sqlprobe-convert",
        description="Write sqlprobe's targets.yml and queries.yml from a query-exporter or sql_exporter config.",
    )
    parser.add_argument("exporter", choices=sorted(CONVERTERS), help="the exporter whose configuration CONFIG is")
    parser.add_argument("config", type=Path, metavar="CONFIG", help="its configuration file")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write the two files")
    parser.add_argument("--force", action="store_true", help="replace targets.yml and queries.yml if DIR has them")
    args = parser.parse_args(argv)
    try:
        conversion = CONVERTERS[args.exporter](args.config)
        targets, queries = conversion.write(args.out, replace=args.force)
    except Unreadable as error:
        print(f"sqlprobe-convert: {error}", file=sys.stderr)
        return 1
    except (AttributeError, KeyError, TypeError, ValueError):
        # A key whose value has a shape the converter does not expect (a number where a list goes, a DSN mapping
        # without its dialect, ...): one sentence, not a traceback; the error's text is left out, it may quote a value.
        print(
            f"sqlprobe-convert: {args.config} is not a {args.exporter} configuration it can read: "
            "a key has a value of the wrong shape (check it with that exporter)",
            file=sys.stderr,
        )
        return 1
    except OSError as error:
        print(f"sqlprobe-convert: cannot write to {args.out}: {error.strerror}", file=sys.stderr)
        return 1
    print(
        f"wrote {targets} ({len(conversion.targets)} targets) and {queries} ({len(conversion.query_sets)} query sets)"
    )
    if conversion.notes:
        print(f"{len(conversion.notes)} thing(s) not converted or converted with a difference:")
        for note in conversion.notes:
            print(f"  {note}")
    print(f"check them: sqlprobe --check-config --targets {targets} --queries {queries}")
    return 0
