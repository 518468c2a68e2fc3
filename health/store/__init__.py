"""Storage of FHIR resources: every version kept, the current one at hand (FHIR R4 http.html)."""
