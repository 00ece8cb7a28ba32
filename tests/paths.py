"""Where the tests find the project's files: the repository's root and the tests' own folder."""

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
ROOT_DIR = TESTS_DIR.parent
