"""Heavy, awkward output and odd results, for the chaos suite (tests/chaos).

Writes `--mb` MB to stdout as raw bytes: plain lines, `\\r` progress bars (tqdm style),
bytes that are not UTF-8, a line of 1 MB without a newline, and a last line with no
newline at all. `output(mb)` gives exactly those bytes, so a test can compare the log.
With `--link-to PATH` it also leaves a symlink and a FIFO in $MLBATCH_RESULTS_DIR.
"""

import argparse
import os
import sys
from collections.abc import Iterator

TAIL = b"the last line, with no newline: END-OF-OUTPUT"


def output(mb: int) -> Iterator[bytes]:
    block = 0
    written = 0
    while written < mb * 1024 * 1024:
        parts = [b"line %d of block %d: " % (i, block) + b"x" * (i % 200) + b"\n" for i in range(500)]
        parts += [b"\rprogress %3d%% |" % p + b"#" * (p // 4) + b" " * (25 - p // 4) + b"|" for p in range(0, 101, 5)]
        parts.append(b"\nnot utf-8: \xff\xfe\xc3\x28 \x80 end\n")
        if block % 10 == 0:
            parts.append(b"long:" + b"L" * (1024 * 1024) + b" no newline here, then a new line\n")
        chunk = b"".join(parts)
        written += len(chunk)
        block += 1
        yield chunk
    yield TAIL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=1)
    parser.add_argument("--link-to", default="")
    args = parser.parse_args()
    results = os.environ.get("MLBATCH_RESULTS_DIR", "/results")
    with open(os.path.join(results, "kept.txt"), "w") as fh:
        fh.write("a regular result file\n")
    if args.link_to:
        os.symlink(args.link_to, os.path.join(results, "escape"))
        os.symlink("kept.txt", os.path.join(results, "inside-link"))
        os.mkfifo(os.path.join(results, "a-fifo"))
    out = sys.stdout.buffer
    for chunk in output(args.mb):
        out.write(chunk)
    out.flush()


if __name__ == "__main__":
    main()
