from django.core.management.base import BaseCommand, CommandError

from moderation.models import Ban
from moderation.services import ban_lift


class Command(BaseCommand):
    help = "List the active bans (--all: every ban), or lift bans by id (--lift ID ...)."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="Also list expired and lifted bans.")
        parser.add_argument("--lift", type=int, nargs="+", metavar="ID", help="Lift these bans.")

    def handle(self, **options):
        if options["lift"]:
            wanted = set(options["lift"])
            unknown = wanted - set(Ban.objects.filter(pk__in=wanted).values_list("pk", flat=True))
            if unknown:
                raise CommandError(f"No ban with id {', '.join(map(str, sorted(unknown)))}.")
            lifted = ban_lift(bans=Ban.objects.filter(pk__in=wanted))
            self.stdout.write(f"Lifted {lifted} ban(s); {len(wanted) - lifted} were not active.")
            return
        bans = Ban.objects.all() if options["all"] else Ban.objects.active()
        for ban in bans.order_by("created_at"):
            state = "active" if ban.active else ("lifted" if ban.lifted_at else "expired")
            self.stdout.write(
                f"{ban.pk}\t{state}\tuntil {ban.expires_at:%Y-%m-%d %H:%M:%S}Z\t"
                f"address {ban.address_hash[:12]}…\treport {ban.report_id or '-'}"
            )
