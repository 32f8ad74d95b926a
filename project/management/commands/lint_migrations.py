"""`make lint`'s migration check: django-migration-linter over our apps, exemptions from settings only.

The linter is run through its MigrationLinter class, not installed as an app: installed, it would
replace Django's makemigrations in every environment, and its own command cannot name the
PostgreSQL analyser for our backend (project.db.backend), name an exemption by app, or refuse an
exemption written inside a migration. Every warning counts as an error (an index built without
CONCURRENTLY locks out writers as surely as a dropped column breaks readers).

Exemptions are MIGRATION_LINTER_EXEMPT ("app_label.migration_name" -> reason), passed to the linter
as its `ignore_name` option; the linter matches names without their app, so a name that two of the
linted apps share cannot be exempted (the exemption would cover both).
"""

import logging
from collections import Counter

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django_migration_linter import IgnoreMigration, MigrationLinter


class Command(BaseCommand):
    help = "Refuse backward-incompatible migrations (django-migration-linter) unless MIGRATION_LINTER_EXEMPT says why."

    def add_arguments(self, parser):
        parser.add_argument("--database", default="default", help="the database sqlmigrate reads (default: default)")

    def handle(self, *args, **options):
        # The linter logs each sqlmigrate call at INFO; the verdicts it prints are what matter.
        level = logging.DEBUG if options["verbosity"] >= 2 else logging.WARNING
        logging.getLogger("django_migration_linter").setLevel(level)
        apps = settings.MIGRATION_LINTER_APPS
        exempt = settings.MIGRATION_LINTER_EXEMPT
        linter = MigrationLinter(
            None,  # no project path: no cache file, every run lints every migration (about 2 s)
            include_apps=apps,
            ignore_name=[key.partition(".")[2] for key in exempt],
            database=options["database"],
            no_cache=True,
            all_warnings_as_errors=True,
            analyser_string="postgresql",
            quiet=[] if options["verbosity"] >= 2 else ["ok", "ignore"],  # print what fails, and the summary
            no_output=options["verbosity"] == 0,
        )
        ours = {key: m for key, m in linter.migration_loader.disk_migrations.items() if key[0] in apps}
        problems = self.exemption_problems(exempt, ours)
        problems += [
            f"{app}.{name}: IgnoreMigration inside a migration; exempt it in MIGRATION_LINTER_EXEMPT with a reason"
            for (app, name), migration in sorted(ours.items())
            if any(isinstance(operation, IgnoreMigration) for operation in migration.operations)
        ]
        linter.lint_all_migrations()
        linter.print_summary()
        for key, reason in sorted(exempt.items()):
            if options["verbosity"] >= 2:
                self.stdout.write(f"exempt {key}: {reason}")
        if problems:
            raise CommandError("\n".join(problems))
        if linter.has_errors:
            raise CommandError(
                "backward-incompatible migration(s) above: split them into expand and contract"
                " (docs/operating.md), or exempt one in MIGRATION_LINTER_EXEMPT with the reason it is safe"
            )

    @staticmethod
    def exemption_problems(exempt: dict[str, str], ours: dict[tuple[str, str], object]) -> list[str]:
        """Exemptions that name no migration, give no reason, or name one the linter cannot tell apart."""
        names = Counter(name for _app, name in ours)
        linted = sorted({app for app, _name in ours})
        problems = []
        for key, reason in sorted(exempt.items()):
            app, _, name = key.partition(".")
            if (app, name) not in ours:
                problems.append(f"MIGRATION_LINTER_EXEMPT[{key!r}]: no such migration in {linted}")
            elif names[name] > 1:
                problems.append(f"MIGRATION_LINTER_EXEMPT[{key!r}]: another linted app has a migration {name!r}")
            if not isinstance(reason, str) or not reason.strip():
                problems.append(f"MIGRATION_LINTER_EXEMPT[{key!r}]: say why it is safe")
        return problems
