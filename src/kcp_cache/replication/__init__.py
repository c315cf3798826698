"""replication layer (see DESIGN.md)."""
