"""The built-in plugins: ordinary plugins, registered through the same hooks as third-party ones.

Each registers ``"module:Class"`` references, imported on first use, so listing the registry imports only pluggy.
"""
