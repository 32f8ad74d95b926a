from django.core.management.base import BaseCommand

from project.demo import load_demo_data


class Command(BaseCommand):
    help = "Load the demo shop through the services (idempotent: running it again changes nothing)."

    def handle(self, *args, **options):
        for line in load_demo_data():
            self.stdout.write(line)
