"""Add a slug to every note, filled in from the title for the notes that exist.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    # nullable first, fill existing rows, then enforce: works on a table that already has data
    op.add_column("notes", sa.Column("slug", sa.String(length=80), nullable=True))
    op.execute(
        "UPDATE notes SET slug = COALESCE(NULLIF(LEFT(TRIM(BOTH '-' FROM "
        "REGEXP_REPLACE(LOWER(title), '[^a-z0-9]+', '-', 'g')), 80), ''), 'note')"
    )
    op.alter_column("notes", "slug", nullable=False)
    op.create_index("ix_notes_slug", "notes", ["slug"])


def downgrade():
    op.drop_index("ix_notes_slug", table_name="notes")
    op.drop_column("notes", "slug")
