"""The Python peers the benchmark runs ngxws against (each a standalone script)."""
