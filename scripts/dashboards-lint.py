#!/usr/bin/env python3
"""The dashboard-linter's rules (github.com/grafana/dashboard-linter, `lint/rules.go`) on every
dashboard of helm/weft/dashboards/, with its `.lint` exclusions file beside them.

    scripts/dashboards-lint.py    (run with the venv of scripts/py-tools.sh: it reads YAML)

The linter itself is a Go module that the Go module proxy this project may use does not serve
(no version of it is listed), so its rules are carried out here, by the same names, on the
same fields, each failure naming dashboard, panel and rule:

  template-datasource-rule        a data source variable named `datasource`, "Data source"
  template-job-rule               a `job` query variable on $datasource
  template-instance-rule          an `instance` query variable on $datasource
  template-label-promql-rule      each label_values(expr, label) holds valid PromQL
  template-on-time-change-reload-rule  query variables refresh on time range change (2)
  panel-datasource-rule           each panel reads $datasource
  panel-title-description-rule    each panel has a title and a description
  panel-units-rule                stat, table, timeseries and gauge panels have a valid unit
  panel-no-targets-rule           each panel but rows has a target
  target-promql-rule              each target's expression is valid PromQL
  target-rate-interval-rule       rate() and irate() ranges are $__rate_interval
  target-job-rule                 each selector matches job=~"$job"
  target-instance-rule            each selector matches instance=~"$instance"
  target-counter-agg-rule         a counter (_total, _count, _sum, _bucket) only inside
                                  rate(), irate(), increase() or resets()

PromQL is parsed by Prometheus's own parser: every expression (variables replaced by
placeholders, as the linter does) goes into a rules file that `promtool check rules` reads.
`.lint` is the linter's format: `exclusions: {RULE: {reason: ..., entries: [{dashboard:
TITLE, panel: TITLE}]}}`, no entries meaning the whole rule. An exclusion that excludes
nothing is an error too, so the file cannot go stale.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "helm" / "weft" / "dashboards"
RULES = [
    "template-datasource-rule", "template-job-rule", "template-instance-rule",
    "template-label-promql-rule", "template-on-time-change-reload-rule",
    "panel-datasource-rule", "panel-title-description-rule", "panel-units-rule",
    "panel-no-targets-rule", "target-promql-rule", "target-rate-interval-rule",
    "target-job-rule", "target-instance-rule", "target-counter-agg-rule",
]
# The units the linter accepts (Grafana's value formats), those a mesh's panels could use.
UNITS = {
    "none", "string", "short", "percent", "percentunit", "sci", "locale",
    "bytes", "decbytes", "bits", "decbits", "kbytes", "mbytes", "gbytes",
    "pps", "binBps", "Bps", "binbps", "bps", "KiBs", "KBs", "MiBs", "MBs",
    "dateTimeAsIso", "dateTimeAsLocal", "dateTimeFromNow",
    "hertz", "ns", "µs", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations", "dthms",
    "dtdhms", "timeticks", "clockms", "clocks",
    "cps", "ops", "reqps", "rps", "wps", "iops", "cpm", "opm", "rpm", "wpm",
    "bool", "bool_yes_no", "bool_on_off",
}
UNIT_PANELS = {"stat", "singlestat", "graph", "table", "timeseries", "gauge"}
DS_UIDS = {"$datasource", "${datasource}"}
COUNTER = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*(?:_total|_count|_sum|_bucket))\b")
COUNTER_FUNCS = ("rate", "irate", "increase", "resets")


def placeholders(expr):
    """The expression with Grafana's variables replaced as the linter does for parsing."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}",
                  "5m", expr)
    return re.sub(r"\$\{?(\w+)\}?", "placeholder", expr)


def selectors(expr):
    """Each metric selector's matchers text (`{...}` after a name or alone), skipping the
    `by (...)`/`on (...)` lists and strings."""
    out = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\{([^{}]*)\}", expr):
        out.append((m.group(1) or "", m.group(2)))
    return out


def counter_outside_rate(expr):
    """Counters used other than as the range vector of rate(), irate(), increase() or
    resets(): the linter's target-counter-agg-rule."""
    bad = []
    for m in COUNTER.finditer(expr):
        name = m.group(1)
        if name.startswith("$"):
            continue
        # Skip label names inside a matcher list or grouping (`le`, ...): a counter name is a
        # metric, which is followed by `{`, `[` or a space/operator, not by `=`.
        after = expr[m.end():]
        before = expr[:m.start()]
        if re.match(r"\s*(=|!=|=~|!~)", after) or before.rstrip().endswith(("(", ",")) and \
                re.match(r"\s*[,)]", after) and re.search(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*$", before):
            continue
        # The enclosing call: walk back to the unmatched `(`.
        depth, i = 0, m.start() - 1
        while i >= 0:
            c = expr[i]
            if c == ")":
                depth += 1
            elif c == "(":
                if depth == 0:
                    break
                depth -= 1
            i -= 1
        func = re.search(r"([a-z_]+)\s*$", expr[:max(i, 0)])
        ranged = re.match(r"\s*(\{[^{}]*\})?\s*\[", after)
        if not (i >= 0 and func and func.group(1) in COUNTER_FUNCS and ranged):
            bad.append(name)
    return bad


def promql_errors(exprs):
    """`promtool check rules` on each expression as a recording rule: {index: error}."""
    groups = [{"name": "lint", "rules": [
        {"record": f"lint:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump({"groups": groups}, f)
        f.flush()
        run = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True,
                             text=True)
        if run.returncode == 0:
            return {}
    # promtool names the first bad rule; check one by one to name each.
    errors = {}
    for i, e in enumerate(exprs):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump({"groups": [{"name": "lint", "rules": [
                {"record": "lint:expr", "expr": e}]}]}, f)
            f.flush()
            run = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True,
                                 text=True)
            if run.returncode != 0:
                errors[i] = " ".join((run.stdout + run.stderr).split())
    return errors


def panels_of(d):
    out = []
    for p in d.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def lint(d):
    """[(rule, panel title or None, message)] for dashboard `d`."""
    title = d.get("title", "?")
    found = []
    variables = d.get("templating", {}).get("list", [])
    ds_vars = [v for v in variables if v.get("type") == "datasource"]
    if not ds_vars:
        found.append(("template-datasource-rule", None, "no data source variable"))
    for v in ds_vars:
        if v.get("name") != "datasource" or v.get("query") != "prometheus":
            found.append(("template-datasource-rule", None,
                          f"data source variable {v.get('name')!r} (query "
                          f"{v.get('query')!r}) should be 'datasource' of prometheus"))
        elif v.get("label") != "Data source":
            found.append(("template-datasource-rule", None,
                          f"data source variable labelled {v.get('label')!r}, should be "
                          "'Data source'"))
    for name in ("job", "instance"):
        var = [v for v in variables if v.get("name") == name and v.get("type") == "query"]
        if not var or var[0].get("datasource", {}).get("uid") not in DS_UIDS:
            found.append((f"template-{name}-rule", None, f"no {name} variable on $datasource"))
    exprs = []  # (rule, panel, original, parsed text)
    for v in variables:
        if v.get("type") != "query":
            continue
        if v.get("refresh") != 2:
            found.append(("template-on-time-change-reload-rule", None,
                          f"variable {v['name']} refreshes {v.get('refresh')!r}, not on time "
                          "range change (2)"))
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q, re.S)
        if not m:
            found.append(("template-label-promql-rule", None,
                          f"variable {v['name']}: {q!r} is not label_values(expr, label)"))
        else:
            exprs.append(("template-label-promql-rule", None, q, placeholders(m.group(1))))
    for p in panels_of(d):
        if p.get("type") == "row":
            continue
        pt = p.get("title", "")
        if not pt or not p.get("description"):
            found.append(("panel-title-description-rule", pt, "a title and a description"))
        if (p.get("datasource") or {}).get("uid") not in DS_UIDS:
            found.append(("panel-datasource-rule", pt,
                          f"data source {p.get('datasource')!r}, not $datasource"))
        if p.get("type") in UNIT_PANELS:
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
            if unit not in UNITS:
                found.append(("panel-units-rule", pt, f"no or invalid unit {unit!r}"))
        targets = p.get("targets", [])
        if not targets:
            found.append(("panel-no-targets-rule", pt, "no targets"))
        for t in targets:
            expr = t.get("expr", "")
            if (t.get("datasource") or {}).get("uid") not in DS_UIDS:
                found.append(("panel-datasource-rule", pt,
                              f"target {t.get('refId')} data source {t.get('datasource')!r}"))
            exprs.append(("target-promql-rule", pt, expr, placeholders(expr)))
            for fn, rng in re.findall(r"\b(rate|irate)\s*\((?:[^()\[]|\([^()]*\))*?\[([^\]]*)\]",
                                      expr):
                if rng not in ("$__rate_interval", "${__rate_interval}"):
                    found.append(("target-rate-interval-rule", pt,
                                  f"{fn}(...[{rng}]) should use $__rate_interval: {expr!r}"))
            for name, matchers in selectors(expr):
                for label in ("job", "instance"):
                    if not re.search(rf'\b{label}\s*=~\s*"\$\{{?{label}\}}?"', matchers):
                        found.append((f"target-{label}-rule", pt,
                                      f'{name or "selector"}{{{matchers}}} has no '
                                      f'{label}=~"${label}"'))
            for name in counter_outside_rate(expr):
                found.append(("target-counter-agg-rule", pt,
                              f"counter {name} used outside rate()/increase(): {expr!r}"))
    errors = promql_errors([e[3] for e in exprs])
    for i, err in errors.items():
        rule, pt, original, _ = exprs[i]
        found.append((rule, pt, f"{original!r}: {err}"))
    return [(rule, pt, f"{title}: {msg}") for rule, pt, msg in found]


def main():
    files = sorted(DASHBOARDS.glob("*.json"))
    if not files:
        sys.exit(f"dashboards-lint: no dashboards in {DASHBOARDS}")
    lint_file = DASHBOARDS / ".lint"
    config = yaml.safe_load(lint_file.read_text()) if lint_file.is_file() else {}
    exclusions = (config or {}).get("exclusions") or {}
    problems = []
    for rule, ex in exclusions.items():
        if rule not in RULES:
            problems.append(f".lint: unknown rule {rule!r} (known: {', '.join(RULES)})")
        if not (ex or {}).get("reason"):
            problems.append(f".lint: the exclusion of {rule} gives no reason")
    used = {rule: set() for rule in exclusions}
    failures = []
    for path in files:
        d = json.loads(path.read_text())
        for rule, panel, msg in lint(d):
            ex = exclusions.get(rule)
            if ex is not None:
                entries = ex.get("entries") or []
                if not entries:
                    used[rule].add(None)
                    continue
                hit = [i for i, e in enumerate(entries)
                       if e.get("dashboard") == d.get("title")
                       and (e.get("panel") is None or e.get("panel") == panel)]
                if hit:
                    used[rule].update(hit)
                    continue
            where = f"{path.name}" + (f", panel {panel!r}" if panel else "")
            failures.append(f"{rule}: {where}: {msg}")
    for rule, ex in exclusions.items():
        entries = (ex or {}).get("entries") or []
        if not entries and None not in used.get(rule, set()):
            problems.append(f".lint: {rule} is excluded but no dashboard breaks it; remove it")
        for i, e in enumerate(entries):
            if i not in used.get(rule, set()):
                problems.append(f".lint: the {rule} entry {e} excludes nothing; remove it")
    if failures or problems:
        sys.exit("dashboards-lint: FAILED:\n  " + "\n  ".join(problems + failures))
    print(f"dashboards-lint: {len(files)} dashboards pass the dashboard-linter's "
          f"{len(RULES)} rules ({len(exclusions)} excluded in .lint, each with its reason)")


if __name__ == "__main__":
    main()
