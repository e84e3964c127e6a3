"""QA review back end: label store, review queue, audit, dataset snapshots, export and import.

- :mod:`labeling.labels` - the label model of an image and the QA operations (append-only history).
- :mod:`labeling.anomaly` - an anomaly box of a no-labels inspector turned into a labelled defect.
- :mod:`labeling.queue` - the review queue, most useful to label first.
- :mod:`station.store.audit` - who changed what, with before/after (the station's one audit writer).
- :mod:`labeling.snapshot` - frozen datasets (lineage for trained models).
- :mod:`labeling.export` / :mod:`labeling.importer` - YOLO (Ultralytics) and COCO (CVAT, Label Studio).
- :mod:`labeling.stats` - defects over time, false-positive rate, yield by hour / shift, Pareto.

Every function takes an open :class:`sqlite_utils.Database` (``station.store.open_db``); writes
run in their own ``BEGIN IMMEDIATE`` transaction, or join one the caller holds. A connection
must be used by one thread at a time: open one per worker thread.

Command line: ``python -m labeling --help``.
"""

from station.store.audit import AuditEntry, history, record

from .anomaly import ANOMALY_CLASS, label_anomaly
from .export import export_coco, export_yolo
from .importer import ImportResult, import_coco, import_yolo
from .labels import (
    ImageInfo,
    Label,
    Review,
    add_label,
    bulk_confirm,
    bulk_mark_good,
    confirm,
    current_labels,
    current_labels_many,
    delete_label,
    get_label,
    image_info,
    known_classes,
    label_history,
    mark_image_good,
    mark_reviewed,
    review_state,
    update_label,
)
from .queue import QueueItem, QueueQuery, queue_counts, review_queue
from .snapshot import (
    Snapshot,
    create_snapshot,
    get_snapshot,
    list_snapshots,
    snapshot_items,
)
from .stats import (
    defect_pareto,
    defects_by_class_over_time,
    false_positive_rate,
    yield_by_hour,
    yield_by_shift,
)

__all__ = [
    "ANOMALY_CLASS",
    "label_anomaly",
    "AuditEntry",
    "ImageInfo",
    "ImportResult",
    "Label",
    "QueueItem",
    "QueueQuery",
    "Review",
    "Snapshot",
    "add_label",
    "bulk_confirm",
    "bulk_mark_good",
    "confirm",
    "create_snapshot",
    "current_labels",
    "current_labels_many",
    "defect_pareto",
    "defects_by_class_over_time",
    "delete_label",
    "export_coco",
    "export_yolo",
    "false_positive_rate",
    "get_label",
    "get_snapshot",
    "history",
    "image_info",
    "import_coco",
    "import_yolo",
    "known_classes",
    "label_history",
    "list_snapshots",
    "mark_image_good",
    "mark_reviewed",
    "queue_counts",
    "record",
    "review_queue",
    "review_state",
    "snapshot_items",
    "update_label",
    "yield_by_hour",
    "yield_by_shift",
]
