"""The classic Dockerfile builder behind ``POST /build``: parser, shell lexer, build engine."""
