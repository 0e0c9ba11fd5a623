"""Runs the public SCIM conformance testers against a running SCIM endpoint.

    python .ci/scim-conformance.py <base-url> <bearer-secret>

scim2-tester's every check (discovery, CRUD, PATCH add/remove/replace of every attribute of
every resource type) and scim-sanity's probe, in strict mode. Prints each check that did not
pass and exits 1 if any failed.
"""

import json
import subprocess
import sys

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

url, secret = sys.argv[1], sys.argv[2]
failed = 0

client = SyncSCIMClient(
    httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=30)
)
client.discover()
results = check_server(client)
for result in results:
    if result.status in (Status.ERROR, Status.CRITICAL):
        failed += 1
        print(f"scim2-tester FAILED {result.title}: {result.reason}")
    elif result.status != Status.SUCCESS:
        print(f"scim2-tester {result.status.name} {result.title}: {result.reason}")
counted = sum(r.status in (Status.ERROR, Status.CRITICAL) for r in results)
print(f"scim2-tester: {len(results)} checks, {counted} failed")

probe = subprocess.run(
    [sys.executable, "-m", "scim_sanity", "probe", url, "--token", secret,
     "--i-accept-side-effects", "--strict", "--json-output"],
    capture_output=True, text=True, check=False,
)
try:
    report = json.loads(probe.stdout)
except json.JSONDecodeError:
    print(probe.stdout, probe.stderr)
    print("scim-sanity: no report")
    sys.exit(1)
for result in report["results"]:
    if result["status"] in ("fail", "error"):
        failed += 1
        print(f"scim-sanity FAILED {result['name']}: {result.get('message', '')}")
summary = report["summary"]
print(
    f"scim-sanity: {summary['total']} checks, {summary['failed'] + summary['errors']} failed, "
    f"{summary['skipped']} skipped"
)
sys.exit(1 if failed else 0)
