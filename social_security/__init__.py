"""Social security: Medical-insurance enrolment, claims and settlement; social-security lookups."""
