import math
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from dialogs.maintenance import PURGE_BATCH_SIZE, dialog_purge


class Command(BaseCommand):
    help = (
        "Delete dialogs that ended more than --older-than DAYS ago, with their messages and the "
        "pool users only they referenced, and the pool users who cancelled or whose connection "
        "went that long ago without a dialog. Active dialogs are never touched."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than", type=float, required=True, metavar="DAYS",
            help="Purge dialogs that ended more than this many days ago.",
        )
        parser.add_argument(
            "--batch-size", type=int, default=PURGE_BATCH_SIZE,
            help=f"Dialogs deleted per transaction (default {PURGE_BATCH_SIZE}).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, **options):
        days, batch_size = options["older_than"], options["batch_size"]
        if not math.isfinite(days) or days < 0:
            raise CommandError("--older-than must be a non-negative number of days.")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        verbose = options["verbosity"] >= 1
        try:
            older_than = timedelta(days=days)
            timezone.now() - older_than
        except OverflowError:
            raise CommandError("--older-than is too large.") from None
        report = dialog_purge(
            older_than=older_than,
            dry_run=options["dry_run"],
            batch_size=batch_size,
            progress=self.progress if verbose else None,
        )
        if verbose:
            verb = "Would delete" if report.dry_run else "Deleted"
            self.stdout.write(
                f"{verb} {report.dialogs} dialog(s), {report.messages} message(s) and "
                f"{report.participants} pool user(s) that only they referenced."
            )
            if report.left_users:
                self.stdout.write(f"{verb} {report.left_users} pool user(s) who left the pool without a dialog.")

    def progress(self, done: int, total: int, what: str) -> None:
        self.stderr.write(f"purged {done}/{total} {what}")
