"""The notes feature through its JSON API and HTML page, against real PostgreSQL and Redis."""


def create(client, title="First note", body="hello", **extra):
    return client.post("/api/notes", json={"title": title, "body": body, **extra})


def test_create_get_and_list(client):
    res = create(client, "Hello, World!", "body text")
    assert res.status_code == 201
    note = res.get_json()
    assert note["slug"] == "hello-world"
    assert res.headers["Location"] == f"/api/notes/{note['id']}"
    assert client.get(f"/api/notes/{note['id']}").get_json()["title"] == "Hello, World!"
    listing = client.get("/api/notes").get_json()
    assert [n["id"] for n in listing["items"]] == [note["id"]]
    assert listing["total"] == 1


def test_pagination(client):
    for i in range(25):
        assert create(client, f"note {i}").status_code == 201
    first = client.get("/api/notes?per_page=10").get_json()
    third = client.get("/api/notes?per_page=10&page=3").get_json()
    assert (first["total"], first["pages"], len(first["items"])) == (25, 3, 10)
    assert first["items"][0]["title"] == "note 24"
    assert [n["title"] for n in third["items"]] == [f"note {i}" for i in range(4, -1, -1)]
    assert client.get("/api/notes?page=9").get_json()["items"] == []


def test_list_is_cached_in_redis_and_invalidated_on_create(client):
    create(client, "one")
    assert client.get("/api/notes").headers["X-Cache"] == "miss"
    cached = client.get("/api/notes")
    assert cached.headers["X-Cache"] == "hit" and cached.get_json()["total"] == 1
    create(client, "two")
    fresh = client.get("/api/notes")
    assert fresh.headers["X-Cache"] == "miss" and fresh.get_json()["total"] == 2


def test_validation_errors(client):
    cases = [
        ({"body": "no title"}, {"title"}),
        ({"title": "   "}, {"title"}),
        ({"title": "x" * 201}, {"title"}),
        ({"title": "ok", "body": 5}, {"body"}),
        ({"title": "ok", "color": "red"}, {"color"}),
    ]
    for payload, fields in cases:
        res = client.post("/api/notes", json=payload)
        assert res.status_code == 422, payload
        assert set(res.get_json()["fields"]) == fields
    assert client.post("/api/notes", data="not json", content_type="text/plain").status_code == 422
    assert client.post("/api/notes", json=["a list"]).status_code == 422


def test_bad_pagination_and_missing_note(client):
    assert client.get("/api/notes?page=0").status_code == 422
    assert client.get("/api/notes?per_page=1000").get_json()["fields"] == {
        "per_page": "must be a whole number from 1 to 100"}
    missing = client.get("/api/notes/999")
    assert missing.status_code == 404 and missing.get_json()["message"] == "no note with id 999"
    assert client.get("/api/nothing-here").status_code == 404


def test_rate_limit_on_writes(make_app):
    app = make_app(RATELIMIT_WRITE="3 per minute")
    from flask_migrate import upgrade
    with app.app_context():
        upgrade()
    client = app.test_client()
    codes = [create(client, f"n{i}").status_code for i in range(5)]
    assert codes == [201, 201, 201, 429, 429]


def test_html_page_and_static_files(client):
    create(client, "Shown <on> the page")
    page = client.get("/")
    assert page.status_code == 200
    assert b"Shown &lt;on&gt; the page" in page.data  # escaped
    assert b"/static/notes.css" in page.data and b"/static/notes.js" in page.data
    assert client.get("/static/notes.js").status_code == 200


def test_a_share_link_shows_the_note_and_a_forged_one_does_not(client):
    note = create(client, "shared").get_json()
    share = client.post(f"/api/notes/{note['id']}/share")
    assert share.status_code == 201
    assert client.get(share.get_json()["url"]).get_json()["title"] == "shared"
    token = share.get_json()["token"]
    assert client.get(f"/api/shared/{token[:-2]}xx").status_code == 404
    assert client.post("/api/notes/999999/share").status_code == 404


def test_share_links_survive_a_key_rotation_while_the_old_key_is_a_fallback(app, client):
    """SECRET_KEY rotated with the old key in SECRET_KEY_FALLBACKS (playbooks/rotate-secrets.yml): links
    signed before still open; once the fallback is gone, they do not."""
    note = create(client, "kept").get_json()
    url = client.post(f"/api/notes/{note['id']}/share").get_json()["url"]
    old = app.config["SECRET_KEY"]
    app.config.update(SECRET_KEY="a-new-key-" + "x" * 40, SECRET_KEY_FALLBACKS=[old])
    assert client.get(url).status_code == 200
    fresh = client.post(f"/api/notes/{note['id']}/share").get_json()["url"]
    assert fresh != url and client.get(fresh).status_code == 200
    app.config.update(SECRET_KEY_FALLBACKS=[])
    assert client.get(url).status_code == 404
