"""Create the books table.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("books", sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("title", sa.String(length=200), nullable=False))


def downgrade():
    op.drop_table("books")
