"""What ``harness plugins`` shows: every plugin, its distribution and version, what it registers, and problems."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from harness.api.components import FAMILIES
from harness.api.host import HOOK_KINDS, PluginHost


def plugin_inventory(host: PluginHost | None = None) -> dict[str, Any]:
    host = host or PluginHost.load()
    components: dict[str, list[dict[str, Any]]] = {}
    for base in HOOK_KINDS.values():
        components[base.kind] = [
            {**component.describe(), "plugin": plugin, "options": _options(component)}
            for component, plugin in host.components(base.kind)
        ]
    return {
        "plugins": [p.to_json() for p in host.plugins],
        "components": components,
        "support": support_matrix(host),
        "problems": list(host.problems),
    }


def support_matrix(host: PluginHost) -> list[dict[str, Any]]:
    """Every strategy × task × model family: whether a cell can run, else the reason it is skipped when planned
    (the same test :func:`harness.planning.plan.plan` applies)."""
    rows = []
    for strategy, _ in host.components("strategy"):
        for task, _ in host.components("task"):
            for family in FAMILIES:
                if family not in task.families:
                    reason = f"task {task.name!r} does not support {family} models"
                else:
                    reason = strategy.supports(task, family)
                rows.append(
                    {"strategy": strategy.name, "task": task.name, "family": family, "supported": reason is None,
                     "reason": reason}
                )  # fmt: skip
    return rows


#: How the support matrix names families.
FAMILY_SHORT = {"encoder": "enc", "decoder": "dec", "encoder-decoder": "e-d"}


def render_support(rows: list[dict[str, Any]]) -> str:
    """The support matrix: rows are strategies, columns tasks; each cell lists the families a cell can run on
    (enc, dec, e-d) and, for those it cannot, ``-N`` where N numbers the reason printed below the table."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    cells = {(r["strategy"], r["task"], r["family"]): r for r in rows}
    reasons: dict[str, int] = {}
    table = []
    for strategy in strategies:
        line = [strategy]
        for task in tasks:
            marks = []
            for family in FAMILIES:
                row = cells[(strategy, task, family)]
                marks.append(FAMILY_SHORT[family] if row["supported"] else f"-{reasons.setdefault(row['reason'], len(reasons) + 1)}")
            line.append(" ".join(marks))
        table.append(line)
    out = [tabulate(table, headers=["strategy", *tasks], tablefmt="simple")]
    out.extend(f"  -{n}: {reason}" for reason, n in reasons.items())
    return "\n".join(out)


def _options(component: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": o.name,
            "kind": o.kind,
            "default": None if o.required else o.default,
            "required": o.required,
            "help": o.help,
            **({"choices": list(o.choices)} if o.choices else {}),
        }
        for o in component.options
    ]


def render_inventory(inventory: dict[str, Any]) -> str:
    rows = []
    for plugin in inventory["plugins"]:
        registered = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in plugin["components"].items())
        rows.append(
            [
                plugin["name"],
                plugin["distribution"] or "-",
                plugin["version"] or "-",
                f"FAILED: {plugin['error']}" if plugin["error"] else registered or "-",
            ]
        )
    out = [tabulate(rows, headers=["plugin", "distribution", "version", "registers"], tablefmt="simple")]
    for kind, items in inventory["components"].items():
        if not items:
            continue
        out.append("")
        out.append(f"{kind}s:" if not kind.endswith("y") else f"{kind[:-1]}ies:")
        for item in items:
            extra = f" [{', '.join(item['families'])}]" if "families" in item else ""
            out.append(f"  {item['name']:<16} {item['description']}{extra}  (from {item['plugin']})")
    if inventory.get("support"):
        out.append("")
        out.append("support matrix (the model families each strategy runs on per task; -N: skipped when planned, reason N below):")
        out.append(render_support(inventory["support"]))
    if inventory["problems"]:
        out.append("")
        out.append("problems:")
        out.extend(f"  {p}" for p in inventory["problems"])
    return "\n".join(out)
