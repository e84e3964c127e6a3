"""Central labels and training on the real engines: QA relabels on two real station databases travel
through their uplinks into the plant's ``labels`` table (each revision once, the newest wins, history kept,
images in S3 by content hash); a dataset snapshot spans both stations and is content-addressed; a real tiny
Ultralytics run on a training host pulls it from the object store and registers its ONNX model centrally."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import onnxruntime as ort
import psycopg

from labeling import labels as L
from station.bus import Bus
from station.contracts import Outcome
from station.plant import cli, datasets, wire
from station.plant.ingest import Ingest
from station.plant.labels_up import LabelFeed, labels_outbox_path
from station.plant.uplink import PlantUplink
from station.store import plant_labels, plant_models
from station.store.db import open_db
from station.store.images import ImageStore
from tests.fixtures_labeling import CLASSES, Line, part
from tests.fixtures_plant import Plant, wait_until

N_PARTS = 8


def station_line(root: Path, offset: int) -> Line:
    """A real station database and image store, 8 recorded parts (6 FAIL with a model box, 2 PASS)."""
    root.mkdir()
    ln = Line(
        root,
        root / "station.db",
        ImageStore(root / "images", "png", keep_pass_every=1, disk_budget_mb=100.0, fsync=False),
        open_db(root / "station.db"),
    )
    results = []
    for i in range(1, N_PARTS + 1):
        if i % 4 == 0:
            results.append(part(i + offset, Outcome.PASS))
        else:
            box = (4.0 + i, 6.0, 24.0 + i, 30.0)
            results.append(part(i + offset, Outcome.FAIL, [(CLASSES[i % 3], 0.9, box)]))
    ln.record(results)
    return ln


def relabel(ln: Line, offset: int) -> None:
    """QA on every image: confirm, move+reclass, delete a false positive, add a missed box, mark good."""
    db = ln.db
    for i in range(1, N_PARTS + 1):
        img = ln.image_id(i + offset)
        labs = L.current_labels(db, img)
        if i % 4 == 0:
            L.mark_image_good(db, "qa", img)
        elif i == 1:
            L.update_label(db, "qa", img, labs[0].id, box=(10, 10, 30, 40), class_name="stain", classes=CLASSES)
        elif i == 2:
            L.delete_label(db, "qa", img, labs[0].id)
        elif i == 3:
            L.add_label(db, "qa", img, (30, 5, 50, 20), "dent", classes=CLASSES)
        else:
            L.confirm(db, "qa", img, [lab.id for lab in labs])


def uplink(plant: Plant, name: str, ln: Line) -> PlantUplink:
    cfg = plant.link(outbox_path=ln.root / "outbox.db", images="none")
    feed = LabelFeed(
        station=name,
        prefix=plant.prefix,
        db_path=ln.db_path,
        images=ln.images,
        outbox_path=labels_outbox_path(cfg.outbox_path),
        outbox_max=1000,
        poll_s=0.1,
    )
    up = PlantUplink(cfg, name, Bus().subscribe("plant", maxsize=10), labels=feed)
    up.start()
    return up


def plant_current(conn, station: str) -> dict[int, list[list]]:
    return {r["image_id"]: sorted(r["boxes"]) for r in plant_labels.current_labels(conn, [station])}


def station_current(ln: Line) -> dict[int, list[list]]:
    ids = [r[0] for r in ln.db.execute("SELECT id FROM images ORDER BY id")]
    return {
        i: sorted([lab.class_name, lab.x1, lab.y1, lab.x2, lab.y2] for lab in L.current_labels(ln.db, i)) for i in ids
    }


def test_labels_snapshot_and_training_across_stations(plant: Plant, tmp_path: Path, capsys):
    a, b = station_line(tmp_path / "st-a", 0), station_line(tmp_path / "st-b", 100)
    relabel(a, 0)
    relabel(b, 100)
    ing = Ingest(plant.dsn, plant.engines.nats.url, prefix=plant.prefix).start()
    ups = {"st-a": uplink(plant, "st-a", a), "st-b": uplink(plant, "st-b", b)}
    conn = psycopg.connect(plant.dsn, autocommit=True)
    s3 = wire.s3_client(plant.engines.s3.endpoint, "k", "s")
    try:
        wait_until(lambda: ing.stats.labels_written == 2 * N_PARTS, 30, "every relabelled image in the plant")
        for name, ln in (("st-a", a), ("st-b", b)):
            assert plant_current(conn, name) == station_current(ln), f"{name}: the plant has the station's labels"
        row = plant_labels.current_labels(conn, ["st-a"])[0]
        body = s3.get_object(Bucket=plant.bucket, Key=row["image_key"])["Body"].read()
        assert row["image_key"] == f"images/{hashlib.sha256(body).hexdigest()}.png" == f"images/{row['sha256']}.png"

        # a second relabel of one image: the newest revision wins, the older one stays as history
        img = a.image_id(1)
        L.update_label(a.db, "qa", img, L.current_labels(a.db, img)[0].id, class_name="dent", classes=CLASSES)
        wait_until(lambda: ing.stats.labels_written == 2 * N_PARTS + 1, 30, "the second revision")
        assert plant_current(conn, "st-a") == station_current(a)
        hist = plant_labels.label_history(conn, "st-a", img)
        assert [h["boxes"][0][0] for h in hist] == ["stain", "dent"] and hist[0]["revision"] < hist[1]["revision"]

        # resending everything (cursor lost) changes nothing: JetStream drops the ids, the keys the rest
        ups["st-a"].stop(flush_s=0)
        Path(labels_outbox_path(a.root / "outbox.db").with_suffix(".cursor.json")).unlink()
        ups["st-a"] = uplink(plant, "st-a", a)
        feed = ups["st-a"].labels
        assert feed is not None
        wait_until(lambda: feed.published == N_PARTS, 30, "the resend")
        changes = [
            wire.LabelMsg.from_json(
                json.dumps(
                    {**r, "station": "st-b", "labels": r["boxes"], "reviewed_at": r["reviewed_at"].timestamp()},
                    default=str,
                ).encode()
            )
            for r in plant_labels.current_labels(conn, ["st-b"])
        ]
        assert plant_labels.write_labels(conn, changes) == 0, "a replay past the duplicate window is dropped too"
        count = conn.execute("SELECT count(*) FROM labels").fetchone()
        assert count is not None and count[0] == 2 * N_PARTS + 1

        # a snapshot across both stations: content-addressed
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        both = datasets.snapshot(conn, s3, plant.bucket, ["st-b", "st-a"], "both", since=since)
        assert both["created"] and both["n_images"] == 2 * N_PARTS and both["stations"] == ["st-a", "st-b"]
        again = datasets.snapshot(conn, s3, plant.bucket, ["st-a", "st-b"], "both again", since=since)
        assert again["id"] == both["id"] and not again["created"], "same inputs, same snapshot"
        plant_args = ["--dsn", plant.dsn, "--s3", plant.engines.s3.endpoint, "--bucket", plant.bucket]
        plant_args += ["--s3-access-key", "k", "--s3-secret-key", "s"]
        cmd = [
            "dataset",
            "snapshot",
            *plant_args,
            "--stations",
            "st-a",
            "--name",
            "a-only",
        ]
        assert cli.main(cmd) == 0
        a_only = json.loads(capsys.readouterr().out)
        assert a_only["id"] != both["id"] and a_only["n_images"] == N_PARTS
        assert cli.main([*cmd[:-4], "--stations", "st-a", "--since", "2999-01-01", "--name", "x"]) == 2

        # training host: pull the snapshot, a real tiny Ultralytics run, ONNX into the central registry
        work = tmp_path / "trainhost"
        cmd = [
            "train",
            *plant_args,
            "--snapshot",
            both["id"][:12],
            "--host-name",
            "gpu-1",
            "--work",
            str(work),
            "--epochs",
            "1",
            "--imgsz",
            "64",
            "--batch",
            "8",
        ]
        assert cli.main(cmd) == 0
        model = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert model["snapshot_id"] == both["id"] and model["trained_on"] == "gpu-1" and "mAP50" in model["metrics"]
        onnx = s3.get_object(Bucket=plant.bucket, Key=model["key"])["Body"].read()
        assert hashlib.sha256(onnx).hexdigest() == model["sha256"] and model["key"] == f"models/{model['sha256']}.onnx"
        sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        meta = sess.get_modelmeta().custom_metadata_map
        assert f"plant:{both['id']}" in meta.values() and "gpu-1" in meta.values()
        data = json.loads((work / both["id"][:16] / "dataset" / "dataset.json").read_text())
        assert data["snapshot"] == f"plant:{both['id']}" and len(data["train"]) + len(data["val"]) == 2 * N_PARTS
        assert plant_models.find_model(conn, model["sha256"][:10])["version"] == f"both-{model['sha256'][:8]}"
    finally:
        conn.close()
        for up in ups.values():
            up.stop(flush_s=0)
        ing.stop()
        a.db.close()
        b.db.close()
