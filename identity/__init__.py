"""Identity: Citizens, the card PKI and card lifecycle, terminals and tokens."""
