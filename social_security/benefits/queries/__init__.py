"""The reads behind the citizen's lookups, one module per lookup: every function takes the
session and the citizen (the token's ``sub``) and never returns another citizen's rows.
Year boundaries and the helpers they share are in :mod:`.common`."""
