#!/usr/bin/env python3
"""Weft's Grafana dashboards, written as data: this script renders helm/weft/dashboards/*.json.

    scripts/dashboards.py            write the JSON files
    scripts/dashboards.py --check    fail if a committed file differs from what this renders

The JSON files are what users import and what the chart ships; this file is where they are
edited (one place for the data source, units, legends and layout conventions, so the seven
dashboards stay alike). They are written for Grafana 12.4 (schemaVersion 42) and checked by
`make dashboards`: @grafana/schema 12.4 through TypeScript, the dashboard-linter's rules, and
every expression run by a real Prometheus scraping the demo mesh (e2e/tests/dashboards.rs).

Every metric here is one the proxy or the control plane exports, or one of the recording
rules of helm/weft/rules/weft.rules.yaml (docs/observability.md); the rules are used where
they exist. A workload is joined from `namespace_pod:weft_workload:info` (the proxies'
weft_proxy_info) on the scrape's namespace and pod labels, never guessed from pod names.
Only the standard library.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "helm" / "weft" / "dashboards"
SCHEMA_VERSION = 42  # Grafana 12.4
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
# The proxies' request series of one workload: joined to its pods by the rules' info series.
WORKLOAD = 'namespace_pod:weft_workload:info{namespace="$namespace",workload="$workload"}'
CONTROL_PLANE = 'job=~".*weft-control-plane.*"'


# --- building blocks -----------------------------------------------------------------------

def target(expr, legend="__auto", ref="A", instant=False, fmt=None):
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend}
    if instant:
        t["instant"] = True
        t["range"] = False
    else:
        t["range"] = True
    if fmt:
        t["format"] = fmt
    return t


def refs(targets):
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return targets


def panel(kind, title, description, targets, unit, grid, options=None, custom=None,
          defaults=None, overrides=None, transformations=None):
    fc_defaults = {"unit": unit}
    if custom is not None:
        fc_defaults["custom"] = custom
    if defaults:
        fc_defaults.update(defaults)
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": dict(zip("hwxy", grid)),
        "targets": refs(targets),
        "fieldConfig": {"defaults": fc_defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if transformations:
        p["transformations"] = transformations
    return p


def legend(mode="list", placement="bottom", calcs=None):
    return {"showLegend": True, "displayMode": mode, "placement": placement,
            "calcs": calcs or []}


def timeseries(title, description, targets, unit, grid, stack=False, fill=10, max_=None,
               min_=0, calcs=None):
    """A time series panel; its axis starts at 0 (no figure here can be negative)."""
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": fill,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "axisPlacement": "auto",
    }
    defaults = {}
    if max_ is not None:
        defaults["max"] = max_
    if min_ is not None:
        defaults["min"] = min_
    return panel("timeseries", title, description, targets, unit, grid,
                 options={"legend": legend("table" if calcs else "list",
                                           "right" if calcs else "bottom", calcs),
                          "tooltip": {"mode": "multi", "sort": "desc"}},
                 custom=custom, defaults=defaults)


def stat(title, description, expr, unit, grid, thresholds=None, decimals=None):
    defaults = {}
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
        defaults["color"] = {"mode": "thresholds"}
    if decimals is not None:
        defaults["decimals"] = decimals
    return panel("stat", title, description, [target(expr, legend=title, instant=True)], unit,
                 grid, defaults=defaults,
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                            "values": False},
                          "colorMode": "value", "graphMode": "area", "textMode": "auto",
                          "justifyMode": "auto", "orientation": "auto", "wideLayout": True,
                          "showPercentChange": False,
                          "percentChangeColorMode": "standard"})


def bargauge(title, description, expr, legend_, unit, grid, max_=None):
    defaults = {"min": 0}
    if max_ is not None:
        defaults["max"] = max_
    return panel("bargauge", title, description,
                 [target(expr, legend=legend_, instant=True)], unit, grid, defaults=defaults,
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                            "values": False},
                          "orientation": "horizontal", "displayMode": "gradient",
                          "showUnfilled": True, "valueMode": "color", "sizing": "auto",
                          "namePlacement": "auto", "minVizHeight": 16, "minVizWidth": 8,
                          "maxVizHeight": 300,
                          "legend": {"showLegend": False, "displayMode": "list",
                                     "placement": "bottom", "calcs": []}})


def table(title, description, columns, grid, by):
    """A table of instant queries joined on the `by` labels: columns are (header, expr, unit)."""
    targets = [target(expr, legend=header, instant=True, fmt="table")
               for header, expr, _ in columns]
    refs(targets)
    overrides = []
    rename = {}
    for t, (header, _, unit) in zip(targets, columns):
        name = f"Value #{t['refId']}"
        rename[name] = header
        overrides.append({"matcher": {"id": "byName", "options": header},
                          "properties": [{"id": "unit", "value": unit}]})
    return panel("table", title, description, targets, "none", grid,
                 overrides=overrides,
                 options={"showHeader": True, "cellHeight": "sm", "frameIndex": 0},
                 transformations=[
                     {"id": "merge", "options": {}},
                     {"id": "organize", "options": {
                         "excludeByName": {"Time": True},
                         "indexByName": {label: i for i, label in enumerate(by)},
                         "renameByName": rename}},
                 ])


def row(title, y):
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}}


def datasource_var():
    return {"type": "datasource", "name": "datasource", "label": "Data source",
            "query": "prometheus", "current": {"text": "default", "value": "default"},
            "hide": 0, "refresh": 1, "regex": "",
            "options": [], "includeAll": False, "multi": False}


def query_var(name, label, query, current):
    """A variable of `label_values(...)`; `current` is the value Grafana shows until the user
    picks another (kept only if the data has it; else Grafana takes the first)."""
    return {"type": "query", "name": name, "label": label, "datasource": DS,
            "query": {"query": query, "refId": f"{name}-variable"},
            "current": {"text": current, "value": current}, "hide": 0, "refresh": 2, "regex": "", "sort": 1,
            "options": [], "includeAll": False, "multi": False}


def dashboard(uid, title, description, panels, variables=()):
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["weft", "service-mesh"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"title": "Weft dashboards", "type": "dashboards", "tags": ["weft"],
                   "asDropdown": True, "includeVars": False, "keepTime": True,
                   "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}],
        "templating": {"list": [datasource_var(), *variables]},
        "panels": panels,
    }


def joined(expr, by, info=WORKLOAD):
    """`sum by (by) (expr * on (namespace, pod) group_left info)`: a workload's pods only."""
    return f"sum by ({by}) (\n  {expr}\n  * on (namespace, pod) group_left {info}\n)"


GREEN, ORANGE, RED = "green", "orange", "red"
SUCCESS_STEPS = [{"color": RED, "value": None}, {"color": ORANGE, "value": 0.95},
                 {"color": GREEN, "value": 0.99}]

# --- the dashboards ------------------------------------------------------------------------


def mesh():
    inbound = 'weft_requests_total{direction="inbound"}'
    by_workload = ("sum by (namespace, workload) (\n"
                   f"  rate({inbound}[{RATE}])\n"
                   "  * on (namespace, pod) group_left (workload) namespace_pod:weft_workload:info\n)")
    panels = [
        stat("Requests/s", "Requests per second every workload served (their proxies' inbound "
             "requests), over 5 minutes: the sum of workload:weft_requests:rate5m.",
             "sum(workload:weft_requests:rate5m)", "reqps", (4, 5, 0, 0)),
        stat("Success rate", "Share of the mesh's requests answered without a 5xx, over 5 "
             "minutes (the workload rules, weighted by each workload's rate).",
             "sum(workload:weft_requests:rate5m * workload:weft_requests_success:ratio_rate5m)\n"
             "/ sum(workload:weft_requests:rate5m)", "percentunit", (4, 5, 5, 0),
             thresholds=SUCCESS_STEPS, decimals=2),
        stat("mTLS share", "Share of inbound requests that arrived over mutual TLS from another "
             "proxy; the rest came in plaintext from unmeshed clients (permissive mode).",
             f'sum(rate(weft_requests_total{{direction="inbound",tls="true"}}[{RATE}]))\n'
             f'/ sum(rate({inbound}[{RATE}]))', "percentunit", (4, 5, 10, 0), decimals=1),
        stat("Meshed pods", "Pods whose proxy Prometheus scrapes (one weft_proxy_info or "
             "weft_build_info series each).", "count(namespace_pod:weft_workload:info)",
             "short", (4, 4, 15, 0)),
        stat("Control plane", "Control-plane replicas Prometheus scrapes and finds up (a job "
             "whose name contains weft-control-plane, as the rules expect).",
             f"sum(up{{{CONTROL_PLANE}}})", "short", (4, 5, 19, 0),
             thresholds=[{"color": RED, "value": None}, {"color": GREEN, "value": 1}]),
        timeseries("Requests/s by workload", "Inbound requests per second of each workload, "
                   "its pods summed (joined from each proxy's weft_proxy_info).",
                   [target(by_workload, "{{namespace}}/{{workload}}")], "reqps",
                   (8, 12, 0, 4), calcs=["mean", "lastNotNull"]),
        timeseries("Success rate by workload", "Share of each workload's inbound requests "
                   "answered without a 5xx, over 5 minutes (workload:weft_requests_success:"
                   "ratio_rate5m).",
                   [target("workload:weft_requests_success:ratio_rate5m",
                           "{{namespace}}/{{workload}}")], "percentunit", (8, 12, 12, 4),
                   fill=0, max_=1, calcs=["min", "lastNotNull"]),
        timeseries("p99 latency by workload", "99th percentile of each workload's inbound "
                   "request duration over 5 minutes, from arrival at its proxy to the end of "
                   "the response body.",
                   [target('workload_quantile:weft_request_duration_seconds:histogram_quantile'
                           '{quantile="0.99"}', "{{namespace}}/{{workload}}")], "s",
                   (8, 12, 0, 12), fill=0, calcs=["mean", "max"]),
        table("Workloads", "Every workload that served requests in the last 5 minutes: "
              "requests per second, success rate and latency (the workload rules).",
              [("Requests/s", "workload:weft_requests:rate5m", "reqps"),
               ("Success", "workload:weft_requests_success:ratio_rate5m", "percentunit"),
               ("p50", 'workload_quantile:weft_request_duration_seconds:histogram_quantile'
                       '{quantile="0.5"}', "s"),
               ("p99", 'workload_quantile:weft_request_duration_seconds:histogram_quantile'
                       '{quantile="0.99"}', "s")],
              (8, 12, 12, 12), by=["namespace", "workload_kind", "workload"]),
    ]
    return dashboard("weft-mesh", "Weft / Mesh",
                     "The whole mesh at a glance: traffic, success, latency, mTLS and the "
                     "control plane.", panels)


def workload():
    inbound = f'weft_requests_total{{direction="inbound",namespace="$namespace"}}'
    outbound = f'weft_requests_total{{direction="outbound",namespace="$namespace"}}'
    buckets = ('weft_request_duration_seconds_bucket{direction="inbound",'
               'namespace="$namespace"}')
    sel = 'namespace="$namespace",workload="$workload"'

    def quantile(q):
        return (f"histogram_quantile({q}, "
                + joined(f"rate({buckets}[{RATE}])", "le") + ")")

    panels = [
        stat("Requests/s", "Inbound requests per second, over 5 minutes.",
             f"sum(workload:weft_requests:rate5m{{{sel}}})", "reqps", (4, 5, 0, 0)),
        stat("Success rate", "Share of inbound requests answered without a 5xx, over 5 "
             "minutes.", f"min(workload:weft_requests_success:ratio_rate5m{{{sel}}})",
             "percentunit", (4, 5, 5, 0), thresholds=SUCCESS_STEPS, decimals=2),
        stat("p50", "Median inbound request duration, over 5 minutes.",
             'max(workload_quantile:weft_request_duration_seconds:histogram_quantile'
             f'{{{sel},quantile="0.5"}})', "s", (4, 5, 10, 0)),
        stat("p99", "99th percentile of the inbound request duration, over 5 minutes.",
             'max(workload_quantile:weft_request_duration_seconds:histogram_quantile'
             f'{{{sel},quantile="0.99"}})', "s", (4, 5, 15, 0)),
        stat("Pods", "The workload's pods with a proxy Prometheus scrapes.",
             f"count(namespace_pod:weft_workload:info{{{sel}}})", "short", (4, 4, 20, 0)),
        row("Inbound: what it serves", 4),
        timeseries("Inbound requests/s by status", "Requests the workload's proxies received, "
                   "by the status they answered with (502 and 504: the proxy could not reach "
                   "or hear back from the app in time).",
                   [target(joined(f"rate({inbound}[{RATE}])", "status_code"),
                           "{{status_code}}")], "reqps", (8, 6, 0, 5), stack=True),
        timeseries("Error budget burn rate", "How fast the workload spends the error budget of "
                   "its 99.9 % success objective: its 5xx share over 5 minutes and over an hour, "
                   "divided by the 0.1 % allowed. 1 spends a 30-day budget in 30 days; above "
                   "14.4 on both, WeftWorkloadErrorBudgetBurn fires.",
                   [target(f"max(workload:weft_requests_errors:ratio_rate5m{{{sel}}}) "
                           "/ (1 - 0.999)", "5m"),
                    target(f"max(workload:weft_requests_errors:ratio_rate1h{{{sel}}}) "
                           "/ (1 - 0.999)", "1h")], "none", (8, 6, 6, 5), fill=0),
        timeseries("Inbound latency", "Quantiles of the inbound request duration, from "
                   "arrival at the proxy to the end of the response body.",
                   [target(quantile(0.5), "p50"), target(quantile(0.95), "p95"),
                    target(quantile(0.99), "p99")], "s", (8, 6, 12, 5), fill=0),
        timeseries("Inbound requests/s by client identity", "Who calls the workload: the "
                   "SPIFFE ID each request's mTLS peer presented (empty: plaintext from an "
                   "unmeshed client).",
                   [target(joined(f"rate({inbound}[{RATE}])", "client_id, tls"),
                           "{{client_id}} tls={{tls}}")], "reqps", (8, 6, 18, 5)),
        row("Outbound: what it calls", 13),
        timeseries("Outbound requests/s by destination", "Requests the workload sent, by the "
                   "backend Service its proxy chose and the status it got (no destination: "
                   "answered by the proxy itself, such as an injected fault).",
                   [target(joined(f"rate({outbound}[{RATE}])", "dst_service, status_code"),
                           "{{dst_service}} {{status_code}}")], "reqps", (8, 12, 0, 14)),
        timeseries("Outbound success rate by route", "Share of the workload's outbound "
                   "requests answered without a 5xx, per route rule (injected aborts count as "
                   "failures here, where the caller sees them).",
                   [target(joined(f'rate(weft_requests_total{{direction="outbound",'
                                  f'namespace="$namespace",status_code!~"5.."}}[{RATE}])',
                                  "route")
                           + "\n/\n" + joined(f"rate({outbound}[{RATE}])", "route"),
                           "{{route}}")], "percentunit", (8, 12, 12, 14), fill=0, max_=1),
        row("Connections", 22),
        timeseries("TCP connections opened/s", "Connections the workload's proxies accepted "
                   "(inbound) and the app opened through them (outbound).",
                   [target(joined(f'rate(weft_tcp_connections_opened_total'
                                  f'{{namespace="$namespace"}}[{RATE}])', "direction"),
                           "{{direction}}")], "cps", (8, 12, 0, 23)),
        timeseries("Bytes/s", "Bytes the workload's proxies carried, by direction and flow "
                   "(to_server: from the client; to_client: the answers).",
                   [target(joined(f'rate(weft_tcp_bytes_total{{namespace="$namespace"}}'
                                  f'[{RATE}])', "direction, flow"),
                           "{{direction}} {{flow}}")], "Bps", (8, 12, 12, 23)),
    ]
    return dashboard(
        "weft-workload", "Weft / Workload",
        "One workload (a Deployment, StatefulSet, ... or a bare pod, as its proxies' "
        "weft_proxy_info names it): what it serves, what it calls, its connections.",
        panels,
        [query_var("namespace", "Namespace",
                   "label_values(namespace_pod:weft_workload:info, namespace)", "demo"),
         query_var("workload", "Workload",
                   'label_values(namespace_pod:weft_workload:info{namespace="$namespace"}, '
                   'workload)', "api-v1")])


def service():
    sel = 'direction="outbound",dst_service="$service"'
    reqs = f"weft_requests_total{{{sel}}}"
    buckets = f"weft_request_duration_seconds_bucket{{{sel}}}"

    def q(v):
        return f"histogram_quantile({v}, sum by (le) (rate({buckets}[{RATE}])))"

    callers = ("sum by (namespace, workload) (\n"
               f"  rate({reqs}[{RATE}])\n"
               "  * on (namespace, pod) group_left (workload) namespace_pod:weft_workload:info\n)")
    panels = [
        stat("Requests/s", "Requests per second every client's proxy sent to the Service.",
             f"sum(rate({reqs}[{RATE}]))", "reqps", (4, 6, 0, 0)),
        stat("Success rate", "Share of them answered without a 5xx, as the clients saw it.",
             f'sum(rate(weft_requests_total{{{sel},status_code!~"5.."}}[{RATE}]))\n'
             f"/ sum(rate({reqs}[{RATE}]))", "percentunit", (4, 6, 6, 0),
             thresholds=SUCCESS_STEPS, decimals=2),
        stat("p99", "99th percentile of the request duration, as the clients' proxies "
             "measured it (connection and mTLS included).", q(0.99), "s", (4, 6, 12, 0)),
        stat("Endpoints", "Endpoints (pod address and port) that answered in the window.",
             f"count(count by (dst_endpoint) (rate({reqs}[{RATE}]) > 0))", "short",
             (4, 6, 18, 0)),
        timeseries("Requests/s by status", "Requests to the Service by the status the clients "
                   "got.", [target(f"sum by (status_code) (rate({reqs}[{RATE}]))",
                                   "{{status_code}}")], "reqps", (8, 12, 0, 4), stack=True),
        timeseries("Latency", "Quantiles of the request duration seen by the clients' "
                   "proxies.", [target(q(0.5), "p50"), target(q(0.95), "p95"),
                               target(q(0.99), "p99")], "s", (8, 12, 12, 4), fill=0),
        timeseries("Requests/s by calling workload", "Who calls the Service: the clients' "
                   "workloads (joined from their proxies' weft_proxy_info).",
                   [target(callers, "{{namespace}}/{{workload}}")], "reqps", (8, 12, 0, 12)),
        timeseries("Requests/s by endpoint", "How the clients' proxies balanced the requests "
                   "over the Service's endpoints (power of two choices over peak-EWMA "
                   "latency).",
                   [target(f"sum by (dst_endpoint) (rate({reqs}[{RATE}]))",
                           "{{dst_endpoint}}")], "reqps", (8, 12, 12, 12)),
    ]
    return dashboard(
        "weft-service", "Weft / Service",
        "One backend Service as its clients' proxies saw it: traffic, success, latency, "
        "callers and endpoints.", panels,
        [query_var("service", "Service",
                   'label_values(weft_requests_total{direction="outbound"}, dst_service)',
                   "demo/backend:80")])


def route():
    sel = 'direction="outbound",route="$route"'
    reqs = f"weft_requests_total{{{sel}}}"
    ok = f'weft_requests_total{{{sel},status_code!~"5.."}}'
    buckets = f"weft_request_duration_seconds_bucket{{{sel}}}"
    share = (f"sum by (dst_service) (rate({reqs}[{RATE}]))\n"
             f"/ ignoring (dst_service) group_left\nsum(rate({reqs}[{RATE}]))")
    panels = [
        stat("Requests/s", "Requests per second the route rule carried, over all its clients, "
             "over 5 minutes (route:weft_requests:rate5m; each try of a retried request "
             "counts).", 'sum(route:weft_requests:rate5m{route="$route"})', "reqps",
             (4, 6, 0, 0)),
        stat("Success rate", "Share of the rule's requests answered without a 5xx, over 5 "
             "minutes (route:weft_requests_success:ratio_rate5m).",
             'min(route:weft_requests_success:ratio_rate5m{route="$route"})', "percentunit",
             (4, 6, 6, 0), thresholds=SUCCESS_STEPS, decimals=2),
        stat("p99", "99th percentile of the rule's request duration over 5 minutes.",
             'max(route_quantile:weft_request_duration_seconds:histogram_quantile'
             '{route="$route",quantile="0.99"})', "s", (4, 6, 12, 0)),
        bargauge("Split now", "Each backend Service's share of the rule's requests over the "
                 "last 5 minutes (route_backend:weft_requests:rate5m): the canary's weight as "
                 "served.", 'route_backend:weft_requests:rate5m{route="$route"}\n'
                 '/ ignoring (dst_service) group_left\nroute:weft_requests:rate5m'
                 '{route="$route"}', "{{dst_service}}", "percentunit", (4, 6, 18, 0), max_=1),
        timeseries("Share by backend", "Each backend Service's share of the rule's requests "
                   "(no backend: answered by the route itself, such as a redirect). Stacked: "
                   "the canary's split over time.",
                   [target(share, "{{dst_service}}")], "percentunit", (9, 12, 0, 4),
                   stack=True, fill=40, max_=1),
        timeseries("Success rate by backend", "Share of each backend's requests answered "
                   "without a 5xx: the canary against the stable version.",
                   [target(f"sum by (dst_service) (rate({ok}[{RATE}]))\n"
                           f"/ sum by (dst_service) (rate({reqs}[{RATE}]))",
                           "{{dst_service}}")], "percentunit", (9, 12, 12, 4), fill=0,
                   max_=1),
        timeseries("p99 latency by backend", "99th percentile of each backend's request "
                   "duration as the clients' proxies measured it.",
                   [target(f"histogram_quantile(0.99, sum by (dst_service, le) "
                           f"(rate({buckets}[{RATE}])))", "{{dst_service}}")], "s",
                   (8, 12, 0, 13), fill=0),
        timeseries("Requests/s by backend and status", "The rule's requests per backend and "
                   "status.",
                   [target(f"sum by (dst_service, status_code) (rate({reqs}[{RATE}]))",
                           "{{dst_service}} {{status_code}}")], "reqps", (8, 12, 12, 13)),
        timeseries("Faults injected/s (every route)", "Delays and aborts the clients' proxies "
                   "injected on purpose (HTTPFault), by route rule and kind; an injected "
                   "answer carries the weft-fault header.",
                   [target(f"sum by (route, kind) (rate(weft_faults_injected_total[{RATE}]))",
                           "{{route}} {{kind}}")], "reqps", (8, 12, 0, 21)),
        timeseries("Retries/s (every route)", "Retries the clients' proxies made, by route rule "
                   "and the reason (the status or failure the rule's retry.codes matched); "
                   "each try is also a request above. Past the retry budget (20 % of a "
                   "route's requests plus 10/s) a retry is skipped and counted in "
                   "weft_retry_budget_exhausted_total.",
                   [target(f"sum by (route, reason) (rate(weft_retries_total[{RATE}]))",
                           "{{route}} {{reason}}")], "reqps", (8, 12, 12, 21)),
    ]
    return dashboard(
        "weft-route", "Weft / Route",
        "One route rule (httproute/<namespace>/<name>/rule/<index> or trafficsplit/...): the "
        "canary view, each backend's share, success and latency.", panels,
        [query_var("route", "Route rule", "label_values(route:weft_requests:rate5m, route)",
                   "httproute/demo/api-canary/rule/1")])


def edges():
    inbound = 'weft_requests_total{direction="inbound"}'
    panels = [
        timeseries("Requests/s by edge", "Requests between identities, as the serving proxy "
                   "saw them: the client's SPIFFE ID (checked in the mTLS handshake; empty: "
                   "plaintext) to the server's.",
                   [target(f"sum by (client_id, server_id) (rate({inbound}[{RATE}]))",
                           "{{client_id}} → {{server_id}}")], "reqps", (9, 24, 0, 0),
                   calcs=["mean", "lastNotNull"]),
        table("Edges", "Every client identity to server identity pair, now (over the rate interval): "
              "requests per second, the share answered without a 5xx, and the share over "
              "mTLS.",
              [("Requests/s", f"sum by (client_id, server_id) (rate({inbound}[{RATE}]))", "reqps"),
               ("Success", 'sum by (client_id, server_id) (rate(weft_requests_total{direction='
                           '"inbound",status_code!~"5.."}['
                           f'{RATE}]))\n/ sum by (client_id, server_id) '
                           f'(rate({inbound}[{RATE}]))', "percentunit"),
               ("mTLS", 'sum by (client_id, server_id) (rate(weft_requests_total{direction='
                        '"inbound",tls="true"}['
                        f'{RATE}]))\n/ sum by (client_id, server_id) '
                        f'(rate({inbound}[{RATE}]))', "percentunit")],
              (9, 24, 0, 9), by=["client_id", "server_id"]),
        timeseries("mTLS share by workload", "Share of each workload's inbound requests that "
                   "came over mutual TLS.",
                   [target("sum by (namespace, workload) (\n"
                           f'  rate(weft_requests_total{{direction="inbound",tls="true"}}[{RATE}])\n'
                           "  * on (namespace, pod) group_left (workload) "
                           "namespace_pod:weft_workload:info\n)\n/\nsum by (namespace, workload) (\n"
                           f"  rate({inbound}[{RATE}])\n"
                           "  * on (namespace, pod) group_left (workload) "
                           "namespace_pod:weft_workload:info\n)",
                           "{{namespace}}/{{workload}}")], "percentunit", (8, 12, 0, 18),
                   fill=0, max_=1),
        timeseries("TLS handshakes/s by result", "The proxies' mTLS handshakes by direction "
                   "and result (untrusted: a peer whose certificate does not chain to the "
                   "trust anchors or is not the identity expected).",
                   [target(f"sum by (direction, result) (rate(weft_tls_handshakes_total[{RATE}]))",
                           "{{direction}} {{result}}")], "ops", (8, 12, 12, 18)),
    ]
    return dashboard("weft-edges", "Weft / Edges and identities",
                     "Who talks to whom, by SPIFFE identity, and how much of it is mutual TLS.",
                     panels)


def proxy():
    ns = 'namespace="$namespace"'
    proxies = f"weft_build_info{{{ns}}}"
    panels = [
        bargauge("Certificate time left", "Time until each proxy's workload certificate "
                 "expires; proxies renew at 70 % of its life, so one under 30 % of its "
                 "lifetime has missed a renewal (WeftProxyCertificateNotRenewed).",
                 f"min by (pod) (weft_identity_cert_expiry_timestamp_seconds{{{ns}}}) - time()",
                 "{{pod}}", "s", (8, 8, 0, 0)),
        bargauge("Redirect verified", "1 when the proxy last proved that the pod's iptables "
                 "rules send outbound traffic through it; 0: not proved "
                 "(WeftRedirectUnverified). Absent where the check is off.",
                 f"min by (pod) (weft_redirect_verified{{{ns}}})", "{{pod}}", "bool",
                 (8, 8, 8, 0), max_=1),
        table("Proxy versions", "Proxies by the version they run (weft_build_info).",
              [("Proxies", f"count by (version) ({proxies})", "short")], (8, 8, 16, 0),
              by=["version"]),
        timeseries("Config updates/s by kind and result", "Updates from the control plane "
                   "each proxy applied, refused (the last good state stays: "
                   "WeftProxyConfigRefused) or ignored (a kind it does not know: an older "
                   "proxy).",
                   [target(f"sum by (kind, result) (rate(weft_config_updates_total{{{ns}}}"
                           f"[{RATE}]))", "{{kind}} {{result}}")], "ops", (8, 12, 0, 8)),
        timeseries("Redirect checks/s by result", "The redirect self-check's results (refused: "
                   "rules missing; timeout: a rule dropping loopback traffic; wrong_answer: "
                   "something else on the check port).",
                   [target(f"sum by (family, result) (rate(weft_redirect_checks_total{{{ns}}}"
                           f"[{RATE}]))", "{{family}} {{result}}")], "ops", (8, 12, 12, 8)),
        timeseries("Trace spans/s by result", "What became of sampled requests' spans: "
                   "exported, or dropped (queue_full, export_failed, rejected). Absent without "
                   "a collector (WEFT_TRACE_COLLECTOR).",
                   [target(f"sum by (result) (rate(weft_trace_spans_total{{{ns}}}[{RATE}]))",
                           "{{result}}")], "ops", (8, 12, 0, 16)),
        timeseries("Open connections", "Connections each proxy holds open (opened minus "
                   "closed), by direction.",
                   [target(f"sum by (pod, direction) (weft_tcp_connections_opened_total{{{ns}}}"
                           f" - weft_tcp_connections_closed_total{{{ns}}})",
                           "{{pod}} {{direction}}")], "short", (8, 12, 12, 16)),
        timeseries("Memory", "Each proxy's resident memory (its process metrics, joined to "
                   "weft_build_info so that only proxies count).",
                   [target(f"process_resident_memory_bytes\n* on (namespace, pod) group_left "
                           f"{proxies}", "{{pod}}")], "bytes", (8, 12, 0, 24), fill=0),
        timeseries("CPU", "Each proxy's CPU time per second.",
                   [target(f"rate(process_cpu_seconds_total[{RATE}])\n"
                           f"* on (namespace, pod) group_left {proxies}", "{{pod}}")],
                   "percentunit", (8, 12, 12, 24), fill=0),
        timeseries("Mirrored requests/s by result", "Copies of requests sent to a mirror "
                   "backend (RequestMirror), by result; a failing mirror never touches the "
                   "client.",
                   [target(f"sum by (result) (rate(weft_mirror_requests_total{{{ns}}}"
                           f"[{RATE}]))", "{{result}}")], "reqps", (8, 24, 0, 32)),
    ]
    return dashboard(
        "weft-proxy", "Weft / Proxy health",
        "The proxies of a namespace: certificates, redirection, config, tracing, "
        "connections, memory and CPU.", panels,
        [query_var("namespace", "Namespace", "label_values(weft_build_info, namespace)",
                   "demo")])


def control_plane():
    cp = CONTROL_PLANE
    panels = [
        stat("Replicas up", "Control-plane targets up (job matching weft-control-plane).",
             f"sum(up{{{cp}}})", "short", (4, 4, 0, 0),
             thresholds=[{"color": RED, "value": None}, {"color": GREEN, "value": 1}]),
        stat("Issuer expires in", "Time until the issuer certificate the control plane signs "
             "with expires (WeftIssuerCertificateExpiring warns at 14 days).",
             "min(weft_identity_issuer_expiry_timestamp_seconds) - time()", "s", (4, 5, 4, 0),
             thresholds=[{"color": RED, "value": None},
                         {"color": ORANGE, "value": 2 * 86400},
                         {"color": GREEN, "value": 14 * 86400}]),
        stat("Trust anchor expires in", "Time until the first trust anchor of the control "
             "plane's anchors.pem expires (WeftTrustAnchorExpiring warns at 90 days).",
             "min(weft_identity_trust_anchor_expiry_timestamp_seconds) - time()", "s",
             (4, 5, 9, 0),
             thresholds=[{"color": RED, "value": None},
                         {"color": ORANGE, "value": 14 * 86400},
                         {"color": GREEN, "value": 90 * 86400}]),
        stat("Destination watches", "Open destination watch streams from the proxies "
             "(weft_discovery_subscribers).",
             "sum(weft_discovery_subscribers)", "short", (4, 5, 14, 0)),
        stat("Route watches", "Open route watch streams from the proxies "
             "(weft_routes_subscribers).",
             "sum(weft_routes_subscribers)", "short", (4, 5, 19, 0)),
        timeseries("Certificates issued/s and refusals", "Workload certificates signed, and "
                   "CSRs refused by reason (a token rejected, an identity that does not match "
                   "it, an unusable issuer).",
                   [target(f"sum(rate(weft_identity_certificates_issued_total[{RATE}]))",
                           "issued"),
                    target(f"sum by (reason) (rate(weft_identity_refusals_total[{RATE}]))",
                           "refused: {{reason}}")], "ops", (8, 12, 0, 4)),
        timeseries("Config snapshots/s by result", "Config states the source produced: applied, "
                   "or refused whole (local folder) with the last good state kept; and the "
                   "documents refused.",
                   [target(f"sum by (source, result) (rate(weft_config_snapshots_total[{RATE}]))",
                           "{{source}} {{result}}"),
                    target(f"sum by (source) (rate(weft_config_refused_documents_total[{RATE}]))",
                           "{{source}} documents refused")], "ops", (8, 12, 12, 4)),
        timeseries("Updates pushed/s", "Updates written to the proxies' watch streams, by "
                   "service and kind.",
                   [target(f"sum by (kind) (rate(weft_discovery_updates_pushed_total[{RATE}]))",
                           "discovery {{kind}}"),
                    target(f"sum by (kind) (rate(weft_routes_updates_pushed_total[{RATE}]))",
                           "routes {{kind}}")], "ops", (8, 12, 0, 12)),
        timeseries("Push latency p99", "From a change taking effect in the control plane to "
                   "its update leaving for a proxy, 99th percentile over the last hour.",
                   [target("histogram_quantile(0.99, sum by (le) "
                           "(increase(weft_discovery_push_latency_seconds_bucket[1h])))",
                           "discovery"),
                    target("histogram_quantile(0.99, sum by (le) "
                           "(increase(weft_routes_push_latency_seconds_bucket[1h])))",
                           "routes")], "s", (8, 12, 12, 12), fill=0),
        timeseries("Watched targets", "Distinct destinations and route targets the proxies "
                   "watch.",
                   [target("sum(weft_discovery_destinations)", "destinations"),
                    target("sum(weft_routes_targets)", "route targets")], "short",
                   (8, 8, 0, 20), fill=0),
        timeseries("Issuer and token file reloads/s", "Reloads of the issuer and tokens files "
                   "by result (refused: the file stays as it was, e.g. an issuer that does not "
                   "verify against anchors.pem).",
                   [target(f"sum by (file, result) (rate(weft_identity_file_reloads_total"
                           f"[{RATE}]))", "{{file}} {{result}}")], "ops", (8, 8, 8, 20)),
        timeseries("Memory", "Each control-plane replica's resident memory.",
                   [target(f"process_resident_memory_bytes{{{cp}}}", "{{pod}}")], "bytes",
                   (8, 8, 16, 20), fill=0),
    ]
    return dashboard("weft-control-plane", "Weft / Control plane",
                     "The control plane: replicas, the issuer, certificates, config, and what "
                     "it pushes to the proxies.", panels)


DASHBOARDS = {
    "weft-mesh.json": mesh,
    "weft-workload.json": workload,
    "weft-service.json": service,
    "weft-route.json": route,
    "weft-edges.json": edges,
    "weft-proxy.json": proxy,
    "weft-control-plane.json": control_plane,
}


def render(build):
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main():
    check = sys.argv[1:] == ["--check"]
    if sys.argv[1:] not in ([], ["--check"]):
        sys.exit("usage: scripts/dashboards.py [--check]")
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in DASHBOARDS)
    if extra:
        sys.exit(f"dashboards: {OUT.relative_to(ROOT)} holds JSON this script does not "
                 f"make: {', '.join(extra)} (add it to DASHBOARDS, or remove it)")
    if stale:
        sys.exit("dashboards: out of date with scripts/dashboards.py: " + ", ".join(stale)
                 + "; run scripts/dashboards.py and commit the result")
    if not check:
        print(f"dashboards: wrote {len(DASHBOARDS)} dashboards to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
