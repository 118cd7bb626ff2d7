"""One module per runtime verb: each parses its flags and calls the runtime library."""
