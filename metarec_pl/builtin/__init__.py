"""The built-in plugins: ordinary plugins, registered through the same hooks as third-party ones."""
