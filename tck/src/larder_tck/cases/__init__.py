"""The TCK's cases, one module per component type (importing a module registers its cases)."""
