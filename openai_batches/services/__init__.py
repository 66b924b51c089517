"""The one place that changes job and item state.

Admin actions, API views, RQ jobs and the ``sync_batches`` command are thin callers of the
functions here; none of them writes a ``BatchJob``, ``ProviderBatch`` or ``RequestItem``
field itself. ``from openai_batches import services`` is the public surface; each stage of
a job's life is one module of this package:

- :mod:`.items`: creating jobs and adding items;
- :mod:`.parts`: cutting a job into provider batches, deriving the job's state from them;
- :mod:`.submission`: uploading and creating each part's batch, exactly once;
- :mod:`.polling`: refreshing running batches;
- :mod:`.quota`: enqueued-token budgets, the line of waiting parts, learning from refusals;
- :mod:`.ingestion`: storing an ended batch's results, attempts and retries;
- :mod:`.announcing`: the exactly-once result and finish signals;
- :mod:`.control`: cancel, retry, delete and the ``can_*`` checks;
- :mod:`.reading`: results, inputs, provider files and cost read back;
- :mod:`.syncing`: the ``sync_batches`` pass;
- retention (``purge``) lives in :mod:`openai_batches.retention`; :mod:`._base` holds what
  every stage shares (the lifecycle checkpoints among it).
"""

from __future__ import annotations

from ..client import get_client as get_client

# Re-exported: ``services.export_results`` is the scripts' entry point (see export.py).
from ..export import export_results as export_results
from ..retention import PurgeReport as PurgeReport
from ..retention import purge as purge
from ..retention import purgeable_jobs as purgeable_jobs
from ._base import CHECKPOINTS as CHECKPOINTS
from ._base import Progress as Progress
from .announcing import announce_pending as announce_pending
from .control import can_cancel as can_cancel
from .control import can_delete as can_delete
from .control import can_retry as can_retry
from .control import cancel as cancel
from .control import delete_job as delete_job
from .control import retry as retry
from .ingestion import ingest as ingest
from .ingestion import iter_result_rows as iter_result_rows
from .ingestion import result_row as result_row
from .items import add_items as add_items
from .items import add_items_from_jsonl as add_items_from_jsonl
from .items import create_job as create_job
from .parts import RETRY_KINDS as RETRY_KINDS
from .polling import apply_batch as apply_batch
from .polling import can_refresh as can_refresh
from .polling import refresh as refresh
from .polling import request_refresh as request_refresh
from .quota import admit_waiting as admit_waiting
from .quota import reset_learned_limit as reset_learned_limit
from .reading import iter_input_jsonl as iter_input_jsonl
from .reading import iter_provider_file as iter_provider_file
from .reading import iter_results as iter_results
from .reading import iter_results_jsonl as iter_results_jsonl
from .reading import job_cost as job_cost
from .submission import can_submit as can_submit
from .submission import request_submit as request_submit
from .submission import submit as submit
from .syncing import LIST_REFRESH_THRESHOLD as LIST_REFRESH_THRESHOLD
from .syncing import SyncReport as SyncReport
from .syncing import sync as sync

__all__ = [
    "CHECKPOINTS",
    "LIST_REFRESH_THRESHOLD",
    "RETRY_KINDS",
    "Progress",
    "PurgeReport",
    "SyncReport",
    "add_items",
    "add_items_from_jsonl",
    "admit_waiting",
    "announce_pending",
    "apply_batch",
    "can_cancel",
    "can_delete",
    "can_refresh",
    "can_retry",
    "can_submit",
    "cancel",
    "create_job",
    "delete_job",
    "export_results",
    "get_client",
    "ingest",
    "iter_input_jsonl",
    "iter_provider_file",
    "iter_result_rows",
    "iter_results",
    "iter_results_jsonl",
    "job_cost",
    "purge",
    "purgeable_jobs",
    "refresh",
    "request_refresh",
    "request_submit",
    "reset_learned_limit",
    "result_row",
    "retry",
    "submit",
    "sync",
]
