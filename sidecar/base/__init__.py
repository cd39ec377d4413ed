"""What every package shares (pure): the exception family, the validation rules of every
value that comes from the catalog or the settings, and text made inert for logs and terminals.

The bottom layer: it imports nothing else from the package.
"""
