"""Regression check for a CI that passed only on machines that had run it before: every test that
uses the shared peer environment (label "peer") must require the fixture that makes it, so that
ctest -j never starts one before the environment exists. Reads `ctest --show-only=json-v1`.
Usage: check_fixtures.py BUILD_DIR CTEST"""
import json
import subprocess
import sys

build, ctest = sys.argv[1], sys.argv[2]
info = json.loads(subprocess.run([ctest, "--show-only=json-v1"], cwd=build, check=True, capture_output=True, text=True).stdout)
bad, setups = [], []
for t in info["tests"]:
    props = {p["name"]: p["value"] for p in t.get("properties", [])}
    labels = props.get("LABELS", [])
    if "peer" not in labels:
        continue
    if "peer_env" in props.get("FIXTURES_SETUP", []):
        setups.append(t["name"])
    elif "peer_env" not in props.get("FIXTURES_REQUIRED", []):
        bad.append(t["name"])
if len(setups) != 1:
    sys.exit(f"expected one test making the peer environment (FIXTURES_SETUP peer_env), found {setups}")
if bad:
    sys.exit("peer tests that do not require the peer_env fixture (they would race its setup under ctest -j): " + ", ".join(bad))
print(f"ok: {setups[0]} sets up the peer environment once for the other peer tests")
