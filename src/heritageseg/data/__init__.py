"""Data layer: reading, generating, splitting and caching ARTeFACT records."""
