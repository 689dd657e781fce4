"""`invoke bench.launch`: what starting a run or a sweep costs over a bare `docker run` (issue 19).

Every figure is a whole command timed from outside, paired with its baseline in the same
round and alternated (mlbatch, bare, mlbatch, bare, ...), so both see the same machine:

    one run                 `mlbatch run-batch` of a no-op job      one bare `docker run`
    N runs at once          N of them started together              N bare runs started together
    an N-task sweep, P=N    `mlbatch run-batch --sweep-file`         N bare runs started together
    an M-task sweep, P      the same, M tasks, at most P at once    M bare runs, at most P at once

The bare run is the same release's container by digest with the same code bundle mounted
read-only at /code, a results folder at /results and no network (`--network none`: what
the job's own container gets), `docker run --rm` by the docker CLI. Each row gives the
median with min and max of each side and of the pair by pair ratio; a sweep row also
gives the controller's peak memory (the process's maximum resident set, as the kernel
accounts it at exit).

The breakdown of one run comes from what the runs leave behind, not from estimates: the
records (spec.json's `created`, instance.json's `created`, `deleted` and phases,
attempt.json's `started`, `finished` and phases), the engine's own events for the instance
and job containers (nanosecond timestamps), and for the imports one more run of the same
command under `python -X importtime` whose report lines are stamped as they arrive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mlbatch.core import labels, runs
from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import Bucket, open_bucket
from mlbatch.core.bundle import extract_bundle
from mlbatch.core.catalog import Job
from mlbatch.core.errors import BadInput
from mlbatch.core.settings import Settings
from mlbatch.core.versions import parse_version
from mlbatch.local.infra import docker_client
from mlbatch.ui import Say

NO_OP_JOB = "fail-on-purpose"  # the cheapest job of the catalog: a Python that exits at once
NO_OP_PARAMS = ("exit_code=0",)


@dataclasses.dataclass(frozen=True)
class Figures:
    """One side of a row over its rounds: wall seconds, and the largest peak RSS (KiB) of a process."""

    walls: tuple[float, ...]
    peak_kib: tuple[int, ...] = ()


BARE = "bare docker run"


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    sides: dict[str, Figures]  # by label: each mlbatch checkout measured, then BARE

    def ratios(self, label: str, to: str = BARE) -> list[float]:
        return [a / b for a, b in zip(self.sides[label].walls, self.sides[to].walls, strict=True)]


def spread(values: Sequence[float], unit: str = "s", digits: int = 2) -> str:
    """median (min-max): the figure to quote, and how noisy the machine was."""
    return f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


@dataclasses.dataclass
class Process:
    """A finished command: its wall time, exit code and the kernel's peak RSS of it (KiB)."""

    argv: list[str]
    seconds: float
    code: int
    peak_kib: int
    started: float  # unix time


def run_group(commands: Sequence[list[str]], at_once: int, log: Path, cwd: Path | None = None) -> list[Process]:
    """Run the commands, at most `at_once` at a time; each reaped with wait4 for its rusage."""
    pending = list(enumerate(commands))
    running: dict[int, tuple[int, list[str], float, float, subprocess.Popen]] = {}
    done: list[tuple[int, Process]] = []
    with log.open("ab") as out:
        while pending or running:
            while pending and len(running) < at_once:
                index, argv = pending.pop(0)
                started, clock = time.time(), time.monotonic()
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd)
                running[proc.pid] = (index, argv, started, clock, proc)
            pid, status, usage = os.wait4(-1, 0)
            if pid not in running:
                continue
            index, argv, started, clock, proc = running.pop(pid)
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            done.append((index, Process(argv, time.monotonic() - clock, proc.returncode, usage.ru_maxrss, started)))
    return [p for _, p in sorted(done, key=lambda d: d[0])]


def timed_group(
    commands: Sequence[list[str]], at_once: int, log: Path, what: str, cwd: Path | None = None
) -> tuple[float, list[Process]]:
    """Wall seconds of the whole group, its processes; a command that fails fails the bench."""
    start = time.monotonic()
    done = run_group(commands, at_once, log, cwd)
    seconds = time.monotonic() - start
    failed = [p for p in done if p.code != 0]
    if failed:
        raise RuntimeError(f"{what}: {len(failed)} of {len(done)} exited non-zero (first: {failed[0].code}); see {log}")
    return seconds, done


@dataclasses.dataclass
class Setup:
    bucket: Bucket
    version: str
    job: Job
    container: str
    code: Path  # the release's code bundle, extracted
    state_dir: Path
    profile: str
    work: Path  # logs, sweep files, results folders
    mlbatch: list[str]  # how to call the mlbatch command
    root: Path  # the checkout it runs in (its invoke.yaml, tasks/)
    label: str = "mlbatch"

    def run_argv(self) -> list[str]:
        params = [a for p in NO_OP_PARAMS for a in ("--param", p)]
        return [*self.mlbatch, "run-batch", "--profile", self.profile, "--job", self.job.name, "--version", self.version, *params]

    def sweep_argv(self, tasks: int, parallelism: int) -> list[str]:
        sweep_file = self.work / f"sweep-{tasks}.txt"
        sweep_file.write_text("".join(" ".join(NO_OP_PARAMS) + "\n" for _ in range(tasks)))
        return [
            *self.mlbatch, "run-batch", "--profile", self.profile, "--job", self.job.name, "--version", self.version,
            "--sweep-file", str(sweep_file), "--parallelism", str(parallelism),
        ]  # fmt: skip

    def bare_argv(self, name: str) -> list[str]:
        params = self.job.resolve_params(dict(p.split("=", 1) for p in NO_OP_PARAMS))
        results = Path(tempfile.mkdtemp(prefix="results-", dir=self.work))
        return [
            "docker", "run", "--rm", "--name", name, "--network", "none",
            "-v", f"{self.code}:/code:ro", "-v", f"{results}:/results", "-w", "/code",
            "-e", "MLBATCH_RESULTS_DIR=/results", self.container, *self.job.argv(params),
        ]  # fmt: skip


def mlbatch_command(python: str) -> list[str]:
    """The `mlbatch` console script beside an interpreter (what a scheduler calls)."""
    script = Path(python).with_name("mlbatch")
    if script.exists():
        return [str(script)]
    return [python, "-c", "from mlbatch.cli import main; main()"]


@contextlib.contextmanager
def setup(
    bucket: Bucket, version: str, state_dir: Path, profile: str, root: Path, python: str = sys.executable, label: str = "mlbatch"
) -> Iterator[Setup]:
    """A checkout to measure: its release's no-op job, container and code (extracted for the bare runs)."""
    manifest = manifests.load(bucket, version)
    job = manifest.jobs[NO_OP_JOB]
    container = manifest.containers[job.container].ref
    client = docker_client()
    client.images.pull(container)  # present before anything is timed
    with tempfile.TemporaryDirectory(prefix="bench-launch-") as work:
        code = Path(work) / "code"
        extract_bundle(bucket.read(manifest.code.uri.removeprefix(bucket.uri + "/")), code)
        yield Setup(
            bucket, manifest.version, job, container, code, state_dir, profile, Path(work), mlbatch_command(python), root, label
        )


# --- the rows ---------------------------------------------------------------------------------

Measure = Callable[[], tuple[float, int]]  # wall seconds, largest peak RSS (KiB)


def alternated(name: str, rounds: int, measures: dict[str, Measure], say: Say, warm_up: bool = True) -> Row:
    """Each side once as a warm-up (not counted), then `rounds` rounds of every side in turn."""
    for measure in measures.values() if warm_up else ():
        measure()
    walls: dict[str, list[float]] = {label: [] for label in measures}
    peaks: dict[str, list[int]] = {label: [] for label in measures}
    for i in range(rounds):
        for label, measure in measures.items():
            seconds, peak = measure()
            walls[label].append(seconds)
            peaks[label].append(peak)
        say(f"{name}, round {i + 1}/{rounds}: " + ", ".join(f"{label} {walls[label][-1]:.2f}s" for label in measures))
    return Row(name, {label: Figures(tuple(walls[label]), tuple(peaks[label])) for label in measures})


@dataclasses.dataclass
class Sizes:
    rounds: int = 5
    at_once: int = 16
    big_tasks: int = 200
    big_parallelism: int = 4
    big_rounds: int = 1


def bench_launch(setups: list[Setup], sizes: Sizes, say: Say) -> tuple[list[Row], dict[str, Breakdown]]:
    """The four rows, every checkout in `setups` against the bare runs of the first one's release."""
    first = setups[0]
    log = first.work / "commands.log"
    bare_names = (f"mlbatch-bench-{os.getpid()}-{i}" for i in range(10**9))
    breakdowns = {s.label: Breakdown() for s in setups}

    def group(s: Setup, argvs: list[list[str]], limit: int, what: str) -> tuple[float, int]:
        seconds, done = timed_group(argvs, limit, log, f"{s.label}: {what}", s.root)
        return seconds, max(p.peak_kib for p in done)

    def bare(count: int, limit: int) -> Measure:
        return lambda: group(first, [first.bare_argv(next(bare_names)) for _ in range(count)], limit, BARE)

    def one_run(s: Setup) -> Measure:
        counted = iter(range(-1, 10**9))  # the warm-up's run (-1) is not counted

        def measure() -> tuple[float, int]:
            own_log = s.work / f"run-{time.monotonic_ns()}.log"  # its run id is read from its own output
            seconds, done = timed_group([s.run_argv()], 1, own_log, f"{s.label}: run-batch", s.root)
            if next(counted) >= 0:
                breakdowns[s.label].add_run(s, _run_id_in(own_log.read_text(), s.job.name), done[0])
            return seconds, done[0].peak_kib

        return measure

    def row(name: str, rounds: int, each: Callable[[Setup], Measure], baseline: Measure, warm_up: bool = True) -> Row:
        return alternated(name, rounds, {**{s.label: each(s) for s in setups}, BARE: baseline}, say, warm_up)

    n, big, p = sizes.at_once, sizes.big_tasks, sizes.big_parallelism
    rows = [
        row("one run", sizes.rounds, one_run, bare(1, 1)),
        row(f"{n} runs at once", sizes.rounds, lambda s: lambda: group(s, [s.run_argv()] * n, n, "run-batch"), bare(n, n)),
        row(
            f"one {n}-task sweep, parallelism {n}",
            sizes.rounds,
            lambda s: lambda: group(s, [s.sweep_argv(n, n)], 1, "sweep"),
            bare(n, n),
        ),
        row(
            f"one {big}-task sweep, parallelism {p}",
            sizes.big_rounds,
            lambda s: lambda: group(s, [s.sweep_argv(big, p)], 1, "sweep"),
            bare(big, p),
            warm_up=False,  # minutes each; the rows before warmed the engine and the page cache
        ),
    ]
    for s in setups:
        breakdowns[s.label].add_imports(s, log)
    return rows, breakdowns


@dataclasses.dataclass(frozen=True)
class Checkout:
    """A checkout whose `mlbatch` is measured: its settings, the release to run, its interpreter."""

    root: Path
    settings: Settings
    version: str | None  # None: the newest release in its bucket
    python: str
    label: str


def byte_compile(checkout: Checkout) -> None:
    """Compile the checkout's sources as `pip install` does for an installed package. An editable
    checkout run with PYTHONDONTWRITEBYTECODE set (as on the development machine) otherwise
    compiles ~50 modules from source at every start, ~60 ms of CPU a command that no installed
    mlbatch pays; the VM image's agent is installed, so compiled, already."""
    sources = [str(checkout.root / "mlbatch"), str(checkout.root / "tasks")]
    subprocess.run([checkout.python, "-m", "compileall", "-q", *sources], check=True, stdout=subprocess.DEVNULL)


def measure(checkouts: list[Checkout], sizes: Sizes, say: Say) -> tuple[str, list[Row], dict[str, Breakdown]]:
    """`invoke bench.launch`: the heading, the rows and the breakdowns of every checkout."""
    with contextlib.ExitStack() as stack:
        setups = []
        for c in checkouts:
            if not c.settings.is_local:
                raise BadInput(f"bench.launch measures against the local engine: --profile {c.settings.profile} is not local")
            byte_compile(c)
            bucket = open_bucket(c.settings.bucket)
            tag = parse_version(c.version).tag if c.version else manifests.newest_version(bucket)
            setups.append(
                stack.enter_context(setup(bucket, tag, c.settings.state_dir, c.settings.profile, c.root, c.python, c.label))
            )
        rows, breakdowns = bench_launch(setups, sizes, say)
    title = ", ".join(f"{s.label} {s.version}" for s in setups)
    return f"bench.launch: {title}; job {setups[0].job.name} exit_code=0 against bare docker run", rows, breakdowns


def row_lines(rows: list[Row]) -> list[tuple[str, str]]:
    """Each row: every side's median (min-max), then each mlbatch's ratio to the bare runs, pair by pair."""
    out = []
    for row in rows:
        labels_ = [label for label in row.sides if label != BARE]
        out.append((row.name, ", ".join(f"{label} {spread(f.walls)}" for label, f in row.sides.items())))
        for label in labels_:
            out.append((f"  {label} / bare", f"{spread(row.ratios(label), 'x')} over {len(row.ratios(label))} pair(s)"))
        for label in labels_[1:]:
            out.append((f"  {label} / {labels_[0]}", spread(row.ratios(label, labels_[0]), "x")))
    sweeps = [r for r in rows if "sweep" in r.name]
    for label in [label for label in rows[0].sides if label != BARE]:
        peaks = [statistics.median(r.sides[label].peak_kib) / 1024 for r in sweeps]
        out.append(
            (
                f"{label} controller peak memory",
                ", ".join(f"{r.name}: {peak:.1f} MiB" for r, peak in zip(sweeps, peaks, strict=True))
                + (f"; {peaks[-1] / peaks[0]:.2f}x" if len(peaks) >= 2 else ""),
            )
        )
    return out


# --- where a run's time goes --------------------------------------------------------------------


def _unix(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


@dataclasses.dataclass
class Breakdown:
    """Where a no-op run's seconds go, segment by segment, median over the counted runs."""

    segments: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    walls: list[float] = dataclasses.field(default_factory=list)
    imports: dict[str, float] = dataclasses.field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.segments.setdefault(name, []).append(seconds)

    def add_run(self, s: Setup, run_id: str, process: Process) -> None:
        spec = runs.read_spec(s.bucket, run_id)
        instance = runs.read_instance(s.bucket, run_id, 1)
        attempt = runs.read_attempt(s.bucket, run_id, 1)
        if spec is None or instance is None or attempt is None or not instance.deleted:
            raise RuntimeError(f"run {run_id}: records missing for the breakdown")
        events = container_events(s.state_dir, run_id, process.started - 1, process.started + process.seconds + 1)
        phases = attempt.phases
        create_begin = _unix(instance.created) - instance.phases["create"]
        instance_created = events.get(("instance", "create"), create_begin)
        instance_started = events.get(("instance", "start"), _unix(instance.created))
        agent = _unix(attempt.started)
        pulled = agent + phases.get("pull", 0)
        fetched = pulled + phases.get("fetch", 0)
        job_created = events.get(("job", "create"), fetched)
        job_started = events.get(("job", "start"), job_created)
        job_died = events.get(("job", "die"), job_started)
        ran = fetched + phases.get("run", 0)
        uploaded = ran + phases.get("upload", 0)
        deleted = _unix(instance.deleted)
        teardown_begin = deleted - instance.phases.get("teardown", 0.0)
        marks = [
            ("controller start to spec.json: imports, settings, catalog, preflight", process.started, _unix(spec.created)),
            ("begin: idempotency, overlap slot", _unix(spec.created), create_begin),
            ("create: the instance container created", create_begin, instance_created),
            ("boot: the instance container started", instance_created, instance_started),
            ("agent start: interpreter, imports, instance spec", instance_started, agent),
            ("pull check (pre-pulled digest)", agent, pulled),
            ("fetch: code bundle, sha256", pulled, fetched),
            ("job: container created (network, mounts)", fetched, job_created),
            ("job: container started", job_created, job_started),
            ("job: its process, start to exit", job_started, job_died),
            ("job: output drained, exit code", job_died, ran),
            ("upload: results", ran, uploaded),
            ("record: log closed, job container removed, attempt.json, result.json", uploaded, _unix(attempt.finished)),
            ("controller sees the result", _unix(attempt.finished), teardown_begin),
            ("teardown: instance deleted", teardown_begin, deleted),
            ("exit: summary, interpreter exit", deleted, process.started + process.seconds),
        ]  # fmt: skip
        for name, start, stop in marks:
            self.add(name, max(0.0, stop - start))
        self.walls.append(process.seconds)

    def add_imports(self, s: Setup, log: Path) -> None:
        """One more run, under -X importtime, its report stamped line by line as it arrives: the
        imports that finished before spec.json was written, and those after."""
        argv = s.run_argv()
        if Path(argv[0]).name == "mlbatch":  # the console script, run by its environment's interpreter
            command = [str(Path(argv[0]).with_name("python")), "-X", "importtime", *argv]
        else:
            command = [argv[0], "-X", "importtime", *argv[1:]]
        started = time.time()
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=s.root
        )
        stamped: list[tuple[float, str]] = []

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                stamped.append((time.time(), line))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        out, _ = proc.communicate()
        reader.join()
        with log.open("a") as fh:
            fh.write(out)
        if proc.returncode != 0:
            raise RuntimeError(f"run-batch under -X importtime exited {proc.returncode}; see {log}")
        run_id = _run_id_in(out, s.job.name)
        spec = runs.read_spec(s.bucket, run_id)
        assert spec is not None
        spec_at = _unix(spec.created)
        before = after = 0.0
        count = 0
        for arrived, line in stamped:
            match = _IMPORT_LINE.match(line)
            if not match or match["name"].startswith(" "):  # nested: its time is in its top-level import's
                continue
            count += 1
            seconds = int(match["cumulative"]) / 1e6
            if arrived <= spec_at:
                before += seconds
            else:
                after += seconds
        self.imports = {
            "before spec.json": before,
            "after spec.json": after,
            "modules": float(count),
            "wall under importtime": time.time() - started,
        }

    def imports_text(self) -> str:
        if not self.imports:
            return "-"
        return f"{self.imports['before spec.json']:.3f}s before spec.json, {self.imports['after spec.json']:.3f}s after"


def breakdown_lines(breakdowns: dict[str, Breakdown]) -> list[tuple[str, str]]:
    """Segment by segment, each checkout's median (one checkout: with min-max)."""
    alone = len(breakdowns) == 1

    def figure(values: list[float], digits: int = 3) -> str:
        return spread(values, digits=digits) if alone else f"{statistics.median(values):.{digits}f}s"

    def each(pick: Callable[[Breakdown], str]) -> str:
        return ", ".join(pick(b) if alone else f"{label} {pick(b)}" for label, b in breakdowns.items())

    out = [("one run, wall", each(lambda b: figure(b.walls, 2)))]
    for name in next(iter(breakdowns.values())).segments:

        def segment(b: Breakdown, name: str = name) -> str:
            return figure(b.segments.get(name, [0.0]))

        out.append((f"  {name}", each(segment)))
    out.append(("  (sum of the medians)", each(lambda b: f"{sum(statistics.median(v) for v in b.segments.values()):.3f}s")))
    out.append(("imports, one run under -X importtime (top-level, profiled)", each(Breakdown.imports_text)))
    return out


_IMPORT_LINE = re.compile(r"^import time:\s+(?P<self>\d+) \|\s+(?P<cumulative>\d+) \| (?P<name>.*)$")


def _run_id_in(text: str, job: str) -> str:
    match = re.search(rf"\b({re.escape(job)}-\d{{8}}-\d{{6}}-[a-z0-9]{{4}})\b", text)
    if match is None:
        raise RuntimeError(f"no run id of {job} in the command's output")
    return match[1]


def container_events(state_dir: Path, run_id: str, since: float, until: float) -> dict[tuple[str, str], float]:
    """The engine's events for the run's instance and job containers: (instance | job, action) -> unix time."""
    client = docker_client()
    found: dict[tuple[str, str], float] = {}
    filters: dict[str, Any] = {"type": "container", "label": labels.checkout_filter(state_dir)}
    for event in client.events(since=int(since), until=int(until) + 1, decode=True, filters=filters):
        name = event.get("Actor", {}).get("Attributes", {}).get("name", "")
        if run_id not in name:
            continue
        kind = "job" if name.endswith("-job") else "instance"
        found.setdefault((kind, event.get("Action", "")), event["timeNano"] / 1e9)
    return found
