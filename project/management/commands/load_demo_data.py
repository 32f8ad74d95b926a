from django.core.management.base import BaseCommand, CommandError

from project.demo import DemoDataRefused, load_demo_data


class Command(BaseCommand):
    help = (
        "Load the demo shop through the services (idempotent: running it again changes nothing)."
        " Refused outside the development profiles unless --force: it creates a superuser with a published password."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--force", action="store_true", help="load it even where the settings profile refuses demo data"
        )

    def handle(self, *args, force=False, **options):
        try:
            lines = load_demo_data(force=force)
        except DemoDataRefused as exc:
            raise CommandError(str(exc)) from None
        for line in lines:
            self.stdout.write(line)
