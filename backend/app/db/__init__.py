"""The PostgreSQL database: the connection pool, migrations and the embedded server."""
