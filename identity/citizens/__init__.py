"""The citizen registry: who holds a card, found by a pseudonymous id or a blind index."""
