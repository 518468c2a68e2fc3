"""Regenerate ``parameters.json`` from the official FHIR R4 SearchParameter definitions.

The definitions are the 1,375 SearchParameter resources of FHIR R4 (4.0.1), shipped in the
npm package ``hl7.fhir.r4.examples`` as ``package/Bundle-searchParams.json``::

    cd /tmp && npm pack hl7.fhir.r4.examples@4.0.1 \\
        && tar xzf hl7.fhir.r4.examples-4.0.1.tgz package/Bundle-searchParams.json
    .venv/bin/python -m health.search.extract_definitions /tmp/package/Bundle-searchParams.json

Only the resource types this store indexes are kept (every type Synthea produces plus the
administrative, financial and security types the platform uses), and of each definition only
what search needs: code, type, the part of the FHIRPath expression for that type, reference
targets and composite components. The summary elements of each type (FHIR R4
search.html#summary) come from ``fhir.resources``' models, whose fields carry the
specification's ``isSummary`` flag.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

from health.search.fhirpath import split_union

OUTPUT = Path(__file__).with_name("parameters.json")

# Every type Synthea's R4 bundles hold, the ones issue 5 lists, and a few close relatives a
# hospital system sends alongside them (CareTeam, Medication, MedicationAdministration, Device).
INDEXED_TYPES = (
    "AllergyIntolerance",
    "AuditEvent",
    "CarePlan",
    "CareTeam",
    "Claim",
    "ClaimResponse",
    "Condition",
    "Consent",
    "Coverage",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "ExplanationOfBenefit",
    "Goal",
    "Group",
    "ImagingStudy",
    "Immunization",
    "Location",
    "Medication",
    "MedicationAdministration",
    "MedicationRequest",
    "Observation",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
)

# Parameters of every resource (FHIR R4 search.html#all) that are evaluated from the resource.
# _id and _lastUpdated are answered from the resources table itself; _text, _content, _query,
# _list, _has and _filter are not index parameters.
COMMON_CODES = ("_id", "_lastUpdated", "_profile", "_security", "_source", "_tag")

# Types of search parameter this store implements; "special" (Location.near) needs geometry.
SUPPORTED_TYPES = {"string", "token", "date", "reference", "quantity", "number", "uri", "composite"}

# R4's DocumentReference-relationship composite declares its components with swapped types
# (its "code" component points at a reference definition): it cannot be honoured as written.
BROKEN = {"http://hl7.org/fhir/SearchParameter/DocumentReference-relationship"}


def for_type(expression: str, resource_type: str) -> str | None:
    """The alternatives of a multi-base expression that apply to ``resource_type``."""
    mine = [
        part
        for part in split_union(expression)
        if part.lstrip("(").startswith((resource_type + ".", resource_type + " "))
        or part.lstrip("(") == resource_type
    ]
    return " | ".join(mine) or None


def summary_elements(resource_type: str) -> list[str]:
    """Top-level elements flagged ``isSummary`` in the specification."""
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    model = getattr(module, resource_type)
    names = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("summary_element_property"):
            names.append(field.alias or name)
    return sorted({"id", "meta", "implicitRules", *names})


def choice_elements() -> list[str]:
    """Names of every choice element (``value`` of ``value[x]``) in the R4B models."""
    import pkgutil

    import fhir.resources.R4B as package
    from pydantic import BaseModel

    names: set[str] = set()
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith(("fhirtypes", "fhirprimitive", "fhirabstract", "fhirresource")):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for model in vars(module).values():
            if isinstance(model, type) and issubclass(model, BaseModel):
                for field in model.model_fields.values():
                    extra = field.json_schema_extra
                    choice = extra.get("one_of_many") if isinstance(extra, dict) else None
                    if isinstance(choice, str):
                        names.add(choice)
    return sorted(names)


def extract(bundle: dict[str, Any]) -> dict[str, Any]:
    definitions = [entry["resource"] for entry in bundle["entry"]]
    by_url = {d["url"]: d for d in definitions}
    all_types = sorted(
        {base for d in definitions for base in d["base"]} - {"Resource", "DomainResource"}
        | {"Binary"}
    )
    common = [
        {"name": d["code"], "type": d["type"], "expression": d["expression"], "url": d["url"]}
        for d in definitions
        if d["base"] == ["Resource"] and d["code"] in COMMON_CODES
    ]
    types: dict[str, Any] = {}
    for resource_type in INDEXED_TYPES:
        params = []
        for d in definitions:
            if (
                resource_type not in d["base"]
                or d["type"] not in SUPPORTED_TYPES
                or d["url"] in BROKEN
                or not d.get("expression")
            ):
                continue
            expression = for_type(d["expression"], resource_type)
            if expression is None:
                continue
            param: dict[str, Any] = {
                "name": d["code"],
                "type": d["type"],
                "expression": expression,
                "url": d["url"],
            }
            if d["type"] == "reference":
                param["target"] = sorted(d.get("target", []))
            if d["type"] == "composite":
                param["components"] = [
                    {"type": by_url[c["definition"]]["type"], "expression": c["expression"]}
                    for c in d["component"]
                ]
            params.append(param)
        types[resource_type] = {
            "params": sorted(params, key=lambda p: p["name"]),
            "summary": summary_elements(resource_type),
        }
    return {
        "fhirVersion": "4.0.1",
        "source": "npm hl7.fhir.r4.examples@4.0.1 package/Bundle-searchParams.json",
        "resourceTypes": all_types,
        "choiceElements": choice_elements(),
        "common": sorted(common, key=lambda p: p["name"]),
        "types": types,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="path to package/Bundle-searchParams.json")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args()
    data = extract(json.loads(args.bundle.read_text(encoding="utf-8")))
    args.out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    count = sum(len(t["params"]) for t in data["types"].values())
    print(f"wrote {args.out}: {count} parameters on {len(data['types'])} types")


if __name__ == "__main__":
    main()
