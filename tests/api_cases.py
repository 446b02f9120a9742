"""Shared test cases for the endpoints that name one object by its id, in the style of NetBox's
APIViewTestCases (`utilities/testing/api.py`): one base class per behaviour, and each app's test class
says in a few attributes which endpoint of which resource it tests.

    class TestIdCases(HostedModelCases, UnknownIdCases, PathIdRuleCases):
        path = "/get_model/{id}"

The resource's half (`ResourceCases`, subclassed once per app in its tests' helpers.py) says how an object
is made (the `make` fixture), which table and file field hold it, and the error body's shape; the test
class adds the endpoint: its method, path and body, and what it answers. The behaviours:

- `UnknownIdCases`: an id nobody stored is a 404 with the contract's error, and changes nothing.
- `PathIdRuleCases`: every id the rule allows reaches its object; an id breaking it is a 400 naming the
  field; an id with a slash is no id (no route: a JSON 404). Nothing changes on a refusal.
- `BodyIdRuleCases` (and `RequiredIdCases`): the same rule for an id sent in a JSON body, where it may
  also be no string at all, or missing.
- `DeleteCases`: a delete takes the row, its links and its file, leaves every other object as it was,
  and a second delete is a 404.

Every case asserts the answer and the database and storage behind it (`stored_state`).
"""

import json
from pathlib import Path
from urllib.parse import quote

import pytest

# api.md's id rule, as the node words it in a refusal.
ID_RULE = "1-128 characters from letters, digits and . _ - : @, starting with a letter or digit"

# Ids the rule allows: every allowed character, and the longest.
GOOD_IDS = ["user@node:set_1.v-2", "9" + "x" * 127]

# Ids the rule refuses that still fit in one path segment.
BAD_PATH_IDS = [
    ".",
    "..",
    "-dash-first",
    "_underscore-first",
    ".dot-first",
    "bad!id",
    "has space",
    "nul\x00byte",
    "new\nline",
    "café",
    "x" * 129,
]

# And those only a body can carry: slashes, and values that are not strings.
BAD_BODY_IDS = [*BAD_PATH_IDS, "../x", "../../etc/passwd", 12, True, ["a"]]


def case_id(value) -> str:
    """A short, printable test id for an id under test."""
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(value)} characters)"


class Absent:
    """The id left out of the body altogether."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = Absent()


def with_id(body: dict, field: str, object_id) -> dict:
    """`body` with `field` set to `object_id`, or without it when the id is ABSENT."""
    body = {key: value for key, value in body.items() if key != field}
    if object_id is not ABSENT:
        body[field] = object_id
    return body


def stored_files(data_dir) -> list[str]:
    """Every file in storage, relative to it."""
    root = Path(data_dir) / "files"
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()) if root.exists() else []


def staged_files(data_dir) -> list[str]:
    """Whatever is left in the upload staging folder."""
    return sorted(path.name for path in (Path(data_dir) / "tmp").iterdir())


class ResourceCases:
    """What every shared case needs to know of the resource and of the endpoint under test."""

    # The resource (set once per app).
    model: type  # the Django model holding one row per object
    id_column: str  # its id column
    file_field: str | None = None  # its FileField, if the object has a stored file
    id_field: str  # the id's name in request bodies and error messages
    error_fields: dict = {}  # what the contract puts beside "error" in this endpoint's errors
    not_found: str  # the contract's error for an unknown id

    # The endpoint (set per test class).
    method = "get"
    path: str  # "{id}" where the id goes, if it goes in the path
    spellings: tuple[str, ...] = ()  # every spelling of `path` (trailing slash, aliases); `path` alone if empty
    ok_status = 200  # the answer for an object that exists (or, creating, for a good body)
    effect = "reads"  # what a successful call does to the object: "reads", "creates" or "deletes"
    id_in_answer: str | None = None  # the key of a successful answer that holds the object's id

    @pytest.fixture
    def make(self):
        """`make(object_id)` stores one object over HTTP, as a client would; each resource defines it."""
        raise NotImplementedError(f"{type(self).__name__} needs a `make` fixture")

    def body(self, object_id) -> dict | None:
        """The JSON body to send (None: no body)."""
        return None

    def send(self, api, object_id, path: str | None = None):
        """One request to the endpoint for `object_id`, quoted in the path as a client quotes it."""
        segment = quote(str(object_id), safe="@:")
        if set(segment) <= {"."}:
            # A segment of dots only is sent as %2E: raw, a client's URL library resolves it away (RFC 3986).
            segment = segment.replace(".", "%2E")
        url = (path or self.path).format(id=segment)
        body = self.body(object_id)
        if body is None:
            return api.generic(self.method.upper(), url)
        return api.generic(self.method.upper(), url, json.dumps(body), content_type="application/json")

    def error(self, message: str) -> dict:
        """The contract's error body for `message` on this endpoint."""
        return {**self.error_fields, "error": message}

    def stored_ids(self) -> list[str]:
        return sorted(self.model.objects.values_list(self.id_column, flat=True))

    def stored_file(self, data_dir, object_id) -> Path | None:
        """Where the object's file is in storage (None for a resource without files)."""
        if self.file_field is None:
            return None
        row = self.model.objects.get(**{self.id_column: object_id})
        return Path(data_dir) / "files" / getattr(row, self.file_field).name

    def related_state(self) -> dict:
        """Rows in other tables that come and go with an object (tag links, node assignments)."""
        return {}

    def stored_state(self, data_dir) -> dict:
        """Everything a request could change: compared before and after it."""
        return {
            "rows": self.stored_ids(),
            **self.related_state(),
            "files": stored_files(data_dir),
            "staged": staged_files(data_dir),
        }

    def assert_refused(self, api, make, data_dir, object_id, message: str) -> None:
        """With another object stored, a request for `object_id` is a 400 with `message`, changing nothing."""
        make("kept")
        before = self.stored_state(data_dir)

        response = self.send(api, object_id)

        assert response.status_code == 400, response.content
        assert response.json() == self.error(message)
        assert self.stored_state(data_dir) == before

    def pytest_generate_tests(self, metafunc):
        """A case asking for `spelling` runs once per spelling of the endpoint."""
        if "spelling" in metafunc.fixturenames:
            metafunc.parametrize("spelling", self.spellings or (self.path,))


class UnknownIdCases:
    """An id nobody stored: 404 with the contract's error, and nothing changes."""

    def test_it_answers_404_for_an_unknown_id(self, api, make, data_dir):
        make("kept")
        before = self.stored_state(data_dir)

        response = self.send(api, "missing")

        assert response.status_code == 404, response.content
        assert response.json() == self.error(self.not_found)
        assert self.stored_state(data_dir) == before


class IdRuleCases:
    """What both id-rule mixins share: every id the rule allows works."""

    def test_it_accepts_every_id_the_rule_allows(self, api, make, data_dir):
        for object_id in GOOD_IDS:
            if self.effect != "creates":
                make(object_id)
            before = self.stored_ids()

            response = self.send(api, object_id)

            assert response.status_code == self.ok_status, (object_id, response.content)
            if self.id_in_answer is not None:
                assert response.json()[self.id_in_answer] == object_id
            expected = {"reads": before, "creates": sorted([*before, object_id]), "deletes": []}[self.effect]
            assert self.stored_ids() == expected


class PathIdRuleCases(IdRuleCases):
    """The id rule for an id in the path."""

    @pytest.mark.parametrize("object_id", BAD_PATH_IDS, ids=case_id)
    def test_it_answers_400_for_an_id_breaking_the_rule(self, api, make, data_dir, object_id):
        self.assert_refused(api, make, data_dir, object_id, f"'{self.id_field}' must be {ID_RULE}.")

    def test_an_id_with_a_slash_is_a_json_404(self, api, make, data_dir):
        """A slash, even quoted as %2F, ends the path segment: no route, so the generic JSON 404."""
        make("kept")
        before = self.stored_state(data_dir)

        response = self.send(api, "kept/more")

        assert response.status_code == 404, response.content
        assert response.json() == {"error": "Not found."}
        assert self.stored_state(data_dir) == before


class BodyIdRuleCases(IdRuleCases):
    """The id rule for an id in a JSON body, where it may also be something other than a string."""

    @pytest.mark.parametrize("object_id", BAD_BODY_IDS, ids=case_id)
    def test_it_answers_400_for_an_id_breaking_the_rule(self, api, make, data_dir, object_id):
        self.assert_refused(api, make, data_dir, object_id, f"'{self.id_field}' must be {ID_RULE}.")


class RequiredIdCases:
    """A body without its id (or with null or an empty string for it) is a 400 naming the field."""

    @pytest.mark.parametrize("object_id", [ABSENT, None, ""], ids=case_id)
    def test_it_answers_400_without_an_id(self, api, make, data_dir, object_id):
        self.assert_refused(api, make, data_dir, object_id, f"'{self.id_field}' is required.")


class DeleteCases:
    """A delete takes the row, its links and its file, and nothing else; a second delete is a 404."""

    deleted_answer: dict | None = None  # the JSON answer to a delete, whose status is `ok_status` (None: no body)
    lookup_path: str  # a GET of the object, which must find nothing once it is deleted

    def assert_deleted(self, response) -> None:
        assert response.status_code == self.ok_status, response.content
        if self.deleted_answer is None:
            assert response.content == b""
        else:
            assert response.json() == self.deleted_answer

    # Transactional: a row's file is removed once its deletion commits.
    @pytest.mark.django_db(transaction=True)
    def test_it_deletes_the_row_and_its_file(self, api, make, data_dir, spelling):
        empty = self.stored_state(data_dir)
        make("gone")
        stored = self.stored_file(data_dir, "gone")
        assert stored is None or stored.exists()

        self.assert_deleted(self.send(api, "gone", spelling))

        assert self.stored_state(data_dir) == empty
        assert stored is None or not stored.exists()
        assert api.get(self.lookup_path.format(id="gone")).status_code == 404

    @pytest.mark.django_db(transaction=True)
    def test_it_keeps_every_other_object(self, api, make, data_dir):
        make("kept")
        kept = self.stored_state(data_dir)
        make("gone")

        self.assert_deleted(self.send(api, "gone"))

        assert self.stored_state(data_dir) == kept
        assert api.get(self.lookup_path.format(id="kept")).status_code == 200

    def test_a_second_delete_answers_404(self, api, make, data_dir):
        make("once")
        self.assert_deleted(self.send(api, "once"))
        after_the_first = self.stored_state(data_dir)

        response = self.send(api, "once")

        assert response.status_code == 404, response.content
        assert response.json() == self.error(self.not_found)
        assert self.stored_state(data_dir) == after_the_first
