"""The OVH API simulator and the demo."""
