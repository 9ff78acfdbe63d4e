"""The HTML page: the latest notes and a form that posts to the API (static/notes.js)."""

from flask import Blueprint, render_template

from .extensions import db
from .models import Note

bp = Blueprint("views", __name__)


@bp.get("/")
def index():
    notes = db.session.scalars(db.select(Note).order_by(Note.id.desc()).limit(20)).all()
    return render_template("index.html", notes=notes)
