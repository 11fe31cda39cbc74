import math

from django.core.management.base import BaseCommand, CommandError

from dialogs.maintenance import pool_prune


class Command(BaseCommand):
    help = (
        "Release what dead server processes held (their waiting users leave the pool, their "
        "dialogs end and the partners get 30 'disconnect'). With --max-wait SECONDS, also remove "
        "waiting users who waited longer; they get 30 'timeout'."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--max-wait",
            type=float,
            metavar="SECONDS",
            help="Remove waiting users who have waited longer than this many seconds.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Report what would be done; change nothing.")

    def handle(self, **options):
        max_wait = options["max_wait"]
        if max_wait is not None and (not math.isfinite(max_wait) or max_wait < 0):
            raise CommandError("--max-wait must be a non-negative number of seconds.")
        report = pool_prune(max_wait=max_wait, dry_run=options["dry_run"])
        if options["verbosity"] < 1:
            return
        verb = "Would release" if report.dry_run else "Released"
        self.stdout.write(
            f"{verb} {report.dead_processes} dead server process(es): "
            f"{report.gone_waiting} user(s) left the pool, {report.gone_dialogs} dialog(s) ended."
        )
        if report.max_wait is not None:
            verb = "Would remove" if report.dry_run else "Removed"
            self.stdout.write(
                f"{verb} {report.timed_out} waiting user(s) who waited longer than {report.max_wait:g}s."
            )
