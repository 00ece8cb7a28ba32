"""How long reading an inventory file of N servers takes: `python -m tests.bench.inventory --servers 100000`.

One group per server with two labels (file_sd as a generator writes it), as YAML and as JSON.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from app.config.inventory import read_inventory_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", type=int, default=100_000)
    count = parser.parse_args().servers
    groups: list[dict[str, Any]] = [
        {
            "targets": [f"127.{index // 65536}.{index // 256 % 256}.{index % 256}:3306"],
            "labels": {"dc": "eu", "rack": f"r{index % 40}"},
        }
        for index in range(count)
    ]
    with tempfile.TemporaryDirectory() as directory:
        yaml_file, json_file = Path(directory) / "fleet.yml", Path(directory) / "fleet.json"
        yaml_file.write_text(
            "".join(
                f"- targets: ['{group['targets'][0]}']\n  labels: {{dc: eu, rack: {group['labels']['rack']}}}\n"
                for group in groups
            )
        )
        json_file.write_text(json.dumps(groups))
        for path in (yaml_file, json_file):
            started = time.perf_counter()
            entries = read_inventory_file(path)
            print(f"{path.suffix[1:]:>4}: {len(entries):,} servers read in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
