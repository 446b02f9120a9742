"""`manage.py load_datasets FOLDER --tag ...`: put a folder of saved tensors on the node in one go."""

from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from datasets_app import services
from gridnode.errors import GridError
from gridnode.http import check_object_id


class Command(BaseCommand):
    help = (
        "Load every .pt file in FOLDER as a dataset: one tensor per file (read with weights_only), "
        "the file name without .pt as its id, and the given tags and description. Files whose id is "
        "taken or that do not hold one tensor are skipped and reported; the files are copied, never moved."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path, help="The folder holding the .pt files (not searched recursively).")
        parser.add_argument(
            "--tag", action="append", default=[], dest="tags", help="A tag for every dataset; repeat for more."
        )
        parser.add_argument("--description", default="", help="A description for every dataset.")
        parser.add_argument(
            "--allow-download", action="store_true", help="Let others download these datasets (default: not)."
        )

    def handle(self, *args, folder: Path, tags: list[str], description: str, allow_download: bool, **options):
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder.")
        try:
            tags = services.tags_check(tags=tags)
            description = services.description_check(description=description)
        except GridError as exc:
            raise CommandError(exc.message) from None
        paths = sorted(path for path in folder.iterdir() if path.suffix.lower() == ".pt" and path.is_file())
        loaded = 0
        for path in paths:
            try:
                dataset = self._load(path, tags=tags, description=description, allow_download=allow_download)
            except GridError as exc:
                self.stderr.write(f"Skipped {path.name}: {exc.message}")
                continue
            loaded += 1
            self.stdout.write(f"Loaded {dataset.dataset_id}: {dataset.dtype} {dataset.shape}, {dataset.size} bytes")
        self.stdout.write(f"{loaded} loaded, {len(paths) - loaded} skipped, from {len(paths)} .pt files in {folder}.")

    def _load(self, path: Path, *, tags: list[str], description: str, allow_download: bool):
        dataset_id = check_object_id(path.stem, "id")
        services.dataset_id_available(dataset_id=dataset_id)
        with path.open("rb") as source:
            # A plain File has no temporary path, so staging copies it: the operator's file stays put.
            staged = services.tensor_stage(upload=File(source, name=path.name))
        return services.dataset_create(
            dataset_id=dataset_id,
            tags=tags,
            description=description,
            allow_download=allow_download,
            staged=staged,
        )
