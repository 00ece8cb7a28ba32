"""Instructions per probe: sqlprobe under valgrind's callgrind, counted over a fixed number of probes.

python -m tests.bench.instructions [--probes 300] [--targets 20] [--base COMMIT]

CPU seconds taken on a shared 2-core machine move by 15% and more with whatever else runs; the instructions a
process executes do not (callgrind counts them, not time). sqlprobe starts under callgrind with counting off, is
warmed up (every target probed a few times, so that engines, pools and caches exist), counts while it answers
``--probes`` probes one after another (round-robin over the targets, over one keep-alive connection), and stops.
With ``--base``, the same on that commit's app/ (a temporary git worktree first on sqlprobe's PYTHONPATH), and
the ratio this/base. What callgrind does not see: the kernel's side of system calls (a write to a socket, whose
cost on loopback includes the receiving side's), so a change that saves system calls shows less here than in
`make bench`; and its figures are for one run of a given interpreter and libraries on one machine.
"""

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

from tests.bench.client import Connection, probe_request
from tests.bench.fleet import QUERIES_PER_PROBE, database_fleet, exporter

WARM_UP_ROUNDS = 5


def main(argv: Sequence[str] | None = None) -> None:
    """Count (on this tree, and on --base) and print instructions per probe and per query."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=300, help="probes counted")
    parser.add_argument("--targets", type=int, default=20, help="targets on one throwaway MariaDB server")
    parser.add_argument("--base", help="a commit to compare with (its app/)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("bench: valgrind is not installed (apt-get install valgrind)")
    counts: dict[str, int] = {}
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sqlprobe-instructions-")))
        _, dsns = stack.enter_context(database_fleet(1, args.targets, root))
        sides: dict[str, Path | None] = {"this": None}
        if args.base:
            worktree = root / "base-tree"
            subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(worktree), args.base], check=True)
            stack.callback(subprocess.run, ["git", "worktree", "remove", "--force", str(worktree)], check=False)
            sides = {"base": worktree, "this": None}
        for side, tree in sides.items():
            print(f"instructions: {side} ...", file=sys.stderr)
            counts[side] = count(root / side, dsns, tree, args.probes)
    for side, total in counts.items():
        per_probe = total / args.probes
        print(
            f"{side:5} {per_probe / 1e6:8.3f} M instructions per probe, {per_probe / QUERIES_PER_PROBE / 1e6:.3f} M per query"
        )
    if "base" in counts:
        print(f"this/base {counts['this'] / counts['base']:.3f}")


def count(directory: Path, dsns: Mapping[str, str], tree: Path | None, probes: int) -> int:
    """Instructions sqlprobe (this tree's app/, or ``tree``'s) executes to answer ``probes`` probes."""
    directory.mkdir()
    out = directory / "callgrind.out"
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    saved = os.environ.get("PYTHONPATH")
    if tree is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), saved]))
    try:
        with exporter(directory, dsns, [], wrapper=wrapper, start_s=600) as running:
            targets = list(dsns)
            asyncio.run(_probe(running.host, running.port, targets * WARM_UP_ROUNDS))
            _control(running.process.pid, "--instr=on")
            asyncio.run(_probe(running.host, running.port, [targets[i % len(targets)] for i in range(probes)]))
            _control(running.process.pid, "--instr=off")
            _control(running.process.pid, "--dump")
    finally:
        if tree is not None:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved
    dumps = list(directory.glob("callgrind.out*"))
    if not dumps:
        sys.exit(
            f"bench: callgrind wrote no counts: {(directory / 'sqlprobe.log').read_text(errors='replace')[-2000:]}"
        )
    return sum(_total(path) for path in dumps)


async def _probe(host: str, port: int, targets: Sequence[str]) -> None:
    connection = Connection(host, port)
    try:
        for target in targets:
            status, body = await connection.exchange(probe_request(host, port, target, 60))
            if status != 200 or b"probe_success 1" not in body:
                sys.exit(f"bench: probe of {target} failed ({status}): {body[:300]!r}")
    finally:
        connection.close()


def _control(pid: int, option: str) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, stdout=subprocess.DEVNULL)


def _total(path: Path) -> int:
    """The instructions counted in one callgrind dump (its 'totals:' line)."""
    return sum(int(total) for total in re.findall(r"^totals:\s*(\d+)", path.read_text(errors="replace"), re.MULTILINE))


if __name__ == "__main__":
    main()
