"""Property-based bad input (hypothesis): versions, params, names, labels, object keys and
bundle paths. Whatever is generated is either accepted and then provably well-formed, or
refused cleanly: BadInput (exit 100), a message naming the value, nothing written."""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import FileBucket
from mlbatch.core.bundle import build_bundle
from mlbatch.core.errors import BadInput, ExitCode, MlbatchError
from mlbatch.core.names import GCE_NAME, LABEL_KEY, LABEL_VALUE, check_job_name, check_labels, instance_name, new_run_id
from mlbatch.core.versions import parse_version
from mlbatch.run.controller import RunRequest, prepare
from tests.unit.test_bundle_manifest import _manifest

pytestmark = pytest.mark.chaos
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SEMVER = re.compile(r"v(0|[1-9]\d{0,3})\.(0|[1-9]\d{0,3})\.(0|[1-9]\d{0,3})(-[0-9A-Za-z-]{1,8}(\.[0-9A-Za-z-]{1,8}){0,2})?")
hostile_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", " ", "v1.0.0\n", "v1.0.0;rm -rf /", "$(id)", "`id`", "../../etc", "v01.0.0", "v1.0.0+build", "\x00"]),
    st.from_regex(SEMVER, fullmatch=True),
)


def refused(tally, call, value) -> bool:
    """True when `call` accepted the value; counts a clean refusal (BadInput naming the value) otherwise."""
    try:
        call()
        return True
    except BadInput as exc:
        tally["bad_inputs_tried"] += 1
        assert exc.exit_code == ExitCode.BAD_INPUT
        assert repr(value) in str(exc) or str(value) in str(exc), f"{exc} does not name {value!r}"
        tally["bad_inputs_refused"] += 1
        return False


@EXAMPLES
@given(text=hostile_text)
def test_versions(tally, text):
    if refused(tally, lambda: parse_version(text), text):
        version = parse_version(text)
        assert version.tag == text and GCE_NAME.fullmatch(f"mlbatch-{version.slug}-20260101000000")


@EXAMPLES
@given(
    text=st.one_of(
        st.text(max_size=40), st.from_regex(r"[a-z][-a-z0-9]{0,40}", fullmatch=True), st.sampled_from(["train\n", "a" * 31, "a-"])
    )
)
def test_job_names_give_valid_run_ids_and_instance_names(tally, text):
    if refused(tally, lambda: check_job_name(text), text):
        assert GCE_NAME.fullmatch(text) and len(text) <= 30
        run_id = new_run_id(text)
        assert GCE_NAME.fullmatch(instance_name(run_id, 99)) and len(instance_name(run_id, 99)) <= 63


@EXAMPLES
@given(
    labels=st.dictionaries(
        st.one_of(st.text(max_size=70), st.from_regex(LABEL_KEY, fullmatch=True), st.just("job\n")),
        st.one_of(st.text(max_size=70), st.just("v1\n")),
        max_size=3,
    )
)
def test_labels(tally, labels):
    bad = next((f"{k}={v!r}" for k, v in labels.items() if not (LABEL_KEY.fullmatch(k) and LABEL_VALUE.fullmatch(v))), None)
    if refused(tally, lambda: check_labels(labels), bad):
        assert all(
            LABEL_KEY.fullmatch(k) and LABEL_VALUE.fullmatch(v) and len(k) <= 63 and len(v) <= 63 for k, v in labels.items()
        )


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    bucket = FileBucket(tmp_path_factory.mktemp("prop-bucket"))
    manifests.publish(bucket, _manifest())
    return bucket


@EXAMPLES
@given(
    job=st.sampled_from(["sleep", "train-digits", "nope"]),
    name=st.one_of(st.sampled_from(["message", "seconds", "n_estimators", "x"]), st.text(max_size=12)),
    value=hostile_text,
)
def test_run_params_are_refused_before_anything_is_written(tally, released, job, name, value):
    before = sorted(released.list("runs")) + sorted(released.list("idempotency"))
    pair = f"{name}={value}"
    try:
        prepared = prepare(released, RunRequest(job, "v1.0.0", params=(pair,)))
    except BadInput as exc:
        tally["bad_inputs_tried"] += 1
        assert exc.exit_code == ExitCode.BAD_INPUT and str(exc)
        tally["bad_inputs_refused"] += 1
    else:
        argv = prepared.job.argv(prepared.params)
        assert all("\n" not in arg and "\x00" not in arg for arg in argv)
        if prepared.job.name == "sleep":
            assert re.fullmatch(r"[A-Za-z0-9._,:/@+=-]{0,256}", str(prepared.params["message"]))
    assert sorted(released.list("runs")) + sorted(released.list("idempotency")) == before


@EXAMPLES
@given(key=st.one_of(st.text(max_size=30), st.sampled_from(["../x", "a/../../x", "/etc/passwd", "a//b", ".", "a/./b"])))
def test_object_keys_never_leave_the_bucket(tally, tmp_path, key):
    root = tmp_path / "bucket"
    bucket = FileBucket(root)
    try:
        bucket.write(key, b"x")
    except BadInput:
        tally["bad_inputs_tried"] += 1
        tally["bad_inputs_refused"] += 1
        return
    except (OSError, ValueError):  # a name the file system refuses (NUL, too long): not written either
        return
    assert (root / key).resolve().is_relative_to(root.resolve())


CACHE_DIRS = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
segment = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(st.lists(segment, min_size=1, max_size=3), min_size=1, max_size=6),
    links=st.lists(st.tuples(segment, st.sampled_from(["inside", "outside", "dotdot", "absolute", "dangling"])), max_size=3),
)
def test_bundle_paths(tally, tmp_path_factory, files, links):
    base = tmp_path_factory.mktemp("tree")
    root = base / "batch_code"
    root.mkdir()
    (base / "secret").write_text("SECRET")
    written = {}
    for parts in files:
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                continue
            path.write_bytes(b"/".join(p.encode() for p in parts))
        except OSError:
            continue
        if not (set(parts) & CACHE_DIRS or parts[-1].endswith((".pyc", ".pyo"))):  # caches are not code
            written[Path(*parts).as_posix()] = path.read_bytes()
    assume(written)
    first = next(iter(written))
    escaping = []
    for name, kind in links:
        link = root / f"link-{name}"
        if link.exists() or link.is_symlink():
            continue
        target = {
            "inside": first,
            "outside": str(base / "secret"),
            "dotdot": "../secret",
            "absolute": "/etc/hostname",
            "dangling": "no-such-file",
        }[kind]
        link.symlink_to(target)
        if kind == "inside":
            written[link.name] = written[first]
        else:
            escaping.append(link.name)
    try:
        data = build_bundle(root).data
    except BadInput as exc:
        tally["bad_inputs_tried"] += 1
        assert escaping and any(name in str(exc) for name in escaping), str(exc)
        tally["bad_inputs_refused"] += 1
        return
    except MlbatchError:
        raise
    assert not escaping, f"links {escaping} were bundled"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        assert all(m.isfile() and not os.path.isabs(m.name) and ".." not in m.name.split("/") for m in tar.getmembers())
    assert members == written
    assert b"SECRET" not in b"".join(members.values())
