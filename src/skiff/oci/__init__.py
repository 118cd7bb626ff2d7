"""OCI runtime-spec types shared by the runtime, the shim and the lifecycle manager."""
