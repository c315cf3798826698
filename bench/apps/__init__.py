"""Stand-alone apps the server benchmark runs as its ceilings."""
