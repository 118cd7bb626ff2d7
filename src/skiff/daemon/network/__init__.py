"""skiffd networking (issue 8): network namespaces, the default bridge network, IPAM."""
