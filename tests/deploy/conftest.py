"""The deployment suite builds and runs the container image: slow (tests/conftest.py marks the folder)."""
