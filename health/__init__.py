"""Health record store: FHIR R4 electronic health record store."""
