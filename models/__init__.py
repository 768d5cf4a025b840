"""Model families: each module declares its catalog entries (SPECS) and its adapter (FAMILY)."""
