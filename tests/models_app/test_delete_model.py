"""POST /delete-model (and /delete_model/): the row and the archive go; unknown ids are 404."""

import pytest

from models_app.models import HostedModel


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/delete-model", "/delete-model/", "/delete_model/", "/delete_model"])
def test_it_deletes_the_model_and_its_archive(api, serve, mlp_jit, data_dir, path):
    serve("gone", mlp_jit, allow_remote_inference=True)
    archive = data_dir / "files" / HostedModel.objects.get(model_id="gone").archive.name
    assert archive.exists()

    response = api.post(path, {"model_id": "gone"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Model deleted with success!"}
    assert not HostedModel.objects.filter(model_id="gone").exists()
    assert not archive.exists()


@pytest.mark.django_db
def test_it_accepts_a_form_body(api, serve, mlp_jit):
    serve("gone", mlp_jit)
    response = api.post("/delete-model", "model_id=gone", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert HostedModel.objects.count() == 0


@pytest.mark.django_db
def test_it_answers_404_for_an_unknown_model(api, serve, mlp_jit):
    serve("kept", mlp_jit)
    response = api.post("/delete-model", {"model_id": "missing"}, format="json")

    assert response.status_code == 404
    assert response.json() == {"success": False, "error": "Model not found!"}
    assert HostedModel.objects.filter(model_id="kept").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{}, {"model_id": ""}, {"model_id": "../x"}, {"model_id": ["a"]}])
def test_it_answers_400_without_a_valid_model_id(api, serve, mlp_jit, body):
    serve("kept", mlp_jit)
    response = api.post("/delete-model", body, format="json")

    assert response.status_code == 400
    assert "'model_id'" in response.json()["error"]
    assert HostedModel.objects.count() == 1
