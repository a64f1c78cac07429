"""Built-in plugins of harness, installed as the package ``harness_plugins``; they register through the ``harness`` entry-point group exactly like a third-party package."""
