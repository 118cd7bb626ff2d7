"""skiffd's image service: images kept in containerd's image store (namespace ``skiff``)."""
