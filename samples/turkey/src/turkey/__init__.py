"""The turkey-tracker sample: an event-sourced turkey that knows when it is done."""
