from django.apps import AppConfig


class ExportsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "exports"
    verbose_name = "Dataset exports"

    def ready(self) -> None:
        from django.db.models.signals import pre_delete

        from annotation.models import Project
        from exports.services import snapshot_folders_remove_with_project

        pre_delete.connect(
            snapshot_folders_remove_with_project,
            sender=Project,
            dispatch_uid="exports.snapshot_folders_remove_with_project",
        )
