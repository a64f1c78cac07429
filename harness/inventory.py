"""What ``harness plugins`` shows: every plugin, its distribution and version, what it registers, and problems."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from .host import HOOK_KINDS, PluginHost


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
        "problems": list(host.problems),
    }


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
    if inventory["problems"]:
        out.append("")
        out.append("problems:")
        out.extend(f"  {p}" for p in inventory["problems"])
    return "\n".join(out)
