"""Registry access (OCI distribution spec): ``client`` (HTTP, errors), ``auth`` (credentials,
challenges, basic and bearer tokens)."""
