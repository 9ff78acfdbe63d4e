"""The notes JSON API: create, list (paginated, cached in Redis), get, and share links (signed tokens)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.exceptions import HTTPException

from . import cache
from .extensions import db, limiter
from .models import Note, slugify

bp = Blueprint("api", __name__, url_prefix="/api")


class ValidationError(Exception):
    def __init__(self, errors: dict[str, str]):
        super().__init__("invalid input")
        self.errors = errors


@bp.errorhandler(ValidationError)
def validation_error(exc: ValidationError):
    return jsonify(error="validation failed", fields=exc.errors), 422


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    return jsonify(error=exc.name.lower(), message=exc.description), exc.code


def _int_arg(name: str, default: int, lowest: int, highest: int) -> int:
    raw = request.args.get(name, str(default))
    if not raw.isdigit() or not lowest <= int(raw) <= highest:
        raise ValidationError({name: f"must be a whole number from {lowest} to {highest}"})
    return int(raw)


def _validated_note(payload) -> dict:
    if not isinstance(payload, dict):
        raise ValidationError({"body": "send a JSON object with title and body"})
    errors = {}
    title, body = payload.get("title"), payload.get("body", "")
    if not isinstance(title, str) or not title.strip():
        errors["title"] = "required, a non-empty string"
    elif len(title) > 200:
        errors["title"] = "at most 200 characters"
    if not isinstance(body, str):
        errors["body"] = "must be a string"
    elif len(body) > 10_000:
        errors["body"] = "at most 10000 characters"
    unknown = set(payload) - {"title", "body"}
    if unknown:
        errors.update({name: "unknown field" for name in sorted(unknown)})
    if errors:
        raise ValidationError(errors)
    return {"title": title.strip(), "body": body}


@bp.post("/notes")
@limiter.limit(lambda: current_app.config["RATELIMIT_WRITE"])
def create_note():
    data = _validated_note(request.get_json(silent=True))
    note = Note(title=data["title"], body=data["body"], slug=slugify(data["title"]))
    db.session.add(note)
    db.session.commit()
    cache.invalidate_lists()
    return jsonify(note.to_dict()), 201, {"Location": f"/api/notes/{note.id}"}


@bp.get("/notes")
def list_notes():
    cfg = current_app.config
    page = _int_arg("page", 1, 1, 1_000_000)
    per_page = _int_arg("per_page", cfg["NOTES_PER_PAGE"], 1, cfg["NOTES_MAX_PER_PAGE"])
    cached = cache.get_list(page, per_page)
    if cached is not None:
        return jsonify(cached), 200, {"X-Cache": "hit"}
    result = db.paginate(db.select(Note).order_by(Note.id.desc()), page=page, per_page=per_page,
                         error_out=False)
    data = {"items": [n.to_dict() for n in result.items], "page": page, "per_page": per_page,
            "total": result.total, "pages": result.pages}
    cache.put_list(page, per_page, data)
    return jsonify(data), 200, {"X-Cache": "miss"}


@bp.get("/notes/<int:note_id>")
def get_note(note_id: int):
    note = db.session.get(Note, note_id)
    if note is None:
        return jsonify(error="not found", message=f"no note with id {note_id}"), 404
    return jsonify(note.to_dict())


def _share_signer() -> URLSafeSerializer:
    """Signs with SECRET_KEY and still accepts what SECRET_KEY_FALLBACKS signed (itsdangerous: the last key
    signs, every key verifies), as Flask's session does: links survive a rotation of the key while the old
    one is a fallback."""
    keys = [*current_app.config.get("SECRET_KEY_FALLBACKS", []), current_app.config["SECRET_KEY"]]
    return URLSafeSerializer(keys, salt="note-share")


@bp.post("/notes/<int:note_id>/share")
def share_note(note_id: int):
    if db.session.get(Note, note_id) is None:
        return jsonify(error="not found", message=f"no note with id {note_id}"), 404
    token = _share_signer().dumps({"note": note_id})
    return jsonify(token=token, url=f"/api/shared/{token}"), 201


@bp.get("/shared/<token>")
def shared_note(token: str):
    try:
        note_id = _share_signer().loads(token)["note"]
    except (BadSignature, KeyError, TypeError):
        return jsonify(error="not found", message="no such share link"), 404
    note = db.session.get(Note, note_id)
    if note is None:
        return jsonify(error="not found", message="no such share link"), 404
    return jsonify(note.to_dict())
