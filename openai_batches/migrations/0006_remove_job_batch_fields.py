"""Drop the per-batch fields from BatchJob: they live on ProviderBatch now (0005 copied them)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("openai_batches", "0005_providerbatch_data"),
    ]

    operations = [
        migrations.RemoveField(
            model_name='batchjob',
            name='cancelled_at',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='cancelling_at',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='completed_at',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='error_file_id',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='expired_at',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='expires_at',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='failed_at',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='finalizing_at',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='in_progress_at',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='input_file_id',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='output_file_id',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='provider_batch_id',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='provider_created_at',
        ),
        migrations.RemoveField(
            model_name='batchjob',
            name='provider_errors',
        ),
    ]
