"""The shopping-cart sample: an event-sourced cart on the Larder Python SDK."""
