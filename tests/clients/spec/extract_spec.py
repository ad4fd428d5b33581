"""Extract the method list of the Ethereum execution API specification into the compact
JSON that test_spec_methods.py reads (execution-apis-methods.json beside this file).

Run by hand when updating to a newer specification, with any Python that has PyYAML
(not a dependency of the project: only this JSON is read by the tests):

    git clone https://github.com/ethereum/execution-apis /tmp/execution-apis
    python tests/clients/spec/extract_spec.py /tmp/execution-apis

The specification is CC0-1.0 (public domain dedication). Only what the test needs is
kept: method names, parameter names/required/schema names, the result's JSON types and
hex pattern, and the first example's parameter values.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

GROUPS = ("src/eth", "src/debug", "src/txpool")
OUT = Path(__file__).with_name("execution-apis-methods.json")


def git(repo: Path, *args: str) -> str:
    return subprocess.check_output(["git", "-C", str(repo), *args], text=True)


def load(repo: Path, path: str):
    return yaml.safe_load(git(repo, "show", f"HEAD:{path}"))


def ref_name(schema: dict) -> str | None:
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else None


def json_types(schema, components: dict, depth: int = 0) -> set[str]:
    """The JSON types a value of ``schema`` may have ("any" when the schema does not say)."""
    if depth > 20 or not isinstance(schema, dict):
        return {"any"}
    if name := ref_name(schema):
        return json_types(components.get(name, {}), components, depth + 1)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            out: set[str] = set()
            for alt in schema[key]:
                out |= json_types(alt, components, depth + 1)
            return out
    if "allOf" in schema:
        return json_types(schema["allOf"][0], components, depth + 1)
    t = schema.get("type")
    if isinstance(t, list):
        return set(t)
    if t:
        return {"number" if t == "integer" else t}
    if "properties" in schema:
        return {"object"}
    return {"any"}


def string_pattern(schema, components: dict) -> str | None:
    """The hex pattern of a plain string result (``uint``, ``bytes32``...), else None."""
    while isinstance(schema, dict) and ref_name(schema):
        schema = components.get(ref_name(schema), {})
    if isinstance(schema, dict) and schema.get("type") == "string":
        return schema.get("pattern")
    return None


def main(repo: Path) -> None:
    components: dict = {}
    for path in git(repo, "ls-tree", "--name-only", "HEAD", "src/schemas/").split():
        if path.endswith(".yaml"):
            components.update(load(repo, path) or {})
    methods = []
    for group in GROUPS:
        for path in sorted(git(repo, "ls-tree", "--name-only", "HEAD", group + "/").split()):
            if not path.endswith(".yaml"):
                continue
            for m in load(repo, path) or []:
                result = (m.get("result") or {}).get("schema", {})
                example = (m.get("examples") or [{}])[0]
                methods.append({
                    "name": m["name"],
                    "file": path.removeprefix("src/"),
                    "params": [
                        {
                            "name": p["name"],
                            "required": bool(p.get("required")),
                            "schema": ref_name(p.get("schema", {})) or sorted(json_types(p.get("schema", {}), components)),
                        }
                        for p in m.get("params", [])
                    ],
                    "result": {
                        "schema": ref_name(result) or sorted(json_types(result, components)),
                        "types": sorted(json_types(result, components)),
                        "pattern": string_pattern(result, components),
                    },
                    "example_params": [p.get("value") for p in example.get("params", [])] if example else None,
                })
    doc = {
        "source": {
            "repository": "ethereum/execution-apis",
            "commit": git(repo, "rev-parse", "HEAD").strip(),
            "paths": [g + "/*.yaml" for g in GROUPS] + ["src/schemas/*.yaml"],
            "licence": "CC0-1.0",
            "extracted_by": "tests/clients/spec/extract_spec.py",
        },
        "methods": methods,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{len(methods)} methods -> {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
