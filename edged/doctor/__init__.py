"""`edged doctor`: checks of what edged needs on the device, each with its fix."""
