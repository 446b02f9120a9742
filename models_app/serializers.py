"""The request bodies of the seed's model endpoints: what each field may be, checked and documented once."""

from gridnode.fields import (
    EncodedBytesField,
    EncodingField,
    ObjectIdField,
    RequestBody,
    StrictBooleanField,
    TensorField,
    TextField,
)
from models_app.archives import JIT, PLAN


class ServeModelBody(RequestBody):
    """A model to store under a new id."""

    # Declared in the order the contract checks them (RequestBody: the first refusal is the answer).
    model_id = ObjectIdField()
    allow_download = StrictBooleanField()
    allow_remote_inference = StrictBooleanField()
    model_type = TextField(choices=(JIT, PLAN), required=False, help_text="Must match the archive.")
    model = EncodedBytesField(
        help_text="A torch.jit.save or torch.export.save archive, as text under 'encoding'.",
    )
    # Read by `model` when it is text; beside a file part, the 2019 client's transcoding (views).
    encoding = EncodingField(required=False)


class DeleteModelBody(RequestBody):
    """The model to delete."""

    model_id = ObjectIdField()


# Only described here: the body is parsed in the inference process (models_app/inference.py, by the same
# gridnode.http rules), so that the serving process never parses a JSON body of inference data.
class InferenceBody(RequestBody):
    """The data to run a model on."""

    # DRF's metaclass takes declared fields off the class: this does not hide Serializer.data.
    data = TensorField(  # type: ignore[assignment]
        help_text="A (nested) JSON array of numbers, a list of them (one per model input), or torch.save bytes"
        " of a tensor (or list of tensors) as text under 'encoding'.",
    )
    encoding = EncodingField(required=False, help_text="json (the default for arrays), ISO-8859-1 or base64.")
    all_outputs = StrictBooleanField()
