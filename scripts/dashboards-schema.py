#!/usr/bin/env python3
"""Checks every dashboard of helm/weft/dashboards/ against Grafana's own schema types.

    scripts/dashboards-schema.py NODE_TOOLS_DIR

NODE_TOOLS_DIR is what scripts/node-tools.sh prints: a folder whose node_modules holds the
pinned @grafana/schema (the TypeScript types Grafana generates from its dashboard schema, at
the Grafana version the dashboards are written for) and TypeScript. This writes a TypeScript
file that types each dashboard JSON as the schema's `Dashboard`, and each panel as the
schema's panel of its type (`timeseries`, `stat`, `table`, `bargauge`, with their `Options`
and `FieldConfig`), and runs `tsc --noEmit --strict`: a field the schema does not know (object
literals allow no excess property), a wrong type or a missing required field is an error,
named by dashboard and panel. A panel of any other type (the deprecated Angular `graph`,
`singlestat`, ...) is refused before that.

Why @grafana/schema and not the Grafana foundation SDK: the SDK builds dashboards in code
(its Go module is served here, but it would check only what is built with it); the schema
package is the types Grafana itself generates, published for every Grafana release, so one
pinned version checks the JSON users import as it is.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "helm" / "weft" / "dashboards"
SCHEMA = "@grafana/schema"
PANELCFG = SCHEMA + "/dist/esm/raw/composable/{0}/panelcfg/x/{1}PanelCfg_types.gen"
# The panel types the dashboards may use, and the schema's module for each.
PANELS = {
    "timeseries": ("TimeSeries", "timeseries", True),
    "stat": ("Stat", "stat", False),
    "table": ("Table", "table", True),
    "bargauge": ("BarGauge", "bargauge", False),
}

PRELUDE = """// Written by scripts/dashboards-schema.py; checked with tsc --noEmit --strict.
import type {{ Dashboard, FieldConfigSource, Panel, RowPanel }} from '@grafana/schema';
{imports}

// JSON cannot name a TypeScript enum member: each string enum becomes the union of its values
// (numeric enums already take numbers).
type Json<T> = T extends string
  ? `${{T}}`
  : T extends Array<infer U>
    ? Array<Json<U>>
    : T extends object
      ? {{ [K in keyof T]: Json<T[K]> }}
      : T;

type Defaults = FieldConfigSource['defaults'];
// A panel of one type: the schema's Panel with that type's options and custom field config.
type Typed<O, F> = Json<Omit<Panel, 'options' | 'fieldConfig'>> & {{
  options: Json<O>;
  fieldConfig: Json<Omit<FieldConfigSource, 'defaults'>> & {{
    defaults: Json<Omit<Defaults, 'custom'>> & {{ custom?: Json<F> }};
  }};
}};
type Row = Json<Omit<RowPanel, 'panels'>> & {{ panels: unknown[] }};
"""


def const_name(file, suffix):
    return re.sub(r"[^A-Za-z0-9]", "_", file.removesuffix(".json")) + suffix


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: scripts/dashboards-schema.py NODE_TOOLS_DIR (scripts/node-tools.sh)")
    tools = Path(sys.argv[1])
    tsc = tools / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file() or not (tools / "node_modules" / SCHEMA).is_dir():
        sys.exit(f"dashboards-schema: {tools} holds no TypeScript or {SCHEMA}; run "
                 "scripts/node-tools.sh")
    files = sorted(DASHBOARDS.glob("*.json"))
    if not files:
        sys.exit(f"dashboards-schema: no dashboards in {DASHBOARDS}")
    imports = "\n".join(
        f"import type * as {name} from '{PANELCFG.format(folder, name)}';"
        for name, folder, _ in PANELS.values())
    out = [PRELUDE.format(imports=imports)]
    where = {}  # const name -> what it is, for messages
    problems = []
    for path in files:
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            problems.append(f"{path.name}: not JSON: {e}")
            continue
        name = const_name(path.name, "")
        where[name] = path.name
        out.append(f"// {path.name}\nexport const {name}: Json<Dashboard> = "
                   f"{json.dumps(d, indent=2, ensure_ascii=False)};\n")
        panels = list(d.get("panels", []))
        for p in list(panels):
            panels.extend(p.get("panels", []))
        for p in panels:
            kind, pid, title = p.get("type"), p.get("id"), p.get("title", "")
            const = const_name(path.name, f"_panel_{pid}")
            where[const] = f"{path.name}, panel {pid} ({title})"
            if kind == "row":
                typ = "Row"
            elif kind in PANELS:
                schema, _, custom = PANELS[kind]
                typ = f"Typed<{schema}.Options, {schema + '.FieldConfig' if custom else '{}'}>"
            else:
                problems.append(f"{where[const]}: panel type {kind!r} is not one of "
                                f"{', '.join(PANELS)} (deprecated Angular panels such as "
                                "graph and singlestat are not allowed)")
                continue
            out.append(f"export const {const}: {typ} = "
                       f"{json.dumps(p, indent=2, ensure_ascii=False)};\n")
    if problems:
        sys.exit("dashboards-schema: FAILED:\n  " + "\n  ".join(problems))
    with tempfile.TemporaryDirectory(prefix="check-", dir=tools) as tmp:
        source = Path(tmp) / "dashboards.ts"
        text = "\n".join(out)
        source.write_text(text)
        (Path(tmp) / "tsconfig.json").write_text(json.dumps({
            "compilerOptions": {"strict": True, "noEmit": True, "target": "es2022",
                                "module": "esnext", "moduleResolution": "bundler",
                                "skipLibCheck": True, "types": []},
            "files": ["dashboards.ts"]}))
        run = subprocess.run(["node", str(tsc), "-p", tmp, "--pretty", "false"],
                             capture_output=True, text=True, cwd=tmp)
        if run.returncode != 0:
            lines = text.splitlines()
            report = []
            for line in (run.stdout + run.stderr).splitlines():
                m = re.match(r"dashboards\.ts\((\d+),\d+\): (.*)", line)
                if not m:
                    report.append(line)
                    continue
                at = int(m.group(1)) - 1
                owner = "?"
                for i in range(at, -1, -1):
                    c = re.match(r"export const (\w+):", lines[i])
                    if c:
                        owner = where.get(c.group(1), c.group(1))
                        break
                report.append(f"{owner}: line {at + 1}: {m.group(2)}\n    {lines[at].strip()}")
            sys.exit("dashboards-schema: FAILED against " + schema_version(tools) + ":\n  "
                     + "\n  ".join(report))
    print(f"dashboards-schema: {len(files)} dashboards match {schema_version(tools)}")


def schema_version(tools):
    meta = json.loads((tools / "node_modules" / SCHEMA / "package.json").read_text())
    return f"{SCHEMA} {meta['version']}"


if __name__ == "__main__":
    main()
