"""logexport."""
