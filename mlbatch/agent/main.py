"""mlbatch-agent: the instance's entry point (placeholder until the run flow lands)."""

import argparse

from mlbatch import __version__


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mlbatch-agent")
    parser.add_argument("--version", action="version", version=f"mlbatch-agent {__version__}")
    parser.parse_args(argv)
    return 0
