from django.core.management.base import BaseCommand, CommandError

from apps.connectors.base import ProviderError
from apps.connectors.models import Channel
from apps.connectors.registry import connectors
from apps.connectors.services import templates_sync
from apps.core.exceptions import DomainError


class Command(BaseCommand):
    help = "Sync message templates from the provider: one channel (--channel ID, repeatable) or every one (--all)."

    def add_arguments(self, parser):
        parser.add_argument("--channel", type=int, action="append", default=[], help="a channel's id")
        parser.add_argument(
            "--all", dest="every", action="store_true", help="every enabled channel that has templates"
        )

    def handle(self, *args, channel, every, **options):
        kinds = [kind for kind, connector in connectors().items() if connector.templates]
        chosen = Channel.objects.filter(kind__in=kinds)
        if every:
            chosen = chosen.filter(enabled=True)
        elif channel:
            chosen = chosen.filter(pk__in=channel)
            missing = set(channel) - set(chosen.values_list("pk", flat=True))
            if missing:
                raise CommandError(f"No channel with templates has the id {sorted(missing)}.")
        else:
            raise CommandError("Name a channel (--channel ID) or ask for --all.")
        failed = 0
        for found in chosen.order_by("pk"):
            try:
                counts = templates_sync(channel=found)
            except (DomainError, ProviderError) as error:
                failed += 1
                self.stderr.write(f"{found.pk} {found}: {error.detail}")
                continue
            self.stdout.write(
                f"{found.pk} {found}: {counts['created']} new, {counts['updated']} updated, "
                f"{counts['removed']} removed"
            )
        if failed:
            raise CommandError(f"{failed} channel(s) could not be synced.")
