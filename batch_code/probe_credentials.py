"""Ask the metadata servers a job container is told of for the VM's token, and see what a token does.

For tests/integration/test_job_credentials.py and the live suite (issue 16): it asks each
metadata server it is told of for the VM's token (GCE_METADATA_HOST and the one given as
--metadata: tests give a loopback stand-in, the live suite 169.254.169.254; it tries no address
it was not given, so that no test sends a packet where it was not meant to), then, with a token
from GCE_METADATA_HOST, reads and writes the given objects of --bucket (a key's segments JOB
and RUN stand for this run's job and run id).
Every outcome goes to $MLBATCH_RESULTS_DIR/probe.json and to stdout; it exits 0 whatever it got.
"""

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"  # noqa: S105 - a path


def ask_token(host):
    request = urllib.request.Request(f"http://{host}{TOKEN_PATH}", headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=3) as answer:  # noqa: S310 - http is the point
            return json.loads(answer.read())["access_token"], "token"
    except urllib.error.HTTPError as exc:
        return None, f"HTTP {exc.code}"
    except (OSError, ValueError, KeyError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def storage(token, method, url, data=None):
    request = urllib.request.Request(  # noqa: S310 - the bucket's endpoint
        url, data=data, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - the bucket's endpoint
            answer.read()
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def object_name(key):
    names = {"JOB": os.environ.get("MLBATCH_JOB", ""), "RUN": os.environ.get("MLBATCH_RUN_ID", "")}
    return "/".join(names.get(segment, segment) for segment in key.split("/"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--metadata", default="")
    parser.add_argument("--bucket", default="")
    parser.add_argument("--read", default="")
    parser.add_argument("--write", default="")
    args = parser.parse_args()
    hosts = {
        "GCE_METADATA_HOST": os.environ.get("GCE_METADATA_HOST", ""),
        "given": args.metadata,
    }
    found = {"metadata": {}, "read": {}, "write": {}}
    token = None
    for name, host in hosts.items():
        if host:
            got, outcome = ask_token(host)
            found["metadata"][name] = outcome
            if name == "GCE_METADATA_HOST":
                token = got
    endpoint = os.environ.get("API_ENDPOINT_OVERRIDE", "https://storage.googleapis.com").rstrip("/")
    if token and args.bucket:
        for key in filter(None, args.read.split(",")):
            url = f"{endpoint}/storage/v1/b/{args.bucket}/o/{urllib.parse.quote(object_name(key), safe='')}?alt=media"
            found["read"][key] = storage(token, "GET", url)
        for key in filter(None, args.write.split(",")):
            name = urllib.parse.quote(object_name(key), safe="")
            url = f"{endpoint}/upload/storage/v1/b/{args.bucket}/o?uploadType=media&name={name}"
            found["write"][key] = storage(token, "POST", url, b"written by the job")
    print(json.dumps(found, sort_keys=True), flush=True)
    results = Path(os.environ.get("MLBATCH_RESULTS_DIR", "."))
    (results / "probe.json").write_text(json.dumps(found, sort_keys=True))
    tokens = sum(outcome == "token" for outcome in found["metadata"].values())
    (results / "metrics.json").write_text(json.dumps({"tokens": tokens}))


if __name__ == "__main__":
    main()
