"""Registered OAuth clients: hospital systems, card terminals, administrators."""
