"""A/B: the bench on another commit's sqlprobe and on this working tree's, alternating, then the ratios.

python -m tests.bench.ab BASE [--rounds 3] [-- BENCH ARGUMENTS ...]
e.g. python -m tests.bench.ab HEAD~1 --rounds 3 -- --mode saturation --concurrency 1,4 --step 20

Two runs of one commit differ by up to 15% on a small VM, so a change is judged on several runs of each side,
taken in turns so that both meet the same moments of the machine. BASE's `app/` is checked out in a temporary
git worktree and put first on sqlprobe's PYTHONPATH; the bench itself is this tree's for both sides.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SIDES = ("base", "this")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the rounds and print each run's CPU per query and the mean ratio this/base."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to compare with (anything git rev-parse takes)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side, alternating")
    arguments = list(sys.argv[1:] if argv is None else argv)
    split = arguments.index("--") if "--" in arguments else len(arguments)
    args = parser.parse_args(arguments[:split])
    bench = arguments[split + 1 :]  # for tests.bench.run
    with tempfile.TemporaryDirectory(prefix="sqlprobe-ab-") as directory:
        worktree = Path(directory) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(worktree), args.base], check=True)
        try:
            figures: dict[str, list[Mapping[str, float]]] = {side: [] for side in SIDES}
            for round_number in range(1, args.rounds + 1):
                for side in SIDES:
                    print(f"ab: round {round_number} of {args.rounds}, {side} ...", file=sys.stderr)
                    figures[side].append(_run(bench, worktree if side == "base" else None, Path(directory)))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], check=False)
    _print(args.base, figures)


def _run(bench: Sequence[str], base: Path | None, directory: Path) -> Mapping[str, float]:
    """One bench run; its CPU per query (by concurrency step in saturation mode; in open loop, RSS per target and
    p99 latency too)."""
    output = directory / "run.json"
    environment = dict(os.environ)
    if base is not None:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(base), environment.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "tests.bench.run", *bench, "--json", str(output)]
    subprocess.run(command, env=environment, check=True, stdout=subprocess.DEVNULL)
    results: dict[str, Any] = json.loads(output.read_text())["results"]
    if "steps" in results:
        return {f"{step['concurrency']} in flight": step["exporter_cpu_us_per_query"] for step in results["steps"]}
    figures = {
        "open loop": results["exporter_cpu_us_per_query"],
        "RSS per target, KiB (not CPU)": results["rss_per_target_kib"],
        "p99 latency, ms (not CPU)": results["latency_p99_ms"],
    }
    if "go_cpu_us_per_query" in results:  # --go: the Go exporter beside it, in the same window
        figures["Go sql_exporter's CPU per query (not sqlprobe's)"] = results["go_cpu_us_per_query"]
        figures["sqlprobe / Go, same run"] = results["exporter_cpu_us_per_query"] / results["go_cpu_us_per_query"]
    return figures


def _print(base: str, figures: Mapping[str, Sequence[Mapping[str, float]]]) -> None:
    print(f"\nsqlprobe CPU µs per query, {base} (base) against this working tree (this)\n")
    keys = [key for key in figures["base"][0] if all(key in run for side in SIDES for run in figures[side])]
    for key in keys:
        runs = {side: [run[key] for run in figures[side]] for side in SIDES}
        means = {side: statistics.fmean(values) for side, values in runs.items()}
        print(f"  {key}")
        for side in SIDES:
            print(f"    {side:5} {' '.join(f'{value:8.2f}' for value in runs[side])}   mean {means[side]:8.2f}")
        print(f"    this/base {means['this'] / means['base']:.2f}")


if __name__ == "__main__":
    main()
