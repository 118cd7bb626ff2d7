"""skiffd's Engine API: the HTTP server, version negotiation and one router per resource."""
