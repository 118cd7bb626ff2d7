"""skiffd's containers: the record (``model``), names and lookup (``store``), the lifecycle over
containerd (``backend``), the containerd event loop with restart policies (``monitor``)."""
