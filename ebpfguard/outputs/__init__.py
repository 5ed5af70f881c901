"""Where events and alerts go: JSON Lines sinks, the viewer socket, Prometheus metrics, and
the pipeline's own loss accounting."""
