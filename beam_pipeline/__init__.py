"""The Beam side of the reviews job: options, sources and sinks, the graph, and ``run(argv)``."""
