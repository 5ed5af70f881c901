"""Response: acting on alerts at the sandbox boundary (docs/response.md)."""
