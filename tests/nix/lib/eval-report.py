"""Reports the module evaluation test (tests/nix/eval.nix) for check.sh.

usage: eval-report.py EVAL_JSON [AGENT_BIN]

Prints one line per check and, last, "counts PASSED FAILED SKIPPED". Checks:
  - every result of eval.nix;
  - every generated TOML file read back with tomllib equals the value it was written from;
  - the real agent accepts each config (`config check` exits 0) and refuses each
    `rejected` one with exit 78 and a message naming the key (skipped without AGENT_BIN).
"""

import json
import os
import subprocess
import sys
import tempfile

counts = {"pass": 0, "fail": 0, "skip": 0}


def report(kind, name, detail=""):
    counts[kind] += 1
    label = {"pass": "ok    ", "fail": "FAIL  ", "skip": "skip  "}[kind]
    print(f"{label}{name}" + (f": {detail}" if detail else ""))


def config_check(agent, toml):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(toml)
    try:
        done = subprocess.run(
            # The files these configs name exist only on the machine they are for.
            [agent, "--config", f.name, "config", "check", "--no-file-checks"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, (done.stdout + done.stderr).strip()
    finally:
        os.unlink(f.name)


def main():
    with open(sys.argv[1]) as f:
        data = json.load(f)
    agent = sys.argv[2] if len(sys.argv) > 2 else ""

    for r in data["results"]:
        report("pass" if r["ok"] else "fail", "eval: " + r["name"], "" if r["ok"] else r["detail"])

    try:
        import tomllib
    except ImportError:
        tomllib = None
    for name, c in sorted(data["configs"].items()):
        check = f"toml: {name} config reads back as written"
        if tomllib is None:
            report("skip", check, "needs Python 3.11+ (tomllib)")
        else:
            try:
                back = tomllib.loads(c["toml"])
                ok = back == c["value"]
                report("pass" if ok else "fail", check, "" if ok else f"read {back!r}")
            except tomllib.TOMLDecodeError as e:
                report("fail", check, f"{e}\n{c['toml']}")

    if not agent:
        for name in sorted(data["configs"]) + sorted(data["rejected"]):
            report("skip", f"agent: config check of {name}", "no agent binary")
        return
    for name, c in sorted(data["configs"].items()):
        code, out = config_check(agent, c["toml"])
        report(
            "pass" if code == 0 else "fail",
            f"agent: accepts the {name} config",
            "" if code == 0 else f"exit {code}: {out}\n{c['toml']}",
        )
    for name, c in sorted(data["rejected"].items()):
        code, out = config_check(agent, c["toml"])
        ok = code == 78 and c["key"] in out
        report(
            "pass" if ok else "fail",
            f"agent: refuses the {name} config with 78 naming {c['key']}",
            "" if ok else f"exit {code}: {out}",
        )


main()
print(f"counts {counts['pass']} {counts['fail']} {counts['skip']}")
