"""The command line: `python -m gridclient COMMAND ...`, also installed as `gridnode-client`.

Results go to stdout (ids and tags one per line, everything else as JSON); errors go to stderr as
`error: <message> (HTTP <status>)`, and the exit code says what kind of failure it was (see EXIT_CODES).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from gridclient import errors, tensors
from gridclient.client import DEFAULT_TIMEOUT, DEFAULT_URL, GridNodeClient
from gridclient.transport import DEFAULT_MAX_ANSWER_BYTES

OK = 0
NO_MATCH = 1
USAGE = 2
UNREACHABLE = 3
NOT_FOUND = 4
FORBIDDEN = 5
CONFLICT = 6
INVALID_REQUEST = 7
TOO_LARGE = 8
UNAUTHORIZED = 9
NODE_ERROR = 10

EXIT_CODES = f"""\
exit codes:
  {OK}   success (search: a dataset matches every term)
  {NO_MATCH}   search: no dataset matches
  {USAGE}   bad arguments, or a local file that is missing or unreadable
  {UNREACHABLE}   the node could not be reached (refused, unresolved, timed out, dropped)
  {NOT_FOUND}   404: no model, dataset or encrypted model with that id
  {FORBIDDEN}   403: the owner does not allow it (download, inference)
  {CONFLICT}   409: the id is taken
  {INVALID_REQUEST}   400: the node refused the request (bad id, not a model or tensor, ...)
  {TOO_LARGE}   413: larger than the node accepts
  {UNAUTHORIZED}   401: missing or wrong token (set GRIDNODE_TOKEN)
  {NODE_ERROR}  the node failed (5xx), or its answer could not be read: not HTTP, not JSON, nested
       too deeply, or larger than --max-answer-bytes / --max-bytes

environment:
  GRIDNODE_URL    the node's URL when --url is not given (default {DEFAULT_URL})
  GRIDNODE_TOKEN  sent as 'Authorization: Token <key>'
  HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY
                  the proxy to reach the node through, as requests and curl read them
"""

_BY_TYPE: list[tuple[type[errors.GridNodeError], int]] = [
    (errors.NodeUnreachable, UNREACHABLE),
    (errors.NotFound, NOT_FOUND),
    (errors.PermissionDenied, FORBIDDEN),
    (errors.Conflict, CONFLICT),
    (errors.InvalidRequest, INVALID_REQUEST),
    (errors.PayloadTooLarge, TOO_LARGE),
    (errors.Unauthorized, UNAUTHORIZED),
]


class UsageError(Exception):
    """Arguments that cannot be acted on; exits with USAGE."""


def exit_code(exc: errors.GridNodeError) -> int:
    """The exit code for a failure of the node or of the connection to it."""
    for kind, code in _BY_TYPE:
        if isinstance(exc, kind):
            return code
    return NODE_ERROR


def _print_json(value) -> None:
    print(json.dumps(value, ensure_ascii=False))


# -- commands ------------------------------------------------------------------------------------------


def _existing_file(name: str) -> Path:
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"no such file: {name}")
    return path


def serve_model(client: GridNodeClient, args) -> int:
    message = client.serve_model(
        _existing_file(args.file),
        args.id,
        allow_download=args.allow_download,
        allow_remote_inference=args.allow_inference,
    )
    print(message)
    return OK


def list_models(client: GridNodeClient, args) -> int:
    for model_id in client.models():
        print(model_id)
    return OK


def delete_model(client: GridNodeClient, args) -> int:
    client.delete_model(args.id)
    print(f"Model deleted: {args.id}")
    return OK


def download_model(client: GridNodeClient, args) -> int:
    """Checked by the node's upload rules before anything is written (exit 10 when refused), unless
    --unchecked: a node may answer an archive that runs code when torch loads it."""
    if args.output == "-":
        if args.unchecked:
            client.download_archive(args.id, sys.stdout.buffer, max_bytes=args.max_bytes)
        else:
            with tempfile.TemporaryDirectory(prefix="gridclient-") as folder:
                path = Path(folder) / "model"
                client.save_model(args.id, path, max_bytes=args.max_bytes)
                with open(path, "rb") as saved:
                    shutil.copyfileobj(saved, sys.stdout.buffer)
        sys.stdout.flush()
        return OK
    save = client.download_archive if args.unchecked else client.save_model
    size = save(args.id, args.output, max_bytes=args.max_bytes)
    print(f"Wrote {size} bytes to {args.output}")
    return OK


def infer(client: GridNodeClient, args) -> int:
    if _names_a_file(args.data):
        inputs = _tensor_file_inputs(Path(args.data))
        prediction = client.run_inference(args.id, *inputs, all_outputs=args.all_outputs)
        try:
            _print_json(tensors.to_json(prediction))
        except TypeError as exc:
            raise errors.ServerError(200, f"The prediction cannot be printed as JSON: {exc}.") from None
        return OK
    try:
        data = json.loads(args.data)
    except ValueError:
        raise UsageError(f"--data is neither a file nor a JSON array: {args.data[:40]!r}") from None
    _print_json(client.run_inference_json(args.id, data, all_outputs=args.all_outputs))
    return OK


def encrypted_infer(client: GridNodeClient, args) -> int:
    from gridclient.encrypted import run_encrypted_inference

    if _names_a_file(args.data):
        inputs = _tensor_file_inputs(Path(args.data))
        if len(inputs) != 1:
            raise UsageError("--data must hold one tensor: encrypted models take one input")
        data = inputs[0]
    else:
        import torch

        try:
            data = torch.tensor(json.loads(args.data), dtype=torch.float64)
        except (ValueError, TypeError, RuntimeError):
            raise UsageError(f"--data is neither a file nor a JSON array of numbers: {args.data[:40]!r}") from None
    result = run_encrypted_inference(args.id, data, via=client.url, timeout=args.timeout)
    _print_json(result.output.tolist())
    return OK


def _names_a_file(value: str) -> bool:
    """Whether --data names a file (a long inline JSON array is no file name: too long to be one)."""
    try:
        return Path(value).is_file()
    except OSError:
        return False


def _tensor_file_inputs(path: Path) -> list:
    """The input tensor(s) in a torch.save file: one tensor, or a list/tuple of them (one per model input)."""
    import torch

    try:
        value = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # not a zip, not a pickle, or an object the safe unpickler refuses
        raise UsageError(f"{path} is not a tensor saved with torch.save.") from None
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple) and value and all(isinstance(item, torch.Tensor) for item in value):
        return list(value)
    raise UsageError(f"{path} must hold a tensor, or a list of tensors (one per model input).")


def upload_dataset(client: GridNodeClient, args) -> int:
    metadata = client.upload_dataset(
        _existing_file(args.file),
        tags=args.tag,
        description=args.description,
        allow_download=args.allow_download,
        dataset_id=args.id,
    )
    _print_json(metadata)
    return OK


def list_tags(client: GridNodeClient, args) -> int:
    for tag in client.dataset_tags():
        print(tag)
    return OK


def search(client: GridNodeClient, args) -> int:
    found = client.search(*args.terms)
    print("true" if found else "false")
    return OK if found else NO_MATCH


def register_encrypted(client: GridNodeClient, args) -> int:
    registration = client.register_encrypted_model(
        args.id, args.worker, args.crypto_provider, description=args.description
    )
    _print_json(registration)
    return OK


def search_encrypted(client: GridNodeClient, args) -> int:
    nodes = client.search_encrypted_models(args.id)
    _print_json(nodes._asdict())
    return OK


# -- parsing -------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of bytes, at least 1: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridnode-client",
        description="Host models and datasets on a grid node, run inference, and search it.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("GRIDNODE_URL") or DEFAULT_URL,
        help="the node (default: $GRIDNODE_URL, else %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait on the node for each step (default %(default)g)",
    )
    parser.add_argument(
        "--max-answer-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_ANSWER_BYTES,
        metavar="N",
        help="read at most N bytes of an answer into memory (default %(default)d); downloads: --max-bytes",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (there is none anyway unless stderr is a terminal)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("serve-model", serve_model, "upload a TorchScript (.pt) or torch.export (.pt2) archive")
    sub.add_argument("file", metavar="FILE")
    sub.add_argument("--id", required=True, help="the model id on the node")
    sub.add_argument("--allow-download", action="store_true", help="let others download the model")
    sub.add_argument("--allow-inference", action="store_true", help="let others run inference on the model")

    command("models", list_models, "list the ids of the models on the node, one per line")

    sub = command("delete-model", delete_model, "delete a model")
    sub.add_argument("id", metavar="ID")

    sub = command(
        "download-model", download_model, "save a model's archive (exactly the uploaded bytes), once it is checked"
    )
    sub.add_argument("id", metavar="ID")
    sub.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write it ('-' for stdout)")
    sub.add_argument("--max-bytes", type=_positive_int, metavar="N", help="fail (exit 10, no file left) past N bytes")
    sub.add_argument(
        "--unchecked",
        action="store_true",
        help="write what the node answers as it comes; by default it is first checked by the node's upload rules, "
        "and a refused archive is exit 10 with no file written",
    )

    sub = command("infer", infer, "run a model on a tensor file or a JSON array; print the prediction as JSON")
    sub.add_argument("id", metavar="ID")
    sub.add_argument(
        "--data",
        required=True,
        metavar="FILE|JSON",
        help="a torch.save file of a tensor (or a list of them, one per input), or an inline JSON array",
    )
    sub.add_argument("--all-outputs", action="store_true", help="print every output of a model that returns several")

    sub = command("upload-dataset", upload_dataset, "upload a tensor saved with torch.save; print its metadata")
    sub.add_argument("file", metavar="FILE")
    sub.add_argument("--tag", action="append", default=[], help="a tag (repeat for several)")
    sub.add_argument("--description", default="")
    sub.add_argument("--allow-download", action="store_true", help="let others download the data")
    sub.add_argument("--id", help="the dataset id (default: the node picks one)")

    command("tags", list_tags, "list every dataset tag on the node, one per line")

    sub = command("search", search, "exit 0 when a dataset matches every term (tag, id or description), else 1")
    sub.add_argument("terms", nargs="+", metavar="TAG")

    sub = command("register-encrypted", register_encrypted, "record where an encrypted model's shares live")
    sub.add_argument("id", metavar="ID")
    sub.add_argument("--worker", action="append", required=True, metavar="URL", help="a worker node (repeat)")
    sub.add_argument(
        "--crypto-provider", action="append", required=True, metavar="URL", help="a crypto provider (repeat)"
    )
    sub.add_argument("--description", default="")

    sub = command("search-encrypted", search_encrypted, "print where an encrypted model's shares live")
    sub.add_argument("id", metavar="ID")

    sub = command(
        "encrypted-infer",
        encrypted_infer,
        "run an encrypted model on secret-shared input (its workers found through --url); print the output as JSON",
    )
    sub.add_argument("id", metavar="ID")
    sub.add_argument(
        "--data", required=True, metavar="FILE|JSON", help="a torch.save file of one tensor, or an inline JSON array"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; answer the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or the help)
        return exc.code if isinstance(exc.code, int) else USAGE
    try:
        client = GridNodeClient(
            args.url,
            timeout=args.timeout,
            progress=False if args.no_progress else None,
            max_answer_bytes=args.max_answer_bytes,
        )
        return args.handler(client, args)
    except errors.GridNodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except (UsageError, ValueError, OSError) as exc:
        # ValueError: a malformed --url; OSError: a local file that could not be read or written.
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
