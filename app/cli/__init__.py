"""The command line: ``sqlprobe`` and ``python -m app`` (app/cli/serve.py does the work, app/cli/flags.py the flags)."""

import signal
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run sqlprobe; the exit status is 1 for an invalid config."""
    # The reload handler is installed with the app, a second or two from now (the imports, the config load): a
    # SIGHUP before it (systemd's reload right after its start) would end the process. Ignored until then, so
    # before the imports, which is why they come after, here.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from app.cli.serve import run

    return run(argv)
