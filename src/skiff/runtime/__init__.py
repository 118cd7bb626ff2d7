"""skiff-runc: an OCI runtime with runc's command line.

The runtime starts once per container operation, so it imports only the standard library and
keeps imports lazy: each verb lives in ``verbs/<verb>.py`` and is imported on demand.
"""
