from django.core.management.base import BaseCommand, CommandError

from apps.analytics.services import analytics_rebuild
from apps.core.exceptions import DomainError
from apps.workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Recompute the analytics (cycles and daily rollups) from the event log. Needed after changing a "
        "workspace's time zone; gives the same numbers the folder keeps up to date."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspace", metavar="SLUG", help="Only this workspace (default: all).")

    def handle(self, *args, workspace=None, **options):
        scope = None
        if workspace:
            scope = Workspace.objects.filter(slug=workspace).first()
            if scope is None:
                raise CommandError(f"No workspace with the slug {workspace!r}.")
        try:
            count = analytics_rebuild(workspace=scope, stdout=self.stdout)
        except DomainError as error:
            raise CommandError(error.detail) from None
        self.stdout.write(self.style.SUCCESS(f"Rebuilt the analytics of {count} conversation(s)."))
