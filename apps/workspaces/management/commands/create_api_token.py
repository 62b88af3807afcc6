from django.core.management.base import BaseCommand, CommandError

from apps.workspaces.models import Workspace
from apps.workspaces.services import api_token_create


class Command(BaseCommand):
    help = "Create an API token for a workspace and print it (it is shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="the workspace's slug")
        parser.add_argument("--name", required=True, help="what the token is for, e.g. 'order system'")

    def handle(self, *args, workspace, name, **options):
        found = Workspace.objects.filter(slug=workspace).first()
        if found is None:
            known = ", ".join(Workspace.objects.values_list("slug", flat=True)) or "none yet"
            raise CommandError(f"No workspace with slug {workspace!r} (known: {known}).")
        if not name.strip():
            raise CommandError("Give the token a name.")
        _token, raw = api_token_create(workspace=found, name=name.strip())
        self.stdout.write(raw)
