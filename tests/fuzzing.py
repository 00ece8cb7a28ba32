"""Hypothesis settings the fuzz suites share."""

import os

from hypothesis import HealthCheck, settings

# SQLPROBE_FUZZ_EXAMPLES=5000 runs longer, on new random inputs each time. CI runs a fixed set instead
# (derandomize): a fuzzer that picks new inputs per run would turn CI red on whichever run first meets a bug,
# long after the change that caused it; a fixed set is green or red for the same commit every time.
LOCAL_EXAMPLES = int(os.environ.get("SQLPROBE_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples: int, *health_checks: HealthCheck) -> settings:
    """``examples`` fixed examples under CI (more, random ones with SQLPROBE_FUZZ_EXAMPLES), no deadline.

    No per-example deadline: an example takes milliseconds, but the first to import a database driver or start
    the app took seconds on a busy machine, and a deadline that trips on such noise is a flaky test. Each suite
    bounds a hang its own way instead.
    """
    return settings(
        max_examples=LOCAL_EXAMPLES or examples,
        derandomize=not LOCAL_EXAMPLES,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, *health_checks],
    )
