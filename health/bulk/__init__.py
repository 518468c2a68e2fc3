"""FHIR Bulk Data Access v2 ``$export`` (hl7.org/fhir/uv/bulkdata/export.html)."""
