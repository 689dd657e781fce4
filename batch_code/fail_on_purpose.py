"""Exit with the given code: how a failing job reaches the scheduler."""

import argparse
import sys

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--exit-code", type=int, default=3)
args = parser.parse_args()
print(f"failing on purpose with exit code {args.exit_code}", file=sys.stderr)
sys.exit(args.exit_code)
