"""The bookshelf app: `gunicorn 'bookshelf.web:make_app()'`."""

import gettext
import os
from pathlib import Path

from flask import Flask, jsonify
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text

# Compiled from translations/fr/LC_MESSAGES/messages.po by the deploy's build step: without it the
# module does not import (FileNotFoundError), and the release never goes live.
french = gettext.translation("messages", Path(__file__).parent / "translations", languages=["fr"])

db = SQLAlchemy()


class Book(db.Model):
    __tablename__ = "books"
    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(200), nullable=False)


def make_app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ["SECRET_KEY"]
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    db.init_app(app)
    Migrate(app, db)

    @app.after_request
    def name_the_release(response):
        # The deploy gives each release's id as APP_RELEASE; its health gate reads it back here.
        response.headers["X-Bookshelf-Release"] = os.environ.get("APP_RELEASE", "")
        return response

    @app.get("/")
    def home():
        return french.gettext("Welcome to the bookshelf") + "\n"

    @app.get("/healthz")
    def healthz():
        db.session.execute(text("SELECT 1"))
        return "ok\n"

    @app.get("/books")
    def books():
        return jsonify(count=db.session.query(Book).count())

    return app
