"""One module per CLI command: each holds the Typer function that parses options and calls the library."""
