"""FHIR R4 wire format: validation, OperationOutcome, references, compartments, JSON Patch."""
