"""Validates a /metrics page (read from stdin) the way Prometheus would read it.

1. The official client's strict OpenMetrics parser (`prometheus_client.openmetrics.parser`): names, types,
   `_total` on counters, label syntax, one `# EOF`.
2. `promtool check metrics` (Prometheus's own linter) when PROMTOOL names it: naming and help conventions.

Prints the metric families as JSON ({name: {type, samples: [[name, labels, value]]}}) so the Rust test can
assert on parsed values rather than on text; exits 1 with the parser's or promtool's message otherwise.
"""
import json
import os
import subprocess
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

def to_classic(text):
    """promtool (2.42) lints the classic text format: rename the OpenMetrics metadata the way Prometheus does
    when it ingests OpenMetrics (a counter `x` has samples `x_total`, an info `x` has `x_info` and is a gauge)
    and drop the `# EOF` terminator."""
    suffix = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            suffix[name] = {"counter": "_total", "info": "_info"}.get(kind, "")
    out = []
    for line in text.splitlines():
        if line == "# EOF":
            continue
        if line.startswith("# TYPE ") or line.startswith("# HELP ") or line.startswith("# UNIT "):
            head, name, rest = line[:7], *line[7:].split(" ", 1)
            if head == "# UNIT ":
                continue
            if head == "# TYPE " and rest == "info":
                rest = "gauge"
            line = f"{head}{name}{suffix.get(name, '')} {rest}"
        out.append(line)
    return "\n".join(out) + "\n"


text = sys.stdin.read()
try:
    families = list(text_string_to_metric_families(text))
except Exception as e:  # the parser raises ValueError with the offending line
    print(f"OpenMetrics parse error: {e}", file=sys.stderr)
    sys.exit(1)

promtool = os.environ.get("PROMTOOL")
if promtool:
    classic = to_classic(text)
    p = subprocess.run([promtool, "check", "metrics"], input=classic, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"promtool check metrics failed:\n{p.stdout}{p.stderr}", file=sys.stderr)
        sys.exit(1)

out = {
    f.name: {
        "type": f.type,
        "samples": [[s.name, s.labels, s.value] for s in f.samples],
    }
    for f in families
}
json.dump(out, sys.stdout)
