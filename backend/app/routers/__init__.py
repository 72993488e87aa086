"""HTTP routes: thin, typed, and only ever calling services."""
