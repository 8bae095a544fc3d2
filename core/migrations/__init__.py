"""Alembic migrations of the SQL mirror, shipped inside the package so installed processes can upgrade."""
