"""The bucket's IAM model and the fake STS on their own: what they refuse, as the docs their
docstrings name say (a model kinder than IAM would hide a grant that reaches too far)."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
import urllib.request

import pytest

from tests.support.cel import ConditionError, evaluate, extract
from tests.support.fake_sts import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE, FakeSts
from tests.support.gcs_iam import BucketIam, Check, Principal, Refusal

OBJECTS = "projects/_/buckets/b/objects/"
RUNS = f'resource.name.startsWith("{OBJECTS}runs/")'
LIST_RUNS = 'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("runs/")'
RUNNER = Principal("runner@p.iam.gserviceaccount.com")


def test_conditions_evaluate_as_iam_does():
    obj = {"name": f"{OBJECTS}runs/x", "type": "storage.googleapis.com/Object"}
    assert evaluate(RUNS, obj, {})
    assert not evaluate(RUNS, {**obj, "name": f"{OBJECTS}releases/v1/manifest.json"}, {})
    bucket = {"name": "projects/_/buckets/b", "type": "storage.googleapis.com/Bucket"}
    assert not evaluate(RUNS, bucket, {"storage.googleapis.com/objectListPrefix": "runs/"})  # a list is on the bucket
    assert evaluate(LIST_RUNS, bucket, {"storage.googleapis.com/objectListPrefix": "runs/a/"})
    assert not evaluate(LIST_RUNS, bucket, {})  # a list with no prefix: the default ""
    assert extract("projects/p/zones/z/instances/mlb-x", "/instances/{name}") == "mlb-x"
    assert extract("projects/p/zones/z", "/instances/{name}") == ""


@pytest.mark.parametrize(
    "expression",
    [
        'resource.name.matches("x")',
        "resource.labels.x == 'y'",
        'resource.name.startsWith("a"',
        "resource.name",
        "request.time < 1",
    ],
)
def test_what_is_not_modelled_is_refused_not_guessed(expression):
    with pytest.raises(ConditionError):
        evaluate(expression, {"name": "a", "type": "t"}, {})


def test_a_grant_needs_role_member_and_condition():
    iam = BucketIam()
    iam.grant("roles/storage.objectUser", f"serviceAccount:{RUNNER.email}", RUNS)
    assert iam.allows(RUNNER, Check("storage.objects.create", f"{OBJECTS}runs/a"))
    assert not iam.allows(RUNNER, Check("storage.objects.create", f"{OBJECTS}releases/a"))
    assert not iam.allows(
        RUNNER, Check("storage.objects.list", "projects/_/buckets/b", {"storage.googleapis.com/objectListPrefix": "runs/"})
    )
    assert not iam.allows(Principal("other@p.iam.gserviceaccount.com"), Check("storage.objects.create", f"{OBJECTS}runs/a"))
    iam.grant("roles/storage.objectCreator", "allUsers")
    assert iam.allows(Principal("other@p.iam.gserviceaccount.com"), Check("storage.objects.create", f"{OBJECTS}releases/a"))
    assert not iam.allows(Principal("other@p.iam.gserviceaccount.com"), Check("storage.objects.delete", f"{OBJECTS}runs/a"))


def test_a_boundary_narrows_and_never_widens():
    iam = BucketIam()
    iam.grant("roles/storage.objectViewer", f"serviceAccount:{RUNNER.email}")
    rules = [
        {
            "availableResource": "//storage.googleapis.com/projects/_/buckets/b",
            "availablePermissions": ["inRole:roles/storage.objectAdmin"],
            "availabilityCondition": {"expression": f'resource.name.startsWith("{OBJECTS}data/")'},
        }
    ]
    iam.add_token("t", RUNNER.email, rules)
    job = iam.principal("Bearer t")
    assert iam.allows(job, Check("storage.objects.get", f"{OBJECTS}data/x"))
    assert not iam.allows(job, Check("storage.objects.get", f"{OBJECTS}runs/x"))  # outside the boundary
    assert not iam.allows(job, Check("storage.objects.create", f"{OBJECTS}data/x"))  # inside it, but IAM never granted it
    other = [{**rules[0], "availableResource": "//storage.googleapis.com/projects/_/buckets/c"}]
    iam.add_token("u", RUNNER.email, other)
    assert not iam.allows(iam.principal("Bearer u"), Check("storage.objects.get", f"{OBJECTS}data/x"))


def test_replacing_needs_delete_and_retention_holds_against_everyone():
    iam = BucketIam()
    iam.grant("roles/storage.objectCreator", f"serviceAccount:{RUNNER.email}")
    absent, present = (lambda b, n: False), (lambda b, n: True)
    path = "/upload/storage/v1/b/b/o?uploadType=multipart&name=releases%2Fv1%2Fmanifest.json"
    assert [c.permission for c in iam.checks("POST", path, b"", absent)] == ["storage.objects.create"]
    assert [c.permission for c in iam.checks("POST", path, b"", present)] == ["storage.objects.create", "storage.objects.delete"]
    resource = f"{OBJECTS}releases/v1/manifest.json"
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    iam.record_retention(resource, {"mode": "Locked", "retainUntilTime": until})
    with pytest.raises(Refusal) as replaced:
        iam.checks("POST", path, b"", present)
    assert replaced.value.status == 403 and replaced.value.reason == "retentionPolicyNotMet"
    with pytest.raises(Refusal, match="Locked"):
        iam.checks("PATCH", "/storage/v1/b/b/o/releases%2Fv1%2Fmanifest.json", json.dumps({"retention": None}).encode(), present)
    with pytest.raises(Refusal, match="501|does not model") as unmodelled:
        iam.checks("POST", "/storage/v1/b/b/o/a/rewriteTo/b/b/o/c", b"", present)
    assert unmodelled.value.status == 501


def _exchange(sts: FakeSts, form: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(sts.token_url, data=urllib.parse.urlencode(form).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_sts_exchanges_only_a_known_token_for_a_valid_boundary():
    iam = BucketIam()
    iam.add_token("source", RUNNER.email)
    sts = FakeSts(iam).start()
    rule = {
        "availableResource": "//storage.googleapis.com/projects/_/buckets/b",
        "availablePermissions": ["inRole:roles/storage.objectViewer"],
    }
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": "source",
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
        "options": urllib.parse.quote(json.dumps({"accessBoundary": {"accessBoundaryRules": [rule]}})),
    }
    try:
        status, answer = _exchange(sts, form)
        assert status == 200 and iam.principal(f"Bearer {answer['access_token']}").boundaries == ((rule,),)
        assert _exchange(sts, {**form, "subject_token": "forged"})[1]["error"] == "invalid_grant"
        too_many = urllib.parse.quote(json.dumps({"accessBoundary": {"accessBoundaryRules": [rule] * 11}}))
        assert _exchange(sts, {**form, "options": too_many})[1]["error"] == "invalid_request"
        bad_role = urllib.parse.quote(
            json.dumps({"accessBoundary": {"accessBoundaryRules": [{**rule, "availablePermissions": ["storage.objects.get"]}]}})
        )
        assert _exchange(sts, {**form, "options": bad_role})[0] == 400
    finally:
        sts.stop()
