"""The admin's shares: listed, searched, permissions toggled from the list, uploaded and deleted under the
API's rules; and a registration's page showing its share."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from smpc_app.models import EncryptedModel, ModelShare
from tests.smpc_app.conftest import staged_files, stored_share_files

pytestmark = pytest.mark.django_db

SHARES = "/admin/smpc_app/modelshare/"
REGISTRATIONS = "/admin/smpc_app/encryptedmodel/"


def toggles(*rows: tuple[ModelShare, bool]) -> dict:
    """The changelist's POST for its editable column: (share, allow_remote_inference) per row."""
    data = {"form-TOTAL_FORMS": str(len(rows)), "form-INITIAL_FORMS": str(len(rows)), "_save": "Save"}
    for index, (share, inference) in enumerate(rows):
        data[f"form-{index}-id"] = str(share.pk)
        # An unchecked box is left out of the form, as a browser does.
        if inference:
            data[f"form-{index}-allow_remote_inference"] = "on"
        # What a forged form would add: the list offers no download box, so this is ignored.
        data[f"form-{index}-allow_download"] = "on"
    return data


def test_the_list_shows_every_share(admin_client, upload_share):
    upload_share("alpha", "worker", 1)
    upload_share("beta", "crypto_provider", None)

    response = admin_client.get(SHARES)

    assert response.status_code == 200
    rows = {share.registration.model_id: share for share in response.context["cl"].result_list}
    assert set(rows) == {"alpha", "beta"}
    page = response.content.decode()
    assert "Crypto provider" in page
    assert "3.0\xa0KB" in page  # the worker's part, 3029 bytes


def test_search_finds_a_share_by_model_id(admin_client, upload_share):
    upload_share("findme")
    upload_share("other")

    found = admin_client.get(SHARES, {"q": "findme"}).context["cl"].result_list

    assert [share.registration.model_id for share in found] == ["findme"]


def test_toggling_permissions_from_the_list_applies_to_the_api(admin_client, api, upload_share):
    upload_share("toggle", allow_remote_inference=True)
    upload_share("untouched")
    toggled = ModelShare.objects.get(registration__model_id="toggle")
    untouched = ModelShare.objects.get(registration__model_id="untouched")

    response = admin_client.post(SHARES, toggles((toggled, False), (untouched, True)))

    assert response.status_code == 302
    toggled.refresh_from_db()
    untouched.refresh_from_db()
    assert (toggled.allow_remote_inference, toggled.allow_download) == (False, False)
    assert (untouched.allow_remote_inference, untouched.allow_download) == (True, False)
    assert api.get("/encrypted-models/toggle/share/data").status_code == 403
    assert api.get("/encrypted-models/toggle/share").json()["allow_remote_inference"] is False


def test_the_change_page_edits_only_the_permissions(admin_client, upload_share):
    upload_share("fixed", "worker", 0)
    share = ModelShare.objects.get()
    sha256, name = share.sha256, share.archive.name

    response = admin_client.post(
        f"{SHARES}{share.pk}/change/",
        {"allow_remote_inference": "on", "role": "crypto_provider", "party": "1", "sha256": "0" * 64},
    )

    assert response.status_code == 302
    share.refresh_from_db()
    assert (share.allow_remote_inference, share.allow_download) == (True, False)
    assert (share.role, share.party, share.sha256, share.archive.name) == ("worker", 0, sha256, name)


def test_the_change_page_shows_the_file_facts(admin_client, upload_share):
    uploaded = upload_share("facts")
    share = ModelShare.objects.get()

    page = admin_client.get(f"{SHARES}{share.pk}/change/").content.decode()

    assert uploaded["sha256"] in page
    assert uploaded["spec_digest"] in page
    assert share.archive.name in page
    assert "&quot;in_features&quot;: 4" in page


def add_form(registration: EncryptedModel, spec: dict, raw: bytes, role="worker", party="0", **extra) -> dict:
    """The add page's POST."""
    return {
        "registration": str(registration.pk),
        "role": role,
        "party_number": party,
        "spec_text": json.dumps(spec),
        "part_file": SimpleUploadedFile("part.pt", raw),
        **extra,
    }


def test_uploading_from_the_admin_stores_a_checked_share(
    admin_client, admin_user, register, shared_model, part_bytes, data_dir
):
    register("from-admin")
    registration = EncryptedModel.objects.get()
    raw = part_bytes("worker", 1)

    response = admin_client.post(
        f"{SHARES}add/",
        add_form(registration, shared_model.spec.to_json(), raw, party="1", allow_download="on"),  # ignored
    )

    assert response.status_code == 302
    share = ModelShare.objects.get()
    assert (share.registration, share.role, share.party, share.size) == (registration, "worker", 1, len(raw))
    assert (share.allow_remote_inference, share.allow_download, share.uploaded_by) == (False, False, admin_user)
    assert share.spec_digest == shared_model.spec.digest()
    assert share.archive.read() == raw
    assert stored_share_files(data_dir) == [share.archive.name.removeprefix("shares/")]
    assert staged_files(data_dir) == []


@pytest.mark.parametrize(
    ("role", "party", "spec", "message"),
    [
        ("worker", "", None, "&#x27;party&#x27; is required for a worker: 0 or 1."),
        ("crypto_provider", "1", None, "&#x27;party&#x27; is for workers only"),
        ("worker", "0", {"version": 2}, "&#x27;spec&#x27; is not a model the protocol runs"),
        ("crypto_provider", "", None, "does not hold the tensors the spec needs for the crypto provider"),
    ],
)
def test_uploading_from_the_admin_refuses_what_the_api_refuses(
    admin_client, register, shared_model, part_bytes, data_dir, role, party, spec, message
):
    register("refused")
    registration = EncryptedModel.objects.get()

    response = admin_client.post(
        f"{SHARES}add/",
        add_form(registration, spec or shared_model.spec.to_json(), part_bytes("worker", 0), role=role, party=party),
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ModelShare.objects.exists()
    assert stored_share_files(data_dir) == []
    assert staged_files(data_dir) == []


def test_the_add_page_offers_only_registrations_without_a_share(admin_client, register, upload_share):
    upload_share("taken")
    register("free")

    form = admin_client.get(f"{SHARES}add/").context["adminform"].form

    assert [registration.model_id for registration in form.fields["registration"].queryset] == ["free"]


def test_deleting_a_share_from_the_admin_removes_its_file(
    admin_client, upload_share, data_dir, django_capture_on_commit_callbacks
):
    upload_share("gone")
    share = ModelShare.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"{SHARES}{share.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not ModelShare.objects.exists()
    assert EncryptedModel.objects.filter(model_id="gone").exists()
    assert stored_share_files(data_dir) == []


def test_the_registration_page_shows_its_share(admin_client, upload_share, register):
    upload_share("held", "worker", 1)
    register("bare")
    held = EncryptedModel.objects.get(model_id="held")
    share = ModelShare.objects.get()

    listing = admin_client.get(REGISTRATIONS).content.decode()
    page = admin_client.get(f"{REGISTRATIONS}{held.pk}/change/").content.decode()
    bare = admin_client.get(f"{REGISTRATIONS}{EncryptedModel.objects.get(model_id='bare').pk}/change/")

    assert "worker, party 1" in listing
    assert f'href="{SHARES}{share.pk}/change/"' in page
    assert "remote inference not allowed, download not allowed" in page
    assert "None uploaded" in bare.content.decode()


def test_deleting_a_registration_from_the_admin_removes_its_share_and_file(
    admin_client, upload_share, data_dir, django_capture_on_commit_callbacks
):
    upload_share("whole")
    registration = EncryptedModel.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"{REGISTRATIONS}{registration.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not EncryptedModel.objects.exists()
    assert not ModelShare.objects.exists()
    assert stored_share_files(data_dir) == []


def test_the_admin_needs_a_staff_login(client):
    response = client.get(SHARES)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
