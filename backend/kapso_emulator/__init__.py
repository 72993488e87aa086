"""A local, stateful emulator of the parts of Kapso this service uses."""
