import json

from django.core.management.base import BaseCommand

from dialogs.maintenance import pool_status


class Command(BaseCommand):
    help = (
        "Show the pool: waiting users by language and gender, the longest wait, users in the "
        "middle of a pairing, and active dialogs. With --json, print one JSON object with the keys "
        "waiting, by_language, by_gender, by_language_and_gender, oldest_wait_seconds, pairing "
        "and active_dialogs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the status as one JSON object.")

    def handle(self, **options):
        status = pool_status()
        if options["json"]:
            self.stdout.write(json.dumps(status.as_dict(), sort_keys=True))
            return
        oldest = "" if status.oldest_wait_seconds is None else f" (longest wait {status.oldest_wait_seconds:.0f}s)"
        self.stdout.write(f"Waiting users: {status.waiting}{oldest}")
        for language, genders in status.by_language_and_gender.items():
            detail = ", ".join(f"{gender} {n}" for gender, n in genders.items())
            self.stdout.write(f"  {language}: {status.by_language[language]} ({detail})")
        if status.by_gender:
            self.stdout.write("  by gender: " + ", ".join(f"{g} {n}" for g, n in status.by_gender.items()))
        self.stdout.write(f"Pairing in progress: {status.pairing}")
        self.stdout.write(f"Active dialogs: {status.active_dialogs}")
