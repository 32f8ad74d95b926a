from django.core.management.base import BaseCommand

from project.schedules import schedules_ensure


class Command(BaseCommand):
    help = "Create the periodic jobs missing from django-celery-beat's tables (idempotent; edited timings stay)."

    def handle(self, *args, **options):
        created = schedules_ensure()
        self.stdout.write(f"schedules created: {', '.join(created) or 'none (all present)'}")
