"""Alembic environment of the audit service: it migrates only its own database."""

from sqlmodel import SQLModel

from services.kit.migrations import run_env

run_env(SQLModel.metadata)
