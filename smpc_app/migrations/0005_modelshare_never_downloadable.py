"""Parts are never downloadable; in a migration of its own so that PostgreSQL checks the constraint after
0004 has cleared the flag and committed."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("smpc_app", "0004_node_identities"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name='modelshare',
            constraint=models.CheckConstraint(condition=models.Q(('allow_download', False)), name='modelshare_never_downloadable', violation_error_message="An encrypted model's part is never downloadable: any two parts rebuild it."),
        ),
    ]
