#!/usr/bin/env python3
"""Draws each dashboard of helm/weft/dashboards/ as a PNG, from data a real Prometheus
gathered from the demo mesh (e2e/tests/dashboards.rs `preview_data` writes it), so that the
README shows what a user gets without a Grafana server.

    scripts/dashboards-preview.py DATA_JSON OUT_DIR    (the venv of scripts/py-tools.sh)

Panels are laid out by their gridPos on Grafana's 24-column grid, in a dark Grafana-like
style: time series (stacked where the panel stacks) with legends built from the targets'
legendFormat, stat values coloured by their thresholds, bar gauges, tables merged on their
labels as the panel's transformations do, and row headers; values in each panel's unit. This
is a picture of the dashboard for the docs, not a Grafana: fonts, spacing and the smaller
options differ.
"""

import io
import json
import math
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "helm" / "weft" / "dashboards"
WIDTH_PX = 1500
ROW_PX = 30  # Grafana's grid row height
TITLE_PX = 56
DPI = 100
BG = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
DIM = "#8e8e9e"
GRID = "#2c3235"
# Grafana's classic palette, in its order.
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
           "#705da0", "#37872d", "#fade2a", "#447ebc", "#c15c17", "#890f02", "#0a437c"]
COLORS = {"green": "#73bf69", "orange": "#ff9830", "red": "#f2495c", "yellow": "#fade2a",
          "blue": "#5794f2"}


# --- units ---------------------------------------------------------------------------------

def scaled(v, steps, base):
    for factor, suffix in reversed(steps):
        if abs(v) >= factor:
            return f"{v / factor:.3g}{suffix}"
    return f"{v:.3g}{steps[0][1] if base else ''}"


def fmt(v, unit):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if unit == "percentunit":
        return f"{v * 100:.3g}%"
    if unit == "percent":
        return f"{v:.3g}%"
    if unit == "s":
        a = abs(v)
        if a == 0:
            return "0 s"
        if a < 1e-3:
            return f"{v * 1e6:.3g} µs"
        if a < 1:
            return f"{v * 1e3:.3g} ms"
        if a < 120:
            return f"{v:.3g} s"
        if a < 7200:
            return f"{v / 60:.3g} min"
        if a < 2 * 86400:
            return f"{v / 3600:.3g} hour"
        if a < 2 * 365 * 86400:
            return f"{v / 86400:.3g} day"
        return f"{v / (365 * 86400):.3g} year"
    if unit in ("bytes",):
        return scaled(v, [(1, " B"), (1024, " KiB"), (1024 ** 2, " MiB"), (1024 ** 3, " GiB")],
                      True)
    if unit == "Bps":
        return scaled(v, [(1, " B/s"), (1e3, " kB/s"), (1e6, " MB/s"), (1e9, " GB/s")], True)
    if unit == "bool":
        return "true" if v else "false"
    suffix = {"reqps": " req/s", "ops": " ops/s", "cps": " c/s", "rps": " rd/s"}.get(unit, "")
    return scaled(v, [(1, ""), (1e3, "k"), (1e6, "M"), (1e9, "B")], False) + suffix


# --- data ----------------------------------------------------------------------------------

def legend(template, labels):
    if template in (None, "", "__auto"):
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") \
            or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def points(series):
    ts = [datetime.fromtimestamp(t, tz=timezone.utc) for t, _ in series["values"]]
    vs = [float("nan") if v is None else v for _, v in series["values"]]
    return ts, vs


def last(series):
    for _, v in reversed(series["values"]):
        if v is not None:
            return v
    return None


def threshold_color(panel, value, default):
    steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps")
    if not steps or value is None:
        return default
    color = steps[0]["color"]
    for s in steps[1:]:
        if s["value"] is not None and value >= s["value"]:
            color = s["color"]
    return COLORS.get(color, color)


# --- drawing -------------------------------------------------------------------------------

def frame(fig, grid, total_rows, title):
    h, w, x, y = grid["h"], grid["w"], grid["x"], grid["y"]
    fig_h = total_rows * ROW_PX + TITLE_PX
    left = x / 24
    width = w / 24
    top = 1 - (TITLE_PX + y * ROW_PX) / fig_h
    height = h * ROW_PX / fig_h
    pad_x, pad_y = 4 / WIDTH_PX, 4 / fig_h
    box = fig.add_axes([left + pad_x, top - height + pad_y, width - 2 * pad_x,
                        height - 2 * pad_y])
    box.set_xticks([])
    box.set_yticks([])
    box.set_facecolor(PANEL)
    for spine in box.spines.values():
        spine.set_color(BORDER)
    box.text(0.012, 1 - 14 / (h * ROW_PX), title, transform=box.transAxes, color=TEXT,
             fontsize=9.5, fontweight="bold", va="center", ha="left")
    inner = [left + pad_x + 8 / WIDTH_PX, top - height + pad_y + 6 / fig_h,
             width - 2 * pad_x - 16 / WIDTH_PX, height - 2 * pad_y - 34 / fig_h]
    return box, inner


def style(ax):
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(colors=DIM, labelsize=7, length=0)
    ax.grid(True, color=GRID, linewidth=0.6)


def draw_timeseries(fig, panel, data, inner):
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    custom = panel["fieldConfig"]["defaults"].get("custom", {})
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    fill = custom.get("fillOpacity", 0) / 100
    lines = []
    for t in panel["targets"]:
        for s in data.get(t["refId"], []):
            lines.append((legend(t.get("legendFormat"), s["labels"]), *points(s)))
    lines.sort(key=lambda l: l[0])
    table_legend = panel["options"].get("legend", {}).get("placement") == "right"
    fig_w, fig_h = fig.get_size_inches() * DPI
    px_x, px_y = inner[2] * fig_w, inner[3] * fig_h
    legend_w = 0.36 if table_legend else 0
    legend_rows = 0 if table_legend else math.ceil(len(lines) / 3)
    left = 62 / px_x
    bottom = (20 + 15 * legend_rows) / px_y
    ax = fig.add_axes([inner[0] + left * inner[2], inner[1] + bottom * inner[3],
                       inner[2] * (1 - left - legend_w - 0.01), inner[3] * (1 - bottom)])
    style(ax)
    if not lines:
        ax.text(0.5, 0.5, "No data", color=DIM, ha="center", va="center",
                transform=ax.transAxes)
        return
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(lines))]
    if stacked:
        base = None
        for (name, ts, vs), c in zip(lines, colors):
            vs = [0 if math.isnan(v) else v for v in vs]
            if base is None or len(base) != len(vs):
                base = [0] * len(vs)
            top = [b + v for b, v in zip(base, vs)]
            ax.fill_between(ts, base, top, color=c, alpha=max(fill, 0.35), linewidth=0)
            ax.plot(ts, top, color=c, linewidth=1, label=name)
            base = top
    else:
        for (name, ts, vs), c in zip(lines, colors):
            ax.plot(ts, vs, color=c, linewidth=1.2, label=name)
            if fill:
                ax.fill_between(ts, vs, color=c, alpha=fill, linewidth=0)
    defaults = panel["fieldConfig"]["defaults"]
    lo, hi = ax.get_ylim()
    ax.set_ylim(defaults.get("min", min(lo, 0) if lo >= 0 else lo), defaults.get("max", hi))
    ax.yaxis.set_major_locator(plt.MaxNLocator(4))
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: fmt(v, unit)))
    ax.xaxis.set_major_locator(plt.MaxNLocator(5))
    ax.margins(x=0)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    if table_legend:
        rows = [(n, vs) for n, _, vs in lines]
        ly = 0.97
        for (name, vs), c in zip(rows, colors):
            finite = [v for v in vs if not math.isnan(v)]
            mean = sum(finite) / len(finite) if finite else None
            fig.text(inner[0] + inner[2] * (1 - legend_w + 0.01),
                     inner[1] + inner[3] * ly, "▬ " + short(name, 34), color=c, fontsize=7,
                     va="top")
            fig.text(inner[0] + inner[2] * 0.995, inner[1] + inner[3] * ly,
                     f"mean {fmt(mean, unit)}", color=TEXT, fontsize=7, va="top", ha="right")
            ly -= 0.1
            if ly < 0.05:
                break
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(-left / (1 - left - 0.01), -18 / (px_y * (1 - bottom))),
                  ncol=3, frameon=False, fontsize=7, labelcolor=TEXT, handlelength=1.2,
                  columnspacing=1.2, borderaxespad=0, labelspacing=0.45)


def short(text, n):
    return text if len(text) <= n else text[: n - 1] + "…"


def draw_stat(fig, panel, data, inner):
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    values = [last(s) for t in panel["targets"] for s in data.get(t["refId"], [])]
    value = values[0] if values else None
    color = threshold_color(panel, value, "#73bf69")
    text = fmt(value, unit) if values else "No data"
    fig.text(inner[0] + inner[2] / 2, inner[1] + inner[3] * 0.45, text,
             color=color if values else DIM, fontsize=22, fontweight="bold", ha="center",
             va="center")


def draw_bargauge(fig, panel, data, inner):
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    mx = panel["fieldConfig"]["defaults"].get("max")
    bars = []
    for t in panel["targets"]:
        for s in data.get(t["refId"], []):
            bars.append((legend(t.get("legendFormat"), s["labels"]), last(s)))
    bars.sort()
    ax = fig.add_axes(inner)
    ax.set_facecolor(PANEL)
    ax.axis("off")
    if not bars:
        ax.text(0.5, 0.5, "No data", color=DIM, ha="center", va="center")
        return
    top = mx or max((v or 0) for _, v in bars) or 1
    n = len(bars)
    for i, (name, v) in enumerate(bars):
        y = 1 - (i + 1) / (n + 0.3)
        hgt = 0.55 / (n + 0.3)
        ax.text(0, y + hgt * 1.35, short(name, 40), color=TEXT, fontsize=7.5,
                transform=ax.transAxes, va="bottom")
        ax.add_patch(FancyBboxPatch((0, y), 0.78, hgt, boxstyle="square,pad=0",
                                    color="#22252b", transform=ax.transAxes))
        share = max(0.0, min(1.0, (v or 0) / top))
        ax.add_patch(FancyBboxPatch((0, y), 0.78 * share, hgt, boxstyle="square,pad=0",
                                    color=PALETTE[i % len(PALETTE)],
                                    transform=ax.transAxes))
        ax.text(0.8, y + hgt / 2, fmt(v, unit), color=TEXT, fontsize=8, va="center",
                transform=ax.transAxes)


def draw_table(fig, panel, data, inner):
    organize = next((t["options"] for t in panel.get("transformations", [])
                     if t["id"] == "organize"), {})
    keys = sorted(organize.get("indexByName", {}), key=organize["indexByName"].get) \
        if organize else []
    rename = organize.get("renameByName", {})
    units = {o["matcher"]["options"]: o["properties"][0]["value"]
             for o in panel["fieldConfig"].get("overrides", [])}
    columns = []
    rows = {}
    for t in panel["targets"]:
        header = rename.get(f"Value #{t['refId']}", t["refId"])
        columns.append(header)
        for s in data.get(t["refId"], []):
            row_key = tuple(s["labels"].get(k, "") for k in keys)
            rows.setdefault(row_key, {})[header] = last(s)
    ax = fig.add_axes(inner)
    ax.set_facecolor(PANEL)
    ax.axis("off")
    heads = keys + columns
    if not rows:
        ax.text(0.5, 0.5, "No data", color=DIM, ha="center", va="center")
        return
    widths = [2.2 if k in ("client_id", "server_id") else 1.0 for k in keys] + \
        [0.8] * len(columns)
    total = sum(widths)
    xs, acc = [], 0
    for w in widths:
        xs.append(acc / total)
        acc += w
    line = 1 / (len(rows) + 1.5)
    line = min(line, 0.14)
    for x, h in zip(xs, heads):
        ax.text(x, 1 - line * 0.6, h, color="#6e9fff", fontsize=7.5, fontweight="bold",
                va="center", transform=ax.transAxes)
    for i, (key, cells) in enumerate(sorted(rows.items())):
        y = 1 - line * (i + 1.6)
        if y < 0:
            break
        values = list(key) + [fmt(cells.get(c), units.get(c, "short")) for c in columns]
        for j, (x, v) in enumerate(zip(xs, values)):
            limit = int(widths[j] / total * 170)
            ax.text(x, y, short(str(v), max(limit, 8)), color=TEXT, fontsize=7,
                    va="center", transform=ax.transAxes)


def draw(dashboard, data, variables, out):
    panels = dashboard["panels"]
    total_rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig_h = total_rows * ROW_PX + TITLE_PX
    fig = plt.figure(figsize=(WIDTH_PX / DPI, fig_h / DPI), dpi=DPI, facecolor=BG)
    fig.text(8 / WIDTH_PX, 1 - 20 / fig_h, dashboard["title"], color=TEXT, fontsize=13,
             fontweight="bold", va="center")
    chips = "   ".join(f"{k} = {v}" for k, v in variables.items())
    fig.text(8 / WIDTH_PX, 1 - 42 / fig_h,
             ("data source = Prometheus   " + chips).strip(), color=DIM, fontsize=8,
             va="center")
    fig.text(1 - 8 / WIDTH_PX, 1 - 20 / fig_h, "preview from the demo mesh "
             "(scripts/dashboards-preview.py)", color=DIM, fontsize=7.5, ha="right",
             va="center")
    for p in panels:
        if p["type"] == "row":
            y = 1 - (TITLE_PX + p["gridPos"]["y"] * ROW_PX + ROW_PX / 2) / fig_h
            fig.text(8 / WIDTH_PX, y, "⌄ " + p["title"], color=TEXT, fontsize=10,
                     fontweight="bold", va="center")
            continue
        _, inner = frame(fig, p["gridPos"], total_rows, p["title"])
        pdata = data.get(str(p["id"]), {})
        {"timeseries": draw_timeseries, "stat": draw_stat, "bargauge": draw_bargauge,
         "table": draw_table}[p["type"]](fig, p, pdata, inner)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor=BG, dpi=DPI)
    plt.close(fig)
    # A palette of 96 colours keeps each picture small enough to commit.
    image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    image.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: scripts/dashboards-preview.py DATA_JSON OUT_DIR")
    data = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    plt.rcParams["font.family"] = "DejaVu Sans"
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        d = data["dashboards"].get(path.name)
        if d is None:
            sys.exit(f"dashboards-preview: {sys.argv[1]} has no data for {path.name}; run the "
                     "preview again (make dashboards-preview)")
        png = out / (path.stem + ".png")
        draw(dashboard, d["panels"], d["variables"], png)
        print(f"dashboards-preview: {png} ({png.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
