"""Business logic: plain classes that use repositories and the Kapso client."""
