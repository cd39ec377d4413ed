"""Rendering (pure): desired state -> HAProxy configuration text, CS URL lists."""
